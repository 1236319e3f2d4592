"""The one training loop every strategy runs through.

:meth:`Trainer.fit` walks the strategy's stages, each stage's epochs and each epoch's
batches, and fires the events of :mod:`transferkit.events` at every step; everything else is
a callback (:mod:`transferkit.engine.callbacks`: timing, validation scores, best-epoch
selection and early stopping, epoch log, progress, history, checkpoints; with a target
domain, the label-free scores and snapshots of :mod:`transferkit.engine.domain`; and the
callbacks a strategy puts on its own stages).  A batch step is: the strategy's callbacks may
add streams or weights -> one forward pass (the batch and its streams together) -> the task
loss (cross-entropy, weighted when the batch has weights) plus every loss term a callback
returns -> backward -> optimizer step -> scheduler step.

A stage that the strategy solves in closed form (``Stage.solve``) runs no batches: its
settings are its "epochs", each applied and scored like one.  Whether a stage feeds the head
cached backbone features or runs the live backbone is decided by
:meth:`transferkit.engine.features.Features.usable`, once per stage.  Every epoch seeds its
own random state from (seed, stage, epoch), which is what makes resuming exact.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..events import Batch, Callback
from .cache import FeatureCache
from .budget import StageClock
from .callbacks import (BestEpoch, Checkpoint, EpochLog, History, Progress, Timing,
                        ValidationScores)
from .config import TrainConfig
from .distributed import Processes
from .domain import DomainData, DomainScores, Snapshots, summarize_selection
from .features import Features
from .inputs import InputPipeline
from .metrics import classification_metrics
from .tasks import block_of, blocks, per_sample_loss, sampling_weights, task_metrics
from .schedules import build_scheduler


@dataclass
class FitResult:
    best_epoch: int | None
    best_stage: str | None
    history: list[dict[str, Any]]
    val: dict[str, Any] | None
    timing: dict[str, float]
    trainable_params: int
    total_params: int
    closed_form: dict[str, Any] | None = None
    touched: list[str] = field(default_factory=list)
    #: label-free and oracle choices over the history (domain runs only)
    selection: dict[str, Any] | None = None


@dataclass
class Best:
    """The best epoch so far: its selection key, where it was, its weights and figures."""
    key: tuple | None = None
    epoch: int | None = None
    stage: str | None = None
    tensors: dict[str, torch.Tensor] | None = None
    metrics: dict[str, Any] | None = None
    setting: str | None = None


def epoch_seed(seed: int, stage: int, epoch: int) -> int:
    return (seed * 1_000_003 + stage * 10_007 + epoch) % (2**31 - 1)


@contextmanager
def intra_op_threads(n: int | None):
    """Run the block with ``n`` torch intra-op threads (unchanged when ``n`` is None)."""
    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def batchnorm_layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@dataclass
class FitState:
    """What the loop knows, shared with every callback.

    Strategies' callbacks and closed-form solvers use :meth:`features` (cached backbone
    features of a named sample set: ``"train"``, ``"val"``, ``"target"``, ...),
    :meth:`labels`, :meth:`has`, ``model``, ``cfg`` and :meth:`log`.
    """

    trainer: "Trainer"
    model: nn.Module
    cfg: TrainConfig
    data: dict[str, Any]
    stages: list
    criterion: str
    device: torch.device
    stage_index: int = 0
    epoch: int = 0                 # index of the running epoch within its stage
    step: int = 0                  # optimizer steps taken in this stage
    steps_per_epoch: int = 1
    total_steps: int = 1
    cached: bool = False           # the current stage feeds the head cached features
    stop: bool = False             # end the current stage now (early stopping)
    improved: bool = False         # the epoch just scored is the best so far
    resumed_mid_stage: bool = False
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: Best = field(default_factory=Best)
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    candidates: list = field(default_factory=list)   # settings of a closed-form stage
    solution: dict[str, Any] | None = None           # what the closed-form solver reported
    val_outputs: tuple | None = None
    val_metrics: dict[str, Any] | None = None
    epoch_started: float = 0.0
    epoch_seed: int = 0
    timing: dict[str, float] = field(default_factory=dict)
    #: the validation samples are the training samples themselves (few-shot without
    #: ``--val``): a closed-form solver should choose by cross-validation over them
    val_is_train: bool = False

    @property
    def stage(self):
        return self.stages[self.stage_index]

    @property
    def stage_epochs(self) -> int:
        return len(self.candidates) if self.stage.solve is not None else self.stage.epochs

    def features(self, name: str) -> torch.Tensor:
        return self.trainer.features.get(name, self.data[name])

    def labels(self, name: str) -> torch.Tensor:
        return torch.as_tensor(self.data[name].labels)

    def stream(self, name: str):
        """Endless batches of the named sample set, fed as this stage feeds the model."""
        return self.trainer.stream(self, name)

    def batches(self, name: str):
        """``(inputs, indices)`` of the named sample set in order, as the backbone reads them
        for evaluation (no augmentation): for a module of a strategy's own to run over them."""
        for b in self.trainer.pipeline.batches(self.data[name],
                                               batch_size=self.cfg.eval_batch_size):
            yield b.inputs, b.indices

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def log(self, msg: str) -> None:
        self.trainer.log(msg)

    def new_best(self, **kw) -> Best:
        return Best(**kw)

    def touched(self) -> list[str]:
        return self.trainer.touched_names(self.stages, self.stage_index)


