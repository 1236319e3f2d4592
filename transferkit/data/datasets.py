"""``torch.utils.data`` datasets and loaders over :class:`Samples`.

Images are decoded lazily in the loader's worker processes; an image that cannot be
decoded does not stop the loader: its dataset item has ``None`` for a tensor and the
collate function drops it and reports its index, so the caller can name and skip it.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError
from .images import open_image
from .samples import Samples

#: Below this many items an image loader decodes in the main process.
MIN_ITEMS_FOR_WORKERS = 64


def _label(samples: Samples, index: int) -> int:
    return -1 if samples.labels is None else int(samples.labels[index])


def _to_tensor(image: Any) -> torch.Tensor:
    from torchvision.transforms import functional as F

    return F.to_tensor(image)


class ImageDataset(Dataset):
    """Image samples as ``(tensor or None, label or -1, index)``.

    Args:
        samples: image samples (paths or arrays).
        transform: PIL RGB image -> float tensor; ``None`` gives an unnormalised
            ``(3, H, W)`` tensor in ``[0, 1]``.
        grayscale: decode to gray, repeated over three channels.
        target_size: smallest shorter side the transform needs (lets JPEGs decode at a
            reduced scale).

    A decoding fault gives ``(None, label, index)`` instead of raising, so that one bad
    file does not kill a worker process; :func:`collate_images` reports it.
    """

    def __init__(self, samples: Samples, transform: Callable[[Any], torch.Tensor] | None = None,
                 grayscale: bool = False, target_size: int | None = None):
        if samples.modality != "image":
            raise ValueError(f"ImageDataset needs image samples, not {samples.modality}")
        self.samples = samples
        self.transform = transform
        self.grayscale = grayscale
        self.target_size = target_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, int]:
        label = _label(self.samples, index)
        try:
            image = open_image(self.samples.items[index], self.samples.origins[index],
                               grayscale=self.grayscale, target_size=self.target_size)
        except DataError:
            return None, label, index
        tensor = self.transform(image) if self.transform is not None else _to_tensor(image)
        return tensor, label, index


class TextDataset(Dataset):
    """Text samples as ``(text, label or -1, index)``."""

    def __init__(self, samples: Samples):
        if samples.modality != "text":
            raise ValueError(f"TextDataset needs text samples, not {samples.modality}")
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[str, int, int]:
        return self.samples.items[index], _label(self.samples, index), index


def collate_images(batch: list[tuple[torch.Tensor | None, int, int]]
                   ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, list[int]]:
    """Stack a batch of :class:`ImageDataset` items, dropping undecodable ones.

    Returns:
        ``(images (B, 3, H, W) or None when every item was bad, labels (B,), indices (B,),
        bad_indices)``: labels and indices are those of the kept items only;
        ``bad_indices`` are the sample indices of the dropped ones.
    """
    good = [entry for entry in batch if entry[0] is not None]
    bad = [int(index) for tensor, _, index in batch if tensor is None]
    labels = torch.tensor([label for _, label, _ in good], dtype=torch.long)
    indices = torch.tensor([index for _, _, index in good], dtype=torch.long)
    images = torch.stack([tensor for tensor, _, _ in good]) if good else None
    return images, labels, indices, bad


def collate_texts(batch: list[tuple[str, int, int]]
                  ) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """``(texts, labels (B,), indices (B,))`` for a batch of :class:`TextDataset` items."""
    texts = [text for text, _, _ in batch]
    labels = torch.tensor([label for _, label, _ in batch], dtype=torch.long)
    indices = torch.tensor([index for _, _, index in batch], dtype=torch.long)
    return texts, labels, indices


def default_workers(count: int) -> int:
    """Worker processes for decoding ``count`` images: ``min(2, cpus)``, 0 for few items."""
    if count < MIN_ITEMS_FOR_WORKERS:
        return 0
    return max(0, min(2, os.cpu_count() or 1))


def make_loader(samples: Samples, *, transform: Callable[[Any], torch.Tensor] | None = None,
                batch_size: int = 32, shuffle: bool = False, seed: int = 0,
                workers: int | None = None, grayscale: bool = False,
                target_size: int | None = None) -> DataLoader:
    """A ``DataLoader`` over samples.

    Image samples give batches ``(images or None, labels, indices, bad_indices)`` (see
    :func:`collate_images`) decoded in ``workers`` processes (default
    :func:`default_workers`); text samples give ``(texts, labels, indices)`` and are
    loaded in the main process.  Unlabelled samples have label -1.

    The order and the worker seeds come from a ``torch.Generator`` seeded with ``seed``:
    a new loader with the same seed gives the same batches in any process, so training
    can resume exactly by building each epoch's loader with its own seed (e.g.
    ``seed + epoch``).  Iterating one loader twice continues the generator and gives a
    different (but still reproducible) order.
    """
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    if samples.modality == "image":
        dataset: Dataset = ImageDataset(samples, transform, grayscale=grayscale,
                                        target_size=target_size)
        collate: Callable[..., Any] = collate_images
        num_workers = default_workers(len(samples)) if workers is None else max(0, int(workers))
    else:
        dataset = TextDataset(samples)
        collate = collate_texts
        num_workers = 0
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        collate_fn=collate,
        persistent_workers=False,
        pin_memory=False,
    )
