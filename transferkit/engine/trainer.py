"""The one training loop every strategy runs through.

``Trainer.fit`` walks the strategy's stages.  A stage whose backbone is frozen trains the head
on cached features when it can (pooled features, no per-epoch augmentation); otherwise batches
go through the whole model.  After every epoch the validation split is scored, the best epoch
(validation accuracy, then validation loss) is kept, and a checkpoint is written atomically, so
an interrupted run resumes where it stopped and ends with the same figures.  Every epoch seeds
its own random state from (seed, stage, epoch), which is what makes resuming exact.

With a target domain (``fit(..., target=...)``) the loop also draws unlabelled target batches
for strategies whose stage asks for them (``Stage.domain``) and adds the strategy's
``domain_terms``; after every epoch it scores label-free selection criteria on the target
(see :mod:`transferkit.engine.domain`) and, when the target's test split is labelled, the
target accuracy for the oracle column; that accuracy is recorded, never used for a choice.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..io import load_state_tree, save_state_tree, save_tensors, write_json, write_text
from .cache import FeatureCache
from .config import TrainConfig
from .domain import DomainData, selection_key
from .inputs import InputPipeline
from .metrics import classification_metrics


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


def epoch_seed(seed: int, stage: int, epoch: int) -> int:
    return (seed * 1_000_003 + stage * 10_007 + epoch) % (2**31 - 1)


def _bn_modules(module: nn.Module):
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    t = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - t)
    return 0.5 * (1.0 + math.cos(math.pi * t))


def _better(key, best, min_delta: float = 1e-4) -> bool:
    """Higher validation accuracy wins; at equal accuracy, a validation loss lower by more
    than ``min_delta``."""
    if best is None:
        return True
    if key[0] != best[0]:
        return key[0] > best[0]
    return key[1] > best[1] + min_delta


class Trainer:
    def __init__(self, model: nn.Module, strategy, cfg: TrainConfig, *, run_dir: Path | None = None,
                 cache: FeatureCache | None = None, log: Callable[[str], None] = print,
                 progress=None, device=None):
        self.model = model
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
        self._feat: dict[str, torch.Tensor] = {}
        self._weights: torch.Tensor | None = None
        self.domain = None
        self.select = "source-val"
        self.snapshots: dict[str, tuple] = {}

    # ------------------------------------------------------------------ features
    def cacheable(self, stage) -> bool:
        bb = self.model.backbone
        if not stage.frozen_backbone or self.model.head.kind == "bilstm":
            return False
        if self.model.features_fn is not None:
            return False
        if self.cfg.augment and bb.modality == "image":
            return False
        return not getattr(self.strategy, "needs_live_backbone", False)

    def _backbone_changed(self) -> None:
        """The backbone's weights changed: features computed so far are stale, and features
        of these weights must never reach the persistent cache (its key names the
        pretrained weights)."""
        self._feat.clear()
        self._live_weights = True

    _live_weights = False

    def split_features(self, name: str, samples) -> torch.Tensor:
        if name not in self._feat:
            t0 = time.perf_counter()
            bb = self.model.backbone
            cache = self.cache
            if self._live_weights or not getattr(bb, "pretrained", True):
                cache = FeatureCache(enabled=False, runtime="torch")
            self._feat[name] = cache.features(bb, self.pipeline, samples,
                                              batch_size=self.cfg.eval_batch_size,
                                              progress=self.progress)
            self.timing["features_s"] += time.perf_counter() - t0
        return self._feat[name]

    _val = None

    # ------------------------------------------------------------------ evaluation
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
        zs: list[torch.Tensor] = []
        lgs: list[torch.Tensor] = []
        if features is not None:
            for i in range(0, len(features), 1024):
                z = head.embed({"pooled": features[i:i + 1024].to(self.device)})
                zs.append(z.float().cpu())
                lgs.append(head.fc(z).float().cpu())
            if not zs:
                return np.zeros((0, head.embed_dim), np.float32), np.zeros((0, k), np.float32)
            return torch.cat(zs).numpy(), torch.cat(lgs).numpy()
        z_all = np.zeros((n, head.embed_dim), dtype=np.float32)
        lg_all = np.zeros((n, k), dtype=np.float32)
        for b in self.pipeline.batches(samples, batch_size=self.cfg.eval_batch_size):
            z = head.embed(model.features(b.inputs))
            idx = b.indices.numpy()
            z_all[idx] = z.float().cpu().numpy()
            lg_all[idx] = head.fc(z).float().cpu().numpy()
        return z_all, lg_all

    def split_outputs(self, name: str, samples, use_cache: bool) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`outputs`, reading the backbone features of ``samples`` from the cache
        (under ``name``) when ``use_cache``."""
        feats = self.split_features(name, samples) if use_cache else None
        return self.outputs(samples, features=feats)

    def logits(self, samples, *, features: torch.Tensor | None = None) -> np.ndarray:
        return self.outputs(samples, features=features)[1]

    def evaluate(self, samples, *, use_cache: bool) -> dict[str, Any]:
        feats = None
        if use_cache:
            feats = self.split_features("val" if samples is self._val else f"eval:{id(samples)}", samples)
        t0 = time.perf_counter()
        lg = self.logits(samples, features=feats)
        m = classification_metrics(lg, samples.labels, self.model.classes)
        self.timing["eval_s"] += time.perf_counter() - t0
        return m

    # ------------------------------------------------------------------ training
    def _set_trainable(self, stage) -> None:
        for p in self.model.parameters():
            p.requires_grad_(False)
        for p in stage.parameters():
            p.requires_grad_(True)

    def _train_mode(self, stage) -> None:
        self.model.train()
        if stage.frozen_backbone:
            self.model.backbone.eval()
        elif not stage.train_bn:
            for m in _bn_modules(self.model.backbone):
                m.eval()

    def _optimizer(self, stage) -> torch.optim.Optimizer:
        groups = [{"params": [p for p in g.params], "lr": g.lr, "initial_lr": g.lr, "name": g.name}
                  for g in stage.groups if g.params]
        wd = self.cfg.weight_decay
        if self.cfg.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=self.cfg.momentum,
                                   weight_decay=wd)
        if self.cfg.optimizer == "adam":
            return torch.optim.Adam(groups, lr=groups[0]["lr"], weight_decay=wd)
        return torch.optim.AdamW(groups, lr=groups[0]["lr"], weight_decay=wd)

    def _touched_names(self, stages, upto: int) -> list[str]:
        ids = {id(p) for s in stages[: upto + 1] for p in s.parameters()}
        names = {n for n, p in self.model.named_parameters() if id(p) in ids}
        names |= {n for n, _ in self.model.head.named_parameters(prefix="head")}
        names |= {n for n, _ in self.model.head.named_buffers(prefix="head")}
        if any(s.train_bn and not s.frozen_backbone for s in stages[: upto + 1]):
            names |= {n for n, _ in self.model.named_buffers() if n.startswith("backbone.")}
        return sorted(names)

    def _state(self, names) -> dict[str, torch.Tensor]:
        sd = self.model.state_dict()
        return {n: sd[n].detach().clone() for n in names}

    def _load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        sd = self.model.state_dict()
        with torch.no_grad():
            for n, t in tensors.items():
                sd[n].copy_(t)

    def fit(self, train, val, *, resume: bool = False, target=None, target_test=None,
            target_labelled=None) -> FitResult:
        """Train on ``train``, choose on ``val``.

        ``target``: unlabelled samples of the target domain (labels, if any, are dropped
        here); ``target_test``: labelled target samples scored after every epoch for the
        oracle column only; ``target_labelled``: the few target labels granted for training
        (strategies that need them, e.g. TrAdaBoost, get them separately; the api adds them
        to ``train`` for the others).
        """
        cfg = self.cfg
        self._val = val
        model = self.model.to(self.device)
        self.strategy.check_backbone(model.backbone)
        self.strategy.prepare(model)
        model.to(self.device)
        self.domain = DomainData.build(target, target_test, target_labelled, seed=cfg.seed) \
            if target is not None else None
        if self.domain is None and getattr(self.strategy, "uses_target", False):
            raise ConfigError(f"strategy {self.strategy.name!r} adapts to a target domain: "
                              "give the unlabelled target data (--target)")
        self.select = cfg.selection(self.domain is not None)
        stages = self.strategy.stages(model, cfg)
        if not stages:
            raise ConfigError(f"strategy {self.strategy.name!r} gave no training stage")
        t_start = time.perf_counter()
        history: list[dict[str, Any]] = []
        best: dict[str, Any] = {"key": None, "epoch": None, "stage": None, "state": None}
        start_stage, start_epoch, bad_epochs = 0, 0, 0
        ckpt = self.run_dir / "checkpoint" if self.run_dir else None
        if resume and ckpt and (ckpt / "state.json").exists():
            start_stage, start_epoch, bad_epochs, history, best = self._load_checkpoint(ckpt, stages)
            self.log(f"resuming at stage {stages[start_stage].name!r}, epoch {start_epoch + 1}")

        closed = None
        # a closed-form strategy fits its last stage in closed form, after any SGD stages
        sgd_stages = stages[:-1] if self.strategy.closed_form else stages
        for si in range(start_stage, len(sgd_stages)):
            stage = stages[si]
            self._set_trainable(stage)
            trainable = sum(p.numel() for p in stage.parameters())
            total = sum(p.numel() for p in model.parameters())
            self.log(f"stage {stage.name}: trainable {trainable:,} / {total:,} "
                     f"({100 * trainable / max(total, 1):.1f}%), {stage.epochs} epochs"
                     + ("" if self.cacheable(stage) else
                        (" (backbone re-run every epoch: augmentation varies per epoch)"
                         if stage.frozen_backbone and cfg.augment else "")))
            first = start_epoch if si == start_stage else 0
            opt = self._optimizer(stage) if stage.groups else None
            if si == start_stage and first > 0 and opt is not None and ckpt:
                opt.load_state_dict(load_state_tree(ckpt / "optimizer", self.device))
            if si != start_stage:
                bad_epochs = 0
            steps_per_epoch = self._steps_per_epoch(stage, train)
            total_steps = steps_per_epoch * stage.epochs
            warm = int(round(stage.warmup_epochs * steps_per_epoch))
            touched = self._touched_names(stages, si)
            if self.cacheable(stage) and first < stage.epochs:
                self.split_features("train", train)  # once, before the clock of epoch 1
                self.split_features("val", val)
            self._weights = self._instance_weights(stage, train)
            stopped = False
            for ep in range(first, stage.epochs):
                if stopped:
                    break
                t0 = time.perf_counter()
                seed = epoch_seed(cfg.seed, si, ep)
                torch.manual_seed(seed)
                train_loss = self._train_epoch(stage, opt, train, seed=seed,
                                               step0=ep * steps_per_epoch,
                                               total_steps=total_steps, warmup=warm)
                self.timing["train_s"] += time.perf_counter() - t0
                if not stage.frozen_backbone:
                    self._backbone_changed()
                rec, key, m = self._score_epoch(stage, val)
                rec = {"stage": stage.name, "epoch": len(history) + 1, "train_loss": train_loss,
                       **rec, **({} if stage.selectable else {"selectable": False}),
                       "lr": opt.param_groups[-1]["lr"] if opt else None,
                       "seconds": round(time.perf_counter() - t0, 3)}
                history.append(rec)
                improved = stage.selectable and _better(key, best["key"])
                if improved:
                    best = {"key": key, "epoch": rec["epoch"], "stage": stage.name,
                            "state": self._state(touched), "metrics": m}
                    bad_epochs = 0
                elif stage.selectable:
                    bad_epochs += 1
                self.log(self._epoch_line(rec, stage, train_loss, improved))
                if self.run_dir:
                    self._write_history(history)
                if cfg.patience and bad_epochs >= cfg.patience:
                    self.log(f"  early stop: no improvement of {self.select} in {cfg.patience} epochs")
                    stopped = True
                if ckpt:
                    done = stage.epochs if stopped else ep + 1
                    self._save_checkpoint(ckpt, si, done, bad_epochs, history, best, touched, opt)
            # the next stage starts from the best weights so far
            if best["state"] is not None:
                self._load_state(best["state"])
                if not stage.frozen_backbone:
                    self._backbone_changed()
            self.strategy.stage_done(self, stage)

        if self.strategy.closed_form:
            stage = stages[-1]
            self._set_trainable(stage)
            x_tr = self.split_features("train", train)
            x_va = self.split_features("val", val)
            kw = {}
            if getattr(self.strategy, "uses_target", False):
                kw["x_target"] = self.split_features("target", self.domain.target)
                if self.domain.labelled is not None:
                    kw["x_target_labelled"] = self.split_features("target_labelled",
                                                                  self.domain.labelled)
                    kw["y_target_labelled"] = torch.as_tensor(self.domain.labelled.labels)
            t0 = time.perf_counter()
            closed = self.strategy.fit_closed_form(model, x_tr, torch.as_tensor(train.labels),
                                                   x_va, torch.as_tensor(val.labels), cfg.seed,
                                                   **kw)
            self.timing["train_s"] += time.perf_counter() - t0
            touched = self._touched_names(stages, len(stages) - 1)
            # the closed-form settings compete among themselves (never with earlier stages)
            candidates = (closed or {}).pop("candidates", None) or [("fit", None)]
            best = {"key": None, "epoch": None, "stage": None, "state": None}
            for label, apply in candidates:
                if apply is not None:
                    apply(model)
                rec, key, m = self._score_epoch(stage, val)
                rec = {"stage": stage.name, "epoch": len(history) + 1, "train_loss": None,
                       **rec, "lr": None, "seconds": 0.0, "setting": label}
                history.append(rec)
                improved = _better(key, best["key"])
                if improved:
                    best = {"key": key, "epoch": rec["epoch"], "stage": stage.name,
                            "state": self._state(touched), "metrics": m, "setting": label}
                self.log(self._epoch_line(rec, stage, None, improved) + f"  [{label}]")
            if closed is not None and len(candidates) > 1:
                closed["chosen"] = best["setting"]
            if best["state"] is not None:
                self._load_state(best["state"])
        touched = self._touched_names(stages, len(stages) - 1)
        if best["state"] is not None:
            self._load_state(best["state"])
        self.timing["total_s"] = time.perf_counter() - t_start
        self.timing["features_computed_s"] = self.cache.compute_s
        trainable = sum(p.numel() for n, p in model.named_parameters() if n in set(touched))
        total = sum(p.numel() for p in model.parameters())
        if self.run_dir:
            self._write_history(history)
        selection = None
        if self.domain is not None:
            from .domain import summarize_selection

            selection = summarize_selection(history, self.select, best["epoch"])
        return FitResult(best_epoch=best["epoch"], best_stage=best["stage"], history=history,
                         val=best.get("metrics"), timing=dict(self.timing),
                         trainable_params=trainable, total_params=total, closed_form=closed,
                         touched=touched, selection=selection)

    # ------------------------------------------------------------------ domain pictures
    SNAPSHOT_SAMPLES = 300

    def snapshot(self, name: str) -> None:
        """Keep the representation of (at most 300) source validation and target samples
        under the current weights, for the before / after figures of a domain run."""
        if self.domain is None or self._val is None:
            return
        val, tgt = self._val, self.domain.scoring
        rng = np.random.default_rng(self.cfg.seed)
        if len(val) > self.SNAPSHOT_SAMPLES:
            val = val.subset(sorted(rng.choice(len(val), self.SNAPSHOT_SAMPLES, replace=False).tolist()))
        if len(tgt) > self.SNAPSHOT_SAMPLES:
            tgt = tgt.subset(sorted(rng.choice(len(tgt), self.SNAPSHOT_SAMPLES, replace=False).tolist()))
        use_cache = self.model.features_fn is None and self.model.head.kind != "bilstm"
        z_s, _ = self.split_outputs(f"snap_val_{name}", val, use_cache)
        z_t, _ = self.split_outputs(f"snap_tgt_{name}", tgt, use_cache)
        self.snapshots[name] = (z_s, z_t, np.asarray(val.labels))

    # ------------------------------------------------------------------ per-epoch scores
    def _score_epoch(self, stage, val):
        """Validation metrics, the domain scores when there is a target, and the key by which
        this epoch competes under the selection criterion."""
        use_cache = self.cacheable(stage)
        if self.domain is None:
            m = self.evaluate(val, use_cache=use_cache)
            domain_scores = {}
        else:
            t0 = time.perf_counter()
            z_v, lg_v = self.split_outputs("val", val, use_cache)  # one pass serves both
            m = classification_metrics(lg_v, val.labels, self.model.classes)
            domain_scores = self.domain.scores(self, z_v, lg_v, val.labels, use_cache=use_cache)
            self.timing["eval_s"] += time.perf_counter() - t0
        rec = {"val_loss": m["loss"], "val_accuracy": m["accuracy"], "val_macro_f1": m["macro_f1"],
               **domain_scores}
        return rec, selection_key(self.select, rec), m

    def _epoch_line(self, rec, stage, train_loss, improved) -> str:
        line = (f"  epoch {rec['epoch']:3d} [{stage.name}] "
                + (f"train loss {train_loss:.4f}  " if train_loss is not None else "")
                + f"val loss {rec['val_loss']:.4f}  val acc {rec['val_accuracy']:.4f}")
        if "target_entropy" in rec:
            line += f"  tgt entropy {rec['target_entropy']:.3f}  dev {rec['dev_risk']:.3f}"
        if rec.get("oracle_target_accuracy") is not None:
            line += f"  (oracle tgt acc {rec['oracle_target_accuracy']:.4f})"
        return line + ("  *" if improved else "")

    def _instance_weights(self, stage, train) -> torch.Tensor | None:
        if not getattr(stage, "weighted", False):
            return None
        x_s = self.split_features("train", train)
        x_t = self.split_features("target", self.domain.target)
        w = self.strategy.instance_weights(x_s, x_t, self.cfg.seed)
        w = torch.as_tensor(np.asarray(w, dtype=np.float32))
        self.log(f"  instance weights: mean {float(w.mean()):.3f}, min {float(w.min()):.3f}, "
                 f"max {float(w.max()):.3f}, effective sample size "
                 f"{float(w.sum() ** 2 / (w ** 2).sum()):.0f} / {len(w)}")
        return w

    def _steps_per_epoch(self, stage, train) -> int:
        return max(1, math.ceil(len(train) / self.cfg.batch_size))

    def _train_epoch(self, stage, opt, train, *, seed: int, step0: int, total_steps: int,
                     warmup: int) -> float:
        cfg = self.cfg
        model = self.model
        self._train_mode(stage)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing, reduction="none")
        use_cache = self.cacheable(stage)
        if use_cache:
            feats = self.split_features("train", train)
            y_all = torch.as_tensor(train.labels)
            g = torch.Generator().manual_seed(seed)
            order = torch.randperm(len(train), generator=g)
            batches = (({"pooled": feats[idx].to(self.device)}, y_all[idx].to(self.device), idx)
                       for idx in order.split(cfg.batch_size))
        else:
            batches = ((b.inputs, b.labels, b.indices) for b in
                       self.pipeline.batches(train, batch_size=cfg.batch_size, train=True,
                                             shuffle=True, seed=seed))
        targets = self._target_batches(stage, use_cache, seed) if stage.domain else None
        total, count, step = 0.0, 0, step0
        params = stage.parameters()
        task = None
        if self.progress is not None and not use_cache:
            task = self.progress.add_task(f"train [{stage.name}]",
                                          total=self._steps_per_epoch(stage, train))
        for inputs, y, idx in batches:
            f = lr_factor(step, total_steps, warmup, cfg.schedule)
            for g_ in opt.param_groups:
                g_["lr"] = g_["initial_lr"] * f
            x_t = next(targets) if targets is not None else None
            feats_b, feats_t = self._forward_features(stage, inputs, x_t, use_cache)
            z = model.head.embed(feats_b)
            logits = model.head.fc(model.head.dropout(z))
            per = loss_fn(logits, y)
            if self._weights is not None:
                w = self._weights[idx].to(per.device)
                loss = (per * w).sum() / w.sum().clamp_min(1e-12)
            else:
                loss = per.mean()
            for name, term in self.strategy.loss_terms(model, feats_b, logits, y).items():
                loss = loss + term
            if feats_t is not None:
                z_t = model.head.embed(feats_t)
                logits_t = model.head.fc(model.head.dropout(z_t))
                progress = min(1.0, step / max(1, total_steps))
                terms = self.strategy.domain_terms(
                    model, {"embed": z, "logits": logits, "labels": y},
                    {"embed": z_t, "logits": logits_t}, progress)
                for name, term in terms.items():
                    loss = loss + term
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            total += float(loss.detach()) * len(y)
            count += len(y)
            step += 1
            if task is not None:
                self.progress.advance(task)
        if task is not None:
            self.progress.remove_task(task)
        return total / max(count, 1)

    def _forward_features(self, stage, inputs, x_t, use_cache):
        """Backbone features of a source batch (and of a target batch, if any).  When the
        backbone trains, image batches of both domains go through it together, so that
        BatchNorm sees one joint batch (as DANN does)."""
        model = self.model
        if use_cache:
            return inputs, x_t
        if stage.frozen_backbone and model.features_fn is None:
            with torch.no_grad():
                return model.backbone(inputs), (model.backbone(x_t) if x_t is not None else None)
        if x_t is None:
            return model.features(inputs), None
        if isinstance(inputs, torch.Tensor) and isinstance(x_t, torch.Tensor):
            n = len(inputs)
            both = model.features(torch.cat([inputs, x_t]))
            return ({k: v[:n] for k, v in both.items()}, {k: v[n:] for k, v in both.items()})
        return model.features(inputs), model.features(x_t)

    def _target_batches(self, stage, use_cache: bool, seed: int):
        """An endless stream of unlabelled target batches (reshuffled each pass)."""
        target = self.domain.target
        bs = self.cfg.batch_size
        k = 0
        while True:
            k += 1
            s = epoch_seed(seed, 7, k)
            if use_cache:
                feats = self.split_features("target", target)
                order = torch.randperm(len(target), generator=torch.Generator().manual_seed(s))
                for idx in order.split(bs):
                    if len(idx) > 1:
                        yield {"pooled": feats[idx].to(self.device)}
            else:
                for b in self.pipeline.batches(target, batch_size=bs, train=True, shuffle=True,
                                               seed=s):
                    if len(b.indices) > 1:
                        yield b.inputs

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, ckpt: Path, stage: int, epoch: int, bad_epochs: int, history,
                         best, touched, opt) -> None:
        save_tensors(ckpt / "model.safetensors", self._state(touched))
        if best["state"] is not None:
            save_tensors(ckpt / "best.safetensors", best["state"])
        if opt is not None:
            save_state_tree(ckpt / "optimizer", opt.state_dict())
        write_json(ckpt / "state.json", {
            "stage": stage, "epoch": epoch, "bad_epochs": bad_epochs, "history": history,
            "best": {"key": list(best["key"]) if best["key"] else None, "epoch": best["epoch"],
                     "stage": best["stage"],
                     "metrics": best.get("metrics")},
        })

    def _load_checkpoint(self, ckpt: Path, stages):
        from safetensors.torch import load_file

        st = json.loads((ckpt / "state.json").read_text())
        self._load_state(load_file(str(ckpt / "model.safetensors")))
        best = {"key": tuple(st["best"]["key"]) if st["best"]["key"] else None,
                "epoch": st["best"]["epoch"], "stage": st["best"]["stage"],
                "metrics": st["best"].get("metrics"), "state": None}
        if (ckpt / "best.safetensors").exists():
            best["state"] = load_file(str(ckpt / "best.safetensors"))
        stage, epoch = st["stage"], st["epoch"]
        for s in stages[:stage]:
            self._set_trainable(s)
        if epoch >= stages[stage].epochs:
            # that stage had finished: start the next from the best weights, as a full run does
            if best["state"] is not None:
                self._load_state(best["state"])
            stage, epoch = stage + 1, 0
        return stage, epoch, st["bad_epochs"], st["history"], best

    def _write_history(self, history) -> None:
        cols = ["stage", "epoch", "train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr", "seconds"]
        extra = ["setting", "target_entropy", "dev_risk", "iw_val_accuracy",
                 "oracle_target_accuracy"]
        cols += [c for c in extra if any(h.get(c) is not None for h in history)]
        lines = [",".join(cols)] + [",".join("" if h.get(c) is None else str(h.get(c)) for c in cols)
                                    for h in history]
        write_text(self.run_dir / "history.csv", "\n".join(lines) + "\n")
