"""What a strategy is: the modules it adds, which parameters train in which stages, and
the callbacks and closed-form solvers of its stages.

A strategy never owns a training loop and never reads files.  Its whole interface:

* its options (a dataclass: unknown or ill-typed options are refused with a clear message),
  ``validate()`` and ``check_backbone(backbone)``;
* ``attach(model)``: add its modules to the model (``model.attach(name, module)``: real
  submodules, so ``state_dict`` and the bundle see them; one may compute the features in
  place of the backbone);
* ``stages(model, train)``: the :class:`Stage` list, each with its parameter groups and
  learning rates, and optionally its own callbacks (:class:`transferkit.events.Callback`:
  loss terms, extra data streams, per-sample weights) or a closed-form ``solve``;
* ``solve_features(x, y, n_classes, seed, unlabelled=None)``: a dense layer fitted in closed form on
  features alone (episodic evaluation), where the strategy has one;
* ``save_extra(model, folder)``: files beside the bundle (e.g. adapters in PEFT's format);
* ``for_export(model)``: the model as one plain forward pass for ONNX export (LoRA folds its
  adapters into the weights), or a ConfigError saying why it cannot be one.

Strategies are registered by name with :func:`register_strategy`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np
from torch import nn

from ..errors import ConfigError
from ..settings import coerce, type_hints


@dataclass
class ParamGroup:
    name: str
    params: list[nn.Parameter]
    lr: float


@dataclass
class Solution:
    """What a closed-form ``Stage.solve`` returns: the settings to choose among, each a
    ``(label, apply(model))`` (the engine applies and scores each like an epoch and keeps the
    best under the run's selection criterion), and figures to report (``closed_form`` in
    ``metrics.json``)."""

    candidates: list[tuple[str, Callable[[nn.Module], None] | None]]
    info: dict[str, Any] = field(default_factory=dict)


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
    #: the strategy's own callbacks, active while this stage runs (loss terms, streams, weights)
    callbacks: list = field(default_factory=list)
    #: fit in closed form instead of epochs of SGD: ``solve(state) -> Solution`` (``state``:
    #: the loop's state; ``state.features("train")`` etc. give cached features)
    solve: Callable[[Any], Solution] | None = None
    #: keep the representation under this name at the end of the stage (domain runs' before /
    #: after pictures)
    snapshot: str | None = None
    #: whether the labelled batch's cross-entropy is part of the loss; ``False`` for a stage
    #: whose loss is its callbacks' terms alone (contrastive training of the encoder before
    #: any head exists)
    task_loss: bool = True

    def parameters(self) -> list[nn.Parameter]:
        return [p for g in self.groups for p in g.params]


@dataclass
class Options:
    """Base of strategy options. Subclasses add fields with defaults."""

    @classmethod
    def parse(cls, strategy: str, raw: dict[str, Any]) -> "Options":
        """Options from ``raw`` (e.g. ``-o layers=3``): each value coerced by the field's
        annotation; an unknown key is refused, naming the valid ones."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        out: dict[str, Any] = {}
        for key, value in raw.items():
            k = key.replace("-", "_")
            if k not in known:
                names = ", ".join(sorted(known)) or "none"
                raise ConfigError(f"strategy {strategy!r} has no option {key!r} (options: {names})")
            out[k] = _coerce(cls, strategy, k, value)
        return cls(**out)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(cls: type, strategy: str, key: str, value: Any) -> Any:
    """``value`` as the option's declared type, read from the real annotation of ``cls``."""
    return coerce(value, type_hints(cls)[key], f"strategy {strategy!r}: option {key}")


class Strategy:
    """Base class of all strategies."""

    name: ClassVar[str] = "?"
    description: ClassVar[str] = ""
    options_cls: ClassVar[type[Options]] = Options
    #: head kind used when the user leaves the head on ``auto``
    default_head: ClassVar[str | None] = None
    #: what the data must hold besides labelled training data: unlabelled target-domain
    #: data (``--target``), and a few labelled target samples (``--target-labels N``)
    uses_target: ClassVar[bool] = False
    needs_target_labels: ClassVar[bool] = False
    #: whether the backbone's own pretrained tensors change in training: "none" (frozen;
    #: added modules may train), "some" (a named subset), "all"
    trains_backbone: ClassVar[str] = "none"
    #: whether the strategy reads the classes' names and descriptions (``--classes``,
    #: ``--descriptions``): the caller then sets :attr:`class_texts`, ``{class: [text, ...]}``
    uses_class_texts: ClassVar[bool] = False
    class_texts: dict[str, list[str]] | None = None
    #: whether a fit needs data (a zero-shot strategy fits from the class names alone)
    needs_data: ClassVar[bool] = True

    def __init__(self, **options: Any):
        self.options = self.options_cls.parse(self.name, options)
        self.validate()

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

    def attach(self, model: nn.Module) -> None:
        """Add this strategy's modules to ``model`` with ``model.attach(name, module)``:
        before training, and again before a bundle's tensors are loaded."""

    def stages(self, model: nn.Module, train: Any) -> list[Stage]:  # pragma: no cover
        raise NotImplementedError

    def solve_features(self, x, y, n_classes: int, seed: int, unlabelled=None):
        """A classifier fitted in closed form on features ``x`` ``(N, d)`` (numpy) with
        labels ``y`` alone, no validation data: ``(weight (n_classes, d), bias
        (n_classes,))`` of one dense layer.  ``unlabelled``: features of unlabelled samples
        the strategy may use (or ignore).  Episodic evaluation fits one per episode; a
        strategy without such a fit says so."""
        raise ConfigError(f"strategy {self.name!r} has no closed-form fit on features "
                          "(episodes need one: e.g. prototype or linear)")

    def fit_without_data(self, model: nn.Module) -> dict[str, Any]:
        """Set the model's tensors from the class names alone (``needs_data`` False);
        returns figures to report."""
        raise ConfigError(f"strategy {self.name!r} needs data to fit")

    def prepare_features(self, model: nn.Module) -> None:
        """Before fits on features alone (:meth:`fit_features`): ``model`` holds the backbone
        and every class of the data (a strategy with a prior over the classes computes it
        here)."""

    def fit_features(self, x, y, n_classes: int, seed: int, unlabelled=None, classes=None):
        """A classifier fitted on features alone: ``scores(query (M, d)) -> (M, n_classes)``.
        ``classes``: the indices, among the data's classes, of the ``n_classes`` classes of
        ``y`` (for a strategy with a prior over the data's classes).  By default the dense
        layer of :meth:`solve_features`."""
        w, b = self.solve_features(x, y, n_classes, seed, unlabelled=unlabelled)
        w, b = np.asarray(w), np.asarray(b)
        return lambda q: np.asarray(q) @ w.T + b

    def save_extra(self, model: nn.Module, bundle_dir) -> None:
        """Write strategy-specific files beside the bundle (e.g. adapters in PEFT's format)."""

    def for_export(self, model: nn.Module) -> nn.Module:
        """``model`` as one plain forward pass, for export (ONNX): the model itself by default
        (its attached modules are ordinary submodules); a strategy whose modules fold into the
        backbone's weights returns a folded copy; one whose forward pass cannot be exported
        raises :class:`ConfigError` saying why."""
        return model

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
