"""Several tasks on one MiniLM: multi-task learning (SST-2 + SST-5, one domain) and parallel
training (UCI review sentiment + TREC question types, two domains), each against one
single-task model per task, same recipe and budget, in the same run.

For every pair and seed: each task's training sentences are a seeded sample of its training
file (``--train N`` per task), validation a seeded sample of its dev data, test its official
test file (SST-2 1,821, SST-5 2,210, TREC 500) or, for UCI (no official split), a seeded
stratified 15 % of the 3,000 sentences of the three domains.  Recipe for every model:
``finetune`` (``head_epochs`` 2, then 3 encoder epochs, batch 32, max length 64, early
stopping by validation); the joint model chooses its epoch on the average of the tasks'
validation accuracies, each single model on its own.  Test is never read for a choice.
Same epochs for every model: the joint one reads both tasks' sentences in each, so its
encoder takes twice the optimiser steps of a single-task model (part of what it gains).
One seed (the shared 2-core machine allowed no more): differences under about 2 points on
these test sets are within what a seed changes.

Prediction time: labelling ``--predict-n`` test sentences with both tasks, one joint model
(one encoder pass) against the two single-task models (two passes), in CPU seconds of one
thread, the two interleaved over 5 rounds (median), on models of the same architecture
(``predict_cpu``); the wall seconds of the accuracy runs' own models are in the CSV.

    python benchmarks/several_tasks.py [--seeds 0] [--train 1000] [--pairs multitask parallel]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import CACHE, SHARED, write_table  # noqa: E402

STEM = "several_tasks"
SC = SHARED / "sentence_classification"
UCI = SHARED / "uci_sentiment"
RECIPE = dict(backbone="minilm", strategy="finetune", options={"head_epochs": 2}, epochs=3,
              batch_size=32, max_length=64)
PAIRS = {"multitask": ("sst2", "sst5"), "parallel": ("sentiment", "question")}


def _uci() -> tuple[list[str], list[int]]:
    xs, ys = [], []
    for name in ("amazon_cells", "yelp", "imdb"):
        for line in (UCI / f"{name}_labelled.txt").read_text(errors="replace").splitlines():
            text, _, label = line.strip().rpartition("\t")
            if text and label in ("0", "1"):
                xs.append(text.strip())
                ys.append(int(label))
    return xs, ys


def _samples(xs, ys, names, source):
    from transferkit.data import Samples

    classes = [str(c) for c in names]
    return Samples("text", list(xs), [classes.index(str(y)) for y in ys], classes,
                   [f"{source}: {i}" for i in range(len(xs))], source)


def _pick(n, k, rng):
    import numpy as np

    return np.sort(rng.permutation(n)[:k])


def task_splits(task: str, n_train: int, seed: int) -> dict:
    """``{"train", "val", "test"}`` samples of one task (seeded)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if task in ("sst2", "sst5"):
        stem = "stsa.binary" if task == "sst2" else "stsa.fine"
        parts = {k: common.read_sentence_lines(SC / f"{stem}.{f}")
                 for k, f in (("train", "train"), ("val", "dev"), ("test", "test"))}
    elif task == "question":
        tx, ty = common.read_sentence_lines(SC / "TREC.train.all")
        val = _pick(len(tx), 500, rng)
        rest = np.setdiff1d(np.arange(len(tx)), val)
        parts = {"train": ([tx[i] for i in rest], [ty[i] for i in rest]),
                 "val": ([tx[i] for i in val], [ty[i] for i in val]),
                 "test": common.read_sentence_lines(SC / "TREC.test.all")}
    else:
        xs, ys = _uci()
        order = rng.permutation(len(xs))
        cut = [int(0.7 * len(xs)), int(0.85 * len(xs))]
        idx = {"train": order[:cut[0]], "val": order[cut[0]:cut[1]], "test": order[cut[1]:]}
        parts = {k: ([xs[i] for i in v], [ys[i] for i in v]) for k, v in idx.items()}
    names = sorted(set(parts["train"][1]))
    out = {}
    for k, (xs, ys) in parts.items():
        if k == "train" and len(xs) > n_train:
            keep = _pick(len(xs), n_train, rng)
            xs, ys = [xs[i] for i in keep], [ys[i] for i in keep]
        if k == "val" and len(xs) > 500:
            keep = _pick(len(xs), 500, rng)
            xs, ys = [xs[i] for i in keep], [ys[i] for i in keep]
        out[k] = _samples(xs, ys, names, f"{task}/{k}")
    return out


