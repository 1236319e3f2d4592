"""Backbone features of a run's sample sets, and the one rule that says when they may be used.

A stage runs on precomputed features (``{"pooled": (B, D)}`` batches, the backbone run once
per sample) instead of the live backbone when :meth:`Features.usable` says so; nowhere else
decides it.  Features are kept per named sample set (``"train"``, ``"val"``, ``"target"``,
...) for the run, read through the persistent :class:`~transferkit.engine.cache.FeatureCache`
while the backbone holds its pretrained weights, and computed afresh (never cached on disk)
once training has changed them or when the backbone is not pretrained.
"""

from __future__ import annotations

import time

import torch

from .cache import FeatureCache


class Features:
    def __init__(self, model, pipeline, cache: FeatureCache, *, augment: bool,
                 batch_size: int, timing: dict[str, float], progress=None, processes=None):
        self.model = model
        self.pipeline = pipeline
        self.cache = cache
        self.augment = augment
        self.batch_size = batch_size
        self.timing = timing
        self.progress = progress
        self.processes = processes
        self._memo: dict[str, torch.Tensor] = {}
        #: the backbone's weights changed during this run
        self.weights_changed = False

    # ------------------------------------------------------------------ the rule
    def usable(self, stage=None, *, any_weights: bool = False) -> bool:
        """May the head be fed precomputed backbone features?

        In a training stage: when the backbone is frozen in it, what the head reads depends
        on the backbone alone, and no augmentation varies the images per epoch.  After
        training (``stage=None``, the final evaluation): when what the head reads depends on
        the backbone alone and the backbone kept its pretrained weights.  With
        ``any_weights`` (a one-off look at the representation, e.g. a domain run's
        snapshots): whenever what the head reads depends on the backbone alone, the features
        then being computed under the current weights.
        """
        if not self.model.features_fixed:
            return False
        if any_weights:
            return True
        if stage is None:
            return not self.weights_changed
        if not stage.frozen_backbone:
            return False
        return not (self.augment and self.model.backbone.modality == "image")

    # ------------------------------------------------------------------ features
    def get(self, name: str, samples) -> torch.Tensor:
        """Pooled features ``(N, D)`` of ``samples`` under the current weights (kept under
        ``name`` until the weights change)."""
        if name not in self._memo:
            t0 = time.perf_counter()
            self._memo[name] = self._compute(self._cache(), samples)
            self.timing["features_s"] = self.timing.get("features_s", 0.0) + time.perf_counter() - t0
        return self._memo[name]

    def get_many(self, sets: dict, *, skip_bad: bool = False) -> dict[str, list[int]]:
        """:meth:`get` of several named sample sets: those not kept yet are computed in one
        pass (one loader, one start-up; the cache stores and serves them per set as
        :meth:`get` does).  ``skip_bad``: an image that cannot be decoded is listed (its
        position, under its set's name, in what is returned) instead of raising; its row is
        zero until :meth:`keep` drops it.  In a data-parallel run the sets are computed one
        by one as :meth:`get` computes them (``skip_bad`` does not apply)."""
        todo = {n: s for n, s in sets.items() if n not in self._memo}
        procs = self.processes
        if not todo:
            return {}
        if procs is not None and procs.world > 1:
            for name, samples in todo.items():  # the main process computes, set by set
                self.get(name, samples)
            return {}
        t0 = time.perf_counter()
        feats, bad = self._cache().features_many(self.model.backbone, self.pipeline, todo,
                                                 batch_size=self.batch_size,
                                                 progress=self.progress, skip_bad=skip_bad)
        self._memo.update(feats)
        self.timing["features_s"] = self.timing.get("features_s", 0.0) + time.perf_counter() - t0
        return {n: b for n, b in bad.items() if b}

    def keep(self, name: str, positions) -> None:
        """Keep only the rows at ``positions`` of the features kept under ``name`` (the
        samples left once the undecodable images are dropped)."""
        if name in self._memo:
            self._memo[name] = self._memo[name][torch.as_tensor(positions, dtype=torch.long)]

    def _cache(self) -> FeatureCache:
        """The persistent cache while the backbone holds its pretrained weights, else a
        disabled one (features computed afresh, never stored)."""
        if self.weights_changed or not self.model.backbone.pretrained:
            return FeatureCache(enabled=False, runtime="torch")
        return self.cache

    def _compute(self, cache: FeatureCache, samples) -> torch.Tensor:
        procs = self.processes
        if procs is None or procs.world == 1 or not cache.enabled:
            return cache.features(self.model.backbone, self.pipeline, samples,
                                  batch_size=self.batch_size, progress=self.progress)
        # data-parallel: the main process computes and writes; the others read its features
        out = None
        if procs.is_main:
            out = cache.features(self.model.backbone, self.pipeline, samples,
                                 batch_size=self.batch_size, progress=self.progress)
        procs.wait()
        if out is None:
            out = cache.features(self.model.backbone, self.pipeline, samples,
                                 batch_size=self.batch_size)
        return out

    def backbone_changed(self) -> None:
        """The backbone's weights changed: features computed so far are stale, and features
        of these weights must never reach the persistent cache (its key names the pretrained
        weights)."""
        self._memo.clear()
        self.weights_changed = True
