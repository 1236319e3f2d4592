"""Hymenoptera (ants vs bees): freeze vs fine-tune, in colour and in grey, EfficientNet-Lite0.

Grid: {linear, freeze, partial, finetune} x {colour, grey} x seeds.  For seed ``s``, ``fit``
carves 20 % of hymenoptera ``train`` (stratified, seed ``s``) as the selection split: the best
epoch and the logistic-regression C are chosen on it.  The figures are the accuracy on
hymenoptera ``val`` (153 images), passed to ``fit`` as its test data and never used for a
choice.  The one unreadable file of the public set (``train/ants/imageNotFound.gif``) is
skipped (``skip_bad=True``).

Each finished run is appended to ``benchmarks/.cache/hymenoptera_grid_runs.jsonl`` and skipped
when the script runs again, so an interrupted benchmark continues where it stopped.

    python benchmarks/hymenoptera_grid.py [--seeds 0 1 2] [--strategies ...] [--modes colour grey]
                                          [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import CACHE, SHARED, fmt_pct, mean_sd, write_table  # noqa: E402

STEM = "hymenoptera_grid"
BACKBONE = "efficientnet_lite0"
MODES = {"colour": False, "grey": True}

# the base grid
STRATEGIES: dict[str, dict] = {
    "linear": dict(strategy="linear"),
    "freeze": dict(strategy="freeze", head={"kind": "linear", "dropout": 0.2}, epochs=15, lr=1e-3),
    "partial": dict(strategy="partial", options={"layers": 2, "head_epochs": 5}, epochs=4),
    "finetune": dict(strategy="finetune", options={"head_epochs": 5}, epochs=4),
}

# Tried after the base grid, which missed both targets; labelled as such in the results.
# One change, fixed before looking at any figure of it: training-time augmentation (random
# resized crop 0.6-1, horizontal flip, rotation up to 15 degrees) for full fine-tuning, the
# strategy that trains the most parameters (3.4 M) on the fewest images (195).  Whether it
# replaces plain fine-tuning is decided on the selection split (mean accuracy over seeds).
EXTRA: dict[str, dict] = {
    "finetune+augment": dict(strategy="finetune", options={"head_epochs": 5}, epochs=4,
                             augment=True),
}

REFERENCE = {  # the seed notebook's ResNet-18 (accuracy on hymenoptera val)
    ("freeze", "colour"): 0.961, ("finetune", "colour"): 0.954,
    ("freeze", "grey"): 0.902, ("finetune", "grey"): 0.922,
}
TARGETS = {"colour": 0.965, "grey": 0.94}


# --------------------------------------------------------------------------- run store

def run_key(mode: str, seed: int, settings: dict) -> str:
    return common.run_key({"backbone": BACKBONE, "mode": mode, "seed": seed,
                           "settings": settings})


def run_store() -> common.RunStore:
    """This benchmark's finished runs (``peft_hymenoptera.py`` adds its runs to the same)."""
    return common.RunStore(common.runs_path(STEM))


# --------------------------------------------------------------------------- one run

def one_run(mode: str, seed: int, name: str, settings: dict) -> dict:
    import transferkit

    root = SHARED / "hymenoptera"
    with tempfile.TemporaryDirectory(prefix="tk-bench-") as tmp:
        t0 = time.perf_counter()
        model = transferkit.fit(str(root / "train"), test=str(root / "val"), val_fraction=0.2,
                                seed=seed, grayscale=MODES[mode], skip_bad=True,
                                backbone=BACKBONE, out=tmp, quiet=True, cache_dir=str(CACHE),
                                **settings)
        seconds = time.perf_counter() - t0
    m = model.metrics
    return {
        "mode": mode, "seed": seed, "config": name,
        "val_acc": m["val"]["accuracy"], "test_acc": m["test"]["accuracy"],
        "seconds": round(seconds, 1),
        "features_s": round(m["timing"].get("features_computed_s", 0.0), 1),
        "trainable_params": m["trainable_params"],
        "best_epoch": m["best_epoch"], "best_stage": m["best_stage"],
        "C": (m["closed_form"] or {}).get("C"),
        "n_val": m["val"]["n"], "n_test": m["test"]["n"],
    }


# --------------------------------------------------------------------------- main

