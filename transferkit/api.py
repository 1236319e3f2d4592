"""Python entry points: :func:`fit`, :func:`load`, :class:`TrainedModel`, :class:`TransferClassifier`.

``fit`` is orchestration, one named step each: :func:`configure` (every setting through one
:class:`~transferkit.config.RunConfig`) → :func:`read_run_data` (splits, target domain, image
checks) → :func:`start_run` (the run folder's name; the folder and ``run_config.json`` are
written when training starts) → :func:`build_run_model`
(backbone + head) → :func:`train_and_score` (the engine; validation is used for every choice,
test never) → :func:`write_run`:

    RUN/run_config.json   every setting, versioned: enough to resume or repeat the run
    RUN/history.csv       one row per epoch
    RUN/metrics.json      {"val": {...}, "test": {...} | null, "best_epoch": .., "timing": {..}, ..}
    RUN/per_class.json, RUN/confusion_<split>.csv/.png, RUN/curves.png, RUN/report.html
    RUN/bundle/           config.json + model.safetensors
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import shutil
import signal
import tempfile
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from .backbones import backbone_modality, build_backbone
from .several import Several, several_splits
from .auto import choose, fixed_choice, is_auto
from .bundle import bundle_task, load_model, read_config, save_bundle
from .config import FLAT, RunConfig, SECTIONS
from .console import Reporter
from .data.descriptions import class_texts, parse_class_names
from .data import (Samples, concat_samples, few_shot_splits, k_shot, read_data, read_domains,
                   read_inputs, resolve_splits, stratified_split)
from .data.images import check_split_images, drop_bad_images, open_image
from .data.readers import IMAGE_EXTENSIONS
from .engine.cache import FeatureCache
from .engine.config import TrainConfig, resolve_device
from .engine.distributed import Processes, launched_world_size
from .engine.inputs import InputPipeline
from .engine.runfolder import RunFolder, check_run_folder
from .engine.metrics import classification_metrics, softmax, summary
from .engine.tasks import blocks
from .engine.trainer import Trainer, intra_op_threads
from .detection.run import TrainedDetector, fit_detection, load_detector
from .errors import ConfigError, DataError, Terminated, TransferkitError
from .heads import build_model
from .io import write_json, write_text
from .report.detection import write_detection_report
from .report.domain import domain_report
from .report.explain import EXPLAINED_FAMILIES, explain
from .report.page import (TEXT_CHARS, Example, ReportContent, parameter_summary, thumbnail_png,
                          write_report)
from .report.plots import plot_confusion, plot_history
from .settings import type_hints
from .strategies.base import get_strategy

DEFAULT_BACKBONES = {"image": "efficientnet_lite0", "text": "minilm"}
#: how many of the validation and of the test samples the model got most wrong the report shows
WORST_EXAMPLES = 8


# --------------------------------------------------------------------------- helpers

def _seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@contextmanager
def sigterm_as_interrupt():
    """SIGTERM behaves like Ctrl-C within the block: the run stops and its last checkpoint
    stays (:class:`~transferkit.errors.Terminated` is a KeyboardInterrupt, so the exit code
    can still say which signal it was).  A no-op outside the main thread."""
    def handler(signum, frame):
        raise Terminated
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
    return read_data(path, labelled=labelled, classes=classes, **(columns or {}))


def _backbone_kwargs(cfg: RunConfig, name: str, modality: str) -> dict[str, Any]:
    b = cfg.backbone
    kw: dict[str, Any] = {}
    if b.weights is not None:
        kw["weights"] = str(b.weights)
    if modality == "image" and b.image_size is not None:
        kw["image_size"] = int(b.image_size)
    if modality == "text" and b.max_length is not None:
        kw["max_length"] = int(b.max_length)
    return kw


def _columns(cfg: RunConfig) -> dict[str, str | None]:
    d = cfg.data
    return {"text_column": d.text_column, "image_column": d.image_column,
            "label_column": d.label_column}


# --------------------------------------------------------------------------- fit

def fit(data=None, *, config: RunConfig | None = None, resume: bool = False,
        **settings: Any) -> "TrainedModel":
    """Fit a strategy on a backbone to ``data`` and write the run folder.

    ``data``/``val``/``test`` are paths (image folders, CSV/TSV, text folders, ``.tar.gz``,
    ``.npz``) or :class:`~transferkit.data.Samples`.  Settings are the fields of
    :class:`~transferkit.config.RunConfig`, given as ``config=RunConfig(...)`` and/or as
    keywords by their flat names (``backbone=``, ``strategy=``, ``options=``, ``head=``,
    ``epochs=``, ``lr=``, ``batch_size=``, ``seed=``, ``augment=``, ``out=``, ``quiet=``,
    ...; keywords win).  An unknown keyword is refused, naming the valid ones.

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

    Several data sets: ``data=[A, B, ...]`` of one label space are merged (``merge="strict"``
    refuses label sets that differ, ``"union"`` joins them; ``metrics["sources"]`` scores each
    set); with ``domain_specific="norm"|"adapter"`` each set is an input domain with its own
    part of the model (weight sharing; ``predict(..., domain=NAME)``).  Several tasks:
    ``tasks={"sst2": A, "sst5": B}`` (paths or split dicts) or ``label_column="a,b"``: one
    backbone, one head per task (``task_weight``, ``task_sampling``); ``metrics["tasks"]``
    scores each task, ``val`` / ``test`` average them, and ``predict`` gives ``{task:
    label}`` per input.

    ``resume=True`` finishes an interrupted run in ``out`` from its last checkpoint.

    ``task="detection"``: ``data`` is a COCO ``.json`` or a YOLO folder and the run trains a
    detector (:func:`transferkit.detection.run.fit_detection`; returns a
    :class:`~transferkit.detection.run.TrainedDetector`).
    """
    cfg = configure(data, config, settings)
    if cfg.data.task == "detection":
        record = None if cfg.in_memory() else recorded_config(cfg, Path(".")).to_dict()
        return write_detection_page(fit_detection(cfg, resume=resume, record=record))
    if cfg.run.out is not None:  # before anything is read: it only looks
        check_run_folder(cfg.run.out, resume=resume, overwrite=cfg.run.overwrite)
    procs = start_processes(cfg)
    rep = Reporter(cfg.run.quiet or not procs.is_main)
    if procs.world > 1:
        rep.log(f"processes: {procs.world}, data-parallel ({procs.describe()})")
    t0 = time.perf_counter()
    strat, head_cfg = build_strategy(cfg)
    if cfg.data.path is None and not cfg.data.tasks:
        return fit_from_names(cfg, strat, head_cfg, procs, rep.log)
    run_data = read_run_data(cfg, strat, rep.log,
                             defer_check=not is_auto(cfg) and procs.world == 1)
    cfg, auto = choose_for_auto(cfg, run_data, rep.log)
    strat, head_cfg = build_strategy(cfg)
    give_class_texts(cfg, strat, run_data.classes)
    run_dir = start_run(cfg, procs, resume=resume)
    auto = auto or read_auto_record(run_dir, resume)
    phases: dict[str, float] = {}
    held: list[str] = []  # logged once the images are checked, as they would have been before
    try:
        with _timed(phases, "backbone_s"):
            model, bb = build_run_model(cfg, head_cfg, run_data,
                                        held.append if run_data.unchecked else rep.log)
        outcome = train_and_score(cfg, model, strat, run_data, run_dir, rep, procs,
                                  resume=resume, files={"auto.json": auto} if auto else None,
                                  held=held)
    finally:
        for line in held:
            rep.log(line)
    outcome.auto = auto
    outcome.timing.update(phases, scan_s=run_data.scan_s)
    outcome.timing["total_s"] = time.perf_counter() - t0
    if not procs.is_main:  # the main process alone writes the run
        return TrainedModel(model, strat, _bundle_like(model, strat, cfg.train), run_dir=None)
    return write_run(cfg, model, bb, strat, run_data, run_dir, outcome, rep.log)


def start_processes(cfg: RunConfig):
    """This process's place in a data-parallel run: ``--processes N`` needs the N processes
    started by a launcher (the command line relaunches itself through ``accelerate launch``;
    ``accelerate launch -m transferkit fit ...`` works too)."""
    world, asked = launched_world_size(), cfg.train.processes
    if asked > 1 and world == 1:
        raise ConfigError(f"--processes {asked}: start the run from the command line "
                          "(transferkit fit ... --processes N) or with accelerate launch")
    if asked > 1 and world != asked:
        raise ConfigError(f"--processes {asked} but the launcher started {world} processes")
    return Processes(cfg.train.device)


def configure(data=None, config: RunConfig | None = None,
              settings: dict[str, Any] | None = None) -> RunConfig:
    """The run's configuration: ``config`` (or the defaults), then ``settings`` by flat or
    section names, then ``data`` (a path, :class:`Samples` or a dict of splits)."""
    if config is not None and not isinstance(config, RunConfig):
        raise ConfigError(f"config must be a RunConfig, got {type(config).__name__}")
    cfg = (config or RunConfig()).updated(settings or {}, where="fit")
    if data is not None:
        cfg = cfg.updated({"data": {"path": data}}, where="fit")
    if cfg.data.path is None and not cfg.data.tasks and needs_data(cfg):
        raise ConfigError("fit needs DATA (a folder, CSV/TSV, .tar.gz or .npz)")
    return cfg


def needs_data(cfg: RunConfig) -> bool:
    """Whether the strategy learns from data (``auto`` does; ``zeroshot`` needs class names
    only)."""
    return is_auto(cfg) or get_strategy(cfg.strategy.name, **cfg.strategy.options).needs_data


def choose_for_auto(cfg: RunConfig, run_data: "RunData", log) -> tuple[RunConfig, dict | None]:
    """``--strategy auto``: the configuration it chose and how (else ``cfg`` and None)."""
    if not is_auto(cfg):
        return cfg, None
    fixed = fixed_choice(cfg, cfg.backbone.name or DEFAULT_BACKBONES[run_data.modality],
                         several=run_data.several is not None,
                         shots_only=bool(cfg.data.shots) and run_data.val_is_train, log=log)
    if fixed is not None:
        return fixed
    return choose(cfg, run_data.splits, run_data.modality,
                  lambda name: _backbone_kwargs(cfg, name, run_data.modality), log)


def read_auto_record(run_dir: Path, resume: bool) -> dict | None:
    """How a resumed ``auto`` run chose (its ``auto.json``), else None."""
    path = Path(run_dir) / "auto.json"
    return json.loads(path.read_text()) if resume and path.is_file() else None


def build_strategy(cfg: RunConfig):
    """The strategy with its options, and the head settings (the strategy's default head
    when the head is left on ``auto``).  ``auto`` reads the data as ``linear`` does until it
    has chosen."""
    name, options = cfg.strategy.name, cfg.strategy.options
    if is_auto(cfg):
        if options:
            raise ConfigError(f"-o {', '.join(options)}: --strategy auto takes no -o options "
                              "(it chooses them); name a strategy to set its options")
        d = cfg.data
        if d.classes is not None or d.descriptions is not None:
            flag = "--classes" if d.classes is not None else "--descriptions"
            raise ConfigError(f"{flag}: strategy 'auto' (the default) does not read class "
                              "names or descriptions; name --strategy zeroshot or tip")
        name = "linear"
    strat = get_strategy(name, **options)
    head_cfg = cfg.head
    if head_cfg.kind == "auto" and strat.default_head:
        head_cfg = dataclasses.replace(head_cfg, kind=strat.default_head)
    return strat, head_cfg


def give_class_texts(cfg: RunConfig, strat, data_classes: list[str] | None = None):
    """Hand a strategy that reads them the class names and descriptions (``--classes``,
    ``--descriptions``; with data, its label names are the classes); refuse them for any
    other strategy.  Returns the classes."""
    d = cfg.data
    if not strat.uses_class_texts:
        if d.classes is not None or d.descriptions is not None:
            flag = "--classes" if d.classes is not None else "--descriptions"
            raise ConfigError(f"{flag}: strategy {strat.name!r} does not read class names or "
                              "descriptions (zeroshot and tip do)")
        return data_classes
    classes = parse_class_names(d.classes) if d.classes is not None else None
    if data_classes is not None:
        if classes is not None and set(classes) != set(data_classes):
            raise ConfigError(f"--classes {d.classes}: the data's classes are "
                              f"{', '.join(data_classes)}")
        classes = list(data_classes)
    strat.class_texts = class_texts(classes, d.descriptions)
    return list(strat.class_texts)


def fit_from_names(cfg: RunConfig, strat, head_cfg, procs, log) -> "TrainedModel":
    """A model fitted from the class names alone, without data (a zero-shot strategy):
    ``RUN/bundle`` and ``RUN/metrics.json`` (no scores: nothing to score on)."""
    name = cfg.backbone.name
    if name is None:
        raise ConfigError(f"{strat.name} without DATA: name the backbone (--backbone), e.g. "
                          "efficientnet_lite0 for images or minilm for text")
    classes = give_class_texts(cfg, strat)
    run_dir = start_run(cfg, procs)
    _seed_everything(cfg.train.seed)
    bb = build_backbone(name, **_backbone_kwargs(cfg, name, backbone_modality(name)))
    log(f"backbone: {bb.describe()}")
    model = build_model(bb, head_cfg, classes)
    strat.check_backbone(bb)
    strat.attach(model)
    info = strat.fit_without_data(model)
    model.eval()
    run_dir.mkdir(parents=True, exist_ok=True)
    touched = sorted(n for n in model.state_dict() if n.startswith("head."))
    save_bundle(run_dir / "bundle", model, strat, touched=touched, grayscale=cfg.train.grayscale)
    metrics = {"val": None, "test": None, "selection": "none: fitted from the class names "
               "alone, without data", "backbone": bb.name, "backbone_identity": bb.identity(),
               "strategy": strat.name, "strategy_options": strat.options.to_dict(),
               "closed_form": info, "classes": classes}
    write_json(run_dir / "metrics.json", metrics)
    log(f"classes: {', '.join(classes)}; bundle: {run_dir / 'bundle'}")
    return TrainedModel(model, strat, _bundle_like(model, strat, cfg.train), run_dir=run_dir,
                        metrics=metrics)


@dataclass
class RunData:
    """What :func:`read_run_data` found: the splits and, for domain adaptation, the target."""

    splits: dict[str, Any]
    #: ``{"target", "labelled", "test"}`` of a domain-adaptation run, else None
    domain: dict[str, Any] | None
    modality: str
    classes: list[str]
    #: seconds spent checking every image (``scan_s`` in ``metrics.json`` -> ``timing``)
    scan_s: float = 0.0
    #: a ``--shots K`` run: the rest of the training split, its labels dropped (not used yet)
    unlabelled: Any = None
    #: a ``--shots K`` run without validation data: the K shots are the validation samples
    val_is_train: bool = False
    #: a run of several data sets (merged, or several tasks): how they were joined
    several: Several | None = None
    #: the images are not checked yet: ``--skip-bad`` checks them in the feature pass
    #: (:func:`image_check`), which also logs what is read
    unchecked: bool = False

    @property
    def tasks(self) -> list[tuple[str, int]] | None:
        return self.several.tasks if self.several is not None else None


@contextmanager
def _timed(timing: dict[str, float], key: str):
    """Add the seconds the block takes to ``timing[key]``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timing[key] = timing.get(key, 0.0) + time.perf_counter() - t0


