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

What strategies and reports may ask of a backbone beyond its features (never by probing its
class or its private attributes):

* :attr:`Backbone.family`: ``"vit"`` (a timm Vision Transformer), ``"cnn"`` (any other image
  model, read as convolutional feature maps), ``"text-encoder"`` (a BERT-style transformer
  encoder) or ``"word-vectors"`` (a static embedding table);
* :attr:`Backbone.network`: the wrapped network (the timm or transformers model), where
  adapters go and hooks are put; the backbone itself when it wraps none;
* :meth:`Backbone.transformer_blocks`: the encoder layers / ViT blocks, input to output
  (empty for CNNs and word vectors);
* :meth:`Backbone.feature_modules`: the modules whose outputs are the backbone's intermediate
  feature maps, input to output (a CNN's stages, the transformer blocks), for penalties that
  compare them with the pretrained backbone's (DELTA);
* :meth:`Backbone.attention_values`: per block, the linear map that computes the attention
  values (:class:`ValueProjection`);
* :meth:`Backbone.token_features`: the features plus the final token states and their mask;
* :meth:`Backbone.pool_tokens`: the backbone's own pooling of token states;
* :meth:`Backbone.token_layout`: where the patch tokens of a ViT sit;
* :meth:`Backbone.attention_maps`: a context that records every block's attention
  probabilities;
* :meth:`Backbone.input_embeddings` and :meth:`Backbone.token_names`: the token embedding
  module and the names of token ids (text encoders);
* :meth:`Backbone.feature_maps` and :meth:`Backbone.feature_map_info`: the last stages'
  feature maps of a convolutional image backbone, with their channels and strides (what a
  detection head reads);
* :meth:`Backbone.save_tokenizer`: the tokenizer's files, for use outside transferkit (ONNX
  export);
* :meth:`Backbone.export_pooled`: an ONNX graph of the ``pooled`` features of a text encoder
  (the engine runs frozen text features through it; image backbones it exports whole);
* :meth:`Backbone.source_head` and :meth:`Backbone.source_probabilities`: the pretrained
  classifier over the source task's own classes (ImageNet-1k for the built-in CNNs), applied to
  ``pooled`` features, so that cached features give source probabilities too (LEEP, NCE).
"""

from __future__ import annotations

import contextlib
import inspect
import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..errors import BackboneError, ConfigError


#: the architecture families a backbone may belong to
FAMILIES = ("vit", "cnn", "text-encoder", "word-vectors")


@dataclass(frozen=True)
class ValueProjection:
    """The linear map of one attention block whose output rows ``start:stop`` are the values.

    A separate value projection has ``start = 0, stop = out_features``; a fused ``[q | k | v]``
    projection (timm ViTs) has the last third.  ``W_v = linear.weight[start:stop]``.
    """

    linear: nn.Linear
    start: int
    stop: int

    @property
    def weight(self) -> torch.Tensor:
        w = self.linear.weight
        return w if (self.start, self.stop) == (0, w.shape[0]) else w[self.start:self.stop]


@dataclass(frozen=True)
class TokenLayout:
    """Where the tokens of an image transformer sit: ``prefix`` class / register tokens first,
    then the ``grid`` (rows, columns) of patch tokens; ``has_cls`` when the first is a class
    token."""

    prefix: int
    grid: tuple[int, int]
    has_cls: bool


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
    #: architecture family, one of :data:`FAMILIES`
    family: str = "cnn"

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

    # ------------------------------------------------------------------ what others may ask

    @property
    def network(self) -> nn.Module:
        """The wrapped network (timm / transformers model); the backbone itself by default."""
        return self

    def transformer_blocks(self) -> list[nn.Module]:
        """The transformer blocks (ViT blocks, encoder layers), input to output; ``[]`` if none."""
        return []

    def feature_modules(self) -> list[nn.Module]:
        """The modules whose outputs (a tensor, or a tuple whose first item is one) are the
        intermediate feature maps, input to output: the transformer blocks by default; ``[]``
        when none can be reached."""
        return self.transformer_blocks()

    def attention_values(self) -> list[ValueProjection]:
        """One :class:`ValueProjection` per transformer block, in block order; ``[]`` when the
        backbone has no blocks or their value projections cannot be reached."""
        return []

    def token_features(self, batch: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor,
                                                  torch.Tensor | None]:
        """``(features, tokens, mask)``: :meth:`forward`'s features, the final token states
        ``(B, N, D)`` (all tokens, after the final norm) and their ``(B, N)`` mask (``None``
        when every token is real)."""
        feats = self(batch)
        if "tokens" not in feats:
            raise ConfigError(f"backbone {self.name!r} gives no token features")
        return feats, feats["tokens"], feats.get("mask")

    def pool_tokens(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The ``pooled`` features this backbone makes of token states ``(B, T, D)``."""
        raise ConfigError(f"backbone {self.name!r} does not pool token states")

    def token_layout(self) -> TokenLayout | None:
        """Where the patch tokens sit (image transformers); ``None`` for other backbones."""
        return None

    @contextlib.contextmanager
    def attention_maps(self) -> Iterator[list[torch.Tensor]]:
        """Within the context, every call of a transformer block appends its attention
        probabilities ``(B, heads, Tq, Tk)`` to the yielded list, in call order."""
        raise ConfigError(f"backbone {self.name!r} has no attention maps to read")
        yield []  # pragma: no cover

    def input_embeddings(self) -> nn.Module | None:
        """The module that embeds token ids (its output: ``(B, T, D)``); ``None`` if none."""
        return None

    def token_names(self, ids: list[int]) -> list[str]:
        """The tokenizer's names of token ids (``[CLS]``, ``good``, ``##s``, ...)."""
        raise ConfigError(f"backbone {self.name!r} takes images, not text")

    def source_head(self) -> nn.Module | None:
        """The pretrained classifier that maps ``pooled`` features ``(B, D)`` to logits over
        the source task's classes ``(B, Z)``; ``None`` when the weights came without one (text
        encoders, word vectors, headless weights)."""
        return None

    def source_classes(self) -> tuple | None:
        """The names of the source classes :meth:`source_head` scores, in its order (a
        :class:`~transferkit.backbones.imagenet.SourceClass` each: WordNet lemmas and gloss),
        or ``None`` when they are not known (no head, or not an ImageNet-1k head)."""
        head = self.source_head()
        if head is None or getattr(head, "out_features", None) != 1000:
            return None
        from .imagenet import imagenet_classes

        return imagenet_classes()

    def source_matches(self, name: str) -> list[int]:
        """Indices of the source classes a class named ``name`` stands for (its WordNet
        lemmas; or the kinds of it, e.g. every dog breed for ``dog``); empty when none."""
        classes = self.source_classes()
        if classes is None:
            return []
        from .imagenet import matching_classes

        return matching_classes(name, classes)

    @torch.no_grad()
    def source_probabilities(self, pooled: torch.Tensor) -> torch.Tensor:
        """Softmax over the source classes ``(B, Z)`` of ``pooled`` features ``(B, D)`` (as
        :meth:`forward` gives them, or read back from the feature cache)."""
        head = self.source_head()
        if head is None:
            raise ConfigError(f"backbone {self.name!r} has no classifier over source classes")
        p = next(head.parameters(), None)
        x = pooled.to(p.device, p.dtype) if p is not None else pooled
        return torch.softmax(head(x).float(), dim=-1).cpu()

    def feature_maps(self, x: torch.Tensor, levels: int = 3) -> list[torch.Tensor]:
        """The feature maps ``(B, C_i, H / s_i, W / s_i)`` of the last ``levels`` stages of a
        convolutional image backbone, input to output, each stride twice the one before
        (what a detection head's feature pyramid reads)."""
        raise ConfigError(f"backbone {self.name!r} gives no feature maps (detection needs a "
                          "convolutional image backbone)")

    def feature_map_info(self, levels: int = 3) -> list[tuple[int, int]]:
        """``(channels, stride)`` of each map :meth:`feature_maps` gives."""
        raise ConfigError(f"backbone {self.name!r} gives no feature maps (detection needs a "
                          "convolutional image backbone)")

    def save_tokenizer(self, folder) -> bool:
        """Write the tokenizer's files to ``folder`` in a format other tools read (Hugging
        Face ``save_pretrained``); ``False`` when this backbone has no such tokenizer."""
        return False

    def export_pooled(self, path) -> dict[str, Any] | None:
        """Write to ``path`` an ONNX graph computing ``pooled`` from :meth:`tokenize`'s tensors
        (inputs named by their keys, dynamic batch and sequence axes); returns what a graph
        optimiser may use (``inputs``, ``num_heads``, ``hidden_size``), or ``None`` when this
        backbone has no such graph."""
        return None


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


