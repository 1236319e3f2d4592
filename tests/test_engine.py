"""The engine: resume after an interrupt, feature cache, schedules, metrics, run folder."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import transferkit
from transferkit import api
from transferkit.engine.metrics import classification_metrics
from transferkit.engine.schedules import build_scheduler, lr_factor

from conftest import interrupt_after


@pytest.mark.parametrize("strategy,backbone,cut", [("freeze", "tiny-cnn", 2),
                                                   ("finetune", "tiny-cnn", 3),
                                                   ("finetune", "tiny-bert", 1)])
def test_resume_gives_the_same_final_metrics(strategy, backbone, cut, image_folder, text_csv,
                                             tmp_path, monkeypatch):
    data = image_folder if backbone == "tiny-cnn" else text_csv
    kw = dict(backbone=backbone, strategy=strategy, epochs=3, batch_size=8, seed=3, quiet=True,
              options={"head_epochs": 2} if strategy == "finetune" else None)
    full = transferkit.fit(data, out=tmp_path / "full", **kw)

    with monkeypatch.context() as m:
        interrupt_after(m, cut)
        with pytest.raises(KeyboardInterrupt):
            transferkit.fit(data, out=tmp_path / "cut", **kw)
    assert (tmp_path / "cut" / "checkpoint" / "state.json").exists()
    assert not (tmp_path / "cut" / "metrics.json").exists()
    resumed = api.resume(tmp_path / "cut", quiet=True)

    a, b = full.metrics, resumed.metrics
    assert a["best_epoch"] == b["best_epoch"]
    for split in ("val", "test"):
        assert a[split]["accuracy"] == b[split]["accuracy"]
        assert a[split]["loss"] == pytest.approx(b[split]["loss"], abs=1e-6)
    h_full = json.loads(json.dumps(full.metrics))  # noqa: F841 - metrics are JSON-able
    rows_a = (tmp_path / "full" / "history.csv").read_text().splitlines()
    rows_b = (tmp_path / "cut" / "history.csv").read_text().splitlines()
    assert len(rows_a) == len(rows_b)


def test_feature_cache_is_reused(image_folder, tmp_path):
    cache = tmp_path / "cache"
    first = transferkit.fit(image_folder, backbone="tiny-cnn", strategy="freeze", epochs=2,
                            out=tmp_path / "a", cache_dir=str(cache), quiet=True)
    second = transferkit.fit(image_folder, backbone="tiny-cnn", strategy="freeze", epochs=4,
                             lr=1e-2, out=tmp_path / "b", cache_dir=str(cache), quiet=True)
    assert first.metrics["feature_cache"]["misses"] == 20  # every image computed once
    assert second.metrics["feature_cache"]["misses"] == 0
    assert second.metrics["feature_cache"]["hits"] >= 20
    # another seeded split of the same files reuses every feature
    third = transferkit.fit(image_folder, backbone="tiny-cnn", strategy="freeze", epochs=1,
                            seed=9, out=tmp_path / "c", cache_dir=str(cache), quiet=True)
    assert third.metrics["feature_cache"]["misses"] == 0


def test_grayscale_changes_the_cache_key(image_folder, tmp_path):
    cache = tmp_path / "cache"
    transferkit.fit(image_folder, backbone="tiny-cnn", strategy="freeze", epochs=1,
                    out=tmp_path / "a", cache_dir=str(cache), quiet=True)
    g = transferkit.fit(image_folder, backbone="tiny-cnn", strategy="freeze", epochs=1,
                        grayscale=True,
                        out=tmp_path / "b", cache_dir=str(cache), quiet=True)
    assert g.metrics["feature_cache"]["hits"] == 0


def test_run_folder_contents(image_folder, tmp_path):
    tm = transferkit.fit(image_folder, backbone="tiny-cnn", strategy="freeze", epochs=2,
                         out=tmp_path / "r", quiet=True)
    run = tmp_path / "r"
    m = json.loads((run / "metrics.json").read_text())
    assert set(m["val"]) >= {"accuracy", "macro_f1"}
    assert m["test"] is not None and "accuracy" in m["test"]
    assert isinstance(m["best_epoch"], int)
    assert set(m["timing"]) >= {"total_s", "features_s"}
    for f in ("history.csv", "per_class.json", "confusion_val.csv", "confusion_val.png",
              "curves.png", "report.html", "bundle/config.json", "bundle/model.safetensors"):
        assert (run / f).exists(), f
    hist = (run / "history.csv").read_text().splitlines()
    assert len(hist) == 1 + 2
    per_class = json.loads((run / "per_class.json").read_text())
    assert set(per_class["val"]) == {"cat", "dog"}
    assert tm.metrics["val"]["accuracy"] == m["val"]["accuracy"]


def test_early_stopping(image_folder, tmp_path):
    transferkit.fit(image_folder, backbone="tiny-cnn", epochs=30, lr=1e-7, patience=2,
                    out=tmp_path / "r", quiet=True)
    hist = (tmp_path / "r" / "history.csv").read_text().splitlines()
    assert len(hist) - 1 < 30


def test_seed_reproducible(text_csv, tmp_path):
    a = transferkit.fit(text_csv, backbone="tiny-bert", epochs=2, seed=5, out=tmp_path / "a", quiet=True)
    b = transferkit.fit(text_csv, backbone="tiny-bert", epochs=2, seed=5, out=tmp_path / "b", quiet=True)
    assert a.metrics["val"]["loss"] == b.metrics["val"]["loss"]


def test_lr_schedule():
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(50, 100, 0, "linear") == pytest.approx(0.5)
    assert lr_factor(70, 100, 0, "constant") == 1.0


def test_metrics_by_hand():
    logits = np.array([[2, 0], [0, 1], [3, 0], [0, 2]], dtype=np.float32)
    labels = np.array([0, 1, 1, 1])
    m = classification_metrics(logits, labels, ["a", "b"])
    assert m["accuracy"] == 0.75
    # class a: P=1/2 R=1 F1=2/3; class b: P=1 R=2/3 F1=0.8
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert m["confusion"] == [[1, 0], [1, 2]]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert m["loss"] == pytest.approx(-np.mean(np.log(p[np.arange(4), labels])), rel=1e-6)
    assert math.isclose(m["per_class"]["b"]["recall"], 2 / 3)


@pytest.mark.parametrize("total,warmup,schedule", [(100, 10, "cosine"), (40, 0, "cosine"),
                                                   (37, 5, "linear"), (30, 3, "constant"),
                                                   (6, 8, "cosine"), (50, 1, "linear")])
def test_torch_scheduler_follows_the_schedule(total, warmup, schedule):
    import torch

    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD([{"params": [params[0]], "lr": 0.1, "initial_lr": 0.1},
                           {"params": [params[1]], "lr": 0.02, "initial_lr": 0.02}], lr=0.1)
    sched = build_scheduler(opt, total, warmup, schedule)
    for step in range(total):
        for g, base in zip(opt.param_groups, (0.1, 0.02)):
            assert g["lr"] == pytest.approx(base * lr_factor(step, total, warmup, schedule),
                                            rel=1e-9, abs=1e-15)
        opt.step()
        sched.step()
