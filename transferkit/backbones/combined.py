"""``concat:A+B``: image backbones side by side, their pooled features concatenated.

Two pretrained networks often err on different images, so a probe on both feature vectors
can beat either alone (``--strategy auto`` tries the best two of its probes this way).  The
input is prepared for the member with the largest input size (its resize, crop and
normalisation); inside :meth:`CombinedBackbone.forward` each other member gets the same
pixels resized to its own input size (bilinear) and normalised with its own mean and std.
The members' layer groups are merged from the output end, so ``partial`` unfreezes the top
groups of every member.
"""

from __future__ import annotations

from itertools import zip_longest
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BackboneError
from .base import Backbone, build_backbone, register_backbone

PREFIX = "concat"


def combined_name(names: list[str]) -> str:
    return f"{PREFIX}:" + "+".join(names)


def _stats(pre: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.tensor(pre["mean"], dtype=torch.float32).view(1, -1, 1, 1),
            torch.tensor(pre["std"], dtype=torch.float32).view(1, -1, 1, 1))


class CombinedBackbone(Backbone):
    """Several image backbones giving ``{"pooled": cat(pooled_1, ..., pooled_n)}``."""

    modality = "image"
    output = "pooled"
    family = "cnn"

    def __init__(self, members: list[Backbone], spec: dict[str, Any]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.name = combined_name([m.name for m in members])
        self._spec = spec
        self.feature_dim = sum(m.feature_dim for m in members)
        self.pretrained = all(m.pretrained for m in members)
        lead = max(members, key=lambda m: m.preprocess["input_size"][-1])
        self.preprocess = dict(lead.preprocess)
        mean, std = _stats(self.preprocess)
        self.register_buffer("in_mean", mean, persistent=False)
        self.register_buffer("in_std", std, persistent=False)
        for i, m in enumerate(members):
            mean, std = _stats(m.preprocess)
            self.register_buffer(f"mean_{i}", mean, persistent=False)
            self.register_buffer(f"std_{i}", std, persistent=False)
        self.eval()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        pixels = x * self.in_std + self.in_mean
        out = []
        for i, m in enumerate(self.members):
            size = tuple(m.preprocess["input_size"][-2:])
            xi = pixels if tuple(x.shape[-2:]) == size else F.interpolate(
                pixels, size=size, mode="bilinear", align_corners=False)
            out.append(m((xi - getattr(self, f"mean_{i}")) / getattr(self, f"std_{i}"))["pooled"])
        return {"pooled": torch.cat(out, dim=1)}

    def layer_groups(self) -> list[list[nn.Parameter]]:
        ends = [list(reversed(m.layer_groups())) for m in self.members]
        merged = [[p for g in level if g for p in g] for level in zip_longest(*ends)]
        return list(reversed(merged))

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, **self._spec}

    def identity(self) -> str:
        return f"{PREFIX}(" + ",".join(m.identity() for m in self.members) + ")"

    def describe(self) -> str:
        return (" + ".join(m.name for m in self.members)
                + f" (pooled features concatenated, {self.feature_dim}-d, "
                + f"{self.preprocess['input_size'][-1]} px)")


@register_backbone(PREFIX, modality="image", prefix=True,
                   description="image backbones side by side, features concatenated: "
                               "concat:efficientnet_lite1+mobilenet_v2")
def concat(rest: str, image_size: int | None = None, **kwargs: Any) -> CombinedBackbone:
    names = [n.strip() for n in rest.split("+")]
    if len(names) < 2 or not all(names) or len(set(names)) != len(names):
        raise BackboneError(f"backbone 'concat:{rest}': name two or more different image "
                            "backbones joined by '+', e.g. concat:efficientnet_lite1+mobilenet_v2")
    if kwargs:
        raise BackboneError(f"backbone 'concat:{rest}' takes image_size only, not "
                            f"{', '.join(sorted(kwargs))}")
    members = [build_backbone(n, image_size=image_size) for n in names]
    for n, m in zip(names, members):
        if m.modality != "image" or m.output != "pooled" or m.preprocess is None:
            raise BackboneError(f"backbone 'concat:{rest}': {n!r} is not an image backbone "
                                "with pooled features")
    return CombinedBackbone(members, {} if image_size is None else {"image_size": image_size})
