"""A detection run from data to bundle, and the trained detector.

:func:`fit_detection` is what ``transferkit.fit(..., task="detection")`` runs, step by step:
read the splits (COCO or YOLO; a seeded split when no validation / test data is given) →
decode every image once at the head's square size → backbone + detection head → the
strategy's stages through the engine (:class:`~.trainer.DetectionTrainer`: validation mAP
chooses the epoch; test is never used for a choice) → the run folder:

    RUN/run_config.json   every setting (written when training starts)
    RUN/history.csv       one row per epoch (val_map50, val_map)
    RUN/metrics.json      {"val": {"map50", "map", "map75", "mar100", "n", "boxes"}, "test": {...} | null,
                          "per_class": {...}, "best_epoch", "timing", ...}
    RUN/per_class.json    AP and AP50 per class, val and test
    RUN/examples/         the first validation images, predicted (red) and true (green) boxes
    RUN/report.html       the run's page (written by the caller: see transferkit.api.fit)
    RUN/bundle/           config.json (task: detection) + model.safetensors
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..backbones import build_backbone
from ..bundle import load_model, save_bundle
from ..console import Reporter
from ..data.detection import (DetectionSamples, load_images, read_detection, scaled_boxes,
                              split_detection)
from ..data.images import open_image
from ..data.readers import IMAGE_EXTENSIONS
from ..engine.config import resolve_device
from ..engine.runfolder import RunFolder, check_run_folder
from ..errors import ConfigError, DataError
from ..io import write_json
from ..strategies.base import get_strategy
from .metrics import summary
from .model import DetectionHeadConfig, build_detector, normalise
from .trainer import DetectionTrainer, ImageSet, to_original

DEFAULT_BACKBONE = "efficientnet_lite0"
#: validation images drawn with their predicted and true boxes in ``RUN/examples/``
EXAMPLES = 6


# --------------------------------------------------------------------------- data

def read_splits(cfg, log) -> dict[str, DetectionSamples | None]:
    """train / val / test of a detection run: as given, else carved from DATA (seeded)."""
    d, skip = cfg.data, cfg.train.skip_bad
    given = read_detection(d.path, skip_bad=skip)
    val = _one(read_detection(d.val, skip_bad=skip), d.val) if d.val else given.get("val")
    test = _one(read_detection(d.test, skip_bad=skip), d.test) if d.test else given.get("test")
    train = given.get("train", given.get("all"))
    fractions = {"train": 1.0}
    if val is None:
        fractions["val"] = d.val_fraction
    if test is None and d.test_fraction > 0:
        fractions["test"] = d.test_fraction
    if len(fractions) > 1:
        parts = split_detection(train, fractions, cfg.train.seed)
        train, val, test = parts["train"], parts.get("val", val), parts.get("test", test)
    for s in (val, test):
        if s is not None and s.classes != train.classes:
            raise DataError(f"{s.source}: its classes ({', '.join(s.classes)}) differ from "
                            f"the training data's ({', '.join(train.classes)})")
    splits = {"train": train, "val": val, "test": test}
    for s in splits.values():
        for note in (s.notes if s is not None else []):
            log(note)
    log(f"data: {train.source}: detection, {len(train.classes)} classes; "
        + ", ".join(f"{k} {len(v)} images / {v.n_boxes} boxes"
                    for k, v in splits.items() if v is not None))
    return splits


def _one(splits: dict[str, DetectionSamples], path) -> DetectionSamples:
    if len(splits) != 1:
        raise DataError(f"{path}: holds splits ({', '.join(splits)}); give one split here")
    return next(iter(splits.values()))


def image_sets(splits, size: int, skip_bad: bool, log,
               grayscale: bool = False) -> dict[str, ImageSet | None]:
    """Every split's images decoded and resized once (``grayscale``: one channel, fed as
    three)."""
    out: dict[str, ImageSet | None] = {}
    for name, s in splits.items():
        if s is None:
            out[name] = None
            continue
        s, images = load_images(s, size, skip_bad=skip_bad, grayscale=grayscale, log=log)
        if not len(s):
            raise DataError(f"{s.source}: no readable image left in the {name} split")
        out[name] = ImageSet(s, images, scaled_boxes(s, size))
    return out


# --------------------------------------------------------------------------- fit

def check_detection_settings(cfg) -> None:
    """Refuse the settings a detection run does not take, naming them."""
    refused = [(cfg.domain.target is not None, "--target"), (cfg.data.shots is not None, "--shots"),
               (cfg.train.processes > 1, "--processes"), (cfg.head.kind != "auto", "--head")]
    bad = [flag for on, flag in refused if on]
    if bad:
        raise ConfigError(f"--task detection does not take {', '.join(bad)}")
    if not isinstance(cfg.data.path, (str, os.PathLike)):
        raise ConfigError("--task detection reads DATA from a path (COCO .json or YOLO folder)")


def detection_strategy(cfg, log) -> str:
    """The strategy's name; ``auto`` (the default) trains the head on the frozen backbone,
    the best of the measured settings within a CPU budget (benchmarks/results/
    detection_digits.md)."""
    if cfg.strategy.name != "auto":
        return cfg.strategy.name
    log("auto: detection trains its head on the frozen backbone (freeze, the best measured "
        "within a CPU budget); --strategy finetune adapts the backbone too")
    return "freeze"


def fit_detection(cfg, *, resume: bool = False, record: dict | None = None) -> "TrainedDetector":
    """Fit a detector (see the module's notes); ``record`` is written as
    ``run_config.json`` when training starts."""
    check_detection_settings(cfg)
    if cfg.run.out is not None:
        check_run_folder(cfg.run.out, resume=resume, overwrite=cfg.run.overwrite)
    rep = Reporter(cfg.run.quiet)
    t0 = time.perf_counter()
    strat = get_strategy(detection_strategy(cfg, rep.log), **cfg.strategy.options)
    head_cfg = DetectionHeadConfig(**cfg.detection.to_dict(),
                                   image_size=cfg.backbone.image_size or 128).validate()
    splits = read_splits(cfg, rep.log)
    t_read = time.perf_counter()
    sets = image_sets(splits, head_cfg.image_size, cfg.train.skip_bad, rep.log,
                      cfg.train.grayscale)
    timing = {"read_s": t_read - t0, "decode_s": time.perf_counter() - t_read}
    torch.manual_seed(cfg.train.seed)
    bb = build_backbone(cfg.backbone.name or DEFAULT_BACKBONE,
                        **({"weights": str(cfg.backbone.weights)} if cfg.backbone.weights else {}))
    rep.log(f"backbone: {bb.describe()}; detection head: FCOS over the last "
            f"{head_cfg.levels} stages at {head_cfg.image_size} px, {head_cfg.width} channels, "
            f"{head_cfg.convs} convs per branch")
    model = build_detector(bb, head_cfg, sets["train"].samples.classes)
    run_dir = Path(cfg.run.out) if cfg.run.out else Path("runs") / time.strftime(
        f"%Y%m%d-%H%M%S-detection-{strat.name}")
    if not resume:
        check_run_folder(run_dir, overwrite=cfg.run.overwrite)
    folder = RunFolder(run_dir, record and _with_out(record, run_dir), resume=resume,
                       overwrite=cfg.run.overwrite)
    with rep.progress() as progress:
        trainer = DetectionTrainer(model, strat, cfg.train, run_dir=run_dir, log=rep.log,
                                   progress=progress, device=resolve_device(cfg.train.device))
        result = trainer.fit(sets["train"], sets["val"], resume=resume, callbacks=[folder])
        val_m = trainer.evaluate(sets["val"])
        test_m = trainer.evaluate(sets["test"]) if sets["test"] is not None else None
    timing.update(result.timing)
    timing["total_s"] = time.perf_counter() - t0
    model.grayscale = cfg.train.grayscale
    tm = write_detection_run(run_dir, model, strat, result, val_m, test_m, timing, rep.log)
    tm.examples = [p.relative_to(run_dir).as_posix() for p in
                   draw_examples(tm, sets["val"].samples, run_dir / "examples")]
    return tm


def _with_out(record: dict, run_dir: Path) -> dict:
    rec = json.loads(json.dumps(record))
    rec.setdefault("run", {})["out"] = str(run_dir)
    return rec


def write_detection_run(run_dir: Path, model, strat, result, val_m, test_m, timing,
                        log) -> "TrainedDetector":
    """``metrics.json``, ``per_class.json`` and the bundle; the figures logged."""
    metrics = {
        "task": "detection",
        "val": summary(val_m), "test": summary(test_m),
        "per_class": {"val": val_m["per_class"], "test": test_m["per_class"] if test_m else None},
        "best_epoch": result.best_epoch, "best_stage": result.best_stage,
        "selection": "validation mAP@0.5, then mAP@[0.5:0.95]; test never used for a choice",
        "metric": "COCO box AP (pycocotools COCOeval): map = AP@[0.5:0.95], map50 = AP@0.5",
        "timing": {k: round(float(v), 3) for k, v in timing.items()},
        "trainable_params": result.trainable_params, "total_params": result.total_params,
        "backbone": model.backbone.name, "backbone_identity": model.backbone.identity(),
        "strategy": strat.name, "strategy_options": strat.options.to_dict(),
        "head": model.head.cfg.to_dict(), "classes": list(model.classes),
    }
    model.eval()
    save_bundle(run_dir / "bundle", model, strat, touched=result.touched,
                grayscale=model.grayscale, extra={"task": "detection"})
    write_json(run_dir / "metrics.json", metrics)
    write_json(run_dir / "per_class.json", metrics["per_class"])
    log(f"val mAP50 {val_m['map50']:.4f}, mAP {val_m['map']:.4f} (best epoch {result.best_epoch})")
    if test_m:
        log(f"test mAP50 {test_m['map50']:.4f}, mAP {test_m['map']:.4f}")
    log(f"bundle: {run_dir / 'bundle'}   report: {run_dir / 'report.html'}")
    tm = TrainedDetector(model, strat, run_dir=run_dir, metrics=metrics)
    tm.history = list(result.history)
    return tm


# --------------------------------------------------------------------------- trained model

class TrainedDetector:
    """A fitted detector: ``predict`` (boxes per image), ``evaluate`` (COCO mAP), ``save``."""

    task = "detection"
    modality = "image"

    def __init__(self, model, strategy, *, run_dir: Path | None = None,
                 metrics: dict[str, Any] | None = None, touched: list[str] | None = None):
        self.model, self.strategy = model, strategy
        self.run_dir, self.metrics = run_dir, metrics
        self.classes = list(model.classes)
        #: a fit's epochs (``history.csv``) and its drawn validation images (run-folder paths)
        self.history: list[dict[str, Any]] = []
        self.examples: list[str] = []
        self._touched = touched or [n for n in model.state_dict()]
        if run_dir is not None and (run_dir / "bundle" / "config.json").exists():
            self._touched = json.loads((run_dir / "bundle" / "config.json").read_text())["tensors"]

    @torch.inference_mode()
    def predict(self, items: list, origins: list[str] | None = None) -> list[dict[str, Any]]:
        """Per image (a path or a uint8 array): ``boxes`` ``(n, 4)`` x0 y0 x1 y1 in the
        image's pixels, ``scores``, ``labels`` (class names), best score first."""
        origins = origins or [str(x) if isinstance(x, (str, os.PathLike)) else f"input {i}"
                              for i, x in enumerate(items)]
        size, out = self.model.head.cfg.image_size, []
        self.model.eval()
        for start in range(0, len(items), 32):
            batch = [open_image(x, o, grayscale=self.model.grayscale)
                     for x, o in zip(items[start:start + 32], origins[start:start + 32])]
            arr = np.stack([np.asarray(im.resize((size, size)) if im.size != (size, size)
                                       else im, np.uint8) for im in batch])
            x = normalise(torch.from_numpy(arr), self.model.backbone.preprocess)
            for im, d in zip(batch, self.model(x)):
                d = to_original(d, im.size, size)
                out.append({"boxes": d["boxes"], "scores": d["scores"],
                            "labels": [self.classes[int(k)] for k in d["labels"]]})
        return out

    def evaluate(self, data) -> dict[str, Any]:
        """COCO mAP on labelled detection data (a COCO .json, a YOLO folder, or samples)."""
        from .metrics import detection_metrics

        s = data if isinstance(data, DetectionSamples) else _concat(read_detection(data))
        if s.classes != self.classes:
            raise DataError(f"{s.source}: its classes ({', '.join(s.classes)}) differ from the "
                            f"model's ({', '.join(self.classes)})")
        preds = self.predict(s.items, s.origins)
        index = {c: i for i, c in enumerate(self.classes)}
        preds = [{"boxes": p["boxes"], "scores": p["scores"],
                  "labels": np.array([index[c] for c in p["labels"]], np.int64)} for p in preds]
        return detection_metrics(preds, list(zip(s.boxes, s.labels)), s.sizes, s.classes)

    @property
    def touched(self) -> list[str]:
        """The names of the tensors training changed (what the bundle stores)."""
        return list(self._touched)

    def save(self, path) -> Path:
        return save_bundle(path, self.model, self.strategy, touched=self._touched,
                           grayscale=self.model.grayscale, extra={"task": "detection"})


def _concat(splits: dict[str, DetectionSamples]) -> DetectionSamples:
    parts = list(splits.values())
    first = parts[0]
    out = DetectionSamples([], [], [], [], list(first.classes), [], first.source)
    for p in parts:
        out.items += p.items
        out.boxes += p.boxes
        out.labels += p.labels
        out.sizes += p.sizes
        out.origins += p.origins
    return out


def _build(backbone, cfg: dict[str, Any]):
    return build_detector(backbone, DetectionHeadConfig.from_dict(cfg["head"]), cfg["classes"])


def load_detector(path) -> TrainedDetector:
    """A detector bundle written by :func:`fit_detection` or :meth:`TrainedDetector.save`."""
    model, strategy, cfg = load_model(path, task="detection", build=_build)
    model.grayscale = bool(cfg.get("grayscale", False))
    return TrainedDetector(model, strategy, touched=cfg["tensors"])


def image_inputs(paths: list[str]) -> tuple[list[str], list[str]]:
    """Image files from files and folders (a folder: its images, sorted; not recursive)."""
    items = []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(os.path.join(p, n) for n in os.listdir(p)
                           if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS)
            if not found:
                raise DataError(f"{p}: no images in this folder")
            items += found
        elif os.path.exists(p):
            items.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    return items, list(items)


def drawn(image, pred: dict[str, Any], min_score: float, truth: tuple | None = None):
    """``image`` (a PIL image, changed in place and returned) with the predicted boxes
    (score >= ``min_score``, red, with label and score) and, when ``truth`` ``(boxes,
    labels)`` is given, the true boxes (green, label below the box)."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(image)
    if truth is not None:
        for box, label in zip(*truth):
            draw.rectangle([float(v) for v in box], outline=(40, 220, 60), width=1)
            draw.text((float(box[0]) + 1, float(box[3]) + 1), str(label), fill=(40, 220, 60))
    for box, score, label in zip(pred["boxes"], pred["scores"], pred["labels"]):
        if score < min_score:
            continue
        draw.rectangle([float(v) for v in box], outline=(255, 40, 40), width=2)
        draw.text((float(box[0]) + 2, float(box[1]) + 1), f"{label} {score:.2f}", fill=(255, 255, 0))
    return image


def draw_boxes(item: str, pred: dict[str, Any], out_dir: Path, min_score: float) -> Path:
    """The image with its boxes (score >= ``min_score``) and labels, as ``out_dir/<name>.png``."""
    image = drawn(open_image(item, item), pred, min_score)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / (Path(item).stem + ".png")
    image.save(target)
    return target


def draw_examples(detector: "TrainedDetector", samples: DetectionSamples, out_dir: Path,
                  n: int = EXAMPLES, min_score: float = 0.3, size: int = 256) -> list[Path]:
    """The first ``n`` images of ``samples`` with predicted (red) and true (green) boxes,
    each scaled so that its longer side is ``size`` pixels, as ``out_dir/<k>_<name>.png``."""
    picked = list(range(min(n, len(samples))))
    preds = detector.predict([samples.items[i] for i in picked],
                             [samples.origins[i] for i in picked])
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for k, (i, p) in enumerate(zip(picked, preds)):
        image = open_image(samples.items[i], samples.origins[i])
        scale = size / max(image.size)
        image = image.resize((round(image.size[0] * scale), round(image.size[1] * scale)))
        truth = (np.asarray(samples.boxes[i], np.float64).reshape(-1, 4) * scale,
                 [samples.classes[int(c)] for c in samples.labels[i]])
        p = dict(p, boxes=np.asarray(p["boxes"]).reshape(-1, 4) * scale)
        target = out_dir / f"{k:02d}_{Path(str(samples.origins[i])).stem}.png"
        drawn(image, p, min_score, truth).save(target)
        written.append(target)
    return written