def _as_splits(x, columns):
    if x is None:
        return None
    if isinstance(x, Samples):
        return {"all": x}
    if isinstance(x, dict):
        return x
    return _read(x, columns=columns)


def read_run_data(cfg: RunConfig, strat, log, *, defer_check: bool = False) -> RunData:
    """Read and split the data (and the target domain), check every image, log the sizes.

    ``defer_check``: with ``--skip-bad`` on images of one data set and split (no target
    domain, shots or several sets), leave the check and the log to :func:`image_check`, in
    the training's feature pass, which decodes every image anyway."""
    several = several_splits(cfg, _as_splits, lambda p, c: _read(p, columns=c), log)
    if several is not None:
        if strat.uses_target:
            raise ConfigError(f"strategy {strat.name!r} adapts to a target domain; it does not "
                              "combine with several data sets or tasks")
        splits, domain = dict(several.splits), None
    else:
        splits, domain = _resolve_splits(cfg, strat)
    unlabelled = splits.pop("unlabelled", None)
    val_is_train = splits["val"] is splits["train"]
    modality = splits["train"].modality
    if cfg.train.grayscale and modality != "image":
        raise ConfigError("--grayscale applies to images only")
    bb_name = cfg.backbone.name or DEFAULT_BACKBONES[modality]
    _check_backbone_modality(bb_name, modality, splits["train"].source)
    run_data = RunData(splits=splits, domain=domain, modality=modality,
                       classes=splits["train"].classes, unlabelled=unlabelled,
                       val_is_train=val_is_train, several=several)
    if defer_check and cfg.train.skip_bad and modality == "image" and domain is None \
            and unlabelled is None and several is None and not val_is_train:
        run_data.unchecked = True
        return run_data
    check_run_images(cfg, run_data, log)
    return run_data