def list_backbones(include_test: bool = False) -> list[_Entry]:
    entries = [e for e in _REGISTRY.values() if include_test or not e.test_only]
    return sorted(entries, key=lambda e: (e.modality, e.name)) + [
        _PREFIXES[k] for k in sorted(_PREFIXES)
    ]


def backbone_modality(name: str) -> str:
    return _lookup(name)[0].modality


def _lookup(name: str) -> tuple[_Entry, str | None]:
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
    try:  # a setting the factory does not take is the caller's fault, named here
        inspect.signature(entry.factory).bind(*([rest] if rest is not None else []), **kwargs)
    except TypeError as exc:
        raise BackboneError(f"backbone {name!r} ({entry.modality}): {exc}") from None
    if rest is not None:
        bb = entry.factory(rest, **kwargs)
    else:
        bb = entry.factory(**kwargs)
    return bb


def build_from_spec(spec: dict[str, Any]) -> Backbone:
    spec = dict(spec)
    name = spec.pop("name")
    return build_backbone(name, **spec)


# --------------------------------------------------------------------------- weights files

def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as one short line (its type when it has no message)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def load_plain_tensors(path: str | os.PathLike) -> Any:
    """``torch.load`` of a ``.pth`` / ``.pt`` / ``.bin`` file that holds tensors only.

    Nothing is ever unpickled beyond tensors and plain containers (``weights_only=True``);
    a file that needs more (pickled objects: possibly hostile code) or is no torch file at
    all is refused in one line, without torch's warning or its advice to load unsafely.

    Raises:
        BackboneError: the file cannot be loaded safely, or is unreadable.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a corrupt zip, a truncated file, ...
        # outside torch's zip format the weights-only unpickler reads the bytes as a legacy
        # pickle stream: whatever it raises there means the same thing
        if isinstance(exc, pickle.UnpicklingError) or not zipfile.is_zipfile(path):
            raise BackboneError(f"weights file {os.fspath(path)!r}: not a plain tensor file (it "
                                "holds Python objects, or is not a torch file); it cannot be "
                                "loaded safely. Save the tensors alone, or as .safetensors") from None
        raise BackboneError(f"cannot read weights file {os.fspath(path)!r}: {one_line(exc)}") from None

