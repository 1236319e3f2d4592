"""The target domain inside the engine: data, label-free scores, selection.

Without target labels, the epoch (or closed-form setting) to keep must be chosen by a
criterion that needs none.  After every epoch the trainer scores:

* ``val_accuracy``            source validation accuracy (``source-val``);
* ``iw_val_accuracy``         source validation accuracy weighted by the density ratio
                              p_target / p_source of each validation sample (``iwv``,
                              Sugiyama et al. 2007), the ratio estimated by a domain classifier
                              on the representation the classifier reads;
* ``dev_risk``                Deep Embedded Validation (You et al. 2019): the importance-
                              weighted validation loss with a control variate (``dev``, lower
                              is better);
* ``target_entropy``          mean prediction entropy on the unlabelled target (``entropy``,
                              lower is better);
* ``oracle_target_accuracy``  accuracy on the labelled target test split, when there is one:
                              recorded for the oracle column, never used for a choice.

Scores use at most :data:`MAX_SCORE_SAMPLES` target samples (a fixed seeded subset).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .metrics import softmax
from ..data import Samples
from ..domain import domain_classifier_weights
from ..errors import ConfigError
from ..events import Callback
from ..select import dev_risk, importance_weighted_accuracy, mean_entropy

#: label-free selection criteria, and what each compares (higher key = better)
CRITERIA = ("source-val", "iwv", "dev", "entropy")
MAX_SCORE_SAMPLES = 1000


def _unlabelled(samples):
    return Samples(samples.modality, samples.items, None, samples.classes, samples.origins,
                   samples.source)


@dataclass
class DomainData:
    target: Any                  # unlabelled target samples used in training
    scoring: Any                 # the (sub)set of target samples the label-free scores use
    test: Any | None             # labelled target samples for the oracle column
    labelled: Any | None         # target labels granted for training

    @classmethod
    def build(cls, target, test=None, labelled=None, *, seed: int = 0) -> "DomainData":
        if target is None or len(target) < 2:
            raise ConfigError("the target domain needs at least 2 samples")
        target = _unlabelled(target)
        scoring = target
        if len(target) > MAX_SCORE_SAMPLES:
            rng = np.random.default_rng(seed)
            scoring = target.subset(sorted(rng.choice(len(target), MAX_SCORE_SAMPLES,
                                                      replace=False).tolist()))
        if test is not None and test.labels is None:
            test = None
        return cls(target, scoring, test, labelled)

    def named(self) -> dict[str, Any]:
        """The target's sample sets under the names the engine keeps their features by."""
        sets = {"target": self.target, "target_scoring": self.scoring,
                "target_test": self.test, "target_labelled": self.labelled}
        return {k: v for k, v in sets.items() if v is not None}

    # ---------------------------------------------------------------- scores
    def scores(self, trainer, z_val: np.ndarray, logits_val: np.ndarray, y_val,
               *, use_cache: bool) -> dict[str, float | None]:
        """The label-free scores (and the oracle's target accuracy) of the current model,
        given its representation and logits on the source validation split."""
        z_t, lg_t = trainer.split_outputs("target_scoring", self.scoring, use_cache)
        y_v = np.asarray(y_val)
        p_v = softmax(logits_val.astype(np.float64))
        loss_v = -np.log(np.clip(p_v[np.arange(len(y_v)), y_v], 1e-12, 1.0))
        correct = (logits_val.argmax(1) == y_v).astype(np.float64)
        out: dict[str, float | None] = {
            "target_entropy": mean_entropy(softmax(lg_t.astype(np.float64)))}
        try:
            w = domain_classifier_weights(z_val, z_t, seed=trainer.cfg.seed)
            out["iw_val_accuracy"] = importance_weighted_accuracy(correct, w)
            out["dev_risk"] = dev_risk(z_val, loss_v, z_t, weights=w)
        except (ValueError, ConfigError):  # e.g. a one-class validation fold
            out["iw_val_accuracy"] = float(correct.mean())
            out["dev_risk"] = float(loss_v.mean())
        out["oracle_target_accuracy"] = None
        if self.test is not None:
            _, lg = trainer.split_outputs("target_test", self.test, use_cache)
            out["oracle_target_accuracy"] = float((lg.argmax(1) == self.test.labels).mean())
        return out


# -------------------------------------------------------------------- callbacks

