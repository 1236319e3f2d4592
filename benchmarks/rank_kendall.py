"""Do the transferability scores rank candidates the way a linear probe does?  Weighted Kendall
tau between each score and the test accuracy a linear probe reaches, over (backbone, layer)
candidates on seven sentence-classification sets, and the CPU time of the scores against the
CPU time of the probes.

Candidates (8 per set): ``minilm`` layers 1..6 (the mask-aware mean of each encoder layer's
token states, ``transferkit rank --layers 1,2,3,4,5,6``), ``glove`` and ``wordllama`` (their
pooled features: the mean of the word vectors).  Sets: SST-2, SST-5, MR, CR, SUBJ, MPQA, TREC
from ``../shared/data/sentence_classification``, each cut (seeded) to at most 2,000 training,
500 validation and 1,000 test sentences; SST's own dev / test files, TREC's test file, else a
seeded split of the ``.all`` file.

Scores: every score of ``transferkit.select`` that needs no source classifier (LogME, H-score,
shrinkage H-score, SFDA), on the training features only.  Ground truth: logistic regression on
the standardised training features, C from (0.01, 0.1, 1, 10) chosen on the validation split,
accuracy on the test split (never used for a choice).  Weighted tau as TLlib / SFDA compute it
(``scipy.stats.weightedtau(score, accuracy)``), per set, then averaged over the sets.
Features come through transferkit's feature cache (``benchmarks/.cache``); scores and probes are
kept in a run store, so an interrupted run continues.

    python benchmarks/rank_kendall.py [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

common.pin_blas_threads(1)

from common import CACHE, SHARED, RunStore, log, mean_sd, write_table  # noqa: E402

STEM = "rank_kendall"
SC = SHARED / "sentence_classification"
SETS = {
    "SST-2": {"train": "stsa.binary.train", "val": "stsa.binary.dev", "test": "stsa.binary.test"},
    "SST-5": {"train": "stsa.fine.train", "val": "stsa.fine.dev", "test": "stsa.fine.test"},
    "MR": {"all": "rt-polarity.all"},
    "CR": {"all": "custrev.all"},
    "SUBJ": {"all": "subj.all"},
    "MPQA": {"all": "mpqa.all"},
    "TREC": {"train": "TREC.train.all", "test": "TREC.test.all"},
}
#: backbone -> the ``--layers`` of it that are candidates
CANDIDATES = {"minilm": [1, 2, 3, 4, 5, 6], "glove": ["pooled"], "wordllama": ["pooled"]}
SIZES = {"train": 2000, "val": 500, "test": 1000}
QUICK_SIZES = {"train": 200, "val": 100, "test": 100}
C_GRID = (0.01, 0.1, 1.0, 10.0)
#: the image table: ImageNet CNNs' stages and pooled features on four small image sets
IMAGE_SETS = {
    "hymenoptera": {"folder": "hymenoptera"},
    "USPS": {"train": "usps_train", "test": "usps_test"},
    "MNIST": {"all": "mnist_test"},
    "MNIST-M": {"train": "mnist_m_train10k", "test": "mnist_m_test"},
}
IMAGE_CANDIDATES = {"efficientnet_lite0": ["pooled", 1, 2, 3, 4, 5],
                    "mobilenet_v2": ["pooled", 1, 2, 3, 4, 5]}
IMAGE_SIZES = {"train": 400, "val": 200, "test": 400}
QUICK_IMAGE_SIZES = {"train": 60, "val": 40, "test": 40}
#: hymenoptera: its 244 readable training images, 60 of them for validation, its val folder as test
SIZE_OVERRIDES = {"hymenoptera": {"train": 184, "val": 60, "test": 153}}
SEED = 0
MACHINE = "2-core AMD EPYC, no GPU, shared with other jobs"


# --------------------------------------------------------------------------- data

def _take(n_items: int, n: int, rng, exclude=()) -> list[int]:
    pool = [i for i in rng.permutation(n_items).tolist() if i not in set(exclude)]
    return sorted(pool[:n])


def _read_images(name: str) -> dict:
    """Raw parts of an image set: ``{"train" | "test" | "all": (items, labels)}``."""
    import numpy as np

    spec = IMAGE_SETS[name]
    if "folder" in spec:  # hymenoptera: train / val folders; the placeholder GIF left out
        def files(split):
            xs, ys = [], []
            for c in sorted(p.name for p in (SHARED / spec["folder"] / split).iterdir()):
                for f in sorted((SHARED / spec["folder"] / split / c).iterdir()):
                    if f.suffix.lower() in (".jpg", ".jpeg", ".png"):
                        xs.append(str(f))
                        ys.append(c)
            return xs, ys
        return {"train": files("train"), "test": files("val")}
    out = {}
    for part, stem in spec.items():
        d = np.load(SHARED / "digits" / f"{stem}.npz")
        out[part] = (list(d["x"]), [int(v) for v in d["y"]])
    return out


def _read(name: str) -> dict:
    """Raw parts of a set: ``{"all": (xs, ys)}`` or ``{"train", "test"[, "val"]: ...}``."""
    if name in IMAGE_SETS:
        return _read_images(name)
    return {part: common.read_sentence_lines(SC / f) for part, f in SETS[name].items()}


def load_set(name: str, sizes: dict) -> dict:
    """``{"train" | "val" | "test": (items, labels)}`` and ``"classes"``, cut with ``SEED``:
    a set without a validation file has it carved from its training part (or, with one file
    only, validation and test too)."""
    import numpy as np

    rng = np.random.default_rng(SEED)
    raw = _read(name)
    sizes = {**sizes, **SIZE_OVERRIDES.get(name, {})}
    if "all" in raw:  # one permutation: test first, then validation, then training
        xs, ys = raw["all"]
        order = rng.permutation(len(xs)).tolist()
        n_test, n_val = sizes["test"], sizes["val"]
        cut = {"test": order[:n_test], "val": order[n_test:n_test + n_val],
               "train": order[n_test + n_val:][:sizes["train"]]}
        parts = {k: ([xs[i] for i in sorted(v)], [ys[i] for i in sorted(v)])
                 for k, v in cut.items()}
    else:
        tx, ty = raw["train"]
        test = _take(len(raw["test"][0]), sizes["test"], rng)
        parts = {"test": ([raw["test"][0][i] for i in test], [raw["test"][1][i] for i in test])}
        if "val" in raw:
            val = _take(len(raw["val"][0]), sizes["val"], rng)
            parts["val"] = ([raw["val"][0][i] for i in val], [raw["val"][1][i] for i in val])
            train = _take(len(tx), sizes["train"], rng)
        else:  # validation carved from the training part
            val = _take(len(tx), sizes["val"], rng)
            train = _take(len(tx), sizes["train"], rng, exclude=val)
            parts["val"] = ([tx[i] for i in val], [ty[i] for i in val])
        parts["train"] = ([tx[i] for i in train], [ty[i] for i in train])
    classes = sorted({y for _, ys_ in parts.values() for y in ys_})
    return {k: (xs_, [classes.index(y) for y in ys_]) for k, (xs_, ys_) in parts.items()} | {
        "classes": [str(c) for c in classes], "modality": "image" if name in IMAGE_SETS else "text"}


def as_samples(items, labels, classes, source, modality="text"):
    from transferkit.api import samples_from_list

    s = samples_from_list(items, modality, classes, labels)
    s.source = source
    return s


# --------------------------------------------------------------------------- features

def features(name: str, data: dict, backbone: str, layers: list) -> tuple[dict, float]:
    """``{layer: {split: (N, D) float64}}`` through the feature cache, and the CPU seconds it
    took (0 when every sample came from the cache)."""
    from transferkit.backbones import build_backbone
    from transferkit.engine.cache import FeatureCache
    from transferkit.engine.inputs import InputPipeline

    cache = FeatureCache(CACHE / "features")
    bb = build_backbone(backbone)
    pipe = InputPipeline(bb)
    out: dict = {layer: {} for layer in layers}
    cpu0 = time.process_time()
    for split in ("train", "val", "test"):
        s = as_samples(*data[split], data["classes"], f"{name}:{split}", data["modality"])
        numbers = [x for x in layers if x != "pooled"]
        if numbers:
            for layer, f in cache.layer_features(bb, pipe, s, numbers).items():
                out[layer][split] = f.double().numpy()
        if "pooled" in layers:
            out["pooled"][split] = cache.features(bb, pipe, s).double().numpy()
    return out, (time.process_time() - cpu0 if cache.misses else 0.0)


# --------------------------------------------------------------------------- scores, probe

def score_and_probe(feats: dict, data: dict) -> dict:
    """Every source-free score on the training features (CPU seconds each), and the probe."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from transferkit.select import scores_for

    y = {k: np.asarray(data[k][1]) for k in ("train", "val", "test")}
    row: dict = {"dim": int(feats["train"].shape[1])}
    for score in scores_for(False):
        t0 = time.process_time()
        row[score.name] = float(score.fn(feats["train"], y["train"], None))
        row[f"{score.name}_cpu_s"] = time.process_time() - t0
    t0 = time.process_time()
    scaler = StandardScaler().fit(feats["train"])
    X = {k: scaler.transform(v) for k, v in feats.items()}
    best = None
    for C in C_GRID:
        clf = LogisticRegression(C=C, max_iter=2000).fit(X["train"], y["train"])
        val = float((clf.predict(X["val"]) == y["val"]).mean())
        if best is None or val > best[0]:
            best = (val, C, clf)
    row["probe_C"], row["probe_val_acc"] = best[1], best[0]
    row["probe_test_acc"] = float((best[2].predict(X["test"]) == y["test"]).mean())
    row["probe_cpu_s"] = time.process_time() - t0
    return row


