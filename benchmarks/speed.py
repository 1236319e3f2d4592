"""Speed of transferkit against plain PyTorch on hymenoptera with EfficientNet-Lite0 (224 px).

Three measurements, each compared side by side in the same process, interleaved and
repeated (the median is reported), because other work may share the CPU:

1. feature extraction (images/s): transferkit's frozen-backbone feature pass (what
   ``transferkit fit --strategy freeze`` runs on a cold cache) against plain eager PyTorch,
   plus one row per ingredient of the difference, and how far the features agree;
2. ``freeze`` for 10 epochs (cold and warm feature cache) against the same recipe written as
   a plain PyTorch loop that re-runs the frozen backbone on every batch of every epoch;
3. fine-tuning seconds per step: the engine's training loop (``finetune`` stage 2) against a
   hand-written loop doing the same work, with decoding in the loader and on pre-decoded
   tensors.

    .venv/bin/python benchmarks/speed.py              # full run (tens of minutes on 2 cores)
    .venv/bin/python benchmarks/speed.py --quick      # smoke test of every code path
    .venv/bin/python benchmarks/speed.py --parts 2    # part 2 alone, merged into the results

Writes ``benchmarks/results/speed.{md,csv,png}`` (``--quick``: under
``benchmarks/.cache/quick_results``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import ExifTags, Image  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from torchvision import transforms as T  # noqa: E402

import common  # noqa: E402
from common import CACHE, SHARED, write_table  # noqa: E402

DATA = SHARED / "hymenoptera"
TRAIN_DIR = DATA / "train"
VAL_DIR = DATA / "val"
BACKBONE = "efficientnet_lite0"
FEATURE_BATCH = 64                       # TrainConfig.eval_batch_size, and the plain loader's
TRAIN_BATCH = 32

now = time.perf_counter
FACTS: dict = {}
LOADS: list[float] = []      # 1-minute load average, sampled at every log line


def log(msg: str) -> None:
    LOADS.append(os.getloadavg()[0])
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def median(xs) -> float:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


# =========================================================================== data

def read_images():
    """``(train split, carved val split, test split = hymenoptera val, all images)``, the
    placeholder GIF removed; splits exactly as ``transferkit.fit`` carves them (seed 0) and
    checked as ``fit(skip_bad=True)`` checks them."""
    from transferkit.data import concat_samples, read_data, resolve_splits
    from transferkit.data.images import check_split_images

    splits = resolve_splits(read_data(TRAIN_DIR), test=read_data(VAL_DIR), seed=0)
    before = {str(p) for s in splits.values() if s is not None for p in s.items}
    splits = check_split_images(splits, skip_bad=True, log=log)
    after = {str(p) for s in splits.values() if s is not None for p in s.items}
    FACTS["skipped"] = sorted(os.path.relpath(p, DATA) for p in before - after)
    train, val, test = splits["train"], splits["val"], splits["test"]
    everything = concat_samples([train, val, test])
    return train, val, test, everything


#: the plain recipe: PIL decode, torchvision resize 256 bicubic / centre crop 224 / normalise 0.5
PLAIN_TF = T.Compose([
    T.Resize(256, interpolation=T.InterpolationMode.BICUBIC),
    T.CenterCrop(224),
    T.ToTensor(),
    T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
])


class PlainImages(Dataset):
    def __init__(self, paths, labels):
        self.paths = [str(p) for p in paths]
        self.labels = [int(v) for v in labels]

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return PLAIN_TF(Image.open(self.paths[i]).convert("RGB")), self.labels[i]


def plain_loader(samples, *, batch_size=FEATURE_BATCH, shuffle=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    return DataLoader(PlainImages(samples.items, samples.labels), batch_size=batch_size,
                      shuffle=shuffle, num_workers=2, generator=g)


def transferkit_loader(samples, pre, *, batch_size=FEATURE_BATCH):
    """transferkit's own image loader (``open_image`` with reduced-size JPEG decoding)."""
    from transferkit.data.datasets import make_loader
    from transferkit.data.transforms import eval_transform

    size = int(np.ceil(pre["input_size"][-1] / pre["crop_pct"]))
    return make_loader(samples, transform=eval_transform(pre), batch_size=batch_size,
                       workers=2, target_size=size)


def decode_facts(samples) -> dict:
    """How many JPEGs transferkit decodes at a reduced scale, and how many carry an EXIF
    rotation (both make its pixels differ from a plain full-size, unrotated decode)."""
    reduced = rotated = 0
    for p in samples.items:
        with Image.open(p) as im:
            size = im.size
            try:
                if im.getexif().get(ExifTags.Base.Orientation, 1) in (2, 3, 4, 5, 6, 7, 8):
                    rotated += 1
            except Exception:
                pass
            if im.format in ("JPEG", "MPO"):
                im.draft("RGB", (256, 256))
                if im.size != size:
                    reduced += 1
    return {"reduced": reduced, "rotated": rotated}


# =========================================================================== 1. features

one_thread = common.one_thread


def forward_pooled(model, x):
    return model.forward_head(model.forward_features(x), pre_logits=True)


def eager_pass(model, loader, *, channels_last=False, inference_mode=False):
    ctx = torch.inference_mode() if inference_mode else torch.no_grad()
    out = []
    with ctx:
        for batch in loader:
            x = batch[0]
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            out.append(forward_pooled(model, x).float())
    return torch.cat(out)


def onnx_pass(session, loader):
    from transferkit.engine.onnx import run

    return torch.cat([run(session, batch[0]) for batch in loader])