def check_run_images(cfg: RunConfig, run_data: RunData, log,
                     bad: dict[str, list[int]] | None = None) -> None:
    """Check the images of ``run_data`` (leaving the unreadable ones out with
    ``--skip-bad``; ``bad``: those a feature pass found, the others being readable) and log
    what the run reads."""
    t0 = time.perf_counter()
    splits, domain, unlabelled = run_data.splits, run_data.domain, run_data.unlabelled
    several, val_is_train = run_data.several, run_data.val_is_train
    modality = run_data.modality
    if bad is None:
        splits = check_split_images(splits, cfg.train.skip_bad, log)
    else:
        splits = drop_bad_images(splits, bad, log)
    if val_is_train:  # the same samples, also after leaving out unreadable images
        splits["val"] = splits["train"]
    if unlabelled is not None:
        unlabelled = check_split_images({"unlabelled": unlabelled}, cfg.train.skip_bad,
                                        log)["unlabelled"]
    classes = splits["train"].classes
    for note in dict.fromkeys(n for v in splits.values() if v is not None for n in v.notes):
        log(note)
    log(f"data: {splits['train'].source}: {modality}, {len(classes)} classes; "
        + ", ".join(f"{k} {len(v)}" for k, v in splits.items() if v is not None))
    if domain is not None:
        domain["target"] = check_split_images({"t": domain["target"]}, cfg.train.skip_bad,
                                              log)["t"]
        log(f"target: {domain['target'].source}: {len(domain['target'])} unlabelled"
            + (f", {len(domain['labelled'])} labelled for training"
               if domain["labelled"] is not None else "")
            + (f"; target test {len(domain['test'])}" if domain["test"] is not None else ""))
    if cfg.data.shots:
        log(f"shots: {cfg.data.shots} per class; {len(unlabelled)} training samples kept "
            "unlabelled; " + ("choices on the shots themselves" if val_is_train
                              else "choices on the validation data"))
    if several is not None:
        log(_several_line(several))
    run_data.splits.update(splits)
    run_data.classes, run_data.unlabelled, run_data.unchecked = classes, unlabelled, False
    run_data.scan_s += time.perf_counter() - t0