def run_set(name: str, sizes: dict, store: RunStore) -> list[dict]:
    data = None
    rows = []
    for backbone, layers in (IMAGE_CANDIDATES if name in IMAGE_SETS else CANDIDATES).items():
        keys = {layer: common.run_key({"set": name, "backbone": backbone, "layer": layer,
                                       "sizes": sizes, "seed": SEED, "C": C_GRID, "v": 2})
                for layer in layers}
        if all(k in store for k in keys.values()):
            rows += [store[k] for k in keys.values()]
            continue
        data = data or load_set(name, sizes)
        log(f"{name}: {backbone} features ...")
        feats, feat_cpu = features(name, data, backbone, layers)
        for layer in layers:
            label = f"{backbone}" if layer == "pooled" else f"{backbone}:L{layer}"

            def one(layer=layer, label=label):
                row = {"set": name, "candidate": label, "backbone": backbone, "layer": layer,
                       "train": len(data["train"][0]), "classes": len(data["classes"])}
                row.update(score_and_probe(feats[layer], data))
                row["features_cpu_s"] = feat_cpu / len(layers)  # one pass, shared
                return row

            rows.append(store.run(keys[layer], one, label=f"{name} {label}",
                                  summary=lambda r: f"test {r['probe_test_acc']:.3f}  "
                                                    f"logme {r['logme']:.3f}"))
    return rows


