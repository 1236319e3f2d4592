"""Data-parallel training through Accelerate: two processes (gloo on this CPU) against one.

With dropout off and BatchNorm statistics frozen (``finetune``'s default), a step of two
processes, each on half of a batch, with gradients averaged, is the step of one process on
the whole batch; what differs is the order of the live batches (the one-process loader draws
its own permutation) and floating-point summation, so the figures agree closely, not
bit for bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import transferkit
from transferkit.errors import ConfigError

from conftest import make_image_folder

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ["--backbone", "tiny-cnn", "--strategy", "finetune", "-o", "head_epochs=1",
            "--epochs", "2", "--batch-size", "8", "--dropout", "0", "--seed", "0", "--quiet"]
#: how far the figures of two processes may be from one process's (losses near log 2 here)
LOSS_TOLERANCE = 5e-3


def _cli(args, cwd, cache):
    env = {**os.environ, "TRANSFERKIT_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("WORLD_SIZE", None)
    return subprocess.run([sys.executable, "-m", "transferkit", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dp")
    data = make_image_folder(root / "img", per_class=16)
    one = _cli(["fit", str(data), *SETTINGS, "--out", str(root / "one")], root, root / "cache")
    two = _cli(["fit", str(data), *SETTINGS, "--out", str(root / "two"), "--processes", "2"],
               root, root / "cache")
    return root, one, two


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_two_processes_train_and_agree_with_one(runs):
    root, one, two = runs
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = _metrics(root / "one"), _metrics(root / "two")
    assert a["best_epoch"] == b["best_epoch"]
    for split in ("val", "test"):
        assert a[split]["accuracy"] == b[split]["accuracy"]
        assert a[split]["loss"] == pytest.approx(b[split]["loss"], abs=LOSS_TOLERANCE)
    hist = (root / "two" / "history.csv").read_text().splitlines()
    assert len(hist) == 1 + 3  # one head epoch, two fine-tuning epochs, written once
    rc = json.loads((root / "two" / "run_config.json").read_text())
    assert rc["train"]["processes"] == 2


def test_the_bundle_of_two_processes_loads_and_predicts(runs):
    root, _, two = runs
    assert two.returncode == 0, two.stderr[-2000:]
    tm = transferkit.load(root / "two" / "bundle")
    images = sorted(str(p) for p in (root / "img").glob("*/*.png"))[:4]
    assert len(tm.predict(images)) == 4


def test_resume_runs_the_recorded_processes(runs):
    root, _, two = runs
    assert two.returncode == 0, two.stderr[-2000:]
    before = _metrics(root / "two")
    (root / "two" / "metrics.json").unlink()
    again = _cli(["fit", "--resume", str(root / "two")], root, root / "cache")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "processes: 2" in again.stdout + again.stderr
    after = _metrics(root / "two")
    assert after["val"] == before["val"] and after["best_epoch"] == before["best_epoch"]


def test_processes_need_a_launcher_in_python(tmp_path):
    data = make_image_folder(tmp_path / "img", per_class=4)
    with pytest.raises(ConfigError, match="--processes 2"):
        transferkit.fit(data, backbone="tiny-cnn", processes=2, quiet=True, out=tmp_path / "r")
