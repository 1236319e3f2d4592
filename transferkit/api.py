"""Python entry points: :func:`fit`, :func:`load`, :class:`TrainedModel`, :class:`TransferClassifier`.

``fit`` reads the data, picks a backbone for its modality when none is named, runs the
strategy through the engine, scores validation (used for every choice) and test (never used
for one), and writes the run folder:

    RUN/run_config.json   everything needed to resume or repeat the run
    RUN/history.csv       one row per epoch
    RUN/metrics.json      {"val": {...}, "test": {...} | null, "best_epoch": .., "timing": {..}, ..}
    RUN/per_class.json, RUN/confusion_<split>.csv/.png, RUN/curves.png, RUN/report.html
    RUN/bundle/           config.json + model.safetensors
"""

from __future__ import annotations

import json
import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .errors import ConfigError, DataError

DEFAULT_BACKBONES = {"image": "efficientnet_lite0", "text": "minilm"}


# --------------------------------------------------------------------------- helpers

def _seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM behaves like Ctrl-C: the run stops and its last checkpoint stays."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _read(path, *, labelled=True, classes=None, columns=None) -> dict:
    from .data import read_data

    return read_data(path, labelled=labelled, classes=classes, **(columns or {}))


def _backbone_kwargs(name: str, modality: str, *, weights=None, image_size=None,
                     max_length=None) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if weights is not None:
        kw["weights"] = str(weights)
    if modality == "image" and image_size is not None:
        kw["image_size"] = int(image_size)
    if modality == "text" and max_length is not None:
        kw["max_length"] = int(max_length)
    return kw


def _check_images(splits: dict, skip_bad: bool, log) -> dict:
    from .data.images import check_image, scan_images

    out = {}
    for name, s in splits.items():
        if s is None or s.modality != "image":
            out[name] = s
            continue
        if skip_bad:
            kept, bad = scan_images(s, skip_bad=True)
            if bad:
                log(f"skipped {len(bad)} unreadable file(s) in {name}:")
                for origin, reason in bad:
                    log(f"  {origin}: {reason}")
            out[name] = kept
        else:
            for item, origin in zip(s.items, s.origins):
                check_image(item, origin)
            out[name] = s
    return out


# --------------------------------------------------------------------------- fit

