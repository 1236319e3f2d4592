"""Rank EfficientNet-Lite0/1/2 on hymenoptera with every transferability score, and put the
ranking beside the accuracy a linear probe actually reaches.

Scores (LogME, H-score, shrinkage H-score, NCE, LEEP, SFDA): ``transferkit.rank.rank`` on hymenoptera ``train`` (244 readable images; the one
placeholder GIF skipped), features through the feature cache in ``benchmarks/.cache``
(``features s`` is the cold pass when the cache was empty, else ``cached``), and the seconds
each score took.  Probe: ``transferkit.fit(..., strategy="linear")`` on the same ``train``
(20 % carved for choosing C, seed 0), accuracy on hymenoptera ``val`` (153 images, never used
for a choice), as in ``hymenoptera_grid.py``.  Three candidates make a ranking example, not a
Kendall-tau figure: ``rank_kendall.py`` gives that one.

    python benchmarks/rank_hymenoptera.py [--backbones efficientnet_lite0,...] [--threads 1]
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

STEM = "rank_hymenoptera"
BACKBONES = "efficientnet_lite0,efficientnet_lite1,efficientnet_lite2"


def probe(backbone: str) -> dict:
    import transferkit

    root = SHARED / "hymenoptera"
    with tempfile.TemporaryDirectory(prefix="tk-bench-") as tmp:
        t0 = time.perf_counter()
        model = transferkit.fit(str(root / "train"), test=str(root / "val"), val_fraction=0.2,
                                seed=0, skip_bad=True, backbone=backbone, strategy="linear",
                                out=tmp, quiet=True, cache_dir=str(CACHE))
        seconds = time.perf_counter() - t0
    return {"probe_test_acc": model.metrics["test"]["accuracy"], "probe_s": seconds}


def _pick(rows: list[dict], key: str) -> str:
    """The backbone a score picks, or ``tie`` when every backbone scores the same."""
    values = [r[key] for r in rows]
    if max(values) - min(values) <= 1e-9 * max(1.0, abs(max(values))):
        return "tie"
    return max(rows, key=lambda r: r[key])["backbone"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbones", default=BACKBONES)
    common.add_threads_arg(ap)
    args = ap.parse_args(argv)
    common.set_threads(args.threads)
    from transferkit.rank import rank

    record = rank(SHARED / "hymenoptera", args.backbones, skip_bad=True, cache_dir=str(CACHE),
                  log=common.log)
    rows = []
    for r in record["backbones"]:
        row = {"backbone": r["backbone"], "dim": r["feature_dim"],
               "features_s": "cached" if r["cached"] else round(r["features_s"], 2)}
        row.update({k: round(v, 4) for k, v in r["scores"].items()})
        row.update({f"{k}_s": round(v, 4) for k, v in r["seconds"].items()})
        common.log(f"probe: {r['backbone']} ...")
        p = probe(r["backbone"])
        row["probe_test_acc"] = round(100 * p["probe_test_acc"], 1)
        row["probe_s"] = round(p["probe_s"], 1)
        rows.append(row)
    score_names = list(record["backbones"][0]["scores"])
    best_probe = max(rows, key=lambda r: r["probe_test_acc"])["backbone"]
    picks = {k: _pick(rows, k) for k in score_names}
    score_s = sum(r[f"{k}_s"] for r in rows for k in score_names)
    notes = (f"hymenoptera `train` ({record['samples']} images, classes "
             f"{', '.join(record['classes'])}): every score on each backbone's pooled features "
             f"(higher is better); `*_s` = seconds per score. Linear probe: logistic regression, "
             f"C chosen on 20 % of `train` (seed 0), accuracy (%) on `val` (153 images).\n\n"
             f"Best by probe: {best_probe}. Each score's pick: "
             + ", ".join(f"{k} -> {v}" for k, v in picks.items())
             + f". All scores together took {score_s:.1f} s; the three probes "
             f"{sum(r['probe_s'] for r in rows):.1f} s (`train` features read back from the "
             "cache the ranking filled, `val` features computed). The machine is shared: "
             "the same score can take 10x longer on one backbone than on another.\n\n"
             "With 1280-d features and 244 images, H-score (shrinkage-free) is exactly "
             "classes - 1 = 1 for every backbone and SFDA's in-sample probability is 1.0: "
             "both saturate when the feature size exceeds the sample count, and rank nothing "
             "here. The shrinkage H-score (`hscore_reg`, Ledoit-Wolf covariance) does not "
             "saturate: " + ", ".join(f"{r['backbone']} {r['hscore_reg']:.4f}" for r in rows)
             + f" (its pick: {picks.get('hscore_reg')}). Three candidates are a worked "
             "example, not a Kendall-tau figure: see `rank_kendall.md` for that.")
    path = write_table(STEM, rows, title="Ranking EfficientNet-Lite0/1/2 on hymenoptera "
                       "without training", notes=notes)
    print(path.read_text())


if __name__ == "__main__":
    main()
