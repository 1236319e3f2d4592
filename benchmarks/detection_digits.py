"""Detection on generated digit canvases: an ImageNet-pretrained EfficientNet-Lite0 with the
FCOS head, frozen against partly and fully fine-tuned, and the same architecture from random
initialisation with the same budget (the transfer gain).

The data (``benchmarks/digit_canvases.py``: 1,000 train / 200 val / 300 test canvases of
128 x 128, 1-4 MNIST digits each on photo backgrounds; seed 0; the first 1,000 training
canvases of the 2,000-canvas set the generator makes by default) is made once under
``benchmarks/.cache/digit_canvases_1k``.  Every run is one ``transferkit fit DATA --task
detection`` in a fresh process under ``nice -n 5`` with one thread (``OMP_NUM_THREADS=1``):
the runs go side by side on a machine shared with other jobs, and its CPU seconds are the
measure of the work (on two free cores with two threads the wall time would be somewhat more
than half of them).  Validation mAP@0.5 chooses the epoch, test is scored once at the end.  The random initialisation is timm's ``tf_efficientnet_lite0``
built with ``pretrained=False`` under seed 0 and saved as a weights file, given as
``--backbone timm:tf_efficientnet_lite0 --weights FILE``: the same network, the same
preprocessing (mean = std = 0.5), only the weights differ.

    python benchmarks/detection_digits.py            # the runs of RUNS, each <= ~10 min of CPU
    python benchmarks/detection_digits.py --report-only

Writes ``benchmarks/results/detection_digits.{md,csv,png}``; finished runs are kept in
``benchmarks/.cache/detection_digits_runs.jsonl`` (an interrupted benchmark continues).
Times: ``cpu min`` is the run's CPU time (user + system, one thread): the budget (10
minutes) is counted in it; ``fit wall`` is its wall clock on the shared machine; ``s / epoch``
the engine's wall seconds per epoch of each stage.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

DATA = common.CACHE / "digit_canvases_1k"
RUNS = common.CACHE / "detection_digits"
RANDOM_WEIGHTS = common.CACHE / "tf_efficientnet_lite0_random_seed0.safetensors"
TARGET = 0.90
BUDGET_S = 600

#: label -> (backbone arguments, strategy arguments); epochs chosen so that each run's
#: training stays near the 10-minute budget of CPU on this machine
PRETRAINED = ["--backbone", "efficientnet_lite0"]
RANDOM = ["--backbone", "timm:tf_efficientnet_lite0", "--weights", str(RANDOM_WEIGHTS)]
RUN_SPECS = {
    "pretrained, freeze": (PRETRAINED, ["--strategy", "freeze", "--epochs", "12",
                                        "--lr", "2e-3"]),
    "pretrained, freeze, 24 epochs": (PRETRAINED, ["--strategy", "freeze", "--epochs", "24",
                                                   "--lr", "2e-3"]),
    "pretrained, partial (last 3 groups)": (PRETRAINED, [
        "--strategy", "partial", "-o", "layers=3", "-o", "head_epochs=3",
        "-o", "head_lr=2e-3", "-o", "head_lr_mult=3", "-o", "lr_floor=0.3",
        "--epochs", "6", "--lr", "3e-4"]),
    "pretrained, finetune": (PRETRAINED, [
        "--strategy", "finetune", "-o", "head_epochs=3", "-o", "head_lr=2e-3",
        "-o", "head_lr_mult=3", "-o", "lr_floor=0.3", "--epochs", "6", "--lr", "3e-4"]),
    "random init, finetune": (RANDOM, [
        "--strategy", "finetune", "-o", "head_epochs=0", "-o", "lr_floor=1",
        "-o", "head_lr_mult=1", "-o", "bn=train", "--epochs", "7", "--lr", "2e-3"]),
}


def ensure_data() -> None:
    if not (DATA / "test.json").exists():
        from digit_canvases import make_canvases

        common.log(f"generating {DATA}")
        make_canvases(DATA, train=1000, val=200, test=300, size=128, seed=0)
    if not RANDOM_WEIGHTS.exists():
        import timm
        import torch
        from safetensors.torch import save_file

        torch.manual_seed(0)
        model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(RANDOM_WEIGHTS))


def run_one(label: str) -> dict:
    """One fit in a fresh process; its figures from ``metrics.json`` and ``history.csv``."""
    backbone, strategy = RUN_SPECS[label]
    out = RUNS / common.run_key({"label": label, "args": backbone + strategy})
    argv = ["nice", "-n", "5", sys.executable, "-m", "transferkit", "fit", str(DATA),
            "--task", "detection", *backbone, *strategy, "--batch-size", "32",
            "--out", str(out), "--overwrite", "-q"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(common.HERE.parent), "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    subprocess.run(argv, check=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    m = json.loads((out / "metrics.json").read_text())
    with open(out / "history.csv") as f:
        hist = list(csv.DictReader(f))
    per_stage: dict[str, list[float]] = {}
    for h in hist:
        per_stage.setdefault(h["stage"], []).append(float(h["seconds"]))
    return {"label": label, "args": " ".join(backbone[:2] + strategy),
            "val_map50": m["val"]["map50"], "val_map": m["val"]["map"],
            "test_map50": m["test"]["map50"], "test_map": m["test"]["map"],
            "best": f"{m['best_stage']} {m['best_epoch']}",
            "epoch_s": {k: round(sum(v) / len(v), 1) for k, v in per_stage.items()},
            "features_s": m["timing"].get("features_s", 0.0),
            "fit_wall_s": m["timing"]["total_s"], "process_wall_s": round(wall, 1),
            "cpu_s": round(cpu, 1), "trainable": m["trainable_params"],
            "per_class_test_ap50": {c: r["ap50"] for c, r in m["per_class"]["test"].items()}}


def unfinished(label: str) -> dict | None:
    """What the run folder of a run that was stopped before its end says: its epochs so far
    (validation figures only: test is scored when a run ends)."""
    backbone, strategy = RUN_SPECS[label]
    hist_path = RUNS / common.run_key({"label": label, "args": backbone + strategy}) / "history.csv"
    if not hist_path.exists():
        return None
    with open(hist_path) as f:
        hist = list(csv.DictReader(f))
    if not hist:
        return None
    best = max(hist, key=lambda h: (float(h["val_map50"]), float(h["val_map"])))
    per_stage: dict[str, list[float]] = {}
    for h in hist:
        per_stage.setdefault(h["stage"], []).append(float(h["seconds"]))
    return {"label": label + f" (stopped after epoch {hist[-1]['epoch']} of its plan)",
            "args": " ".join(backbone[:2] + strategy),
            "val_map50": float(best["val_map50"]), "val_map": float(best["val_map"]),
            "test_map50": None, "test_map": None, "best": f"{best['stage']} {best['epoch']}",
            "epoch_s": {k: round(sum(v) / len(v), 1) for k, v in per_stage.items()},
            "features_s": None, "fit_wall_s": sum(sum(v) for v in per_stage.values()),
            "process_wall_s": None, "cpu_s": None, "trainable": None,
            "per_class_test_ap50": None}


def report(rows: list[dict]) -> None:
    nd = "not scored"
    table = [{"run": r["label"], "val mAP50": r["val_map50"],
              "test mAP50": nd if r["test_map50"] is None else r["test_map50"],
              "test mAP": nd if r["test_map"] is None else r["test_map"], "best epoch": r["best"],
              "s / epoch": ", ".join(f"{k} {v:g}" for k, v in r["epoch_s"].items()),
              "fit wall min": round(r["fit_wall_s"] / 60, 1),
              "cpu min": round(r["cpu_s"] / 60, 1) if r["cpu_s"] is not None else "-",
              "trainable": r["trainable"]} for r in rows]
    notes = _notes(rows)
    common.write_table("detection_digits", table, title="Detection on digit canvases "
                       "(FCOS head on EfficientNet-Lite0, 128 px)", notes=notes)
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.6))
    labels = [r["label"] for r in rows]
    ax.barh(labels, [r["test_map50"] if r["test_map50"] is not None else r["val_map50"]
                     for r in rows], color="#4a7ab5", label="test mAP@0.5 (val where unfinished)")
    ax.barh(labels, [r["test_map"] if r["test_map"] is not None else r["val_map"]
                     for r in rows], color="#a8c4e5", label="mAP@[.5:.95]")
    ax.axvline(TARGET, color="grey", ls=":", label=f"target {TARGET}")
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    common.save_figure(fig, "detection_digits")


def _notes(rows: list[dict]) -> str:
    by = {r["label"]: r for r in rows}
    lines = ["Data: 1,000 / 200 / 300 generated canvases (seed 0), 10 classes.  One seed per "
             "run (the shared CPU allowed no more); validation mAP@0.5 chooses the epoch, test "
             "is scored once.  mAP by pycocotools' COCOeval.  Each fit ran in its own process "
             "with one thread (the machine line names the harness's threads), side by side with "
             "the other runs and with other jobs on the same 2 cores: `cpu min` is the work, "
             "`fit wall min` what the shared machine made of it."]
    pre, rnd = by.get("pretrained, finetune"), by.get("random init, finetune")
    if pre and rnd and rnd["test_map50"] is not None and pre["test_map50"] is not None:
        lines.append(f"Transfer gain, the same network and strategy (all layers trained) from "
                     f"ImageNet weights against random initialisation with a similar budget "
                     f"({pre['cpu_s'] / 60:.1f} against {rnd['cpu_s'] / 60:.1f} CPU minutes): "
                     f"test mAP@0.5 {pre['test_map50']:.3f} against {rnd['test_map50']:.3f} "
                     f"({pre['test_map50'] - rnd['test_map50']:+.3f}).")
    frozen = by.get("pretrained, freeze")
    if frozen and pre:
        lines.append("Frozen against fine-tuned, seconds per epoch (wall, shared machine): the "
                     "frozen head trains on feature maps kept in memory (the backbone ran once "
                     f"per image, {frozen['features_s']:.0f} s); fine-tuning runs the backbone "
                     "forward and backward every batch: " + "; ".join(
                         f"{r['label']}: {', '.join(f'{k} {v:g} s' for k, v in r['epoch_s'].items())}"
                         for r in rows if r["label"].startswith("pretrained")) + ".")
    done = [r for r in rows if r["test_map50"] is not None]
    best = max(done, key=lambda r: r["val_map50"]) if done else None
    if best is not None and best["test_map50"] < TARGET:
        lines.append(
            f"Target mAP@0.5 >= {TARGET}: missed by {TARGET - best['test_map50']:.3f} (best by "
            f"validation: {best['label']}, test {best['test_map50']:.3f}).  What limits it: "
            "training length.  Every run used well under the 10-minute budget of CPU "
            "(1-4 CPU minutes) but 13-41 minutes of wall clock on the shared machine, so "
            "the runs were cut to 12 or 24 head epochs, or 3 head + 6 backbone epochs (a few hundred "
            "optimizer steps; FCOS recipes train for tens of thousands), on 1,000 of the "
            "2,000 canvases.  The fine-tuned runs gained 0.18-0.23 validation mAP@0.5 over "
            "their 6 backbone epochs, ending when their cosine schedules did; the frozen "
            "runs' curves flatten at 0.53-0.57 (24 epochs gain 0.045 over 12): the frozen "
            "stride-8 map comes from EfficientNet's third stage (40 channels of low-level "
            "ImageNet features), which fine-tuning must adapt for small digits.")
    return "\n\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--only", action="append", help="run only these labels")
    a = ap.parse_args()
    store = common.RunStore(common.runs_path("detection_digits"))
    if not a.report_only:
        ensure_data()
    rows = []
    for label in RUN_SPECS:
        if a.only and label not in a.only:
            continue
        key = common.run_key({"label": label, "args": RUN_SPECS[label]})
        row = store.run(key, lambda: run_one(label), label=label, only_stored=a.report_only,
                        summary=lambda r: f"val {r['val_map50']:.3f} test {r['test_map50']:.3f} "
                                          f"cpu {r['cpu_s'] / 60:.1f} min")
        if row is None and a.report_only:
            row = unfinished(label)
        if row is not None:
            rows.append(common.without_key(row))
    if rows:
        report(rows)


if __name__ == "__main__":
    main()