class DomainScores(Callback):
    """After every epoch: the label-free scores of the current model on the target (and the
    oracle's target accuracy), from the validation outputs :class:`ValidationScores` kept."""

    def __init__(self, domain: DomainData):
        self.domain = domain

    def on_epoch_end(self, state, record) -> None:
        t0 = time.perf_counter()
        z_v, lg_v = state.val_outputs
        record.update(self.domain.scores(state.trainer, z_v, lg_v, state.data["val"].labels,
                                         use_cache=state.cached))
        state.timing["eval_s"] += time.perf_counter() - t0


class Snapshots(Callback):
    """Keeps the representation of (at most 300) source validation and target samples, for
    the before / after pictures of a domain run: at the end of every stage that names a
    snapshot (``Stage.snapshot``), and whenever :meth:`take` is called."""

    SAMPLES = 300

    def __init__(self, domain: DomainData, val, seed: int):
        self.domain = domain
        self.val = val
        self.seed = seed
        self.taken: dict[str, tuple] = {}

    def on_stage_end(self, state) -> None:
        if state.stage.snapshot:
            self.take(state.trainer, state.stage.snapshot)

    def take(self, trainer, name: str) -> None:
        val, tgt = self.val, self.domain.scoring
        rng = np.random.default_rng(self.seed)
        if len(val) > self.SAMPLES:
            val = val.subset(sorted(rng.choice(len(val), self.SAMPLES, replace=False).tolist()))
        if len(tgt) > self.SAMPLES:
            tgt = tgt.subset(sorted(rng.choice(len(tgt), self.SAMPLES, replace=False).tolist()))
        use_cache = trainer.features.usable(any_weights=True)
        z_s, _ = trainer.split_outputs(f"snap_val_{name}", val, use_cache)
        z_t, _ = trainer.split_outputs(f"snap_tgt_{name}", tgt, use_cache)
        self.taken[name] = (z_s, z_t, np.asarray(val.labels))


# -------------------------------------------------------------------- selection

def selection_key(criterion: str, rec: dict[str, Any]) -> tuple[float, float]:
    """The key by which an epoch competes under ``criterion`` (higher is better)."""
    if criterion == "source-val":
        return (rec["val_accuracy"], -rec["val_loss"])
    if criterion == "map":  # detection: mAP@0.5, then mAP@[0.5:0.95]
        return (rec["val_map50"], rec["val_map"])
    if criterion == "iwv":
        return (rec["iw_val_accuracy"], -rec["val_loss"])
    if criterion == "dev":
        return (-rec["dev_risk"], rec["val_accuracy"])
    if criterion == "entropy":
        return (-rec["target_entropy"], rec["val_accuracy"])
    raise ConfigError(f"unknown selection criterion {criterion!r}; choose {', '.join(CRITERIA)}")


def _eligible(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = [h for h in history if h.get("setting") is not None]
    return rows or [h for h in history if h.get("selectable", True)]


def summarize_selection(history: list[dict[str, Any]], criterion: str,
                        chosen_epoch: int | None) -> dict[str, Any]:
    """What every label-free criterion would have chosen, and the oracle choice (the epoch
    with the best target test accuracy), with the target accuracy of each choice."""
    rows = _eligible(history)
    by_epoch = {h["epoch"]: h for h in history}
    out: dict[str, Any] = {"criterion": criterion, "chosen_epoch": chosen_epoch,
                           "label_free": {}, "oracle": None}

    def acc(e):
        return by_epoch[e].get("oracle_target_accuracy") if e in by_epoch else None

    out["chosen_target_accuracy"] = acc(chosen_epoch)
    for c in CRITERIA:
        try:
            keyed = [(selection_key(c, h), -h["epoch"], h["epoch"]) for h in rows]
        except (KeyError, TypeError):
            continue
        keyed = [k for k in keyed if all(math.isfinite(v) for v in k[0])]
        if keyed:
            e = max(keyed)[2]
            out["label_free"][c] = {"epoch": e, "target_accuracy": acc(e)}
    oracle = [(h["oracle_target_accuracy"], -h["epoch"], h["epoch"]) for h in rows
              if h.get("oracle_target_accuracy") is not None]
    if oracle:
        best = max(oracle)
        out["oracle"] = {"epoch": best[2], "target_accuracy": best[0]}
    return out
