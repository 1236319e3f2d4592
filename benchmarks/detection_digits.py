"""Detection on generated digit canvases: an ImageNet-pretrained backbone with the FCOS head
(frozen, at 128 and 256 px; EfficientNet-Lite0 and MobileNetV2), against the same architecture
from random initialisation with the same budget (the transfer gain).

The data (``benchmarks/digit_canvases.py``: 3,000 train / 300 val / 300 test canvases of
128 x 128, 1-4 MNIST digits each on photo backgrounds; seed 0) is made once under
``benchmarks/.cache/digit_canvases_3k``; ``--image-size 256`` feeds the canvases upscaled.
Every run is one ``transferkit fit DATA --task detection`` in a fresh process under ``nice -n
5`` with one thread (``OMP_NUM_THREADS=1``): the runs go side by side on a machine shared with
other jobs, and its CPU seconds are the measure of the work and of the 10-minute budget.
Validation mAP@0.5 chooses the epoch, test is scored once at the end.  The random
initialisation is timm's ``tf_efficientnet_lite0`` built with ``pretrained=False`` under seed
0 and saved as a weights file, given as ``--backbone timm:tf_efficientnet_lite0 --weights
FILE``: the same network, the same preprocessing (mean = std = 0.5), only the weights differ.

    python benchmarks/detection_digits.py            # the runs of RUN_SPECS, each <= 10 min of CPU
    python benchmarks/detection_digits.py --only LABEL   # one of them (several can go side by side)
    python benchmarks/detection_digits.py --report-only

Writes ``benchmarks/results/detection_digits.{md,csv,png}``; finished runs are kept in
``benchmarks/.cache/detection_digits_runs.jsonl`` (an interrupted benchmark continues).
Times: ``cpu min`` is the run's CPU time (user + system, one thread); ``fit wall`` its wall
clock on the shared machine; ``s / epoch`` the engine's wall seconds per epoch of each stage
(wall, so inflated by the machine's other jobs).  The cost table beside it measures CPU
seconds (``time.process_time``, one thread) per training image of each piece: the frozen
backbone's one pass, the backbone forward and backward a fine-tuned epoch pays for every
image, and the head's forward and backward.  ``val AP50, any class`` scores the
same validation boxes with every label made one class: what the boxes alone would score, so
the gap to ``val mAP50`` is what naming the digit costs.
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

DATA = common.CACHE / "digit_canvases_3k"
RUNS = common.CACHE / "detection_digits"
RANDOM_WEIGHTS = common.CACHE / "tf_efficientnet_lite0_random_seed0.safetensors"
TARGET = 0.90
BUDGET_S = 600

#: label -> (backbone arguments, strategy arguments); epochs chosen so that each run stays
#: within the 10-minute budget of CPU (one thread) on this machine
PRETRAINED = ["--backbone", "efficientnet_lite0"]
RANDOM = ["--backbone", "timm:tf_efficientnet_lite0", "--weights", str(RANDOM_WEIGHTS)]
AT_256 = ["--image-size", "256"]
RUN_SPECS = {
    "pretrained, freeze, 128 px": (PRETRAINED, [
        "--strategy", "freeze", "--epochs", "12", "--lr", "2e-3"]),
    "pretrained, freeze, 256 px": (PRETRAINED + AT_256, [
        "--strategy", "freeze", "--epochs", "9", "--lr", "2e-3"]),
    "pretrained, freeze, 256 px, 6 epochs": (PRETRAINED + AT_256, [
        "--strategy", "freeze", "--epochs", "6", "--lr", "2e-3"]),
    "pretrained, freeze, 256 px, 7 epochs": (PRETRAINED + AT_256, [
        "--strategy", "freeze", "--epochs", "7", "--lr", "2e-3"]),
    "pretrained, freeze, 256 px, 8 epochs": (PRETRAINED + AT_256, [
        "--strategy", "freeze", "--epochs", "8", "--lr", "2e-3"]),
    "pretrained mobilenet_v2, freeze, 256 px": (["--backbone", "mobilenet_v2"] + AT_256, [
        "--strategy", "freeze", "--epochs", "9", "--lr", "2e-3"]),
    "pretrained, finetune, 128 px": (PRETRAINED, [
        "--strategy", "finetune", "-o", "head_epochs=4", "--epochs", "2"]),
    "random init, finetune, 256 px": (RANDOM + AT_256, [
        "--strategy", "finetune", "-o", "head_epochs=0", "-o", "lr_floor=1",
        "-o", "head_lr_mult=1", "-o", "bn=train", "--epochs", "1", "--lr", "2e-3"]),
}


def ensure_data() -> None:
    if not (DATA / "test.json").exists():
        from digit_canvases import make_canvases

        common.log(f"generating {DATA}")
        make_canvases(DATA, train=3000, val=300, test=300, size=128, seed=0)
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


def costs(batch: int = 16, repeat: int = 3) -> list[dict]:
    """CPU seconds per image (one thread) of the backbone's forward (frozen: once per image),
    its forward + backward (fine-tuned: every image, every epoch) and the head's forward +
    backward, for the backbones and sizes of the runs."""
    import torch

    from transferkit.backbones import build_backbone
    from transferkit.detection.model import DetectionHeadConfig, build_detector

    torch.set_num_threads(1)
    torch.manual_seed(0)
    box = {"boxes": torch.tensor([[20.0, 20.0, 60.0, 70.0]]), "labels": torch.tensor([3])}
    rows = []
    for name, size in (("efficientnet_lite0", 128), ("efficientnet_lite0", 256),
                       ("mobilenet_v2", 256)):
        model = build_detector(build_backbone(name), DetectionHeadConfig(image_size=size),
                               [str(c) for c in range(10)])
        x = torch.randn(batch, 3, size, size)

        def clock(fn) -> float:
            fn()
            t0 = time.process_time()
            for _ in range(repeat):
                fn()
            return (time.process_time() - t0) / repeat / batch

        def frozen():
            with torch.no_grad():
                model.maps(x)

        def trained():
            sum(m.mean() for m in model.maps(x)).backward()

        with torch.no_grad():
            maps = model.maps(x)
        head = lambda: sum(model.head.loss(maps, [box] * batch).values()).backward()  # noqa: E731
        rows.append({"backbone": name, "px": size, "backbone fwd ms": 1000 * clock(frozen),
                     "backbone fwd+bwd ms": 1000 * clock(trained),
                     "head fwd+bwd ms": 1000 * clock(head)})
    return rows


def unassigned(size: int, stride: int = 8) -> tuple[float, float]:
    """Shares of the training boxes (all, and the digit 1's) that FCOS gives no positive
    location at input ``size``: no location of the stride-8 grid (torchvision's anchor
    centres, ``k * stride``) lies inside the box within 1.5 strides of its centre."""
    import numpy as np

    from transferkit.data.detection import read_detection

    train = next(iter(read_detection(DATA / "train").values()))
    grid = np.arange(0, size, stride, dtype=np.float64)
    missed = []
    for boxes, labels, (w, h) in zip(train.boxes, train.labels, train.sizes):
        b = np.asarray(boxes, np.float64).reshape(-1, 4) * [size / w, size / h, size / w, size / h]
        for (x0, y0, x1, y1), c in zip(b, labels):
            inside = [grid[(grid > lo) & (grid < hi) & (np.abs(grid - (lo + hi) / 2) < 1.5 * stride)]
                      for lo, hi in ((x0, x1), (y0, y1))]
            missed.append((int(c), len(inside[0]) * len(inside[1]) == 0))
    ones = [m for c, m in missed if train.classes[c] == "1"]
    return float(np.mean([m for _, m in missed])), float(np.mean(ones))


def any_class_ap50(out: Path) -> float:
    """Validation AP@0.5 of the run's bundle with every predicted and true label made one
    class (localisation alone)."""
    import numpy as np
    import torch

    from transferkit import api
    from transferkit.data.detection import read_detection
    from transferkit.detection.metrics import detection_metrics

    torch.set_num_threads(1)
    val = next(iter(read_detection(DATA / "val").values()))
    preds = api.load(out / "bundle").predict(val.items, val.origins)
    one = [{"boxes": p["boxes"], "scores": p["scores"], "labels": np.zeros(len(p["scores"]), int)}
           for p in preds]
    truth = [(b, np.zeros(len(lab), int)) for b, lab in zip(val.boxes, val.labels)]
    return detection_metrics(one, truth, val.sizes, ["digit"])["map50"]


def with_diagnosis(store, key: str, row: dict, label: str) -> dict:
    """``row`` with ``val_any_class_ap50`` (computed once from the run's bundle, stored)."""
    if "val_any_class_ap50" in row:
        return row
    backbone, strategy = RUN_SPECS[label]
    out = RUNS / common.run_key({"label": label, "args": backbone + strategy})
    if not (out / "bundle").is_dir():
        return row
    row = dict(row, val_any_class_ap50=any_class_ap50(out))
    return store.add(key, {k: v for k, v in row.items() if k != "key"})


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


def _run_dir(label: str) -> Path:
    backbone, strategy = RUN_SPECS[label]
    return RUNS / common.run_key({"label": label, "args": backbone + strategy})


def _curve(label: str) -> list[float]:
    """Validation mAP@0.5 per epoch, from the run folder's ``history.csv``."""
    path = _run_dir(label.split(" (stopped")[0]) / "history.csv"
    if not path.exists():
        return []
    with open(path) as f:
        return [float(h["val_map50"]) for h in csv.DictReader(f)]


def report(rows: list[dict], cost_rows: list[dict]) -> None:
    nd = "not scored"
    table = [{"run": r["label"], "val mAP50": r["val_map50"],
              "val AP50, any class": r.get("val_any_class_ap50", "-"),
              "test mAP50": nd if r["test_map50"] is None else r["test_map50"],
              "test mAP": nd if r["test_map"] is None else r["test_map"], "best epoch": r["best"],
              "s / epoch": ", ".join(f"{k} {v:g}" for k, v in r["epoch_s"].items()),
              "fit wall min": round(r["fit_wall_s"] / 60, 1),
              "cpu min": round(r["cpu_s"] / 60, 1) if r["cpu_s"] is not None else "-",
              "trainable": r["trainable"]} for r in rows]
    costs_md = ""
    if cost_rows:
        costs_md = ("\n\nCPU cost per training image (ms, one thread, batches of 16; "
                    "`costs()`):\n\n" + common.md_table(
                        [{k: round(v, 1) if isinstance(v, float) else v for k, v in c.items()}
                         for c in cost_rows]))
    common.write_table("detection_digits", table, title="Detection on digit canvases "
                       "(FCOS head on ImageNet backbones)", notes=_notes(rows, cost_rows),
                       extra=costs_md)
    _plot(rows)


def _plot(rows: list[dict]) -> None:
    plt = common.pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4), gridspec_kw={"width_ratios": [3, 2]})
    labels = [r["label"].split(" (stopped")[0] + (" (stopped)" if "(stopped" in r["label"] else "")
              for r in rows]
    ax.barh(labels, [r["test_map50"] if r["test_map50"] is not None else r["val_map50"]
                     for r in rows], color="#4a7ab5", label="test mAP@0.5 (val where unfinished)")
    ax.barh(labels, [r["test_map"] if r["test_map"] is not None else r["val_map"]
                     for r in rows], color="#a8c4e5", label="test mAP@[.5:.95]")
    ax.axvline(TARGET, color="grey", ls=":", label=f"target {TARGET}")
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=7)
    for label, r in zip(labels, rows):
        curve = _curve(r["label"])
        ax2.plot(range(1, len(curve) + 1), curve, "o-", ms=3, label=label)
    ax2.axhline(TARGET, color="grey", ls=":")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("val mAP@0.5")
    ax2.set_ylim(0, 1)
    ax2.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    common.save_figure(fig, "detection_digits")


