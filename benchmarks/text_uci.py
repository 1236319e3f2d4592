"""UCI sentiment (amazon / yelp / imdb, 1000 sentences each): frozen vs fine-tuned MiniLM and
frozen word vectors + BiLSTM.

For every domain and seed ``s``: a stratified 80/20 train/test split (seed ``s``) of the
domain's 1000 sentences; ``fit`` carves 15 % of the training part for validation (seed ``s``).
Every choice (best epoch, the logistic-regression C, the freeze head kind) is made on that
validation split; the test figures come from the 20 % that no choice ever looked at.

Configurations:

* ``minilm+linear``    logistic regression on frozen MiniLM sentence embeddings (C on val);
* ``minilm+freeze``    a head trained on frozen embeddings, 30 epochs, lr 1e-3; the head kind
                       (dropout + linear, or a 256-unit MLP) is chosen per run on validation
                       accuracy (then validation loss); both candidates are in the CSV;
* ``minilm+finetune``  3 head epochs, then the whole encoder (discriminative learning rates,
                       top backbone_lr 5e-5), batch 32;
* ``wordllama+bilstm`` frozen WordLlama token vectors + a BiLSTM head (128 units per
                       direction), 15 epochs, lr 2e-3: the frozen-word-vectors recipe.

Each finished run is appended to ``benchmarks/.cache/text_uci_runs.jsonl`` and skipped when the
script runs again, so an interrupted benchmark continues where it stopped.

    python benchmarks/text_uci.py [--seeds 0 1 2] [--domains amazon_cells yelp imdb]
                                  [--configs ...] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import CACHE, SHARED, fmt_pct, mean_sd, write_table  # noqa: E402

STEM = "text_uci"
DOMAINS = ("amazon_cells", "yelp", "imdb")
FINETUNE_EPOCHS = 3

# name -> list of (candidate label, fit settings); several candidates = choose on validation
CONFIGS: dict[str, list[tuple[str, dict]]] = {
    "minilm+linear": [
        ("linear", dict(backbone="minilm", strategy="linear")),
    ],
    "minilm+freeze": [
        ("head linear", dict(backbone="minilm", strategy="freeze",
                             head={"kind": "linear", "dropout": 0.2}, epochs=30, lr=1e-3)),
        ("head mlp-256", dict(backbone="minilm", strategy="freeze",
                              head={"kind": "mlp", "hidden": 256, "dropout": 0.2},
                              epochs=30, lr=1e-3)),
    ],
    "minilm+finetune": [
        ("finetune", dict(backbone="minilm", strategy="finetune", options={"head_epochs": 3},
                          epochs=FINETUNE_EPOCHS, batch_size=32)),
    ],
    "wordllama+bilstm": [
        ("bilstm-128", dict(backbone="wordllama", strategy="freeze",
                            head={"kind": "bilstm", "hidden": 128, "dropout": 0.3},
                            epochs=15, lr=2e-3)),
    ],
}

# Added after the base runs, which missed the fine-tuning target: in 6 of the 9 base runs the
# best validation epoch was the last one, i.e. the encoder was still improving on the
# selection split when its 3 epochs ran out; so one more epoch (4, the top of the planned
# 3-4 range).  Chosen from validation curves only; reported next to the base row.
EXTRA = {"minilm+finetune-4ep"}
CONFIGS["minilm+finetune-4ep"] = [
    ("finetune 4 ep", dict(backbone="minilm", strategy="finetune", options={"head_epochs": 3},
                           epochs=4, batch_size=32)),
]
_ORDER = ["minilm+linear", "minilm+freeze", "minilm+finetune", "minilm+finetune-4ep",
          "wordllama+bilstm"]
CONFIGS = {k: CONFIGS[k] for k in _ORDER}

# average test accuracy over the three domains that each configuration should reach
TARGETS = {"minilm+freeze": 0.88, "minilm+finetune": 0.92, "minilm+finetune-4ep": 0.92,
           "wordllama+bilstm": 0.80}
REFERENCE = ("seed notebook: GloVe + BiLSTM (reference)", 0.774)


# --------------------------------------------------------------------------- run store

def run_key(domain: str, seed: int, settings: dict) -> str:
    return common.run_key({"domain": domain, "seed": seed, "settings": settings})


# --------------------------------------------------------------------------- one run

def one_run(domain: str, seed: int, config: str, candidate: str, settings: dict, parts) -> dict:
    import transferkit

    with tempfile.TemporaryDirectory(prefix="tk-bench-") as tmp:
        t0 = time.perf_counter()
        model = transferkit.fit(parts["train"], test=parts["test"], val_fraction=0.15, seed=seed,
                                out=tmp, quiet=True, cache_dir=str(CACHE), **settings)
        seconds = time.perf_counter() - t0
    m = model.metrics
    return {
        "domain": domain, "seed": seed, "config": config, "candidate": candidate,
        "val_acc": m["val"]["accuracy"], "test_acc": m["test"]["accuracy"],
        "seconds": round(seconds, 1),
        "features_s": round(m["timing"].get("features_computed_s", 0.0), 1),
        "trainable_params": m["trainable_params"],
        "best_epoch": m["best_epoch"], "best_stage": m["best_stage"],
        "C": (m["closed_form"] or {}).get("C"),
        "n_train": len(parts["train"]) - m["val"]["n"], "n_val": m["val"]["n"],
        "n_test": m["test"]["n"],
    }


def choose(cands: list[dict]) -> dict:
    """The candidate with the best validation accuracy (ties: the first listed)."""
    best = cands[0]
    for c in cands[1:]:
        if c["val_acc"] > best["val_acc"]:
            best = c
    return best


# --------------------------------------------------------------------------- main

def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--domains", nargs="+", default=list(DOMAINS), choices=DOMAINS)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    common.add_threads_arg(ap)
    args = ap.parse_args(argv)

    common.set_threads(args.threads)
    from transferkit.data import read_data, stratified_split

    store = common.RunStore(common.runs_path(STEM))
    t_all = time.perf_counter()
    rows: list[dict] = []
    for domain in args.domains:
        samples = read_data(str(SHARED / "uci_sentiment" / f"{domain}_labelled.txt"))["all"]
        for seed in args.seeds:
            parts = stratified_split(samples, {"train": 0.8, "test": 0.2}, seed=seed)
            for config in args.configs:
                for candidate, settings in CONFIGS[config]:
                    row = store.run(run_key(domain, seed, settings),
                                    lambda: one_run(domain, seed, config, candidate, settings,
                                                    parts),
                                    label=f"{domain} seed {seed} {config} ({candidate})")
                    rows.append(common.without_key(row))
    print(f"all runs present ({time.perf_counter() - t_all:.0f}s this invocation)")
    report(rows, args)


def report(rows: list[dict], args) -> None:
    # the run of each (domain, seed, config) that counts: its val-chosen candidate
    chosen: dict[tuple, dict] = {}
    for d in args.domains:
        for s in args.seeds:
            for c in args.configs:
                cands = [r for r in rows if (r["domain"], r["seed"], r["config"]) == (d, s, c)]
                pick = choose(cands)
                chosen[(d, s, c)] = pick
    csv_rows = []
    for r in rows:
        sel = chosen[(r["domain"], r["seed"], r["config"])] is r
        csv_rows.append({"domain": r["domain"], "seed": r["seed"], "config": r["config"],
                         "candidate": r["candidate"], "chosen_on_val": sel,
                         "val_acc": round(r["val_acc"], 4), "test_acc": round(r["test_acc"], 4),
                         "seconds": r["seconds"], "features_s": r["features_s"],
                         "trainable_params": r["trainable_params"], "best_epoch": r["best_epoch"],
                         "best_stage": r["best_stage"], "C": r["C"], "n_train": r["n_train"],
                         "n_val": r["n_val"], "n_test": r["n_test"]})

    md_rows = []
    summary = {}
    val_avg: dict[str, float] = {}
    for c in args.configs:
        runs = [chosen[(d, s, c)] for d in args.domains for s in args.seeds]
        row = {"config": c + (" (added, see notes)" if c in EXTRA else "")}
        for d in args.domains:
            row[f"{d} test"] = fmt_pct(chosen[(d, s, c)]["test_acc"] for s in args.seeds)
        # per seed: the average over domains; then mean ± sd over seeds
        avg_test = [sum(chosen[(d, s, c)]["test_acc"] for d in args.domains) / len(args.domains)
                    for s in args.seeds]
        avg_val = [sum(chosen[(d, s, c)]["val_acc"] for d in args.domains) / len(args.domains)
                   for s in args.seeds]
        val_avg[c] = mean_sd(avg_val)[0]
        row["avg test"] = fmt_pct(avg_test)
        row["avg val"] = fmt_pct(avg_val)
        heads = sorted({r["candidate"] for r in runs})
        if len(CONFIGS[c]) > 1:
            counts = {h: sum(r["candidate"] == h for r in runs) for h in heads}
            row["chosen on val"] = ", ".join(f"{h} x{n}" for h, n in counts.items())
        else:
            row["chosen on val"] = "-"
        params = sorted({r["trainable_params"] for r in runs})
        row["trainable params"] = "/".join(f"{p:,}" for p in params)
        row["s / run"] = f"{mean_sd(r['seconds'] for r in runs)[0]:.0f}"
        target = TARGETS.get(c)
        m = mean_sd(avg_test)[0]
        row["target (avg)"] = (f">= {100 * target:.0f}: {'met' if m >= target else 'missed'}"
                               if target else "-")
        md_rows.append(row)
        summary[c] = {"domains": {d: mean_sd(chosen[(d, s, c)]["test_acc"] for s in args.seeds)
                                  for d in args.domains},
                      "avg": mean_sd(avg_test)}
    ref = {"config": REFERENCE[0]}
    for d in args.domains:
        ref[f"{d} test"] = "-"
    ref.update({"avg test": f"{100 * REFERENCE[1]:.1f}", "avg val": "-", "chosen on val": "-",
                "trainable params": "-", "s / run": "-", "target (avg)": "-"})
    md_rows.append(ref)

    total_s = sum(r["seconds"] for r in rows)
    extra = ""
    if any(c in EXTRA for c in args.configs):
        extra = """
