"""Model selection without target labels: plain ``(arrays) -> float`` functions."""

from .unsupervised import (
    dev_risk,
    importance_weighted_accuracy,
    mean_entropy,
    snd_score,
)

__all__ = ["dev_risk", "importance_weighted_accuracy", "mean_entropy", "snd_score"]
