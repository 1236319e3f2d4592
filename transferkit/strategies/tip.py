"""``tip``: the zero-shot prior blended with a cache of the K-shot features (Tip-Adapter).

Zhang et al. 2022, "Tip-Adapter: Training-free adaption of CLIP for few-shot
classification": the logits of an input ``x`` are the prior's plus a cache model's,

    logits(x) = log softmax(prior(x)) + alpha * exp(-beta * (1 - cos(x - m, k_i - m))) @ Y

with the prior the ``zeroshot`` strategy's logits (text: description embeddings; images: the
ImageNet head mapped to the classes), the keys ``k_i`` the support (training) features,
``m`` their mean, ``Y`` their one-hot labels.  ``alpha`` (the blend weight) and ``beta``
(the sharpness of the affinities) are chosen on the K shots themselves, by leave-one-out:
each shot is scored by the prior and the cache of the other shots, over a small grid; the
best leave-one-out accuracy wins, then the smaller ``alpha``, then the lowest leave-one-out
loss; a cache (``alpha > 0``) must get at least ``MIN_GAIN`` (2) more shots right than the
prior alone, one shot's gain being within the noise of leave-one-out on a few shots (so the
prior alone is kept unless the cache corrects shots the prior gets wrong; with one shot per
class, leave-one-out leaves a class without keys and the cache rarely helps).  Nothing trains; the bundle holds the cache
(keys, labels, mean), the prior's map and the two weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..heads import Head, masked_mean
from .base import Solution, Stage, register_strategy
from .zeroshot import SOURCE_CLASSES, ZeroShot, ZeroShotOptions, top_probabilities, unit

ALPHAS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
BETAS = (1.0, 2.0, 5.0, 10.0)
#: how many more shots the cache must get right (leave-one-out) than the prior alone
MIN_GAIN = 2


@dataclass
class TipOptions(ZeroShotOptions):
    #: weight of the cache model (the blend); none: chosen on the shots by leave-one-out
    alpha: float | None = None
    #: sharpness of the cache's affinities; none: chosen on the shots by leave-one-out
    beta: float | None = None
    #: how many support features the cache holds (written by the fit; 0 before it)
    cache_size: int = 0


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def affinities(q: np.ndarray, keys: np.ndarray, beta: float) -> np.ndarray:
    """``exp(-beta * (1 - cos))`` between unit rows of ``q`` and ``keys``."""
    return np.exp(-beta * (1.0 - q @ keys.T))


def choose_blend(prior: np.ndarray, z: np.ndarray, y: np.ndarray, n_classes: int,
                 alphas=ALPHAS, betas=BETAS) -> tuple[float, float, float]:
    """``(alpha, beta, leave-one-out accuracy)`` on the shots: ``prior`` their prior logits,
    ``z`` their unit centred features, ``y`` their labels."""
    logp, onehot = log_softmax(prior), np.eye(n_classes)[y]
    base = float((logp.argmax(1) == y).mean())
    best, chosen = None, (0.0, betas[0], 0.0)
    for beta in betas:
        a = affinities(z, z, beta)
        np.fill_diagonal(a, 0.0)           # leave each shot out of its own cache
        cache = a @ onehot
        for alpha in sorted(alphas):
            lp = log_softmax(logp + alpha * cache)
            acc = float((lp.argmax(1) == y).mean())
            # the cache must correct more than one shot over the prior alone (alpha 0):
            # one shot's gain is within the noise of leave-one-out on a few shots
            if alpha > 0 and acc * len(y) < base * len(y) + MIN_GAIN - 1e-9:
                continue
            key = (acc, -alpha, float(lp[np.arange(len(y)), y].mean()))
            if best is None or key > best:
                best, chosen = key, (float(alpha), float(beta), acc)
    return chosen


class TipCache(nn.Module):
    """The cache and the prior's map, as buffers (a part of the head, so in the bundle)."""

    def __init__(self, n_classes: int, prior_dim: int, dim: int, size: int):
        super().__init__()
        self.register_buffer("prior_weight", torch.zeros(n_classes, prior_dim))
        self.register_buffer("prior_bias", torch.zeros(n_classes))
        self.register_buffer("centre", torch.zeros(dim))
        self.register_buffer("keys", torch.zeros(size, dim))
        self.register_buffer("values", torch.zeros(size, n_classes))
        self.register_buffer("alpha", torch.zeros(()))
        self.register_buffer("beta", torch.ones(()))


