"""Domain adaptation on frozen features, and instance transfer.

* ``tca``             Transfer Component Analysis (Pan et al. 2011), linear kernel: a
                      projection in which the domains' means agree while the variance is kept;
                      logistic regression on the projected source.  Projection and classifier
                      fold into one dense layer, so the bundle holds an ordinary linear head.
* ``coral-features``  CORAL (Sun et al. 2016): whiten the source features and recolour them
                      with the target covariance; logistic regression on the recoloured source,
                      applied to raw target features.
* ``importance``      instance weighting: each source sample's loss is weighted by the density
                      ratio p_target / p_source, from a domain classifier (Bickel et al. 2007)
                      or by kernel mean matching (``method=kmm``, Huang et al. 2007).
* ``tradaboost``      TrAdaBoost (Dai et al. 2007) with logistic-regression learners: source
                      samples that the learners keep getting wrong lose weight, labelled target
                      samples gain it; needs ``--target-labels N``.  The learners of the second
                      half of the rounds are combined by averaging their decision functions
                      weighted by their boosting weights (a soft vote), which is again one
                      dense layer.

On a backbone that is not pretrained (``digits-cnn``) a ``source`` stage first trains it on
the source alone; its features are then frozen.  The closed-form strategies offer a small
grid of settings, among which the engine chooses with its label-free criterion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .base import Options, ParamGroup, Solution, Stage, head_params, register_strategy
from .domain import DeepOptions, DomainStrategy, source_stage
from .linear import fit_logreg
from ..domain import (coral_transform, domain_classifier_weights, kmm_weights, tca_fit,
                      tradaboost_beta, tradaboost_update)
from ..errors import ConfigError
from ..events import Callback


def _pre_stages(opts, model, train) -> list[Stage]:
    if model.backbone.pretrained:
        return []
    return [source_stage("source", opts.source_epochs, opts, model, train, selectable=False,
                         snapshot="before")]


def _standardiser(*xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate(xs)
    return x.mean(0), x.std(0) + 1e-6


def _setter(weight: np.ndarray, bias: np.ndarray):
    def apply(model) -> None:
        model.head.set_linear(weight, bias)
    return apply


def _need_linear(name: str, model) -> None:
    if model.head.kind != "linear":
        raise ConfigError(f"{name}: needs a linear head (head kind 'linear')")


@dataclass
class FeatureOptions(Options):
    #: epochs of source training for a backbone that is not pretrained
    source_epochs: int = 10
    head_lr: float = 1e-3
    backbone_lr: float | None = None
    tune_backbone: bool | None = None
    #: inverse regularisation of the logistic regression; None = the grid 0.01, 0.1, 1
    C: float | None = None


class _Features(DomainStrategy):
    """Fitted in closed form on frozen features; a small grid of settings competes under the
    run's label-free criterion."""

    default_head = "linear"

    def validate(self) -> None:
        self.require_positive("C", "head_lr", "backbone_lr")
        if self.options.source_epochs < 0:
            raise ConfigError(f"{self.name}: source_epochs must be >= 0")

    def stages(self, model, train):
        return _pre_stages(self.options, model, train) + [
            Stage("fit", 0, [], frozen_backbone=True, solve=self.solve)]

    def solve(self, state) -> Solution:
        kw = {"x_target": state.features("target")}
        if state.has("target_labelled"):
            kw["x_target_labelled"] = state.features("target_labelled")
            kw["y_target_labelled"] = state.labels("target_labelled")
        info = self.fit_closed_form(state.model, state.features("train"), state.labels("train"),
                                    state.features("val"), state.labels("val"), state.cfg.seed,
                                    **kw)
        return Solution(info.pop("candidates"), info)

    def _Cs(self) -> list[float]:
        return [self.options.C] if self.options.C is not None else [0.01, 0.1, 1.0]


@dataclass
class TcaOptions(FeatureOptions):
    dim: int = 32
    #: trade-off of TCA; None = the grid 0.1, 1, 10
    mu: float | None = None


