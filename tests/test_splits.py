"""Tests for stratified splits, choosing train/val/test, k-shot subsets and loader order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transferkit.data import (
    Samples,
    concat_samples,
    k_shot,
    make_loader,
    resolve_splits,
    stratified_split,
)
from transferkit.errors import ConfigError, DataError


def _error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def _samples(counts: dict[str, int], source: str = "d.csv", start: int = 0) -> Samples:
    classes = sorted(counts)
    labels = np.concatenate([np.full(n, i) for i, n in enumerate(counts[c] for c in classes)])
    n = len(labels)
    return Samples("text", [f"{source} text {start + i}" for i in range(n)], labels.astype(np.int64),
                   classes, [f"{source}: line {start + i + 2}" for i in range(n)], source)


# --------------------------------------------------------------------------- stratified_split

def test_stratified_split_is_deterministic_and_complete():
    samples = _samples({"a": 50, "b": 30, "c": 20})
    fractions = {"train": 0.7, "val": 0.15, "test": 0.15}
    first = stratified_split(samples, fractions, seed=3)
    again = stratified_split(samples, fractions, seed=3)
    other = stratified_split(samples, fractions, seed=4)
    assert list(first) == ["train", "val", "test"]
    for name in first:
        assert first[name].items == again[name].items
    assert first["val"].items != other["val"].items
    everything = sorted(item for part in first.values() for item in part.items)
    assert everything == sorted(samples.items)                         # disjoint and complete
    assert first["train"].class_counts() == {"a": 35, "b": 21, "c": 14}
    assert first["val"].class_counts() == {"a": 8, "b": 5, "c": 3}
    assert first["test"].class_counts() == {"a": 7, "b": 4, "c": 3}
    for part in first.values():
        assert part.classes == ["a", "b", "c"]
        assert all(count >= 1 for count in part.class_counts().values())
        # original order is kept within a split
        positions = [samples.items.index(item) for item in part.items]
        assert positions == sorted(positions)


def test_stratified_split_keeps_every_class_in_every_split():
    samples = _samples({"big": 200, "tiny": 3, "small": 5})
    parts = stratified_split(samples, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=0)
    for part in parts.values():
        assert min(part.class_counts().values()) >= 1
    assert parts["train"].class_counts()["tiny"] == 1


def test_stratified_split_too_few():
    samples = _samples({"a": 10, "rare": 2})
    with pytest.raises(DataError) as excinfo:
        stratified_split(samples, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=0)
    assert _error(excinfo) == ("d.csv: class 'rare' has only 2 samples; need at least 3 to split "
                               "it into train, val, test")


def test_stratified_split_bad_input():
    unlabelled = Samples("text", ["a", "b"], None, [], ["x", "y"], "u.txt")
    with pytest.raises(DataError, match="u.txt: the data has no labels"):
        stratified_split(unlabelled, {"train": 0.5, "val": 0.5}, seed=0)
    with pytest.raises(ConfigError):
        stratified_split(_samples({"a": 4, "b": 4}), {"train": 1.0, "val": 0.0}, seed=0)


def test_stratified_split_skips_classes_without_samples():
    samples = _samples({"a": 5, "b": 5}).with_classes(["a", "b", "zz"])
    parts = stratified_split(samples, {"train": 0.8, "val": 0.2}, seed=1)
    assert parts["val"].class_counts() == {"a": 1, "b": 1, "zz": 0}


# --------------------------------------------------------------------------- resolve_splits

def test_resolve_all_gives_70_15_15():
    data = {"all": _samples({"a": 100, "b": 100})}
    splits = resolve_splits(data, seed=1)
    assert [len(splits[name]) for name in ("train", "val", "test")] == [140, 30, 30]
    assert resolve_splits(data, seed=1)["val"].items == splits["val"].items


def test_resolve_train_and_val_has_no_test():
    data = {"train": _samples({"a": 10, "b": 10}, "tr"), "val": _samples({"a": 3, "b": 3}, "va")}
    splits = resolve_splits(data)
    assert splits["train"] is not None and len(splits["train"]) == 20
    assert len(splits["val"]) == 6 and splits["test"] is None


def test_resolve_uses_all_three_splits():
    data = {"train": _samples({"a": 10, "b": 10}, "tr"), "val": _samples({"a": 3, "b": 3}, "va"),
            "test": _samples({"a": 4, "b": 4}, "te")}
    splits = resolve_splits(data)
    assert [len(splits[name]) for name in ("train", "val", "test")] == [20, 6, 8]


def test_resolve_carves_val_from_train():
    data = {"train": _samples({"a": 20, "b": 20}, "tr"), "test": _samples({"a": 4, "b": 4}, "te")}
    splits = resolve_splits(data, val_fraction=0.25, seed=0)
    assert len(splits["train"]) == 30 and len(splits["val"]) == 10 and len(splits["test"]) == 8
    only_train = resolve_splits({"train": _samples({"a": 20, "b": 20}, "tr")})
    assert only_train["test"] is None and len(only_train["val"]) == 6


def test_resolve_explicit_splits_win():
    data = {"train": _samples({"a": 10, "b": 10}, "tr"), "val": _samples({"a": 3, "b": 3}, "va")}
    explicit_val = {"all": _samples({"a": 1, "b": 1}, "other_val")}
    explicit_test = {"test": _samples({"a": 2, "b": 2}, "other_test")}
    splits = resolve_splits(data, val=explicit_val, test=explicit_test)
    assert splits["val"].source == "other_val" and splits["test"].source == "other_test"


def test_resolve_all_with_explicit_test_carves_val_only():
    data = {"all": _samples({"a": 20, "b": 20})}
    splits = resolve_splits(data, test={"all": _samples({"a": 5, "b": 5}, "t.csv")}, val_fraction=0.2)
    assert len(splits["train"]) == 32 and len(splits["val"]) == 8 and len(splits["test"]) == 10
    with_val = resolve_splits(data, val={"all": _samples({"a": 2, "b": 2}, "v.csv")})
    assert len(with_val["train"]) == 40 and with_val["test"] is None


def test_resolve_shares_class_list():
    train = _samples({"a": 10, "b": 10, "c": 10}, "tr")
    val = _samples({"c": 2}, "va")                       # classes ["c"], label 0
    splits = resolve_splits({"train": train, "val": val})
    assert splits["val"].classes == ["a", "b", "c"]
    assert splits["val"].labels.tolist() == [2, 2]
    assert splits["train"].classes == ["a", "b", "c"]


def test_resolve_keeps_a_deliberate_class_order():
    train = _samples({"a": 10, "b": 10}, "tr").with_classes(["b", "a"])
    splits = resolve_splits({"all": train}, seed=0)
    assert all(splits[name].classes == ["b", "a"] for name in ("train", "val", "test"))
    val = _samples({"a": 2, "b": 2}, "va")
    moved = resolve_splits({"train": train, "val": val})["val"]
    assert moved.classes == ["b", "a"] and moved.labels.tolist() == [1, 1, 0, 0]


def test_resolve_unseen_val_class():
    train = _samples({"a": 10, "b": 10}, "tr")
    val = _samples({"a": 2, "wasp": 2}, "va.csv")
    with pytest.raises(DataError) as excinfo:
        resolve_splits({"train": train, "val": val})
    assert _error(excinfo) == ("va.csv: line 4: class 'wasp' is in the validation data but not in "
                               "the training data")
    # train may list a class it has no samples of (e.g. classes given); still unseen
    empty_class = _samples({"a": 10, "b": 10}, "tr").with_classes(["a", "b", "wasp"])
    with pytest.raises(DataError, match="class 'wasp' is in the test data"):
        resolve_splits({"train": empty_class}, test={"all": val})


def test_resolve_faults():
    with pytest.raises(DataError, match="no training data"):
        resolve_splits({"val": _samples({"a": 2, "b": 2}, "va")})
    several = {"train": _samples({"a": 2, "b": 2}), "test": _samples({"a": 2, "b": 2})}
    with pytest.raises(DataError, match="holds several splits"):
        resolve_splits({"all": _samples({"a": 10, "b": 10})}, val=several)
    with pytest.raises(ConfigError):
        resolve_splits({"all": _samples({"a": 10, "b": 10})}, val_fraction=0.6, test_fraction=0.5)


# --------------------------------------------------------------------------- concat_samples

def test_concat_samples():
    a = _samples({"a": 2, "b": 1}, "tr")
    b = _samples({"b": 1, "c": 2}, "te")
    joined = concat_samples([a, b])
    assert joined.classes == ["a", "b", "c"] and len(joined) == 6
    assert joined.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert joined.origins[3] == "te: line 2" and joined.source == "tr, te"
    same = concat_samples([a, a])
    assert same.classes == ["a", "b"] and same.source == "tr"
    kept_order = a.with_classes(["b", "a"])
    assert concat_samples([kept_order, kept_order]).classes == ["b", "a"]
    images = Samples("image", [np.zeros((2, 2), np.uint8)], None, [], ["r0"], "x.npz")
    with pytest.raises(DataError, match="x.npz: holds image data but tr holds text data"):
        concat_samples([a, images])


# --------------------------------------------------------------------------- k_shot

def test_k_shot():
    samples = _samples({"a": 20, "b": 7, "c": 9})
    chosen = k_shot(samples, 5, seed=2)
    assert chosen.class_counts() == {"a": 5, "b": 5, "c": 5}
    assert chosen.items == k_shot(samples, 5, seed=2).items
    assert chosen.items != k_shot(samples, 5, seed=3).items
    with pytest.raises(DataError) as excinfo:
        k_shot(samples, 8, seed=0)
    assert _error(excinfo) == "d.csv: class 'b' has only 7 samples; 8-shot needs 8"
    with pytest.raises(ConfigError):
        k_shot(samples, 0, seed=0)


# --------------------------------------------------------------------------- loader order

def _order(loader) -> list[int]:
    return [i for batch in loader for i in batch[2].tolist()]


def test_make_loader_seeded_order():
    samples = _samples({"a": 30, "b": 30})
    first = _order(make_loader(samples, batch_size=8, shuffle=True, seed=7))
    assert first == _order(make_loader(samples, batch_size=8, shuffle=True, seed=7))
    assert first != _order(make_loader(samples, batch_size=8, shuffle=True, seed=8))
    assert sorted(first) == list(range(60))
    assert _order(make_loader(samples, batch_size=8)) == list(range(60))
    texts, labels, indices = next(iter(make_loader(samples, batch_size=4)))
    assert texts == samples.items[:4] and labels.tolist() == [0, 0, 0, 0]
    assert indices.dtype == torch.long


def test_make_loader_image_order_and_unlabelled():
    arrays = [np.full((4, 4), i, np.uint8) for i in range(20)]
    samples = Samples("image", arrays, None, [], [f"x.npz: row {i}" for i in range(20)], "x.npz")
    loader = make_loader(samples, batch_size=5, shuffle=True, seed=1)
    assert loader.num_workers == 0
    first = _order(loader)
    assert first == _order(make_loader(samples, batch_size=5, shuffle=True, seed=1))
    images, labels, indices, bad = next(iter(make_loader(samples, batch_size=5)))
    assert images.shape == (5, 3, 4, 4) and labels.tolist() == [-1] * 5 and bad == []
    assert torch.allclose(images[3], torch.full((3, 4, 4), 3 / 255))
