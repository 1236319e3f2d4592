"""Shared fixtures: small generated data sets, an isolated feature cache, offline hub."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_data(sub: str) -> Path:
    p = SHARED_DATA / sub
    if not p.exists():
        pytest.skip(f"shared data {p} is absent")
    return p


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE_DIR", str(tmp_path / "feature-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def make_image_folder(root: Path, per_class: int = 10, classes=("cat", "dog"), size=36,
                      seed: int = 0) -> Path:
    """Class folders of PNGs whose colour depends on the class (learnable in a few steps)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    tints = [np.array([200, 40, 40]), np.array([40, 40, 200]), np.array([40, 200, 40])]
    for ci, c in enumerate(classes):
        d = root / c
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = rng.integers(0, 60, size=(size, size, 3))
            arr = np.clip(tints[ci % 3] + noise, 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(d / f"{c}_{i:03d}.png")
    return root


POS = ["good", "great", "love", "excellent", "nice", "happy", "best", "fine"]
NEG = ["bad", "awful", "hate", "terrible", "poor", "sad", "worst", "broken"]


def make_text_rows(n_per_class: int = 16, seed: int = 0) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    rows = []
    for label, words in (("pos", POS), ("neg", NEG)):
        for _ in range(n_per_class):
            w = rng.choice(words, size=3)
            rows.append((f"this is {w[0]} and {w[1]} really {w[2]}", label))
    return rows


def make_text_csv(path: Path, n_per_class: int = 16, seed: int = 0) -> Path:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(make_text_rows(n_per_class, seed))
    return path


def interrupt_after(monkeypatch, n_epochs: int) -> None:
    """Make training stop as Ctrl-C would, at the start of epoch ``n_epochs + 1`` (counting
    the epochs of every stage; the checkpoints of the epochs before stay)."""
    from transferkit.engine import trainer as trainer_mod

    real = trainer_mod.Trainer._train_batches
    calls = {"n": 0}

    def wrapped(self, *a, **k):
        if calls["n"] == n_epochs:
            raise KeyboardInterrupt
        calls["n"] += 1
        return real(self, *a, **k)

    monkeypatch.setattr(trainer_mod.Trainer, "_train_batches", wrapped)


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "images")


@pytest.fixture
def text_csv(tmp_path) -> Path:
    return make_text_csv(tmp_path / "texts.csv")
