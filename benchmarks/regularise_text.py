"""Regularised fine-tuning of MiniLM on two sentence sets with few labels: plain ``finetune``
against ``finetune -o reg=l2sp|delta|bss`` and ``freeze``, paired over seeds.

LwF and Co-Tuning keep the outputs of the backbone's source classifier; a sentence encoder
has none, so ``fit`` refuses them on ``minilm`` (they run on the ImageNet backbones:
``benchmarks/regularise_hymenoptera.py``).

For seed ``s`` and each set: ``--train`` training sentences (default 300, stratified, seed
``s``) and 300 validation sentences (the best epoch and the regulariser are chosen on them)
are drawn from the set's training data; the test data is SST-2's official test file (1,821)
or, for CR (no official split), a seeded 1,000 sentences held out before anything else is
drawn.  Every configuration of a seed sees the same sentences (paired).  Recipe: 2 head
epochs (lr 1e-3) then 4 encoder epochs (top backbone lr 5e-5, discriminative), batch 32,
max length 64; the regularisers at their default weights; ``freeze``: a linear head, 30
epochs, lr 1e-3.

    python benchmarks/regularise_text.py [--sets SST-2 CR] [--seeds 0 1 2] [--train 300]
                                         [--report-only]
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

STEM = "regularise_text"
SC = SHARED / "sentence_classification"
REGS = ("l2sp", "delta", "bss")
BASE = dict(backbone="minilm", max_length=64, batch_size=32)
FT = {"head_epochs": 2}
CONFIGS: dict[str, dict] = {
    "freeze": dict(strategy="freeze", head="linear", epochs=30, lr=1e-3),
    "finetune": dict(strategy="finetune", options=dict(FT), epochs=4),
    **{f"finetune+{r}": dict(strategy="finetune", options={**FT, "reg": r}, epochs=4)
       for r in REGS},
}
SETS = {"SST-2": ("stsa.binary.train", "stsa.binary.test"), "CR": ("custrev.all", None)}


def splits(name: str, n_train: int, seed: int) -> dict:
    import numpy as np

    from transferkit.data import Samples, stratified_split

    train_file, test_file = SETS[name]
    xs, ys = common.read_sentence_lines(SC / train_file)
    pool = Samples("text", xs, ys, ["0", "1"], [f"{name}: {i}" for i in range(len(xs))], name)
    if test_file is None:  # hold out 1,000 for test, the same for every seed
        k = 1000 / len(pool)
        parts = stratified_split(pool, {"test": k, "pool": 1 - k}, 12345)
        test, pool = parts["test"], parts["pool"]
    else:
        tx, ty = common.read_sentence_lines(SC / test_file)
        test = Samples("text", tx, ty, ["0", "1"], [f"{name} test: {i}" for i in range(len(tx))],
                       name)
    share_t, share_v = n_train / len(pool), 300 / len(pool)
    parts = stratified_split(pool, {"train": share_t, "val": share_v,
                                    "rest": 1 - share_t - share_v}, seed)
    assert len(np.unique(parts["train"].labels)) == 2
    return {"train": parts["train"], "val": parts["val"], "test": test}


def one_run(name: str, seed: int, n_train: int, config: str) -> dict:
    import transferkit

    data = splits(name, n_train, seed)
    with tempfile.TemporaryDirectory(prefix="tk-bench-") as tmp:
        t0 = time.perf_counter()
        m = transferkit.fit(data, seed=seed, out=tmp, quiet=True, cache_dir=str(CACHE),
                            **BASE, **CONFIGS[config]).metrics
        seconds = time.perf_counter() - t0
    return {"set": name, "seed": seed, "config": config, "n_train": len(data["train"]),
            "val_acc": m["val"]["accuracy"], "val_loss": m["val"]["loss"],
            "test_acc": m["test"]["accuracy"], "seconds": round(seconds, 1),
            "train_s": round(m["timing"].get("train_s", 0.0), 1),
            "best_epoch": m["best_epoch"], "best_stage": m["best_stage"]}


def summarise(rows: list[dict]) -> tuple[list[dict], str]:
    md, lines = [], []
    for name in dict.fromkeys(r["set"] for r in rows):
        rs = [r for r in rows if r["set"] == name]
        seeds = sorted({r["seed"] for r in rs})
        by = {(r["config"], r["seed"]): r for r in rs}
        plain = {s: by[("finetune", s)]["test_acc"] for s in seeds if ("finetune", s) in by}
        for config in CONFIGS:
            got = [by[(config, s)] for s in seeds if (config, s) in by]
            if not got:
                continue
            paired = [r["test_acc"] - plain[r["seed"]] for r in got if r["seed"] in plain]
            md.append({"set": name, "config": config, "seeds": len(got),
                       "val %": common.fmt_pct(r["val_acc"] for r in got),
                       "test %": common.fmt_pct(r["test_acc"] for r in got),
                       "vs finetune (points, paired)": (f"{100 * sum(paired) / len(paired):+.1f}"
                                                        if config != "finetune" else ""),
                       "train s / run": round(sum(r["train_s"] for r in got) / len(got), 1)})
        regs = [c for c in CONFIGS if c.startswith("finetune+")]
        val = {c: common.mean_sd(by[(c, s)]["val_acc"] for s in seeds if (c, s) in by)[0]
               for c in regs if any((c, s) in by for s in seeds)}
        if val and plain:
            pick = max(val, key=val.get)
            gain = [by[(pick, s)]["test_acc"] - plain[s] for s in seeds if (pick, s) in by]
            best = max(val, key=lambda c: sum(by[(c, s)]["test_acc"] - plain[s]
                                               for s in seeds if (c, s) in by))
            lines.append(f"- {name}: the regulariser validation picks, {pick}, gives "
                         f"{100 * sum(gain) / len(gain):+.1f} points over plain fine-tuning "
                         f"(paired, test); the best on test would be {best}. Target +2: "
                         + ("met." if sum(gain) / len(gain) >= 0.02 else "missed."))
    return md, "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--train", type=int, default=300)
    ap.add_argument("--report-only", action="store_true",
                    help="write the table from the stored runs; run nothing")
    common.add_threads_arg(ap)
    a = ap.parse_args()
    common.set_threads(a.threads)
    store = common.RunStore(CACHE / f"{STEM}_runs.jsonl")
    rows = []
    for seed in a.seeds:  # seed-major: a partial run still pairs every configuration
        for name in a.sets:
            for config in CONFIGS:
                key = common.run_key({"set": name, "seed": seed, "train": a.train,
                                      "config": CONFIGS[config], **BASE})
                row = store.run(key, lambda: one_run(name, seed, a.train, config),
                                label=f"{name} seed {seed}: {config}",
                                only_stored=a.report_only)
                if row:
                    rows.append(common.without_key(row))
    md, notes = summarise(rows)
    write_table(STEM, rows, md_rows=md, title="Regularised fine-tuning of MiniLM with few "
                "labels (SST-2, CR)", notes=__doc__.split("\n\n", 1)[1].rsplit("\n\n", 1)[0]
                + "\n\n" + notes)
    common.bars_by_group(rows, group="set", series="config", value="test_acc", names=CONFIGS,
                         ylabel="test accuracy (%)", stem=STEM)


if __name__ == "__main__":
    main()
