"""transferkit compare: the grid of strategies x backbones (x colour / grey) over seeds."""

from __future__ import annotations

import csv
import json

import pytest

from transferkit import api
from transferkit import compare as compare_mod
from transferkit.cli import main
from transferkit.errors import ConfigError

from conftest import interrupt_after

GRID = ["--strategies", "linear,freeze", "--backbones", "tiny-cnn", "--seeds", "2",
        "--epochs", "2"]


def test_grid_table_files_and_choice(image_folder, tmp_path, capsys):
    out = tmp_path / "grid"
    assert main(["compare", str(image_folder), *GRID, "--out", str(out), "-q"]) == 0
    record = json.loads((out / "compare.json").read_text())
    assert [r["cell"] for r in record["runs"]] == [
        "tiny-cnn-linear-colour", "tiny-cnn-linear-colour", "tiny-cnn-freeze-colour",
        "tiny-cnn-freeze-colour"]
    assert [r["seed"] for r in record["runs"]] == [0, 1, 0, 1]
    cells = {c["cell"]: c for c in record["cells"]}
    lin = [r for r in record["runs"] if r["strategy"] == "linear"]
    assert cells["tiny-cnn-linear-colour"]["val_mean"] == pytest.approx(
        sum(r["val_accuracy"] for r in lin) / 2)
    best = max(record["cells"], key=lambda c: c["val_mean"])
    assert [c["cell"] for c in record["cells"] if c["chosen"]] == [best["cell"]]
    for name in ("compare.csv", "compare.md", "compare.png", "report/index.html"):
        assert (out / name).is_file(), name
    with open(out / "compare.csv") as f:
        assert len(list(csv.DictReader(f))) == 2
    table = capsys.readouterr().out
    assert "tiny-cnn-freeze-colour" in table and "± " in table


def test_finished_runs_are_kept_and_an_interrupted_one_resumed(image_folder, tmp_path,
                                                                monkeypatch):
    out = tmp_path / "grid"
    args = ["compare", str(image_folder), "--strategies", "freeze", "--backbones", "tiny-cnn",
            "--seeds", "2", "--epochs", "3", "--out", str(out), "-q"]
    with monkeypatch.context() as m:
        interrupt_after(m, 4)  # seed 0 finishes (3 epochs), seed 1 stops after one
        assert main(args) == 130
    assert (out / "runs" / "tiny-cnn-freeze-colour-s0" / "metrics.json").is_file()
    assert not (out / "runs" / "tiny-cnn-freeze-colour-s1" / "metrics.json").exists()
    calls = []
    for name in ("fit", "resume"):
        real = getattr(api, name)
        monkeypatch.setattr(api, name, lambda *a, _n=name, _f=real, **k: (calls.append(_n),
                                                                            _f(*a, **k))[1])
    assert main(args) == 0
    assert calls == ["resume", "fit"]  # seed 0 kept; seed 1 resumed (resume goes through fit)
    assert json.loads((out / "compare.json").read_text())["cells"][0]["seeds"] == 2


@pytest.mark.parametrize("argv,message", [
    (["--strategies", "linear,nope"], "--strategies: unknown nope"),
    (["--strategies", "linear,linear"], "linear named twice"),
    (["--strategies", "linear", "--backbones", "minilm"], "minilm is a text backbone"),
    (["--strategies", "linear", "--seeds", "0"], "--seeds must be at least 1"),
])
def test_bad_grids_are_refused_before_any_run(image_folder, tmp_path, capsys, argv, message):
    out = tmp_path / "grid"
    assert main(["compare", str(image_folder), *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not out.exists()


def test_grey_needs_images(text_csv):
    with pytest.raises(ConfigError, match="images only"):
        compare_mod.plan("linear", "tiny-bert", "both", 1, "text")
