"""Regularised fine-tuning: a penalty that keeps what the pretrained backbone knew, added to
the task loss of every stage in which backbone weights train (``finetune``, ``partial``,
``lora``), chosen with ``-o reg=NAME`` and weighted with ``-o reg_weight=W``:

* ``l2sp``      the distance of the trained tensors from their pretrained values,
                ``W/2 ||w - w0||^2``, plus ``reg_head_weight/2 ||w_head||^2`` on the new head
                (L2-SP, Li et al. 2018; default W 0.01);
* ``delta``     the mean squared difference between the backbone's intermediate feature maps
                (:meth:`Backbone.feature_modules`) and the pretrained backbone's on the same
                batch, summed over the maps (DELTA's behavioural term without attention;
                default W 1);
* ``bss``       the ``reg_k`` smallest squared singular values of the batch's features
                (Batch Spectral Shrinkage; default W 0.001);
* ``lwf``       the pretrained backbone's source-class outputs (its own classifier, e.g. the
                ImageNet head) kept by distillation at temperature ``reg_temperature`` (Learning
                without Forgetting; default W 1);
* ``cotuning``  the source-class outputs trained towards each target class's distribution
                over the source classes, learnt before the stage as the mean source
                probabilities of its training samples (Co-Tuning, "direct" relation; default
                W 2.3).

``lwf`` and ``cotuning`` need a backbone with a source classifier (:meth:`Backbone.source_head`)
and refuse one without.  The source classifier itself stays as it was pretrained (it is no
layer group), so it is the fine-tuned features that keep their source meaning.

The pretrained reference (tensors, or a frozen copy of the backbone) is taken when the
strategy builds its stages, before a checkpoint is restored, so a resumed run penalises
against the same pretrained weights.  Without augmentation, what ``lwf`` and ``cotuning`` read
of the pretrained backbone comes from its features of the training samples (the feature
cache), so they cost no second forward pass; ``delta`` runs the frozen copy on every batch.

The penalties are the pure functions of :mod:`transferkit.regularise`; the options are
declared once here (:class:`RegOptions`) and shared by the strategies that take them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from .. import regularise as pen
from ..errors import ConfigError
from ..events import Callback
from .base import Options, Stage, head_params

#: the regularisers and their default weights
DEFAULT_WEIGHTS = {"l2sp": 0.01, "delta": 1.0, "bss": 0.001, "lwf": 1.0, "cotuning": 2.3}
REGULARISERS = ("none", *DEFAULT_WEIGHTS)
#: those that read the backbone's classifier over its source classes
NEED_SOURCE_HEAD = ("lwf", "cotuning")


@dataclass
class RegOptions(Options):
    #: none, l2sp, delta, bss, lwf or cotuning
    reg: str = "none"
    #: weight of the penalty (default: the regulariser's own, DEFAULT_WEIGHTS)
    reg_weight: float | None = None
    #: l2sp: weight of the L2 penalty on the new head
    reg_head_weight: float = 0.01
    #: bss: how many of the smallest singular values are shrunk
    reg_k: int = 1
    #: lwf: distillation temperature
    reg_temperature: float = 2.0


def validate_reg(strategy: str, o: RegOptions) -> None:
    """Refuse an unknown regulariser or a bad weight (ConfigError naming the option)."""
    o.reg = str(o.reg).strip().lower()
    if o.reg not in REGULARISERS:
        raise ConfigError(f"{strategy}: unknown reg {o.reg!r}; choose one of "
                          f"{', '.join(REGULARISERS)}")
    if o.reg_weight is None and o.reg != "none":
        o.reg_weight = DEFAULT_WEIGHTS[o.reg]  # recorded as it was used
    if o.reg_weight is not None and not (o.reg_weight >= 0 and o.reg_weight < float("inf")):
        raise ConfigError(f"{strategy}: reg_weight must be a finite number >= 0, got {o.reg_weight}")
    if not (o.reg_head_weight >= 0 and o.reg_head_weight < float("inf")):
        raise ConfigError(f"{strategy}: reg_head_weight must be a finite number >= 0, "
                          f"got {o.reg_head_weight}")
    if o.reg_k < 1:
        raise ConfigError(f"{strategy}: reg_k must be >= 1, got {o.reg_k}")
    if not (o.reg_temperature > 0 and o.reg_temperature < float("inf")):
        raise ConfigError(f"{strategy}: reg_temperature must be > 0, got {o.reg_temperature}")


def check_reg_backbone(strategy: str, o: RegOptions, backbone) -> None:
    """Refuse a regulariser that needs a source classifier on a backbone without one."""
    if o.reg in NEED_SOURCE_HEAD and backbone.source_head() is None:
        raise ConfigError(f"{strategy}: reg={o.reg} needs the backbone's classifier over its "
                          f"source classes, and {backbone.name!r} has none "
                          "(choose reg=l2sp, delta or bss)")


def regularise_stage(o: RegOptions, model: nn.Module, stage: Stage) -> Stage:
    """``stage`` with the chosen regulariser's callback added (unchanged for ``reg=none``)."""
    if o.reg != "none":
        stage.callbacks.append(Regulariser(o, model, stage))
    return stage


def reg_weight(o: RegOptions) -> float:
    return DEFAULT_WEIGHTS[o.reg] if o.reg_weight is None else float(o.reg_weight)


