"""What a strategy is: which parameters train, in which stages, with which learning rates.

A strategy never owns a training loop and never reads files.  It may

* add modules to the model (``prepare``: adapters, prompts, ...);
* say which parameters train in each :class:`Stage`, with their learning rates;
* add loss terms (``loss_terms``) that the engine adds to the classification loss;
* or, when ``closed_form`` is true, fit the head directly on cached features
  (``fit_closed_form``), as a logistic-regression probe does.

Strategies are registered by name with :func:`register_strategy`; each carries its options as
a dataclass, so unknown or ill-typed options are refused with a clear message.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import ConfigError


@dataclass
class ParamGroup:
    name: str
    params: list[nn.Parameter]
    lr: float


@dataclass
class Stage:
    """One phase of training.

    ``frozen_backbone``: the backbone runs in eval mode without gradients, so its features can
    be cached.  ``train_bn``: BatchNorm layers of the backbone update their running statistics
    (only meaningful when the backbone trains).
    """

    name: str
    epochs: int
    groups: list[ParamGroup]
    frozen_backbone: bool = True
    train_bn: bool = False
    warmup_epochs: float = 0.0
    #: whether an epoch of this stage may be chosen as the best one (False for stages that
    #: do not train the classifier, such as unsupervised pre-tuning)
    selectable: bool = True
    #: draw an unlabelled target batch beside every source batch and add the strategy's
    #: ``domain_terms`` (domain adaptation)
    domain: bool = False
    #: weight each source sample's loss by the strategy's ``instance_weights``
    weighted: bool = False

    def parameters(self) -> list[nn.Parameter]:
        return [p for g in self.groups for p in g.params]


@dataclass
class Options:
    """Base of strategy options. Subclasses add fields with defaults."""

    @classmethod
    def parse(cls, strategy: str, raw: dict[str, Any]) -> "Options":
        known = {f.name: f for f in dataclasses.fields(cls)}
        out: dict[str, Any] = {}
        for key, value in raw.items():
            k = key.replace("-", "_")
            if k not in known:
                names = ", ".join(sorted(known)) or "none"
                raise ConfigError(f"strategy {strategy!r} has no option {key!r} (options: {names})")
            out[k] = _coerce(strategy, k, value, known[k])
        return cls(**out)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(strategy: str, key: str, value: Any, f: dataclasses.Field) -> Any:
    default = f.default if f.default is not dataclasses.MISSING else None
    typ = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    if value is None or not isinstance(value, str):
        return value
    try:
        if "bool" in typ:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if "float" in typ:
            return None if value.lower() == "none" else float(value)
        if "int" in typ:
            return None if value.lower() == "none" else int(value)
    except ValueError:
        raise ConfigError(f"strategy {strategy!r}: option {key}={value!r} is not a valid {typ}") from None
    del default
    return value


class Strategy:
    """Base class of all strategies."""

    name: ClassVar[str] = "?"
    description: ClassVar[str] = ""
    options_cls: ClassVar[type[Options]] = Options
    #: fits the head in closed form on cached features instead of epochs of SGD
    closed_form: ClassVar[bool] = False
    #: head kind used when the user leaves the head on ``auto``
    default_head: ClassVar[str | None] = None
    #: adapts to a target domain: needs unlabelled target data (``--target``)
    uses_target: ClassVar[bool] = False
    #: needs a few labelled target samples too (``--target-labels N``)
    needs_target_labels: ClassVar[bool] = False

    def __init__(self, **options: Any):
        self.options = self.options_cls.parse(self.name, options)
        self.validate()

    #: whether the backbone's own pretrained tensors change in training: "none" (frozen;
    #: added modules may train), "some" (a named subset), "all"
    trains_backbone: ClassVar[str] = "none"

    def validate(self) -> None:
        """Refuse impossible option values (raise ConfigError)."""

    def require_positive(self, *names: str) -> None:
        """Refuse options among ``names`` that are set but not > 0."""
        for n in names:
            v = getattr(self.options, n)
            if v is not None and not v > 0:
                raise ConfigError(f"{self.name}: {n} must be > 0, got {v}")

    def check_backbone(self, backbone) -> None:
        """Refuse a backbone this strategy cannot work with (raise ConfigError)."""

    # -- hooks -------------------------------------------------------------------------
    def prepare(self, model: nn.Module) -> None:
        """Add modules to ``model`` before training (and again before loading a bundle)."""

    def stages(self, model: nn.Module, train: Any) -> list[Stage]:  # pragma: no cover
        raise NotImplementedError

    def loss_terms(self, model: nn.Module, feats: dict[str, torch.Tensor],
                   logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def fit_closed_form(self, model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor,
                        x_val: torch.Tensor, y_val: torch.Tensor, seed: int,
                        **target: torch.Tensor) -> dict[str, Any]:
        """Fit the head on cached features.  Strategies that use a target domain also get
        ``x_target`` (and ``x_target_labelled`` / ``y_target_labelled`` when granted).  The
        returned dict may hold ``candidates``: ``[(label, apply(model))]`` settings among
        which the engine chooses with its selection criterion."""
        raise NotImplementedError  # pragma: no cover

    def domain_terms(self, model: nn.Module, source: dict[str, torch.Tensor],
                     target: dict[str, torch.Tensor], progress: float) -> dict[str, torch.Tensor]:
        """Loss terms of a stage with ``domain=True``.  ``source`` holds ``embed`` (what the
        classifier's last layer reads), ``logits`` and ``labels``; ``target`` holds ``embed``
        and ``logits``; ``progress`` runs from 0 to 1 over the stage."""
        return {}

    def instance_weights(self, x_source: torch.Tensor, x_target: torch.Tensor, seed: int):
        """Per-source-sample loss weights for a stage with ``weighted=True``."""
        raise NotImplementedError  # pragma: no cover

    def stage_done(self, trainer, stage: Stage) -> None:
        """Called after each SGD stage (e.g. to take a snapshot of the representation)."""

    def save_extra(self, model: nn.Module, bundle_dir) -> None:
        """Write strategy-specific files beside the bundle (e.g. adapters in PEFT's format)."""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "options": self.options.to_dict()}


_STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    if cls.name in _STRATEGIES:
        raise ValueError(f"strategy {cls.name!r} is registered twice")
    _STRATEGIES[cls.name] = cls
    return cls


def _ensure_builtins() -> None:
    """Import every module beside this one: each registers its strategies.

    The folder is listed, not the package object, so this module never imports its own
    package (no import cycle)."""
    import importlib
    import pkgutil
    from pathlib import Path

    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name != "base":
            importlib.import_module(f"{__package__}.{info.name}")


def list_strategies() -> list[type[Strategy]]:
    _ensure_builtins()
    return [_STRATEGIES[k] for k in sorted(_STRATEGIES)]


def get_strategy(name: str, **options: Any) -> Strategy:
    _ensure_builtins()
    if name not in _STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; known: {', '.join(sorted(_STRATEGIES))}")
    return _STRATEGIES[name](**options)


def head_params(model: nn.Module) -> list[nn.Parameter]:
    return list(model.head.parameters())


def geometric_lrs(top_lr: float, n: int, floor: float) -> list[float]:
    """``n`` learning rates from ``top_lr * floor`` (first group) up to ``top_lr`` (last)."""
    if n <= 1:
        return [top_lr] * n
    return [top_lr * floor ** ((n - 1 - i) / (n - 1)) for i in range(n)]


def default_backbone_lr(model: nn.Module) -> float:
    return 5e-5 if model.backbone.modality == "text" else 1e-4
