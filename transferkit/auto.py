"""``--strategy auto``: choose the backbone and the strategy for the user, under a time budget,
from measurements on the training and validation splits (test data is never read here).

1. **Probe every candidate backbone** (the offline built-ins of the data's modality, or the
   one ``--backbone`` names), cheapest first, while the probing share of the budget lasts:
   its cached features of train and validation, LogME on train, and a logistic-regression
   probe with ``C`` chosen on validation.  For images, the best two are then probed side by
   side (``concat:A+B``, features concatenated).  Validation accuracies within one standard
   error of the best count as tied (a few dozen validation samples cannot tell them apart);
   among those a single backbone goes before a pair, then the highest LogME wins.
2. **Place the case** in the size x similarity guideline (as ``transferkit advise`` does): the
   labelled samples per class, and the winner's source-classifier familiarity.
3. **Plan**: small data similar to the pretraining data keeps the probe (``linear``), refit
   on train + validation at the chosen ``C`` (small data: every labelled sample counts); small
   and different data tries ``partial`` fine-tuning, larger data ``finetune``.  Both start
   with the new head on cached features and then train through the backbone under what is
   left of the budget, with early stopping; the engine keeps the best epoch on validation
   across the stages, so fine-tuning is kept only when validation says it paid.

The run then goes on as any ``fit`` of the chosen backbone and strategy (its bundle predicts,
``--resume`` continues it); ``metrics.json`` -> ``auto`` keeps every candidate's figures, the
case, the plan and the reasons.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np
import torch

from .backbones import COMBINED_PREFIX, build_backbone, combined_name
from .config import RunConfig
from .engine.budget import format_seconds
from .engine.cache import FeatureCache
from .engine.inputs import InputPipeline
from .errors import BackboneError, ConfigError
from .select.transferability import familiarity, logme
from .strategies.linear import C_GRID, fit_logreg

#: the median class below this many labelled training samples counts as small (hymenoptera,
#: ~100 a class, is small: freeze beat finetune; the UCI sentiment files, ~350 a class, are
#: not: fine-tuning gained 3 points over a probe)
SMALL_PER_CLASS = 200
#: source-classifier familiarity from which data counts as similar to the pretraining data
#: (hymenoptera photos 0.77, scikit-learn's 8x8 digits 0.21 with efficientnet_lite0)
FAMILIAR = 0.5
DESCRIPTION = ("chooses the backbone (probes of the candidates on cached features) and the "
               "strategy (size x similarity, then validation) under --budget")
#: offline candidates, cheapest first
CANDIDATES = {"image": ("efficientnet_lite0", "mobilenet_v2", "efficientnet_lite1",
                        "efficientnet_lite2"),
              "text": ("minilm",)}
#: the budget of an ``auto`` run without ``--budget``, sized for a 2-core CPU
DEFAULT_BUDGET_S = 600.0
#: the share of the budget the probes may use before the best candidate is taken
PROBE_SHARE = 0.4


def is_auto(cfg: RunConfig) -> bool:
    return cfg.strategy.name == "auto"


def probe(name: str, cfg: RunConfig, splits: dict, kwargs: dict[str, Any]) -> dict[str, Any]:
    """One candidate: features of train and val (cached), LogME, the validation-chosen probe."""
    t0 = time.perf_counter()
    bb = build_backbone(name, **kwargs)
    pipe = InputPipeline(bb, grayscale=cfg.train.grayscale, workers=cfg.train.workers)
    cache = FeatureCache(cfg.run.cache_dir, enabled=not cfg.run.no_cache)
    bs = cfg.train.eval_batch_size
    tr = cache.features(bb, pipe, splits["train"], batch_size=bs)
    va = cache.features(bb, pipe, splits["val"], batch_size=bs)
    feats_s = time.perf_counter() - t0
    y, yv = np.asarray(splits["train"].labels), np.asarray(splits["val"].labels)
    x, xv = tr.double().numpy(), va.double().numpy()
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z, zv = (x - mu) / sd, (xv - mu) / sd
    n_classes = len(splits["train"].classes)
    grid = []
    for c in C_GRID:
        coef, bias = fit_logreg(z, y, c, n_classes, cfg.train.seed)
        grid.append((float(((zv @ coef.T + bias).argmax(1) == yv).mean()), c))
    acc, c = max(grid, key=lambda t: (t[0], -abs(np.log10(t[1]))))
    probs = bb.source_probabilities(tr).double().numpy() if bb.source_head() else None
    return {"backbone": name, "probe_val_accuracy": acc, "probe_C": c, "logme": logme(x, y),
            "familiarity": None if probs is None else familiarity(probs),
            "feature_dim": int(x.shape[1]), "seconds": round(time.perf_counter() - t0, 2),
            "features_s": round(feats_s, 2)}


def _probe_all(cfg: RunConfig, splits: dict, modality: str, kwargs_for: Callable,
               budget_s: float, log) -> list[dict[str, Any]]:
    names = [cfg.backbone.name] if cfg.backbone.name else list(CANDIDATES[modality])
    t0, rows = time.perf_counter(), []
    for name in names:
        if rows and time.perf_counter() - t0 > PROBE_SHARE * budget_s:
            log(f"auto: {name} not probed ({format_seconds(time.perf_counter() - t0)} of the "
                f"probing share {format_seconds(PROBE_SHARE * budget_s)} spent)")
            continue
        try:
            row = probe(name, cfg, splits, kwargs_for(name))
        except BackboneError as e:  # a built-in whose package is absent is skipped, said
            if cfg.backbone.name:  # the one the user named: its own message
                raise
            log(f"auto: {name} skipped: {e}")
            continue
        log(f"auto: {name}: probe val accuracy {row['probe_val_accuracy']:.4f}, LogME "
            f"{row['logme']:.3f} ({format_seconds(row['seconds'])})")
        rows.append(row)
    if not rows:
        raise ConfigError("--strategy auto: no candidate backbone could be probed")
    if modality == "image" and len(rows) > 1:
        if time.perf_counter() - t0 > PROBE_SHARE * budget_s:
            log("auto: the best two backbones together not probed (probing share spent)")
        else:
            rows.append(_probe_pair(rows, cfg, splits, kwargs_for, log))
    return rows


def _probe_pair(rows: list[dict[str, Any]], cfg: RunConfig, splits: dict, kwargs_for: Callable,
                log) -> dict[str, Any]:
    """The best two probes' backbones side by side (features concatenated), probed alike."""
    top = sorted(rows, key=lambda r: (-r["probe_val_accuracy"], -r["logme"]))[:2]
    name = combined_name([r["backbone"] for r in top])
    row = probe(name, cfg, splits, kwargs_for(top[0]["backbone"]))
    row["familiarity"] = min((r["familiarity"] for r in top if r["familiarity"] is not None),
                             default=None)
    log(f"auto: {name}: probe val accuracy {row['probe_val_accuracy']:.4f}, LogME "
        f"{row['logme']:.3f} ({format_seconds(row['seconds'])})")
    return row


