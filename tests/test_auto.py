"""--strategy auto: probes, the plan from size x similarity, the record, resume, no test data."""

from __future__ import annotations

import json

import pytest
import torch

import transferkit
from transferkit import auto
from transferkit.api import configure, read_run_data, build_strategy
from transferkit.cli import main

from conftest import interrupt_after


@pytest.mark.parametrize("size,similarity,strategy", [("small", "similar", "linear"),
                                                      ("small", "different", "partial"),
                                                      ("large", "similar", "finetune"),
                                                      ("large", "different", "finetune")])
def test_plan_follows_the_guideline(size, similarity, strategy):
    assert auto.plan(size, similarity)[0] == strategy


def test_auto_fits_chooses_and_records(image_folder, tmp_path):
    tm = transferkit.fit(image_folder, strategy="auto", backbone="tiny-cnn", epochs=2,
                         out=tmp_path / "r", quiet=True)
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    a = m["auto"]
    assert [c["backbone"] for c in a["candidates"]] == ["tiny-cnn"]
    row = a["candidates"][0]
    assert 0 <= row["probe_val_accuracy"] <= 1 and row["probe_C"] > 0
    assert a["chosen"]["strategy"] == auto.plan(a["case"]["size"], a["case"]["similarity"])[0]
    assert a["test_used"] is False and len(a["reasons"]) == 3
    recorded = json.loads((tmp_path / "r" / "run_config.json").read_text())
    assert recorded["strategy"]["name"] == a["chosen"]["strategy"]
    assert json.loads((tmp_path / "r" / "auto.json").read_text()) == a
    assert len(tm.predict([str(p) for p in sorted(image_folder.rglob("*.png"))[:3]])) == 3


def test_choice_never_reads_test_data(image_folder, tmp_path):
    cfg = configure(image_folder, None, {"strategy": "auto", "backbone": "tiny-cnn",
                                         "cache_dir": str(tmp_path / "c")})
    data = read_run_data(cfg, build_strategy(cfg)[0], lambda s: None)

    class Untouchable:
        def __getattr__(self, name):
            raise AssertionError(f"test data read ({name})")

        def __len__(self):
            raise AssertionError("test data read (len)")

    splits = dict(data.splits, test=Untouchable())
    chosen, record = auto.choose(cfg, splits, data.modality, lambda n: {}, lambda s: None)
    assert chosen.strategy.name in ("linear", "partial", "finetune")
    assert chosen.backbone.name == "tiny-cnn" and chosen.train.budget is not None


def test_auto_refuses_options(image_folder, tmp_path, capsys):
    assert main(["fit", str(image_folder), "--strategy", "auto", "-o", "C=1", "--backbone",
                 "tiny-cnn", "--out", str(tmp_path / "r")]) == 2
    assert "takes no -o options" in capsys.readouterr().err


def test_interrupted_auto_run_resumes_with_its_record(image_folder, tmp_path, monkeypatch):
    run = tmp_path / "r"
    kw = dict(strategy="auto", backbone="tiny-cnn", epochs=3, out=run, quiet=True)
    with monkeypatch.context() as m:
        interrupt_after(m, 1)
        try:
            transferkit.fit(image_folder, **kw)
        except KeyboardInterrupt:
            pass
    record = json.loads((run / "auto.json").read_text())
    if record["chosen"]["strategy"] == "linear":
        pytest.skip("the plan was the closed-form probe: nothing to interrupt")
    assert not (run / "metrics.json").exists()
    transferkit.api.resume(run, quiet=True)
    assert json.loads((run / "metrics.json").read_text())["auto"] == record


def test_auto_is_the_default_and_the_report_says_why(image_folder, tmp_path):
    tm = transferkit.fit(image_folder, backbone="tiny-cnn", epochs=2, out=tmp_path / "r",
                         quiet=True)
    auto_record = tm.metrics["auto"]
    assert auto_record["chosen"]["strategy"] == tm.metrics["strategy"]
    page = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert f"auto: tiny-cnn + {tm.metrics['strategy']}" in page
    assert all(r in page for r in ("probe_val_accuracy", "one standard error"))


def test_auto_with_shots_and_no_validation_takes_the_prototypes(image_folder, tmp_path):
    tm = transferkit.fit(image_folder, backbone="tiny-cnn", shots=2, out=tmp_path / "r",
                         quiet=True)
    a = tm.metrics["auto"]
    assert a["chosen"]["strategy"] == tm.metrics["strategy"] == "prototype"
    assert a["candidates"] == [] and "SimpleShot" in a["reasons"][1]


def test_auto_with_several_tasks_shares_a_frozen_backbone(tmp_path):
    from test_several import _tables

    paths = _tables(tmp_path)
    tm = transferkit.fit(tasks={"sent": str(paths["sent"]), "len": str(paths["len"])},
                         backbone="tiny-bert", epochs=1, batch_size=8, out=tmp_path / "r",
                         quiet=True)
    assert tm.metrics["strategy"] == "freeze"
    assert "several data sets or tasks" in tm.metrics["auto"]["reasons"][1]


def test_fit_without_data_names_what_is_missing(capsys):
    assert main(["fit"]) == 2
    assert "fit needs DATA" in capsys.readouterr().err


def test_detection_takes_the_frozen_backbone_under_auto():
    from transferkit.config import RunConfig
    from transferkit.detection.run import detection_strategy

    said = []
    assert detection_strategy(RunConfig(), said.append) == "freeze" and "auto" in said[0]
    named = RunConfig().updated({"strategy": "finetune"}, where="test")
    assert detection_strategy(named, said.append) == "finetune" and len(said) == 1


def test_linear_refit_uses_train_and_validation_and_says_so(image_folder, tmp_path):
    kw = dict(backbone="tiny-cnn", strategy="linear", quiet=True, seed=0)
    plain = transferkit.fit(image_folder, out=tmp_path / "a", **kw)
    refit = transferkit.fit(image_folder, out=tmp_path / "b", options={"refit": True}, **kw)
    info = refit.metrics["closed_form"]["refit"]
    cfg = configure(image_folder, None, {"backbone": "tiny-cnn", "strategy": "linear"})
    splits = read_run_data(cfg, build_strategy(cfg)[0], lambda s: None).splits
    assert info["samples"] == len(splits["train"]) + len(splits["val"])
    assert refit.metrics["closed_form"]["C"] == plain.metrics["closed_form"]["C"]
    assert info["val_accuracy_before"] == pytest.approx(plain.metrics["val"]["accuracy"])
    assert "refit" in refit.metrics["selection"] and "saw" in refit.metrics["selection"]
    w_a = plain.model.head.state_dict()
    w_b = refit.model.head.state_dict()
    assert any(not torch.equal(w_a[k], w_b[k]) for k in w_a)


def test_pick_treats_accuracies_within_one_standard_error_as_tied():
    rows = [{"backbone": "a", "probe_val_accuracy": 1.0, "logme": 0.1},
            {"backbone": "b", "probe_val_accuracy": 36 / 37, "logme": 0.5},
            {"backbone": "c", "probe_val_accuracy": 30 / 37, "logme": 0.9},
            {"backbone": "concat:a+b", "probe_val_accuracy": 1.0, "logme": 0.7}]
    best, tol = auto.pick(rows, 37)
    assert best["backbone"] == "b" and 1 / 37 <= tol < 6 / 37  # c is out, the pair waits
    assert auto.pick(rows, 10_000)[0]["backbone"] == "a"  # a large split tells them apart