def fit(data, *, val=None, test=None, backbone: str | None = None, strategy: str = "freeze",
        options: dict[str, Any] | None = None, head: dict[str, Any] | None = None,
        out: str | os.PathLike | None = None, cache_dir: str | None = None,
        no_cache: bool = False, weights: str | None = None, image_size: int | None = None,
        max_length: int | None = None, text_column: str | None = None,
        image_column: str | None = None, label_column: str | None = None,
        val_fraction: float = 0.15, test_fraction: float = 0.15, quiet: bool = False,
        resume: bool = False, target=None, target_labels: int = 0, figures: bool = True,
        domain_column: str | None = None, **train: Any) -> "TrainedModel":
    """Fit ``strategy`` on ``backbone`` to ``data`` and write the run folder ``out``.

    ``data``/``val``/``test`` are paths (image folders, CSV/TSV, text folders, ``.tar.gz``,
    ``.npz``) or :class:`~transferkit.data.Samples`.  ``train`` holds
    :class:`~transferkit.engine.config.TrainConfig` settings (``epochs``, ``lr``,
    ``batch_size``, ``seed``, ``augment``, ``grayscale``, ``select``, ...).

    Domain adaptation: ``data`` is the labelled source (its validation split is carved from
    it); ``target`` is the target domain, whose labels, if it has any, are never used for
    training or selection unless ``target_labels=N`` grants N per class; ``test`` is then the
    target's labelled test split (figures under ``test`` in ``metrics.json``; its accuracy
    after every epoch gives the oracle column, never a choice).  ``figures=False`` leaves out
    the t-SNE picture of a domain run (the proxy A-distance is still measured).

    Domains in one table: with ``domain_column``, ``data`` is one CSV/TSV, ``target`` names
    the target domain (a value of that column) and every other row is the source; without an
    explicit ``test``, a stratified ``test_fraction`` of the target rows is the labelled
    target test split and the rest is the unlabelled target.
    """
    from .backbones import backbone_modality, build_backbone
    from .bundle import save_bundle
    from .console import Reporter
    from .data import Samples, resolve_splits
    from .engine.cache import FeatureCache
    from .engine.config import TrainConfig, resolve_device
    from .engine.trainer import Trainer
    from .heads import HeadConfig, build_model
    from .io import write_json
    from .strategies.base import get_strategy

    rep = Reporter(quiet)
    cfg = TrainConfig.from_dict(train)
    strat = get_strategy(strategy, **(options or {}))
    head_cfg = HeadConfig.from_dict(head or {})
    if head_cfg.kind == "auto" and strat.default_head:
        head_cfg.kind = strat.default_head
    columns = {"text_column": text_column, "image_column": image_column,
               "label_column": label_column}

    # data
    def as_splits(x):
        if x is None:
            return None
        if isinstance(x, Samples):
            return {"all": x}
        if isinstance(x, dict):
            return x
        return _read(x, columns=columns)

    t0 = time.perf_counter()
    domain = None
    given = {"data": data, "target": target, "test": test}  # as the user named them
    if domain_column is not None:
        data, target, test = _split_domains(data, domain_column, target, test, columns,
                                            test_fraction, cfg.seed)
    if target is not None:
        splits = resolve_splits(as_splits(data), val=as_splits(val), test=None,
                                val_fraction=val_fraction, test_fraction=0.0, seed=cfg.seed)
        domain = _target_splits(target, test, splits["train"], target_labels, strat, cfg.seed,
                                as_splits)
        splits["test"] = domain["test"]
        if domain["labelled"] is not None and not strat.needs_target_labels:
            from .data import concat_samples

            splits["train"] = concat_samples([splits["train"], domain["labelled"]])
    else:
        if target_labels:
            raise ConfigError("--target-labels needs a target domain (--target)")
        if getattr(strat, "uses_target", False):
            raise ConfigError(f"strategy {strategy!r} adapts to a target domain: give the "
                              "unlabelled target data (--target)")
        splits = resolve_splits(as_splits(data), val=as_splits(val), test=as_splits(test),
                                val_fraction=val_fraction, test_fraction=test_fraction,
                                seed=cfg.seed)
    modality = splits["train"].modality
    bb_name = backbone or DEFAULT_BACKBONES[modality]
    if backbone_modality(bb_name) not in (modality, "any"):
        raise ConfigError(f"backbone {bb_name!r} takes {backbone_modality(bb_name)} but the data "
                          f"({splits['train'].source}) is {modality}")
    if cfg.grayscale and modality != "image":
        raise ConfigError("--grayscale applies to images only")
    splits = _check_images(splits, cfg.skip_bad, rep.log)
    classes = splits["train"].classes
    rep.log(f"data: {splits['train'].source}: {modality}, {len(classes)} classes; "
            + ", ".join(f"{k} {len(v)}" for k, v in splits.items() if v is not None))
    if domain is not None:
        domain["target"] = _check_images({"t": domain["target"]}, cfg.skip_bad, rep.log)["t"]
        rep.log(f"target: {domain['target'].source}: {len(domain['target'])} unlabelled"
                + (f", {len(domain['labelled'])} labelled for training"
                   if domain["labelled"] is not None else "")
                + (f"; target test {len(domain['test'])}" if domain["test"] is not None else ""))

    run_dir = Path(out) if out else Path("runs") / time.strftime(f"%Y%m%d-%H%M%S-{strategy}")
    run_dir.mkdir(parents=True, exist_ok=True)
    rep.log(f"run folder: {run_dir}")
    run_config = {
        "data": _pathish(given["data"]), "val": _pathish(val), "test": _pathish(given["test"]),
        "backbone": backbone, "strategy": strategy, "options": options or {}, "head": head or {},
        "cache_dir": cache_dir, "no_cache": no_cache, "weights": weights,
        "image_size": image_size, "max_length": max_length, **columns,
        "val_fraction": val_fraction, "test_fraction": test_fraction, "train": cfg.to_dict(),
        "target": _pathish(given["target"]), "target_labels": target_labels,
        "domain_column": domain_column,
    }
    if all(isinstance(v, (str, type(None))) for v in (run_config["data"], run_config["val"],
                                                        run_config["test"], run_config["target"])):
        write_json(run_dir / "run_config.json", run_config)

    _seed_everything(cfg.seed)
    bb = build_backbone(bb_name, **_backbone_kwargs(bb_name, modality, weights=weights,
                                                     image_size=image_size, max_length=max_length))
    rep.log(f"backbone: {bb.describe()}")
    model = build_model(bb, head_cfg, classes)
    device = resolve_device(cfg.device)
    cache = FeatureCache(cache_dir, enabled=not no_cache)
    with rep.progress() as progress:
        trainer = Trainer(model, strat, cfg, run_dir=run_dir, cache=cache, log=rep.log,
                          progress=progress, device=device)
        with _sigterm_as_interrupt():
            if domain is None:
                result = trainer.fit(splits["train"], splits["val"], resume=resume)
            else:
                result = trainer.fit(splits["train"], splits["val"], resume=resume,
                                     target=domain["target"], target_test=domain["test"],
                                     target_labelled=domain["labelled"])
        val_m = trainer.evaluate(splits["val"])
        test_m = trainer.evaluate(splits["test"]) if splits["test"] else None

    timing = dict(result.timing)
    timing["total_s"] = time.perf_counter() - t0
    metrics = _metrics_record(val_m, test_m, result, bb, strat, classes, timing, cache)
    if domain is not None:
        from .report.domain import domain_report

        metrics["selection"] = (f"label-free: {trainer.select} (see domain.selection); target "
                                "labels never used for a choice; test = the target's test split")
        metrics["domain"] = {"target": _pathish(given["target"]) if isinstance(
                                 _pathish(given["target"]), str) else domain["target"].source,
                             "target_labels_per_class": target_labels,
                             "selection": result.selection,
                             **domain_report(trainer, run_dir, log=rep.log, figure=figures)}
    model.eval()
    save_bundle(run_dir / "bundle", model, strat, touched=result.touched, grayscale=cfg.grayscale)
    _write_outputs(run_dir, metrics, val_m, test_m, result.history, classes)
    tm = TrainedModel(model, strat, _bundle_like(model, strat, cfg), run_dir=run_dir, metrics=metrics)
    rep.log(f"val accuracy {val_m['accuracy']:.4f}, macro F1 {val_m['macro_f1']:.4f} "
            f"(best epoch {result.best_epoch})")
    if test_m:
        rep.log(f"test accuracy {test_m['accuracy']:.4f}, macro F1 {test_m['macro_f1']:.4f}")
    rep.log(f"bundle: {run_dir / 'bundle'}   report: {run_dir / 'report.html'}")
    return tm