def fixed_choice(cfg: RunConfig, backbone: str, *, several: bool, shots_only: bool,
                 log) -> tuple[RunConfig, dict[str, Any]] | None:
    """The cases ``auto`` decides without probes (else None): several data sets or tasks
    share one frozen backbone; a few shots without validation data take the nearest class
    prototype, which has nothing to choose on the shots."""
    if several:
        strategy, why = "freeze", ("several data sets or tasks share one backbone: frozen, "
                                   "with a head per task; name a strategy (e.g. finetune) to "
                                   "adapt the backbone")
    elif shots_only:
        strategy, why = "prototype", (f"{cfg.data.shots} labelled samples a class and no "
                                      "validation data: the nearest class prototype on frozen "
                                      "features (SimpleShot), which chooses nothing on the "
                                      "shots")
    else:
        return None
    chosen = cfg.updated({"backbone": backbone, "strategy": strategy}, where="auto")
    record = {"candidates": [], "chosen": {"backbone": backbone, "strategy": strategy,
                                           "options": {}},
              "case": {"several": several, "shots": cfg.data.shots},
              "budget_s": cfg.train.budget_seconds, "probing_s": 0.0,
              "reasons": [f"{backbone}: the default backbone of the data (not probed)", why],
              "test_used": False}
    log(f"auto: chose {backbone} + {strategy}: {why}")
    return chosen, record


