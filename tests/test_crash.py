"""Crash consistency: a fit killed (``SIGKILL``, no chance to clean up) at any point, also
inside a checkpoint being written, resumes to the bundle of an uninterrupted run, bit for
bit, and no other run folder changes.

Every fit runs in a real process forked from one helper process that has imported
transferkit once (a fresh interpreter per fit would cost seconds of imports each).  In the
fork, every atomic write of :mod:`transferkit.io` (before it, once the temporary file is
complete but not yet renamed, after the rename), every removal of older checkpoint folders
and every training batch is an event, numbered in order; ``kill_at=N`` makes the process
``SIGKILL`` itself at event N.  One uninterrupted run lists the events; the kill points are
chosen from that list by what happens there, so they stay meaningful when the number of
writes changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import make_image_folder

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ["--backbone", "tiny-cnn", "--strategy", "finetune", "-o", "head_epochs=1",
            "--epochs", "2", "--batch-size", "4", "--workers", "0", "--seed", "5", "-q"]

HELPER = r'''
import json, os, signal, sys, threading, traceback

# what a fit imports on first use, imported once here (no computation: forking is safe)
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot, onnxruntime, PIL.Image, sklearn.linear_model, timm, torchvision
import transferkit.io as tio
from transferkit.cli import main
from transferkit.engine import checkpoint as ck, trainer as tr

state = {"n": 0, "kill_at": 0, "log": None}


def tick(kind, where=""):
    state["n"] += 1
    if state["log"] is not None:
        state["log"].write(f"{state['n']}\t{kind}\t{where}\n")
        state["log"].flush()
    if state["n"] == state["kill_at"]:
        os.kill(os.getpid(), signal.SIGKILL)


def hooks():
    atomic, remove, batch = tio._atomic, ck._remove_all_but, tr.Trainer._batch_loss

    def atomic_(path, write, durable=False):
        tick("before", path)

        def write_(tmp):
            write(tmp)
            tick("written", path)
        out = atomic(path, write_, durable)
        tick("after", path)
        return out

    def remove_(folder, keep):
        tick("cleanup", folder)
        return remove(folder, keep)

    def batch_(self, *a, **k):
        tick("batch")
        return batch(self, *a, **k)
    tio._atomic, ck._remove_all_but, tr.Trainer._batch_loss = atomic_, remove_, batch_


assert threading.active_count() == 1, threading.enumerate()
for line in sys.stdin:
    job = json.loads(line)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        fd = os.open(job["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        state["kill_at"] = job["kill_at"]
        state["log"] = open(job["events"], "w") if job.get("events") else None
        hooks()
        try:
            code = main(job["argv"])
        except BaseException:
            traceback.print_exc()
            code = 99
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"exit": os.waitstatus_to_exitcode(status)}), flush=True)
'''


class Forks:
    """The helper process: ``run(argv, kill_at)`` forks one fit and returns its exit code
    (``-9`` when it was killed) and what it printed."""

    def __init__(self, root: Path):
        self.root = root
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "HF_HUB_OFFLINE": "1", "TRANSFERKIT_CACHE_DIR": str(root / "cache"),
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        env.pop("WORLD_SIZE", None)
        self.proc = subprocess.Popen([sys.executable, "-c", HELPER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=root, env=env)
        self.jobs = 0

    def run(self, argv, kill_at: int = 0, events: Path | None = None) -> tuple[int, str]:
        self.jobs += 1
        output = self.root / f"output-{self.jobs}.txt"
        job = {"argv": [str(a) for a in argv], "kill_at": kill_at, "output": str(output),
               "events": str(events) if events else None}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        assert reply, "the helper process died"
        return json.loads(reply)["exit"], output.read_text()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def figures(run_dir: Path) -> dict:
    """What a run reports, without its clock: metrics and the history without seconds."""
    m = json.loads((run_dir / "metrics.json").read_text())
    keep = {k: m[k] for k in ("val", "test", "best_epoch", "best_stage")}
    rows = [r.split(",") for r in (run_dir / "history.csv").read_text().splitlines()]
    col = rows[0].index("seconds")
    keep["history"] = [r[:col] + r[col + 1:] for r in rows]
    return keep


def kill_points(events: list[tuple[int, str, str]]) -> dict[str, int]:
    """Named kill points: the numbers of the events where the kill lands in a chosen place."""
    def at(kind, name, nth=1, under=""):
        hits = [n for n, k, where in events
                if k == kind and Path(where).name == name and under in where]
        return hits[nth - 1] if nth > 0 else hits[nth]

    batches = [n for n, k, _ in events if k == "batch"]
    cleanups = [n for n, k, _ in events if k == "cleanup"]
    return {
        "before run_config.json": at("before", "run_config.json"),
        "first batch, no checkpoint yet": batches[0],
        "checkpoint 1: model written, nothing named": at("after", "model.safetensors", 1,
                                                         "checkpoint"),
        "checkpoint 2: best.safetensors half-way": at("written", "best.safetensors", 2),
        "checkpoint 2: before the optimizer": at("before", "optimizer.json", 2),
        "checkpoint 2: manifest written, not renamed": at("written", "state.json", 2),
        "checkpoint 2: manifest renamed, old folder kept": at("after", "state.json", 2),
        "a batch of the last epoch": batches[-1],
        "checkpoint 3: removing the old folder": cleanups[2],
        "bundle tensors half-way": at("written", "model.safetensors", -1, "bundle"),
        "before metrics.json": at("before", "metrics.json"),
        "after the last write": events[-1][0],
    }


@pytest.fixture(scope="module")
def forks(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    f = Forks(root)
    yield f
    f.close()


def test_a_killed_fit_resumes_to_the_same_bundle(forks):
    root = forks.root
    data = make_image_folder(root / "imgs", per_class=6)
    runs = root / "runs"
    fit = ["fit", data, *SETTINGS, "--out"]
    code, out = forks.run([*fit, runs / "reference"])  # also fills the feature cache
    assert code == 0, out
    code, out = forks.run([*fit, runs / "earlier"], events=root / "events.tsv")
    assert code == 0, out
    events = [(int(n), kind, where) for n, kind, where in
              (line.split("\t") for line in (root / "events.tsv").read_text().splitlines())]
    points = kill_points(events)
    assert len(set(points.values())) == len(points) >= 8, points
    untouched = {name: digest(runs / name) for name in ("reference", "earlier")}
    expected = figures(runs / "reference")
    tensors = load_file(str(runs / "reference" / "bundle" / "model.safetensors"))

    for i, (where, n) in enumerate(points.items()):
        run_dir = runs / f"killed-{i}"
        code, out = forks.run([*fit, run_dir], kill_at=n)
        assert code == -9, (where, out)
        assert not (run_dir / "metrics.json").exists() or where == "after the last write", where
        code, out = forks.run(["fit", "--resume", run_dir, "-q"])
        if where == "before run_config.json":  # nothing to resume: said so, the folder reusable
            assert code == 2 and out.startswith("error:") and "run_config.json" in out, out
            code, out = forks.run([*fit, run_dir])
        assert code == 0, (where, out)
        got = load_file(str(run_dir / "bundle" / "model.safetensors"))
        assert got.keys() == tensors.keys(), where
        for k in tensors:
            assert bool((got[k] == tensors[k]).all()), (where, k)
        assert figures(run_dir) == expected, where

    # a resume killed in turn resumes as well
    run_dir = runs / "killed-twice"
    assert forks.run([*fit, run_dir], kill_at=points["checkpoint 2: before the optimizer"])[0] == -9
    assert forks.run(["fit", "--resume", run_dir, "-q"], kill_at=6)[0] == -9
    code, out = forks.run(["fit", "--resume", run_dir, "-q"])
    assert code == 0, out
    got = load_file(str(run_dir / "bundle" / "model.safetensors"))
    assert all(bool((got[k] == tensors[k]).all()) for k in tensors)
    assert figures(run_dir) == expected

    for name, before in untouched.items():
        assert digest(runs / name) == before, name