def _notes(rows: list[dict], cost_rows: list[dict]) -> str:
    by = {r["label"]: r for r in rows}
    lines = ["Machine: 2-core AMD EPYC, no GPU, shared with other jobs (the machine line above "
             "names the harness's threads; every fit ran with one).  Data: 3,000 / 300 / 300 "
             "generated canvases of 128 px (seed 0), 10 classes, 7,445 / 753 / 777 boxes.  One "
             "seed per run (the shared CPU allowed no more); validation mAP@0.5 chooses the "
             "epoch, test is scored once.  mAP by pycocotools' COCOeval."]
    runs_256 = sorted((r for r in rows if r["label"].startswith("pretrained, freeze, 256 px")),
                      key=lambda r: -r["val_map50"])
    pre = next((r for r in runs_256 if _in_budget(r)),
               next((r for r in runs_256 if r and r["test_map50"] is not None), None))
    rnd = by.get("random init, finetune, 256 px")
    if pre and rnd and rnd["test_map50"] is not None and pre["test_map50"] is not None:
        lines.append(
            f"Transfer gain, the same network at 256 px with the same 10-minute CPU budget "
            f"({pre['cpu_s'] / 60:.1f} against {rnd['cpu_s'] / 60:.1f} CPU minutes): the "
            f"ImageNet weights frozen, the head trained for {len(_curve(pre['label']))} epochs, "
            f"test mAP@0.5 {pre['test_map50']:.3f}, against random initialisation with every "
            f"layer trained (the budget holds {len(_curve(rnd['label']))} epoch of it) "
            f"{rnd['test_map50']:.3f} ({pre['test_map50'] - rnd['test_map50']:+.3f}).")
    lines += _cost_notes(by, cost_rows)
    lines += _limit_notes(rows, by)
    over = [r for r in rows if r["cpu_s"] is not None and r["cpu_s"] > BUDGET_S]
    if over:
        lines.append("Over the 10-minute CPU budget: " + "; ".join(
            f"{r['label']} {r['cpu_s'] / 60:.1f} CPU minutes (test mAP@0.5 "
            f"{r['test_map50']:.3f})" for r in over) + ".  That is the whole process's CPU "
            "time (start-up, decoding, the test scoring and writing the bundle and report "
            "included); their epochs were planned from earlier runs' CPU seconds per epoch, "
            "which rose and fell with the other jobs on the machine (shared caches and cores).  "
            "They are not counted for the target; their validation curves are in the figure.")
    stopped = [r["label"] for r in rows if r["test_map50"] is None]
    if stopped:
        lines.append("Stopped runs (" + "; ".join(stopped) + "): stopped by hand when the "
                     "shared machine could not finish them in the time there was; their "
                     "figures are the validation scores of the epochs they finished, test "
                     "never scored.")
    return "\n\n".join(lines)


