"""The one training loop every strategy runs through.

``Trainer.fit`` walks the strategy's stages.  A stage whose backbone is frozen trains the head
on cached features when it can (pooled features, no per-epoch augmentation); otherwise batches
go through the whole model.  After every epoch the validation split is scored, the best epoch
(validation accuracy, then validation loss) is kept, and a checkpoint is written atomically, so
an interrupted run resumes where it stopped and ends with the same figures.  Every epoch seeds
its own random state from (seed, stage, epoch), which is what makes resuming exact.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..io import save_tensors, write_json, write_text
from .cache import FeatureCache
from .config import TrainConfig
from .inputs import InputPipeline
from .metrics import classification_metrics, summary


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

    def split_features(self, name: str, samples) -> torch.Tensor:
        if name not in self._feat:
            t0 = time.perf_counter()
            self._feat[name] = self.cache.features(self.model.backbone, self.pipeline, samples,
                                                   batch_size=self.cfg.eval_batch_size,
                                                   progress=self.progress)
            self.timing["features_s"] += time.perf_counter() - t0
        return self._feat[name]

    _val = None

    # ------------------------------------------------------------------ evaluation
    @torch.inference_mode()
    def logits(self, samples, *, features: torch.Tensor | None = None) -> np.ndarray:
        model = self.model
        model.eval()
        if features is not None:
            outs = [model.head({"pooled": features[i:i + 1024].to(self.device)}).float().cpu()
                    for i in range(0, len(features), 1024)]
            return torch.cat(outs).numpy() if outs else np.zeros((0, len(model.classes)))
        out = np.zeros((len(samples), len(model.classes)), dtype=np.float32)
        for b in self.pipeline.batches(samples, batch_size=self.cfg.eval_batch_size):
            out[b.indices.numpy()] = model(b.inputs).float().cpu().numpy()
        return out

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

    def fit(self, train, val, *, resume: bool = False) -> FitResult:
        cfg = self.cfg
        self._val = val
        model = self.model.to(self.device)
        self.strategy.check_backbone(model.backbone)
        self.strategy.prepare(model)
        model.to(self.device)
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
        if self.strategy.closed_form:
            self._set_trainable(stages[0])
            x_tr = self.split_features("train", train)
            x_va = self.split_features("val", val)
            t0 = time.perf_counter()
            closed = self.strategy.fit_closed_form(model, x_tr, torch.as_tensor(train.labels),
                                                   x_va, torch.as_tensor(val.labels), cfg.seed)
            self.timing["train_s"] += time.perf_counter() - t0
            m = self.evaluate(val, use_cache=True)
            history.append({"stage": stages[0].name, "epoch": 1, "train_loss": None,
                            "val_loss": m["loss"], "val_accuracy": m["accuracy"],
                            "val_macro_f1": m["macro_f1"], "lr": None, "seconds": 0.0})
            best = {"key": (m["accuracy"], -m["loss"]), "epoch": 1, "stage": stages[0].name,
                    "state": None, "metrics": m}
            touched = self._touched_names(stages, 0)
        else:
            for si in range(start_stage, len(stages)):
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
                    opt.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location=self.device,
                                                   weights_only=True))
                if si != start_stage:
                    bad_epochs = 0
                steps_per_epoch = self._steps_per_epoch(stage, train)
                total_steps = steps_per_epoch * stage.epochs
                warm = int(round(stage.warmup_epochs * steps_per_epoch))
                touched = self._touched_names(stages, si)
                if self.cacheable(stage) and first < stage.epochs:
                    self.split_features("train", train)  # once, before the clock of epoch 1
                    self.split_features("val", val)
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
                    m = self.evaluate(val, use_cache=self.cacheable(stage))
                    key = (m["accuracy"], -m["loss"])
                    gep = len(history) + 1
                    rec = {"stage": stage.name, "epoch": gep, "train_loss": train_loss,
                           "val_loss": m["loss"], "val_accuracy": m["accuracy"],
                           "val_macro_f1": m["macro_f1"],
                           "lr": opt.param_groups[-1]["lr"] if opt else None,
                           "seconds": round(time.perf_counter() - t0, 3)}
                    history.append(rec)
                    improved = stage.selectable and _better(key, best["key"])
                    if improved:
                        best = {"key": key, "epoch": gep, "stage": stage.name,
                                "state": self._state(touched), "metrics": m}
                        bad_epochs = 0
                    elif stage.selectable:
                        bad_epochs += 1
                    self.log(f"  epoch {gep:3d} [{stage.name}] train loss {train_loss:.4f}  "
                             f"val loss {m['loss']:.4f}  val acc {m['accuracy']:.4f}"
                             + ("  *" if improved else ""))
                    if self.run_dir:
                        self._write_history(history)
                    if cfg.patience and bad_epochs >= cfg.patience:
                        self.log(f"  early stop: no val improvement in {cfg.patience} epochs")
                        stopped = True
                    if ckpt:
                        done = stage.epochs if stopped else ep + 1
                        self._save_checkpoint(ckpt, si, done, bad_epochs, history, best, touched, opt)
                # the next stage starts from the best weights so far
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
        return FitResult(best_epoch=best["epoch"], best_stage=best["stage"], history=history,
                         val=best.get("metrics"), timing=dict(self.timing),
                         trainable_params=trainable, total_params=total, closed_form=closed,
                         touched=touched)

    def _steps_per_epoch(self, stage, train) -> int:
        return max(1, math.ceil(len(train) / self.cfg.batch_size))

    def _train_epoch(self, stage, opt, train, *, seed: int, step0: int, total_steps: int,
                     warmup: int) -> float:
        cfg = self.cfg
        model = self.model
        self._train_mode(stage)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        use_cache = self.cacheable(stage)
        if use_cache:
            feats = self.split_features("train", train)
            y_all = torch.as_tensor(train.labels)
            g = torch.Generator().manual_seed(seed)
            order = torch.randperm(len(train), generator=g)
            batches = ((({"pooled": feats[idx].to(self.device)}), y_all[idx].to(self.device))
                       for idx in order.split(cfg.batch_size))
        else:
            batches = ((b.inputs, b.labels) for b in
                       self.pipeline.batches(train, batch_size=cfg.batch_size, train=True,
                                             shuffle=True, seed=seed))
        total, count, step = 0.0, 0, step0
        params = stage.parameters()
        task = None
        if self.progress is not None and not use_cache:
            task = self.progress.add_task(f"train [{stage.name}]",
                                          total=self._steps_per_epoch(stage, train))
        for inputs, y in batches:
            f = lr_factor(step, total_steps, warmup, cfg.schedule)
            for g_ in opt.param_groups:
                g_["lr"] = g_["initial_lr"] * f
            if use_cache:
                feats_b = inputs
            elif stage.frozen_backbone and model.features_fn is None:
                with torch.no_grad():
                    feats_b = model.backbone(inputs)
            else:
                feats_b = model.features(inputs)
            logits = model.head(feats_b)
            loss = loss_fn(logits, y)
            for name, term in self.strategy.loss_terms(model, feats_b, logits, y).items():
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

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, ckpt: Path, stage: int, epoch: int, bad_epochs: int, history,
                         best, touched, opt) -> None:
        save_tensors(ckpt / "model.safetensors", self._state(touched))
        if best["state"] is not None:
            save_tensors(ckpt / "best.safetensors", best["state"])
        if opt is not None:
            import io as _io

            buf = _io.BytesIO()
            torch.save(opt.state_dict(), buf)
            from ..io import write_bytes

            write_bytes(ckpt / "optimizer.pt", buf.getvalue())
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
        lines = [",".join(cols)] + [",".join("" if h.get(c) is None else str(h.get(c)) for c in cols)
                                    for h in history]
        write_text(self.run_dir / "history.csv", "\n".join(lines) + "\n")
