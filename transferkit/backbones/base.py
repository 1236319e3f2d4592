"""The one interface every pretrained backbone offers to the rest of transferkit.

A backbone is an ``nn.Module`` that turns a *batch* into features:

* image backbones take a float tensor ``(B, 3, H, W)`` already normalised with
  :attr:`Backbone.preprocess` and return ``{"pooled": (B, D)}``;
* text encoders take the dict made by :meth:`Backbone.tokenize` and return
  ``{"pooled": (B, D)}`` (sentence embedding) and, when they have one, ``"tokens"``
  ``(B, T, D)`` with ``"mask"`` ``(B, T)``;
* static word vectors return ``{"tokens": (B, T, D), "mask": (B, T)}`` only (``output ==
  "sequence"``), for a BiLSTM or pooled head on top.

``layer_groups()`` lists the backbone's parameters in groups ordered from the input to the
output; ``partial`` unfreezes the last N of them and ``finetune`` gives each its own
learning rate.  ``spec()`` is a JSON-able dict from which :func:`build_backbone` rebuilds
the same backbone (used by bundles), and ``identity()`` names the weights exactly (used by
the feature cache and by bundles to refuse a mismatched backbone).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..errors import BackboneError, ConfigError


class Backbone(nn.Module):
    """Base class. Subclasses set the attributes below in ``__init__``."""

    #: registry name or ``timm:<model>`` / ``hf:<model>``
    name: str = "?"
    #: ``"image"`` or ``"text"``
    modality: str = "image"
    #: size of ``pooled`` features, or of each token for sequence backbones
    feature_dim: int = 0
    #: ``"pooled"`` (gives ``pooled``) or ``"sequence"`` (gives ``tokens`` + ``mask`` only)
    output: str = "pooled"
    #: image preprocessing: input_size (C, H, W), mean, std, interpolation, crop_pct
    preprocess: dict[str, Any] | None = None
    #: longest token sequence fed to a text encoder
    max_length: int = 128
    #: whether the weights were learnt elsewhere; a backbone that is not (``digits-cnn``)
    #: must be trained, and its features change as it trains (no feature cache)
    pretrained: bool = True

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        raise ConfigError(f"backbone {self.name!r} takes images, not text")

    def layer_groups(self) -> list[list[nn.Parameter]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """JSON-able arguments of :func:`build_backbone` that rebuild this backbone."""
        return {"name": self.name}

    def identity(self) -> str:
        """A string naming these exact weights (name + content hash or source)."""
        return self.name

    def describe(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        return f"{self.name} ({self.modality}, {n:,} parameters, {self.feature_dim}-d {self.output})"


# --------------------------------------------------------------------------- registry

BackboneFactory = Callable[..., Backbone]


class _Entry:
    def __init__(self, name: str, factory: BackboneFactory, modality: str, description: str,
                 offline: bool, test_only: bool):
        self.name = name
        self.factory = factory
        self.modality = modality
        self.description = description
        self.offline = offline
        self.test_only = test_only


_REGISTRY: dict[str, _Entry] = {}
_PREFIXES: dict[str, _Entry] = {}


def register_backbone(name: str, *, modality: str, description: str, offline: bool = True,
                      test_only: bool = False, prefix: bool = False):
    """Decorator registering a factory ``f(**kwargs) -> Backbone`` under ``name``.

    With ``prefix=True`` the name is a prefix such as ``"timm"`` and the factory receives
    the rest of the name as its first argument (``timm:resnet18`` -> ``f("resnet18", ...)``).
    A duplicate name is refused at import.
    """

    def deco(factory: BackboneFactory) -> BackboneFactory:
        table = _PREFIXES if prefix else _REGISTRY
        if name in table:
            raise ValueError(f"backbone {name!r} is registered twice")
        table[name] = _Entry(name, factory, modality, description, offline, test_only)
        return factory

    return deco


def _ensure_builtins() -> None:
    # Importing the modules registers their backbones.
    from . import digits, image, text, wordvec  # noqa: F401


def list_backbones(include_test: bool = False) -> list[_Entry]:
    _ensure_builtins()
    entries = [e for e in _REGISTRY.values() if include_test or not e.test_only]
    return sorted(entries, key=lambda e: (e.modality, e.name)) + [
        _PREFIXES[k] for k in sorted(_PREFIXES)
    ]


def backbone_modality(name: str) -> str:
    return _lookup(name)[0].modality


def _lookup(name: str) -> tuple[_Entry, str | None]:
    _ensure_builtins()
    if name in _REGISTRY:
        return _REGISTRY[name], None
    if ":" in name:
        prefix, rest = name.split(":", 1)
        if prefix in _PREFIXES and rest:
            return _PREFIXES[prefix], rest
    known = ", ".join(sorted(_REGISTRY)) + ", " + ", ".join(f"{p}:<name>" for p in sorted(_PREFIXES))
    raise BackboneError(f"unknown backbone {name!r}; known: {known}")


def build_backbone(name: str, **kwargs: Any) -> Backbone:
    """Build a backbone by registry name; ``kwargs`` go to its factory (e.g. ``weights=``)."""
    entry, rest = _lookup(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if rest is not None:
        bb = entry.factory(rest, **kwargs)
    else:
        bb = entry.factory(**kwargs)
    return bb


def build_from_spec(spec: dict[str, Any]) -> Backbone:
    spec = dict(spec)
    name = spec.pop("name")
    return build_backbone(name, **spec)
