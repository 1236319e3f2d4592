"""Data-parallel fine-tuning: two processes (through Accelerate, gloo) against one, same run.

``finetune`` of ``efficientnet_lite0`` on hymenoptera (colour, 224 px; one head epoch on cached
features, then the whole network for ``--epochs`` epochs, batch 32, BatchNorm statistics
frozen), run by the command line exactly as a user runs it: ``transferkit fit ...`` and
``transferkit fit ... --processes 2``, alternated ``--rounds`` times so that both see the same
machine load.  One process uses torch's threads (2 on this machine); each of two processes
gets one thread (``OMP_NUM_THREADS=1``), so both use the two cores.  Times are the run's own
published figures (``metrics.json`` -> ``timing``: ``train_s`` is the time in training batches,
``total_s`` the whole fit) and the wall time of the command (process start-up included).

    python benchmarks/processes.py [--rounds 2] [--epochs 2] [--report-only] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

STEM = "processes"
ROOT = Path(__file__).resolve().parents[1]


def one_run(processes: int, epochs: int, out: Path, cache: Path) -> dict:
    data = common.SHARED / "hymenoptera"
    cmd = [sys.executable, "-m", "transferkit", "fit", str(data / "train"),
           "--test", str(data / "val"), "--strategy", "finetune", "-o", "head_epochs=1",
           "--epochs", str(epochs), "--batch-size", "32", "--seed", "0", "--skip-bad",
           "--cache-dir", str(cache), "--out", str(out), "--quiet"]
    if processes > 1:
        cmd += ["--processes", str(processes)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    m = json.loads((out / "metrics.json").read_text())
    return {"processes": processes, "wall_s": round(wall, 2),
            "total_s": m["timing"]["total_s"], "train_s": m["timing"]["train_s"],
            "val_acc": m["val"]["accuracy"], "test_acc": m["test"]["accuracy"],
            "test_loss": m["test"]["loss"], "best_epoch": m["best_epoch"]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2, help="whole-network epochs")
    ap.add_argument("--report-only", action="store_true", help="tables from stored runs only")
    ap.add_argument("--quick", action="store_true", help="one round, one epoch; results under "
                    "benchmarks/.cache/quick_results")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.epochs = 1, 1
        common.use_quick_results()
    store = common.RunStore(common.runs_path(STEM, args.quick))
    cache = common.CACHE / "features"
    plan = [(r, n, common.run_key({"round": r, "processes": n, "epochs": args.epochs}))
            for r in range(args.rounds) for n in (1, 2)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.report_only and any(key not in store for _, _, key in plan):
            one_run(1, 0, Path(tmp) / "warm", cache)  # fills the feature cache for both
        for r, n, key in plan:
            row = store.run(key, lambda: {"round": r, **one_run(n, args.epochs,
                                                                Path(tmp) / f"r{r}-p{n}", cache)},
                            label=f"round {r}, {n} process(es)", summary=str,
                            only_stored=args.report_only)
            if row is not None:
                rows.append(common.without_key(row))
    report(rows, args)


def report(rows, args) -> None:
    def med(n, k):
        return statistics.median(r[k] for r in rows if r["processes"] == n)

    md_rows = []
    for n in (1, 2):
        md_rows.append({
            "processes": n,
            "train s (median)": f"{med(n, 'train_s'):.1f}",
            "fit s (median)": f"{med(n, 'total_s'):.1f}",
            "wall s (median)": f"{med(n, 'wall_s'):.1f}",
            "speed-up of train s": f"{med(1, 'train_s') / med(n, 'train_s'):.2f}x",
            "test acc": " / ".join(f"{100 * r['test_acc']:.1f}" for r in rows
                                   if r["processes"] == n),
            "test loss": " / ".join(f"{r['test_loss']:.4f}" for r in rows
                                    if r["processes"] == n),
        })
    notes = f"""
`finetune` of efficientnet_lite0 on hymenoptera (train 244 images less the placeholder GIF,
carved validation 15 %, test = hymenoptera `val`, 153 images), one head epoch on cached
features then {args.epochs} whole-network epoch(s), batch 32 (two processes: 16 each, gradients
averaged), seed 0; {args.rounds} round(s), alternated. Accuracy per round is listed (the
figure is the same computation split two ways, not a new result: the losses differ a little
because the two processes see the live batches in another order and sum in another order).
Both sides use the two cores: one process through torch's two OpenMP threads, two processes
with one thread each. On this machine the two processes train faster: EfficientNet-Lite0's
depthwise convolutions on a batch of 32 keep two OpenMP threads poorly busy, while two
one-thread processes each run half the batch; the all-reduce of the 3.4 M gradients (gloo,
same machine) costs little beside a step of seconds. "fit s" and "wall s" include what is not
split (feature extraction of the head epoch, validation and test scoring in every process,
process start-up), so they gain less. On GPUs the same command uses NCCL.
"""
    write = common.write_table(STEM, rows, title="Fine-tuning in 2 processes against 1",
                               notes=notes, md_rows=md_rows)
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar(["1 process", "2 processes"], [med(1, "train_s"), med(2, "train_s")],
           color=["tab:blue", "tab:orange"])
    ax.set_ylabel("training time (s, median)")
    ax.set_title("finetune, efficientnet_lite0, hymenoptera")
    fig.tight_layout()
    common.save_figure(fig, STEM)
    print(write.read_text())


if __name__ == "__main__":
    main()