# --------------------------------------------------------------------------- report

SCORE_NAMES = ["logme", "hscore", "hscore_reg", "sfda"]
RANDOM_DRAWS = 1000


def taus(rows: list[dict], sets: list[str], truth: str = "probe_test_acc",
         own_val: str = "probe_val_acc") -> dict[str, dict[str, float]]:
    """``{score: {set: weighted tau}}`` against the accuracy ``truth``, with two references:
    ``probe_val`` (``own_val``: the trained candidates' own validation accuracy, what training
    them all costs) and ``random`` (the mean over random scores: about 0)."""
    import numpy as np
    from scipy.stats import weightedtau

    out: dict[str, dict[str, float]] = {k: {} for k in SCORE_NAMES + ["probe_val", "random"]}
    rng = np.random.default_rng(SEED)
    for s in sets:
        rs = [r for r in rows if r["set"] == s]
        acc = np.array([r[truth] for r in rs])
        for k in SCORE_NAMES:
            out[k][s] = float(weightedtau([r[k] for r in rs], acc).statistic)
        out["probe_val"][s] = float(weightedtau([r[own_val] for r in rs], acc).statistic)
        out["random"][s] = float(np.mean([weightedtau(rng.random(len(rs)), acc).statistic
                                          for _ in range(RANDOM_DRAWS)]))
    return out


def top1_regret(rows: list[dict], sets: list[str], key: str,
                truth: str = "probe_test_acc") -> float:
    """Mean over sets of (best ``truth`` accuracy - that of the candidate ``key`` picks)."""
    import numpy as np

    gaps = []
    for s in sets:
        rs = [r for r in rows if r["set"] == s]
        pick = max(rs, key=lambda r: r[key])
        gaps.append(max(r[truth] for r in rs) - pick[truth])
    return float(np.mean(gaps))


