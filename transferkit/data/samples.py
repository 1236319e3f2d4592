"""The in-memory form of a data set: :class:`Samples`.

Every reader returns :class:`Samples`; splitting, scanning, loading and training all work
on it.  Items are kept light: image files are kept as paths and decoded lazily, arrays
from an ``.npz`` are views into the loaded array, texts are strings.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from ..errors import DataError

MODALITIES = ("image", "text")

_INT_RE = re.compile(r"^[+-]?\d+$")


def sort_classes(names: Iterable[str]) -> list[str]:
    """Return the distinct class names sorted; numerically when all are integers.

    ``["10", "2", "1"]`` sorts as ``["1", "2", "10"]``; anything else sorts as strings.
    """
    unique = set(names)
    if unique and all(_INT_RE.match(name) for name in unique):
        return sorted(unique, key=lambda name: (int(name), name))
    return sorted(unique)


@dataclass
class Samples:
    """A list of items with optional integer labels.

    Attributes:
        modality: ``"image"`` or ``"text"``.
        items: image file paths (``str``) or ``uint8`` arrays ``(H, W)`` / ``(H, W, C)``
            for images; strings for texts.
        labels: ``int64`` indices into :attr:`classes`, or ``None`` when unlabelled.
        classes: class names in index order.
        origins: per item, what an error message names: ``"path/x.jpg"``,
            ``"file.csv: line 12"``, ``"x.npz: row 7"``, ``"a.tar.gz: a/pos/1.txt"``.
        source: the path the samples were read from.
        notes: what the reader left out and the user should hear of (links skipped);
            kept by :meth:`subset` and :meth:`with_classes`.
    """

    modality: str
    items: list
    labels: np.ndarray | None
    classes: list[str]
    origins: list[str]
    source: str
    notes: list[str] = field(default_factory=list)
    #: per item, the index of the input domain it came from (several sets merged), or None
    domains: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, not {self.modality!r}")
        if not isinstance(self.items, list):
            self.items = list(self.items)
        if not isinstance(self.origins, list):
            self.origins = list(self.origins)
        self.classes = [str(name) for name in self.classes]
        if len(self.origins) != len(self.items):
            raise ValueError(f"{len(self.items)} items but {len(self.origins)} origins")
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
            if len(self.labels) != len(self.items):
                raise ValueError(f"{len(self.items)} items but {len(self.labels)} labels")
            if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
                raise ValueError("labels must index into classes")
        if self.domains is not None:
            self.domains = np.asarray(self.domains, dtype=np.int64).reshape(-1)
            if len(self.domains) != len(self.items):
                raise ValueError(f"{len(self.items)} items but {len(self.domains)} domains")

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        labelled = "labelled" if self.labels is not None else "unlabelled"
        return (f"Samples({self.modality}, {len(self)} items, {labelled}, "
                f"{len(self.classes)} classes, source={self.source!r})")

    @property
    def labelled(self) -> bool:
        """Whether the samples carry labels."""
        return self.labels is not None

    def label_name(self, index: int) -> str | None:
        """The class name of item ``index``, or ``None`` when unlabelled."""
        if self.labels is None:
            return None
        return self.classes[int(self.labels[index])]

    def subset(self, indices: Sequence[int] | np.ndarray) -> Samples:
        """The items at ``indices`` (in that order), keeping the class list."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64, copy=False).reshape(-1)
        return Samples(
            modality=self.modality,
            items=[self.items[i] for i in idx],
            labels=None if self.labels is None else self.labels[idx].copy(),
            classes=list(self.classes),
            origins=[self.origins[i] for i in idx],
            source=self.source,
            notes=list(self.notes),
            domains=None if self.domains is None else self.domains[idx].copy(),
        )

    def with_classes(self, classes: Sequence[str]) -> Samples:
        """The same items with labels re-indexed against another class list.

        Raises :class:`DataError` naming the first item whose label is not in ``classes``.
        """
        classes = [str(name) for name in classes]
        if self.labels is None:
            return Samples(self.modality, list(self.items), None, classes,
                           list(self.origins), self.source, list(self.notes), self.domains)
        position = {name: i for i, name in enumerate(classes)}
        mapping = np.array([position.get(name, -1) for name in self.classes], dtype=np.int64)
        labels = mapping[self.labels] if len(mapping) else self.labels.copy()
        missing = np.flatnonzero(labels < 0)
        if len(missing):
            first = int(missing[0])
            name = self.classes[int(self.labels[first])]
            raise DataError(f"{self.origins[first]}: label {name!r} is not one of the model's "
                            f"classes: {', '.join(classes)}")
        return Samples(self.modality, list(self.items), labels, classes,
                       list(self.origins), self.source, list(self.notes), self.domains)

    def fingerprint(self) -> str:
        """A SHA-256 hex digest of the modality, items, labels and classes.

        Image paths contribute their absolute path, size and modification time (so an
        edited file changes the digest without being read); arrays their shape, dtype
        and bytes; texts their UTF-8 bytes.  Used as a cache key.
        """
        digest = hashlib.sha256()
        digest.update(f"transferkit-samples-v1\0{self.modality}\0{len(self.items)}\0".encode())
        for item in self.items:
            if isinstance(item, np.ndarray):
                digest.update(f"a{item.dtype.str}{item.shape}\0".encode())
                digest.update(np.ascontiguousarray(item).tobytes())
            elif self.modality == "image":
                path = os.path.abspath(os.fspath(item))
                try:
                    stat = os.stat(path)
                    meta = f"{stat.st_size}:{stat.st_mtime_ns}"
                except OSError:
                    meta = "missing"
                digest.update(f"p{len(path)}:{path}\0{meta}\0".encode("utf-8", "surrogatepass"))
            else:
                data = str(item).encode("utf-8", "surrogatepass")
                digest.update(f"t{len(data)}:".encode())
                digest.update(data)
        if self.labels is None:
            digest.update(b"\0unlabelled")
        else:
            digest.update(b"\0labels")
            digest.update(self.labels.astype("<i8", copy=False).tobytes())
            digest.update("\0".join(self.classes).encode("utf-8", "surrogatepass"))
        return digest.hexdigest()

    def class_counts(self) -> dict[str, int]:
        """Number of items per class (every class, zero included); ``{}`` when unlabelled."""
        if self.labels is None:
            return {}
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return {name: int(counts[i]) for i, name in enumerate(self.classes)}
