"""Integration: the real built-in backbones on small slices of ../shared/data.

These skip with a reason when the shared data folder is absent.  Image sizes are small so the
whole file runs in about a minute on two cores.
"""

from __future__ import annotations

import numpy as np
import pytest

import transferkit
from transferkit.data import Samples, read_data, stratified_split

from conftest import shared_data

pytestmark = pytest.mark.integration


def _slice(samples: Samples, per_class: int, seed: int = 0) -> Samples:
    rng = np.random.default_rng(seed)
    idx = []
    for c in range(len(samples.classes)):
        where = np.flatnonzero(samples.labels == c)
        idx += rng.choice(where, size=min(per_class, len(where)), replace=False).tolist()
    return samples.subset(sorted(idx))


def test_hymenoptera_freeze_and_bundle(tmp_path):
    root = shared_data("hymenoptera")
    splits = read_data(root)
    train = _slice(splits["train"], 16)
    test = _slice(splits["val"], 10)
    tm = transferkit.fit(train, test=test, backbone="efficientnet_lite0", strategy="freeze",
                         image_size=128, epochs=8, skip_bad=True, out=tmp_path / "run",
                         quiet=True)
    # ImageNet features separate ants from bees even at 128 px and 32 training images
    assert tm.metrics["test"]["accuracy"] >= 0.75
    loaded = transferkit.load(tmp_path / "run" / "bundle")
    assert (loaded.logits(test) == tm.logits(test)).all()


def test_hymenoptera_finetune_grayscale_runs(tmp_path):
    root = shared_data("hymenoptera")
    splits = read_data(root)
    train = _slice(splits["train"], 6)
    tm = transferkit.fit(train, backbone="efficientnet_lite0", strategy="finetune",
                         image_size=96, epochs=1, grayscale=True, batch_size=8, skip_bad=True,
                         options={"head_epochs": 1}, out=tmp_path / "run", quiet=True,
                         val_fraction=0.25, test_fraction=0.0)
    assert tm.metrics["best_epoch"] in (1, 2)
    assert any(n.startswith("backbone.") for n in
               __import__("json").loads((tmp_path / "run" / "bundle" / "config.json").read_text())["tensors"])


def test_uci_minilm_linear(tmp_path):
    path = shared_data("uci_sentiment") / "amazon_cells_labelled.txt"
    s = _slice(read_data(path)["all"], 60)
    parts = stratified_split(s, {"train": 0.75, "test": 0.25}, seed=0)
    tm = transferkit.fit(parts["train"], test=parts["test"], backbone="minilm", strategy="linear",
                         out=tmp_path / "run", quiet=True)
    assert tm.metrics["test"]["accuracy"] >= 0.75


def test_uci_wordllama_bilstm(tmp_path):
    path = shared_data("uci_sentiment") / "yelp_labelled.txt"
    s = _slice(read_data(path)["all"], 80)
    tm = transferkit.fit(s, backbone="wordllama", strategy="freeze", epochs=3,
                         head={"kind": "bilstm", "hidden": 32}, out=tmp_path / "run", quiet=True)
    assert tm.model.head.kind == "bilstm"
    assert 0.0 <= tm.metrics["test"]["accuracy"] <= 1.0


def test_digits_npz(tmp_path):
    path = shared_data("digits") / "usps_test.npz"
    s = _slice(read_data(path)["all"], 8)
    tm = transferkit.fit(s, backbone="efficientnet_lite0", strategy="linear", image_size=64,
                         out=tmp_path / "run", quiet=True)
    assert tm.metrics["val"]["n"] > 0 and len(tm.classes) == 10


def test_imdb_tar_reads(tmp_path):
    path = shared_data("imdb") / "aclImdb_v1_sup.tar.gz"
    splits = read_data(path)
    assert len(splits["train"]) == 25000 and len(splits["test"]) == 25000
    assert splits["train"].classes == ["neg", "pos"]