def feature_benchmark(args, everything, bb):
    """Rows of part 1; returns (rows, median transferkit pass seconds, transferkit callable)."""
    from transferkit.engine import onnx
    from transferkit.engine.cache import FeatureCache, extract_features
    from transferkit.engine.inputs import InputPipeline

    n = len(everything)
    model = bb.model.eval()
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last).eval()
    pre = bb.preprocess
    folder = CACHE / "speed"
    folder.mkdir(parents=True, exist_ok=True)

    # one-time cost of the ONNX graph on a cold cache: export + session, as a new process has
    # it (this is the first session of the process: nothing is memoised yet)
    cold_dir = Path(tempfile.mkdtemp(dir=folder, prefix="onnx-cold-"))
    t0 = now()
    onnx.session_for(bb, cold_dir)
    export_s = now() - t0
    FACTS["export_s"] = export_s

    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    graph = next((cold_dir / "onnx").glob("*.onnx"))     # the graph exported just now
    session1 = ort.InferenceSession(str(graph), so, providers=["CPUExecutionProvider"])
    shutil.rmtree(cold_dir, ignore_errors=True)

    cache = FeatureCache(folder, enabled=False)          # runtime "auto", as fit uses it
    pipeline = InputPipeline(bb)                         # workers default: 2
    warm = everything.subset(np.arange(min(FEATURE_BATCH, n)))
    cache.features(bb, pipeline, warm, batch_size=FEATURE_BATCH)   # picks the runtime
    session = onnx.session_for(bb, folder) if cache.used_runtime == "onnx" else None
    log(f"feature cache runtime chosen by default: {cache.used_runtime}")

    def tk(samples):
        return cache.features(bb, pipeline, samples, batch_size=FEATURE_BATCH)

    configs = [
        ("plain eager PyTorch (baseline)",
         lambda s: eager_pass(model, plain_loader(s))),
        ("eager + reduced-size JPEG decoding",
         lambda s: eager_pass(model, transferkit_loader(s, pre))),
        ("eager + channels_last + inference_mode",
         lambda s: eager_pass(model_cl, plain_loader(s), channels_last=True, inference_mode=True)),
        ("ONNX Runtime (plain decoding)",
         lambda s: onnx_pass(session, plain_loader(s))),
        (f"transferkit (FeatureCache, runtime={cache.used_runtime})", tk),
        # the same pair with one thread each: robust to other jobs on the cores
        ("plain eager PyTorch, 1 torch thread",
         one_thread(lambda s: eager_pass(model, plain_loader(s)))),
        ("transferkit, 1 thread (ONNX Runtime intra-op 1)",
         one_thread(lambda s: extract_features(bb, pipeline, s, batch_size=FEATURE_BATCH,
                                               session=session1))),
    ]
    for name, fn in configs:
        fn(warm)
    times = {name: [] for name, _ in configs}
    feats = {}
    for r in range(args.repeats):
        order = configs if r % 2 == 0 else configs[::-1]
        for name, fn in order:
            t0 = now()
            f = fn(everything)
            dt = now() - t0
            times[name].append(dt)
            feats.setdefault(name, f)
            log(f"features r{r}: {name}: {dt:.1f}s ({n / dt:.1f} img/s)")

    base_name, tk_name, ort_name = configs[0][0], configs[4][0], configs[3][0]
    base_rate = n / median(times[base_name])
    rows = []
    for name, _ in configs:
        rates = [n / t for t in times[name]]
        rows.append(dict(section="1 features", row=name, median=n / median(times[name]),
                         unit="img/s", ratio=(n / median(times[name])) / base_rate,
                         n=len(rates), values=";".join(f"{v:.2f}" for v in rates),
                         note=f"{n} images, batch {FEATURE_BATCH}, 2 loader workers"))
    rows.append(dict(section="1 features", row="ONNX export + session (cold cache, once)",
                     median=export_s, unit="s", ratio=None, n=1, values=f"{export_s:.2f}",
                     note="not in the img/s rows; part of a cold `fit`"))

    base, tkf, ort_plain = feats[base_name], feats[tk_name], feats[ort_name]
    facts = FACTS.setdefault("decode", decode_facts(everything))
    # images decoded identically by both paths: no reduced-size decode and no EXIF rotation
    same = []
    for i, p in enumerate(everything.items):
        with Image.open(p) as im:
            size = im.size
            im.draft("RGB", (256, 256))
            if im.size == size:
                same.append(i)
    scale = FACTS["scale"] = float(base.abs().max())
    diff_all = float((tkf - base).abs().max())
    diff_same = float((tkf[same] - base[same]).abs().max()) if same else float("nan")
    diff_rt = float((ort_plain - base).abs().max())
    rows += [
        dict(section="1 features", row="max abs diff, transferkit vs plain eager, all images",
             median=diff_all, unit="abs", ratio=diff_all / scale, n=n, values="",
             note=f"ratio column: relative to max |feature| = {scale:.3g}; "
                  f"{facts['reduced']} JPEGs decoded at reduced size, "
                  f"{facts['rotated']} with an EXIF rotation"),
        dict(section="1 features", row="max abs diff, transferkit vs plain eager, same-size decodes",
             median=diff_same, unit="abs", ratio=diff_same / scale, n=len(same), values="",
             note="images transferkit decodes at full size (no reduced-scale JPEG decode)"),
        dict(section="1 features", row="max abs diff, ONNX Runtime vs eager, identical input",
             median=diff_rt, unit="abs", ratio=diff_rt / scale, n=n, values="",
             note="runtime difference only (both fed the plain decoding)"),
    ]
    return rows, median(times[tk_name]), tk, times, base_rate


# =========================================================================== 2. freeze x10

def run_fit(cache_dir: Path, out_dir: Path, epochs: int):
    import transferkit

    t0 = now()
    tm = transferkit.fit(str(TRAIN_DIR), test=str(VAL_DIR), strategy="freeze", epochs=epochs,
                         skip_bad=True, cache_dir=str(cache_dir), seed=0, quiet=True,
                         out=str(out_dir))
    return now() - t0, tm.metrics


