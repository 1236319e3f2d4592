"""The engine's loop, run for detection: :class:`DetectionTrainer` is the engine's
:class:`~transferkit.engine.trainer.Trainer` with the detection task's batches (images and
their boxes), loss (the head's FCOS terms plus every loss term a callback adds) and
scores (COCO mAP on validation after every epoch, the selection key).  Stages, epochs,
optimizers, schedules, best-epoch selection, early stopping, history and checkpoints are
the engine's own.

While a stage keeps the backbone frozen, the backbone's feature maps of every image are
computed once and kept in memory; they are recomputed after a stage that trains the
backbone.  ``--augment`` flips a random half of the training images horizontally every
epoch (their boxes with them); a frozen stage then keeps the maps of the flipped training
images as well (one more backbone pass over them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..events import Batch, Callback
from ..engine.callbacks import ValidationScores
from ..engine.trainer import Trainer
from .metrics import detection_metrics
from .model import normalise

#: keep feature maps in memory up to this many bytes per image set (else run the backbone)
MAP_MEMORY_LIMIT = 2 * 1024**3


@dataclass
class ImageSet:
    """A split ready for the loop: its samples, every image decoded and resized once
    (``(N, S, S, 3)`` uint8), and the boxes scaled to the ``S`` x ``S`` square."""

    samples: Any
    images: np.ndarray
    boxes: list

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list:
        return self.samples.labels

    def targets(self, idx, device, flip=None) -> list[dict[str, torch.Tensor]]:
        """Boxes and labels of the images ``idx``; ``flip[k]``: image ``idx[k]`` is fed
        mirrored left to right, its boxes with it."""
        out = []
        for k, i in enumerate(idx):
            boxes = torch.as_tensor(self.boxes[i], dtype=torch.float32, device=device)
            if flip is not None and flip[k]:
                boxes = torch.stack([self.images.shape[2] - boxes[:, 2], boxes[:, 1],
                                     self.images.shape[2] - boxes[:, 0], boxes[:, 3]], dim=1)
            out.append({"boxes": boxes, "labels": torch.as_tensor(
                self.samples.labels[i], dtype=torch.int64, device=device)})
        return out


class DetectionScores(Callback):
    """COCO mAP of the validation split after every epoch, in the epoch's record
    (``val_map50``, ``val_map``): what :class:`~transferkit.engine.callbacks.BestEpoch`
    selects on (criterion ``map``)."""

    def on_epoch_end(self, state, record) -> None:
        t0 = time.perf_counter()
        m = state.trainer.detection_scores(state.data["val"], frozen=state.stage.frozen_backbone)
        state.val_metrics = m
        record.update(val_map50=round(m["map50"], 6), val_map=round(m["map"], 6))
        state.timing["eval_s"] += time.perf_counter() - t0


class DetectionTrainer(Trainer):
    """The engine's loop over a detection model (:class:`~.model.DetectionModel`) and
    :class:`ImageSet` splits."""

    epoch_scores = (("val_map50", "val mAP50"), ("val_map", "val mAP"))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._maps: dict[tuple[int, bool], list[torch.Tensor] | None] = {}

    # ------------------------------------------------------------------ set-up
    def _start(self, *args):
        state = super()._start(*args)
        self.select = state.criterion = "map"
        return state

    def _callbacks(self, state, resume: bool, has_target: bool) -> list[Callback]:
        cbs = super()._callbacks(state, resume, has_target)
        return [DetectionScores() if isinstance(cb, ValidationScores) else cb for cb in cbs]

    # ------------------------------------------------------------------ feature maps
    def _inputs(self, data: ImageSet, idx, flip=None) -> torch.Tensor:
        x = torch.from_numpy(data.images[np.asarray(idx)])
        if flip is not None:
            x = torch.where(torch.as_tensor(flip).view(-1, 1, 1, 1), x.flip(2), x)
        return normalise(x, self.model.backbone.preprocess).to(self.device)

    def _kept_maps(self, data: ImageSet, flipped: bool = False) -> list[torch.Tensor] | None:
        """Every image's feature maps (of the images mirrored when ``flipped``) under the
        current (frozen) weights, computed once; None when they would not fit in
        :data:`MAP_MEMORY_LIMIT`."""
        key = (id(data), flipped)
        if key not in self._maps:
            t0 = time.perf_counter()
            self._maps[key] = self._compute_maps(data, flipped)
            self.timing["features_s"] = self.timing.get("features_s", 0.0) + time.perf_counter() - t0
        return self._maps[key]

    @torch.no_grad()
    def _compute_maps(self, data: ImageSet, flipped: bool = False) -> list[torch.Tensor] | None:
        model, bs = self.model, self.cfg.eval_batch_size
        model.backbone.eval()
        n = len(data)
        first = model.maps(self._inputs(data, [0])) if n else []
        per_image = sum(m[0].numel() * 4 for m in first)
        if not n or per_image * n > MAP_MEMORY_LIMIT:
            return None
        out = [torch.empty((n, *m.shape[1:]), dtype=m.dtype) for m in first]
        for start in range(0, n, bs):
            idx = list(range(start, min(n, start + bs)))
            flip = [flipped] * len(idx) if flipped else None
            for keep, m in zip(out, model.maps(self._inputs(data, idx, flip))):
                keep[start:start + len(idx)] = m.cpu()
        return out

    def _maps_of(self, data: ImageSet, idx, frozen: bool, flip=None) -> list[torch.Tensor]:
        """The feature maps of the images ``idx`` (``flip[k]``: image ``idx[k]`` mirrored):
        kept ones under a frozen backbone where they fit in memory, else computed now."""
        flip = flip if flip is not None and any(flip) else None
        kept = self._kept_maps(data) if frozen else None
        mirrored = self._kept_maps(data, True) if kept is not None and flip else None
        if kept is not None and (flip is None or mirrored is not None):
            i = torch.as_tensor(np.asarray(idx), dtype=torch.long)
            if flip is None:
                return [m[i].to(self.device) for m in kept]
            f = torch.as_tensor(flip).view(-1, 1, 1, 1)
            return [torch.where(f, mf[i], m[i]).to(self.device) for m, mf in zip(kept, mirrored)]
        if frozen:
            with torch.no_grad():
                return self.model.maps(self._inputs(data, idx, flip))
        return self.model.maps(self._inputs(data, idx, flip))

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        super().load_tensors(tensors)
        if any(n.startswith("backbone.") for n in tensors):
            self._maps.clear()

    def time_per_sample(self, state, probe: int = 8) -> None:
        """No stage estimate before a detection stage (its batches are images with boxes);
        the budget goes by the epochs' own times."""
        return None

    def _run_epoch(self, state, fire) -> dict[str, Any]:
        record = super()._run_epoch(state, fire)
        if not state.stage.frozen_backbone:
            self._maps.clear()
        return record

    # ------------------------------------------------------------------ batches
    def _batches(self, state):
        train, bs = state.data["train"], self.cfg.batch_size
        g = torch.Generator().manual_seed(state.epoch_seed)
        order = torch.randperm(len(train), generator=g)
        flips = (torch.rand(len(train), generator=g) < 0.5).tolist() if self.cfg.augment else None
        for idx in order.split(bs):
            idx = idx.tolist()
            flip = [flips[i] for i in idx] if flips is not None else None
            yield Batch((idx, flip), train.targets(idx, self.device, flip), torch.as_tensor(idx))

    def _batch_loss(self, batch: Batch, loss_fn, fire, state, sums: dict[str, float]) -> torch.Tensor:
        """The FCOS loss terms of one batch plus every loss term a callback adds (each
        callback term's value times the batch size is added to ``sums`` under its name)."""
        fire("on_batch_start", batch)
        idx, flip = batch.inputs
        maps = self._maps_of(state.data["train"], idx, state.stage.frozen_backbone, flip)
        terms = self.model.head.loss(maps, batch.labels)
        batch.outputs["loss_terms"] = terms
        loss = sum(terms.values())
        n = len(batch.labels)
        for extra in fire("on_batch", batch):
            for name, term in (extra or {}).items():
                loss = loss + term
                sums[name] = sums.get(name, 0.0) + float(term.detach()) * n
        return loss

    # ------------------------------------------------------------------ scores
    @torch.inference_mode()
    def detect(self, data: ImageSet, *, frozen: bool = False) -> list[dict[str, np.ndarray]]:
        """Boxes of every image of ``data`` under the current weights, in the pixels of
        each original image."""
        self.model.eval()
        head, size, out = self.model.head, self.model.head.cfg.image_size, []
        for start in range(0, len(data), self.cfg.eval_batch_size):
            idx = list(range(start, min(len(data), start + self.cfg.eval_batch_size)))
            for i, d in zip(idx, head.detect(self._maps_of(data, idx, frozen))):
                out.append(to_original(d, data.samples.sizes[i], size))
        return out

    def detection_scores(self, data: ImageSet, *, frozen: bool = False) -> dict[str, Any]:
        preds = self.detect(data, frozen=frozen)
        s = data.samples
        return detection_metrics(preds, list(zip(s.boxes, s.labels)), s.sizes, s.classes)

    def evaluate(self, samples, *, use_cache: bool | None = None, worst: int = 0) -> dict[str, Any]:
        t0 = time.perf_counter()
        m = self.detection_scores(samples, frozen=not self.features.weights_changed)
        self.timing["eval_s"] += time.perf_counter() - t0
        return m


def to_original(d: dict[str, torch.Tensor], size_wh, square: int) -> dict[str, np.ndarray]:
    """Detections in the ``square`` x ``square`` input mapped back onto the original
    ``(width, height)`` image."""
    w, h = size_wh
    scale = torch.tensor([w / square, h / square, w / square, h / square])
    return {"boxes": (d["boxes"].float().cpu() * scale).numpy(),
            "scores": d["scores"].float().cpu().numpy(),
            "labels": d["labels"].cpu().numpy().astype(np.int64)}
