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


#: the validation curves of a classification run: (history column, label, line style)
CLASSIFICATION_CURVES = (("val_accuracy", "val accuracy", "o-"),
                         ("val_macro_f1", "val macro F1", "s--"))
#: ... and of a detection run
DETECTION_CURVES = (("val_map50", "val mAP@0.5", "o-"), ("val_map", "val mAP@[.5:.95]", "s--"))


def plot_history(history: list[dict[str, Any]], path: Path, *,
                 curves=CLASSIFICATION_CURVES, loss_label: str = "train loss",
                 val_loss: bool = True, unit_range: bool = False) -> Path | None:
    """Loss (left) and validation scores (right) per epoch, a dotted line where a stage
    ends; epochs without the first validation score are left out (None: nothing to draw)."""
    rows = [h for h in history if h.get(curves[0][0]) is not None]
    if not rows:
        return None
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ep = [h["epoch"] for h in rows]
    tl = [h.get("train_loss") for h in rows]
    if any(v is not None for v in tl):
        ax1.plot(ep, [v if v is not None else float("nan") for v in tl], "o-", label=loss_label)
    if val_loss:
        ax1.plot(ep, [h["val_loss"] for h in rows], "o-", label="val loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    for key, label, style in curves:
        ax2.plot(ep, [h[key] for h in rows], style, label=label)
    ax2.set_xlabel("epoch")
    if unit_range:
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


def plot_detection_history(history: list[dict[str, Any]], path: Path) -> Path | None:
    """Training loss and validation mAP@0.5 / mAP@[.5:.95] per epoch of a detection run
    (a dotted line where a stage ends)."""
    return plot_history(history, path, curves=DETECTION_CURVES,
                        loss_label="train loss (FCOS terms)", val_loss=False, unit_range=True)


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