def _fit(tasks: dict, seed: int, out: Path):
    import transferkit

    t0 = time.perf_counter()
    if len(tasks) == 1:
        (name, splits), = tasks.items()
        tm = transferkit.fit(splits["train"], val=splits["val"], test=splits["test"],
                             seed=seed, quiet=True, out=out, **RECIPE)
        per = {name: {"val": tm.metrics["val"]["accuracy"], "test": tm.metrics["test"]["accuracy"]}}
    else:
        tm = transferkit.fit(tasks=tasks, seed=seed, quiet=True, out=out, **RECIPE)
        per = {t: {"val": m["val"]["accuracy"], "test": m["test"]["accuracy"]}
               for t, m in tm.metrics["tasks"].items()}
    return tm, per, time.perf_counter() - t0


def _predict_time(models: list, texts: list[str]) -> float:
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for tm in models:
            tm.predict(texts)
        best = min(best, time.perf_counter() - t0)
    return best


def predict_cpu(pair: str, n_predict: int, rounds: int, root: Path) -> dict:
    """CPU seconds (one thread, ``time.process_time``) to label ``n_predict`` test sentences
    with both tasks: the joint model against the two single-task models, interleaved over
    ``rounds``, median.  The models are ``freeze`` fits on 100 sentences per task (the cost
    of a prediction does not depend on the weights); the wall times of the accuracy runs,
    taken on the shared machine, are in the CSV."""
    import statistics

    import transferkit

    a, b = PAIRS[pair]
    data = {t: task_splits(t, 100, 0) for t in (a, b)}
    kw = dict(RECIPE, strategy="freeze", options={}, epochs=1, seed=0, quiet=True)
    singles = [transferkit.fit(data[t]["train"], val=data[t]["val"], out=root / f"cpu-{t}",
                               **kw) for t in (a, b)]
    joint = transferkit.fit(tasks={t: {"train": data[t]["train"], "val": data[t]["val"]}
                                   for t in (a, b)}, out=root / f"cpu-{pair}", **kw)
    texts = list(data[a]["test"].items[:n_predict])
    times: dict[str, list[float]] = {"joint": [], "single": []}
    for _ in range(rounds):
        for name, models in (("joint", [joint]), ("single", singles)):
            t0 = time.process_time()
            for tm in models:
                tm.predict(texts)
            times[name].append(time.process_time() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def run_pair(pair: str, seed: int, n_train: int, n_predict: int, root: Path) -> list[dict]:
    a, b = PAIRS[pair]
    data = {t: task_splits(t, n_train, seed) for t in (a, b)}
    rows, models = [], {}
    for label, tasks in ((f"{a} alone", {a: data[a]}), (f"{b} alone", {b: data[b]}),
                         (f"{a} + {b}", data)):
        common.log(f"{pair} seed {seed}: {label}")
        tm, per, secs = _fit(tasks, seed, root / f"{pair}-{seed}-{len(models)}")
        models[label] = tm
        for t, m in per.items():
            rows.append({"pair": pair, "seed": seed, "model": "joint" if len(tasks) > 1 else "single",
                         "task": t, "val_acc": round(m["val"], 4), "test_acc": round(m["test"], 4),
                         "fit_s": round(secs, 1), "n_train": len(data[t]["train"]),
                         "n_val": len(data[t]["val"]), "n_test": len(data[t]["test"])})
    texts = list(data[a]["test"].items[:n_predict])
    singles = _predict_time([models[f"{a} alone"], models[f"{b} alone"]], texts)
    joint = _predict_time([models[f"{a} + {b}"]], texts)
    for r in rows:
        r["predict_both_s"] = round(joint if r["model"] == "joint" else singles, 2)
    return rows


def summarise(rows: list[dict], cpu: dict[str, dict]) -> tuple[list[dict], str]:
    md, lines = [], []
    for pair in dict.fromkeys(r["pair"] for r in rows):
        for task in dict.fromkeys(r["task"] for r in rows if r["pair"] == pair):
            single = [r["test_acc"] for r in rows if (r["pair"], r["task"], r["model"]) == (pair, task, "single")]
            joint = [r["test_acc"] for r in rows if (r["pair"], r["task"], r["model"]) == (pair, task, "joint")]
            d = [j - s for j, s in zip(joint, single)]
            md.append({"pair": pair, "task": task, "seeds": len(single),
                       "single test %": common.fmt_pct(single), "joint test %": common.fmt_pct(joint),
                       "joint - single (points)": f"{100 * sum(d) / len(d):+.1f}"})
        pr = [r for r in rows if r["pair"] == pair]
        sp = [r["predict_both_s"] for r in pr if r["model"] == "single"]
        jp = [r["predict_both_s"] for r in pr if r["model"] == "joint"]
        c = cpu.get(pair)
        if c:
            lines.append(f"- {pair}: labelling the test sentences with both tasks took "
                         f"{c['joint']:.2f} CPU s with the joint model (one encoder pass) and "
                         f"{c['single']:.2f} CPU s with the two single-task models "
                         f"({c['single'] / max(c['joint'], 1e-9):.2f}x; median of interleaved "
                         f"rounds, one thread). Wall seconds in the accuracy runs, on the shared "
                         f"machine: {min(jp):.2f} against {min(sp):.2f}.")
    return md, "\n".join(lines)


def plot(rows: list[dict]) -> None:
    plt = common.pyplot()
    groups = list(dict.fromkeys((r["pair"], r["task"]) for r in rows))
    series = []
    for model in ("single", "joint"):
        vals = []
        for pair, task in groups:
            xs = [r["test_acc"] for r in rows if (r["pair"], r["task"], r["model"]) == (pair, task, model)]
            vals.append(common.mean_sd(xs))
        series.append({"label": model, "values": vals})
    fig, ax = plt.subplots(figsize=(7, 3.6))
    common.grouped_bars(ax, len(groups), series)
    ax.set_xticks(range(len(groups)), [f"{p}\n{t}" for p, t in groups])
    ax.set_ylabel("test accuracy (%)")
    ax.legend()
    fig.tight_layout()
    common.save_figure(fig, STEM)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--train", type=int, default=1000)
    ap.add_argument("--predict-n", type=int, default=500)
    ap.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    common.add_threads_arg(ap)
    a = ap.parse_args()
    common.set_threads(a.threads)
    store = common.RunStore(CACHE / f"{STEM}_runs.jsonl")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for pair in a.pairs:
            for seed in a.seeds:
                key = common.run_key({"pair": pair, "seed": seed, "train": a.train, **RECIPE})
                row = store.run(key, lambda: {"rows": run_pair(pair, seed, a.train, a.predict_n,
                                                               Path(tmp))},
                                label=f"{pair} seed {seed}", summary=None)
                rows += row["rows"]
    cpu = {}
    with tempfile.TemporaryDirectory() as tmp:
        for pair in a.pairs:
            key = common.run_key({"cpu": pair, "n": a.predict_n, "rounds": 5, **RECIPE})
            cpu[pair] = store.run(key, lambda: predict_cpu(pair, a.predict_n, 5, Path(tmp)),
                                  label=f"{pair}: prediction CPU time", summary=None)
    md, notes = summarise(rows, cpu)
    write_table(STEM, rows, md_rows=md, title="Several tasks on one MiniLM: multi-task and "
                "parallel training against one model per task", notes=__doc__.split("\n\n")[1]
                + "\n\n" + __doc__.split("\n\n")[2] + "\n\n" + notes)
    plot(rows)


if __name__ == "__main__":
    main()
