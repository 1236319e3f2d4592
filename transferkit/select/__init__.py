"""Model selection as plain ``(arrays) -> float`` functions: label-free domain-adaptation
criteria and transferability scores."""

from .transferability import SCORES, Score, h_score, h_score_shrunk, leep, logme, nce, scores_for, sfda
from .unsupervised import (
    dev_risk,
    importance_weighted_accuracy,
    mean_entropy,
    snd_score,
)

__all__ = ["SCORES", "Score", "dev_risk", "h_score", "h_score_shrunk", "importance_weighted_accuracy", "leep",
           "logme", "mean_entropy", "nce", "scores_for", "sfda",
           "snd_score"]