def image_check(cfg: RunConfig, run_data: RunData, log, held: list[str]):
    """The ``check_images`` a :class:`Trainer` calls before training on a run whose images
    are not checked yet: it checks them (with what the feature pass found, when it ran),
    logs what the run reads, then the lines ``held`` back until then (those logged since
    reading, in their order)."""
    def check(sets: dict, bad: dict[str, list[int]] | None) -> dict:
        run_data.splits.update(sets)
        check_run_images(cfg, run_data, log, bad)
        for line in held:
            log(line)
        held.clear()
        return {name: run_data.splits[name] for name in sets}
    return check


def _several_line(several: Several) -> str:
    what = "tasks" if several.kind == "tasks" else "merged sets"
    return f"{what}: " + "; ".join(
        f"{p.name} " + ", ".join(f"{k} {q.stop - q.start}" for k, ps in several.parts.items()
                                 for q in ps if q.name == p.name)
        for p in several.parts["train"])


def _check_backbone_modality(name: str, modality: str, source: str) -> None:
    if backbone_modality(name) not in (modality, "any"):
        raise ConfigError(f"backbone {name!r} takes {backbone_modality(name)} but the data "
                          f"({source}) is {modality}")


def _resolve_splits(cfg: RunConfig, strat):
    """``(splits, domain)``: train / val / test, and the target domain's parts (or None)."""
    d, dom, seed = cfg.data, cfg.domain, cfg.train.seed
    columns = _columns(cfg)
    data, target, test = d.path, dom.target, d.test
    if dom.domain_column is not None:
        data, target, test = _split_domains(data, dom.domain_column, target, test, columns,
                                            d.test_fraction, seed)
    if target is None:
        if dom.target_labels:
            raise ConfigError("--target-labels needs a target domain (--target)")
        if strat.uses_target:
            raise ConfigError(f"strategy {strat.name!r} adapts to a target domain: give the "
                              "unlabelled target data (--target)")
        given = _as_splits(data, columns)
        splits = resolve_splits(given, val=_as_splits(d.val, columns),
                                test=_as_splits(test, columns), val_fraction=d.val_fraction,
                                test_fraction=d.test_fraction, seed=seed)
        if d.shots:
            splits = few_shot_splits(splits, d.shots, seed,
                                     val_given=d.val is not None or "val" in given)
        return splits, None
    if d.shots is not None:
        raise ConfigError("--shots does not combine with a target domain (--target); "
                          "use --target-labels N for labelled target samples")
    splits = resolve_splits(_as_splits(data, columns), val=_as_splits(d.val, columns),
                            test=None, val_fraction=d.val_fraction, test_fraction=0.0, seed=seed)
    domain = _target_splits(target, test, splits["train"], dom.target_labels, strat, seed,
                            lambda x: _as_splits(x, columns))
    splits["test"] = domain["test"]
    if domain["labelled"] is not None and not strat.needs_target_labels:
        splits["train"] = concat_samples([splits["train"], domain["labelled"]])
    return splits, domain


def start_run(cfg: RunConfig, procs, *, resume: bool = False) -> Path:
    """The run folder's path, the same in every process of a data-parallel run.  Nothing is
    written here: :class:`~transferkit.engine.runfolder.RunFolder` creates the folder and
    records ``run_config.json`` when training starts, once the inputs have been checked."""
    out = cfg.run.out
    run_dir = Path(out) if out else Path("runs") / time.strftime(
        f"%Y%m%d-%H%M%S-{cfg.strategy.name}")
    run_dir = Path(procs.broadcast(str(run_dir)))
    if not resume and procs.is_main:  # the others could see the main one's new folder
        check_run_folder(run_dir, overwrite=cfg.run.overwrite)
    return run_dir


def run_folder_callback(cfg: RunConfig, run_dir: Path, resume: bool,
                        files: dict[str, Any] | None = None) -> RunFolder:
    """The callback that prepares ``run_dir`` and records the configuration in
    ``run_config.json`` (skipped when some data was given in memory: such a run cannot be
    replayed from a file)."""
    record = None if cfg.in_memory() else recorded_config(cfg, run_dir).to_dict()
    return RunFolder(run_dir, record, resume=resume, overwrite=cfg.run.overwrite, files=files)


def recorded_config(cfg: RunConfig, run_dir: Path) -> RunConfig:
    """``cfg`` as written to ``run_config.json``: data paths made absolute, the run folder
    named (a target domain named by ``domain_column`` is a value, not a path); ``overwrite``
    is how this run started, not a setting a resume should repeat."""
    target = cfg.domain.target
    if cfg.domain.domain_column is None:
        target = _pathish(target)
    return cfg.updated({"data": {"path": _pathish(cfg.data.path), "val": _pathish(cfg.data.val),
                                 "test": _pathish(cfg.data.test),
                                 "tasks": _pathish(cfg.data.tasks)},
                        "domain": {"target": target},
                        "run": {"out": str(run_dir), "overwrite": False}})


def build_run_model(cfg: RunConfig, head_cfg, run_data: RunData, log):
    """``(model, backbone)``: the backbone for the data's modality with a new head."""
    name = cfg.backbone.name or DEFAULT_BACKBONES[run_data.modality]
    _seed_everything(cfg.train.seed)
    bb = build_backbone(name, **_backbone_kwargs(cfg, name, run_data.modality))
    log(f"backbone: {bb.describe()}")
    sev = run_data.several
    if sev is not None and sev.kind == "tasks" and head_cfg.domain_specific:
        raise ConfigError("--domain-specific gives each merged DATA its own part for one task; "
                          "it does not combine with several tasks")
    domains = ([p.name for p in sev.parts["train"]]
               if sev is not None and sev.kind == "merge" and head_cfg.domain_specific else None)
    return build_model(bb, head_cfg, run_data.classes, run_data.tasks, domains), bb