def _cost_notes(by: dict, cost_rows: list[dict]) -> list[str]:
    out = []
    for c in cost_rows:
        if c["backbone"] == "efficientnet_lite0" and c["px"] == 256:
            frozen = 3000 * c["head fwd+bwd ms"] / 1000
            tuned = 3000 * (c["backbone fwd+bwd ms"] + c["head fwd+bwd ms"]) / 1000
            out.append(
                f"Frozen against fine-tuned, CPU per epoch of 3,000 images at 256 px "
                f"(EfficientNet-Lite0, from the cost table): frozen, the head alone "
                f"{frozen:.0f} s (the backbone ran once per image beforehand, "
                f"{3600 * c['backbone fwd ms'] / 1000:.0f} s for the three splits); fine-tuned, "
                f"the backbone forward and backward as well, {tuned:.0f} s "
                f"({tuned / frozen:.1f} times as much), so the 10-minute budget, less the "
                f"backbone's pass, holds about {(600 - 3.6 * c['backbone fwd ms']) / frozen:.0f} "
                f"frozen epochs (less the validation scoring after each), or "
                f"{600 / tuned:.1f} fine-tuned ones.  The "
                "cost table was measured while other jobs used both cores (an earlier probe "
                "on a quieter machine gave about half these times; the ratios held).  Wall "
                "seconds per epoch on the shared machine are in the table (`s / epoch`).")
    return out


