"""``digits-cnn``: a small LeNet-style CNN for digit images, trained from scratch.

Not pretrained: it exists so that the classic domain-adaptation benchmarks on digits
(MNIST -> USPS, MNIST -> MNIST-M) run in minutes on a CPU.  The layout follows the MNIST
network of Ganin & Lempitsky (2015) and the LeNet of ADDA (Tzeng et al. 2017), with
BatchNorm: conv 5x5 (32) - pool - conv 5x5 (48) - pool - dense 500, on 32 x 32 RGB inputs
(grey digits are repeated over three channels; every image is resized to 32 x 32).
Strategies must train it: its ``pretrained`` flag is false.  With ``weights=FILE`` (a
safetensors file: a bundle's ``model.safetensors`` whose ``backbone.*`` tensors came from a
run that trained it, e.g. ``source-only``) it starts from those weights and counts as
pretrained, so feature-level strategies can use it frozen.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import BackboneError
from .base import Backbone, register_backbone
from .image import _no_extra_kwargs, file_sha256

#: seed of the random initialisation, so a rebuilt backbone has the same starting weights
INIT_SEED = 0


class DigitsCNN(Backbone):
    modality = "image"
    output = "pooled"
    pretrained = False

    def __init__(self, width: int = 32, feature_dim: int = 500):
        super().__init__()
        self._weights_tag = f"random-init-{INIT_SEED}"
        self._weights_path: str | None = None
        self.name = "digits-cnn"
        self.width = width
        self.feature_dim = feature_dim
        self.preprocess = {"input_size": [3, 32, 32], "mean": [0.5, 0.5, 0.5],
                           "std": [0.5, 0.5, 0.5], "interpolation": "bilinear", "crop_pct": 1.0}
        w = width
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(INIT_SEED)
            self.conv1 = nn.Sequential(nn.Conv2d(3, w, 5), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                                       nn.MaxPool2d(2))
            self.conv2 = nn.Sequential(nn.Conv2d(w, w * 3 // 2, 5), nn.BatchNorm2d(w * 3 // 2),
                                       nn.Dropout2d(0.1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
            self.fc = nn.Sequential(nn.Flatten(), nn.Linear(w * 3 // 2 * 25, feature_dim),
                                    nn.BatchNorm1d(feature_dim), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pooled": self.fc(self.conv2(self.conv1(x)))}

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return [list(self.conv1.parameters()), list(self.conv2.parameters()),
                list(self.fc.parameters())]

    def spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "width": self.width,
                               "feature_dim": self.feature_dim}
        if self._weights_path:
            out["weights"] = self._weights_path
        return out

    def identity(self) -> str:
        return f"{self.name}-w{self.width}-d{self.feature_dim}@{self._weights_tag}"

    def load_trained(self, path: str) -> None:
        """Load backbone tensors from a safetensors file (``backbone.`` prefixes stripped)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path))
        except (FileNotFoundError, SafetensorError, OSError) as exc:
            raise BackboneError(f"{path}: cannot read digits-cnn weights ({exc})") from None
        sd = {k[len("backbone."):] if k.startswith("backbone.") else k: v for k, v in sd.items()}
        own = self.state_dict()
        sd = {k: v for k, v in sd.items() if k in own}
        missing = [k for k in own if k not in sd]
        if missing:
            raise BackboneError(f"{path}: not digits-cnn weights (no tensor {missing[0]!r})")
        bad = [k for k in own if own[k].shape != sd[k].shape]
        if bad:
            raise BackboneError(f"{path}: tensor {bad[0]!r} has shape {tuple(sd[bad[0]].shape)}, "
                                f"digits-cnn expects {tuple(own[bad[0]].shape)}")
        self.load_state_dict(sd)
        self.pretrained = True
        self._weights_path = str(path)
        self._weights_tag = file_sha256(path)


@register_backbone("digits-cnn", modality="image", offline=True,
                   description="small LeNet-style CNN for 32x32 digits, trained from scratch "
                               "(not pretrained; for digits domain adaptation)")
def digits_cnn(width: int = 32, feature_dim: int = 500, weights: str | None = None,
               **kwargs: Any) -> DigitsCNN:
    _no_extra_kwargs("digits-cnn", kwargs, "width, feature_dim, weights")
    bb = DigitsCNN(int(width), int(feature_dim))
    if weights:
        bb.load_trained(weights)
    bb.eval()
    return bb