@dataclass
class Outcome:
    """What training and scoring gave: the engine's result and the split metrics."""

    trainer: Any
    result: Any
    val: dict[str, Any]
    test: dict[str, Any] | None
    cache: Any
    timing: dict[str, float]
    #: how ``--strategy auto`` chose (``metrics.json`` -> ``auto``), else None
    auto: dict[str, Any] | None = None
    #: a run of several sets: ``("tasks" | "sources", {name: {"val": ..., "test": ...}})``
    parts: tuple[str, dict[str, Any]] | None = None


def train_and_score(cfg: RunConfig, model, strat, run_data: RunData, run_dir: Path, rep,
                    procs=None, *, resume: bool = False, files: dict[str, Any] | None = None,
                    held: list[str] | None = None) -> Outcome:
    """Train through the engine (resuming from the checkpoint when asked), then score
    validation and test.  Images not checked yet (``run_data.unchecked``) are checked by
    the engine before training (:func:`image_check`; ``held``: lines logged after)."""
    splits, domain = run_data.splits, run_data.domain
    device = (procs.device if procs is not None else None) or resolve_device(cfg.train.device)
    cache = FeatureCache(cfg.run.cache_dir, enabled=not cfg.run.no_cache)
    with rep.progress() as progress:
        trainer = Trainer(model, strat, cfg.train, run_dir=run_dir, cache=cache, log=rep.log,
                          progress=progress, device=device, processes=procs)
        folder = [run_folder_callback(cfg, run_dir, resume, files)] if _is_main(procs) else []
        check = image_check(cfg, run_data, rep.log, held or []) if run_data.unchecked else None
        with sigterm_as_interrupt():
            if domain is None:
                result = trainer.fit(splits["train"], splits["val"], resume=resume,
                                     unlabelled=run_data.unlabelled, callbacks=folder,
                                     test=splits["test"], check_images=check)
            else:
                result = trainer.fit(splits["train"], splits["val"], resume=resume,
                                     target=domain["target"], target_test=domain["test"],
                                     target_labelled=domain["labelled"], callbacks=folder)
        # the engine decides whether evaluation may read cached backbone features
        val_m = trainer.evaluate(splits["val"], worst=WORST_EXAMPLES)
        timing = dict(result.timing)
        with _timed(timing, "test_s"):
            test_m = trainer.evaluate(splits["test"], worst=WORST_EXAMPLES) if splits["test"] else None
        parts = part_scores(trainer, run_data, val_m, test_m)
    return Outcome(trainer, result, val_m, test_m, cache, timing, parts=parts)


def part_scores(trainer, run_data: RunData, val_m, test_m) -> tuple[str, dict] | None:
    """The figures of each task (from the split metrics) or of each merged source (its
    samples of each split scored on their own)."""
    sev = run_data.several
    if sev is None:
        return None
    if sev.kind == "tasks":
        return "tasks", {name: {"val": summary(val_m["tasks"][name]),
                                "test": summary(test_m["tasks"][name]) if test_m else None}
                         for name, _ in sev.tasks}
    out: dict[str, dict[str, Any]] = {p.name: {"val": None, "test": None}
                                      for p in sev.parts["train"]}
    for split, ps in sev.parts.items():
        if split == "train":
            continue
        s = run_data.splits[split]
        lg = trainer.split_logits(s)  # the split's own features, sliced per source
        for p in ps:
            out[p.name][split] = summary(trainer.metrics(lg[p.start:p.stop],
                                                         s.labels[p.start:p.stop]))
    return "sources", out


def _log_parts(parts: tuple[str, dict[str, Any]], log) -> None:
    for name, m in parts[1].items():
        figures = [f"{k} accuracy {m[k]['accuracy']:.4f}" for k in ("val", "test") if m.get(k)]
        log(f"{parts[0][:-1]} {name}: " + ", ".join(figures))


def _is_main(procs) -> bool:
    return procs is None or procs.is_main


def write_detection_page(tm: TrainedDetector) -> TrainedDetector:
    """``RUN/report.html`` of a detection run (its settings as ``run_config.json`` holds
    them; none when the data was given in memory)."""
    run_dir, settings = tm.run_dir, None
    if (run_dir / "run_config.json").is_file():
        settings = json.loads((run_dir / "run_config.json").read_text(encoding="utf-8"))
    write_detection_report(run_dir, tm.metrics, tm.history, tm.examples,
                           parameter_summary(tm.model, tm.touched), settings)
    return tm


def write_run(cfg: RunConfig, model, bb, strat, run_data: RunData, run_dir: Path,
              outcome: Outcome, log) -> "TrainedModel":
    """Write metrics, the bundle, tables, figures and the report; log the figures."""
    result, val_m, test_m = outcome.result, outcome.val, outcome.test
    metrics = _metrics_record(val_m, test_m, result, bb, strat, run_data.classes,
                              outcome.timing, outcome.cache)
    if run_data.domain is not None:
        metrics.update(_domain_record(cfg, outcome, run_data, run_dir, log))
    if cfg.data.shots:
        metrics.update(_shots_record(cfg, outcome, run_data))
    if outcome.auto:
        metrics["auto"] = outcome.auto
    refit = (result.closed_form or {}).get("refit")
    if refit:
        metrics["selection"] = (
            "C chosen on validation accuracy, then the probe refit at that C on train + "
            f"validation ({refit['samples']} samples): the 'val' figures are scores on samples "
            f"the model saw (validation accuracy before the refit "
            f"{refit['val_accuracy_before']:.4f}); test never used for a choice")
    if outcome.parts:
        metrics[outcome.parts[0]] = outcome.parts[1]
        _log_parts(outcome.parts, log)
    model.eval()
    t0 = time.perf_counter()
    save_bundle(run_dir / "bundle", model, strat, touched=result.touched,
                grayscale=cfg.train.grayscale)
    metrics["timing"]["bundle_s"] = round(time.perf_counter() - t0, 3)
    images = _write_outputs(run_dir, metrics, val_m, test_m, result.history, run_data.classes)
    content = report_content(cfg, model, run_data, outcome, run_dir, log)
    content.figures = images
    per_class = {"val": val_m["per_class"], "test": test_m["per_class"] if test_m else None}
    write_report(run_dir, metrics, {k: v for k, v in per_class.items() if v}, content)
    tm = TrainedModel(model, strat, _bundle_like(model, strat, cfg.train), run_dir=run_dir,
                      metrics=metrics)
    log(f"val accuracy {val_m['accuracy']:.4f}, macro F1 {val_m['macro_f1']:.4f} "
        f"(best epoch {result.best_epoch})")
    if test_m:
        log(f"test accuracy {test_m['accuracy']:.4f}, macro F1 {test_m['macro_f1']:.4f}")
    log(f"bundle: {run_dir / 'bundle'}   report: {run_dir / 'report.html'}")
    return tm