def plain_freeze_loop(train, test, epochs: int):
    """The seed recipe as a plain loop: frozen backbone re-run on every batch of every epoch."""
    from transferkit.backbones import build_backbone

    model = build_backbone(BACKBONE).model.eval()
    torch.manual_seed(0)
    head = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, len(train.classes)))
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3)
    t0 = now()
    loader = plain_loader(train, batch_size=TRAIN_BATCH, shuffle=True, seed=0)
    for _ in range(epochs):
        head.train()
        for x, y in loader:
            with torch.no_grad():
                f = forward_pooled(model, x)
            loss = nn.functional.cross_entropy(head(f), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    head.eval()
    correct = 0
    with torch.no_grad():
        for x, y in plain_loader(test, batch_size=FEATURE_BATCH):
            correct += int((head(forward_pooled(model, x)).argmax(1) == y).sum())
    return now() - t0, correct / len(test)


#: the parts of a cold ``fit`` shown in part 2: (row, key of ``metrics.json`` -> ``timing``).
#: A key the run does not publish is left out of the table and named in its notes.
FIT_PARTS = [
    ("ONNX export + session", "onnx_export_s"),
    ("image scan (skip_bad)", "scan_s"),
    ("backbone build", "backbone_s"),
    ("feature extraction (computed, not read back)", "features_computed_s"),
    ("head training, {epochs} epochs", "train_s"),
    ("validation scoring during training", "eval_s"),
    ("test split scoring", "test_s"),
    ("run folder + report", "report_s"),
    ("bundle", "bundle_s"),
]


def fit_pair(spec: dict) -> dict:
    """A cold ``fit`` on an empty cache folder, then a warm one on the same folder, in this
    (fresh) process: the ONNX graph is exported again, as a new process does."""
    torch.set_num_threads(spec["threads"])
    if spec.get("src"):  # the code of another revision (--compare-ref)
        sys.path.insert(0, spec["src"])
    import onnxruntime  # noqa: F401  imported before the clock, as in a running process
    import transferkit  # noqa: F401

    if spec.get("src"):
        assert Path(transferkit.__file__).resolve().is_relative_to(Path(spec["src"]).resolve())

    folder = Path(spec["folder"])
    cache_dir = Path(tempfile.mkdtemp(dir=folder, prefix="fit-cache-"))
    runs = Path(tempfile.mkdtemp(dir=folder, prefix="fit-runs-"))
    try:
        tc, mc = run_fit(cache_dir, runs / "cold", spec["epochs"])
        tw, mw = run_fit(cache_dir, runs / "warm", spec["epochs"])
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
        shutil.rmtree(runs, ignore_errors=True)
    out = {"cold_s": tc, "warm_s": tw, "cold": mc, "warm": mw}
    Path(spec["out"]).write_text(json.dumps(out))
    return out


def source_of(rev: str) -> Path:
    """The repository's code at ``rev`` (``git archive``), under the benchmark cache."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=root, check=True,
                         capture_output=True, text=True).stdout.strip()
    dest = CACHE / "speed" / f"src-{sha}"
    if not (dest / "transferkit").is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha, "transferkit"], cwd=root, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def before_pair(args, folder: Path, order: int) -> dict | None:
    """The cold / warm fit pair of the code at ``--compare-ref``, in its own process."""
    if not args.compare_ref:
        return None
    out = folder / f"fit-pair-before-{os.getpid()}.json"
    common.run_child(__file__, {"threads": torch.get_num_threads(), "epochs": args.epochs,
                                "folder": str(folder), "out": str(out),
                                "src": str(source_of(args.compare_ref))})
    res = json.loads(out.read_text())
    out.unlink()
    res["order"] = order
    return res


def freeze_benchmark(args, train, test, tk_pass):
    folder = CACHE / "speed"
    before: list[dict] = []
    cold, warm, ref, ratio_cold, ratio_warm, accs = [], [], [], [], [], []
    ratio_noexp, parts, exports, published = [], [], [], []
    plain_t, plain_acc = [], []

    def fit_round(r):
        # one transferkit feature pass over the same images, next to this round's fits
        t0 = now()
        tk_pass()
        ref.append(now() - t0)
        if r % 2 == 1:  # the code before first in every other round
            before.append(before_pair(args, folder, 0))
        out = folder / f"fit-pair-{os.getpid()}.json"
        common.run_child(__file__, {"threads": torch.get_num_threads(), "epochs": args.epochs,
                                    "folder": str(folder), "out": str(out)})
        res = json.loads(out.read_text())
        out.unlink()
        if r % 2 == 0:
            before.append(before_pair(args, folder, 1))
        if before[-1] is not None:
            before[-1]["ref"] = ref[-1]
        tc, tw, mc, mw = res["cold_s"], res["warm_s"], res["cold"], res["warm"]
        cold.append(tc)
        warm.append(tw)
        ratio_cold.append(tc / ref[-1])
        ratio_warm.append(tw / ref[-1])
        tm = mc["timing"]
        published.append(set(tm))
        # the export inside the cold fit when the run publishes it, else part 1's measurement
        export = tm.get("onnx_export_s", FACTS["export_s"])
        exports.append(export)
        ratio_noexp.append((tc - export) / ref[-1])
        accs.append((mc["test"]["accuracy"], mw["test"]["accuracy"]))
        part = {label.format(epochs=args.epochs): tm[key] for label, key in FIT_PARTS
                if key in tm}
        part["everything else (not published separately)"] = tc - sum(part.values())
        parts.append(part)
        log(f"freeze r{r}: feature pass {ref[-1]:.1f}s, fit cold {tc:.1f}s, warm {tw:.1f}s, "
            f"test acc {accs[-1]}, cold parts " + ", ".join(f"{k} {v:.2f}" for k, v in part.items())
            + f", load {os.getloadavg()[0]:.1f}")

    def plain_round(r):
        t, a = plain_freeze_loop(train, test, args.epochs)
        plain_t.append(t)
        plain_acc.append(a)
        log(f"plain loop r{r}: {t:.1f}s, test acc {a:.4f}, load {os.getloadavg()[0]:.1f}")

    # the plain loop runs between fit rounds, so that fits bracket it in time
    for i in range(max(args.rounds, args.plain_runs + 1)):
        if i < args.rounds:
            fit_round(i)
        if i < args.plain_runs:
            plain_round(i)

    tk_acc = accs[0][0]
    p_med, c_med, w_med = median(plain_t), median(cold), median(warm)
    sec = "2 freeze x10"
    rows = [
        dict(section=sec, row="plain PyTorch loop (backbone every batch, every epoch)",
             median=p_med, unit="s", ratio=1.0, n=len(plain_t),
             values=";".join(f"{v:.1f}" for v in plain_t),
             note=f"{len(train)} train images x {args.epochs} epochs + test pass; run "
                  f"{len(plain_t)}x"),
        dict(section=sec, row="transferkit fit, cold cache", median=c_med, unit="s",
             ratio=p_med / c_med, n=len(cold), values=";".join(f"{v:.1f}" for v in cold),
             note="ratio: plain loop time / this; includes ONNX export, image scan, one "
                  f"feature pass, {args.epochs} epochs, reports"),
        dict(section=sec, row="transferkit fit, warm cache", median=w_med, unit="s",
             ratio=p_med / w_med, n=len(warm), values=";".join(f"{v:.1f}" for v in warm),
             note="ratio: plain loop time / this"),
        dict(section=sec, row="one transferkit feature pass (same images)", median=median(ref),
             unit="s", ratio=None, n=len(ref), values=";".join(f"{v:.1f}" for v in ref),
             note="measured next to each cold/warm pair"),
        dict(section=sec, row="fit cold / one feature pass", median=median(ratio_cold), unit="x",
             ratio=None, n=len(ratio_cold), values=";".join(f"{v:.2f}" for v in ratio_cold),
             note="per-round ratio, median"),
        dict(section=sec, row="fit cold without its ONNX export / one feature pass",
             median=median(ratio_noexp), unit="x", ratio=None, n=len(ratio_noexp),
             values=";".join(f"{v:.2f}" for v in ratio_noexp),
             note="cold fit time minus the export + session build"
                  + (" the run published (timing.onnx_export_s)" if all(
                      "onnx_export_s" in p for p in published) else
                      " measured in part 1 (the run does not publish its own)")),
        dict(section=sec, row="fit warm / one feature pass", median=median(ratio_warm), unit="x",
             ratio=None, n=len(ratio_warm), values=";".join(f"{v:.2f}" for v in ratio_warm),
             note="per-round ratio, median"),
    ]
    for key in parts[0]:
        vals = [p[key] for p in parts]
        rows.append(dict(section=sec, row=f"cold fit part: {key}", median=median(vals), unit="s",
                         ratio=median(vals) / c_med, n=len(vals),
                         values=";".join(f"{v:.2f}" for v in vals),
                         note="ratio: share of the cold fit's wall time"))
    rows += [
        dict(section=sec, row="accuracy on hymenoptera val: plain loop", median=median(plain_acc),
             unit="acc", ratio=None, n=len(test), values=";".join(f"{a:.4f}" for a in plain_acc),
             note="last epoch (no selection)"),
        dict(section=sec, row="accuracy on hymenoptera val: transferkit", median=tk_acc,
             unit="acc", ratio=None, n=len(test),
             values=";".join(f"{a:.4f}/{b:.4f}" for a, b in accs),
             note="test split; epoch chosen on the carved val split; values: cold/warm per round"),
    ]
    rows += before_rows(args, sec, before, c_med)
    summary = dict(plain=p_med, cold=c_med, warm=w_med, ref=median(ref),
                   ratio_cold=median(ratio_cold), ratio_warm=median(ratio_warm),
                   plain_acc=median(plain_acc), tk_acc=tk_acc, plain_runs=len(plain_t),
                   epochs=args.epochs, export=median(exports),
                   unpublished=[k for _, k in FIT_PARTS if not all(k in p for p in published)],
                   ratio_cold_noexport=median(ratio_noexp))
    return rows, summary


# =========================================================================== 3. fine-tune

class PreDecoded:
    """Stands in for the trainer's input pipeline (its public ``pipeline`` attribute): the
    training batches are tensors decoded beforehand, shuffled exactly as the hand-written loop
    shuffles them with ``seed``; anything else (validation) goes to the real pipeline."""

    def __init__(self, x, y, seed, real):
        self.x, self.y, self.seed, self.real = x, y, seed, real

    def batches(self, samples, *, batch_size, train=False, shuffle=False, seed=0):
        from transferkit.engine.inputs import Batch

        if not train:
            yield from self.real.batches(samples, batch_size=batch_size, train=train,
                                         shuffle=shuffle, seed=seed)
            return
        for idx in order(len(self.x), self.seed).split(batch_size):
            yield Batch(self.x[idx], self.y[idx], idx)

    def __getattr__(self, name):
        return getattr(self.real, name)


def order(n, seed):
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


#: the plain loop's own list of BatchNorm layers (kept in eval mode: statistics frozen)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def finetune_benchmark(args, train):
    default_threads = torch.get_num_threads()
    torch.set_num_threads(args.ft_threads or default_threads)
    try:
        return finetune_loops(args, train, default_threads)
    finally:
        torch.set_num_threads(default_threads)


def finetune_loops(args, train, default_threads):
    """The engine's loop (``Trainer.fit``, one epoch of the ``finetune`` stage) against a
    hand-written loop over the same model; step times from a global optimizer step hook."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    stamps: list[tuple[float, float]] = []   # (wall, process CPU) at the end of each step

    def hook(opt, a, k):
        stamps.append((now(), time.process_time()))

    handle = register_optimizer_step_post_hook(hook)   # every optimizer: engine's and hand's
    try:
        return _finetune_loops(args, train, default_threads, stamps)
    finally:
        handle.remove()


def _finetune_loops(args, train, default_threads, stamps):
    from transferkit.backbones import build_backbone
    from transferkit.data.datasets import ImageDataset, collate_images
    from transferkit.data.transforms import eval_transform
    from transferkit.engine.cache import FeatureCache
    from transferkit.engine.config import TrainConfig
    from transferkit.engine.trainer import Trainer
    from transferkit.heads import HeadConfig, build_model
    from transferkit.strategies.base import get_strategy

    torch.manual_seed(0)
    bb = build_backbone(BACKBONE)
    model = build_model(bb, HeadConfig(), train.classes)
    cfg = TrainConfig.from_dict({"epochs": 1, "seed": 0, "batch_size": TRAIN_BATCH})
    strat = get_strategy("finetune", head_epochs=0)   # only the whole-backbone stage
    strat.attach(model)
    stages = strat.stages(model, cfg)
    stage = stages[-1]                             # whole backbone, BN frozen
    assert len(stages) == 1 and stage.name == "finetune" and not stage.frozen_backbone \
        and not stage.train_bn
    trainer = Trainer(model, strat, cfg, cache=FeatureCache(enabled=False), log=lambda s: None)
    real_pipeline = trainer.pipeline
    tiny_val = train.subset([0, 1])                # Trainer.fit scores it after the epoch

    opt_hand = torch.optim.AdamW([{"params": g.params, "lr": g.lr} for g in stage.groups
                                  if g.params],
                                 lr=stage.groups[0].lr, weight_decay=cfg.weight_decay)
    trainable = {id(p) for p in stage.parameters()}

    def samples_of(steps):
        return train.subset(np.arange(steps * TRAIN_BATCH) % len(train))

    def hand_mode():
        for p in model.parameters():
            p.requires_grad_(id(p) in trainable)
        model.train()
        for m in model.backbone.modules():
            if isinstance(m, BATCH_NORMS):
                m.eval()

    def hand_step(x, y):
        loss = nn.functional.cross_entropy(model(x), y)
        opt_hand.zero_grad(set_to_none=True)
        loss.backward()
        opt_hand.step()

    def engine_decode(s, seed):
        trainer.pipeline = real_pipeline
        trainer.fit(s, tiny_val)

    def hand_decode(s, seed):
        ds = ImageDataset(s, eval_transform(bb.preprocess), target_size=real_pipeline.target_size)
        loader = DataLoader(ds, batch_size=TRAIN_BATCH, shuffle=True, num_workers=2,
                            generator=torch.Generator().manual_seed(seed),
                            collate_fn=collate_images)
        hand_mode()
        for x, y, _, _ in loader:
            hand_step(x, y)

    def engine_pre(s, seed, x, y):
        trainer.pipeline = PreDecoded(x, y, seed, real_pipeline)
        try:
            trainer.fit(s, tiny_val)
        finally:
            trainer.pipeline = real_pipeline

    def hand_pre(s, seed, x, y):
        hand_mode()
        for idx in order(len(x), seed).split(TRAIN_BATCH):
            hand_step(x[idx], y[idx])

    # each call runs one step more than it measures: the first holds the loader start-up
    # and the engine's set-up of the call (trainable parameters, optimizer)
    calls = {"decode": 1 + args.ft_steps, "pre-decoded": 1 + args.ft_steps}
    s_call = {v: samples_of(n) for v, n in calls.items()}
    s_warm = samples_of(args.ft_warmup)
    s_pre = samples_of(max(calls["pre-decoded"], args.ft_warmup))
    log(f"fine-tune: decoding {len(s_pre)} images once for the pre-decoded variant")
    xs, ys = [], []
    for x, y, _, _ in DataLoader(ImageDataset(s_pre, eval_transform(bb.preprocess),
                                              target_size=real_pipeline.target_size),
                                 batch_size=64, num_workers=2, collate_fn=collate_images):
        xs.append(x)
        ys.append(y)
    x_pre, y_pre = torch.cat(xs), torch.cat(ys)
    x_warm, y_warm = x_pre[:len(s_warm)], y_pre[:len(s_warm)]

    loops = {
        ("engine", "decode"): lambda seed: engine_decode(s_call["decode"], seed),
        ("hand", "decode"): lambda seed: hand_decode(s_call["decode"], seed),
        ("engine", "pre-decoded"): lambda seed: engine_pre(s_call["pre-decoded"], seed,
                                                           x_pre[:len(s_call["pre-decoded"])],
                                                           y_pre[:len(s_call["pre-decoded"])]),
        ("hand", "pre-decoded"): lambda seed: hand_pre(s_call["pre-decoded"], seed,
                                                       x_pre[:len(s_call["pre-decoded"])],
                                                       y_pre[:len(s_call["pre-decoded"])]),
    }
    warmups = {
        ("engine", "decode"): lambda: engine_decode(s_warm, 99),
        ("hand", "decode"): lambda: hand_decode(s_warm, 99),
        ("engine", "pre-decoded"): lambda: engine_pre(s_warm, 99, x_warm, y_warm),
        ("hand", "pre-decoded"): lambda: hand_pre(s_warm, 99, x_warm, y_warm),
    }
    for key, fn in warmups.items():
        t0 = now()
        fn()
        log(f"fine-tune warm-up {key}: {args.ft_warmup} steps in {now() - t0:.1f}s")

    steps = {k: [] for k in loops}      # wall s/step
    cpu = {k: [] for k in loops}        # CPU s/step of this process (all its threads)
    paired = {"decode": [], "pre-decoded": []}   # per round: engine median / hand median
    for r in range(args.ft_rounds):
        for variant in ("decode", "pre-decoded"):
            who = ("engine", "hand") if r % 2 == 0 else ("hand", "engine")
            this = {}
            for w in who:
                key = (w, variant)
                stamps.clear()
                t0 = now()
                loops[key](1000 + r)
                t1 = now()
                assert len(stamps) == args.ft_steps + 1, (key, len(stamps))
                walls_ = [b[0] - a[0] for a, b in zip(stamps, stamps[1:])]
                steps[key] += walls_
                cpu[key] += [b[1] - a[1] for a, b in zip(stamps, stamps[1:])]
                this[w] = median(walls_)
                log(f"fine-tune r{r} {key}: median {this[w]:.2f} s/step, call {t1 - t0:.1f}s, "
                    f"load {os.getloadavg()[0]:.1f}")
            paired[variant].append(this["engine"] / this["hand"])

    # context: the hand-written step at the default thread count, on this (shared) machine
    threads_now = torch.get_num_threads()
    ctx_steps = []
    if threads_now != default_threads:
        torch.set_num_threads(default_threads)
        for r in range(1):
            stamps.clear()
            loops[("hand", "pre-decoded")](2000 + r)
            ctx_steps += [b[0] - a[0] for a, b in zip(stamps, stamps[1:])]
        torch.set_num_threads(threads_now)
        log(f"fine-tune context: hand-written, pre-decoded, {default_threads} threads: "
            f"median {median(ctx_steps):.2f} s/step")

    rows, summary = [], {"threads": threads_now}
    for variant in ("decode", "pre-decoded"):
        e, h = median(steps[("engine", variant)]), median(steps[("hand", variant)])
        ce, ch = median(cpu[("engine", variant)]), median(cpu[("hand", variant)])
        over = 100 * (median(paired[variant]) - 1)
        summary[variant] = dict(engine=e, hand=h, overhead=over, pooled=100 * (e / h - 1),
                                cpu=100 * (ce / ch - 1))
        what = ("images decoded by the DataLoader (2 workers)" if variant == "decode"
                else "tensors decoded beforehand")
        for w, label in (("hand", "hand-written loop"), ("engine", "transferkit Trainer.fit")):
            vals = steps[(w, variant)]
            rows.append(dict(section="3 fine-tune", row=f"{label}, {variant}", median=median(vals),
                             unit="s/step", ratio=median(vals) / h, n=len(vals),
                             values=";".join(f"{v:.2f}" for v in vals),
                             note=f"batch {TRAIN_BATCH}, {what}; ratio vs hand-written; "
                                  f"CPU s/step {median(cpu[(w, variant)]):.2f}"))
        rows.append(dict(section="3 fine-tune", row=f"engine overhead, {variant}", median=over,
                         unit="%", ratio=None, n=len(paired[variant]),
                         values=";".join(f"{100 * (v - 1):+.1f}" for v in paired[variant]),
                         note=f"median over rounds of (engine / hand median s/step, same round) "
                              f"- 1; pooled medians give {summary[variant]['pooled']:+.1f} %, "
                              f"CPU time per step {summary[variant]['cpu']:+.1f} %"))
    if ctx_steps:
        h = summary["pre-decoded"]["hand"]
        rows.append(dict(section="3 fine-tune",
                         row=f"context: hand-written, pre-decoded, {default_threads} torch threads",
                         median=median(ctx_steps), unit="s/step", ratio=median(ctx_steps) / h,
                         n=len(ctx_steps), values=";".join(f"{v:.2f}" for v in ctx_steps),
                         note=f"the rows above ran with {threads_now} thread(s); ratio vs the "
                              f"hand-written pre-decoded row"))
    return rows, summary


# =========================================================================== chart

def chart(feature_rows, freeze_sum, ft_sum) -> None:
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2))
    ax = axes[0]
    fr = [r for r in feature_rows if r["unit"] == "img/s"]
    labels = [r["row"].replace(" (", "\n(").replace(" + ", "\n+ ") for r in fr]
    colors = ["#1f77b4" if r["row"].startswith("transferkit") else "#999999" for r in fr]
    bars = ax.barh(range(len(fr)), [r["median"] for r in fr], color=colors)
    ax.set_yticks(range(len(fr)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("images / s (higher is better)")
    ax.set_title("1. feature extraction, EfficientNet-Lite0 224")
    for b, r in zip(bars, fr):
        ax.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {r['median']:.1f} ({r['ratio']:.2f}x)",
                va="center", fontsize=7)
    ax.margins(x=0.3)

    ax = axes[1]
    names = ["plain loop", "transferkit\ncold cache", "transferkit\nwarm cache", "one feature\npass"]
    vals = [freeze_sum["plain"], freeze_sum["cold"], freeze_sum["warm"], freeze_sum["ref"]]
    bars = ax.bar(names, vals, color=["#999999", "#1f77b4", "#6baed6", "#c6dbef"])
    for b, v in zip(bars, vals):
        ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.0f}s", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("seconds (lower is better)")
    ax.set_title(f"2. freeze, {freeze_sum['epochs']} epochs, total wall time")
    ax.tick_params(axis="x", labelsize=8)

    ax = axes[2]
    xs = np.arange(2)
    variants = ["decode", "pre-decoded"]
    hv = [ft_sum[v]["hand"] for v in variants]
    ev = [ft_sum[v]["engine"] for v in variants]
    ax.bar(xs - 0.2, hv, 0.4, label="hand-written loop", color="#999999")
    bars = ax.bar(xs + 0.2, ev, 0.4, label="transferkit engine", color="#1f77b4")
    for b, v in zip(bars, variants):
        ax.text(b.get_x() + b.get_width() / 2, b.get_height(), f"{ft_sum[v]['overhead']:+.1f}%",
                ha="center", va="bottom", fontsize=8)
    ax.set_xticks(xs, ["images decoded\nin the loader", "pre-decoded\ntensors"])
    ax.set_ylabel("seconds / step, batch 32 (lower is better)")
    ax.set_title("3. fine-tune (whole backbone), median s/step")
    ax.legend(fontsize=8)
    fig.tight_layout()
    common.save_figure(fig, "speed", dpi=110)