def main(argv=None) -> None:
    configs = {**STRATEGIES, **EXTRA}
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--strategies", nargs="+", default=list(configs), choices=list(configs))
    common.add_threads_arg(ap)
    args = ap.parse_args(argv)

    common.set_threads(args.threads)
    store = run_store()
    t_all = time.perf_counter()
    rows: list[dict] = []
    # cheap configurations first: they fill the feature cache the staged ones reuse
    for name in args.strategies:
        for mode in args.modes:
            for seed in args.seeds:
                settings = configs[name]
                row = store.run(run_key(mode, seed, settings),
                                lambda: one_run(mode, seed, name, settings),
                                label=f"{name} {mode} seed {seed}")
                rows.append(common.without_key(row))
    print(f"all runs present ({time.perf_counter() - t_all:.0f}s this invocation)")
    report(rows, args, configs)


def report(rows: list[dict], args, configs: dict) -> None:
    csv_rows = [{"config": r["config"], "mode": r["mode"], "seed": r["seed"],
                 "added_after_grid": r["config"] in EXTRA,
                 "val_acc": round(r["val_acc"], 4), "test_acc": round(r["test_acc"], 4),
                 "seconds": r["seconds"], "features_s": r["features_s"],
                 "trainable_params": r["trainable_params"], "best_epoch": r["best_epoch"],
                 "best_stage": r["best_stage"], "C": r["C"], "n_val": r["n_val"],
                 "n_test": r["n_test"]} for r in rows]

    def sel(name, mode):
        return [r for r in rows if r["config"] == name and r["mode"] == mode]

    md_rows = []
    summary: dict[tuple, tuple] = {}
    for name in args.strategies:
        row = {"strategy": name + (" (added after the grid)" if name in EXTRA else "")}
        for mode in args.modes:
            rs = sel(name, mode)
            row[f"{mode} test"] = fmt_pct(r["test_acc"] for r in rs)
            row[f"{mode} sel. val"] = fmt_pct(r["val_acc"] for r in rs)
            ref = REFERENCE.get((name, mode))
            row[f"{mode} ResNet-18 ref."] = f"{100 * ref:.1f}" if ref else "-"
            summary[(name, mode)] = mean_sd(r["test_acc"] for r in rs)
        rs = [r for r in rows if r["config"] == name]
        params = sorted({r["trainable_params"] for r in rs})
        row["trainable params"] = "/".join(f"{p:,}" for p in params)
        for mode in args.modes:
            row[f"s / run ({mode})"] = f"{mean_sd(r['seconds'] for r in sel(name, mode))[0]:.0f}"
        md_rows.append(row)

    lines = []
    for mode in args.modes:
        target = TARGETS[mode]
        base = [n for n in args.strategies if n not in EXTRA]
        # the strategy with the best mean selection accuracy is "the" pick; the best test
        # figure is shown too, for reference only
        vals = {n: round(mean_sd(r["val_acc"] for r in sel(n, mode))[0], 6) for n in base}
        top = max(vals.values())
        by_val = [n for n in base if vals[n] == top]
        best_test = max(base, key=lambda n: summary[(n, mode)][0])
        m = summary[(best_test, mode)][0]
        lines.append(f"- {mode}: target >= {100 * target:.1f} % for the best strategy: best test "
                     f"mean {100 * m:.1f} % ({best_test}) -> {'met' if m >= target else 'missed'}; "
                     f"best mean selection accuracy ({100 * top:.1f} %"
                     f"{', tied' if len(by_val) > 1 else ''}): "
                     + ", ".join(f"{n} ({100 * summary[(n, mode)][0]:.1f} % test)" for n in by_val))
        for n in [n for n in args.strategies if n in EXTRA]:
            mm = summary[(n, mode)][0]
            base_n = n.split("+")[0]
            v_new = mean_sd(r["val_acc"] for r in sel(n, mode))[0]
            v_old = mean_sd(r["val_acc"] for r in sel(base_n, mode))[0]
            pick = n if v_new > v_old else base_n
            lines.append(f"  - added after the grid, {n}: {100 * mm:.1f} % test "
                         f"-> {'met' if mm >= target else 'missed'}; selection split "
                         f"{100 * v_new:.1f} % vs {100 * v_old:.1f} % for {base_n}, so the "
                         f"selection split keeps {pick} "
                         f"({100 * summary[(pick, mode)][0]:.1f} % test)")

    total_s = sum(r["seconds"] for r in rows)
    base_s = sum(r["seconds"] for r in rows if r["config"] not in EXTRA)
    extra_s = (f", {(total_s - base_s) / 60:.1f} min for the runs added after it"
               if total_s > base_s else "")
    extra_txt = ""
    if EXTRA:
        extra_txt = "\nAdded after the base grid (see the rows so marked): " + "; ".join(
            f"`{n}` = {json.dumps(s)}" for n, s in EXTRA.items()) + ".\n"
    notes = f"""
Accuracy (%, mean ± sd over seeds {', '.join(map(str, args.seeds))}) on hymenoptera `val`
(153 images), used as test data: never looked at for a choice. "sel. val" is the selection
split: 20 % of hymenoptera `train` (49 images, stratified, per seed), on which the best epoch
and the logistic-regression C were chosen. Backbone: {BACKBONE} (ImageNet-1k, 224 px, bicubic
resize + centre crop, mean = std = 0.5); grey = images converted to grey (3 equal channels)
for training and evaluation. torch threads: {args.threads}.

Budgets: linear = logistic regression on frozen features, C from {{0.001 ... 100}} on the
selection split; freeze = dropout 0.2 + linear head, 15 epochs, lr 1e-3; partial = 5 head
epochs, then the last 2 layer groups, 4 epochs; finetune = 5 head epochs, then all layers,
4 epochs (top backbone_lr 1e-4, lower groups geometrically down to 0.1x, head 10x, BatchNorm
statistics frozen), batch 32, AdamW, cosine schedule.
{extra_txt}
Targets:
{chr(10).join(lines)}

"s / run" is the wall time of one `fit` call (frozen features are cached per image in
`benchmarks/.cache`, so the first frozen run per mode pays the encoding). The machine was
shared with other jobs (load 2-8 on its 2 cores), so equal runs can differ up to about 1.5x
in time. Sum of run times:
{total_s / 60:.1f} min ({base_s / 60:.1f} min for the base grid{extra_s}). The ResNet-18 references are the seed notebook's single runs.
Per-run rows: `results/{STEM}.csv`.
"""
    path = write_table(STEM, csv_rows, title="Hymenoptera: freeze vs fine-tune, colour and grey "
                       f"({BACKBONE})", notes=notes, md_rows=md_rows)
    plot(summary, args)
    print(path.read_text())


