"""Early stopping by default: which patience, measured, and what the time estimate is worth.

Every case runs twice through the command line, as a user runs it: once with every epoch
(``--patience 0``, the baseline) and once with the default (no ``--patience``: 3 epochs of a
stage without validation improvement).  The full run's history is then replayed for patience
1, 2, 3, 5: which epoch each would have kept, its validation accuracy, and the share of the
epochs it would have run (the replay is exact: an epoch's batches, seeds and schedule do not
depend on the epochs after it, and each stage starts from the best weights so far).  Test
accuracy (data no choice ever saw) and wall time come from the two real runs.  The stage
time announced before each backbone-training stage is set beside the stage's actual time.

    python benchmarks/early_stopping.py [--report-only] [--quick]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

STEM = "early_stopping"
ROOT = Path(__file__).resolve().parents[1]
PATIENCES = (1, 2, 3, 5)
DATA = common.SHARED


def cases(quick: bool) -> list[dict]:
    hym, uci = DATA / "hymenoptera", DATA / "uci_sentiment"
    out = [
        {"name": f"hymenoptera freeze s{s}", "data": hym / "train", "test": hym / "val",
         "args": ["--strategy", "freeze", "--epochs", "30", "--seed", str(s), "--skip-bad"]}
        for s in (0, 1, 2)]
    out += [
        {"name": f"uci {d} minilm freeze", "data": uci / f"{f}_labelled.txt", "test": None,
         "args": ["--backbone", "minilm", "--strategy", "freeze", "--epochs", "30"]}
        for d, f in (("amazon", "amazon_cells"), ("yelp", "yelp"), ("imdb", "imdb"))]
    out += [
        {"name": "uci yelp minilm finetune", "data": uci / "yelp_labelled.txt", "test": None,
         "args": ["--backbone", "minilm", "--strategy", "finetune", "-o", "head_epochs=2",
                  "--epochs", "8"]},
        {"name": "hymenoptera finetune", "data": hym / "train", "test": hym / "val",
         "args": ["--strategy", "finetune", "-o", "head_epochs=2", "--epochs", "5",
                  "--skip-bad"]},
    ]
    return out[:2] if quick else out


def one_run(case: dict, patience: int | None, cache: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "transferkit", "fit", str(case["data"]), *case["args"],
               "--cache-dir", str(cache), "--out", str(out), "--quiet"]
        if case["test"] is not None:
            cmd += ["--test", str(case["test"])]
        if patience is not None:
            cmd += ["--patience", str(patience)]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
        m = json.loads((out / "metrics.json").read_text())
        with open(out / "history.csv") as f:
            history = [{k: v for k, v in r.items()} for r in csv.DictReader(f)]
    timing = m["timing"]
    estimates = {k[len("estimate_"):-2]: v for k, v in timing.items() if k.startswith("estimate_")}
    actual = {k[len("stage_"):-2]: v for k, v in timing.items() if k.startswith("stage_")}
    return {"case": case["name"], "patience": patience, "wall_s": round(wall, 1),
            "test_acc": m["test"]["accuracy"], "val_acc": m["val"]["accuracy"],
            "best_epoch": m["best_epoch"], "epochs_run": len(history),
            "history": [{"stage": r["stage"], "val_accuracy": float(r["val_accuracy"]),
                         "val_loss": float(r["val_loss"])} for r in history],
            "estimates": estimates, "stage_seconds": actual}


def replay(history: list[dict], patience: int) -> tuple[float, int]:
    """Validation accuracy of the epoch kept, and epochs run, had ``patience`` been set."""
    best, run, i = None, 0, 0
    while i < len(history):
        stage, bad = history[i]["stage"], 0
        while i < len(history) and history[i]["stage"] == stage:
            r = history[i]
            key = (r["val_accuracy"], -r["val_loss"])
            run += 1
            if best is None or key[0] > best[0] or (key[0] == best[0] and key[1] > best[1] + 1e-4):
                best, bad = key, 0
            else:
                bad += 1
            i += 1
            if bad >= patience:
                while i < len(history) and history[i]["stage"] == stage:
                    i += 1
    return best[0], run


def rows_for(full: dict, default: dict) -> dict:
    row = {"case": full["case"], "epochs (all)": full["epochs_run"],
           "val acc kept (all)": round(100 * full["val_acc"], 1)}
    for p in PATIENCES:
        acc, run = replay(full["history"], p)
        row[f"p={p}: val kept"] = round(100 * acc, 1)
        row[f"p={p}: epochs"] = f"{run}/{full['epochs_run']}"
    row["test acc all epochs"] = round(100 * full["test_acc"], 1)
    row["test acc default (p=3)"] = round(100 * default["test_acc"], 1)
    row["s all epochs"] = full["wall_s"]
    row["s default"] = default["wall_s"]
    return row


def estimate_rows(runs: list[dict]) -> list[dict]:
    out = []
    for r in runs:
        for stage, est in r["estimates"].items():
            actual = r["stage_seconds"].get(stage)
            if actual:
                out.append({"case": r["case"], "patience": r["patience"], "stage": stage,
                            "estimated s": est, "actual s": actual,
                            "estimate / actual": round(est / actual, 2)})
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--report-only", action="store_true", help="tables from stored runs only")
    ap.add_argument("--quick", action="store_true", help="two cases, results not committed")
    a = ap.parse_args(argv)
    if a.quick:
        common.use_quick_results()
    store = common.RunStore(common.runs_path(STEM, a.quick))
    cache = common.CACHE / "features"
    rows, runs = [], []
    for case in cases(a.quick):
        pair = []
        for patience in (0, None):
            key = common.run_key({"case": case["name"], "patience": patience, "v": 1})
            pair.append(store.run(key, lambda: one_run(case, patience, cache),
                                  label=f"{case['name']} patience={patience}",
                                  summary=lambda r: f"test {r['test_acc']:.3f} {r['wall_s']}s",
                                  only_stored=a.report_only))
        if None in pair:
            continue
        runs += pair
        rows.append(rows_for(*pair))
    write(rows, estimate_rows(runs))


def write(rows: list[dict], estimates: list[dict]) -> None:
    if not rows:
        print("no finished runs")
        return
    notes = (
        "Each case: one run with every epoch (`--patience 0`) and one with the default "
        "(no `--patience`, i.e. 3). `p=N: val kept` replays the full run's history with "
        "patience N: the validation accuracy of the epoch it would have kept, and the epochs "
        "it would have run (exact: later epochs never change earlier ones). Test accuracy is "
        "on data no choice saw: hymenoptera `val` (153 images; the selection split is 15 % of "
        "`train`), and the seeded test split fit carves from each UCI file. The machine was "
        "shared with other jobs (load 4-13 on 2 cores): times compare within a pair only.\n\n"
        "Stage estimates (printed before each stage that trains through the backbone, from "
        "one timed batch) against the stage's actual time:\n\n"
        + (common.md_table(estimates) if estimates else "(none)\n"))
    path = common.write_table(STEM, rows, title="Early stopping: patience measured", notes=notes)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
