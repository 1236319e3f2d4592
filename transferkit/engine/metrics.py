"""Classification metrics: accuracy, macro F1, per-class precision / recall / F1, confusion."""

from __future__ import annotations

from typing import Any

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def most_wrong(proba: np.ndarray, labels: np.ndarray, k: int) -> list[dict[str, Any]]:
    """The ``k`` misclassified samples whose true class got the lowest probability, worst
    first: ``{"index", "true", "predicted", "p_predicted", "p_true"}`` (class indices)."""
    pred = proba.argmax(1)
    p_true = proba[np.arange(len(labels)), labels]
    wrong = np.flatnonzero(pred != labels)
    order = wrong[np.argsort(p_true[wrong], kind="stable")][:k]
    return [{"index": int(i), "true": int(labels[i]), "predicted": int(pred[i]),
             "p_predicted": float(proba[i, pred[i]]), "p_true": float(p_true[i])} for i in order]


def classification_metrics(logits: np.ndarray, labels: np.ndarray, classes: list[str], *,
                           worst: int = 0) -> dict[str, Any]:
    """Summary metrics plus per-class figures and the confusion matrix (rows = true); with
    ``worst``, also the ``worst`` samples the model got most wrong (``most_wrong``)."""
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    k = len(classes)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return {"accuracy": None, "macro_f1": None, "loss": None, "n": 0, "per_class": {},
                "confusion": [[0] * k for _ in range(k)], **({"most_wrong": []} if worst else {})}
    pred = logits.argmax(1)
    proba = softmax(logits.astype(np.float64))
    loss = float(-np.mean(np.log(np.clip(proba[np.arange(len(labels)), labels], 1e-12, 1.0))))
    idx = list(range(k))
    p, r, f, s = precision_recall_fscore_support(labels, pred, labels=idx, zero_division=0)
    per_class = {c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                     "support": int(s[i])} for i, c in enumerate(classes)}
    extra = {"most_wrong": most_wrong(proba, labels, worst)} if worst else {}
    return {
        **extra,
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