def _split_domains(data, column: str, target, test, columns, test_fraction: float, seed: int):
    """``(source, target, target_test)`` samples from one table with a domain column."""
    from .data import concat_samples, read_domains, stratified_split

    if not isinstance(data, (str, os.PathLike)):
        raise ConfigError("domain_column needs DATA to be a CSV/TSV path")
    if not target:
        raise ConfigError(f"--domain-column {column}: name the target domain with --target VALUE")
    parts = read_domains(data, column, **columns)
    target = str(target)
    if target not in parts:
        raise DataError(f"{data}: no row has {column} = {target!r} (domains: "
                        f"{', '.join(sorted(parts))})")
    others = [v for k, v in parts.items() if k != target]
    if not others:
        raise DataError(f"{data}: every row is in domain {target!r}; no source rows are left")
    source = concat_samples(others)
    tgt = parts[target]
    if test is None and tgt.labels is not None and test_fraction > 0:
        cut = stratified_split(tgt, {"target": 1 - test_fraction, "test": test_fraction}, seed)
        tgt, test = cut["target"], cut["test"]
    return source, tgt, test


def _target_splits(target, test, source_train, n_labels: int, strat, seed: int, as_splits):
    """The target domain's parts: unlabelled training data, granted labels, labelled test."""
    from .data import concat_samples, k_shot

    classes = source_train.classes
    if isinstance(target, (str, os.PathLike)):
        # labels are only read when some are granted: they cannot leak into training
        parts = _read(target, labelled=bool(n_labels))
    else:
        parts = as_splits(target)
    tgt = concat_samples([v for v in parts.values() if v is not None])
    if tgt.modality != source_train.modality:
        raise DataError(f"{tgt.source}: the target holds {tgt.modality} data but the source "
                        f"holds {source_train.modality} data")
    labelled = None
    if n_labels:
        if int(n_labels) < 0:
            raise ConfigError(f"--target-labels must be >= 0, got {n_labels}")
        if tgt.labels is None:
            raise DataError(f"{tgt.source}: --target-labels {n_labels} needs a labelled target")
        tgt = tgt.with_classes(classes)
        labelled = k_shot(tgt, int(n_labels), seed)
        chosen = set(labelled.origins)
        tgt = tgt.subset([i for i, o in enumerate(tgt.origins) if o not in chosen])
    elif strat.needs_target_labels:
        raise ConfigError(f"strategy {strat.name!r} needs a few labelled target samples: "
                          "pass --target-labels N (N per class)")
    t_test = None
    if test is not None:
        tp = as_splits(test)
        t_test = concat_samples([v for v in tp.values() if v is not None])
        if t_test.labels is None:
            raise DataError(f"{t_test.source}: the target test split needs labels")
        t_test = t_test.with_classes(classes)
    return {"target": tgt, "labelled": labelled, "test": t_test}


