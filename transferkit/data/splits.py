"""Seeded, stratified splits; choosing train / val / test; k-shot subsets.

Everything here is deterministic for a given seed: each class is shuffled by its own
``numpy`` generator seeded with ``(seed, class index)``, so the result does not depend
on the process, the platform or the other classes.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..errors import ConfigError, DataError
from .samples import Samples, sort_classes

_SPLIT_WORDS = {"train": "train", "val": "validation", "test": "test"}


def _class_indices(samples: Samples, what: str) -> list[np.ndarray]:
    if samples.labels is None:
        raise DataError(f"{samples.source}: the data has no labels; {what} needs labelled data")
    order = np.argsort(samples.labels, kind="stable")
    bounds = np.searchsorted(samples.labels[order], np.arange(len(samples.classes) + 1))
    return [order[bounds[c]:bounds[c + 1]] for c in range(len(samples.classes))]


def _allocate(count: int, fractions: list[float]) -> list[int]:
    """Split ``count`` items by ``fractions`` (largest remainder), at least 1 per part."""
    targets = [fraction * count for fraction in fractions]
    sizes = [max(1, math.floor(target)) for target in targets]
    while sum(sizes) > count:
        # take from the part furthest above its target that can spare one
        i = max((i for i in range(len(sizes)) if sizes[i] > 1),
                key=lambda i: (sizes[i] - targets[i], -i))
        sizes[i] -= 1
    while sum(sizes) < count:
        i = max(range(len(sizes)), key=lambda i: (targets[i] - sizes[i], -i))
        sizes[i] += 1
    return sizes


def stratified_split(samples: Samples, fractions: dict[str, float], seed: int) -> dict[str, Samples]:
    """Split labelled samples class by class.

    Args:
        samples: labelled samples.
        fractions: split name -> fraction, e.g. ``{"train": 0.7, "val": 0.15, "test": 0.15}``;
            each > 0, normalised to sum to 1.
        seed: the same seed always gives the same split.

    Every class with samples keeps at least one in each split; within a split the items
    keep their original order.

    Raises:
        DataError: unlabelled samples, or a class with fewer samples than there are splits.
        ConfigError: an empty or non-positive ``fractions``.
    """
    names = list(fractions)
    values = [float(fractions[name]) for name in names]
    if not names or any(not math.isfinite(v) or v <= 0 for v in values):
        raise ConfigError(f"split fractions must be positive, got {fractions}")
    total = sum(values)
    values = [v / total for v in values]
    per_class = _class_indices(samples, "a stratified split")
    chosen: list[list[np.ndarray]] = [[] for _ in names]
    for class_index, indices in enumerate(per_class):
        if len(indices) == 0:
            continue
        if len(indices) < len(names):
            raise DataError(f"{samples.source}: class {samples.classes[class_index]!r} has only "
                            f"{len(indices)} sample{'s' if len(indices) != 1 else ''}; need at "
                            f"least {len(names)} to split it into {', '.join(names)}")
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, class_index])
        shuffled = indices[rng.permutation(len(indices))]
        start = 0
        for part, size in enumerate(_allocate(len(indices), values)):
            chosen[part].append(shuffled[start:start + size])
            start += size
    return {name: samples.subset(np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64))
            for name, parts in zip(names, chosen)}


def k_shot(samples: Samples, k: int, seed: int) -> Samples:
    """``k`` samples of every class, chosen with ``seed`` (original order kept).

    Raises:
        DataError: unlabelled samples, or a class with fewer than ``k`` samples.
        ConfigError: ``k`` < 1.
    """
    return samples.subset(_k_shot_indices(samples, k, seed))


def _k_shot_indices(samples: Samples, k: int, seed: int) -> np.ndarray:
    if int(k) < 1:
        raise ConfigError(f"k-shot needs k >= 1, got {k}")
    k = int(k)
    parts = []
    for class_index, indices in enumerate(_class_indices(samples, "k-shot")):
        if len(indices) < k:
            raise DataError(f"{samples.source}: class {samples.classes[class_index]!r} has only "
                            f"{len(indices)} sample{'s' if len(indices) != 1 else ''}; "
                            f"{k}-shot needs {k}")
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, class_index])
        parts.append(indices[rng.permutation(len(indices))[:k]])
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def few_shot_splits(splits: dict[str, Samples | None], k: int, seed: int, *,
                    val_given: bool) -> dict[str, Samples | None]:
    """The splits of a ``--shots K`` run.

    ``train`` becomes ``k`` labelled samples of every class (:func:`k_shot`, seeded) drawn
    from the training split, and from a validation split that was carved from it when the
    user gave none (``val_given`` False): those labels would otherwise make choices.  What is
    left of that pool is ``unlabelled`` (labels dropped).  ``val`` is the given validation
    data, else the K shots themselves (the same object: choices are then made on the shots,
    e.g. by cross-validation over them).  ``test`` is kept as it is.

    Raises:
        ConfigError: ``k`` < 1.
        DataError: a class of the pool with fewer than ``k`` samples (named, with its count).
    """
    if int(k) < 1:
        raise ConfigError(f"--shots {k}: give 1 or more labelled examples per class "
                          "(zero-shot is not supported yet)")
    k = int(k)
    pool = splits["train"]
    if not val_given and splits.get("val") is not None:
        pool = concat_samples([pool, splits["val"]])
    counts = pool.class_counts()
    smallest = min(counts, key=lambda name: counts[name])
    if counts[smallest] < k:
        raise DataError(f"--shots {k}: class {smallest!r} has only {counts[smallest]} "
                        f"training sample{'s' if counts[smallest] != 1 else ''}")
    chosen = _k_shot_indices(pool, k, seed)
    shots = pool.subset(chosen)
    rest = pool.subset(np.setdiff1d(np.arange(len(pool)), chosen))
    rest.labels = None
    val = splits["val"] if val_given else shots
    return {"train": shots, "val": val, "test": splits.get("test"), "unlabelled": rest}


def concat_samples(parts: Sequence[Samples]) -> Samples:
    """Join samples of one modality into one (e.g. every split of a split folder).

    The class list is kept when all parts share it, else it is the sorted union (labels
    re-indexed).  The result is unlabelled when any part is.

    Raises:
        DataError: no parts, or parts of different modalities.
    """
    if not parts:
        raise DataError("no data to join")
    first = parts[0]
    for part in parts[1:]:
        if part.modality != first.modality:
            raise DataError(f"{part.source}: holds {part.modality} data but {first.source} "
                            f"holds {first.modality} data")
    if len(parts) == 1:
        return first.subset(np.arange(len(first)))
    if all(part.classes == first.classes for part in parts):
        classes = list(first.classes)
    else:
        classes = sort_classes(name for part in parts for name in part.classes)
    labelled = all(part.labels is not None for part in parts)
    aligned = [part.with_classes(classes) if labelled and part.classes != classes else part
               for part in parts]
    sources = list(dict.fromkeys(part.source for part in parts))
    return Samples(
        modality=first.modality,
        items=[item for part in aligned for item in part.items],
        labels=np.concatenate([part.labels for part in aligned]) if labelled else None,
        classes=classes,
        origins=[origin for part in aligned for origin in part.origins],
        source=sources[0] if len(sources) == 1 else ", ".join(sources),
        notes=list(dict.fromkeys(note for part in parts for note in part.notes)),
        domains=(np.concatenate([part.domains for part in parts])
                 if all(part.domains is not None for part in parts) else None),
    )


def _one_split(data: dict[str, Samples], wanted: str) -> Samples:
    """The samples of an explicitly given val / test input."""
    if "all" in data:
        return data["all"]
    if len(data) == 1:
        return next(iter(data.values()))
    if wanted in data:
        return data[wanted]
    source = next(iter(data.values())).source
    raise DataError(f"{source}: holds several splits ({', '.join(data)}); give one split as "
                    f"the {_SPLIT_WORDS[wanted]} data")


def resolve_splits(data: dict[str, Samples], *, val: dict[str, Samples] | None = None,
                   test: dict[str, Samples] | None = None, val_fraction: float = 0.15,
                   test_fraction: float = 0.15, seed: int = 0) -> dict[str, Samples | None]:
    """Decide the train, val and test samples.

    Rules, in order:

    * an explicit ``val`` / ``test`` input (its ``"all"`` or its one split) wins;
    * splits present in ``data`` are used as they are;
    * with no val anywhere, val is carved (stratified, seeded) from the training data:
      ``val_fraction`` of it, and also ``test_fraction`` for test when ``data`` is a
      single ``"all"`` and no test was given (70/15/15 by default);
    * ``data`` with train (and val) but no test, and no explicit test: test is ``None``;
      an ``"all"`` with an explicit val also gets no test.

    All splits share one class list with labels re-indexed to it.  As every val / test
    class must occur in the training data, that list is the union of the splits' lists,
    which is the training data's own list (sorted by :func:`read_data`; an order set on
    purpose, e.g. a model's, is kept).

    Returns:
        ``{"train": Samples, "val": Samples, "test": Samples | None}``.

    Raises:
        DataError: no training data, unlabelled data, or a val / test class that the
            training data does not have.
        ConfigError: fractions outside (0, 1) or summing to 1 or more.
    """
    if not 0 < val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ConfigError(f"val and test fractions must be in (0, 1) and sum below 1, got "
                          f"{val_fraction} and {test_fraction}")
    given, single = _given_splits(data, val, test)
    _check_labelled_alike(given)
    given = _on_training_classes(given)
    train, val_s, test_s = given["train"], given["val"], given["test"]
    if val_s is None and test_s is None and single and test_fraction > 0:
        parts = stratified_split(train, {"train": 1 - val_fraction - test_fraction,
                                         "val": val_fraction, "test": test_fraction}, seed)
        return {"train": parts["train"], "val": parts["val"], "test": parts["test"]}
    if val_s is None:
        parts = stratified_split(train, {"train": 1 - val_fraction, "val": val_fraction}, seed)
        return {"train": parts["train"], "val": parts["val"], "test": test_s}
    return {"train": train, "val": val_s, "test": test_s}


def _given_splits(data: dict[str, Samples], val: dict[str, Samples] | None,
                  test: dict[str, Samples] | None) -> tuple[dict[str, Samples | None], bool]:
    """``({"train", "val", "test"}, single)``: the splits given (explicit val / test inputs
    win), and whether ``data`` was a single ``"all"``."""
    if "all" in data:
        train, single = data["all"], True
    elif "train" in data:
        train, single = data["train"], False
    else:
        source = next(iter(data.values())).source if data else "data"
        raise DataError(f"{source}: no training data (found splits: {', '.join(data) or 'none'})")
    val_s, test_s = data.get("val"), data.get("test")
    if val is not None:
        val_s = _one_split(val, "val")
    if test is not None:
        test_s = _one_split(test, "test")
    return {"train": train, "val": val_s, "test": test_s}, single


def _check_labelled_alike(given: dict[str, Samples | None]) -> None:
    """Every split given has labels, and all hold the same modality."""
    for name, split in given.items():
        if split is not None and split.labels is None:
            raise DataError(f"{split.source}: the {_SPLIT_WORDS[name]} data has no labels")
    modalities = {split.modality for split in given.values() if split is not None}
    if len(modalities) > 1:
        train = given["train"]
        raise DataError(f"{train.source}: the training data holds {train.modality}s but the "
                        "validation / test data do not")


def _on_training_classes(given: dict[str, Samples | None]) -> dict[str, Samples | None]:
    """Val / test re-indexed to the training data's class list; a class without training
    samples is refused.

    Every val / test class must have training samples, so the union of the class lists is the
    training data's list: keep it (and its order, which may be deliberate)."""
    given = dict(given)
    train = given["train"]
    assert train is not None and train.labels is not None
    classes = list(train.classes)
    train_counts = np.bincount(train.labels, minlength=len(classes))
    seen = {name for name, count in zip(classes, train_counts) if count > 0}
    for name in ("val", "test"):
        split = given[name]
        if split is None or split.labels is None:
            continue
        known = np.array([class_name in seen for class_name in split.classes], dtype=bool)
        unseen = np.flatnonzero(~known[split.labels]) if len(known) else np.zeros(0, np.int64)
        if len(unseen):
            first = int(unseen[0])
            class_name = split.classes[int(split.labels[first])]
            raise DataError(f"{split.origins[first]}: class {class_name!r} is in the "
                            f"{_SPLIT_WORDS[name]} data but not in the training data")
        if split.classes != classes:
            given[name] = split.with_classes(classes)
    return given
