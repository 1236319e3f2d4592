"""Time: early stopping on by default, the stage estimate printed before a stage, and --budget."""

from __future__ import annotations

import json

import pytest

import transferkit
from transferkit.cli import main
from transferkit.engine.budget import format_seconds, parse_duration
from transferkit.engine.config import DEFAULT_PATIENCE, TrainConfig
from transferkit.errors import ConfigError


@pytest.mark.parametrize("text,seconds", [("90", 90), ("90s", 90), ("10m", 600), ("10 min", 600),
                                          ("1.5h", 5400), (45, 45), (0.5, 0.5)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten", "10d", "-5", "0", "0s", True])
def test_parse_duration_refuses(text):
    with pytest.raises(ConfigError, match="--budget"):
        parse_duration(text)


def test_format_seconds():
    assert format_seconds(42) == "42 s"
    assert format_seconds(600) == "10.0 min"
    assert format_seconds(7200) == "2.0 h"


def test_patience_default_depends_on_the_criterion():
    assert TrainConfig().early_stopping("source-val") == DEFAULT_PATIENCE == 3
    assert TrainConfig().early_stopping("dev") == 0
    assert TrainConfig(patience=0).early_stopping("source-val") == 0
    assert TrainConfig(patience=5).early_stopping("dev") == 5
    with pytest.raises(ConfigError, match="--patience must be >= 0"):
        TrainConfig(patience=-1).validate()


def _epochs(run) -> int:
    return len((run / "history.csv").read_text().splitlines()) - 1


def test_early_stopping_is_on_by_default_and_zero_turns_it_off(image_folder, tmp_path):
    kw = dict(backbone="tiny-cnn", strategy="freeze", epochs=12, lr=1e-9, quiet=True)
    transferkit.fit(image_folder, out=tmp_path / "default", **kw)
    transferkit.fit(image_folder, out=tmp_path / "off", patience=0, **kw)
    assert _epochs(tmp_path / "default") == 1 + DEFAULT_PATIENCE  # nothing improves after epoch 1
    assert _epochs(tmp_path / "off") == 12


def test_stage_estimate_is_printed_and_recorded(image_folder, tmp_path, capsys):
    transferkit.fit(image_folder, backbone="tiny-cnn", strategy="finetune", epochs=2,
                    options={"head_epochs": 1}, out=tmp_path / "r")
    out = "".join(capsys.readouterr())
    assert "finetune: about" in out and "for 2 epoch(s)" in out
    timing = json.loads((tmp_path / "r" / "metrics.json").read_text())["timing"]
    assert timing["estimate_finetune_s"] > 0 and timing["stage_finetune_s"] > 0
    assert "estimate_head_s" not in timing  # the head stage runs on cached features


def test_budget_keeps_the_first_epoch_and_stops_the_rest(image_folder, tmp_path, capsys):
    tm = transferkit.fit(image_folder, backbone="tiny-cnn", strategy="finetune", epochs=5,
                         options={"head_epochs": 3}, budget="0.001s", patience=0,
                         out=tmp_path / "r")
    out = "".join(capsys.readouterr())
    assert "budget:" in out and "the best epoch so far is kept" in out
    assert _epochs(tmp_path / "r") == 1
    timing = tm.metrics["timing"]
    assert timing["budget_s"] == 0.001 and timing["budget_spent"] == 1.0
    assert len(tm.predict([str(p) for p in sorted(image_folder.rglob("*.png"))[:2]])) == 2


def test_budget_without_effect_when_it_is_large(image_folder, tmp_path):
    tm = transferkit.fit(image_folder, backbone="tiny-cnn", strategy="freeze", epochs=3,
                         patience=0, budget="1h", out=tmp_path / "r", quiet=True)
    assert _epochs(tmp_path / "r") == 3 and tm.metrics["timing"]["budget_spent"] == 0.0


def test_bad_budget_on_the_command_line(image_folder, tmp_path, capsys):
    assert main(["fit", str(image_folder), "--backbone", "tiny-cnn", "--budget", "soon",
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--budget 'soon'" in err[0]
    assert not (tmp_path / "r").exists()
