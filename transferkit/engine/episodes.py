"""Episodic few-shot evaluation on precomputed features.

An episode draws ``ways`` classes, then ``shots`` support and ``queries`` query samples of
each (disjoint); the strategy fits a classifier on the support features alone
(:meth:`~transferkit.strategies.base.Strategy.fit_features`: by default the dense layer of
``solve_features``) and is scored on the queries.
The features of the whole pool are offered to the fit as unlabelled data (their labels are
never passed; a strategy may use them, e.g. ``prototype -o centre=all`` to centre by them).
Everything is seeded: episode ``i`` draws from its own generator seeded ``(seed, i)``, so an
episode does not depend on how many came before it.  The reported interval is the usual one
of few-shot papers: ``1.96 * sd / sqrt(episodes)`` with the sample standard deviation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, DataError


@dataclass
class EpisodeSpec:
    ways: int
    shots: int
    queries: int
    episodes: int
    seed: int = 0

    def check(self, labels: np.ndarray, classes: list[str], source: str) -> np.ndarray:
        """The indices of the classes an episode may draw (enough samples for ``shots`` +
        ``queries``); refuse impossible settings in one line."""
        for name in ("ways", "shots", "queries", "episodes"):
            low = 2 if name == "ways" else 1
            if getattr(self, name) < low:
                raise ConfigError(f"--{name} must be >= {low}, got {getattr(self, name)}")
        if self.ways > len(classes):
            raise ConfigError(f"--ways {self.ways}: {source} has only {len(classes)} classes")
        counts = np.bincount(labels, minlength=len(classes))
        need = self.shots + self.queries
        eligible = np.flatnonzero(counts >= need)
        if len(eligible) < self.ways:
            short = [f"{classes[c]!r} ({counts[c]})" for c in np.flatnonzero(counts < need)][:3]
            raise DataError(f"{source}: --ways {self.ways} needs {self.ways} classes with "
                            f"{need} samples (shots + queries); only {len(eligible)} have "
                            f"them (short: {', '.join(short)})")
        return eligible


def sample_episode(labels: np.ndarray, eligible: np.ndarray, spec: EpisodeSpec,
                   index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(classes, support, query)`` of episode ``index``: the drawn class indices and the
    sample indices, ``support`` ordered class by class (``shots`` each), ``query`` likewise."""
    rng = np.random.default_rng([int(spec.seed) & 0xFFFFFFFF, index])
    chosen = np.sort(rng.choice(eligible, size=spec.ways, replace=False))
    support, query = [], []
    for c in chosen:
        members = np.flatnonzero(labels == c)
        picked = rng.choice(members, size=spec.shots + spec.queries, replace=False)
        support.append(picked[:spec.shots])
        query.append(picked[spec.shots:])
    return chosen, np.concatenate(support), np.concatenate(query)


def run_episodes(features: np.ndarray, labels: np.ndarray, classes: list[str], strategy,
                 spec: EpisodeSpec, source: str = "data") -> list[dict]:
    """One row per episode: ``{"episode", "accuracy", "classes"}``."""
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    eligible = spec.check(labels, classes, source)
    within = np.arange(spec.ways)
    rows = []
    for i in range(spec.episodes):
        chosen, support, query = sample_episode(labels, eligible, spec, i)
        y_s, y_q = np.repeat(within, spec.shots), np.repeat(within, spec.queries)
        scores = strategy.fit_features(features[support], y_s, spec.ways, spec.seed + i,
                                       unlabelled=features, classes=chosen)
        pred = np.asarray(scores(features[query])).argmax(1)
        rows.append({"episode": i, "accuracy": float((pred == y_q).mean()),
                     "classes": [classes[c] for c in chosen]})
    return rows


def mean_ci95(values) -> tuple[float, float]:
    """``(mean, 1.96 * sd / sqrt(n))`` with the sample standard deviation (0 for one value)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return float(v.mean()), 0.0
    return float(v.mean()), float(1.96 * v.std(ddof=1) / math.sqrt(len(v)))