class TipFeatures(nn.Module):
    """Computes the blended logits as the features the (identity) head reads."""

    def __init__(self, top: int, images: bool):
        super().__init__()
        self.top, self.images = int(top), bool(images)

    def features(self, model, batch) -> dict[str, torch.Tensor]:
        feats = model.backbone(batch)
        pooled = feats.get("pooled")
        if pooled is None:
            pooled = masked_mean(feats["tokens"], feats["mask"])
        c = model.head.cache
        pooled = pooled.float()
        z = pooled
        if self.images:
            head = model.backbone.source_head()
            z = top_probabilities(torch.softmax(head(pooled).float(), -1), self.top)
        logp = torch.log_softmax(z @ c.prior_weight.T + c.prior_bias, dim=-1)
        q = nn.functional.normalize(pooled - c.centre, dim=-1)
        a = torch.exp(-c.beta * (1.0 - q @ c.keys.T))
        return {"pooled": logp + c.alpha * (a @ c.values)}


@register_strategy
class Tip(ZeroShot):
    name = "tip"
    description = ("Tip-Adapter: the zero-shot prior blended with a cache of the K-shot "
                   "features, the blend weight chosen on the shots (images and text)")
    options_cls = TipOptions
    needs_data = True

    def validate(self) -> None:
        super().validate()
        o = self.options
        if o.alpha is not None and o.alpha < 0:
            raise ConfigError(f"tip: alpha must be >= 0, got {o.alpha}")
        self.require_positive("beta")
        if o.self_train:
            raise ConfigError("tip: self_train is an option of zeroshot (tip's cache uses "
                              "the labelled shots)")

    def attach(self, model) -> None:
        images = model.backbone.modality == "image"
        if model.attached("tip") is None:
            model.attach("tip", TipFeatures(self.options.top, images), computes_features=True)
        if not hasattr(model.head, "cache"):  # the head reads the blended logits
            k = len(model.classes)
            dim = model.backbone.feature_dim
            model.head = Head(model.head.cfg, k, k)
            model.head.add_module("cache", TipCache(
                k, SOURCE_CLASSES if images else dim, dim, self.options.cache_size))

    def blend(self, prior, x, y, n_classes):
        """``(centre, unit keys, alpha, beta, info)`` of a cache over support ``x``."""
        centre = x.mean(0)
        z = unit(x - centre)
        o = self.options
        alphas = ALPHAS if o.alpha is None else (o.alpha,)
        betas = BETAS if o.beta is None else (o.beta,)
        alpha, beta, loo = choose_blend(prior, z, y, n_classes, alphas, betas)
        info = {"alpha": alpha, "beta": beta, "leave_one_out_accuracy": loo,
                "selection": ("alpha, beta by leave-one-out accuracy on the shots, then the "
                              "smaller alpha, then the lower leave-one-out loss")}
        return centre, z, alpha, beta, info

    def solve(self, state) -> Solution:
        model = state.model
        self.prepare_features(model)
        x = state.features("train").double().numpy()
        y = state.labels("train").numpy()
        k = len(model.classes)
        centre, z, alpha, beta, info = self.blend(self.prior_logits(x), x, y, k)
        _, w, b = self._prior
        self.options.cache_size = len(x)
        info["cache_size"] = len(x)

        def apply(m):
            cache = TipCache(k, w.shape[1], x.shape[1], len(x))
            for name, v in (("prior_weight", w), ("prior_bias", b), ("centre", centre),
                            ("keys", z), ("values", np.eye(k)[y]), ("alpha", alpha),
                            ("beta", beta)):
                getattr(cache, name).copy_(torch.as_tensor(np.asarray(v), dtype=torch.float32))
            m.head.cache = cache
            m.head.set_linear(np.eye(k), np.zeros(k))
        return Solution([(f"alpha={alpha:g} beta={beta:g}", apply)], info)

    def fit_features(self, x, y, n_classes: int, seed: int, unlabelled=None, classes=None):
        cls = np.arange(n_classes) if classes is None else np.asarray(classes)
        x = np.asarray(x, np.float64)
        centre, z, alpha, beta, _ = self.blend(self.prior_logits(x)[:, cls], x, y, n_classes)
        onehot = np.eye(n_classes)[y]

        def scores(q):
            prior = log_softmax(self.prior_logits(q)[:, cls])
            return prior + alpha * affinities(unit(np.asarray(q) - centre), z, beta) @ onehot
        return scores

    def fit_without_data(self, model):
        raise ConfigError("tip needs labelled shots (DATA, e.g. with --shots K); for no "
                          "labels at all use --strategy zeroshot")
