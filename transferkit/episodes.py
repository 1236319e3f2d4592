"""``transferkit episodes``: episodic few-shot evaluation of a strategy on a backbone.

The backbone runs once per sample (through the feature cache); then every episode is a fit
on a few support features and a score on the queries (:mod:`transferkit.engine.episodes`).
With ``out``, writes ``OUT/episodes.json`` (settings, mean accuracy and its 95 % interval)
and ``OUT/episodes.csv`` (one row per episode).
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

import numpy as np

from .api import DEFAULT_BACKBONES, _check_backbone_modality, _read
from .backbones import build_backbone
from .console import Reporter
from .data import concat_samples
from .data.images import check_split_images
from .engine.cache import FeatureCache
from .engine.config import TrainConfig
from .engine.episodes import EpisodeSpec, mean_ci95, run_episodes
from .engine.trainer import Trainer
from .errors import ConfigError
from .heads import HeadConfig, build_model
from .io import write_json, write_text
from .strategies.base import Strategy, get_strategy


def episodes(data, *, backbone: str | None = None, strategy: str = "prototype",
             options: dict[str, Any] | None = None, ways: int = 5, shots: int = 1,
             queries: int = 15, episodes: int = 600, seed: int = 0, out=None,
             cache_dir=None, skip_bad: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Mean accuracy ± 95 % interval of ``strategy`` over seeded episodes drawn from every
    labelled sample of ``data`` (all its splits); returns what ``episodes.json`` holds.
    ``skip_bad``: leave unreadable images out (listed) instead of refusing the data."""
    rep = Reporter(quiet)
    spec = EpisodeSpec(int(ways), int(shots), int(queries), int(episodes), int(seed))
    strat = get_strategy(strategy, **(options or {}))
    if (type(strat).solve_features is Strategy.solve_features
            and type(strat).fit_features is Strategy.fit_features):
        strat.solve_features(None, None, 0, 0)   # raises: says the strategy cannot
    samples = concat_samples([s for s in _read(data).values() if s is not None])
    samples = check_split_images({"all": samples}, skip_bad, rep.log)["all"]
    if samples.labels is None:
        raise ConfigError(f"{samples.source}: episodes need labelled data")
    spec.check(samples.labels, samples.classes, samples.source)   # before the backbone runs
    t0 = time.perf_counter()
    feats, bb_name = _features(samples, backbone, strat, cache_dir, rep)
    t1 = time.perf_counter()
    rows = run_episodes(feats, samples.labels, samples.classes, strat, spec, samples.source)
    mean, ci = mean_ci95([r["accuracy"] for r in rows])
    record = {"accuracy": {"mean": mean, "ci95": ci,
                           "sd": float(np.std([r["accuracy"] for r in rows], ddof=1))
                           if len(rows) > 1 else 0.0},
              "ways": spec.ways, "shots": spec.shots, "queries": spec.queries,
              "episodes": spec.episodes, "seed": spec.seed, "strategy": strat.name,
              "strategy_options": strat.options.to_dict(), "backbone": bb_name,
              "data": str(samples.source), "samples": len(samples),
              "ci95_formula": "1.96 * sample sd / sqrt(episodes)",
              "timing": {"features_s": round(t1 - t0, 3),
                         "episodes_s": round(time.perf_counter() - t1, 3)}}
    if out is not None:
        _write(Path(out), record, rows)
    return record


def _features(samples, backbone: str | None, strat, cache_dir, rep):
    """``(features (N, D) numpy, backbone name)``: every sample once, through the cache."""
    name = backbone or DEFAULT_BACKBONES[samples.modality]
    _check_backbone_modality(name, samples.modality, samples.source)
    bb = build_backbone(name)
    strat.check_backbone(bb)
    model = build_model(bb, HeadConfig(kind="linear"), samples.classes)
    trainer = Trainer(model, strat, TrainConfig(), cache=FeatureCache(cache_dir), log=rep.log)
    rep.log(f"backbone: {bb.describe()}; features of {len(samples)} samples")
    feats = trainer.split_features("all", samples).double().numpy()
    strat.prepare_features(model)
    return feats, bb.name


def describe(record: dict[str, Any]) -> str:
    """One line: what ran and the mean accuracy ± its 95 % interval, in percent."""
    acc = record["accuracy"]
    return (f"{record['strategy']} on {record['backbone']}: {record['ways']}-way "
            f"{record['shots']}-shot, {record['queries']} queries, {record['episodes']} "
            f"episodes: accuracy {100 * acc['mean']:.2f} ± {100 * acc['ci95']:.2f} %")


def _write(out: Path, record: dict[str, Any], rows: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "episodes.json", record)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["episode", "accuracy", "classes"])
    w.writerows([r["episode"], f"{r['accuracy']:.6f}", ";".join(r["classes"])] for r in rows)
    write_text(out / "episodes.csv", buf.getvalue())