def check_something_trains(strategy: str, stages, epochs: int) -> None:
    """Refuse a run in which no stage would train anything (``--epochs 0`` on a strategy
    whose every stage is epochs of SGD): it would save an untrained head and report its
    figures as a result.  A closed-form stage, or a stage whose epochs do not come from
    ``--epochs`` (``-o head_epochs=N``), trains."""
    if any(s.solve is not None or s.epochs > 0 for s in stages):
        return
    raise ConfigError(f"--epochs {epochs}: strategy {strategy!r} would train nothing "
                      f"({', '.join(f'{s.name} {s.epochs} epochs' for s in stages)}); "
                      "give --epochs 1 or more")


class _Fire:
    """Calls one event on the engine's callbacks, then on the current stage's own."""

    def __init__(self, callbacks: list[Callback], state: FitState):
        self.callbacks = callbacks
        self.state = state

    def __call__(self, event: str, *args) -> list:
        cbs = list(self.callbacks)
        if event not in ("on_fit_start", "on_fit_end"):
            cbs += list(self.state.stage.callbacks)
        return [getattr(cb, event)(self.state, *args) for cb in cbs]


class Trainer:
    #: the validation figures of an epoch's record that the epoch log shows, with their labels
    epoch_scores: tuple[tuple[str, str], ...] = (("val_loss", "val loss"),
                                                 ("val_accuracy", "val acc"))

    def __init__(self, model: nn.Module, strategy, cfg: TrainConfig, *, run_dir: Path | None = None,
                 cache: FeatureCache | None = None, log: Callable[[str], None] = print,
                 progress=None, device=None, processes: Processes | None = None):
        self.model = model
        #: this process's place in a data-parallel run (see engine/distributed.py)
        self.processes = processes or Processes()
        self.strategy = strategy
        self.cfg = cfg
        self.run_dir = Path(run_dir) if run_dir else None
        self.cache = cache or FeatureCache(enabled=False)
        self.log = log
        self.progress = progress
        self.device = device or torch.device("cpu")
        self.pipeline = InputPipeline(model.backbone, grayscale=cfg.grayscale, augment=cfg.augment,
                                      workers=cfg.workers, device=self.device)
        self.timing = {"features_s": 0.0, "train_s": 0.0, "eval_s": 0.0}
        self.features = Features(model, self.pipeline, self.cache, augment=cfg.augment,
                                 batch_size=cfg.eval_batch_size, timing=self.timing,
                                 progress=progress, processes=self.processes)
        self.select = "source-val"
        self.state: FitState | None = None
        self._snapshots: Snapshots | None = None
        self._val = None
        self._test = None
        self._task_weights: list[float] | None = None

    # ------------------------------------------------------------------ services
    def split_features(self, name: str, samples) -> torch.Tensor:
        return self.features.get(name, samples)

    @torch.inference_mode()
    def outputs(self, samples, *, features: torch.Tensor | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """``(representation, logits)`` of every sample under the current weights; the
        representation is what the head's last layer reads (``Head.embed``).  ``features``:
        the samples' cached backbone features, when the backbone need not run."""
        model = self.model
        model.eval()
        head = model.head
        n, k = len(samples), len(model.classes)
        if features is not None:
            zs, lgs = [], []
            for i in range(0, len(features), 1024):
                z = head.embed(self._with_domains({"pooled": features[i:i + 1024].to(self.device)},
                                                  samples, np.arange(i, min(i + 1024, n))))
                zs.append(z.float().cpu())
                lgs.append(head.classify(z).float().cpu())
            if not zs:
                return np.zeros((0, head.embed_dim), np.float32), np.zeros((0, k), np.float32)
            return torch.cat(zs).numpy(), torch.cat(lgs).numpy()
        z_all = np.zeros((n, head.embed_dim), dtype=np.float32)
        lg_all = np.zeros((n, k), dtype=np.float32)
        for b in self.pipeline.batches(samples, batch_size=self.cfg.eval_batch_size):
            z = head.embed(self._with_domains(model.features(b.inputs), samples, b.indices))
            idx = b.indices.numpy()
            z_all[idx] = z.float().cpu().numpy()
            lg_all[idx] = head.classify(z).float().cpu().numpy()
        return z_all, lg_all

    def split_outputs(self, name: str, samples, use_cache: bool) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`outputs`, reading the backbone features of ``samples`` from the feature
        store (under ``name``) when ``use_cache``."""
        feats = self.features.get(name, samples) if use_cache else None
        return self.outputs(samples, features=feats)

    def logits(self, samples, *, features: torch.Tensor | None = None) -> np.ndarray:
        return self.outputs(samples, features=features)[1]

    def evaluate(self, samples, *, use_cache: bool | None = None, worst: int = 0) -> dict[str, Any]:
        """Metrics of ``samples`` under the current weights; by default through cached
        features exactly when :meth:`Features.usable` allows it after training.  ``worst``:
        also list that many samples the model got most wrong (``most_wrong``)."""
        t0 = time.perf_counter()
        lg = self.split_logits(samples, use_cache=use_cache)
        m = self.metrics(lg, samples.labels, worst=worst)
        self.timing["eval_s"] += time.perf_counter() - t0
        return m

    def split_logits(self, samples, *, use_cache: bool | None = None) -> np.ndarray:
        """Logits of ``samples`` under the current weights, through their cached features
        when :meth:`Features.usable` allows it (by default) -- a split computed once, kept
        under its own name for later calls."""
        if use_cache is None:
            use_cache = self.features.usable()
        name = ("val" if samples is self._val else "test" if samples is self._test
                else f"eval:{id(samples)}")
        feats = self.features.get(name, samples) if use_cache else None
        return self.logits(samples, features=feats)

    def metrics(self, logits: np.ndarray, labels, *, worst: int = 0) -> dict[str, Any]:
        """Classification metrics of ``logits``; for a model of several tasks each sample is
        scored by its own task's head and the summary is the tasks' average (:mod:`.tasks`)."""
        if self.blocks is not None:
            return task_metrics(logits, labels, self.model.classes, self.blocks,
                                classification_metrics, worst=worst)
        return classification_metrics(logits, labels, self.model.classes, worst=worst)

    @property
    def blocks(self):
        """The model's tasks as blocks of its classes (:mod:`.tasks`), or None (one task)."""
        return blocks(getattr(self.model, "tasks", None))

    def task_weights(self, state: FitState) -> list[float] | None:
        """Each task's loss weight: its share under ``--task-sampling`` times its
        ``--task-weight`` (computed once per fit from the training labels)."""
        bl = self.blocks
        if bl is None:
            return None
        if self._task_weights is None:
            counts = np.bincount(block_of(state.data["train"].labels, bl), minlength=len(bl))
            share = sampling_weights(counts.tolist(), self.cfg.task_sampling,
                                     self.cfg.task_temperature)
            given = self.cfg.task_weights()
            self._task_weights = [s * given.get(b.name, 1.0) for s, b in zip(share, bl)]
        return self._task_weights

    def state_tensors(self, names) -> dict[str, torch.Tensor]:
        sd = self.model.state_dict()
        return {n: sd[n].detach().clone() for n in names}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy ``tensors`` into the model (by state-dict name); backbone tensors among them
        make the features computed so far stale."""
        sd = self.model.state_dict()
        with torch.no_grad():
            for n, t in tensors.items():
                sd[n].copy_(t)
        if any(n.startswith("backbone.") for n in tensors):
            self.features.backbone_changed()

    def touched_names(self, stages, upto: int) -> list[str]:
        """Every tensor that stages ``0..upto`` train (the head always, and the backbone's
        BatchNorm statistics when a stage lets them update)."""
        ids = {id(p) for s in stages[: upto + 1] for p in s.parameters()}
        names = {n for n, p in self.model.named_parameters() if id(p) in ids}
        names |= {n for n, _ in self.model.head.named_parameters(prefix="head")}
        names |= {n for n, _ in self.model.head.named_buffers(prefix="head")}
        if any(s.train_bn and not s.frozen_backbone for s in stages[: upto + 1]):
            names |= {n for n, _ in self.model.named_buffers() if n.startswith("backbone.")}
        return sorted(names)

    # ------------------------------------------------------------------ domain pictures
    @property
    def snapshots(self) -> dict[str, tuple]:
        return self._snapshots.taken if self._snapshots is not None else {}

    def snapshot(self, name: str) -> None:
        """Keep the representation of source validation and target samples under the
        current weights (domain runs only), for the before / after figures."""
        if self._snapshots is not None:
            self._snapshots.take(self, name)

    # ------------------------------------------------------------------ fit
    def fit(self, train, val, *, resume: bool = False, target=None, target_test=None,
            target_labelled=None, unlabelled=None, callbacks: list[Callback] = (),
            test=None, check_images: Callable | None = None) -> FitResult:
        """Train on ``train``, choose on ``val``.

        ``target``: unlabelled samples of the target domain (labels, if any, are dropped
        here); ``target_test``: labelled target samples scored after every epoch for the
        oracle column only; ``target_labelled``: the few target labels granted for training.
        ``unlabelled``: unlabelled samples of the task itself (the rest of a few-shot
        training split), kept as ``"unlabelled"`` for strategies that use them.
        ``callbacks`` run after the engine's own.

        ``test``: samples the caller scores after training (:meth:`evaluate`); when they will
        be scored through cached features, theirs are computed in the same pass as the
        training and validation features.  ``check_images(sets, bad)``: the caller's check of
        the images of ``{"train", "val"[, "test"]}`` before training (``--skip-bad``), which
        returns the sets with the unreadable images left out (and names them): ``bad`` holds
        the positions the feature pass could not decode, when that pass reads every image
        anyway, else ``None`` (the caller then scans the images itself).
        """
        self._test = test
        state = self._start(train, val, target, target_test, target_labelled)
        if check_images is not None:
            self._check_images(state, check_images)
        if unlabelled is not None and len(unlabelled):
            state.data["unlabelled"] = unlabelled
        cbs = self._callbacks(state, resume, target is not None) + list(callbacks)
        self._loop(state, _Fire(cbs, state))
        return self._result(state)

    def _start(self, train, val, target, target_test, target_labelled) -> FitState:
        model = self.model.to(self.device)
        self.strategy.check_backbone(model.backbone)
        self.strategy.attach(model)
        model.to(self.device)
        self.processes.check_batch_size(self.cfg.batch_size)
        self._val = val
        data: dict[str, Any] = {"train": train, "val": val}
        domain = None
        if target is not None:
            domain = DomainData.build(target, target_test, target_labelled, seed=self.cfg.seed)
            data.update(domain.named())
        elif self.strategy.uses_target:
            raise ConfigError(f"strategy {self.strategy.name!r} adapts to a target domain: "
                              "give the unlabelled target data (--target)")
        self.select = self.cfg.selection(domain is not None)
        stages = self.strategy.stages(model, self.cfg)
        if not stages:
            raise ConfigError(f"strategy {self.strategy.name!r} gave no training stage")
        check_something_trains(self.strategy.name, stages, self.cfg.epochs)
        if any(st.solve is not None for st in stages):
            if self.blocks is not None or getattr(model.head, "domain", None) is not None:
                what = "several tasks" if self.blocks is not None else "domain-specific parts"
                raise ConfigError(f"strategy {self.strategy.name!r} solves its head in closed "
                                  f"form; {what} need a strategy that trains by gradient (see "
                                  "`transferkit list strategies`)")
        if domain is not None:
            self._snapshots = Snapshots(domain, val, self.cfg.seed)
        self._domain = domain
        self.state = FitState(trainer=self, model=model, cfg=self.cfg, data=data, stages=stages,
                              criterion=self.select, device=self.device, timing=self.timing,
                              val_is_train=val is train)
        return self.state

    def _callbacks(self, state: FitState, resume: bool, has_target: bool) -> list[Callback]:
        cbs: list[Callback] = [Timing(), ValidationScores()]
        if has_target:
            cbs.append(DomainScores(self._domain))
        cbs += [BestEpoch(), EpochLog(), StageClock(self.cfg.budget_seconds)]
        if self.progress is not None:
            cbs.append(Progress(self.progress))
        if self.run_dir:
            main = self.processes.is_main
            cbs += [History(self.run_dir)] if main else []
            cbs.append(Checkpoint(self.run_dir / "checkpoint", resume, writer=main))
        if self._snapshots is not None:
            cbs.append(self._snapshots)
        return cbs

    def _loop(self, state: FitState, fire: _Fire) -> None:
        fire("on_fit_start")
        while state.stage_index < len(state.stages):
            self._enter_stage(state)
            fire("on_stage_start")
            while state.epoch < state.stage_epochs and not state.stop:
                self._begin_epoch(state)
                fire("on_epoch_start")
                record = self._run_epoch(state, fire)
                state.history.append(record)
                fire("on_epoch_end", record)
                state.epoch += 1
            fire("on_stage_end")
            state.stage_index += 1
            state.epoch, state.stop, state.resumed_mid_stage = 0, False, False
        fire("on_fit_end")

    # ------------------------------------------------------------------ one stage
    def _enter_stage(self, state: FitState) -> None:
        stage = state.stage
        for p in self.model.parameters():
            p.requires_grad_(False)
        for p in stage.parameters():
            p.requires_grad_(True)
        state.cached = self.features.usable(stage)
        state.optimizer = self._optimizer(stage) if stage.groups else None
        state.steps_per_epoch = max(1, math.ceil(len(state.data["train"]) / self.cfg.batch_size))
        state.total_steps = state.steps_per_epoch * stage.epochs
        warm = int(round(stage.warmup_epochs * state.steps_per_epoch))
        state.scheduler = (build_scheduler(state.optimizer, state.total_steps, warm,
                                           self.cfg.schedule) if state.optimizer else None)
        state.candidates, state.solution = [], None
        if stage.solve is not None:
            t0 = time.perf_counter()
            solution = stage.solve(state)
            self.timing["train_s"] += time.perf_counter() - t0
            state.candidates = list(solution.candidates) or [("fit", None)]
            state.solution = dict(solution.info)
        elif state.cached and state.epoch < stage.epochs:
            # once, before the clock of epoch 1, in one pass
            self.features.get_many(self._pass_sets(state))

    def _pass_sets(self, state: FitState) -> dict[str, Any]:
        """The sample sets whose features one pass computes at the start of a stage that
        reads cached features: train and val, and the test samples when no stage from here
        on changes the backbone (they will be scored through the same features)."""
        sets = {"train": state.data["train"], "val": state.data["val"]}
        later = state.stages[state.stage_index:]
        if self._test is not None and all(st.frozen_backbone for st in later):
            sets["test"] = self._test
        return sets

    def _check_images(self, state: FitState, check: Callable) -> None:
        """``check`` (see :meth:`fit`) over train, val and test; with the first stage on
        cached features (one process) the feature pass finds the undecodable images, and
        the features of the images kept are those of that pass."""
        sets = {"train": state.data["train"], "val": state.data["val"]}
        if self._test is not None:
            sets["test"] = self._test
        first, in_pass = state.stages[0], self._pass_sets(state)
        bad = None
        if (self.processes.world == 1 and first.solve is None and first.epochs > 0
                and self.features.usable(first) and in_pass.keys() == sets.keys()):
            bad = self.features.get_many(in_pass, skip_bad=True)
        kept = check(dict(sets), bad)
        for name, gone in (bad or {}).items():
            drop = set(gone)
            self.features.keep(name, [i for i in range(len(sets[name])) if i not in drop])
        state.data["train"], state.data["val"] = kept["train"], kept["val"]
        self._val = kept["val"]
        self._test = kept.get("test")

    def _optimizer(self, stage) -> torch.optim.Optimizer:
        groups = [{"params": list(g.params), "lr": g.lr, "initial_lr": g.lr, "name": g.name}
                  for g in stage.groups if g.params]
        wd = self.cfg.weight_decay
        if self.cfg.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=self.cfg.momentum,
                                   weight_decay=wd)
        if self.cfg.optimizer == "adam":
            return torch.optim.Adam(groups, lr=groups[0]["lr"], weight_decay=wd)
        return torch.optim.AdamW(groups, lr=groups[0]["lr"], weight_decay=wd)

    def _begin_epoch(self, state: FitState) -> None:
        state.epoch_started = time.perf_counter()
        state.epoch_seed = epoch_seed(self.cfg.seed, state.stage_index, state.epoch)
        state.step = state.epoch * state.steps_per_epoch
        torch.manual_seed(state.epoch_seed)

    def _run_epoch(self, state: FitState, fire: _Fire) -> dict[str, Any]:
        stage = state.stage
        record: dict[str, Any] = {"stage": stage.name, "epoch": len(state.history) + 1}
        if stage.solve is not None:
            label, apply = state.candidates[state.epoch]
            if apply is not None:
                apply(self.model)
            return {**record, "train_loss": None, "lr": None, "seconds": 0.0, "setting": label}
        # a head on cached features is a few small ops per batch, too small to split across
        # threads: on a shared CPU, threads waiting for each other made them 10x slower
        one = 1 if state.cached and self.device.type == "cpu" else None
        with intra_op_threads(one):
            train_loss, lr, terms = self._train_batches(state, fire)
        if not stage.frozen_backbone:
            self.features.backbone_changed()
        record.update(train_loss=train_loss, lr=lr)
        record.update({f"term_{k}": v for k, v in terms.items()})
        if not stage.selectable:
            record["selectable"] = False
        return record

    # ------------------------------------------------------------------ batches
    def _train_mode(self, stage) -> None:
        self.model.train()
        if stage.frozen_backbone:
            self.model.backbone.eval()
        elif not stage.train_bn:
            for m in batchnorm_layers(self.model.backbone):
                m.eval()

    def _train_batches(self, state: FitState, fire: _Fire
                       ) -> tuple[float, float | None, dict[str, float]]:
        """One epoch of SGD: the mean training loss, the last learning rate, and the mean of
        each loss term the callbacks added (this process's samples)."""
        cfg, stage, opt = self.cfg, state.stage, state.optimizer
        self._train_mode(stage)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing, reduction="none")
        params = stage.parameters()
        total, count, lr = 0.0, 0, None
        terms: dict[str, float] = {}
        for batch in self._batches(state):
            batch.progress = min(1.0, state.step / max(1, state.total_steps))
            n = len(batch.labels)
            loss = self._batch_loss(batch, loss_fn, fire, state, terms) if n else None
            if opt is not None:
                opt.zero_grad(set_to_none=True)
                if loss is not None:
                    loss.backward()
                self.processes.average_gradients(params, n)
                if cfg.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                opt.step()
                lr = opt.param_groups[-1]["lr"]
                state.scheduler.step()
            if loss is not None:
                total += float(loss.detach()) * n
                count += n
            state.step += 1
        terms = {k: v / max(count, 1) for k, v in terms.items()}
        total, count = self.processes.sum(total, count)
        return total / max(count, 1), lr, terms

    def _batch_loss(self, batch: Batch, loss_fn, fire: _Fire, state: FitState,
                    sums: dict[str, float]) -> torch.Tensor:
        """The task loss of one batch plus every loss term a callback adds (each term's
        value times the batch size is added to ``sums`` under its name)."""
        fire("on_batch_start", batch)
        self._forward(state.stage, batch, state.cached)
        per = per_sample_loss(batch.logits, batch.labels, self.blocks, loss_fn,
                              self.task_weights(state))
        if not state.stage.task_loss:
            loss = per.sum() * 0.0  # the callbacks' terms alone
        elif batch.weights is not None:
            w = batch.weights.to(per.device)
            loss = (per * w).sum() / w.sum().clamp_min(1e-12)
        else:
            loss = per.mean()
        n = len(batch.labels)
        for terms in fire("on_batch", batch):
            for name, term in (terms or {}).items():
                loss = loss + term
                sums[name] = sums.get(name, 0.0) + float(term.detach()) * n
        return loss

    def _batches(self, state: FitState):
        """This process's share of every batch of the epoch (all of it, alone)."""
        train, bs = state.data["train"], self.cfg.batch_size
        if state.cached:
            feats = state.features("train")
            y_all = torch.as_tensor(train.labels)
            g = torch.Generator().manual_seed(state.epoch_seed)
            order = torch.randperm(len(train), generator=g)
            for idx in order.split(bs):
                idx = self.processes.share(idx)
                inputs = self._with_domains({"pooled": feats[idx].to(self.device)}, train, idx)
                yield Batch(inputs, y_all[idx].to(self.device), idx)
            return
        for inputs, labels, idx in self._live_batches(train, state.epoch_seed):
            yield Batch(inputs, labels, idx)

    def _live_batches(self, samples, seed: int):
        """Decoded training batches of ``samples`` in the order of ``seed``: ``(inputs, labels,
        indices)``; in a data-parallel run this process's share of each (``inputs`` is
        ``None`` when its share of a last, short batch is empty)."""
        bs, proc = self.cfg.batch_size, self.processes
        if proc.world == 1:
            for b in self.pipeline.batches(samples, batch_size=bs, train=True, shuffle=True,
                                           seed=seed):
                yield b.inputs, b.labels, b.indices
            return
        order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed))
        shares = [proc.share(idx) for idx in order.split(bs)]
        mine = torch.cat(shares)
        loader = self.pipeline.batches(samples.subset(mine.tolist()),
                                       batch_size=max(1, len(shares[0])), train=True,
                                       shuffle=False, seed=seed, keep_order=True)
        for share in shares:
            if len(share) == 0:
                yield None, torch.zeros(0, dtype=torch.long, device=self.device), share
                continue
            b = next(loader)
            yield b.inputs, b.labels, mine[b.indices]

    def time_per_sample(self, state: FitState, probe: int = 8) -> tuple[float, float] | None:
        """``(decode_s, forward_s)`` per training sample of the current stage: the time
        between the loader's first and second batches (its start-up left out), and one
        forward pass of ``probe`` samples without gradients in evaluation mode (nothing in
        the model changes).  ``(0, 0)`` in a data-parallel run or without training data; a
        trainer whose batches are not the pipeline's returns None (no estimate)."""
        if self.processes.world > 1 or not len(state.data["train"]):
            return 0.0, 0.0
        batches = iter(self._live_batches(state.data["train"], state.epoch_seed))
        inputs, labels, idx = next(batches)
        t0 = time.perf_counter()
        second = next(batches, None)
        decode_s = (time.perf_counter() - t0) / len(second[1]) if second is not None else 0.0
        k = min(probe, len(labels))
        inputs = inputs[:k] if isinstance(inputs, torch.Tensor) else {
            key: v[:k] for key, v in inputs.items()}
        was_training = self.model.training
        self.model.eval()
        t1 = time.perf_counter()
        with torch.no_grad():
            self._forward(state.stage, Batch(inputs, labels[:k], idx[:k]), False)
        forward_s = (time.perf_counter() - t1) / k
        self.model.train(was_training)
        return decode_s, forward_s

    def stream(self, state: FitState, name: str):
        """An endless stream of batches of the named sample set ``name`` (labels unused),
        reshuffled on every pass, as the current stage feeds the model (cached features or
        live inputs); batches of one sample are skipped.  Strategies' callbacks put them in
        ``Batch.streams``."""
        samples, bs = state.data[name], self.cfg.batch_size
        k = 0
        while True:
            k += 1
            s = epoch_seed(state.epoch_seed, 7, k)
            if state.cached:
                feats = state.features(name)
                order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(s))
                for idx in order.split(bs):
                    idx = self.processes.share(idx)
                    if len(idx) > 1:
                        yield {"pooled": feats[idx].to(self.device)}
            else:
                for inputs, _, idx in self._live_batches(samples, s):
                    if len(idx) > 1:
                        yield inputs

    def _with_domains(self, feats: dict, samples, idx) -> dict:
        """``feats`` with each sample's input-domain index (``"domain"``) when ``samples``
        come from several domains; the head's domain-specific parts read it."""
        if samples is None or samples.domains is None or idx is None:
            return feats
        d = torch.as_tensor(samples.domains[np.asarray(idx)], device=self.device)
        return {**feats, "domain": d}

    def _forward(self, stage, batch: Batch, cached: bool) -> None:
        feats, streams = self._forward_features(stage, batch.inputs, batch.streams, cached)
        if not cached:
            feats = self._with_domains(feats, self.state.data["train"] if self.state else None,
                                       batch.indices)
        head = self.model.head
        batch.features = feats
        batch.embed = head.embed(feats)
        batch.logits = head.classify(batch.embed)
        for name, f in streams.items():
            z = head.embed(f)
            batch.outputs[name] = {"embed": z, "logits": head.classify(z)}

    def _forward_features(self, stage, inputs, streams: dict, cached: bool):
        """Backbone features of a batch and of its streams.  When the backbone trains, image
        batches of all of them go through it together, so that BatchNorm sees one joint
        batch (what domain-adversarial training expects)."""
        model = self.model
        if cached:
            return inputs, streams
        if stage.frozen_backbone and model.feature_module is None:
            with torch.no_grad():
                return model.backbone(inputs), {k: model.backbone(v) for k, v in streams.items()}
        if not streams:
            return model.features(inputs), {}
        parts = [inputs, *streams.values()]
        if all(isinstance(x, torch.Tensor) for x in parts):
            both = model.features(torch.cat(parts))
            cuts = np.cumsum([0] + [len(x) for x in parts]).tolist()
            split = [{k: v[a:b] for k, v in both.items()} for a, b in zip(cuts, cuts[1:])]
            return split[0], dict(zip(streams, split[1:]))
        return model.features(inputs), {k: model.features(v) for k, v in streams.items()}

    # ------------------------------------------------------------------ result
    def _result(self, state: FitState) -> FitResult:
        touched = self.touched_names(state.stages, len(state.stages) - 1)
        keep = set(touched)
        trainable = sum(p.numel() for n, p in self.model.named_parameters() if n in keep)
        total = sum(p.numel() for p in self.model.parameters())
        selection = None
        if self._domain is not None:
            selection = summarize_selection(state.history, self.select, state.best.epoch)
        return FitResult(best_epoch=state.best.epoch, best_stage=state.best.stage,
                         history=state.history, val=state.best.metrics, timing=dict(self.timing),
                         trainable_params=trainable, total_params=total,
                         closed_form=state.solution, touched=touched, selection=selection)