def _domain_record(cfg: RunConfig, outcome: Outcome, run_data: RunData, run_dir: Path,
                   log) -> dict[str, Any]:
    """``metrics.json``'s ``selection`` and ``domain`` entries of a domain-adaptation run."""
    dom = cfg.domain
    if dom.domain_column is not None:
        target = str(dom.target)
    else:
        target = _pathish(dom.target)
    return {
        "selection": (f"label-free: {outcome.trainer.select} (see domain.selection); target "
                      "labels never used for a choice; test = the target's test split"),
        "domain": {"target": target, "target_labels_per_class": dom.target_labels,
                   "selection": outcome.result.selection,
                   **domain_report(outcome.trainer, run_dir, log=log, figure=dom.figures)},
    }


def _shots_record(cfg: RunConfig, outcome: Outcome, run_data: RunData) -> dict[str, Any]:
    """``metrics.json``'s ``shots`` and ``selection`` entries of a ``--shots K`` run."""
    k = cfg.data.shots
    solved = outcome.result.closed_form or {}
    record = {"k": k, "labelled": len(run_data.splits["train"]),
              "unlabelled": len(run_data.unlabelled),
              "unlabelled_used": bool(solved.get("unlabelled_used")),
              "val": "the K shots themselves" if run_data.val_is_train else "given"}
    if not run_data.val_is_train:
        selection = (f"{k}-shot: validation accuracy, then validation loss, on the given "
                     "validation data; test never used for a choice")
    else:
        how = solved.get("selection") or ("the epoch with the best accuracy on the training "
                                          "shots themselves (no held-out labels: give --val "
                                          "for a fair choice)")
        selection = (f"{k}-shot without validation data: {how}; the 'val' figures are "
                     "scores on the training shots, not held out; test never used for a choice")
    return {"shots": record, "selection": selection}


def _split_domains(data, column: str, target, test, columns, test_fraction: float, seed: int):
    """``(source, target, target_test)`` samples from one table with a domain column."""
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
    """Finish an interrupted run from its last checkpoint, with the settings recorded in
    ``RUN/run_config.json`` (the unversioned files of transferkit 0.1 are read too)."""
    cfg = recorded_run_config(run_dir)
    return fit(config=cfg, out=Path(run_dir), quiet=quiet, overwrite=False, resume=True)


def recorded_run_config(run_dir: str | os.PathLike) -> RunConfig:
    """The configuration a run folder recorded in ``run_config.json``."""
    run_dir = Path(run_dir)
    path = run_dir / "run_config.json"
    if not path.exists():
        raise ConfigError(f"{run_dir}: no run_config.json; not a run folder that can be resumed")
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:  # RecursionError: nested beyond reason
        raise ConfigError(f"{path}: cannot parse ({e})") from None
    return RunConfig.from_dict(recorded, where=str(path))


def _pathish(x):
    if x is None:
        return None
    if isinstance(x, (list, tuple)):
        return [_pathish(v) for v in x]
    if isinstance(x, dict):
        return {k: _pathish(v) for k, v in x.items()}
    if isinstance(x, (str, os.PathLike)):
        return str(Path(x).resolve())
    return "<in-memory>"


def _metrics_record(val_m, test_m, result, bb, strat, classes, timing, cache) -> dict[str, Any]:
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


def _write_outputs(run_dir: Path, metrics, val_m, test_m, history, classes) -> list[str]:
    """``metrics.json``, ``per_class.json``, the confusion tables, the curves and confusion
    figures; returns the figures' file names."""
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
    return images


def report_content(cfg: RunConfig, model, run_data: RunData, outcome: Outcome, run_dir: Path,
                   log) -> ReportContent:
    """What the report shows beyond the metrics: the worst examples, the parameter summary,
    the strategy's figures (t-SNE of a domain run, attention maps of the worst test
    examples where ``explain`` applies) and the run's settings."""
    worst: list[tuple[str, int, dict]] = []
    for split, m in (("val", outcome.val), ("test", outcome.test)):
        for w in (m or {}).get("most_wrong", []):
            worst.append((split, w["index"], w))
    examples = [_example(split, run_data.splits[split], i, w, run_data.classes,
                         cfg.train.grayscale) for split, i, w in worst]
    figures = [("t-SNE of the source and target representations, before and after adaptation",
                "domain_tsne.png")]
    if model.backbone.family in EXPLAINED_FAMILIES:
        on_cpu = all(p.device.type == "cpu" for p in model.parameters())
        # one image at a time is too small to split across threads: on a shared CPU two
        # threads waiting for each other made the maps several times slower
        with intra_op_threads(1 if on_cpu else None):
            figures += _attention_figures(run_dir, run_data, worst, log,
                                          model if on_cpu else None)
    return ReportContent(examples=examples, strategy_figures=figures,
                         parameters=parameter_summary(model, outcome.result.touched),
                         settings=recorded_config(cfg, run_dir).to_dict())


def _example(split: str, samples, i: int, w: dict, classes: list[str],
             grayscale: bool) -> Example:
    ex = Example(split=split, origin=str(samples.origins[i]), true=classes[w["true"]],
                 predicted=classes[w["predicted"]], p_predicted=w["p_predicted"],
                 p_true=w["p_true"])
    item = samples.items[i]
    if samples.modality == "text":
        ex.text = item if len(item) <= TEXT_CHARS else item[:TEXT_CHARS] + "…"
        return ex
    try:
        ex.png = thumbnail_png(open_image(item, ex.origin, grayscale=grayscale))
    except DataError:
        pass  # an image that cannot be shown is still listed
    return ex