def resume(run_dir: str | os.PathLike, *, quiet: bool = False) -> "TrainedModel":
    run_dir = Path(run_dir)
    path = run_dir / "run_config.json"
    if not path.exists():
        raise ConfigError(f"{run_dir}: no run_config.json; not a run folder that can be resumed")
    rc = json.loads(path.read_text())
    train = rc.pop("train")
    return fit(rc.pop("data"), out=run_dir, resume=True, quiet=quiet, **rc, **train)


def _pathish(x):
    if x is None:
        return None
    if isinstance(x, (str, os.PathLike)):
        return str(Path(x).resolve())
    return "<in-memory>"


def _metrics_record(val_m, test_m, result, bb, strat, classes, timing, cache) -> dict[str, Any]:
    from .engine.metrics import summary

    return {
        "val": {k: val_m[k] for k in ("accuracy", "macro_f1", "loss", "n")},
        "test": summary(test_m),
        "best_epoch": result.best_epoch,
        "best_stage": result.best_stage,
        "selection": "validation accuracy, then validation loss; test never used for a choice",
        "timing": {k: round(v, 3) for k, v in timing.items()},
        "feature_cache": {"hits": cache.hits, "misses": cache.misses, "dir": str(cache.dir),
                          "enabled": cache.enabled},
        "trainable_params": result.trainable_params,
        "total_params": result.total_params,
        "backbone": bb.name,
        "backbone_identity": bb.identity(),
        "strategy": strat.name,
        "strategy_options": strat.options.to_dict(),
        "closed_form": result.closed_form,
        "classes": classes,
    }


