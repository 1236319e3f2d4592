"""Several classification tasks on one backbone: one label space cut into blocks.

A model of several tasks (multi-task learning, parallel training) has one head per task.
Here the heads are stacked: the model's classes are every task's classes in turn
(``"sst2:negative", "sst2:positive", "sst5:0", ...``), and task ``t`` owns the block
``[start, stop)`` of the logits.  A sample of task ``t`` carries a label inside that block,
so the label alone says which head it trains: its loss is the cross-entropy over its own
block (a softmax per head), its prediction the arg-max within the block.  With a linear
head, the blocks are exactly independent linear heads on the shared representation.

Everything here is a function of the logits, the labels and the blocks; the loop calls
:func:`per_sample_loss` and :func:`task_metrics` and knows nothing else of tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

#: separates a task's name from a class name in the joint class list
SEP = ":"


@dataclass(frozen=True)
class TaskBlock:
    """One task's slice of the joint class list."""

    name: str
    start: int
    stop: int

    def local(self, joint_classes: Sequence[str]) -> list[str]:
        """The task's own class names (the joint names without ``"task:"``)."""
        return [c[len(self.name) + len(SEP):] for c in joint_classes[self.start:self.stop]]


def blocks(tasks: Sequence[tuple[str, int]] | None) -> list[TaskBlock] | None:
    """``[(name, number of classes), ...]`` as consecutive blocks (None: one task)."""
    if not tasks:
        return None
    out, start = [], 0
    for name, n in tasks:
        out.append(TaskBlock(str(name), start, start + int(n)))
        start += int(n)
    return out


def joint_classes(tasks: dict[str, list[str]]) -> list[str]:
    """The joint class list of ``{task: its classes}``, in order."""
    return [f"{t}{SEP}{c}" for t, classes in tasks.items() for c in classes]


def block_of(labels: np.ndarray | torch.Tensor, bl: list[TaskBlock]):
    """The index of the block each label falls in."""
    stops = [b.stop for b in bl]
    if isinstance(labels, torch.Tensor):
        return torch.bucketize(labels, torch.as_tensor(stops, device=labels.device), right=True)
    return np.searchsorted(np.asarray(stops), np.asarray(labels), side="right")


def per_sample_loss(logits: torch.Tensor, labels: torch.Tensor, bl: list[TaskBlock] | None,
                    loss_fn, weights: Sequence[float] | None = None) -> torch.Tensor:
    """The loss of every sample: ``loss_fn`` (reduction none) over the logits of the
    sample's own block, times its task's weight (``weights`` in block order)."""
    if bl is None:
        return loss_fn(logits, labels)
    which = block_of(labels, bl)
    per = logits.new_zeros(len(labels))
    for i, b in enumerate(bl):
        rows = (which == i).nonzero(as_tuple=True)[0]
        if len(rows):
            term = loss_fn(logits[rows, b.start:b.stop], labels[rows] - b.start)
            per = per.index_put((rows,), term * (weights[i] if weights is not None else 1.0))
    return per


def sampling_weights(counts: Sequence[int], mode: str, temperature: float) -> list[float]:
    """Per-task loss weights that give each task the share of the training signal that
    drawing its batches with probability ``p_t`` would give: ``proportional`` (``p_t``
    proportional to its size: every weight 1), ``temperature`` (``p_t`` proportional to
    ``n_t ** (1 / T)``) or ``equal`` (every task the same share).  The weights average 1
    over the training samples."""
    n = np.asarray(counts, dtype=np.float64)
    if mode == "proportional" or len(n) < 2:
        return [1.0] * len(n)
    p = np.ones_like(n) if mode == "equal" else n ** (1.0 / temperature)
    p = p / p.sum()
    w = p / (n / n.sum())
    return [float(x) for x in w]


def masked_logits(logits: np.ndarray, labels: np.ndarray, bl: list[TaskBlock]) -> np.ndarray:
    """Labelled samples' logits with every class outside the sample's own block at -inf:
    its arg-max and softmax are its task head's."""
    out = np.full_like(logits, -np.inf, dtype=np.float64)
    which = block_of(labels, bl)
    for i, b in enumerate(bl):
        rows = which == i
        out[rows, b.start:b.stop] = logits[rows, b.start:b.stop]
    return out


def predict_blocks(logits: np.ndarray, bl: list[TaskBlock]) -> dict[str, np.ndarray]:
    """Every task's predicted class index (within the joint list) of every sample."""
    return {b.name: b.start + logits[:, b.start:b.stop].argmax(1) for b in bl}


def task_metrics(logits: np.ndarray, labels: np.ndarray, classes: list[str],
                 bl: list[TaskBlock], metrics_fn, *, worst: int = 0) -> dict[str, Any]:
    """``metrics_fn``'s figures of each task on its own samples (under ``"tasks"``), and
    at the top the joint figures (per class, confusion, most wrong: each sample scored by
    its own head) with ``accuracy``, ``macro_f1`` and ``loss`` the average over the tasks
    that have samples (what validation selects on)."""
    labels = np.asarray(labels, dtype=np.int64)
    joint = metrics_fn(masked_logits(logits, labels, bl), labels, classes, worst=worst)
    which = block_of(labels, bl)
    per_task = {}
    for i, b in enumerate(bl):
        rows = which == i
        per_task[b.name] = metrics_fn(logits[rows, b.start:b.stop], labels[rows] - b.start,
                                      b.local(classes))
    scored = [m for m in per_task.values() if m["n"]]
    for key in ("accuracy", "macro_f1", "loss"):
        joint[key] = float(np.mean([m[key] for m in scored])) if scored else None
    joint["tasks"] = per_task
    return joint