def plot(summary: dict, args) -> None:
    import numpy as np

    plt = common.pyplot()
    names = list(args.strategies)
    x = np.arange(len(names))
    width = 0.8 / len(args.modes)
    fig, ax = plt.subplots(figsize=(max(8, 1.4 * len(names) + 3.5), 4.5))
    colours = {"colour": "tab:orange", "grey": "0.55"}
    common.grouped_bars(ax, len(names), [
        {"label": mode, "color": colours.get(mode),
         "values": [summary[(n, mode)] for n in names]} for mode in args.modes])
    for i, mode in enumerate(args.modes):
        off = (i - (len(args.modes) - 1) / 2) * width
        refs = [(j, REFERENCE.get((n, mode))) for j, n in enumerate(names)]
        refs = [(j, r) for j, r in refs if r]
        if refs:
            ax.scatter([j + off for j, _ in refs], [100 * r for _, r in refs], marker="_", s=400,
                       color="crimson", zorder=3,
                       label="ResNet-18 reference" if i == 0 else None)
    for mode in args.modes:
        ax.axhline(100 * TARGETS[mode], color=colours.get(mode), ls=":", lw=1)
    ax.set_xticks(x, [n.replace("+", "+\n") + ("\n(added)" if n in EXTRA else "")
                      for n in names], fontsize=8)
    ax.set_ylabel("accuracy on hymenoptera val (%)")
    lo = min(100 * v[0] for v in summary.values())
    ax.set_ylim(max(0, min(lo, 88) - 6), 100)
    ax.set_title(f"{BACKBONE}: mean ± sd over {len(args.seeds)} seeds (dotted: targets)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    common.save_figure(fig, STEM)


if __name__ == "__main__":
    main()