def _frozen_copy(backbone: nn.Module) -> nn.Module:
    ref = copy.deepcopy(backbone)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def _first(output):
    return output[0] if isinstance(output, (tuple, list)) else output


class _MapRecorder:
    """Keeps the outputs of ``modules`` while ``on`` (forward hooks)."""

    def __init__(self, modules: list[nn.Module]):
        self.maps: list[torch.Tensor] = []
        self.on = False
        self.handles = [m.register_forward_hook(self._hook) for m in modules]

    def _hook(self, module, inputs, output) -> None:
        if self.on:
            self.maps.append(_first(output))

    def take(self) -> list[torch.Tensor]:
        out, self.maps = self.maps, []
        return out

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


class Regulariser(Callback):
    """Adds ``reg_weight x penalty`` to the task loss of every batch of its stage, as the
    loss term ``reg_<name>`` (its epoch mean is the history's ``term_reg_<name>``)."""

    def __init__(self, o: RegOptions, model: nn.Module, stage: Stage):
        self.kind, self.weight, self.o = o.reg, reg_weight(o), o
        self.params = [p for g in stage.groups if g.name != "head" for p in g.params]
        self.head = head_params(model)
        self.start = [p.detach().clone() for p in self.params] if self.kind == "l2sp" else None
        self.ref = _frozen_copy(model.backbone) if self.kind in ("delta", *NEED_SOURCE_HEAD) else None
        self.pretrained_pooled: torch.Tensor | None = None
        self.relation: torch.Tensor | None = None
        self._live = self._ref_maps = None

    # ------------------------------------------------------------------ events
    def on_stage_start(self, state) -> None:
        bb = state.model.backbone
        if self.kind == "delta":
            live, ref = bb.feature_modules(), self.ref.feature_modules()
            self._live, self._ref_maps = _MapRecorder(live), _MapRecorder(ref)
        if self.kind in NEED_SOURCE_HEAD:
            pooled = self._pretrained_train_features(state)
            if self.kind == "cotuning":
                probs = self.ref.source_probabilities(pooled)
                self.relation = pen.class_relation(probs, state.labels("train"),
                                                   len(state.model.classes)).to(state.device)
            elif not _augments(state):
                self.pretrained_pooled = pooled

    def on_batch_start(self, state, batch) -> None:
        if self._live is not None:
            self._live.take()
            self._live.on = True

    def on_batch(self, state, batch):
        return {f"reg_{self.kind}": self.term(state, batch)}

    def on_stage_end(self, state) -> None:
        for rec in (self._live, self._ref_maps):
            if rec is not None:
                rec.remove()
        self._live = self._ref_maps = None

    # ------------------------------------------------------------------ penalties
    def term(self, state, batch) -> torch.Tensor:
        """The weighted loss term of one batch."""
        if self.kind == "l2sp":
            return (self.weight * pen.starting_point(self.params, self.start)
                    + self.o.reg_head_weight * pen.l2(self.head))
        return self.weight * self.penalty(state, batch)

    def penalty(self, state, batch) -> torch.Tensor:
        """The unweighted penalty of one batch (every kind but ``l2sp``)."""
        if self.kind == "delta":
            return self._delta(batch)
        pooled = _pooled(batch)
        if self.kind == "bss":
            return pen.spectral_shrinkage(pooled, self.o.reg_k)
        logits = state.model.backbone.source_head()(pooled)
        if self.kind == "lwf":
            return pen.distillation(logits, self._pretrained_logits(state, batch),
                                    self.o.reg_temperature)
        return pen.relation_loss(logits, batch.labels, self.relation)

    def _delta(self, batch) -> torch.Tensor:
        self._live.on = False
        live = self._live.take()
        n = len(batch.labels)
        self._ref_maps.on = True
        with torch.no_grad():
            self.ref(batch.inputs)
        self._ref_maps.on = False
        ref = self._ref_maps.take()
        return pen.feature_map_distance([m[:n] for m in live], [m[:n] for m in ref])

    def _pretrained_logits(self, state, batch) -> torch.Tensor:
        head = self.ref.source_head()
        with torch.no_grad():
            if self.pretrained_pooled is not None:
                pooled = self.pretrained_pooled[batch.indices.cpu()].to(state.device)
            else:
                pooled = self.ref(batch.inputs)["pooled"]
            return head(pooled.to(next(head.parameters()).dtype))

    def _pretrained_train_features(self, state) -> torch.Tensor:
        """Pooled features ``(N, D)`` of the training samples under the pretrained weights:
        the run's (cached) features while the backbone still holds them, else the frozen
        copy's over the training samples (a resumed run)."""
        if _same_tensors(state.model.backbone, self.ref):
            return state.features("train").float()
        out = None
        with torch.no_grad():
            for inputs, idx in state.batches("train"):
                pooled = self.ref(inputs)["pooled"].float().cpu()
                if out is None:
                    out = torch.zeros(len(state.data["train"]), pooled.shape[1])
                out[idx] = pooled
        return out


def _pooled(batch) -> torch.Tensor:
    feats = batch.features or {}
    return feats["pooled"] if "pooled" in feats else batch.embed


def _augments(state) -> bool:
    return bool(state.cfg.augment) and state.model.backbone.modality == "image"


def _same_tensors(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