def _attention_figures(run_dir: Path, run_data: RunData, worst, log, model=None,
                       n: int = 2) -> list[tuple[str, str]]:
    """Attention maps / Grad-CAM / token attributions of the worst test examples (else
    validation), written by ``explain`` to ``RUN/explain/``; none where it does not apply."""
    picked = [(s, i) for s, i, _ in worst if s == "test"] or [(s, i) for s, i, _ in worst]
    texts = run_data.modality == "text"
    inputs = [run_data.splits[s].items[i] for s, i in picked[:n]]
    inputs = [x for x in inputs if isinstance(x, (str, os.PathLike))]
    if not inputs:
        return []
    try:
        written = explain(run_dir / "bundle", [str(x) for x in inputs], run_dir / "explain",
                          texts=texts, model=model)
    except (TransferkitError, RuntimeError) as e:
        log(f"report: no attention maps ({e})")
        return []
    return [(f"what the model looks at: {'text' if texts else 'image'} {k + 1} of the worst",
             f"explain/{p.name}") for k, p in enumerate(x for x in written if x.suffix == ".png")]


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
        if isinstance(inputs, Samples):
            return inputs
        if isinstance(inputs, (str, os.PathLike)) and not labelled:
            return read_inputs([inputs], self.modality)
        if isinstance(inputs, (str, os.PathLike)):
            splits = _read(inputs, labelled=True)
            s = concat_samples(list(splits.values())) if len(splits) > 1 else splits[next(iter(splits))]
            if s.modality != self.modality:  # before the labels: a mismatch explains them
                raise DataError(f"{inputs}: holds {s.modality} data but this model takes {self.modality}")
            return s.with_classes(self.classes)
        items = list(inputs)
        paths = items and all(isinstance(x, (str, os.PathLike)) for x in items)
        if self.modality == "image" and paths:  # folders, images, tables, .npz alike
            return read_inputs(items, "image")
        return samples_from_list(items, self.modality, self.classes)

    @property
    def tasks(self) -> list[str] | None:
        """The names of the model's tasks (None: a model of one task)."""
        bl = blocks(self.model.tasks)
        return [b.name for b in bl] if bl else None

    def task_classes(self, task: str) -> list[str]:
        """The class names of one of the model's tasks."""
        return self._block(task).local(self.classes)

    def _block(self, task: str):
        bl = blocks(self.model.tasks) or []
        for b in bl:
            if b.name == task:
                return b
        raise ConfigError(f"--task {task}: the model's tasks are "
                          + (", ".join(b.name for b in bl) if bl else "none (it has one)"))

    def predict_proba(self, inputs, *, domain: str | None = None) -> np.ndarray:
        """Class probabilities; for a model of several tasks, each task's block of columns
        is its own distribution (sums to 1)."""
        lg = self.logits(inputs, domain=domain).astype(np.float64)
        bl = blocks(self.model.tasks)
        if bl is None:
            return softmax(lg)
        return np.concatenate([softmax(lg[:, b.start:b.stop]) for b in bl], axis=1)

    def logits(self, inputs, *, domain: str | None = None) -> np.ndarray:
        """Raw logits; ``domain``: the input domain of every input, for a model with
        domain-specific parts (weight sharing)."""
        s = self._samples(inputs)
        d = self.domain_index(domain)
        pipe = InputPipeline(self.model.backbone, grayscale=self.config.get("grayscale", False))
        self.model.eval()
        out = np.zeros((len(s), len(self.classes)), dtype=np.float32)
        with torch.inference_mode():
            for b in pipe.batches(s, batch_size=TrainConfig.eval_batch_size):
                doms = None if d is None else torch.full((len(b.indices),), d, dtype=torch.long)
                out[b.indices.numpy()] = self.model(b.inputs, doms).float().numpy()
        return out

    @property
    def domains(self) -> list[str] | None:
        """The input domains of a model with domain-specific parts, else None."""
        return self.model.domains

    def domain_index(self, domain: str | None) -> int | None:
        """The index of ``domain`` (its name as trained, or that path's file name or stem)."""
        names = self.model.domains
        if not names:
            if domain is not None:
                raise ConfigError(f"--domain {domain}: this model has no domain-specific parts")
            return None
        if domain is None:
            raise ConfigError("this model keeps a part per input domain: say which the inputs "
                              "come from (--domain " + " | ".join(_short(n) for n in names) + ")")
        for i, n in enumerate(names):
            if domain in (n, Path(n).name, Path(n).stem):
                return i
        raise ConfigError(f"--domain {domain}: the model's domains are "
                          + ", ".join(_short(n) for n in names))

    def predict(self, inputs, *, task: str | None = None, domain: str | None = None) -> list:
        """Class names; a model of several tasks gives ``{task: class}`` per input (every
        task from one pass of the backbone), or one task's classes with ``task``."""
        lg = self.logits(inputs, domain=domain)
        bl = blocks(self.model.tasks)
        if bl is None:
            if task is not None:
                self._block(task)
            return [self.classes[i] for i in lg.argmax(1)]
        if task is not None:
            b = self._block(task)
            return [b.local(self.classes)[i] for i in lg[:, b.start:b.stop].argmax(1)]
        return [{b.name: b.local(self.classes)[int(lg[r, b.start:b.stop].argmax())] for b in bl}
                for r in range(len(lg))]

    def evaluate(self, data, *, task: str | None = None, domain: str | None = None
                 ) -> dict[str, Any]:
        """Metrics on labelled ``data``; for a model of several tasks, the data holds one
        task's labels: ``task`` names it (else the one task whose classes hold them);
        ``domain``: the data's input domain, for a model with domain-specific parts."""
        s = self._samples(data, labelled=True) if self.tasks is None else self._raw(data)
        if s.labels is None:
            raise DataError(f"{getattr(s, 'source', data)}: no labels to evaluate against")
        if self.tasks is None:
            if task is not None:
                self._block(task)
            s = s.with_classes(self.classes) if list(s.classes) != self.classes else s
            return classification_metrics(self.logits(s, domain=domain), s.labels, self.classes)
        b = self._block(task if task is not None else self._task_of(s))
        local = b.local(self.classes)
        s = s.with_classes(local) if list(s.classes) != local else s
        lg = self.logits(s, domain=domain)[:, b.start:b.stop]
        return {"task": b.name, **classification_metrics(lg, s.labels, local)}

    def _raw(self, data) -> Samples:
        if isinstance(data, Samples):
            return data
        splits = _read(data, labelled=True)
        return concat_samples(list(splits.values())) if len(splits) > 1 else next(iter(splits.values()))

    def _task_of(self, s: Samples) -> str:
        labels = set(s.classes[i] for i in np.unique(s.labels))
        fits = [t for t in self.tasks if labels <= set(self.task_classes(t))]
        if len(fits) != 1:
            raise ConfigError(f"{s.source}: say which task its labels are of (--task "
                              f"{' | '.join(self.tasks)})")
        return fits[0]

    def save(self, path) -> Path:
        return save_bundle(path, self.model, self.strategy, touched=self._touched,
                           grayscale=self.config.get("grayscale", False))


