"""``bitfit``: train only the backbone's bias terms (BitFit, Ben Zaken et al. 2022) and a head.

Every backbone parameter whose name ends in ``bias`` trains (attention, dense, convolution and
normalisation biases); with ``norms=true`` the scales of the normalisation layers (LayerNorm,
BatchNorm, GroupNorm, RMSNorm weights) train as well.  "Backbone parameter" means one of
:meth:`Backbone.layer_groups`: an image model's original classifier is not part of it.  One
stage runs the whole model every batch; BatchNorm running statistics never update (a BatchNorm
bias or scale trains, its statistics stay the pretrained ones).

``lr`` (biases and norms) defaults to the training ``--lr`` or else 1e-3: BitFit needs a rate
well above full fine-tuning (the paper searched 1e-4 to 1e-3 for BERT); ``head_lr`` 1e-3.
A backbone without bias terms (static word vectors) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError
from .base import Options, ParamGroup, Stage, Strategy, head_params, register_strategy

DEFAULT_LR = 1e-3

_NORM_TYPES: tuple[type, ...] = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm,
                                 nn.modules.instancenorm._InstanceNorm)
if hasattr(nn, "RMSNorm"):
    _NORM_TYPES = _NORM_TYPES + (nn.RMSNorm,)


@dataclass
class BitFitOptions(Options):
    norms: bool = False
    lr: float | None = None
    head_lr: float = 1e-3


def _is_norm(mod: nn.Module) -> bool:
    # also custom norms of timm / transformers (LayerNorm2d, T5LayerNorm, ...) by class name
    return isinstance(mod, _NORM_TYPES) or "norm" in type(mod).__name__.lower()


def bitfit_parameters(backbone: nn.Module, norms: bool = False) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` of the backbone tensors BitFit trains, in the backbone's order."""
    in_groups = {id(p) for g in backbone.layer_groups() for p in g}
    modules = dict(backbone.named_modules())
    out = []
    for name, p in backbone.named_parameters():
        if id(p) not in in_groups:
            continue
        owner, _, leaf = name.rpartition(".")
        norm_scale = norms and leaf == "weight" and _is_norm(modules.get(owner, backbone))
        if leaf == "bias" or norm_scale:
            out.append((name, p))
    return out


@register_strategy
class BitFit(Strategy):
    name = "bitfit"
    description = ("train only the backbone's bias terms (-o norms=true: also norm scales) "
                   "and a head; BatchNorm statistics frozen")
    options_cls = BitFitOptions
    trains_backbone = "some"

    def validate(self) -> None:
        self.require_positive("lr", "head_lr")

    def check_backbone(self, backbone) -> None:
        if not bitfit_parameters(backbone, self.options.norms):
            what = "bias or normalisation parameters" if self.options.norms else "bias parameters"
            raise ConfigError(f"bitfit: backbone {backbone.name!r} has no {what} to train "
                              "(static word vectors have none); use freeze or another strategy")

    def stages(self, model, train):
        o = self.options
        lr = o.lr if o.lr is not None else (train.lr if train.lr is not None else DEFAULT_LR)
        params = [p for _, p in bitfit_parameters(model.backbone, o.norms)]
        return [Stage("bitfit", train.epochs,
                      [ParamGroup("bitfit", params, lr),
                       ParamGroup("head", head_params(model), o.head_lr)],
                      frozen_backbone=False, train_bn=False,
                      warmup_epochs=train.warmup_epochs)]
