"""Weight sharing: one model learnt from several input domains at once, with a part of its own
per domain (``--domain-specific norm|adapter``), against one model per domain and one model on
the pooled data, in the same run.

Domain sets:

* ``uci``: the three UCI sentiment domains (amazon, yelp, imdb; 1,000 sentences each) with
  frozen ``minilm`` and a linear head trained 30 epochs (lr 1e-3, ``freeze``);
* ``digits``: MNIST and USPS (a seeded 2,000 of each: MNIST from its 10,000 test images, USPS
  from its 7,291 training images) with ``digits-cnn`` trained from scratch (``finetune``,
  8 epochs, batch 64).

Configurations: one model per domain; one model on the pooled data (``fit A B``); the pooled
model with one feature normalisation for all domains (an ablation: ``shared + norm`` with every
sample marked as one domain); ``--domain-specific norm``; ``--domain-specific adapter``.

Every domain is split 70 / 15 / 15 by ``fit`` (stratified, seeded); the merged runs split each
domain the same way and join the splits, so every configuration sees the same training,
validation and test sentences / images.  Each run chooses its epoch on its own validation
split (the merged runs on the pooled validation of all domains); test is scored once.  The
figure is the average over the domains of the test accuracy on each domain.

    python benchmarks/weight_sharing.py [--sets uci digits] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import CACHE, SHARED, write_table  # noqa: E402

STEM = "weight_sharing"
CONFIGS = ("per-domain", "pooled", "pooled + one norm", "shared + norm", "shared + adapter")
SETS = {
    "uci": {"domains": ("amazon_cells", "yelp", "imdb"),
            "fit": dict(backbone="minilm", strategy="freeze", head="linear", epochs=30,
                        lr=1e-3)},
    "digits": {"domains": ("mnist", "usps"),
               "fit": dict(backbone="digits-cnn", strategy="finetune", epochs=8,
                           batch_size=64)},
}


def domain_files(name: str) -> list[Path]:
    """The domains of set ``name`` as files ``fit`` reads (written once under the cache)."""
    import numpy as np

    out = CACHE / "weight_sharing_data"
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for d in SETS[name]["domains"]:
        if name == "uci":
            path = common.uci_tsv(d, out / f"{d}.tsv")
        else:
            path = out / f"{d}.npz"
            if not path.exists():
                src = np.load(SHARED / "digits" / ("mnist_test.npz" if d == "mnist"
                                                   else "usps_train.npz"))
                keep = np.sort(np.random.default_rng(0).permutation(len(src["y"]))[:2000])
                np.savez(path, x=src["x"][keep], y=src["y"][keep])
        files.append(path)
    return files


def _run(settings: dict, data, seed: int, out: Path) -> dict:
    import transferkit

    t0 = time.perf_counter()
    tm = transferkit.fit(data if not isinstance(data, list) or len(data) > 1 else data[0],
                         seed=seed, quiet=True, out=out, overwrite=True, **settings)
    m = tm.metrics
    per = ({Path(k).stem: v["test"]["accuracy"] for k, v in m["sources"].items()}
           if "sources" in m else {Path(data[0]).stem: m["test"]["accuracy"]})
    val = m["val"]["accuracy"]
    return {"test": per, "val": val, "seconds": round(time.perf_counter() - t0, 1)}


def run_config(set_name: str, config: str, seed: int, tmp: Path) -> dict:
    files = [str(f) for f in domain_files(set_name)]
    fit = dict(SETS[set_name]["fit"])
    if config == "per-domain":
        per, secs = {}, 0.0
        for i, f in enumerate(files):
            r = _run(fit, [f], seed, tmp / f"{set_name}-{seed}-{i}")
            per.update(r["test"])
            secs += r["seconds"]
        return {"test": per, "seconds": secs}
    if config == "pooled + one norm":
        return _one_norm(fit, files, seed, tmp / f"{set_name}-{seed}-onenorm")
    if config != "pooled":
        fit["domain_specific"] = config.split(" + ")[1]
    r = _run(fit, files, seed, tmp / f"{set_name}-{seed}-{config.replace(' ', '')}")
    return {"test": r["test"], "seconds": r["seconds"]}


def _one_norm(fit: dict, files: list[str], seed: int, out: Path) -> dict:
    """The ablation of ``shared + norm``: the same model and feature normalisation, but
    every sample marked as domain 0, so one normalisation serves all domains (what the
    per-domain statistics add beyond normalising the features at all)."""
    from transferkit.data import several

    real = several._in_domain
    several._in_domain = lambda s, d: real(s, 0)
    try:
        r = _run({**fit, "domain_specific": "norm"}, files, seed, out)
    finally:
        several._in_domain = real
    return {"test": r["test"], "seconds": r["seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    common.add_threads_arg(ap)
    a = ap.parse_args()
    common.set_threads(a.threads)
    store = common.RunStore(CACHE / f"{STEM}_runs.jsonl")
    tmp = CACHE / "weight_sharing_runs"
    rows = []
    for set_name in a.sets:
        for seed in a.seeds:
            for config in CONFIGS:
                key = common.run_key({"set": set_name, "config": config, "seed": seed,
                                      **SETS[set_name]["fit"]})
                r = store.run(key, lambda: run_config(set_name, config, seed, tmp),
                              label=f"{set_name} seed {seed}: {config}", summary=None)
                avg = sum(r["test"].values()) / len(r["test"])
                rows.append({"set": set_name, "seed": seed, "config": config,
                             **{f"test_{d}": round(v, 4) for d, v in r["test"].items()},
                             "test_avg": round(avg, 4), "seconds": r["seconds"]})
    columns = list(dict.fromkeys(k for r in rows for k in r))  # the sets' domains differ
    rows = [{k: r.get(k, "") for k in columns} for r in rows]
    md, notes = summarise(rows)
    md_cols = list(dict.fromkeys(k for r in md for k in r))
    md = [{k: r.get(k, "") for k in md_cols} for r in md]
    write_table(STEM, rows, md_rows=md, title="Weight sharing: domain-specific parts under one "
                "model, against one model per domain and one pooled model",
                notes=__doc__.split("\n\n", 1)[1].rsplit("\n\n", 1)[0] + "\n\n" + notes)
    plot(rows)


def summarise(rows: list[dict]) -> tuple[list[dict], str]:
    md, lines = [], []
    for set_name in dict.fromkeys(r["set"] for r in rows):
        means = {}
        for config in CONFIGS:
            rs = [r for r in rows if (r["set"], r["config"]) == (set_name, config)]
            doms = [k for k in rs[0] if k.startswith("test_") and k != "test_avg" and rs[0][k] != ""]
            means[config] = common.mean_sd(r["test_avg"] for r in rs)[0]
            md.append({"set": set_name, "config": config, "seeds": len(rs),
                       **{k[5:] + " %": common.fmt_pct(r[k] for r in rs) for k in doms},
                       "average %": common.fmt_pct(r["test_avg"] for r in rs),
                       "s / run": round(sum(r["seconds"] for r in rs) / len(rs), 1)})
        base = max(means["per-domain"], means["pooled"])
        best = max(("shared + norm", "shared + adapter"), key=means.get)
        ablation = means.get("pooled + one norm")
        lines.append(f"- {set_name}: best of (one model per domain, pooled) {100 * base:.1f} %; "
                     f"{best} {100 * means[best]:.1f} % ({100 * (means[best] - base):+.1f} "
                     "points): target average >= the better baseline "
                     + ("met" if means[best] >= base else "missed") + "."
                     + (f" One normalisation for all domains (the ablation): "
                        f"{100 * ablation:.1f} %, so the domain-specific statistics add "
                        f"{100 * (means['shared + norm'] - ablation):+.1f} points beyond "
                        "normalising the features at all." if ablation is not None else ""))
    return md, "\n".join(lines)


def plot(rows: list[dict]) -> None:
    common.bars_by_group(rows, group="set", series="config", value="test_avg", names=CONFIGS,
                         ylabel="test accuracy, average of domains (%)", stem=STEM)


if __name__ == "__main__":
    main()