def pick(rows: list[dict[str, Any]], n_val: int) -> tuple[dict[str, Any], float]:
    """The candidate to run, and the tolerance: validation accuracies within one standard
    error (and at least one sample) of the best count as tied, since a few dozen validation
    samples cannot tell them apart; among those a single backbone goes before a pair (half
    the cost), then the highest LogME (which reads every training sample)."""
    top = max(r["probe_val_accuracy"] for r in rows)
    n = max(n_val, 1)
    p = (top * n + 1) / (n + 2)  # kept off 0 and 1, so a perfect score still has an error
    tol = max(math.sqrt(p * (1 - p) / n), 1 / n)
    tied = [r for r in rows if r["probe_val_accuracy"] >= top - tol - 1e-9]
    return max(tied, key=lambda r: (COMBINED_PREFIX not in r["backbone"], r["logme"])), tol


def plan(size: str, similarity: str) -> tuple[str, dict[str, Any], str]:
    """The strategy, its options and why, for a case of the guideline."""
    if size == "small" and similarity == "similar":
        return "linear", {"refit": True}, (
            "small data close to the pretraining data: the probe on frozen features, nothing "
            "to gain from moving the backbone; C chosen on validation, then refit on train + "
            "validation (small data: every labelled sample counts)")
    if size == "small":
        return "partial", {}, ("small data unlike the pretraining data: the top layers adapt, "
                               "the rest stays; kept only if validation beats the head alone")
    return "finetune", {}, ("enough data to fine-tune the whole network; kept only if "
                            "validation beats the head alone")


def choose(cfg: RunConfig, splits: dict, modality: str, kwargs_for: Callable,
           log) -> tuple[RunConfig, dict[str, Any]]:
    """The configuration ``auto`` runs, and the record of how it was chosen."""
    t0 = time.perf_counter()
    budget_s = cfg.train.budget_seconds or DEFAULT_BUDGET_S
    rows = _probe_all(cfg, splits, modality, kwargs_for, budget_s, log)
    best, tol = pick(rows, len(splits["val"]))
    counts = np.bincount(np.asarray(splits["train"].labels), minlength=len(splits["train"].classes))
    per_class = float(np.median(counts))
    size = "small" if per_class < SMALL_PER_CLASS else "large"
    fam = best["familiarity"]
    similarity = "similar" if fam is None or fam >= FAMILIAR else "different"
    strategy, options, why = plan(size, similarity)
    left = max(1.0, budget_s - (time.perf_counter() - t0))
    chosen = cfg.updated({"backbone": best["backbone"], "strategy": strategy, "options": options,
                          "budget": f"{left:.0f}s"}, where="auto")
    record = {"candidates": rows, "chosen": {"backbone": best["backbone"], "strategy": strategy,
                                             "options": options},
              "case": {"size": size, "per_class_median": per_class, "similarity": similarity,
                       "familiarity": fam},
              "budget_s": budget_s, "probing_s": round(time.perf_counter() - t0, 2),
              "reasons": [f"{best['backbone']}: probe validation accuracy "
                          f"{best['probe_val_accuracy']:.4f}, within {tol:.4f} (one standard "
                          f"error, at least one sample) of the best of {len(rows)} "
                          "candidate(s), and the highest LogME of those (a single backbone "
                          "before a pair)",
                          f"{size} data ({per_class:.0f} a class; small below "
                          f"{SMALL_PER_CLASS}), {similarity} to the pretraining data ("
                          + ("no source classifier: assumed" if fam is None
                             else f"familiarity {fam:.2f}") + ")", why],
              "test_used": False}
    log(f"auto: chose {best['backbone']} + {strategy}: " + "; ".join(record["reasons"][1:]))
    return chosen, record
