"""Rank candidate backbones for a labelled data set without training any of them.

:func:`rank` reads the data, takes the training split that ``fit`` would take (the same
seeded, stratified carving), computes each backbone's pooled features of it through the
feature cache (and, where the backbone has a classifier over its source classes, the source
probabilities from those features), and computes every transferability score of
:mod:`transferkit.select.transferability` that applies, timing each.  With ``layers`` the
candidates are (backbone, layer) pairs: the pooled outputs of chosen intermediate layers
(:mod:`transferkit.engine.layers`), cached like the final features, are scored too.  Higher is better for
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
from .engine.layers import layer_count
from .errors import ConfigError, DataError
from .io import write_json
from .select.transferability import SCORES, scores_for

__all__ = ["POOLED", "parse_layers", "rank", "rank_table", "resolve_layers", "write_rank"]


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


#: the ``--layers`` word for the backbone's own features (what ``fit`` trains on)
POOLED = "pooled"


def parse_layers(layers: str | Sequence[str | int] | None) -> list[str | int]:
    """``--layers`` as a list of ``"pooled"``, ``"all"`` and non-zero layer numbers (``1..L``
    from the input side, ``-1..-L`` from the output side); ``None`` is ``["pooled"]``."""
    if layers is None:
        return [POOLED]
    items = layers.split(",") if isinstance(layers, str) else list(layers)
    out: list[str | int] = []
    for item in items:
        word = str(item).strip().lower()
        if word in (POOLED, "last", "all"):
            out.append(POOLED if word == "last" else word)
            continue
        try:
            number = int(word)
        except ValueError:
            raise ConfigError(f"--layers: {str(item).strip()!r} is not a layer; give pooled, all "
                              "or layer numbers such as 1,3,-1 (1 = nearest the input, -1 = "
                              "the last)") from None
        if number == 0:
            raise ConfigError("--layers: 0 is no layer; layers count from 1 (nearest the input) "
                              "or from -1 (the last)")
        out.append(number)
    return out


def resolve_layers(name: str, wanted: list[str | int], count: int) -> list[str | int]:
    """The rows of backbone ``name`` with ``count`` readable layers: ``"pooled"`` and layer
    numbers made positive, in the order asked, each once."""
    if count == 0 and any(w != POOLED for w in wanted):
        raise ConfigError(f"--layers: backbone {name!r} exposes no intermediate layers; only "
                          f"{POOLED} applies to it")
    out: list[str | int] = []
    for w in wanted:
        if w == "all":
            picks: list[str | int] = [POOLED, *range(1, count + 1)]
        elif w == POOLED:
            picks = [POOLED]
        else:
            if not -count <= int(w) <= count:
                raise ConfigError(f"--layers: backbone {name!r} has {count} layers (1..{count} "
                                  f"or -{count}..-1); {w} does not exist")
            picks = [int(w) + count + 1 if int(w) < 0 else int(w)]
        out += [p for p in picks if p not in out]
    return out


def _score_row(row: dict[str, Any], feats: np.ndarray, labels, probs) -> dict[str, Any]:
    row["scores"], row["seconds"] = {}, {}
    for score in scores_for(probs is not None):
        t0 = time.perf_counter()
        row["scores"][score.name] = score.fn(feats, labels, probs)
        row["seconds"][score.name] = time.perf_counter() - t0
    return row


def score_backbone(name: str, train, cache: FeatureCache, *, device: str = "cpu",
                   batch_size: int = 64, layers: Sequence[str | int] = (POOLED,),
                   bb=None) -> list[dict[str, Any]]:
    """One row per entry of ``layers`` (``"pooled"`` or a 1-based layer number, as
    :func:`resolve_layers` gives them): its features of ``train`` and every score that
    applies, timed.  Source probabilities (LEEP, NCE) belong to the pooled features only."""
    bb = build_backbone(name) if bb is None else bb
    pipe = InputPipeline(bb, device=resolve_device(device))
    bb.to(pipe.device)
    rows = []
    if POOLED in layers:
        hits = cache.hits
        t0 = time.perf_counter()
        pooled = cache.features(bb, pipe, train, batch_size=batch_size)
        row: dict[str, Any] = {"backbone": name, "layer": POOLED,
                               "feature_dim": int(pooled.shape[1]),
                               "features_s": time.perf_counter() - t0,
                               "cached": cache.hits - hits == len(train)}
        probs = None
        if bb.source_head() is not None:
            t0 = time.perf_counter()
            probs = bb.source_probabilities(pooled).double().numpy()
            row["source_classes"] = int(probs.shape[1])
            row["source_probs_s"] = time.perf_counter() - t0
        rows.append(_score_row(row, pooled.double().numpy(), train.labels, probs))
    numbers = [int(w) for w in layers if w != POOLED]
    if numbers:
        hits = cache.hits
        t0 = time.perf_counter()
        feats = cache.layer_features(bb, pipe, train, numbers, batch_size=batch_size)
        seconds, cached = time.perf_counter() - t0, cache.hits - hits == len(train)
        for layer in numbers:  # features_s: the one pass that gave every layer asked
            row = {"backbone": name, "layer": layer, "feature_dim": int(feats[layer].shape[1]),
                   "features_s": seconds, "cached": cached}
            rows.append(_score_row(row, feats[layer].double().numpy(), train.labels, None))
    order = {w: i for i, w in enumerate(layers)}
    return sorted(rows, key=lambda r: order[r["layer"]])


def rank(data, backbones: str | Sequence[str], *, layers: str | Sequence[str | int] | None = None,
         seed: int | None = None, cache_dir: str | None = None, no_cache: bool = False,
         device: str = "cpu", batch_size: int = 64, skip_bad: bool = False,
         log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Score every backbone of ``backbones`` (and, with ``layers``, every chosen layer of
    each) on the training split of ``data``.

    Returns a JSON-able record: the data and its training split's size and classes, what each
    score is, and per candidate (``backbone``, ``layer``: ``"pooled"`` or a layer number
    counted from 1 at the input) its feature size, the seconds its features took (``cached``
    when every sample came from the cache), each score and the seconds each score took.
    Layer rows and backbones without a source classifier have no ``leep`` / ``nce``.  All
    names and layers are checked (known, of the data's modality, existing) before any
    feature is computed.
    """
    names = _backbone_names(backbones)
    wanted = parse_layers(layers)
    train = training_split(data, seed=seed, skip_bad=skip_bad, log=log)
    _check_modalities(names, train.modality, train.source)
    built, chosen = {}, {}
    for name in names:
        built[name] = bb = build_backbone(name)
        chosen[name] = resolve_layers(name, wanted, layer_count(bb))
    cache = FeatureCache(cache_dir, enabled=not no_cache)
    rows = []
    for name in names:
        log(f"rank: {name} ...")
        rows += score_backbone(name, train, cache, device=device, batch_size=batch_size,
                               layers=chosen[name], bb=built.pop(name))
    return {"data": str(data), "split": "train", "samples": len(train),
            "classes": list(train.classes), "modality": train.modality,
            "higher_is_better": True,
            "score_descriptions": {k: s.description for k, s in SCORES.items()},
            "backbones": rows}


def rank_table(record: dict[str, Any]) -> str:
    """The record as a text table: backbone, each score, then the seconds of each score."""
    names = [k for k in SCORES if any(k in r["scores"] for r in record["backbones"])]
    with_layers = any(r.get("layer", POOLED) != POOLED for r in record["backbones"])
    first = ["backbone", "layer"] if with_layers else ["backbone"]
    head = first + names + ["features s"] + [f"{k} s" for k in names]
    lines = [head]
    for r in record["backbones"]:
        feat = "cached" if r["cached"] else f"{r['features_s']:.2f}"
        lines.append([r["backbone"]] + ([str(r.get("layer", POOLED))] if with_layers else [])
                     + [f"{r['scores'][k]:.4f}" if k in r["scores"] else "-" for k in names]
                     + [feat]
                     + [f"{r['seconds'][k]:.4f}" if k in r["seconds"] else "-" for k in names])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) if i < len(first) else c.rjust(w)
                               for i, (c, w) in enumerate(zip(line, widths)))
                     for line in lines)


def write_rank(record: dict[str, Any], path: str | Path) -> Path:
    return write_json(Path(path), record)