def summary_rows(rows: list[dict], sets: list[str], tau: dict) -> list[dict]:
    probe_s = sum(r["probe_cpu_s"] for r in rows)
    out = []
    for k in SCORE_NAMES + ["probe_val", "random"]:
        m, sd = mean_sd(tau[k][s] for s in sets)
        cpu = probe_s if k == "probe_val" else (
            sum(r[f"{k}_cpu_s"] for r in rows) if k in SCORE_NAMES else 0.0)
        out.append({"score": k, "mean_weighted_tau": round(m, 3), "sd_over_sets": round(sd, 3),
                    **{s: round(tau[k][s], 3) for s in sets},
                    "top1_regret_pts": (round(100 * top1_regret(rows, sets, "probe_val_acc" if
                                                                k == "probe_val" else k), 2)
                                        if k != "random" else ""),
                    "cpu_s": round(cpu, 1),
                    "cpu_share_of_probes": f"{100 * cpu / probe_s:.2f} %" if probe_s else ""})
    return out


def plot(summary: list[dict], sets: list[str], image_summary: list[dict],
         image_sets: list[str]) -> Path:
    plt = common.pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.2))
    names = [r["score"] for r in summary]
    series = [{"label": f"text ({len(sets)} sets)", "values": [
        (r["mean_weighted_tau"], r["sd_over_sets"]) for r in summary]}]
    if image_summary:
        series.append({"label": f"images ({len(image_sets)} sets)", "values": [
            (r["mean_weighted_tau"], r["sd_over_sets"]) for r in image_summary]})
    common.grouped_bars(ax, len(names), series, scale=1.0)
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.axhline(0.6, color="k", ls="--", lw=1, label="target 0.6")
    ax.set_ylabel("weighted Kendall tau vs probe test acc.\n(mean ± sd over sets)")
    ax.legend(loc="lower right", fontsize=8)
    shown = [r for r in summary if r["score"] != "random"]
    bx.bar(range(len(shown)), [max(r["cpu_s"], 1e-2) for r in shown])
    bx.set_xticks(range(len(shown)), [r["score"] for r in shown], rotation=20)
    bx.set_yscale("log")
    bx.set_ylabel("CPU seconds, every text candidate and set\n(probe_val = every probe)")
    fig.tight_layout()
    return common.save_figure(fig, STEM)


def notes(rows: list[dict], sets: list[str], summary: list[dict], sizes: dict) -> str:
    best = max((r for r in summary if r["score"] in SCORE_NAMES),
               key=lambda r: r["mean_weighted_tau"])
    probe_s = sum(r["probe_cpu_s"] for r in rows)
    feat_s = sum(r["features_cpu_s"] for r in rows)
    best_s = sum(r[f"{best['score']}_cpu_s"] for r in rows)
    share = 100 * best_s / probe_s
    tau_ok, cpu_ok = best["mean_weighted_tau"] >= 0.6, share <= 5.0
    verdict = ("met" if tau_ok and cpu_ok else "missed: " + "; ".join(
        x for x in [None if tau_ok else f"tau {best['mean_weighted_tau']:.3f} is "
                    f"{0.6 - best['mean_weighted_tau']:.3f} short of 0.6",
                    None if cpu_ok else f"its CPU time is {share:.1f} % of the probes', "
                    f"{share - 5:.1f} points over 5 %"] if x))
    n_cand = len(rows) // len(sets)
    return f"""Machine as run: {MACHINE}; benchmark processes with one torch thread and one BLAS thread.

{n_cand} candidates on each of {len(sets)} sets ({', '.join(sets)}): {', '.join(
        f'`{b}` ' + ('pooled' if L == ['pooled'] else 'layers ' + ','.join(map(str, L)))
        for b, L in CANDIDATES.items())}. Each set cut (seed {SEED}) to at most {sizes['train']}
training, {sizes['val']} validation and {sizes['test']} test sentences. Scores on the training
features; ground truth: the test accuracy of a logistic-regression probe on standardised
features, C in {C_GRID} chosen on validation. `weighted tau` = `scipy.stats.weightedtau(score,
test accuracy)` per set (as TLlib / SFDA use it), then mean ± sd over the sets. `probe_val`: the
probes' own validation accuracy as the ranking (the plain baseline: it costs every probe);
`random`: the mean over {RANDOM_DRAWS} random scores. `top1_regret_pts`: test accuracy points lost,
averaged over sets, by taking the candidate the score ranks first. `cpu_s`: CPU seconds of that
score over every candidate and set (process time, features excluded); `cpu_share_of_probes`:
against the CPU seconds of fitting and choosing every probe ({probe_s:.1f} s). Extracting the
features (train, val and test, every candidate, cold cache) took {feat_s:.1f} CPU s, shared by both.

**Target** (best score's weighted tau >= 0.6 on average, at <= 5 % of the CPU time of training
every candidate): best score `{best['score']}`, mean weighted tau {best['mean_weighted_tau']:.3f}
± {best['sd_over_sets']:.3f}, CPU {best_s:.1f} s = {share:.1f} % of the probes': **{verdict}**.

The probes are the cheapest training there is (logistic regression on cached features,
{probe_s / len(rows):.2f} CPU s a candidate): against them no score reaches 5 %. Against fine-tuning,
which this run does not do, the ratio would be far smaller: `peft_text.py` measured a median
26 s of training per `minilm` fine-tuning run on 212 sentences (2 epochs, same machine);
scaled linearly to {sizes['train']} sentences that is about {26 * sizes['train'] / 212:.0f} s a candidate,
{26 * sizes['train'] / 212 * len(rows) / 3600:.1f} h for the {len(rows)} text candidates, of which
`{best['score']}`'s {best_s:.1f} s would be {100 * best_s / (26 * sizes['train'] / 212 * len(rows)):.3f} %:
an extrapolation from another benchmark, not a measurement.

**Missing**: the ground truth here is a linear probe on frozen features, not the accuracy
reached by fine-tuning each candidate (what LogME / SFDA evaluate against); fine-tuning 8
candidates on 7 sets is out of reach on this CPU. A probe-based ground truth favours scores that
are themselves linear models of the same features. One seed, one split per set: the sd is over
sets, not over seeds.
"""


