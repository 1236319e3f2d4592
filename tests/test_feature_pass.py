"""A cold ``freeze`` run reads every image once: the features of train, val and test come
from one pass (one loader), and ``--skip-bad`` finds unreadable images in that pass, with the
messages and the outcome of the separate scan it replaces."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import transferkit
from transferkit import api, console
from transferkit.data import datasets, images
from transferkit.engine import cache as cache_mod
from transferkit.engine import inputs
from transferkit.errors import DataError

from conftest import make_image_folder


def _count(monkeypatch, module, name: str) -> list:
    calls: list = []
    real = getattr(module, name)

    def counted(*a, **k):
        calls.append((a, k))
        return real(*a, **k)
    monkeypatch.setattr(module, name, counted)
    return calls


def _lines(monkeypatch) -> list[str]:
    lines: list[str] = []
    monkeypatch.setattr(console.Reporter, "log", lambda self, msg: lines.append(msg))
    return lines


def _truncated_jpeg(path):
    noise = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, quality=95)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # the header reads; a full decode fails


def _bad_folder(root):
    data = make_image_folder(root, per_class=10)
    _truncated_jpeg(data / "cat" / "broken.jpg")
    (data / "dog" / "notes.jpg").write_text("this is not an image\n")
    return data


@pytest.mark.parametrize("skip_bad", [False, True])
def test_cold_freeze_reads_every_split_in_one_pass(image_folder, tmp_path, monkeypatch, skip_bad):
    loaders = _count(monkeypatch, inputs, "make_loader")
    passes = _count(monkeypatch, cache_mod, "extract_features")
    scans = _count(monkeypatch, images, "scan_images")
    tm = transferkit.fit(image_folder, backbone="tiny-cnn", strategy="freeze", epochs=2,
                         skip_bad=skip_bad, out=tmp_path / "r", cache_dir=tmp_path / "c",
                         quiet=True)
    m = tm.metrics
    assert m["test"] is not None and m["test"]["n"] > 0 and m["val"]["n"] > 0
    assert (m["feature_cache"]["hits"], m["feature_cache"]["misses"]) == (0, 20)
    assert len(passes) == 1 and len(passes[0][0][2]) == 20   # train + val + test, together
    assert len(loaders) == 1                                  # one loader start-up
    assert scans == []                                        # no separate decoding scan


def test_warm_freeze_reads_the_cache_in_one_go(image_folder, tmp_path, monkeypatch):
    kw = dict(backbone="tiny-cnn", strategy="freeze", epochs=1, cache_dir=tmp_path / "c",
              quiet=True)
    transferkit.fit(image_folder, out=tmp_path / "a", **kw)
    loaders = _count(monkeypatch, datasets, "DataLoader")
    warm = transferkit.fit(image_folder, out=tmp_path / "b", **kw)
    assert warm.metrics["feature_cache"]["hits"] == 20
    assert warm.metrics["feature_cache"]["misses"] == 0
    assert loaders == []


def _expected_lines(data, **settings) -> list[str]:
    """What the separate scan logs for this data: the skipped files, then the data line."""
    cfg = api.configure(data, None, settings)
    strat, _ = api.build_strategy(cfg)
    lines: list[str] = []
    api.read_run_data(cfg, strat, lines.append)
    return lines


@pytest.mark.parametrize("strategy", ["freeze", "finetune"])
def test_skip_bad_in_the_pass_drops_and_lists_as_the_scan_did(tmp_path, monkeypatch, strategy):
    data = _bad_folder(tmp_path / "d")
    settings = dict(backbone="tiny-cnn", strategy=strategy, epochs=1, skip_bad=True)
    expected = _expected_lines(data, **settings)
    assert any(x.startswith("skipped ") and "unreadable file(s) in" in x for x in expected)
    assert any("broken.jpg: truncated or corrupt image" in x for x in expected)
    assert any("notes.jpg: not a readable image" in x for x in expected)
    lines = _lines(monkeypatch)
    tm = transferkit.fit(data, out=tmp_path / "r", cache_dir=tmp_path / "c", quiet=True,
                         **settings)
    # the same lines in the same order, then the backbone, as when the scan ran first
    start = lines.index(expected[0])
    assert lines[start:start + len(expected)] == expected
    assert lines[start + len(expected)].startswith("backbone: ")
    m = tm.metrics
    assert sum(1 for x in expected if x.startswith("  ")) == 2
    if strategy == "freeze":
        assert m["feature_cache"]["misses"] == 20        # the 20 readable images, once each
        assert m["feature_cache"]["hits"] == 0


def test_skip_bad_on_a_warm_cache_still_finds_the_bad_images(tmp_path, monkeypatch):
    data = _bad_folder(tmp_path / "d")
    kw = dict(backbone="tiny-cnn", strategy="freeze", epochs=1, skip_bad=True,
              cache_dir=tmp_path / "c", quiet=True)
    lines = _lines(monkeypatch)
    cold = transferkit.fit(data, out=tmp_path / "a", **kw)
    said_cold = [x for x in lines if "unreadable" in x or x.startswith("  ")]
    lines.clear()
    warm = transferkit.fit(data, out=tmp_path / "b", **kw)
    said_warm = [x for x in lines if "unreadable" in x or x.startswith("  ")]
    assert said_warm == said_cold
    assert any("broken.jpg" in x for x in said_warm) and any("notes.jpg" in x for x in said_warm)
    assert warm.metrics["feature_cache"] == {**cold.metrics["feature_cache"], "hits": 20,
                                             "misses": 0}
    for split in ("val", "test"):
        assert warm.metrics[split]["accuracy"] == cold.metrics[split]["accuracy"]


def test_a_corrupt_image_without_skip_bad_still_stops_the_run(tmp_path):
    data = make_image_folder(tmp_path / "d", per_class=10)
    _truncated_jpeg(data / "cat" / "broken.jpg")
    with pytest.raises(DataError, match="broken.jpg"):
        transferkit.fit(data, backbone="tiny-cnn", strategy="freeze", epochs=1,
                        out=tmp_path / "r", cache_dir=tmp_path / "c", quiet=True)