def _limit_notes(rows: list[dict], by: dict) -> list[str]:
    out = []
    lo, hi = by.get("pretrained, freeze, 128 px"), by.get("pretrained, freeze, 256 px")
    if lo and hi and lo["test_map50"] is not None and hi["test_map50"] is not None:
        out.append(f"Input size: the same frozen backbone and head at 256 px against 128 px "
                   f"({len(_curve(hi['label']))} and {len(_curve(lo['label']))} epochs, "
                   f"{hi['cpu_s'] / 60:.1f} and {lo['cpu_s'] / 60:.1f} CPU minutes), "
                   f"test mAP@0.5 {hi['test_map50']:.3f} against {lo['test_map50']:.3f}: FCOS "
                   "sends every digit (14-52 px at 128, 28-104 at 256) to the stride-8 level; at "
                   "256 px each digit covers four times the locations and the ImageNet features "
                   "see it at the scale they were trained on.")
        shares = {size: unassigned(size) for size in (128, 256)}
        out.append("Boxes FCOS cannot learn: the share of training boxes with no positive "
                   "location (no stride-8 grid point inside the box within 1.5 strides of its "
                   "centre), all digits / the digit 1: " + ", ".join(
                       f"{size} px {a:.1%} / {one:.1%}" for size, (a, one) in shares.items())
                   + ".  Test AP@0.5 of the 1 (its box is a few pixels wide, so a small "
                   "horizontal error costs most of its IoU) and of the weakest class: " + "; ".join(
                       f"{r['label']}: 1 {r['per_class_test_ap50']['1']:.3f}, weakest {c} "
                       f"{ap:.3f}" for r in (lo, hi) for c, ap in
                       [min(r["per_class_test_ap50"].items(), key=lambda kv: kv[1])]) + ".")
    done = [r for r in rows if _in_budget(r)]
    best = max(done, key=lambda r: r["val_map50"]) if done else None
    if best is None:
        return out
    gain = _last_gain(best)
    verdict = ("reached" if best["test_map50"] >= TARGET else
               f"missed by {TARGET - best['test_map50']:.3f}")
    any_class = best.get("val_any_class_ap50")
    out.append(
        f"Target mAP@0.5 >= {TARGET} within 10 CPU minutes: {verdict} (best by validation "
        f"among the runs within the budget: {best['label']}, test {best['test_map50']:.3f}, "
        f"{best['cpu_s'] / 60:.1f} CPU minutes).  "
        f"Its validation curve gained {gain:+.3f} over its last three epochs."
        + _any_class_note(best, any_class))
    series = sorted((r for r in rows if r["label"].startswith("pretrained, freeze, 256 px")
                     and r["test_map50"] is not None), key=lambda r: len(_curve(r["label"])))
    if len(series) > 1:
        out.append("Training length, the same frozen run at 256 px planned for more epochs "
                   "(cosine schedule): " + "; ".join(
                       f"{len(_curve(r['label']))} epochs, {r['cpu_s'] / 60:.1f} CPU minutes: "
                       f"val {r['val_map50']:.3f}, test {r['test_map50']:.3f}" for r in series)
                   + f".  What limits the figure within the budget is how many head epochs "
                   f"it holds at 256 px, then the frozen features themselves (the longest "
                   f"curve gains {_last_gain(series[-1]):+.3f} over its last three epochs, "
                   f"ending at {_curve(series[-1]['label'])[-1]:.3f}).")
    return out