def _rounded(rows: list[dict]) -> list[dict]:
    table = [{k: v for k, v in r.items() if k != "key"} for r in rows]
    for r in table:
        for k, v in r.items():
            if isinstance(v, float):
                r[k] = round(v, 4)
    return table


def image_section(rows: list[dict], sets: list[str], summary: list[dict]) -> str:
    if not sets:
        return ""
    n = {s: sum(r["set"] == s for r in rows) for s in sets}
    sizes = ", ".join(f"{s} {next(r['train'] for r in rows if r['set'] == s)}" for s in sets)
    return (f"\n## Images\n\n{min(n.values())} candidates on each of {len(sets)} image sets: "
            + ", ".join(f"`{b}` " + ",".join(map(str, L)) for b, L in IMAGE_CANDIDATES.items())
            + f" (layer k = the k-th stage timm's `feature_info` names, globally average-pooled). "
            f"Training images per set: {sizes}; validation {IMAGE_SIZES['val']} (hymenoptera 60, "
            f"from its `train`), test {IMAGE_SIZES['test']} (hymenoptera: its `val`, 153). Same "
            "scores, probe and tau as above; LEEP / NCE are left out (they apply to the pooled "
            "rows only). Four sets, not six: this table is beside the target, not part of it.\n\n"
            + common.md_table(summary))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes, results to benchmarks/.cache/quick_results")
    ap.add_argument("--sets", default=",".join(SETS), help="comma-separated text sets")
    ap.add_argument("--image-sets", default=",".join(IMAGE_SETS),
                    help="comma-separated image sets ('' for none)")
    common.add_threads_arg(ap)
    args = ap.parse_args(argv)
    common.set_threads(args.threads)
    if args.quick:
        common.use_quick_results()
    sizes = QUICK_SIZES if args.quick else SIZES
    image_sizes = QUICK_IMAGE_SIZES if args.quick else IMAGE_SIZES
    store = RunStore(common.runs_path(STEM, args.quick))
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    image_sets = [s.strip() for s in args.image_sets.split(",") if s.strip()]
    rows = [r for s in sets for r in run_set(s, sizes, store)]
    image_rows = [r for s in image_sets for r in run_set(s, image_sizes, store)]
    summary = summary_rows(rows, sets, taus(rows, sets))
    image_summary = summary_rows(image_rows, image_sets, taus(image_rows, image_sets)) \
        if image_sets else []
    table = _rounded(rows + image_rows)
    extra = (image_section(image_rows, image_sets, image_summary)
             + "\n## Every candidate\n\nPer set and candidate: each score, the probe's chosen "
             "C, its validation and test accuracy, CPU seconds (scores, probe, features).\n\n"
             + common.md_table(table))
    path = write_table(STEM, summary, title="Transferability scores against linear-probe "
                       "accuracy: weighted Kendall tau over (backbone, layer) candidates",
                       notes=notes(rows, sets, summary, sizes), extra=extra)
    import csv

    with open(path.with_name(f"{STEM}_candidates.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    plot(summary, sets, image_summary, image_sets)
    print(path.read_text())


if __name__ == "__main__":
    main()
