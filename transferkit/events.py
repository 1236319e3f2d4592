"""The events of the training loop, and what a callback may do at each.

The engine's loop (:mod:`transferkit.engine.trainer`) walks stages -> epochs -> batches and
fires, in this order::

    on_fit_start(state)
      on_stage_start(state)                  for every stage of the strategy
        on_epoch_start(state)                for every epoch of the stage
          on_batch_start(state, batch)       before the forward pass: add streams, weights
          on_batch(state, batch) -> terms    after it: loss terms added to the task loss
        on_epoch_end(state, record)          scores of the epoch go into ``record``
      on_stage_end(state)
    on_fit_end(state)

Everything that is not the loop itself is a callback: checkpoints, best-epoch selection and
early stopping, history, timing, progress, the label-free scores of a domain run, snapshots
of the representation, and whatever a strategy adds to one of its stages (an unlabelled
target stream with its loss, per-sample weights, a reconstruction loss).  Callbacks run in
the order they are given; a stage's own callbacks run after the engine's, and only while
that stage runs.

This module sits below strategies and the engine, so that both can define callbacks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Batch:
    """One training step's data, and what the forward pass made of it.

    ``inputs`` are model inputs (an image tensor, a token dict, or ``{"pooled": ...}`` cached
    features); ``streams`` hold further inputs that are forwarded together with ``inputs``
    (for images through the backbone in one joint batch, so BatchNorm sees both), e.g. an
    unlabelled target batch; ``weights`` are per-sample loss weights.  After the forward pass
    ``features`` holds the backbone's feature dict of ``inputs`` (``{"pooled": ...}``), and
    ``embed`` / ``logits`` hold the representation the head's last layer reads and the logits
    of ``inputs``, and ``outputs[name]`` the same two (``{"embed", "logits"}``) for each stream.
    ``progress`` runs from 0 to 1 over the stage.
    """

    inputs: Any
    labels: torch.Tensor
    indices: torch.Tensor
    streams: dict[str, Any] = field(default_factory=dict)
    weights: torch.Tensor | None = None
    features: dict[str, torch.Tensor] | None = None
    embed: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    outputs: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    progress: float = 0.0


class Callback:
    """Base class: override the events you need; each receives the loop's ``state``
    (:class:`transferkit.engine.trainer.FitState`)."""

    def on_fit_start(self, state) -> None:
        """Before the first stage (a checkpoint may restore the state here)."""

    def on_stage_start(self, state) -> None:
        """The stage's parameters are trainable and its optimizer exists."""

    def on_epoch_start(self, state) -> None:
        """Before the epoch's first batch; the epoch's random seed is set."""

    def on_batch_start(self, state, batch: Batch) -> None:
        """Before the forward pass: add ``batch.streams`` or ``batch.weights``."""

    def on_batch(self, state, batch: Batch) -> dict[str, torch.Tensor] | None:
        """After the forward pass: loss terms to add to the task loss (or ``None``)."""
        return None

    def on_epoch_end(self, state, record: dict[str, Any]) -> None:
        """Add scores to the epoch's ``record`` (validation figures, selection criteria)."""

    def on_stage_end(self, state) -> None:
        """After the stage's last epoch (or its early stop)."""

    def on_fit_end(self, state) -> None:
        """After the last stage; the model holds the weights that were kept."""


EVENTS = ("on_fit_start", "on_stage_start", "on_epoch_start", "on_batch_start", "on_batch",
          "on_epoch_end", "on_stage_end", "on_fit_end")