def _write_outputs(run_dir: Path, metrics, val_m, test_m, history, classes) -> None:
    from .io import write_json, write_text
    from .report.plots import plot_confusion, plot_history, write_report

    write_json(run_dir / "metrics.json", metrics)
    per_class = {"val": val_m["per_class"], "test": test_m["per_class"] if test_m else None}
    write_json(run_dir / "per_class.json", per_class)
    images = []
    if plot_history(history, run_dir / "curves.png"):
        images.append("curves.png")
    for split, m in (("val", val_m), ("test", test_m)):
        if not m:
            continue
        lines = ["true\\pred," + ",".join(_csv(c) for c in classes)]
        lines += [_csv(c) + "," + ",".join(str(v) for v in row) for c, row in zip(classes, m["confusion"])]
        write_text(run_dir / f"confusion_{split}.csv", "\n".join(lines) + "\n")
        plot_confusion(m["confusion"], classes, run_dir / f"confusion_{split}.png",
                       f"confusion ({split})")
        images.append(f"confusion_{split}.png")
    write_report(run_dir, metrics, {k: v for k, v in per_class.items() if v}, images)


def _csv(s: str) -> str:
    return '"' + s.replace('"', '""') + '"' if ("," in s or '"' in s) else s


def _bundle_like(model, strat, cfg) -> dict[str, Any]:
    return {"grayscale": cfg.grayscale, "classes": list(model.classes),
            "modality": model.backbone.modality}


# --------------------------------------------------------------------------- trained model

class TrainedModel:
    """A fitted model: ``predict``, ``predict_proba``, ``evaluate``, ``save``."""

    def __init__(self, model, strategy, config: dict[str, Any], *, run_dir: Path | None = None,
                 metrics: dict[str, Any] | None = None):
        self.model = model
        self.strategy = strategy
        self.config = config
        self.run_dir = run_dir
        self.metrics = metrics
        self.classes: list[str] = list(model.classes)
        self.modality: str = model.backbone.modality
        self._touched = [n for n in model.state_dict()]  # refined by load()/fit()
        if run_dir is not None and (run_dir / "bundle" / "config.json").exists():
            self._touched = json.loads((run_dir / "bundle" / "config.json").read_text())["tensors"]

    # inputs -----------------------------------------------------------------
    def _samples(self, inputs, *, labelled: bool = False):
        from .data import Samples

        if isinstance(inputs, Samples):
            return inputs
        if isinstance(inputs, (str, os.PathLike)):
            splits = _read(inputs, labelled=labelled, classes=self.classes if labelled else None)
            if len(splits) == 1:
                s = next(iter(splits.values()))
            else:
                from .data.splits import concat_samples
                s = concat_samples(list(splits.values()))
            if s.modality != self.modality:
                raise DataError(f"{inputs}: holds {s.modality} data but this model takes {self.modality}")
            return s
        return samples_from_list(list(inputs), self.modality, self.classes)

    def predict_proba(self, inputs) -> np.ndarray:
        from .engine.metrics import softmax

        return softmax(self.logits(inputs).astype(np.float64))

    def logits(self, inputs) -> np.ndarray:
        from .engine.config import TrainConfig
        from .engine.inputs import InputPipeline

        s = self._samples(inputs)
        pipe = InputPipeline(self.model.backbone, grayscale=self.config.get("grayscale", False))
        self.model.eval()
        out = np.zeros((len(s), len(self.classes)), dtype=np.float32)
        with torch.inference_mode():
            for b in pipe.batches(s, batch_size=TrainConfig.eval_batch_size):
                out[b.indices.numpy()] = self.model(b.inputs).float().numpy()
        return out

    def predict(self, inputs) -> list[str]:
        return [self.classes[i] for i in self.logits(inputs).argmax(1)]

    def evaluate(self, data) -> dict[str, Any]:
        from .engine.metrics import classification_metrics

        s = self._samples(data, labelled=True)
        if s.labels is None:
            raise DataError(f"{getattr(s, 'source', data)}: no labels to evaluate against")
        s = s.with_classes(self.classes) if list(s.classes) != self.classes else s
        return classification_metrics(self.logits(s), s.labels, self.classes)

    def save(self, path) -> Path:
        from .bundle import save_bundle

        return save_bundle(path, self.model, self.strategy, touched=self._touched,
                           grayscale=self.config.get("grayscale", False))


