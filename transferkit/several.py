"""Which data sets a run reads, when it reads more than one.

* ``fit A B C``: one task from several sets (dataset merging; with
  ``--domain-specific`` weight sharing), one label space (``--merge strict|union``);
* ``fit --task sst2=A --task sst5=B``: several tasks, one head each, on one backbone
  (multi-task learning on one domain, parallel training across domains);
* ``fit T --label-column a,b``: one task per label column of one table.

:func:`several_splits` returns the joined train / val / test splits with the parts they were
joined from (:class:`~transferkit.data.several.Part`), or None for a run of one set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .config import RunConfig
from .data import resolve_splits
from .data.several import Part, check_names, column_tasks, join_tasks, merge_sets
from .errors import ConfigError


@dataclass
class Several:
    """The joined splits of a run of several sets, and how they were joined."""

    splits: dict[str, Any]
    #: ``"merge"`` (one task, several sources) or ``"tasks"``
    kind: str
    #: per split, the range of samples each set gave
    parts: dict[str, list[Part]] = field(default_factory=dict)
    #: ``[(task, number of classes), ...]`` of a run of several tasks, else None
    tasks: list[tuple[str, int]] | None = None


def label_columns(cfg: RunConfig) -> list[str] | None:
    """``--label-column a,b``: the columns, when there are several."""
    col = cfg.data.label_column
    if col is None or "," not in col:
        return None
    cols = [c.strip() for c in col.split(",")]
    check_names(cols, "label column")
    return cols


def _paths(cfg: RunConfig) -> list:
    p = cfg.data.path
    return list(p) if isinstance(p, (list, tuple)) else ([] if p is None else [p])


def is_several(cfg: RunConfig) -> bool:
    return bool(cfg.data.tasks) or label_columns(cfg) is not None or len(_paths(cfg)) > 1


def _refuse_with(cfg: RunConfig, what: str) -> None:
    d = cfg.data
    given = [flag for flag, v in (("--val", d.val), ("--test", d.test), ("--shots", d.shots),
                                  ("--target", cfg.domain.target),
                                  ("--domain-column", cfg.domain.domain_column)) if v is not None]
    if given:
        raise ConfigError(f"{given[0]} does not combine with {what}: give each set its own "
                          "train / val / test splits (a split folder or table), or none")


def several_splits(cfg: RunConfig, as_splits: Callable, read: Callable, log) -> Several | None:
    """The joined splits of a run of several sets (None for one set).  ``as_splits(x,
    columns)`` reads a path's splits; ``read(path, columns)`` one table."""
    if not is_several(cfg):
        return None
    d, seed = cfg.data, cfg.train.seed

    def split(given: dict) -> dict:
        return resolve_splits(given, val_fraction=d.val_fraction, test_fraction=d.test_fraction,
                              seed=seed)

    base = {"text_column": d.text_column, "image_column": d.image_column}
    cols = label_columns(cfg)
    if d.tasks:
        if len(_paths(cfg)) > 0:
            raise ConfigError("give the data of each task with --task NAME=DATA, not as DATA")
        _refuse_with(cfg, "--task NAME=DATA")
        check_names(list(d.tasks), "task")
        cols_kw = {**base, "label_column": d.label_column if cols is None else None}
        named = {n: split(as_splits(p, cols_kw)) for n, p in d.tasks.items()}
        splits, tasks, parts = join_tasks(named)
        return Several(splits, "tasks", parts, tasks)
    if cols is not None:
        paths = _paths(cfg)
        if len(paths) != 1:
            raise ConfigError(f"--label-column {d.label_column}: give one table with those "
                              "columns")
        _refuse_with(cfg, f"--label-column {d.label_column}")
        per = {c: _only(read(paths[0], {**base, "label_column": c}), paths[0]) for c in cols}
        splits, tasks, parts = join_tasks(column_tasks(per, lambda s: split({"all": s})))
        return Several(splits, "tasks", parts, tasks)
    _refuse_with(cfg, "several DATA")
    named = {}
    for p in _paths(cfg):
        name = str(p)
        if name in named:
            raise ConfigError(f"{name} is named twice as DATA")
        named[name] = split(as_splits(p, {**base, "label_column": d.label_column}))
    splits, parts = merge_sets(named, d.merge, log)
    return Several(splits, "merge", parts)


def _only(splits: dict, path) -> Any:
    if set(splits) != {"all"}:
        raise ConfigError(f"{path}: holds splits ({', '.join(splits)}); --label-column a,b "
                          "reads one table")
    return splits["all"]