@register_strategy
class Tca(_Features):
    name = "tca"
    description = ("Transfer Component Analysis (linear kernel) on frozen features, then "
                   "logistic regression; folded into one dense layer")
    options_cls = TcaOptions

    def validate(self) -> None:
        super().validate()
        self.require_positive("dim", "mu")

    def fit_closed_form(self, model, x_train, y_train, x_val, y_val, seed, *, x_target, **_):
        _need_linear(self.name, model)
        xs, xt = x_train.double().numpy(), x_target.double().numpy()
        mu0, sd = _standardiser(xs, xt)
        zs, zt = (xs - mu0) / sd, (xt - mu0) / sd
        dim = min(self.options.dim, zs.shape[1])
        mus = [self.options.mu] if self.options.mu is not None else [0.1, 1.0, 10.0]
        cands = []
        for mu in mus:
            t = tca_fit(zs, zt, dim=dim, mu=mu)
            W, mean = t.W_, t.mean_
            ps = (zs - mean) @ W
            pm, psd = ps.mean(0), ps.std(0) + 1e-6
            for C in self._Cs():
                coef, bias = fit_logreg((ps - pm) / psd, y_train.numpy(), C, len(model.classes), seed)
                # logits = coef . ((((x - mu0)/sd - mean) @ W - pm) / psd) + bias
                A = (W / psd) @ coef.T                    # (d, K) acting on (x - mu0)/sd
                weight = (A / sd[:, None]).T              # (K, d) acting on x
                b = bias - coef @ (pm / psd) - (mean @ A) - (mu0 / sd) @ A
                cands.append((f"mu={mu:g} C={C:g}", _setter(weight, b)))
        return {"dim": dim, "mu_grid": mus, "C_grid": self._Cs(), "candidates": cands}


@dataclass
class CoralFeatureOptions(FeatureOptions):
    #: the identity added to both covariances (CORAL's regulariser)
    eps: float = 1.0


@register_strategy
class CoralFeatures(_Features):
    name = "coral-features"
    description = ("CORAL on frozen features: whiten the source, recolour it with the target "
                   "covariance, logistic regression on the result")
    options_cls = CoralFeatureOptions

    def validate(self) -> None:
        super().validate()
        self.require_positive("eps")

    def fit_closed_form(self, model, x_train, y_train, x_val, y_val, seed, *, x_target, **_):
        _need_linear(self.name, model)
        xs, xt = x_train.double().numpy(), x_target.double().numpy()
        # standardise each feature with the target's statistics (the classifier meets target
        # features), then recolour the source
        mu0, sd = _standardiser(xt)
        zs, zt = (xs - mu0) / sd, (xt - mu0) / sd
        zs_c = coral_transform(zs, zt, eps=self.options.eps)
        cands = []
        for C in self._Cs():
            coef, bias = fit_logreg(zs_c, y_train.numpy(), C, len(model.classes), seed)
            weight = coef / sd
            b = bias - coef @ (mu0 / sd)
            cands.append((f"C={C:g}", _setter(weight, b)))
        return {"eps": self.options.eps, "C_grid": self._Cs(), "candidates": cands}


@dataclass
class ImportanceOptions(DeepOptions):
    #: "classifier" (density ratio from a logistic-regression domain classifier) or "kmm"
    method: str = "classifier"
    source_epochs: int = 10
    #: epochs of the weighted head training are --epochs


@register_strategy
class Importance(DomainStrategy):
    name = "importance"
    description = ("instance weighting: source losses weighted by the density ratio "
                   "p_target/p_source (domain classifier, or kernel mean matching)")
    options_cls = ImportanceOptions

    def validate(self) -> None:
        if self.options.method not in ("classifier", "kmm"):
            raise ConfigError(f"importance: method must be 'classifier' or 'kmm', "
                              f"got {self.options.method!r}")
        self.require_positive("head_lr", "backbone_lr")

    def stages(self, model, train):
        o = self.options
        st = Stage("weighted", train.epochs, [ParamGroup("head", head_params(model), o.head_lr)],
                   frozen_backbone=True, callbacks=[InstanceWeights(self)])
        return _pre_stages(o, model, train) + [st]

    def instance_weights(self, x_source, x_target, seed):
        xs, xt = x_source.double().numpy(), x_target.double().numpy()
        mu0, sd = _standardiser(xs, xt)
        xs, xt = (xs - mu0) / sd, (xt - mu0) / sd
        if self.options.method == "kmm":
            return kmm_weights(xs, xt)
        return domain_classifier_weights(xs, xt, seed=seed)