def samples_from_list(items: list, modality: str, classes: list[str], labels=None):
    from .data import Samples

    origins = []
    for i, it in enumerate(items):
        if isinstance(it, (str, os.PathLike)) and modality == "image":
            origins.append(str(it))
        else:
            origins.append(f"input {i}")
    if modality == "image":
        items = [str(it) if isinstance(it, os.PathLike) else it for it in items]
    return Samples(modality=modality, items=items,
                   labels=None if labels is None else np.asarray(labels, dtype=np.int64),
                   classes=list(classes), origins=origins, source="<inputs>")


def load(path) -> TrainedModel:
    """Load a bundle folder written by :func:`fit` or :meth:`TrainedModel.save`."""
    from .bundle import load_model

    model, strategy, cfg = load_model(path)
    tm = TrainedModel(model, strategy, cfg)
    tm._touched = cfg["tensors"]
    return tm


# --------------------------------------------------------------------------- scikit-learn

def _guess_modality(X: Sequence) -> str:
    from .data.readers import IMAGE_EXTENSIONS

    first = X[0]
    if isinstance(first, np.ndarray):
        return "image"
    if isinstance(first, (str, os.PathLike)) and Path(str(first)).suffix.lower() in IMAGE_EXTENSIONS \
            and Path(str(first)).exists():
        return "image"
    return "text"


try:
    from sklearn.base import BaseEstimator, ClassifierMixin
except ImportError:  # pragma: no cover
    BaseEstimator, ClassifierMixin = object, object


class TransferClassifier(ClassifierMixin, BaseEstimator):
    """A scikit-learn estimator over any backbone and strategy.

    ``X`` is a sequence of image paths, image arrays or texts; ``y`` any labels.  Works in
    ``Pipeline``, ``GridSearchCV`` and ``cross_val_score``.  A validation split for the
    engine's epoch selection is carved from the training data (``val_fraction``).
    """

    def __init__(self, backbone: str | None = None, strategy: str = "freeze", epochs: int = 10,
                 lr: float | None = None, batch_size: int = 32, seed: int = 0,
                 options: dict | None = None, head: dict | None = None, image_size: int | None = None,
                 val_fraction: float = 0.15, cache_dir: str | None = None, out: str | None = None,
                 quiet: bool = True):
        self.backbone = backbone
        self.strategy = strategy
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.seed = seed
        self.options = options
        self.head = head
        self.image_size = image_size
        self.val_fraction = val_fraction
        self.cache_dir = cache_dir
        self.out = out
        self.quiet = quiet

    def fit(self, X, y):
        import tempfile

        X = list(X)
        y = np.asarray(y)
        if len(X) != len(y):
            raise ConfigError(f"X has {len(X)} samples but y has {len(y)}")
        self.classes_ = np.unique(y)
        names = [str(c) for c in self.classes_]
        if len(set(names)) != len(names):
            raise ConfigError("labels must stay distinct when written as text")
        index = {c: i for i, c in enumerate(self.classes_.tolist())}
        yi = np.array([index[v] for v in y.tolist()], dtype=np.int64)
        modality = _guess_modality(X)
        s = samples_from_list(X, modality, names, yi)
        s.origins = [f"X[{i}]" for i in range(len(X))]
        out = self.out or tempfile.mkdtemp(prefix="transferkit-")
        self.model_ = fit(s, backbone=self.backbone, strategy=self.strategy, options=self.options,
                          head=self.head, out=out, cache_dir=self.cache_dir, image_size=self.image_size,
                          val_fraction=self.val_fraction, test_fraction=0.0, quiet=self.quiet,
                          epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, seed=self.seed)
        return self

    def _items(self, X):
        X = list(X)
        return samples_from_list(X, self.model_.modality, self.model_.classes)

    def predict_proba(self, X) -> np.ndarray:
        return self.model_.predict_proba(self._items(X))

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(1)]
