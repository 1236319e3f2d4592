"""Several data sets and several tasks in one fit: the block loss and scores, multi-task and
parallel runs (one bundle, every head), label columns, dataset merging."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

import transferkit
from transferkit.cli import main
from transferkit.engine.metrics import classification_metrics
from transferkit.engine.tasks import (blocks, masked_logits, per_sample_loss, sampling_weights,
                                      task_metrics)

from conftest import make_text_rows

BL = blocks([("a", 2), ("b", 3)])
CLASSES = ["a:x", "a:y", "b:p", "b:q", "b:r"]


# ----------------------------------------------------------------------------- the block maths

def test_each_sample_is_scored_by_its_own_head():
    logits = torch.tensor([[2.0, 0.0, 9.0, 9.0, 9.0], [0.0, 1.0, 0.5, -1.0, 3.0]])
    labels = torch.tensor([0, 4])
    per = per_sample_loss(logits, labels, BL, nn.CrossEntropyLoss(reduction="none"))
    hand0 = -torch.log_softmax(torch.tensor([2.0, 0.0]), 0)[0]
    hand1 = -torch.log_softmax(torch.tensor([0.5, -1.0, 3.0]), 0)[2]
    torch.testing.assert_close(per, torch.stack([hand0, hand1]))
    weighted = per_sample_loss(logits, labels, BL, nn.CrossEntropyLoss(reduction="none"),
                               [0.5, 2.0])
    torch.testing.assert_close(weighted, torch.stack([0.5 * hand0, 2.0 * hand1]))


def test_task_scores_average_the_tasks_and_mask_the_other_heads():
    # sample 0 (task a) would be "b:p" by a joint arg-max; its own head says "a:x" (right)
    logits = np.array([[2.0, 0.0, 9.0, 9.0, 9.0],
                       [0.0, 1.0, 0.0, 0.0, 0.0],
                       [0.0, 0.0, 0.0, 5.0, 1.0],
                       [9.0, 9.0, 3.0, 1.0, 0.0]])
    labels = np.array([0, 0, 3, 4])     # a: right, wrong; b: right, wrong
    m = task_metrics(logits, labels, CLASSES, BL, classification_metrics)
    assert m["tasks"]["a"]["accuracy"] == 0.5 and m["tasks"]["b"]["accuracy"] == 0.5
    assert m["tasks"]["b"]["per_class"].keys() == {"p", "q", "r"}
    assert m["accuracy"] == pytest.approx(0.5)
    assert np.isneginf(masked_logits(logits, labels, BL)[0, 2:]).all()
    # the joint confusion is block-diagonal: no sample is predicted into another task
    conf = np.array(m["confusion"])
    assert conf[:2, 2:].sum() == 0 and conf[2:, :2].sum() == 0


def test_sampling_weights():
    assert sampling_weights([100, 10], "proportional", 2.0) == [1.0, 1.0]
    w = sampling_weights([90, 10], "equal", 2.0)
    # each task gets half the signal: 90 * w0 == 10 * w1, and the mean weight is 1
    assert 90 * w[0] == pytest.approx(10 * w[1]) and (90 * w[0] + 10 * w[1]) / 100 == pytest.approx(1)
    t = sampling_weights([90, 10], "temperature", 2.0)
    assert t[0] < 1 < t[1] and t[1] < w[1]  # between proportional and equal


# ----------------------------------------------------------------------------- runs

def _tables(tmp_path):
    rows = make_text_rows(24, seed=3)
    # a second task: does the sentence mention "really" twice?  (its own labels)
    paths = {}
    for name, lab in (("sent", lambda t, y: y),
                      ("len", lambda t, y: "long" if len(t) > 34 else "short")):
        p = tmp_path / f"{name}.csv"
        with open(p, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows((t, lab(t, y)) for t, y in rows)
        paths[name] = p
    return paths


@pytest.fixture
def two_tasks(tmp_path):
    paths = _tables(tmp_path)
    tm = transferkit.fit(tasks={"sent": str(paths["sent"]), "len": str(paths["len"])},
                         backbone="tiny-bert", strategy="finetune", epochs=2, batch_size=8,
                         seed=0, quiet=True, out=tmp_path / "run")
    return tm, paths, tmp_path / "run"


def test_two_tasks_one_backbone_one_bundle(two_tasks):
    tm, paths, run = two_tasks
    m = json.loads((run / "metrics.json").read_text())
    assert set(m["tasks"]) == {"sent", "len"}
    for split in ("val", "test"):
        avg = np.mean([m["tasks"][t][split]["accuracy"] for t in ("sent", "len")])
        assert m[split]["accuracy"] == pytest.approx(avg)
    assert tm.tasks == ["sent", "len"]
    assert tm.task_classes("sent") == ["neg", "pos"] and tm.task_classes("len") == ["long", "short"]
    loaded = transferkit.load(run / "bundle")
    texts = [t for t, _ in make_text_rows(3, seed=9)]
    both = loaded.predict(texts)
    assert both == tm.predict(texts) and set(both[0]) == {"sent", "len"}
    assert loaded.predict(texts, task="len") == [p["len"] for p in both]
    proba = loaded.predict_proba(texts)
    np.testing.assert_allclose(proba[:, :2].sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(proba[:, 2:].sum(1), 1.0, rtol=1e-6)
    ev = loaded.evaluate(str(paths["len"]))  # the labels say which task
    assert ev["task"] == "len" and ev["n"] == 48
    page = (run / "report.html").read_text()
    assert "<h2>Per task</h2>" in page and "<td>sent</td>" in page and "<td>len</td>" in page
    cfg = json.loads((run / "run_config.json").read_text())
    assert set(cfg["data"]["tasks"]) == {"sent", "len"}
    assert all(v.startswith("/") for v in cfg["data"]["tasks"].values())


def test_every_task_from_one_backbone_pass(two_tasks):
    tm = two_tasks[0]
    calls = []
    handle = tm.model.backbone.register_forward_hook(lambda *a: calls.append(1))
    try:
        tm.predict([t for t, _ in make_text_rows(3)])
    finally:
        handle.remove()
    assert len(calls) == 1  # 6 texts, one batch, both heads


def test_a_task_of_weight_zero_leaves_its_head_alone(tmp_path, monkeypatch):
    import transferkit.api as api

    paths = _tables(tmp_path)
    initial = {}
    real = api.build_model

    def spy(*args, **kwargs):
        model = real(*args, **kwargs)
        initial["w"] = model.head.fc.weight.detach().clone()
        return model

    monkeypatch.setattr(api, "build_model", spy)
    tm = transferkit.fit(tasks={"sent": str(paths["sent"]), "len": str(paths["len"])},
                         task_weight={"len": 0}, backbone="tiny-bert", epochs=2, batch_size=8,
                         seed=0, quiet=True, out=tmp_path / "run")
    w, w0 = tm.model.head.fc.weight.detach(), initial["w"]
    assert w.shape[0] == 4  # sent: neg, pos; len: long, short
    assert (w[:2] - w0[:2]).abs().max() > 1e-3, "the weighted task did not train"
    # no gradient reaches the head of "len": only AdamW's weight decay moves it (1e-7 a step)
    torch.testing.assert_close(w[2:], w0[2:], atol=1e-5, rtol=0)


def test_label_columns_share_one_split_of_the_rows(tmp_path):
    rows = make_text_rows(20, seed=2)
    p = tmp_path / "two.csv"
    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "mood", "size"])
        w.writerows((t, y, "long" if len(t) > 34 else "short") for t, y in rows)
    tm = transferkit.fit(str(p), label_column="mood,size", backbone="tiny-bert", epochs=1,
                         seed=0, quiet=True, out=tmp_path / "run")
    assert tm.tasks == ["mood", "size"]
    from transferkit.api import read_run_data, build_strategy
    from transferkit.config import RunConfig

    cfg = RunConfig().updated({"data": str(p), "label_column": "mood,size"})
    rd = read_run_data(cfg, build_strategy(cfg)[0], lambda *_: None)
    test = rd.splits["test"]
    parts = rd.several.parts["test"]
    mood = test.origins[parts[0].start:parts[0].stop]
    size = test.origins[parts[1].start:parts[1].stop]
    assert mood == size  # the same rows test both tasks
    train = set(rd.splits["train"].origins)
    assert not train & set(mood)


def test_merged_sets_report_each_source(tmp_path):
    from conftest import make_text_csv

    a = make_text_csv(tmp_path / "a.csv", 12, seed=0)
    b = make_text_csv(tmp_path / "b.csv", 12, seed=1)
    tm = transferkit.fit([str(a), str(b)], backbone="tiny-bert", epochs=1, seed=0, quiet=True,
                         out=tmp_path / "run")
    m = tm.metrics
    assert set(m["sources"]) == {str(a), str(b)}
    n = sum(s["test"]["n"] for s in m["sources"].values())
    assert n == m["test"]["n"]
    # the pooled test accuracy is the sources' accuracies weighted by their sizes
    pooled = sum(s["test"]["accuracy"] * s["test"]["n"] for s in m["sources"].values()) / n
    assert pooled == pytest.approx(m["test"]["accuracy"])
    assert tm.tasks is None and tm.classes == ["neg", "pos"]


def test_union_merge_names_the_label_one_set_lacks(tmp_path, capsys):
    from conftest import make_text_csv

    a = make_text_csv(tmp_path / "a.csv", 12, seed=0)
    b = tmp_path / "b.csv"
    b.write_text(a.read_text() + "".join(f"so so {i} meh,meh\n" for i in range(12)))
    code = main(["fit", str(a), str(b), "--merge", "union", "--backbone", "tiny-bert",
                 "--epochs", "1", "--out", str(tmp_path / "run")])
    assert code == 0
    cap = capsys.readouterr()
    assert "lacks the label(s) 'meh'" in cap.out + cap.err
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["classes"] == ["meh", "neg", "pos"]


def test_predict_prints_every_task(two_tasks, capsys):
    run = two_tasks[2]
    assert main(["predict", str(run / "bundle"), "--text", "this is good really"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("sent=") and "\tlen=" in line
    assert main(["predict", str(run / "bundle"), "--text", "x y", "--task", "nope"]) == 2
    assert "sent, len" in capsys.readouterr().err


# ----------------------------------------------------------------------------- weight sharing

def test_domain_norm_standardises_each_domain_on_its_own():
    from transferkit.heads import DomainParts

    torch.manual_seed(0)
    parts = DomainParts("norm", 4, 2).train()
    x = torch.cat([torch.randn(50, 4) * 3 + 10, torch.randn(50, 4) * 0.1 - 5])
    d = torch.tensor([0] * 50 + [1] * 50)
    y = parts(x, d)
    for k in (0, 1):
        torch.testing.assert_close(y[d == k].mean(0), torch.zeros(4), atol=1e-5, rtol=0)
        torch.testing.assert_close(y[d == k].std(0, unbiased=False), torch.ones(4), atol=1e-3,
                                   rtol=0)


def test_domain_adapters_start_as_the_identity():
    from transferkit.heads import DomainParts

    parts = DomainParts("adapter", 8, 3)
    x = torch.randn(6, 8)
    torch.testing.assert_close(parts(x, torch.tensor([0, 1, 2, 0, 1, 2])), x)


@pytest.mark.parametrize("kind", ["norm", "adapter"])
def test_weight_sharing_bundle_keeps_every_domain_part(tmp_path, kind, capsys):
    from conftest import make_text_csv

    a = make_text_csv(tmp_path / "shop.csv", 12, seed=0)
    b = make_text_csv(tmp_path / "films.csv", 12, seed=1)
    tm = transferkit.fit([str(a), str(b)], domain_specific=kind, backbone="tiny-bert",
                         strategy="finetune", epochs=2, seed=0, quiet=True, out=tmp_path / "run")
    assert tm.domains == [str(a), str(b)]
    names = json.loads((tmp_path / "run" / "bundle" / "config.json").read_text())["tensors"]
    assert any(n.startswith("head.domain.parts.1.") for n in names)
    loaded = transferkit.load(tmp_path / "run" / "bundle")
    texts = [t for t, _ in make_text_rows(3, seed=5)]
    np.testing.assert_allclose(loaded.logits(texts, domain="films"),
                               tm.logits(texts, domain="films"), atol=1e-5)
    assert set(tm.metrics["sources"]) == {str(a), str(b)}
    run = tmp_path / "run" / "bundle"
    assert main(["predict", str(run), "--text", "good fun"]) == 2
    assert "--domain shop | films" in capsys.readouterr().err
    assert main(["predict", str(run), "--text", "good fun", "--domain", "shop"]) == 0


def test_an_interrupted_run_of_two_tasks_resumes_to_the_same_heads(tmp_path, capsys):
    from conftest import interrupt_after

    paths = _tables(tmp_path)
    argv = ["fit", "--task", f"sent={paths['sent']}", "--task", f"len={paths['len']}",
            "--backbone", "tiny-bert", "--strategy", "finetune", "-o", "head_epochs=1",
            "--epochs", "1", "--batch-size", "8", "--seed", "1", "-q"]
    assert main(argv + ["--out", str(tmp_path / "whole")]) == 0
    with pytest.MonkeyPatch.context() as m:
        interrupt_after(m, 1)
        assert main(argv + ["--out", str(tmp_path / "cut")]) == 130
    assert main(["fit", "--resume", str(tmp_path / "cut")]) == 0
    capsys.readouterr()
    a = transferkit.load(tmp_path / "whole" / "bundle")
    b = transferkit.load(tmp_path / "cut" / "bundle")
    texts = [t for t, _ in make_text_rows(3, seed=4)]
    np.testing.assert_allclose(a.logits(texts), b.logits(texts), atol=1e-5)
    m = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert set(m["tasks"]) == {"sent", "len"}


def test_export_and_explain_refuse_a_model_of_several_tasks(two_tasks, tmp_path, capsys):
    run = two_tasks[2]
    assert main(["explain", str(run / "bundle"), "--text", "good fun"]) == 2
    assert "several tasks" in capsys.readouterr().err
    pytest.importorskip("onnxruntime")
    assert main(["export", str(run / "bundle"), "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert "several tasks" in capsys.readouterr().err