# =========================================================================== main

def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="feature passes per configuration")
    ap.add_argument("--rounds", type=int, default=2,
                    help="rounds of (feature pass, cold fit, warm fit)")
    ap.add_argument("--plain-runs", type=int, default=1, help="runs of the plain 10-epoch loop")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--ft-rounds", type=int, default=6,
                    help="rounds of fine-tune calls (engine/hand alternating)")
    ap.add_argument("--ft-steps", type=int, default=3,
                    help="measured fine-tune steps per call")
    ap.add_argument("--ft-warmup", type=int, default=3, help="untimed fine-tune steps per loop")
    ap.add_argument("--ft-threads", type=int, default=1,
                    help="torch threads for the fine-tune comparison (0: leave the default)")
    ap.add_argument("--limit", type=int, default=None, help="use only N images in part 1")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: --repeats 1 --rounds 1 --epochs 1 --ft-rounds 2 "
                         "--ft-steps 2 --ft-warmup 1 --limit 96; results under "
                         "benchmarks/.cache/quick_results")
    ap.add_argument("--parts", default="1,2,3",
                    help="parts to run: all (default) or 2 alone (the freeze rows); with 2 "
                         "alone the other parts' rows, targets and descriptions are carried "
                         "over from the results as they stand, saying from which run")
    ap.add_argument("--compare-ref", default=None,
                    help="also run part 2's fits with the code at this git revision, in the "
                         "same rounds (before / after rows)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        fit_pair(json.loads(args.child))
        return
    if args.parts.replace(" ", "") not in ("1,2,3", "2"):
        ap.error("--parts: give 1,2,3 (everything) or 2 (the freeze rows alone)")
    if args.parts.strip() == "2":
        if args.quick:
            args.rounds, args.epochs = 1, 1
            common.use_quick_results()
        freeze_only(args)
        return
    if args.quick:
        args.repeats, args.rounds, args.epochs = 1, 1, 1
        args.ft_steps, args.ft_warmup, args.limit, args.ft_rounds = 2, 1, 96, 2
        common.use_quick_results()

    from transferkit.backbones import build_backbone

    torch.manual_seed(0)
    train, val, test, everything = read_images()
    log(f"images: train {len(train)}, carved val {len(val)}, test (hymenoptera val) {len(test)}, "
        f"all {len(everything)}; torch threads {torch.get_num_threads()}")
    bb = build_backbone(BACKBONE)
    assert bb.preprocess["input_size"] == [3, 224, 224] and bb.preprocess["crop_pct"] == 0.875
    part1 = everything if args.limit is None else everything.subset(np.arange(args.limit))

    t_all = now()
    f_rows, tk_pass_s, tk, _, base_rate = feature_benchmark(args, part1, bb)
    tk_rate = next(r for r in f_rows if r["row"].startswith("transferkit"))
    z_rows, fz = freeze_benchmark(args, train, test, lambda: tk(everything))
    ft_rows, ft = finetune_benchmark(args, train)
    log(f"total {now() - t_all:.0f}s")

    rows = f_rows + z_rows + ft_rows
    feat_ratio = tk_rate["ratio"]
    plain1 = next(r for r in f_rows if r["row"].startswith("plain eager PyTorch, 1 torch thread"))
    tk1 = next(r for r in f_rows if r["row"].startswith("transferkit, 1 thread"))
    ratio1 = tk1["median"] / plain1["median"]
    over = ft["decode"]["overhead"]
    over_pre = ft["pre-decoded"]["overhead"]
    diff = next(r for r in f_rows if r["row"].endswith("plain eager, all images"))
    diff_same = next(r for r in f_rows if r["row"].endswith("same-size decodes"))
    diff_rt = next(r for r in f_rows if r["row"].endswith("identical input"))
    n_img = len(part1)

    notes = f"""
Data: `hymenoptera` ({len(train)} train images as `transferkit.fit` carves them with seed 0,
{len(val)} carved validation, {len(test)} in `val`, used as the test split; {len(everything)}
images in all, {", ".join(f"`{p}`" for p in FACTS["skipped"]) or "no file"} left out). Backbone `{BACKBONE}` (timm `tf_efficientnet_lite0` with the
packaged ImageNet weights) at its true preprocessing: bicubic resize to 256, centre crop 224,
mean = std = 0.5. CPU only, {torch.get_num_threads()} torch threads. Other jobs shared the two
cores during the run (1-minute load average {min(LOADS):.1f} to {max(LOADS):.1f}, median
{median(LOADS):.1f}), which slows eager PyTorch (OpenMP) far more than ONNX Runtime and makes
single timings swing several-fold; so every comparison is measured in the same run,
interleaved (the order alternates between rounds), repeated, and the median is reported
(`values` in `speed.csv` has every run). Absolute figures are those of a shared machine; the
ratios are the point.

## Targets

| target | measured | verdict |
|---|---|---|
| feature extraction >= 2x plain eager PyTorch | {feat_ratio:.2f}x ({tk_rate['median']:.1f} vs {base_rate:.1f} img/s); with one thread each {ratio1:.2f}x ({tk1['median']:.1f} vs {plain1['median']:.1f} img/s) | {verdict(feat_ratio >= 2)}{'' if ratio1 >= 2 else ' (default threads; not with one thread each)'} |
{freeze_targets(fz, test)}
| fine-tune <= 5 % slower per step than a hand-written loop | {over:+.1f} % with decoding in the loader ({ft['decode']['engine']:.2f} vs {ft['decode']['hand']:.2f} s/step); {over_pre:+.1f} % on pre-decoded tensors ({ft['pre-decoded']['engine']:.2f} vs {ft['pre-decoded']['hand']:.2f} s/step) | {verdict(over <= 5 and over_pre <= 5)} |

## What each row is

**1 features** ({n_img} images, batch {FEATURE_BATCH}, `DataLoader` with 2 worker processes,
wall time of a whole pass including the loader start-up; img/s; `ratio` = against the baseline;
{args.repeats} passes per row, the rows run in turn, in reverse order every other round).
- *plain eager PyTorch (baseline)*: a torch `Dataset` doing `PIL.Image.open(p).convert("RGB")` +
  torchvision `Resize(256, bicubic) / CenterCrop(224) / ToTensor / Normalize(0.5, 0.5)`,
  `model.eval()`, `torch.no_grad()`, `forward_head(forward_features(x), pre_logits=True)` on
  `build_backbone("{BACKBONE}").model`.
- *eager + reduced-size JPEG decoding*: the same eager model fed by transferkit's own loader
  (`open_image(..., target_size=256)`: a JPEG whose shorter side is >= 512 is decoded at 1/2,
  1/4 or 1/8 scale by libjpeg). Only {FACTS['decode']['reduced']} of these {n_img} JPEGs are that
  big, so on this data set the ingredient is worth nothing measurable; the row shows that
  transferkit's loader (EXIF orientation, placeholder and fault checks) costs what the plain one
  does.
- *eager + channels_last + inference_mode*: plain decoding; model and batches in channels-last
  memory format, `torch.inference_mode()` instead of `no_grad`.
- *ONNX Runtime (plain decoding)*: the graph transferkit exports (`transferkit.engine.onnx`; ONNX
  Runtime folds BatchNorm into the convolutions and has faster depthwise kernels), fed the plain
  decoding. This is where the speed-up comes from.
- *plain eager PyTorch, 1 torch thread* and *transferkit, 1 thread*: the baseline and the
  transferkit pass again with `torch.set_num_threads(1)` and a one-thread ONNX Runtime session
  (loaders unchanged). Eager PyTorch's 2-thread OpenMP kernels slow down far more than ONNX
  Runtime when another job holds a core, so the default-thread ratio depends on the load; the
  one-thread pair is the like-for-like figure that does not.
- *transferkit*: `FeatureCache(dir, enabled=False).features(...)`, i.e. `extract_features` with
  the runtime `FeatureCache` picks by default on CPU (ONNX Runtime) and transferkit's loader:
  the feature pass of `transferkit fit --strategy freeze` on a cold cache, with the ONNX session
  already built. Building it (export + session, once per cache folder) is the separate
  *ONNX export + session* row.
- *max abs diff* rows: feature agreement (`ratio` = relative to the largest feature magnitude,
  {FACTS['scale']:.3g}). On identical input the two runtimes agree to
  {diff_rt['median']:.2g}; on the {diff_same['n']} images both paths decode at full size,
  transferkit's features differ from plain eager by at most {diff_same['median']:.2g}; over all
  images by {diff['median']:.2g}, which comes from the {FACTS['decode']['reduced']} big JPEGs
  transferkit decodes at reduced scale (slightly different pixels after the resize), not from
  the runtime. {FACTS['decode']['rotated']} images carry an EXIF rotation.

{freeze_paragraph(args, fz, train, test, everything)}

**3 fine-tune** (`finetune` stage 2: whole backbone and head trainable, BatchNorm statistics
frozen, AdamW with the strategy's discriminative per-group learning rates, batch {TRAIN_BATCH},
224 px, {ft['threads']} torch thread(s)). Both loops run the same number of threads; one thread
is used (`--ft-threads`) because on a shared 2-core machine a 2-thread OpenMP training step
swings several-fold from step to step (threads wait for each other whenever the other core is
taken), which would drown a 5 % difference; the loop overhead being compared does not depend
on the thread count. The *context* row shows the hand-written step at the default thread count
on the same machine at the same time. *transferkit* is `Trainer.fit` with the `finetune`
strategy reduced to that stage (`head_epochs=0`), one epoch per call (the engine's loop:
per-step LR schedule, forward, cross-entropy, strategy loss terms, backward, step; then a
validation pass over 2 images, after the last measured step); *hand-written* builds the same
`AdamW` param groups and loops `model(x)` / `cross_entropy` / `zero_grad` / `backward` / `step`
over the same model, with the BatchNorm layers in eval mode. Step times come from a global
optimizer step post-hook (`torch.optim.optimizer.register_optimizer_step_post_hook`: time
between consecutive `step()` ends, so a step includes waiting for its batch).
After {args.ft_warmup} untimed warm-up steps per loop and variant, calls alternate engine/hand
(A/B, then B/A) over {args.ft_rounds} rounds, {args.ft_steps} measured steps per call:
{args.ft_rounds * args.ft_steps} measured steps per loop and variant (each call runs one more
step first, not measured, as it holds the loader start-up and the engine's set-up of the call:
trainable parameters, a new optimizer). The *engine overhead* is the median over rounds of
(engine median s/step / hand median s/step of the same round) - 1, which cancels the load
swings between rounds (`note` in the CSV also gives the pooled-median and CPU-time figures).
*decode*: both read the images through a `DataLoader` with 2 workers (transferkit's
`ImageDataset` + eval transform, the same settings for both). *pre-decoded*: the images are
decoded to tensors once beforehand; the engine's input pipeline is replaced by one that yields
those tensors in the same shuffled order the hand-written loop uses, so the two differ only in
the loop itself.
"""
    write_table("speed", rows, title="Speed: transferkit vs plain PyTorch (hymenoptera, "
                f"{BACKBONE} 224, CPU)", notes=notes,
                md_rows=[{k: r[k] for k in ("section", "row", "median", "unit", "ratio", "n")}
                         | {"ratio": "" if r["ratio"] is None else r["ratio"]} for r in rows])
    chart(f_rows, fz, ft)
    log(f"wrote {common.results_dir() / 'speed.md'}, speed.csv, speed.png")


# =========================================================================== --parts 2

CARRIED = ("1 features", "3 fine-tune")


def previous_results() -> dict:
    """The results as they stand (``speed.csv`` and ``speed.md``): the rows of the parts
    not re-run, their target lines and descriptions, and which run made them."""
    import csv

    out = common.RESULTS  # the committed results (also under --quick)
    rows = []
    with open(out / "speed.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["section"] not in CARRIED:
                continue
            for k in ("median", "ratio"):
                r[k] = float(r[k]) if r[k] not in ("", "None") else None
            r["n"] = int(float(r["n"]))
            rows.append(r)
    lines = (out / "speed.md").read_text().splitlines()

    def block(start: str, stop: str) -> str:
        i = next(k for k, x in enumerate(lines) if x.startswith(start))
        j = next(k for k, x in enumerate(lines) if k > i and x.startswith(stop))
        return "\n".join(lines[i:j]).strip()

    carried = next((x for x in lines if x.startswith("- sections 1 and 3: carried over")), None)
    if carried is None:
        date = next(x for x in lines if x.startswith("- date: "))[len("- date: "):]
        cmd = next(x for x in lines if x.startswith("- command: "))[len("- command: "):]
        carried = (f"- sections 1 and 3: carried over unchanged (rows, targets, descriptions) "
                   f"from the run of {date} ({cmd}); section 2 re-run")
    return {"rows": rows, "carried": carried,
            "targets": [x for x in lines if x.startswith(("| feature extraction >=",
                                                         "| fine-tune <="))],
            "part1": block("**1 features**", "**2 freeze x10**"),
            "part3": block("**3 fine-tune**", "| section |")}


def freeze_only(args) -> None:
    """``--parts 2``: part 2 alone (with the transferkit feature pass it is measured
    against), merged into the results of the last full run."""
    from transferkit.backbones import build_backbone
    from transferkit.engine import onnx
    from transferkit.engine.cache import FeatureCache
    from transferkit.engine.inputs import InputPipeline

    prev = previous_results()
    torch.manual_seed(0)
    train, val, test, everything = read_images()
    log(f"images: train {len(train)}, carved val {len(val)}, test (hymenoptera val) {len(test)}, "
        f"all {len(everything)}; torch threads {torch.get_num_threads()}")
    bb = build_backbone(BACKBONE)
    folder = CACHE / "speed"
    folder.mkdir(parents=True, exist_ok=True)
    cold_dir = Path(tempfile.mkdtemp(dir=folder, prefix="onnx-cold-"))
    t0 = now()
    onnx.session_for(bb, cold_dir)             # memoised: the feature pass below reuses it
    FACTS["export_s"] = now() - t0
    shutil.rmtree(cold_dir, ignore_errors=True)
    cache, pipeline = FeatureCache(folder, enabled=False), InputPipeline(bb)
    cache.features(bb, pipeline, everything.subset(np.arange(FEATURE_BATCH)),
                   batch_size=FEATURE_BATCH)   # warm-up, as in part 1
    z_rows, fz = freeze_benchmark(args, train, test, lambda: cache.features(
        bb, pipeline, everything, batch_size=FEATURE_BATCH))
    f_rows = [r for r in prev["rows"] if r["section"] == "1 features"]
    ft_rows = [r for r in prev["rows"] if r["section"] == "3 fine-tune"]
    rows = f_rows + z_rows + ft_rows
    notes = f"""
{prev['carried']}

Data: `hymenoptera` ({len(train)} train images as `transferkit.fit` carves them with seed 0,
{len(val)} carved validation, {len(test)} in `val`, used as the test split; {len(everything)}
images in all, {", ".join(f"`{p}`" for p in FACTS["skipped"]) or "no file"} left out).
Backbone `{BACKBONE}` at its true preprocessing. CPU only, {torch.get_num_threads()} torch
threads. Other jobs shared the two cores during this run (1-minute load average
{min(LOADS):.1f} to {max(LOADS):.1f}, median {median(LOADS):.1f}), so single timings swing
several-fold; the fit is compared with a feature pass measured next to it in every round, and
the median of the per-round ratios is reported (`values` in `speed.csv` has every round).

## Targets

| target | measured | verdict |
|---|---|---|
{prev['targets'][0]}
{freeze_targets(fz, test)}
{prev['targets'][1]}

## What each row is

{prev['part1']}

{freeze_paragraph(args, fz, train, test, everything)}

{prev['part3']}
"""
    write_table("speed", rows, title="Speed: transferkit vs plain PyTorch (hymenoptera, "
                f"{BACKBONE} 224, CPU)", notes=notes,
                md_rows=[{k: r[k] for k in ("section", "row", "median", "unit", "ratio", "n")}
                         | {"ratio": "" if r["ratio"] is None else r["ratio"]} for r in rows])
    chart(f_rows, fz, carried_finetune(ft_rows))
    log(f"wrote {common.results_dir() / 'speed.md'}, speed.csv, speed.png")


def carried_finetune(ft_rows) -> dict:
    """Part 3's summary (as :func:`finetune_benchmark` returns it) from its table rows."""
    out = {}
    for variant in ("decode", "pre-decoded"):
        mine = [r for r in ft_rows if r["row"].endswith(f", {variant}")]
        out[variant] = {
            "hand": next(r["median"] for r in mine if r["row"].startswith("hand-written")),
            "engine": next(r["median"] for r in mine if r["row"].startswith("transferkit")),
            "overhead": next(r["median"] for r in mine if r["row"].startswith("engine overhead"))}
    return out


def before_rows(args, sec: str, before: list, c_med: float) -> list[dict]:
    """Part 2's rows of the code at ``--compare-ref``, measured in the same rounds."""
    before = [b for b in before if b is not None]
    if not before:
        return []
    ref = args.compare_ref
    cold = [b["cold_s"] for b in before]
    warm = [b["warm_s"] for b in before]
    ratios = [b["cold_s"] / b["ref"] for b in before]
    accs = [b["cold"]["test"]["accuracy"] for b in before]
    hits = [(b["warm"]["feature_cache"]["hits"], b["warm"]["feature_cache"]["misses"])
            for b in before]
    note = f"the code at {ref}, run in the same rounds (alternating order with the fit above)"
    return [
        dict(section=sec, row=f"before ({ref}): transferkit fit, cold cache", median=median(cold),
             unit="s", ratio=median(cold) / c_med, n=len(cold),
             values=";".join(f"{v:.1f}" for v in cold), note=note + "; ratio: this / cold fit now"),
        dict(section=sec, row=f"before ({ref}): transferkit fit, warm cache", median=median(warm),
             unit="s", ratio=None, n=len(warm), values=";".join(f"{v:.1f}" for v in warm),
             note=note),
        dict(section=sec, row=f"before ({ref}): fit cold / one feature pass",
             median=median(ratios), unit="x", ratio=None, n=len(ratios),
             values=";".join(f"{v:.2f}" for v in ratios),
             note=note + "; divided by the same round's feature pass as the fit above"),
        dict(section=sec, row=f"before ({ref}): accuracy on hymenoptera val", median=accs[0],
             unit="acc", ratio=None, n=len(accs), values=";".join(f"{a:.4f}" for a in accs),
             note=f"{note}; warm-cache hits/misses " + ";".join(f"{h}/{m}" for h, m in hits)),
    ]


def freeze_targets(fz, test) -> str:
    """The three target rows of part 2 (markdown table lines)."""
    speedup_cold = fz["plain"] / fz["cold"]
    acc_pts = 100 * (fz["tk_acc"] - fz["plain_acc"])
    acc_ok = abs(acc_pts) <= 1.0 + 1e-9
    acc_word = ("" if acc_ok or acc_pts < 0 else
                " (outside +-1 point, but in transferkit's favour: no accuracy is lost)")
    return f"""| freeze 10 epochs <= 1.2x one feature pass | cold cache {fz['ratio_cold']:.2f}x ({fz['cold']:.1f} s vs {fz['ref']:.1f} s), {fz['ratio_cold_noexport']:.2f}x leaving out the one-time ONNX export ({fz['export']:.1f} s); warm cache {fz['ratio_warm']:.2f}x | {verdict(fz['ratio_cold'] <= 1.2)} cold, {verdict(fz['ratio_warm'] <= 1.2)} warm |
| freeze 10 epochs >= 8x faster than the plain loop | {speedup_cold:.1f}x cold ({fz['plain']:.0f} s vs {fz['cold']:.1f} s), {fz['plain'] / fz['warm']:.0f}x warm | {verdict(speedup_cold >= 8)} cold, {verdict(fz['plain'] / fz['warm'] >= 8)} warm |
| ... at the same accuracy (+-1 point) on `val` | transferkit {100 * fz['tk_acc']:.2f} %, plain loop {100 * fz['plain_acc']:.2f} % ({acc_pts:+.2f} points; one image is {100 / len(test):.2f} points) | {verdict(acc_ok)}{acc_word} |"""


def freeze_paragraph(args, fz, train, test, everything) -> str:
    """What part 2's rows are (markdown)."""
    return f"""**2 freeze x10** ({args.rounds} rounds; each round: one transferkit feature pass over all
{len(everything)} images, then `transferkit.fit(train, test=val, strategy="freeze",
epochs={args.epochs}, skip_bad=True, cache_dir=<fresh empty dir>, seed=0, quiet=True)` on a cold
cache, in a fresh Python process (transferkit and onnxruntime imported before the clock), so
the graph is exported again as in a new process, then the same call again in that process on
the now warm cache). Times are the total wall time of the call: reading the images,
building the backbone, ONNX export (cold; it runs while the loader's workers decode the first
batches), one feature pass over train / carved val / test together (one loader; `--skip-bad`
finds the unreadable images in that pass: no separate scan), {args.epochs} epochs of head
training, scoring, checkpoints, writing the run folder, report (with the attention maps of the
two worst test images) and bundle. The *cold fit part* rows split the cold fit's time with the timings the run publishes
(`metrics.json` -> `timing`; `ratio` = share of the cold fit), the rest being *everything
else*. {_unpublished_note(fz)} The *plain PyTorch loop* is the seed recipe: frozen backbone (`eval`, `no_grad`)
re-run on every batch of every epoch, head = `Dropout(0.2) + Linear(1280, 2)`, `AdamW(lr=1e-3)`
(torch defaults otherwise), batch {TRAIN_BATCH}, shuffled, {args.epochs} epochs on the same
{len(train)} training images, then accuracy on `val`; its time runs from building the loader to
the end of the test pass (the model is built before). Being costly (about {fz['plain']:.0f} s
here), it ran {fz['plain_runs']}x only, between the fit rounds so that fits bracket it in time.
transferkit's accuracy is that of the epoch it selected on the carved validation split (cosine
schedule, weight decay 1e-4); the plain loop keeps its last epoch; both are single seeded runs,
and on {len(test)} test images one image is {100 / len(test):.2f} points. The ratio rows divide
each round's fit time by that round's feature pass.{_before_note(args)}"""


def _before_note(args) -> str:
    if not args.compare_ref:
        return ""
    return (f" The *before ({args.compare_ref})* rows are the same cold / warm fit pair run with "
            f"the code at `{args.compare_ref}` (its `transferkit/` taken with `git archive`), in "
            "the same rounds as the fits above, each in its own fresh process, the two orders "
            "alternating from round to round, and divided by the same feature pass.")


def _unpublished_note(fz) -> str:
    if not fz["unpublished"]:
        return ""
    return ("Not published by the run, so not split out here: "
            + ", ".join(f"{label.format(epochs=fz['epochs'])} (`timing.{key}`)"
                        for label, key in FIT_PARTS if key in fz["unpublished"])
            + "; `features_computed_s` is the fit's one feature pass over train, carved "
              "validation and test, the ONNX export (`onnx_export_s`, which overlaps the "
              "loader's decoding) left out.")


if __name__ == "__main__":
    main()
