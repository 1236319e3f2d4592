"""Classification metrics: accuracy, macro F1, per-class precision / recall / F1, confusion."""

from __future__ import annotations

from typing import Any

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def classification_metrics(logits: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Summary metrics plus per-class figures and the confusion matrix (rows = true)."""
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    k = len(classes)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return {"accuracy": None, "macro_f1": None, "loss": None, "n": 0, "per_class": {},
                "confusion": [[0] * k for _ in range(k)]}
    pred = logits.argmax(1)
    proba = softmax(logits.astype(np.float64))
    loss = float(-np.mean(np.log(np.clip(proba[np.arange(len(labels)), labels], 1e-12, 1.0))))
    idx = list(range(k))
    p, r, f, s = precision_recall_fscore_support(labels, pred, labels=idx, zero_division=0)
    per_class = {c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                     "support": int(s[i])} for i, c in enumerate(classes)}
    return {
        "accuracy": float((pred == labels).mean()),
        "macro_f1": float(f1_score(labels, pred, labels=idx, average="macro", zero_division=0)),
        "loss": loss,
        "n": int(len(labels)),
        "per_class": per_class,
        "confusion": confusion_matrix(labels, pred, labels=idx).tolist(),
    }


def summary(m: dict[str, Any] | None) -> dict[str, Any] | None:
    if m is None:
        return None
    return {k: m[k] for k in ("accuracy", "macro_f1", "loss", "n")}
