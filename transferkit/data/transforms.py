"""Image transforms built from a backbone's ``preprocess`` dict.

``preprocess`` looks like ``{"input_size": [3, 224, 224], "mean": [0.5, 0.5, 0.5],
"std": [0.5, 0.5, 0.5], "interpolation": "bicubic", "crop_pct": 0.875}``.  Every
transform takes a PIL RGB image and returns a float tensor ``(3, H, W)``.
torchvision is imported when a transform is built, not when this module is.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from ..errors import ConfigError

Transform = Callable[[Any], Any]

#: Interpolation names accepted in ``preprocess["interpolation"]``.
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "lanczos")

#: Augmentation settings of :func:`train_transform` (part of :func:`describe_transform`).
AUGMENT_SCALE = (0.6, 1.0)
AUGMENT_ROTATION = 15
DEFAULT_CROP_PCT = 0.875


def _settings(preprocess: dict) -> dict[str, Any]:
    """Checked, normalised preprocessing settings."""
    try:
        size = [int(v) for v in preprocess["input_size"]]
        mean = [float(v) for v in preprocess["mean"]]
        std = [float(v) for v in preprocess["std"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"image preprocessing needs input_size, mean and std ({exc})") from None
    if len(size) != 3 or size[1] < 1 or size[2] < 1:
        raise ConfigError(f"image preprocessing input_size must be [C, H, W], got {size}")
    if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
        raise ConfigError(f"image preprocessing needs 3 means and 3 positive stds, got {mean} / {std}")
    name = str(preprocess.get("interpolation") or "bilinear").lower()
    if name not in INTERPOLATIONS:
        raise ConfigError(f"unknown interpolation {name!r}; use one of {', '.join(INTERPOLATIONS)}")
    crop_pct = float(preprocess.get("crop_pct") or DEFAULT_CROP_PCT)
    if not 0 < crop_pct <= 1:
        raise ConfigError(f"image preprocessing crop_pct must be in (0, 1], got {crop_pct}")
    height, width = size[1], size[2]
    return {
        "height": height,
        "width": width,
        "resize": int(max(height, width) / crop_pct),
        "mean": mean,
        "std": std,
        "interpolation": name,
        "crop_pct": crop_pct,
    }


def _interpolation(name: str) -> Any:
    from torchvision.transforms import InterpolationMode

    return InterpolationMode(name)


def _normalise(settings: dict[str, Any]) -> list[Transform]:
    from torchvision import transforms as T

    return [T.ToTensor(), T.Normalize(settings["mean"], settings["std"])]


def eval_transform(preprocess: dict) -> Transform:
    """Resize the shorter side to ``int(H / crop_pct)``, centre-crop ``(H, W)``, normalise."""
    from torchvision import transforms as T

    s = _settings(preprocess)
    mode = _interpolation(s["interpolation"])
    return T.Compose([
        T.Resize(s["resize"], interpolation=mode, antialias=True),
        T.CenterCrop((s["height"], s["width"])),
        *_normalise(s),
    ])


def train_transform(preprocess: dict, augment: bool) -> Transform:
    """Training transform: random resized crop (scale 0.6-1), horizontal flip and a
    rotation of up to 15 degrees (corners filled with the mean colour, i.e. zero after
    normalising), then normalise.  Without ``augment`` it is :func:`eval_transform`.

    The randomness comes from ``torch``'s generator, which the data loader seeds in each
    worker process.
    """
    if not augment:
        return eval_transform(preprocess)
    from torchvision import transforms as T

    s = _settings(preprocess)
    mode = _interpolation(s["interpolation"])
    fill = [int(round(255 * m)) for m in s["mean"]]
    return T.Compose([
        T.RandomResizedCrop((s["height"], s["width"]), scale=AUGMENT_SCALE, interpolation=mode,
                            antialias=True),
        T.RandomHorizontalFlip(),
        T.RandomRotation(AUGMENT_ROTATION, interpolation=_interpolation("bilinear"), fill=fill),
        *_normalise(s),
    ])


def describe_transform(preprocess: dict, augment: bool, grayscale: bool) -> str:
    """A stable one-line description of a transform, for cache keys and reports."""
    s = _settings(preprocess)
    description: dict[str, Any] = {
        "v": 1,
        "size": [s["height"], s["width"]],
        "mean": s["mean"],
        "std": s["std"],
        "interpolation": s["interpolation"],
        "grayscale": bool(grayscale),
    }
    if augment:
        description["augment"] = {"random_resized_crop": list(AUGMENT_SCALE), "hflip": True,
                                  "rotation": AUGMENT_ROTATION}
    else:
        description["resize"] = s["resize"]
        description["crop"] = "center"
    return json.dumps(description, sort_keys=True, separators=(",", ":"))
