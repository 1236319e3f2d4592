"""Data: reading data sets, splitting them, decoding images and loading batches.

The torch-based names (datasets, loaders, transforms) are imported on first use, so that
reading and checking data does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .images import check_image, open_image, scan_images
from .readers import IMAGE_EXTENSIONS, read_data, read_domains, read_inputs
from .samples import Samples, sort_classes
from .splits import concat_samples, few_shot_splits, k_shot, resolve_splits, stratified_split

_LAZY = {
    "ImageDataset": ".datasets",
    "TextDataset": ".datasets",
    "collate_images": ".datasets",
    "collate_texts": ".datasets",
    "make_loader": ".datasets",
    "eval_transform": ".transforms",
    "train_transform": ".transforms",
    "describe_transform": ".transforms",
}

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageDataset",
    "Samples",
    "TextDataset",
    "check_image",
    "collate_images",
    "collate_texts",
    "concat_samples",
    "describe_transform",
    "eval_transform",
    "few_shot_splits",
    "k_shot",
    "make_loader",
    "open_image",
    "read_data",
    "read_domains",
    "read_inputs",
    "resolve_splits",
    "scan_images",
    "sort_classes",
    "stratified_split",
    "train_transform",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
