"""Penalties of regularised fine-tuning: pure functions of tensors, no model, no data.

Each keeps fine-tuning close to what the pretrained model knew, in its own way:

* :func:`starting_point` (L2-SP, Li et al. 2018): ``1/2 sum ||w - w0||^2`` over the
  pretrained tensors, towards their pretrained values ``w0`` (not towards zero);
  :func:`l2` is the plain ``1/2 sum ||w||^2`` L2-SP puts on the new head;
* :func:`feature_map_distance` (DELTA's behavioural term without attention, Li et al. 2019):
  the mean squared difference between the feature maps of the fine-tuned and of the
  pretrained backbone on the same inputs, summed over layers;
* :func:`spectral_shrinkage` (BSS, Chen et al. 2019): the sum of the ``k`` smallest squared
  singular values of a batch's feature matrix;
* :func:`distillation` (LwF, Li & Hoiem 2016): the temperature-softened KL divergence of the
  fine-tuned model's source-class outputs from the pretrained model's;
* :func:`class_relation` and :func:`relation_loss` (Co-Tuning, You et al. 2020): the
  distribution over source classes of each target class (the mean source probabilities of
  its training samples), and the cross-entropy of the source-class outputs against the row of
  each sample's target label.

Shapes: ``B`` samples, ``Z`` source classes, ``C`` target classes, ``D`` feature size.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn.functional as F


def starting_point(params: Iterable[torch.Tensor], start: Iterable[torch.Tensor]) -> torch.Tensor:
    """``1/2 sum_i ||params_i - start_i||^2`` (``start``: the pretrained values, constants)."""
    total = None
    for p, p0 in zip(params, start, strict=True):
        term = 0.5 * (p - p0.detach()).pow(2).sum()
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


def l2(params: Iterable[torch.Tensor]) -> torch.Tensor:
    """``1/2 sum_i ||params_i||^2``."""
    total = None
    for p in params:
        term = 0.5 * p.pow(2).sum()
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


def feature_map_distance(current: Sequence[torch.Tensor],
                         pretrained: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sum_j mean((FM_j - FM0_j)^2)`` over layers ``j``: feature maps of any shape ``(B,
    ...)``, each compared with the pretrained backbone's map of the same inputs (a
    constant)."""
    if len(current) != len(pretrained):
        raise ValueError(f"{len(current)} feature maps against {len(pretrained)} pretrained ones")
    total = None
    for fm, fm0 in zip(current, pretrained):
        term = (fm.float() - fm0.detach().float()).pow(2).mean()
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


def spectral_shrinkage(features: torch.Tensor, k: int = 1) -> torch.Tensor:
    """``sum_{i<=k} sigma_{-i}^2``: the ``k`` smallest squared singular values of the ``(B,
    D)`` feature matrix (of the ``min(B, D)`` it has)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    s = torch.linalg.svdvals(features.float())  # descending
    return s[-min(k, len(s)):].pow(2).sum()


def distillation(logits: torch.Tensor, pretrained_logits: torch.Tensor,
                 temperature: float = 2.0) -> torch.Tensor:
    """``T^2 KL(softmax(pretrained / T) || softmax(logits / T))``, averaged over the batch:
    ``(B, Z)`` logits of the fine-tuned model against those of the pretrained one (a
    constant) over the source classes."""
    t = float(temperature)
    target = F.softmax(pretrained_logits.detach().float() / t, dim=-1)
    log_q = F.log_softmax(logits.float() / t, dim=-1)
    return t * t * F.kl_div(log_q, target, reduction="batchmean")


def class_relation(source_probs: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``(C, Z)``: row ``c`` is the mean of the source-class probabilities ``(N, Z)`` of the
    samples labelled ``c`` (a distribution over the source classes); a class without samples
    gets the uniform distribution."""
    probs = source_probs.double()
    labels = torch.as_tensor(labels, dtype=torch.long)
    z = probs.shape[1]
    out = torch.full((n_classes, z), 1.0 / z, dtype=torch.float64)
    for c in range(n_classes):
        rows = probs[labels == c]
        if len(rows):
            out[c] = rows.mean(0)
    return (out / out.sum(1, keepdim=True)).float()


def relation_loss(source_logits: torch.Tensor, labels: torch.Tensor,
                  relation: torch.Tensor) -> torch.Tensor:
    """``mean_b -sum_z relation[y_b, z] log softmax(source_logits_b)_z``: the cross-entropy of
    the ``(B, Z)`` source-class outputs against the source distribution of each sample's
    target class ``y_b`` (``relation``: ``(C, Z)`` from :func:`class_relation`)."""
    target = relation.to(source_logits.device)[labels]
    return -(target * F.log_softmax(source_logits.float(), dim=-1)).sum(-1).mean()
