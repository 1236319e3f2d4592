"""Training curves and confusion matrices (the HTML report is :mod:`transferkit.report.page`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io import save_with


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_history(history: list[dict[str, Any]], path: Path) -> Path | None:
    rows = [h for h in history if h.get("val_accuracy") is not None]
    if not rows:
        return None
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ep = [h["epoch"] for h in rows]
    tl = [h["train_loss"] for h in rows]
    if any(v is not None for v in tl):
        ax1.plot(ep, [v if v is not None else float("nan") for v in tl], "o-", label="train loss")
    ax1.plot(ep, [h["val_loss"] for h in rows], "o-", label="val loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.plot(ep, [h["val_accuracy"] for h in rows], "o-", label="val accuracy")
    ax2.plot(ep, [h["val_macro_f1"] for h in rows], "s--", label="val macro F1")
    ax2.set_xlabel("epoch")
    ax2.legend()
    stages = [h["stage"] for h in rows]
    for i in range(1, len(stages)):
        if stages[i] != stages[i - 1]:
            for ax in (ax1, ax2):
                ax.axvline(ep[i] - 0.5, color="grey", ls=":")
    fig.tight_layout()
    save_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def plot_confusion(cm: list[list[int]], classes: list[str], path: Path, title: str) -> Path:
    import numpy as np

    plt = _plt()
    k = len(classes)
    size = min(12, 2.5 + 0.45 * k)
    fig, ax = plt.subplots(figsize=(size, size))
    arr = np.asarray(cm)
    ax.imshow(arr, cmap="Blues")
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if k <= 30:
        hi = arr.max() / 2 if arr.size else 0
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(arr[i, j]), ha="center", va="center",
                        color="white" if arr[i, j] > hi else "black", fontsize=8)
    fig.tight_layout()
    save_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def plot_detection_history(history: list[dict[str, Any]], path: Path) -> Path | None:
    """Training loss and validation mAP@0.5 / mAP@[.5:.95] per epoch of a detection run
    (a dotted line where a stage ends)."""
    rows = [h for h in history if h.get("val_map50") is not None]
    if not rows:
        return None
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ep = [h["epoch"] for h in rows]
    ax1.plot(ep, [float("nan") if h.get("train_loss") is None else h["train_loss"]
                  for h in rows], "o-", label="train loss (FCOS terms)")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.plot(ep, [h["val_map50"] for h in rows], "o-", label="val mAP@0.5")
    ax2.plot(ep, [h["val_map"] for h in rows], "s--", label="val mAP@[.5:.95]")
    ax2.set_xlabel("epoch")
    ax2.set_ylim(0, 1)
    ax2.legend()
    for i in range(1, len(rows)):
        if rows[i]["stage"] != rows[i - 1]["stage"]:
            for ax in (ax1, ax2):
                ax.axvline(ep[i] - 0.5, color="grey", ls=":")
    fig.tight_layout()
    save_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path
