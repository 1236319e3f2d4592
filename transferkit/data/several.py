"""Several data sets in one run: merged into one label space, or kept as several tasks.

Each data set is split on its own (seeded, stratified, or as given); the splits are then
joined in the order the sets were named, so that every split's samples of one set are one
contiguous range (:class:`Part`), which is how figures per set are scored.

* :func:`merge_sets` -- one task, several sources of it (dataset merging, weight sharing):
  the label sets must agree (``strict``) or are joined (``union``, naming the labels some
  sets lack).
* :func:`join_tasks` -- several tasks (multi-task learning, parallel training): every task's
  classes get its name as prefix (``"sst2:positive"``) and the joint list is the tasks'
  lists in turn (see :mod:`transferkit.engine.tasks`).
* :func:`column_tasks` -- several label columns of one table: one split of the rows, shared
  by every column's task (a row never trains one task and tests another).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import ConfigError, DataError
from .samples import Samples, sort_classes
from .splits import concat_samples

SPLITS = ("train", "val", "test")
TASK_SEP = ":"


@dataclass(frozen=True)
class Part:
    """Samples ``[start, stop)`` of a joined split came from the set ``name``."""

    name: str
    start: int
    stop: int


def check_names(names: list[str], what: str) -> None:
    """Task or source names must be distinct, non-empty and free of ``:``."""
    seen = set()
    for n in names:
        if not n or TASK_SEP in n or n != n.strip():
            raise ConfigError(f"{what} name {n!r}: give a non-empty name without ':' or spaces "
                              "around it")
        if n in seen:
            raise ConfigError(f"two {what}s are named {n!r}; give each its own name")
        seen.add(n)


def _join(named: dict[str, dict[str, Samples | None]]
          ) -> tuple[dict[str, Samples | None], dict[str, list[Part]]]:
    """Join each split across the sets (in order); a split only some sets have is refused."""
    out: dict[str, Samples | None] = {}
    parts: dict[str, list[Part]] = {}
    for split in SPLITS:
        have = [n for n, s in named.items() if s.get(split) is not None]
        if not have:
            out[split] = None
            continue
        if len(have) != len(named):
            lack = next(n for n in named if n not in have)
            raise DataError(f"{lack}: has no {split} split while {have[0]} has one; give "
                            f"every set a {split} split, or none")
        start, ps = 0, []
        for n in have:
            k = len(named[n][split])
            ps.append(Part(n, start, start + k))
            start += k
        out[split] = concat_samples([named[n][split] for n in have])
        parts[split] = ps
    return out, parts


def merge_sets(named: dict[str, dict[str, Samples | None]], mode: str, log: Callable
               ) -> tuple[dict[str, Samples | None], dict[str, list[Part]]]:
    """One label space from several sets' splits: ``strict`` refuses sets whose labels
    differ (naming a label one set lacks), ``union`` keeps them all and logs the labels
    only some sets have."""
    label_sets = {n: set(s["train"].classes) for n, s in named.items()}
    every = set().union(*label_sets.values())
    for n, labels in label_sets.items():
        lacking = sorted(every - labels)
        if not lacking:
            continue
        owner = next(m for m, other in label_sets.items() if lacking[0] in other)
        if mode == "strict":
            raise DataError(f"{n}: has no label {lacking[0]!r}, which {owner} has; the merged "
                            "sets must share one label set (--merge union joins them)")
        log(f"merge: {n} lacks the label(s) {', '.join(map(repr, lacking))}")
    classes = sort_classes(every)
    aligned = {n: {k: (_in_domain(v.with_classes(classes), d) if v is not None else None)
                   for k, v in s.items()} for d, (n, s) in enumerate(named.items())}
    return _join(aligned)


def _in_domain(s: Samples, d: int) -> Samples:
    """``s`` with every item marked as coming from input domain ``d``."""
    s.domains = np.full(len(s), d, dtype=np.int64)
    return s


def _prefixed(s: Samples | None, task: str) -> Samples | None:
    if s is None:
        return None
    return Samples(s.modality, list(s.items), s.labels,
                   [f"{task}{TASK_SEP}{c}" for c in s.classes], list(s.origins), s.source,
                   list(s.notes))


def join_tasks(named: dict[str, dict[str, Samples | None]]
               ) -> tuple[dict[str, Samples | None], list[tuple[str, int]], dict[str, list[Part]]]:
    """The tasks' splits joined into one label space of blocks: ``(splits, [(task,
    number of classes), ...], parts)``."""
    check_names(list(named), "task")
    modalities = {s["train"].modality for s in named.values()}
    if len(modalities) > 1:
        raise DataError("the tasks' data hold " + " and ".join(sorted(modalities))
                        + "; every task of one backbone reads one modality")
    tasks = [(n, len(s["train"].classes)) for n, s in named.items()]
    prefixed = {n: {k: _prefixed(v, n) for k, v in s.items()} for n, s in named.items()}
    for s in prefixed.values():  # each task's splits keep their own class list
        for k in ("val", "test"):
            if s.get(k) is not None and s[k].classes != s["train"].classes:
                s[k] = s[k].with_classes(s["train"].classes)
    splits, parts = _join_blocks(prefixed)
    return splits, tasks, parts


def _join_blocks(named: dict[str, dict[str, Samples | None]]):
    """:func:`_join` keeping the tasks' class lists in turn (not sorted together)."""
    classes = [c for s in named.values() for c in s["train"].classes]
    aligned = {n: {k: (v.with_classes(classes) if v is not None else None) for k, v in s.items()}
               for n, s in named.items()}
    return _join(aligned)


def column_tasks(per_column: dict[str, Samples], split: Callable[[Samples], dict[str, Samples]]
                 ) -> dict[str, dict[str, Samples | None]]:
    """One task per label column of one table: the rows are split once (by ``split``, on
    the first column's labels) and every column's task takes the same rows."""
    first = next(iter(per_column.values()))
    for name, s in per_column.items():
        if s.origins != first.origins:
            raise DataError(f"{s.source}: label column {name!r} leaves out rows the others have")
    base = split(first)
    where = {o: i for i, o in enumerate(first.origins)}
    out = {}
    for name, s in per_column.items():
        out[name] = {k: (s.subset(np.array([where[o] for o in v.origins], dtype=np.int64))
                         if v is not None else None) for k, v in base.items()}
    return out
