"""ONNX export: how long it takes, and the exported graph in ONNX Runtime against the bundle's
model in transferkit (eager PyTorch, the forward pass ``predict`` runs) on the same inputs.

For each backbone (EfficientNet-Lite0 on hymenoptera photos, MiniLM on UCI sentiment
sentences) and strategy (``freeze``; ``lora``, whose adapters are merged for export), a short
fit on a small slice makes a bundle; then

* export time: ``transferkit.export.export_onnx`` (load the bundle, trace, check), median of
  ``--repeats``;
* agreement: the largest difference between ONNX Runtime's and the bundle's probabilities on
  the held-out slice (``TrainedModel.predict_proba``, the whole transferkit path);
* speed: samples/s of the bundle's model (eager, ``torch.inference_mode``) and of the ONNX
  Runtime session on the same preprocessed tensors, at batch 1 and 32, interleaved and
  repeated (median), the same thread count for both.

    .venv/bin/python benchmarks/export_onnx.py            # a few minutes on 2 cores
    .venv/bin/python benchmarks/export_onnx.py --quick    # smoke run

Writes ``benchmarks/results/export_onnx.{md,csv,png}`` (``--quick``: under
``benchmarks/.cache/quick_results``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common  # noqa: E402

common.pin_blas_threads()

import numpy as np  # noqa: E402
import torch  # noqa: E402

import transferkit  # noqa: E402
from transferkit.data import read_data, stratified_split  # noqa: E402
from transferkit.engine.inputs import InputPipeline  # noqa: E402
from transferkit.export import export_onnx, run_session, session  # noqa: E402

CASES = [("efficientnet_lite0", "freeze"), ("efficientnet_lite0", "lora"),
         ("minilm", "freeze"), ("minilm", "lora")]
BATCHES = (1, 32)


def slices(backbone: str, quick: bool):
    """``(train, test)`` small real slices for ``backbone``'s modality."""
    if backbone == "minilm":
        s = read_data(common.SHARED / "uci_sentiment" / "amazon_cells_labelled.txt")["all"]
    else:
        s = read_data(common.SHARED / "hymenoptera")["val"]
    n = 48 if quick else 96
    rng = np.random.default_rng(0)
    s = s.subset(sorted(rng.choice(len(s), size=min(n, len(s)), replace=False).tolist()))
    parts = stratified_split(s, {"train": 0.5, "test": 0.5}, seed=0)
    return parts["train"], parts["test"]


def tensors(tm, samples, batch: int):
    """The preprocessed inputs of ``samples``, in batches of ``batch`` (as ``predict`` makes
    them): a list of (torch input, [numpy-ready tensors in graph-input order])."""
    pipe = InputPipeline(tm.model.backbone)
    return [b.inputs for b in pipe.batches(samples, batch_size=batch, keep_order=True)]


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def speed(tm, sess, names, samples, batch: int, repeats: int) -> tuple[float, float]:
    """Samples/s of the bundle's model and of the ONNX Runtime session on the same batches,
    measured alternately ``repeats`` times each (median)."""
    batches = tensors(tm, samples, batch)
    feeds = [[b] if names == ["pixels"] else [b[n] for n in names] for b in batches]
    model = tm.model.eval()

    def torch_pass():
        with torch.inference_mode():
            for b in batches:
                model(b)

    def onnx_pass():
        for f in feeds:
            run_session(sess, names, f)

    t_torch, t_onnx = [], []
    for _ in range(repeats):
        t_torch.append(timed(torch_pass, 1))
        t_onnx.append(timed(onnx_pass, 1))
    n = len(samples)
    return n / statistics.median(t_torch), n / statistics.median(t_onnx)


def one_case(backbone: str, strategy: str, args, work: Path) -> list[dict]:
    train, test = slices(backbone, args.quick)
    kw = dict(image_size=args.image_size) if backbone != "minilm" else {}
    tm = transferkit.fit(train, test=test, backbone=backbone, strategy=strategy, epochs=1,
                         batch_size=16, seed=0, quiet=True, out=work / f"{backbone}-{strategy}",
                         cache_dir=str(common.CACHE / "features"), **kw)
    bundle = tm.run_dir / "bundle"
    out = work / f"{backbone}-{strategy}.onnx"
    export_s = [0.0] * args.repeats
    for i in range(args.repeats):
        t0 = time.perf_counter()
        desc = export_onnx(bundle, out)
        export_s[i] = time.perf_counter() - t0
    names = [x["name"] for x in desc["inputs"]]
    sess = session(out, threads=args.threads)
    loaded = transferkit.load(bundle)
    expected = loaded.predict_proba(test)
    got = np.concatenate([run_session(sess, names, [b] if names == ["pixels"] else
                                      [b[n] for n in names])
                          for b in tensors(loaded, test, 32)])
    rows = []
    for batch in BATCHES:
        tps, ops = speed(loaded, sess, names, test, batch, args.repeats)
        rows.append({"backbone": backbone, "strategy": strategy, "batch": batch,
                     "n": len(test), "export_s": round(statistics.median(export_s), 2),
                     "max_abs_diff": float(np.abs(got - expected).max()),
                     "bundle_samples_per_s": round(tps, 1), "onnx_samples_per_s": round(ops, 1),
                     "speedup": round(ops / tps, 2)})
        common.log(f"{backbone} {strategy} batch {batch}: export {rows[-1]['export_s']} s, "
                   f"diff {rows[-1]['max_abs_diff']:.1e}, bundle {tps:.1f}/s, onnx {ops:.1f}/s")
    return rows


def plot(rows: list[dict]) -> None:
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.8))
    labels = [f"{r['backbone']}\n{r['strategy']}, batch {r['batch']}" for r in rows]
    common.grouped_bars(ax, len(rows), [
        {"label": "bundle (eager PyTorch)", "values": [(r["bundle_samples_per_s"], 0) for r in rows]},
        {"label": "exported (ONNX Runtime)", "values": [(r["onnx_samples_per_s"], 0) for r in rows]},
    ], scale=1.0)
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylabel("samples / s")
    ax.set_title("exported graph against the bundle, same inputs, same threads")
    ax.legend(fontsize=8)
    fig.tight_layout()
    common.save_figure(fig, "export_onnx")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: small slices, 2 repeats")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--image-size", type=int, default=160, help="image side (default 160)")
    common.add_threads_arg(ap)
    args = ap.parse_args()
    if args.quick:
        common.use_quick_results()
        args.repeats = 2
    common.set_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="transferkit-export-bench-") as tmp:
        for backbone, strategy in CASES:
            rows += one_case(backbone, strategy, args, Path(tmp))
    notes = (f"Bundles from a 1-epoch fit on a small slice (images at {args.image_size} px); "
             "`export_s`: `export_onnx` (load bundle, trace, ONNX Runtime check), median of "
             f"{args.repeats}; `max_abs_diff`: ONNX Runtime against `TrainedModel.predict_proba`"
             " on the held-out slice; samples/s on the same preprocessed tensors, the bundle's "
             "model in eager PyTorch (`torch.inference_mode`, what `predict` runs) against the "
             f"ONNX Runtime CPU session, both on {args.threads} thread(s), measured alternately, "
             f"median of {args.repeats}; `speedup` = ONNX / bundle.")
    path = common.write_table("export_onnx", rows, title="ONNX export: time, agreement, speed",
                              notes=notes)
    plot(rows)
    common.log(f"wrote {path}")


if __name__ == "__main__":
    main()