def _last_gain(r: dict) -> float:
    curve = _curve(r["label"])
    return curve[-1] - curve[-4] if len(curve) >= 4 else float("nan")


def _in_budget(r: dict | None) -> bool:
    """A finished run (test scored) within the 10-minute CPU budget."""
    return bool(r) and r["test_map50"] is not None and r["cpu_s"] <= BUDGET_S


def _any_class_note(best: dict, any_class: float | None) -> str:
    if any_class is None:
        return ""
    said = (f"  With every label made one class its validation boxes score AP@0.5 "
            f"{any_class:.3f} against {best['val_map50']:.3f} with the digits named")
    if any_class - best["val_map50"] > 0.1:
        return said + (": the boxes are found; naming the digit from frozen ImageNet features "
                       "is what falls short.")
    return said + ": finding the boxes itself falls short, not only naming the digits."


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
        if row is not None:
            row = with_diagnosis(store, key, row, label)
        if row is None and a.report_only:
            row = unfinished(label)
        if row is not None:
            rows.append(common.without_key(row))
    cost_rows = []
    if not a.only:
        cost_rows = store.run("costs", lambda: {"label": "costs", "rows": costs()},
                              label="costs", summary=None)
        cost_rows = (cost_rows or {}).get("rows", [])
    if rows:
        report(rows, cost_rows)


if __name__ == "__main__":
    main()