class InstanceWeights(Callback):
    """Weights every source sample's loss by the strategy's density-ratio estimate, computed
    on the cached features of the source and the target at the start of the stage."""

    def __init__(self, strategy: Importance):
        self.strategy = strategy
        self.weights: torch.Tensor | None = None

    def on_stage_start(self, state) -> None:
        w = self.strategy.instance_weights(state.features("train"), state.features("target"),
                                           state.cfg.seed)
        w = torch.as_tensor(np.asarray(w, dtype=np.float32))
        state.log(f"  instance weights: mean {float(w.mean()):.3f}, min {float(w.min()):.3f}, "
                  f"max {float(w.max()):.3f}, effective sample size "
                  f"{float(w.sum() ** 2 / (w ** 2).sum()):.0f} / {len(w)}")
        self.weights = w

    def on_batch_start(self, state, batch) -> None:
        batch.weights = self.weights[batch.indices]


@dataclass
class TrAdaBoostOptions(FeatureOptions):
    rounds: int = 20


@register_strategy
class TrAdaBoost(_Features):
    name = "tradaboost"
    description = ("TrAdaBoost with logistic-regression learners on frozen features; "
                   "needs a few target labels (--target-labels N)")
    options_cls = TrAdaBoostOptions
    needs_target_labels = True

    def validate(self) -> None:
        super().validate()
        if self.options.rounds < 2:
            raise ConfigError(f"tradaboost: rounds must be >= 2, got {self.options.rounds}")

    def fit_closed_form(self, model, x_train, y_train, x_val, y_val, seed, *, x_target,
                        x_target_labelled=None, y_target_labelled=None, **_):
        _need_linear(self.name, model)
        if x_target_labelled is None or len(x_target_labelled) == 0:
            raise ConfigError("tradaboost: needs labelled target samples: pass --target-labels N")
        xs, xl = x_train.double().numpy(), x_target_labelled.double().numpy()
        ys, yl = y_train.numpy(), y_target_labelled.numpy()
        mu0, sd = _standardiser(xs, x_target.double().numpy())
        zs, zl = (xs - mu0) / sd, (xl - mu0) / sd
        K = len(model.classes)
        n, m = len(zs), len(zl)
        N = self.options.rounds
        beta_src = tradaboost_beta(n, N)
        cands = []
        for C in self._Cs():
            w = np.ones(n + m) / (n + m)
            z, y = np.concatenate([zs, zl]), np.concatenate([ys, yl])
            learners = []
            for _t in range(N):
                coef, bias = fit_logreg(z, y, C, K, seed, sample_weight=w * (n + m))
                miss = ((z @ coef.T + bias).argmax(1) != y).astype(np.float64)
                w_s, w_t, alpha = tradaboost_update(w[:n], w[n:], miss[:n], miss[n:], beta_src, K=K)
                w = np.concatenate([w_s, w_t])
                learners.append((alpha, coef, bias))
            half = learners[N // 2:]
            a = np.array([al for al, _, _ in half])
            a = a / a.sum()
            coef = sum(ai * c for ai, (_, c, _) in zip(a, half))
            bias = sum(ai * b for ai, (_, _, b) in zip(a, half))
            cands.append((f"C={C:g}", _setter(coef / sd, bias - coef @ (mu0 / sd))))
        return {"rounds": N, "beta_source": beta_src, "C_grid": self._Cs(),
                "labelled_target": int(m), "candidates": cands}