Added after the base runs (marked "added"): `minilm+finetune-4ep`, the same fine-tuning with
4 encoder epochs instead of 3. The base fine-tuning missed its target; in 6 of its 9 runs
the best validation epoch was the last one (the encoder was still improving on the selection
split), so one more epoch was the change tried. This was decided from validation curves only;
both rows are reported.
"""
        for c in [c for c in args.configs if c in EXTRA]:
            base_c = c.rsplit("-", 1)[0]
            if base_c not in args.configs:
                continue
            v_new, v_old = val_avg[c], val_avg[base_c]
            pick = c if v_new > v_old else base_c
            extra += (f"Mean validation accuracy {100 * v_new:.1f} % ({c}) vs {100 * v_old:.1f} % "
                      f"({base_c}): the selection split keeps {pick}, "
                      f"{100 * summary[pick]['avg'][0]:.1f} % test.\n")
    notes = f"""
Test accuracy (%, mean ± sd over seeds {', '.join(map(str, args.seeds))}) on a stratified 20 %
test split of each domain (200 sentences); "avg" averages the domains within a seed first.
Validation = 15 % of the remaining 80 % (120 sentences), carved by `fit` with the same seed;
the best epoch, logistic-regression C and the freeze head kind (dropout + linear vs. a
256-unit MLP, per run) were chosen on it. Test was never used for a choice.

