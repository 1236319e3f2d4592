"""Pooled features of a frozen backbone's intermediate layers.

The layers are the backbone's :meth:`~transferkit.backbones.base.Backbone.feature_modules`
(a CNN's stages as timm names them in ``feature_info``, a ViT's blocks, a text encoder's
layers), numbered ``1..L`` from the input side.  A forward hook on each chosen module keeps its
output (a tensor, or a tuple whose first item is one) and pools it to one vector per sample:

* ``(B, C, H, W)`` maps: the global average over space;
* ``(B, T, D)`` token states: the mean over the real tokens when the backbone's output has a
  ``mask`` of that shape (text encoders: the attention mask), else over every token (ViTs);
* ``(B, D)``: as it is.

Everything runs in PyTorch (the ONNX graph of the feature cache gives the final features only).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from ..errors import ConfigError
from ..heads import masked_mean

__all__ = ["extract_layer_features", "layer_count", "pool_layer_output"]


def layer_count(backbone) -> int:
    """How many intermediate layers of ``backbone`` can be read (0 when none)."""
    return len(backbone.feature_modules())


def pool_layer_output(out, mask: torch.Tensor | None) -> torch.Tensor:
    """One vector per sample of a layer's output (see the module's description)."""
    x = out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(x, torch.Tensor):
        raise ConfigError(f"a layer's output is a {type(x).__name__}, not a tensor")
    if x.dim() == 4:
        return x.float().mean(dim=(2, 3))
    if x.dim() == 3:
        if mask is not None and tuple(mask.shape) == tuple(x.shape[:2]):
            return masked_mean(x.float(), mask.to(x.device))
        return x.float().mean(dim=1)
    if x.dim() == 2:
        return x.float()
    raise ConfigError(f"a layer's output has shape {tuple(x.shape)}; it cannot be pooled")


@contextlib.contextmanager
def _recording(modules: dict[int, torch.nn.Module]) -> Iterator[dict[int, object]]:
    seen: dict[int, object] = {}
    handles = []
    for layer, module in modules.items():
        def hook(m, args, out, layer=layer):
            seen[layer] = out
        handles.append(module.register_forward_hook(hook))
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def extract_layer_features(backbone, pipeline, samples, layers: list[int], *,
                           batch_size: int = 64) -> dict[int, torch.Tensor]:
    """``{layer: (N, D_layer)}``: the pooled output of each of ``layers`` (1-based numbers
    into ``feature_modules()``) over ``samples``, in item order, from one pass of the frozen
    backbone."""
    modules = backbone.feature_modules()
    wanted = {layer: modules[layer - 1] for layer in layers}
    was_training = backbone.training
    backbone.eval()
    out: dict[int, torch.Tensor] = {}
    try:
        with torch.inference_mode(), _recording(wanted) as seen:
            for batch in pipeline.batches(samples, batch_size=batch_size):
                seen.clear()
                o = backbone(batch.inputs)
                mask = o.get("mask") if isinstance(o, dict) else None
                for layer in layers:
                    f = pool_layer_output(seen[layer], mask).cpu()
                    if layer not in out:
                        out[layer] = torch.empty((len(samples), f.shape[1]))
                    out[layer][batch.indices] = f
    finally:
        backbone.train(was_training)
    return {layer: out.get(layer, torch.empty((0, 0))).clone() for layer in layers}
