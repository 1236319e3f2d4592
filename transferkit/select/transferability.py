"""Transferability scores: how well a pretrained model's outputs suit a labelled target task,
estimated without training (NumPy, float64).

Plain functions; each returns one float and **higher is better** for every one of them.

* :func:`logme` - LogME (You, Liu, Wang & Long, ICML 2021): the mean, over classes, of the
  per-sample log marginal evidence of a Bayesian linear regression from the features to the
  one-hot labels, with its hyper-parameters set by evidence maximisation (MacKay's fixed point);
* :func:`h_score` - H-score (Bao, Li, Huang, Wu & Zhang, ICIP 2019) in its original,
  shrinkage-free form ``tr(pinv(cov(f)) cov(E[f|y]))``;
* :func:`h_score_shrunk` - the shrinkage-regularised H-score (Ibrahim, Ponomareva & Mazumder,
  2022): the same trace with the Ledoit-Wolf estimate of ``cov(f)``;
* :func:`nce` - Negative Conditional Entropy (Tran, Nguyen & Hassner, ICCV 2019) of the target
  labels given the source model's predicted (arg-max) source class;
* :func:`leep` - Log Expected Empirical Prediction (Nguyen, Hassner, Seeger & Archambeau, ICML
  2020) from the source model's probabilities over its own classes;
* :func:`sfda` - SFDA (Shao, Zhao, Ge, Zhang, Wang, Chen & Luo, ECCV 2022): the mean
  probability of the true class under a regularised Fisher discriminant, fitted again after
  the hard samples are moved towards the other classes ("self-challenging").

``labels`` are integer class indices (any integers: they are re-indexed in sorted order);
``features`` are ``(n, d)``; ``source_probs`` are ``(n, z)`` softmax rows over the source
model's own classes (ImageNet-1k for the built-in CNNs).  :data:`SCORES` lists every score
with a uniform ``(features, labels, source_probs) -> float`` call and whether it needs the
source probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import linalg

from ..domain.features import as_matrix
from ..errors import ConfigError
from .unsupervised import _probs

__all__ = ["SCORES", "Score", "h_score", "h_score_shrunk", "ledoit_wolf_shrinkage", "leep", "logme",
           "nce", "scores_for", "sfda"]


def _labels(labels, n: int | None = None) -> tuple[np.ndarray, int]:
    """``labels`` as indices ``0..k-1`` (sorted order of the given values) and ``k``."""
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ConfigError(f"labels must be 1-D; got shape {y.shape}")
    if n is not None and y.shape[0] != n:
        raise ConfigError(f"labels has {y.shape[0]} entries; the scores' inputs have {n} rows")
    if y.dtype.kind not in "iub":
        raise ConfigError(f"labels must be integer class indices; got dtype {y.dtype}")
    classes, idx = np.unique(y, return_inverse=True)
    if classes.shape[0] < 2:
        raise ConfigError(f"transferability needs at least 2 classes; the labels hold "
                          f"{classes.shape[0]}")
    return idx.reshape(-1), int(classes.shape[0])


# --------------------------------------------------------------------------- LogME

#: LogME's fixed point stops when alpha / beta changes by less than this fraction
LOGME_TOL = 1e-6
LOGME_MAX_ITER = 100


def logme(features, labels) -> float:
    """LogME: mean over classes ``c`` of ``log p(y_c | F, alpha*, beta*) / n``.

    For each class, ``y_c`` is the 0/1 indicator of the class and the model is ``y_c = F w +
    noise`` with ``w ~ N(0, alpha^-1 I)`` and noise ``N(0, beta^-1)``.  Starting from ``alpha =
    beta = 1``, MacKay's fixed point ``gamma = sum_i beta s_i / (alpha + beta s_i)``, ``alpha =
    gamma / |m|^2``, ``beta = (n - gamma) / |y - F m|^2`` (``s_i`` the eigenvalues of ``F^T F``,
    ``m`` the posterior mean) runs until ``alpha / beta`` moves by less than :data:`LOGME_TOL`
    (relative), at most :data:`LOGME_MAX_ITER` times; the evidence at that point is

    ``d/2 ln alpha + n/2 ln beta - n/2 ln 2 pi - beta/2 |y - F m|^2 - alpha/2 |m|^2
    - 1/2 sum_i ln(alpha + beta s_i)``.

    The published code stops at a 1 % change (or 11 steps); converging further changes the
    score in about the third decimal.  Features are used as given (not centred).
    """
    F = as_matrix(features, "features", 2)
    y, k = _labels(labels, F.shape[0])
    U, s, _ = linalg.svd(F, full_matrices=False)
    sigma = s * s
    return float(np.mean([_class_evidence(U, sigma, F.shape[1], (y == c).astype(np.float64))
                          for c in range(k)]))


def _class_evidence(U: np.ndarray, sigma: np.ndarray, d: int, t: np.ndarray) -> float:
    """Maximised log evidence per sample of targets ``t`` on features ``U diag(s) V^T``
    (``sigma = s^2``, ``d`` feature columns)."""
    n = t.shape[0]
    z = U.T @ t                       # targets in the features' left singular basis
    rest = max(float(t @ t - z @ z), 0.0)  # the part of t no feature direction reaches
    alpha, beta = 1.0, 1.0
    for _ in range(LOGME_MAX_ITER):
        gamma = float((beta * sigma / (alpha + beta * sigma)).sum())
        m2, res2 = _posterior_norms(z, sigma, rest, alpha, beta)
        alpha_new = gamma / max(m2, 1e-300)
        # gamma reaches n when the features fit every target exactly (n <= d): the noise
        # precision then grows without bound, kept finite here
        beta_new = max(n - gamma, 1e-10) / max(res2, 1e-300)
        done = abs(alpha_new / beta_new - alpha / beta) <= LOGME_TOL * (alpha / beta)
        alpha, beta = alpha_new, beta_new
        if done:
            break
    m2, res2 = _posterior_norms(z, sigma, rest, alpha, beta)
    log_det = float(np.log(alpha + beta * sigma).sum()) + (d - sigma.shape[0]) * np.log(alpha)
    evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - n / 2 * np.log(2 * np.pi)
                - beta / 2 * res2 - alpha / 2 * m2 - log_det / 2)
    return float(evidence / n)


def _posterior_norms(z, sigma, rest, alpha, beta) -> tuple[float, float]:
    """``(|m|^2, |t - F m|^2)`` of the posterior mean ``m = beta A^-1 F^T t``."""
    denom = alpha + beta * sigma
    m2 = float(((beta * np.sqrt(sigma) * z / denom) ** 2).sum())
    res2 = float(((alpha * z / denom) ** 2).sum()) + rest
    return m2, res2


# --------------------------------------------------------------------------- H-score

def h_score(features, labels) -> float:
    """H-score ``tr(pinv(cov(f)) cov(g))`` where ``g_i = E[f | y = y_i]`` (the class mean of
    sample ``i``'s class) and both covariances are sample covariances over the ``n`` rows.

    The shrinkage-free definition of Bao et al. (2019), as TLlib computes it: the plain
    covariance, inverted by Moore-Penrose pseudo-inverse (eigenvalues below ``1e-15`` of the
    largest are dropped), computed from a thin SVD of the centred features.  Invariant to any invertible linear map of the features.  It is at
    most ``k - 1`` for ``k`` classes, and when the centred features span ``n - 1`` dimensions
    (``d >= n - 1``, usual for small data sets and wide backbones) it equals ``k - 1`` for
    *every* labelling: it then ranks nothing.  The shrinkage-regularised variant of Ibrahim et
    al. (2022), :func:`h_score_shrunk`, is the remedy.
    """
    F = as_matrix(features, "features", 2)
    y, k = _labels(labels, F.shape[0])
    means = np.zeros((k, F.shape[1]))
    np.add.at(means, y, F)
    means /= np.bincount(y, minlength=k)[:, None]
    # with Fc = F - mean = U S V^T: pinv(cov f) = (n - 1) V S^-2 V^T over the kept singular
    # values, so the trace is |Gc V S^-1|_F^2 (Gc the centred class means): a thin SVD of the
    # n x d features instead of a d x d pseudo-inverse
    Fc = F - F.mean(axis=0)
    _, sv, Vt = linalg.svd(Fc, full_matrices=False)
    keep = sv * sv > 1e-15 * (sv[0] * sv[0]) if sv.size and sv[0] > 0 else np.zeros(0, bool)
    Gc = means[y] - F.mean(axis=0)
    proj = (Gc @ Vt[keep].T) / sv[keep]
    return float((proj * proj).sum())


# --------------------------------------------------------------------------- shrinkage H-score

def ledoit_wolf_shrinkage(centred) -> tuple[float, float]:
    """``(alpha, mu)`` of the Ledoit-Wolf estimate ``(1 - alpha) S + alpha mu I`` of the
    covariance of ``centred`` rows ``(n, d)`` (``S = X^T X / n``, ``mu = tr(S) / d``), by the
    formula ``sklearn.covariance.ledoit_wolf_shrinkage`` computes (Ledoit & Wolf 2004):
    ``alpha = min(b, c) / c`` with ``c = |S - mu I|_F^2 / d`` and ``b = (sum_k |x_k|^4 / n -
    |S|_F^2) / (n d)``; 0 when ``b = 0``."""
    X = as_matrix(centred, "features", 2)
    n, d = X.shape
    sq = np.einsum("ij,ij->i", X, X)                   # |x_k|^2 per row
    trace = float(sq.sum()) / n
    mu = trace / d
    small = X @ X.T if n <= d else X.T @ X             # same non-zero spectrum
    frob2 = float(np.einsum("ij,ij->", small, small)) / (n * n)   # |S|_F^2
    c = (frob2 - 2 * mu * trace + d * mu * mu) / d
    b = (float((sq * sq).sum()) / n - frob2) / (n * d)
    b = min(b, c)
    return (0.0 if b <= 0 or c <= 0 else b / c), mu


def h_score_shrunk(features, labels) -> float:
    """Shrinkage-regularised H-score (Ibrahim, Ponomareva & Mazumder, "Newer is not always
    better: rethinking transferability metrics, their peculiarities, stability and
    performance", ECML-PKDD 2022): ``tr(cov_a(f)^-1 (1 - a) cov(g))`` with ``cov_a(f) = (1 - a)
    cov(f) + a mu I`` the Ledoit-Wolf estimate (:func:`ledoit_wolf_shrinkage`), ``g_i = E[f |
    y = y_i]`` and both covariances the biased (``1/n``) ones of the centred rows.

    Unlike :func:`h_score` it does not saturate at ``k - 1`` when ``d >= n - 1``: the shrunk
    covariance is full rank, and directions with little variance no longer dominate.  Computed
    from a thin SVD of the centred features (the class means lie in their row span):
    ``(1 - a)/n sum_j |Gc v_j|^2 / ((1 - a) s_j^2 / n + a mu)``.  Not invariant to linear maps
    of the features (the shrinkage target ``mu I`` is not).
    """
    F = as_matrix(features, "features", 2)
    y, k = _labels(labels, F.shape[0])
    n = F.shape[0]
    Fc = F - F.mean(axis=0)
    alpha, mu = ledoit_wolf_shrinkage(Fc)
    Gc = _class_means(Fc, y, k)[y]
    _, sv, Vt = linalg.svd(Fc, full_matrices=False)
    denom = (1.0 - alpha) * sv * sv / n + alpha * mu
    keep = denom > 1e-15 * denom.max() if denom.size and denom.max() > 0 else np.zeros(0, bool)
    proj = Gc @ Vt[keep].T
    return float((1.0 - alpha) / n * ((proj * proj).sum(axis=0) / denom[keep]).sum())


# --------------------------------------------------------------------------- NCE and LEEP

def _source(source_probs, n: int) -> np.ndarray:
    P = _probs(source_probs, "source_probs")
    if P.shape[0] != n:
        raise ConfigError(f"source_probs has {P.shape[0]} rows; labels has {n}")
    return P


def nce(source_probs, labels) -> float:
    """NCE ``= -H(Y | Z)`` in nats, where ``Z`` is the source model's arg-max class of each
    sample and the joint distribution of ``(Y, Z)`` is their empirical one.  At most 0; 0 when
    the source prediction determines the target label."""
    y, k = _labels(labels)
    z = _source(source_probs, y.shape[0]).argmax(axis=1)
    _, z = np.unique(z, return_inverse=True)
    joint = np.zeros((k, int(z.max()) + 1))
    np.add.at(joint, (y, z.reshape(-1)), 1.0 / y.shape[0])
    p_z = joint.sum(axis=0)
    cond = joint / p_z                      # P(y | z), every z here occurs
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(joint > 0, joint * np.log(cond), 0.0)
    return float(plogp.sum())


def leep(source_probs, labels) -> float:
    """LEEP ``= 1/n sum_i ln sum_z P(y_i | z) theta_i(z)`` with ``theta_i`` the source
    probabilities of sample ``i``, ``P(y, z) = 1/n sum_{i: y_i = y} theta_i(z)`` and ``P(y | z)
    = P(y, z) / P(z)``.  At most 0 (an average log-likelihood)."""
    y, k = _labels(labels)
    theta = _source(source_probs, y.shape[0])
    joint = np.zeros((k, theta.shape[1]))
    np.add.at(joint, y, theta / y.shape[0])
    p_z = joint.sum(axis=0)
    cond = np.divide(joint, p_z, out=np.zeros_like(joint), where=p_z > 0)
    eep = (theta @ cond.T)[np.arange(y.shape[0]), y]
    return float(np.mean(np.log(np.maximum(eep, 1e-300))))


# --------------------------------------------------------------------------- SFDA

def sfda(features, labels) -> float:
    """SFDA: ``1/n sum_i p2(y_i | x'_i)``, in (0, 1].

    1. A Fisher discriminant on ``F``: within-class scatter ``Sw = sum_c pi_c cov_c`` (class
       priors ``pi_c``, biased class covariances), shrunk towards ``mu I`` (``mu = tr(Sw)/d``)
       by ``lambda = max(exp(-5 * largest eigenvalue of Sw), 1e-10)``; class scores ``x
       Sw_s^-1 m_c - m_c Sw_s^-1 m_c / 2 + ln pi_c`` and their softmax ``p1``.
    2. ConfMix: each sample moves towards the mean of the other classes' means by ``1 - q``,
       where ``q`` is the softmax of ``p1`` (softmax applied a second time, as published) at its
       true class: ``x'_i = q_i x_i + (1 - q_i) mbar_{-y_i}``.
    3. The same discriminant, with the same ``lambda``, fitted on ``x'``; ``p2`` its softmax.

    The published code projects onto every generalised eigenvector of ``(Sb, Sw_s)``; keeping
    all of them makes the projection ``V V^T = Sw_s^-1``, which is what is computed here (a
    linear solve, no eigen-decomposition).  The largest eigenvalue of ``Sw`` is computed
    exactly (the published code takes 3 power-iteration steps).
    """
    X = as_matrix(features, "features", 2).copy()
    y, k = _labels(labels, X.shape[0])
    rows = np.arange(X.shape[0])
    p1, lam = _fisher_probs(X, y, k, None)
    q = np.exp(p1) / np.exp(p1).sum(axis=1, keepdims=True)
    q = q[rows, y][:, None]
    means = _class_means(X, y, k)
    others = (means.sum(axis=0) - means) / (k - 1)
    p2, _ = _fisher_probs(q * X + (1 - q) * others[y], y, k, lam)
    return float(p2[rows, y].mean())


def _class_means(X: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    means = np.zeros((k, X.shape[1]))
    np.add.at(means, y, X)
    return means / np.bincount(y, minlength=k)[:, None]


def _fisher_probs(X, y, k, shrinkage) -> tuple[np.ndarray, float]:
    """Softmax class probabilities of the shrunk Fisher discriminant, and its shrinkage."""
    n, d = X.shape
    priors = np.bincount(y, minlength=k) / n
    means = _class_means(X, y, k)
    centred = X - means[y]
    Sw = np.zeros((d, d))
    for c in range(k):
        Z = centred[y == c]
        Sw += priors[c] * (Z.T @ Z) / Z.shape[0]
    if not np.trace(Sw) > 0:
        raise ConfigError("sfda: the features do not vary within any class")
    if shrinkage is None:
        top = float(linalg.eigh(Sw, eigvals_only=True, subset_by_index=[d - 1, d - 1])[0])
        shrinkage = max(float(np.exp(-5.0 * top)), 1e-10)
    Sw_s = (1.0 - shrinkage) * Sw
    Sw_s[np.diag_indices(d)] += shrinkage * np.trace(Sw) / d
    coef = linalg.solve(Sw_s, means.T, assume_a="pos").T
    intercept = -0.5 * np.einsum("cd,cd->c", means, coef) + np.log(priors)
    scores = X @ coef.T + intercept
    scores -= scores.max(axis=1, keepdims=True)
    P = np.exp(scores)
    return P / P.sum(axis=1, keepdims=True), shrinkage


# --------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class Score:
    """One transferability score: ``fn(features, labels, source_probs) -> float``."""

    name: str
    needs_source: bool
    fn: Callable[[np.ndarray, np.ndarray, np.ndarray | None], float]
    description: str


SCORES: dict[str, Score] = {s.name: s for s in (
    Score("logme", False, lambda f, y, p: logme(f, y), "LogME (You et al. 2021)"),
    Score("hscore", False, lambda f, y, p: h_score(f, y), "H-score (Bao et al. 2019)"),
    Score("hscore_reg", False, lambda f, y, p: h_score_shrunk(f, y),
          "H-score with Ledoit-Wolf shrinkage (Ibrahim et al. 2022)"),
    Score("nce", True, lambda f, y, p: nce(p, y), "NCE (Tran et al. 2019)"),
    Score("leep", True, lambda f, y, p: leep(p, y), "LEEP (Nguyen et al. 2020)"),
    Score("sfda", False, lambda f, y, p: sfda(f, y), "SFDA (Shao et al. 2022)"),
)}


def scores_for(has_source: bool) -> list[Score]:
    """The scores that apply to a backbone with (or without) source-class probabilities."""
    return [s for s in SCORES.values() if has_source or not s.needs_source]


def familiarity(probs) -> float:
    """``1 - mean H(p) / log K`` of source-class probabilities ``(N, K)``: 1 when the source
    classifier is sure of every sample, 0 when its predictions are uniform (how familiar the
    data looks to the pretrained classifier)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    return float(1.0 - (-(p * np.log(p)).sum(1)).mean() / np.log(p.shape[1]))