Budgets: linear = scikit-learn logistic regression, C from {{0.001 ... 100}} on val;
freeze = 30 epochs, lr 1e-3, AdamW, cosine; finetune = 3 head epochs (lr 1e-3) + {FINETUNE_EPOCHS}
epochs of the whole encoder (top backbone_lr 5e-5, lower layers geometrically down to 0.1x,
head 10x), batch 32; wordllama+bilstm = 15 epochs, lr 2e-3, BiLSTM 128 units per direction,
dropout 0.3. MiniLM = sentence-transformers all-MiniLM-L6-v2 (mean pooling); WordLlama =
l2_supercat 256-d token vectors (frozen). torch threads: {args.threads}.
{extra}
"s / run" is the wall time of one `fit` call; MiniLM embeddings are cached per sentence
(`benchmarks/.cache`), so the first frozen run on a domain pays the encoding and later ones
read it back. The machine was shared with other jobs (load 2-8 on its 2 cores), so equal
runs can differ up to about 2x in time. Sum of run times: {total_s / 60:.1f} min. Per-run rows (both freeze head
candidates included): `results/{STEM}.csv`.
"""
    path = write_table(STEM, csv_rows, title="UCI sentiment: MiniLM (linear / freeze / "
                       "fine-tune) and word vectors + BiLSTM", notes=notes, md_rows=md_rows)
    plot(summary, args)
    print(path.read_text())


def plot(summary: dict, args) -> None:
    import numpy as np

    plt = common.pyplot()
    configs = list(summary)
    groups = list(args.domains) + ["average"]
    x = np.arange(len(configs))
    fig, ax = plt.subplots(figsize=(11, 4.5))
    common.grouped_bars(ax, len(configs), [
        {"label": g, "color": None if g != "average" else "0.3",
         "values": [summary[c]["avg"] if g == "average" else summary[c]["domains"][g]
                    for c in configs]} for g in groups])
    ax.axhline(100 * REFERENCE[1], color="crimson", ls="--", lw=1,
               label="GloVe + BiLSTM reference (77.4)")
    ax.set_xticks(x, configs)
    ax.set_ylabel("test accuracy (%)")
    lo = min(100 * summary[c]["avg"][0] for c in configs)
    ax.set_ylim(max(0, min(lo, 100 * REFERENCE[1]) - 10), 100)
    ax.set_title(f"UCI sentiment, test accuracy (mean ± sd over {len(args.seeds)} seeds)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    common.save_figure(fig, STEM)


if __name__ == "__main__":
    main()
