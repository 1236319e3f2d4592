"""``finetune`` and ``partial``: head first on the frozen backbone, then unfreeze.

Stage 1 trains the head alone on cached features (cheap).  Stage 2 unfreezes the whole
backbone (``finetune``) or its last ``layers`` groups (``partial``) with discriminative learning
rates: the top group gets ``backbone_lr``, lower groups geometrically less, down to
``backbone_lr * lr_floor`` for the first one; the head gets ``backbone_lr * head_lr_mult``.
BatchNorm running statistics stay frozen by default (``bn=freeze``), which is what small
batches on small data sets want; ``bn=train`` lets them update.  ``reg=l2sp|delta|bss|lwf|
cotuning`` adds a penalty towards what the pretrained backbone knew to the stage that
unfreezes it (see ``regularised.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from .base import (ParamGroup, Stage, Strategy, default_backbone_lr, geometric_lrs,
                   head_params, register_strategy)
from .regularised import RegOptions, check_reg_backbone, regularise_stage, validate_reg


@dataclass
class FinetuneOptions(RegOptions):
    head_epochs: int = 5
    head_lr: float = 1e-3
    backbone_lr: float | None = None
    head_lr_mult: float = 10.0
    lr_floor: float = 0.1
    bn: str = "freeze"


@dataclass
class PartialOptions(FinetuneOptions):
    layers: int | None = None  # default: the last 2 groups (all of them if fewer)


class _Staged(Strategy):
    def validate(self) -> None:
        o = self.options
        if o.head_epochs < 0:
            raise ConfigError(f"{self.name}: head_epochs must be >= 0, got {o.head_epochs}")
        if o.bn not in ("freeze", "train"):
            raise ConfigError(f"{self.name}: bn must be 'freeze' or 'train', got {o.bn!r}")
        if not 0 < o.lr_floor <= 1:
            raise ConfigError(f"{self.name}: lr_floor must be in (0, 1], got {o.lr_floor}")
        if o.backbone_lr is not None and o.backbone_lr <= 0:
            raise ConfigError(f"{self.name}: backbone_lr must be > 0")
        validate_reg(self.name, o)

    def check_backbone(self, backbone) -> None:
        check_reg_backbone(self.name, self.options, backbone)

    def _groups_to_train(self, model):
        return model.backbone.layer_groups()

    def stages(self, model, train):
        o = self.options
        stages = []
        if o.head_epochs > 0:
            stages.append(Stage("head", o.head_epochs,
                                [ParamGroup("head", head_params(model), o.head_lr)],
                                frozen_backbone=True))
        top = o.backbone_lr or (train.lr if train.lr is not None else default_backbone_lr(model))
        groups = self._groups_to_train(model)
        lrs = geometric_lrs(top, len(groups), o.lr_floor)
        pgs = [ParamGroup(f"backbone.{i}", g, lr) for i, (g, lr) in
               enumerate(zip(groups, lrs)) if g]
        pgs.append(ParamGroup("head", head_params(model), top * o.head_lr_mult))
        stages.append(regularise_stage(o, model, Stage(
            "finetune", train.epochs, pgs, frozen_backbone=False, train_bn=(o.bn == "train"),
            warmup_epochs=train.warmup_epochs)))
        return stages


@register_strategy
class Finetune(_Staged):
    name = "finetune"
    description = ("head first on the frozen backbone, then all layers at lower, "
                   "per-group (discriminative) learning rates")
    options_cls = FinetuneOptions
    trains_backbone = "all"


@register_strategy
class Partial(_Staged):
    name = "partial"
    description = "head first, then unfreeze the last N layer groups (option layers=N)"
    options_cls = PartialOptions
    trains_backbone = "some"

    def validate(self) -> None:
        super().validate()
        if self.options.layers is not None and self.options.layers < 1:
            raise ConfigError(f"partial: layers must be >= 1, got {self.options.layers}")

    def _groups_to_train(self, model):
        groups = model.backbone.layer_groups()
        n = self.options.layers
        if n is None:
            n = min(2, len(groups))
        if n > len(groups):
            raise ConfigError(f"partial: layers={n} but backbone {model.backbone.name!r} has "
                              f"only {len(groups)} layer groups")
        return groups[-n:]
