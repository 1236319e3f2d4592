"""``linear``: logistic regression (scikit-learn) on frozen, cached features.

The inverse regularisation strength ``C`` is chosen on the validation split from a grid
unless given; with ``-o refit=true`` the probe is then fitted again, at that ``C``, on the
training and validation samples together (the validation figures of such a run are scores on
samples the model saw: ``metrics.json`` says so and keeps the score before the refit).  Features are standardised for the solver and the scaling is folded back into
one dense layer, so the bundle holds an ordinary linear head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

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
    refit: bool = False


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
        if getattr(state, "val_is_train", False):
            return self.fit_on_shots(state.model, state.features("train"),
                                     state.labels("train"), state.cfg.seed)
        x, y = state.features("train"), state.labels("train")
        xv, yv = state.features("val"), state.labels("val")
        solution = self.fit_closed_form(state.model, x, y, xv, yv, state.cfg.seed)
        if not self.options.refit:
            return solution
        return self.refit(solution, len(state.model.classes), x, y, xv, yv, state.cfg.seed)

    def refit(self, solution: Solution, n_classes: int, x, y, xv, yv, seed: int) -> Solution:
        """The probe again at the chosen ``C``, on train + validation."""
        c = solution.info["C"]
        xa = torch.cat([x, xv]).double().numpy()
        ya = torch.cat([y, yv]).numpy()
        w, b = LinearOnShots(c, self.options.max_iter).fit(xa, ya, n_classes, seed)
        before = next(t["val_accuracy"] for t in solution.info["grid"] if t["C"] == c)
        info = dict(solution.info, refit={"samples": len(ya), "val_accuracy_before": before})
        return Solution([("fit", lambda m: m.head.set_linear(w, b))], info)

    def solve_features(self, x, y, n_classes: int, seed: int, unlabelled=None):
        """Logistic regression at ``C`` (1.0 unless given) on standardised ``x``, folded;
        ``unlabelled`` is not used."""
        c = self.options.C if self.options.C is not None else 1.0
        return LinearOnShots(c, self.options.max_iter).fit(np.asarray(x, dtype=np.float64),
                                                           np.asarray(y), n_classes, seed)

    def fit_on_shots(self, model, x_train, y_train, seed) -> Solution:
        """No held-out labels (few-shot without ``--val``): ``C`` chosen by stratified
        cross-validation over the training samples, or fixed when a class has one sample."""
        from sklearn.model_selection import StratifiedKFold

        if model.head.kind != "linear":
            raise ConfigError("linear strategy needs a linear head (head kind 'linear')")
        x, y = x_train.double().numpy(), y_train.numpy()
        n_classes = len(model.classes)
        folds = min(5, int(np.bincount(y)[np.bincount(y) > 0].min()))
        if self.options.C is not None or folds < 2:
            c = self.options.C if self.options.C is not None else 1.0
            why = ("C given" if self.options.C is not None else
                   "C fixed at 1.0: one sample in a class leaves nothing to cross-validate")
            w, b = self.solve_features(x, y, n_classes, seed)
            return Solution([("fit", lambda m: m.head.set_linear(w, b))],
                            {"C": c, "selection": why})
        split = StratifiedKFold(folds, shuffle=True, random_state=seed)
        tried = []
        for c in C_GRID:
            hits = 0
            for tr, te in split.split(x, y):
                w, b = LinearOnShots(c, self.options.max_iter).fit(x[tr], y[tr], n_classes, seed)
                hits += int(((x[te] @ w.T + b).argmax(1) == y[te]).sum())
            tried.append({"C": c, "cv_accuracy": hits / len(y)})
        best = max(tried, key=lambda t: (t["cv_accuracy"], -abs(np.log10(t["C"]))))
        w, b = LinearOnShots(best["C"], self.options.max_iter).fit(x, y, n_classes, seed)
        return Solution([("fit", lambda m: m.head.set_linear(w, b))],
                        {"C": best["C"], "grid": tried,
                         "selection": f"C by {folds}-fold stratified cross-validation over "
                                      "the training shots"})

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
        w, b = _fold(coef, bias, mu, sd)
        return Solution([("fit", lambda m: m.head.set_linear(w, b))],
                        {"C": c, "grid": tried})


@dataclass
class LinearOnShots:
    """Logistic regression at one ``C`` on standardised features, folded to one layer."""

    C: float
    max_iter: int = 3000

    def fit(self, x, y, n_classes: int, seed: int):
        mu, sd = x.mean(0), x.std(0) + 1e-6
        coef, bias = fit_logreg((x - mu) / sd, y, self.C, n_classes, seed, max_iter=self.max_iter)
        return _fold(coef, bias, mu, sd)


def _fold(coef, bias, mu, sd):
    """Fold standardisation: w.(x-mu)/sd + b  ==  (w/sd).x + (b - w.mu/sd)."""
    return coef / sd, bias - coef @ (mu / sd)
