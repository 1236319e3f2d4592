"""Time, announced and bounded: what a stage will take, said before it starts, and a time
budget (``--budget``) that no epoch may overrun.

:class:`StageClock` is one of the engine's callbacks.  Before a stage that runs the backbone
(cached-feature stages take seconds), it times one training batch through the model without
gradients in evaluation mode (nothing changes: no update, no BatchNorm statistics) and
prints the stage's estimate (per sample: the loader's time for its second batch, and a
forward pass of a few samples); backpropagation through the backbone counts
:data:`BACKWARD_FACTOR` times a forward pass.  With a budget, an epoch starts only if the
time spent plus that epoch's expected time fits in it (the estimate for a stage's first
epoch, the last epoch's own time after it), except the fit's first trained epoch, which
always runs; the best epoch so far is kept as always.
Estimates and actual stage times go into the run's ``timing``.
"""

from __future__ import annotations

import re
import time

from ..errors import ConfigError
from ..events import Callback

#: forward + backward through a trained backbone, in forward passes (the usual 1 + 2)
BACKWARD_FACTOR = 3.0
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text: str | float | int, option: str = "--budget") -> float:
    """Seconds in ``"90"``, ``"90s"``, ``"10m"``, ``"1.5h"`` (or a number of seconds)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|m|min|h)?\s*", str(text))
        if m is None:
            raise ConfigError(f"{option} {text!r}: give seconds or a duration such as 90s, "
                              "10m, 1.5h")
        seconds = float(m.group(1)) * _UNITS[m.group(2) or ""]
    if not seconds > 0:
        raise ConfigError(f"{option} must be more than 0 seconds, got {text!r}")
    return seconds


def format_seconds(s: float) -> str:
    s = max(0.0, float(s))
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


class StageClock(Callback):
    """Announces every stage's expected time and keeps the fit inside ``budget_s``."""

    def __init__(self, budget_s: float | None = None):
        self.budget_s = budget_s
        self.spent = False
        self._epoch_s: float | None = None

    def on_fit_start(self, state) -> None:
        self._t_fit = time.perf_counter()
        if self.budget_s is not None:
            state.timing["budget_s"] = float(self.budget_s)

    def on_stage_start(self, state) -> None:
        stage = state.stage
        self._t_stage = time.perf_counter()
        self._epoch_s = None
        if stage.solve is None and not state.cached and state.epoch < stage.epochs:
            self._epoch_s = self._estimate_epoch(state)
            if self._epoch_s is not None:
                total = self._epoch_s * (stage.epochs - state.epoch)
                state.timing[f"estimate_{stage.name}_s"] = round(total, 2)
                state.log(f"  {stage.name}: about {format_seconds(self._epoch_s)} an epoch, "
                          f"{format_seconds(total)} for {stage.epochs - state.epoch} epoch(s) "
                          "(from a timed batch)")
        if stage.solve is None and not self._fits(state, self._epoch_s or 0.0):
            self._spend(state, f"stage {stage.name} skipped")

    def on_epoch_end(self, state, record) -> None:
        if state.stage.solve is not None:
            return
        self._epoch_s = time.perf_counter() - state.epoch_started
        more = state.epoch + 1 < state.stage_epochs
        if more and not state.stop and not self._fits(state, self._epoch_s):
            self._spend(state, f"stopping {state.stage.name} after epoch {record['epoch']}")

    def on_stage_end(self, state) -> None:
        state.timing[f"stage_{state.stage.name}_s"] = round(time.perf_counter() - self._t_stage, 2)

    def on_fit_end(self, state) -> None:
        if self.budget_s is not None:
            state.timing["budget_spent"] = float(self.spent)

    # ------------------------------------------------------------------ helpers
    def _fits(self, state, next_epoch_s: float) -> bool:
        if self.budget_s is None:
            return True
        if self.spent:
            return False
        if not any(r.get("train_loss") is not None for r in state.history):
            return True  # the fit's first trained epoch always runs
        return time.perf_counter() - self._t_fit + next_epoch_s <= self.budget_s

    def _spend(self, state, what: str) -> None:
        if not self.spent:
            used = time.perf_counter() - self._t_fit
            state.log(f"  budget: {what} ({format_seconds(used)} of "
                      f"{format_seconds(self.budget_s)} used); the best epoch so far is kept")
        self.spent = True
        state.stop = True

    @staticmethod
    def _estimate_epoch(state) -> float | None:
        per = state.trainer.time_per_sample(state)
        if per is None:  # a trainer that cannot time a batch: no estimate, the epochs' own times
            return None
        decode_s, forward_s = per
        trains_backbone = not state.stage.frozen_backbone
        per_sample = decode_s + forward_s * (BACKWARD_FACTOR if trains_backbone else 1.0)
        n_val = len(state.data["val"]) if trains_backbone else 0
        return per_sample * len(state.data["train"]) + forward_s * n_val
