"""Rank candidate backbones for a labelled data set without training any of them.

:func:`rank` reads the data, takes the training split that ``fit`` would take (the same
seeded, stratified carving), computes each backbone's pooled features of it through the
feature cache (and, where the backbone has a classifier over its source classes, the source
probabilities from those features), and computes every transferability score of
:mod:`transferkit.select.transferability` that applies, timing each.  Higher is better for
every score; the scores are comparable between backbones, not between scores.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .backbones import backbone_modality, build_backbone
from .config import RunConfig
from .data import read_data, resolve_splits
from .data.images import check_split_images
from .engine.cache import FeatureCache
from .engine.config import resolve_device
from .engine.inputs import InputPipeline
from .errors import ConfigError, DataError
from .io import write_json
from .select.transferability import SCORES, scores_for

__all__ = ["rank", "rank_table", "write_rank"]


def _backbone_names(backbones: str | Sequence[str]) -> list[str]:
    names = backbones.split(",") if isinstance(backbones, str) else list(backbones)
    names = [n.strip() for n in names]
    if not names or any(not n for n in names):
        raise ConfigError(f"--backbones: give names separated by commas, e.g. tiny-cnn,tiny-vit; "
                          f"got {','.join(names)!r}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"--backbones: {dup[0]!r} is named twice")
    return names


def _check_modalities(names: list[str], modality: str, source: str) -> None:
    for name in names:
        m = backbone_modality(name)  # an unknown name raises its one line here
        if m not in (modality, "any"):
            raise ConfigError(f"--backbones: {name!r} takes {m} but the data ({source}) is "
                              f"{modality}")


def training_split(data, *, seed: int | None = None, skip_bad: bool = False,
                   log: Callable[[str], None] = lambda s: None):
    """The training split ``fit`` would use on ``data`` (default fractions and seed)."""
    cfg = RunConfig()
    seed = cfg.train.seed if seed is None else seed
    splits = resolve_splits(read_data(data), val_fraction=cfg.data.val_fraction,
                            test_fraction=cfg.data.test_fraction, seed=seed)
    train = check_split_images({"train": splits["train"]}, skip_bad, log)["train"]
    present = np.unique(train.labels) if train.labels is not None else []
    if len(present) < 2:
        raise DataError(f"{train.source}: ranking needs at least 2 classes in the training "
                        f"split; it holds {len(present)}")
    return train


def score_backbone(name: str, train, cache: FeatureCache, *, device: str = "cpu",
                   batch_size: int = 64) -> dict[str, Any]:
    """One backbone's row: its features of ``train`` and every score that applies, timed."""
    bb = build_backbone(name)
    pipe = InputPipeline(bb, device=resolve_device(device))
    bb.to(pipe.device)
    hits = cache.hits
    t0 = time.perf_counter()
    pooled = cache.features(bb, pipe, train, batch_size=batch_size)
    row: dict[str, Any] = {"backbone": name, "feature_dim": int(pooled.shape[1]),
                           "features_s": time.perf_counter() - t0,
                           "cached": cache.hits - hits == len(train)}
    probs = None
    if bb.source_head() is not None:
        t0 = time.perf_counter()
        probs = bb.source_probabilities(pooled).double().numpy()
        row["source_classes"] = int(probs.shape[1])
        row["source_probs_s"] = time.perf_counter() - t0
    feats = pooled.double().numpy()
    row["scores"], row["seconds"] = {}, {}
    for score in scores_for(probs is not None):
        t0 = time.perf_counter()
        row["scores"][score.name] = score.fn(feats, train.labels, probs)
        row["seconds"][score.name] = time.perf_counter() - t0
    return row


def rank(data, backbones: str | Sequence[str], *, seed: int | None = None,
         cache_dir: str | None = None, no_cache: bool = False, device: str = "cpu",
         batch_size: int = 64, skip_bad: bool = False,
         log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Score every backbone of ``backbones`` on the training split of ``data``.

    Returns a JSON-able record: the data and its training split's size and classes, what each
    score is, and per backbone its feature size, the seconds its features took (``cached``
    when every sample came from the cache), each score and the seconds each score took.
    Backbones without a source classifier have no ``leep`` / ``nce``.  All names are checked
    (known, and of the data's modality) before any feature is computed.
    """
    names = _backbone_names(backbones)
    train = training_split(data, seed=seed, skip_bad=skip_bad, log=log)
    _check_modalities(names, train.modality, train.source)
    cache = FeatureCache(cache_dir, enabled=not no_cache)
    rows = []
    for name in names:
        log(f"rank: {name} ...")
        rows.append(score_backbone(name, train, cache, device=device, batch_size=batch_size))
    return {"data": str(data), "split": "train", "samples": len(train),
            "classes": list(train.classes), "modality": train.modality,
            "higher_is_better": True,
            "score_descriptions": {k: s.description for k, s in SCORES.items()},
            "backbones": rows}


def rank_table(record: dict[str, Any]) -> str:
    """The record as a text table: backbone, each score, then the seconds of each score."""
    names = [k for k in SCORES if any(k in r["scores"] for r in record["backbones"])]
    head = ["backbone"] + names + ["features s"] + [f"{k} s" for k in names]
    lines = [head]
    for r in record["backbones"]:
        feat = "cached" if r["cached"] else f"{r['features_s']:.2f}"
        lines.append([r["backbone"]]
                     + [f"{r['scores'][k]:.4f}" if k in r["scores"] else "-" for k in names]
                     + [feat]
                     + [f"{r['seconds'][k]:.4f}" if k in r["seconds"] else "-" for k in names])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(line, widths)))
                     for line in lines)


def write_rank(record: dict[str, Any], path: str | Path) -> Path:
    return write_json(Path(path), record)
