"""``freeze``: a new head on a frozen backbone (features cached, run once per sample)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Options, ParamGroup, Stage, Strategy, head_params, register_strategy


@dataclass
class FreezeOptions(Options):
    pass


@register_strategy
class Freeze(Strategy):
    name = "freeze"
    description = "new head (dropout + dense or MLP, BiLSTM over word vectors) on a frozen backbone"
    options_cls = FreezeOptions

    def stages(self, model, train):
        lr = train.lr if train.lr is not None else 1e-3
        return [Stage("head", train.epochs, [ParamGroup("head", head_params(model), lr)],
                      frozen_backbone=True, warmup_epochs=train.warmup_epochs)]
