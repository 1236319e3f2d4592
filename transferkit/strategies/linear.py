"""``linear``: logistic regression (scikit-learn) on frozen, cached features.

The inverse regularisation strength ``C`` is chosen on the validation split from a grid
unless given.  Features are standardised for the solver and the scaling is folded back into
one dense layer, so the bundle holds an ordinary linear head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .base import Options, Solution, Stage, Strategy, register_strategy

C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)


def fit_logreg(z: np.ndarray, y: np.ndarray, C: float, n_classes: int, seed: int,
               sample_weight=None, max_iter: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """Fit a logistic regression (scikit-learn) and return it as one dense layer over all
    ``n_classes``: ``(coef (K, d), bias (K,))``.  A binary model sigmoid(w.x + b) becomes
    softmax([-(w.x+b)/2, (w.x+b)/2]); a class absent from ``y`` gets a bias of -1e4."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
    clf.fit(z, y, sample_weight=sample_weight)
    coef = np.zeros((n_classes, z.shape[1]))
    bias = np.full(n_classes, -1e4)
    if clf.coef_.shape[0] == 1:
        i0, i1 = clf.classes_
        coef[i0], coef[i1] = -clf.coef_[0] / 2, clf.coef_[0] / 2
        bias[i0], bias[i1] = -clf.intercept_[0] / 2, clf.intercept_[0] / 2
    else:
        coef[clf.classes_] = clf.coef_
        bias[clf.classes_] = clf.intercept_
    return coef, bias


@dataclass
class LinearOptions(Options):
    C: float | None = None
    max_iter: int = 3000


@register_strategy
class Linear(Strategy):
    name = "linear"
    description = "logistic regression (scikit-learn) on frozen features; C chosen on validation"
    options_cls = LinearOptions
    default_head = "linear"

    def validate(self) -> None:
        if self.options.C is not None and self.options.C <= 0:
            raise ConfigError(f"linear: C must be > 0, got {self.options.C}")

    def stages(self, model, train):
        return [Stage("probe", 0, [], frozen_backbone=True, solve=self.solve)]

    def solve(self, state) -> Solution:
        return self.fit_closed_form(state.model, state.features("train"), state.labels("train"),
                                    state.features("val"), state.labels("val"), state.cfg.seed)

    def fit_closed_form(self, model, x_train, y_train, x_val, y_val, seed) -> Solution:
        from scipy.special import softmax
        from sklearn.metrics import accuracy_score, log_loss

        if model.head.kind != "linear":
            raise ConfigError("linear strategy needs a linear head (head kind 'linear')")
        xt = x_train.double().numpy()
        mu = xt.mean(0)
        sd = xt.std(0) + 1e-6
        z = (xt - mu) / sd
        zv = (x_val.double().numpy() - mu) / sd
        yt, yv = y_train.numpy(), y_val.numpy()
        n_classes = len(model.classes)
        grid = [self.options.C] if self.options.C is not None else list(C_GRID)
        tried = []
        best = None
        for c in grid:
            coef, bias = fit_logreg(z, yt, c, n_classes, seed, max_iter=self.options.max_iter)
            full = softmax(zv @ coef.T + bias, axis=1)
            acc = accuracy_score(yv, full.argmax(1)) if len(yv) else float("nan")
            loss = log_loss(yv, np.clip(full, 1e-12, 1), labels=list(range(n_classes))) if len(yv) else 0.0
            tried.append({"C": c, "val_accuracy": acc, "val_loss": loss})
            key = (acc, -loss)
            if best is None or key > best[0]:
                best = (key, c, coef, bias)
        _, c, coef, bias = best
        # fold standardisation: w.(x-mu)/sd + b  ==  (w/sd).x + (b - w.mu/sd)
        w = coef / sd
        b = bias - coef @ (mu / sd)
        return Solution([("fit", lambda m: m.head.set_linear(w, b))], {"C": c, "grid": tried})