def _short(name: str) -> str:
    return Path(name).stem or name


def samples_from_list(items: list, modality: str, classes: list[str], labels=None):
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


def load(path) -> "TrainedModel | TrainedDetector":
    """Load a bundle folder written by :func:`fit` or :meth:`TrainedModel.save` (a
    :class:`~transferkit.detection.run.TrainedDetector` for a detection bundle)."""
    if bundle_task(read_config(path)) == "detection":
        return load_detector(path)
    model, strategy, cfg = load_model(path)
    tm = TrainedModel(model, strategy, cfg)
    tm._touched = cfg["tensors"]
    return tm


# --------------------------------------------------------------------------- scikit-learn

def _guess_modality(X: Sequence) -> str:
    first = X[0]
    if isinstance(first, np.ndarray):
        return "image"
    if isinstance(first, (str, os.PathLike)) and Path(str(first)).suffix.lower() in IMAGE_EXTENSIONS \
            and Path(str(first)).exists():
        return "image"
    return "text"



#: the RunConfig settings (by flat name) that are a TransferClassifier's parameters; their
#: defaults are RunConfig's, but for those in _CLASSIFIER_DEFAULTS
CLASSIFIER_PARAMS = ("backbone", "strategy", "epochs", "lr", "batch_size", "seed", "options",
                     "head", "image_size", "val_fraction", "cache_dir", "out", "quiet")
#: an estimator is quiet by default; a dict default would be shared between estimators
_CLASSIFIER_DEFAULTS = {"quiet": True, "options": None}


def _classifier_signature() -> inspect.Signature:
    """``__init__(self, backbone=..., strategy=..., ...)`` with RunConfig's types and
    defaults: scikit-learn's ``get_params`` / ``clone`` read it."""
    defaults = RunConfig().flat()
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter("self", kind)]
    for name in CLASSIFIER_PARAMS:
        section, field_name = FLAT[name]
        params.append(inspect.Parameter(
            name, kind, default=_CLASSIFIER_DEFAULTS.get(name, defaults[name]),
            annotation=type_hints(SECTIONS[section])[field_name]))
    return inspect.Signature(params)


class TransferClassifier(ClassifierMixin, BaseEstimator):
    """A scikit-learn estimator over any backbone and strategy.

    ``X`` is a sequence of image paths, image arrays or texts; ``y`` any labels.  Works in
    ``Pipeline``, ``GridSearchCV`` and ``cross_val_score``.  A validation split for the
    engine's epoch selection is carved from the training data (``val_fraction``).  The
    parameters are the :class:`~transferkit.config.RunConfig` settings named in
    :data:`CLASSIFIER_PARAMS`, with RunConfig's defaults (``quiet`` defaults to true).

    The scikit-learn contract: ``predict`` / ``predict_proba`` / ``score`` before ``fit``
    raise ``sklearn.exceptions.NotFittedError``; ``get_params`` / ``set_params`` / ``clone``
    round-trip every parameter; ``fit`` changes no parameter and returns self.  Without
    ``out``, the run folder is a temporary one, removed when the estimator is
    garbage-collected or fitted again, or at once when ``fit`` fails; with ``out`` the run
    folder stays there.
    """

    _signature = _classifier_signature()

    def __init__(self, *args: Any, **kwargs: Any):
        bound = self._signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        for name in CLASSIFIER_PARAMS:
            setattr(self, name, bound.arguments[name])

    __init__.__signature__ = _signature  # type: ignore[attr-defined]

    def fit(self, X, y):
        """Fit on ``X`` (image paths, image arrays or texts) and labels ``y``; returns self.

        Without ``out`` the run folder is a temporary one, removed when this estimator is
        garbage-collected, fitted again, or when ``fit`` fails."""
        self._release_run_folder()
        X = list(X)
        y = np.asarray(y)
        if len(X) != len(y):
            raise ConfigError(f"X has {len(X)} samples but y has {len(y)}")
        classes, yi = _encode_labels(y)
        s = samples_from_list(X, _guess_modality(X), [str(c) for c in classes], yi)
        s.origins = [f"X[{i}]" for i in range(len(X))]
        params = {name: getattr(self, name) for name in CLASSIFIER_PARAMS}
        temporary = None
        if not self.out:
            temporary = tempfile.mkdtemp(prefix="transferkit-")
            params["out"] = temporary
        try:
            # fitting again replaces the estimator's own run (cross-validation refits the clones)
            model = fit(s, test_fraction=0.0, overwrite=bool(self.out), **params)
        except BaseException:
            if temporary is not None:
                shutil.rmtree(temporary, ignore_errors=True)
            raise
        if temporary is not None:
            self._cleanup = weakref.finalize(self, shutil.rmtree, temporary, True)
        self.classes_, self.model_ = classes, model
        return self

    def _release_run_folder(self) -> None:
        cleanup = self.__dict__.pop("_cleanup", None)
        if cleanup is not None:
            cleanup()

    def __getstate__(self):
        # the temporary run folder belongs to this object alone: a copy does not remove it
        state = dict(self.__dict__)
        state.pop("_cleanup", None)
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # inputs are image paths, image arrays or strings, one per sample, not a 2-d array of
        # numeric features: scikit-learn's numeric estimator checks do not apply
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags

    def _items(self, X):
        X = list(X)
        return samples_from_list(X, self.model_.modality, self.model_.classes)

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self)
        return self.model_.predict_proba(self._items(X))

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self)
        return self.classes_[self.predict_proba(X).argmax(1)]


def _encode_labels(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, indices)``: the sorted distinct labels and each label's index."""
    classes = np.unique(y)
    names = [str(c) for c in classes]
    if len(set(names)) != len(names):
        raise ConfigError("labels must stay distinct when written as text")
    index = {c: i for i, c in enumerate(classes.tolist())}
    return classes, np.array([index[v] for v in y.tolist()], dtype=np.int64)
