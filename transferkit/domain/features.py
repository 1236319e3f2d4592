"""Shallow domain adaptation on fixed feature vectors (NumPy / scikit-learn, float64).

Inputs are ``Xs`` of shape ``(n_s, d)`` (source rows) and ``Xt`` of shape ``(n_t, d)`` (target
rows).  Everything returns NumPy arrays or plain floats.

* :func:`coral_matrix`, :func:`coral_transform` - CORAL (Sun, Feng & Saenko, AAAI 2016);
* :class:`TCA`, :func:`tca_fit` - linear-kernel Transfer Component Analysis (Pan et al. 2011);
* :func:`domain_classifier_weights` - density ratio from a domain classifier (Bickel et al. 2007);
* :func:`kmm_weights` - Kernel Mean Matching (Huang et al., NeurIPS 2006/2007);
* :func:`proxy_a_distance` - proxy A-distance (Ben-David et al. 2007; Ganin et al. 2016);
* :func:`tradaboost_beta`, :func:`tradaboost_target_error`, :func:`tradaboost_update` -
  TrAdaBoost (Dai et al., ICML 2007) with a SAMME-style multi-class target step.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import linalg

from ..errors import ConfigError

__all__ = [
    "KMM_MAX_ROWS",
    "TCA",
    "coral_matrix",
    "coral_transform",
    "domain_classifier_weights",
    "kmm_weights",
    "proxy_a_distance",
    "tca_fit",
    "tradaboost_beta",
    "tradaboost_target_error",
    "tradaboost_update",
]

#: Largest source sample :func:`kmm_weights` accepts (its kernel matrix is ``n_s x n_s``).
KMM_MAX_ROWS = 5000
_KMM_WINDOW = 20  # steps over which kmm_weights measures progress


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------


def as_matrix(X, name: str, min_rows: int = 1) -> np.ndarray:
    """``X`` as a finite float64 ``(n, d)`` array, or a one-line :class:`ConfigError`."""
    A = np.asarray(X, dtype=np.float64)
    if A.ndim != 2:
        raise ConfigError(f"{name} must be a 2-D array (rows, features); got shape {A.shape}")
    if A.shape[0] < min_rows:
        raise ConfigError(f"{name} needs at least {min_rows} rows; got {A.shape[0]}")
    if A.shape[1] < 1:
        raise ConfigError(f"{name} has no feature columns")
    if not np.isfinite(A).all():
        raise ConfigError(f"{name} contains NaN or infinite values")
    return A


def check_pair(Xs, Xt, min_rows: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Validate a source/target pair: 2-D, finite, same feature dim, ``min_rows`` rows each."""
    S = as_matrix(Xs, "source features", min_rows)
    T = as_matrix(Xt, "target features", min_rows)
    if S.shape[1] != T.shape[1]:
        raise ConfigError(f"source and target feature dims differ: {S.shape[1]} vs {T.shape[1]}")
    return S, T


def _as_vector(v, name: str, n: int | None = None) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    if a.ndim != 1:
        raise ConfigError(f"{name} must be 1-D; got shape {a.shape}")
    if n is not None and a.shape[0] != n:
        raise ConfigError(f"{name} has {a.shape[0]} entries; expected {n}")
    if not np.isfinite(a).all():
        raise ConfigError(f"{name} contains NaN or infinite values")
    return a


# --------------------------------------------------------------------------------------------
# CORAL
# --------------------------------------------------------------------------------------------


def _sym_power(C: np.ndarray, power: float, what: str) -> np.ndarray:
    vals, vecs = linalg.eigh(C)
    if power < 0:
        floor = max(vals.max(), 0.0) * 1e-12
        if vals.min() <= floor:
            raise ConfigError(f"{what} covariance is singular; use CORAL with eps > 0")
    vals = np.clip(vals, 0.0, None)
    return (vecs * vals**power) @ vecs.T


def coral_matrix(Xs, Xt, eps: float = 1.0) -> np.ndarray:
    """The ``(d, d)`` CORAL map ``A`` so that ``Xs @ A`` is the aligned source (Sun et al. 2016).

    ``A = (C_s + eps I)^{-1/2} (C_t + eps I)^{1/2}`` with unbiased covariances ``C`` (``ddof=1``)
    and matrix square roots from a symmetric eigendecomposition.  Then
    ``A^T (C_s + eps I) A = C_t + eps I``: the regularised source covariance is whitened and
    re-coloured with the target's.  ``eps = 1`` is the paper's default ("adding an identity
    matrix"); ``eps = 0`` needs a non-singular source covariance.
    """
    S, T = check_pair(Xs, Xt, min_rows=2)
    if not (math.isfinite(eps) and eps >= 0):
        raise ConfigError(f"CORAL eps must be a number >= 0; got {eps!r}")
    eye = np.eye(S.shape[1])
    Cs = np.atleast_2d(np.cov(S, rowvar=False)) + eps * eye
    Ct = np.atleast_2d(np.cov(T, rowvar=False)) + eps * eye
    return _sym_power(Cs, -0.5, "source") @ _sym_power(Ct, 0.5, "target")


def coral_transform(Xs, Xt, eps: float = 1.0) -> np.ndarray:
    """CORAL, "Return of Frustratingly Easy Domain Adaptation" (Sun, Feng & Saenko, AAAI 2016).

    Returns ``Xs @ A`` with ``A`` from :func:`coral_matrix`:
    ``D_s* = D_s (C_s + eps I)^{-1/2} (C_t + eps I)^{1/2}``.  As in the paper's algorithm 1 the
    source rows are not re-centred (only second-order statistics are aligned).  Train the
    classifier on the result and apply it to the untouched target rows.
    """
    S = as_matrix(Xs, "source features", 2)
    return S @ coral_matrix(S, Xt, eps)


# --------------------------------------------------------------------------------------------
# TCA
# --------------------------------------------------------------------------------------------


class TCA:
    """Transfer Component Analysis, primal form for the linear kernel (Pan et al., IEEE TNN 2011).

    With ``X = [Xs; Xt]`` (``n = n_s + n_t`` rows), the MMD matrix ``L`` (``1/n_s^2`` on the
    source block, ``1/n_t^2`` on the target block, ``-1/(n_s n_t)`` elsewhere) and the centring
    matrix ``H = I - 11^T/n``, TCA solves::

        max_W  tr(W^T X^T H X W)   s.t.   W^T (X^T L X + mu I) W = I

    whose solution is the ``dim`` leading generalised eigenvectors of
    ``(X^T H X) w = lambda (X^T L X + mu I) w``, i.e. of ``(X^T L X + mu I)^{-1} X^T H X``.
    Both matrices are built in ``O(n d^2)`` without any ``n x n`` matrix:
    ``X^T L X = delta delta^T`` with ``delta = mean(Xs) - mean(Xt)`` and
    ``X^T H X = Xc^T Xc`` with ``Xc = X - mean(X)``.  The problem is solved with
    :func:`scipy.linalg.eigh`, so ``W^T (X^T L X + mu I) W = I``.

    A row ``x`` maps to ``(x - mean_) @ W_`` (shape ``(dim,)``).

    Attributes after :meth:`fit`: ``W_`` ``(d, dim)``, ``mean_`` ``(d,)`` (mean of the joint
    data), ``eigenvalues_`` ``(dim,)`` in decreasing order.
    """

    def __init__(self, dim: int = 30, mu: float = 1.0, kernel: str = "linear"):
        if kernel != "linear":
            raise ConfigError(f"TCA supports kernel='linear' only; got {kernel!r}")
        if int(dim) != dim or dim < 1:
            raise ConfigError(f"TCA dim must be a positive integer; got {dim!r}")
        if not (math.isfinite(mu) and mu > 0):
            raise ConfigError(f"TCA mu must be a positive number; got {mu!r}")
        self.dim = int(dim)
        self.mu = float(mu)
        self.kernel = kernel

    def fit(self, Xs, Xt) -> TCA:
        S, T = check_pair(Xs, Xt, min_rows=1)
        d = S.shape[1]
        if self.dim > d:
            raise ConfigError(f"TCA dim={self.dim} exceeds the feature dim {d}")
        X = np.vstack([S, T])
        self.mean_ = X.mean(axis=0)
        Xc = X - self.mean_
        delta = S.mean(axis=0) - T.mean(axis=0)
        A = Xc.T @ Xc  # X^T H X
        B = np.outer(delta, delta) + self.mu * np.eye(d)  # X^T L X + mu I
        vals, vecs = linalg.eigh(A, B, subset_by_index=[d - self.dim, d - 1])
        order = np.argsort(vals)[::-1]
        self.eigenvalues_ = vals[order]
        self.W_ = vecs[:, order]
        return self

    def transform(self, X) -> np.ndarray:
        if not hasattr(self, "W_"):
            raise ConfigError("TCA is not fitted; call fit(Xs, Xt) first")
        A = as_matrix(X, "features", 1)
        if A.shape[1] != self.W_.shape[0]:
            raise ConfigError(
                f"TCA was fitted on {self.W_.shape[0]} features; got {A.shape[1]}"
            )
        return (A - self.mean_) @ self.W_

    def fit_transform(self, Xs, Xt) -> tuple[np.ndarray, np.ndarray]:
        """Fit, then return the projected ``(Xs, Xt)``."""
        self.fit(Xs, Xt)
        return self.transform(Xs), self.transform(Xt)


def tca_fit(Xs, Xt, dim: int = 30, mu: float = 1.0, kernel: str = "linear") -> TCA:
    """Fit linear TCA (see :class:`TCA`) and return the fitted object (``.W_``, ``.mean_``,
    ``.transform(X)``)."""
    return TCA(dim=dim, mu=mu, kernel=kernel).fit(Xs, Xt)


# --------------------------------------------------------------------------------------------
# importance weights
# --------------------------------------------------------------------------------------------


def _domain_logreg(C: float, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed)
    )


def domain_classifier_weights(
    Xs,
    Xt,
    *,
    C: float = 1.0,
    clip: tuple[float, float] | None = (0.05, 20.0),
    seed: int = 0,
    n_folds: int = 5,
) -> np.ndarray:
    """Density ratio ``w(x) = p_t(x) / p_s(x)`` for each source row from a domain classifier.

    Bickel, Brueckner & Scheffer (ICML 2007): with ``P(t|x)`` from a logistic regression
    (standardised inputs, inverse regularisation ``C``) trained to tell target (1) from
    source (0)::

        w(x) = (n_s' / n_t') * P(t|x) / (1 - P(t|x))

    where ``n_s', n_t'`` are the source/target counts the model was trained on (the prior
    correction).  Cross-fitting: rows are split into ``n_folds`` stratified folds (capped at the
    smaller domain's size, at least 2) and each source row's weight comes from the model that
    did not see that row.  The ratios are then clipped to ``clip = (low, high)`` (``None``: no
    clipping) and finally divided by their mean, so the returned ``(n_s,)`` weights have mean 1.
    """
    from sklearn.model_selection import StratifiedKFold

    S, T = check_pair(Xs, Xt, min_rows=2)
    if not (math.isfinite(C) and C > 0):
        raise ConfigError(f"domain classifier C must be a positive number; got {C!r}")
    if clip is not None:
        lo, hi = float(clip[0]), float(clip[1])
        if not (0 <= lo < hi):
            raise ConfigError(f"clip must be (low, high) with 0 <= low < high; got {clip!r}")
    if int(n_folds) < 2:
        raise ConfigError(f"n_folds must be at least 2; got {n_folds!r}")
    n_s, n_t = S.shape[0], T.shape[0]
    X = np.vstack([S, T])
    y = np.r_[np.zeros(n_s, dtype=int), np.ones(n_t, dtype=int)]
    k = min(int(n_folds), n_s, n_t)
    ratio = np.empty(n_s)
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for train, test in folds.split(X, y):
        y_tr = y[train]
        model = _domain_logreg(C, seed).fit(X[train], y_tr)
        src_test = test[test < n_s]
        p_t = model.predict_proba(X[src_test])[:, 1]
        p_t = np.clip(p_t, 1e-12, 1 - 1e-12)
        prior = (y_tr == 0).sum() / (y_tr == 1).sum()
        ratio[src_test] = prior * p_t / (1.0 - p_t)
    if clip is not None:
        ratio = np.clip(ratio, lo, hi)
    return ratio / ratio.mean()


def _sq_dists(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    d2 = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * A @ B.T
    return np.maximum(d2, 0.0)


def median_heuristic(X: np.ndarray, *, max_rows: int = 1000, seed: int = 0) -> float:
    """Median Euclidean distance over distinct pairs of rows (a subsample of ``max_rows``)."""
    if X.shape[0] > max_rows:
        X = X[np.random.default_rng(seed).choice(X.shape[0], max_rows, replace=False)]
    d2 = _sq_dists(X, X)[np.triu_indices(X.shape[0], k=1)]
    med = float(np.sqrt(np.median(d2))) if d2.size else 0.0
    return med if med > 0 else 1.0


def _project_box_slab(v: np.ndarray, B: float, lo: float, hi: float) -> np.ndarray:
    """Euclidean projection onto ``{0 <= b <= B, lo <= sum(b) <= hi}``: ``clip(v - tau, 0, B)``."""
    b = np.clip(v, 0.0, B)
    s = b.sum()
    if lo <= s <= hi:
        return b
    target = lo if s < lo else hi
    # sum(clip(v - tau, 0, B)) is non-increasing in tau; bisect for the tau that hits target.
    t_lo, t_hi = v.min() - B - 1.0, v.max() + 1.0
    for _ in range(100):
        tau = 0.5 * (t_lo + t_hi)
        if np.clip(v - tau, 0.0, B).sum() > target:
            t_lo = tau
        else:
            t_hi = tau
    return np.clip(v - 0.5 * (t_lo + t_hi), 0.0, B)


def kmm_weights(
    Xs,
    Xt,
    *,
    sigma: float | None = None,
    B: float = 1000.0,
    eps: float | None = None,
    max_iter: int = 1000,
    tol: float = 1e-6,
    max_rows: int = KMM_MAX_ROWS,
) -> np.ndarray:
    """Kernel Mean Matching importance weights (Huang, Smola, Gretton, Borgwardt & Schoelkopf,
    NeurIPS 2006 "Correcting sample selection bias by unlabeled data").

    RBF kernel ``k(a, b) = exp(-||a - b||^2 / (2 sigma^2))``; ``sigma`` defaults to the median
    heuristic (median distance between distinct rows of the joint sample, from at most 1000
    rows).  With ``K_ij = k(s_i, s_j)`` and ``kappa_i = (n_s / n_t) sum_j k(s_i, t_j)`` the
    weights solve the quadratic programme::

        min_b  1/2 b^T K b - kappa^T b
        s.t.   0 <= b_i <= B,   |sum_i b_i - n_s| <= n_s * eps

    with ``eps`` defaulting to ``(sqrt(n_s) - 1) / sqrt(n_s)``.  The objective is, up to a
    constant, ``n_s^2 / 2`` times the squared MMD between the ``b``-weighted source and the
    target, ``MMD^2(b) = 2 f(b) / n_s^2 + const``.

    Solved by accelerated projected gradient (FISTA, step ``1 / lambda_max(K)``, restarted
    whenever the objective rises) with an exact projection onto the box-and-slab set
    (``clip(v - tau, 0, B)`` with the scalar ``tau`` found by bisection).  It stops when
    ``MMD^2(b)`` fell by less than ``tol`` over the last 20 steps, or after ``max_iter`` steps.
    ``K`` is often nearly singular, so many ``b`` reach almost the same MMD; the iterate returned
    is one of them, deterministic for given inputs.  Returns the ``(n_s,)`` weights ``b``,
    unnormalised (their mean lies within ``1 +- eps``).

    Memory and time grow as ``n_s^2``: more than ``max_rows`` (default 5000) source rows raise
    :class:`ConfigError`; subsample the source or use :func:`domain_classifier_weights`.
    """
    S, T = check_pair(Xs, Xt, min_rows=1)
    eps, sigma, lo, hi = _kmm_settings(S, T, sigma=sigma, B=B, eps=eps, max_rows=max_rows)
    K, kappa = _kmm_problem(S, T, sigma)
    step = 1.0 / max(_largest_eigenvalue(K), 1e-12)
    return _kmm_fista(K, kappa, B=B, lo=lo, hi=hi, step=step, max_iter=max_iter, tol=tol)


def _kmm_settings(S: np.ndarray, T: np.ndarray, *, sigma: float | None, B: float,
                  eps: float | None, max_rows: int) -> tuple[float, float, float, float]:
    """``(eps, sigma, lo, hi)`` of :func:`kmm_weights`, defaults filled in and checked;
    ``lo <= sum(b) <= hi`` is the slab constraint."""
    n_s = S.shape[0]
    if n_s > max_rows:
        raise ConfigError(
            f"KMM on {n_s} source rows exceeds the limit of {max_rows}; subsample the source or "
            f"use domain_classifier_weights"
        )
    if not (math.isfinite(B) and B > 0):
        raise ConfigError(f"KMM B must be a positive number; got {B!r}")
    if eps is None:
        eps = (math.sqrt(n_s) - 1.0) / math.sqrt(n_s)
    if not (math.isfinite(eps) and eps >= 0):
        raise ConfigError(f"KMM eps must be a number >= 0; got {eps!r}")
    if sigma is None:
        sigma = median_heuristic(np.vstack([S, T]))
    if not (math.isfinite(sigma) and sigma > 0):
        raise ConfigError(f"KMM sigma must be a positive number; got {sigma!r}")
    lo, hi = n_s * (1.0 - eps), n_s * (1.0 + eps)
    if lo > n_s * B:
        raise ConfigError(f"KMM constraints are infeasible: B={B} is below 1 - eps={1 - eps:.3g}")
    return eps, sigma, lo, hi


def _kmm_problem(S: np.ndarray, T: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """The source kernel matrix ``K`` and ``kappa_i = (n_s / n_t) sum_j k(s_i, t_j)``."""
    n_s, n_t = S.shape[0], T.shape[0]
    g = 1.0 / (2.0 * sigma * sigma)
    K = np.exp(-g * _sq_dists(S, S))
    kappa = np.zeros(n_s)
    for start in range(0, n_t, 2048):  # chunks keep the n_s x n_t block small
        kappa += np.exp(-g * _sq_dists(S, T[start:start + 2048])).sum(axis=1)
    kappa *= n_s / n_t
    return K, kappa


def _largest_eigenvalue(K: np.ndarray) -> float:
    """``lambda_max`` of a symmetric matrix: exact up to 500 rows, else Lanczos plus 1 %."""
    n = K.shape[0]
    if n <= 500:
        return float(linalg.eigvalsh(K, subset_by_index=[n - 1, n - 1])[0])
    from scipy.sparse.linalg import eigsh

    return float(eigsh(K, k=1, which="LA", return_eigenvectors=False, tol=1e-6)[0]) * 1.01


def _kmm_fista(K: np.ndarray, kappa: np.ndarray, *, B: float, lo: float, hi: float, step: float,
               max_iter: int, tol: float) -> np.ndarray:
    """FISTA with monotone restart on ``1/2 b^T K b - kappa^T b`` over the box-and-slab set.

    K is linear, so ``K @ y`` follows from ``K @ b``: one product a step."""
    n_s = K.shape[0]
    scale = 2.0 / (n_s * n_s)  # MMD^2(b) = scale * f(b) + const
    b = _project_box_slab(np.ones(n_s), B, lo, hi)
    Kb = K @ b
    f_b = 0.5 * b @ Kb - kappa @ b
    y, Ky, t = b, Kb, 1.0
    history = [f_b]
    for _ in range(int(max_iter)):
        b_new = _project_box_slab(y - step * (Ky - kappa), B, lo, hi)
        Kb_new = K @ b_new
        f_new = 0.5 * b_new @ Kb_new - kappa @ b_new
        if f_new > f_b:  # restart: drop the momentum and take a plain projected step
            t = 1.0
            b_new = _project_box_slab(b - step * (Kb - kappa), B, lo, hi)
            Kb_new = K @ b_new
            f_new = 0.5 * b_new @ Kb_new - kappa @ b_new
        t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        m = (t - 1.0) / t_new
        y, Ky = b_new + m * (b_new - b), Kb_new + m * (Kb_new - Kb)
        b, Kb, f_b, t = b_new, Kb_new, f_new, t_new
        history.append(f_b)
        if len(history) > _KMM_WINDOW and scale * (history[-_KMM_WINDOW - 1] - f_b) < tol:
            break
    return b


# --------------------------------------------------------------------------------------------
# proxy A-distance
# --------------------------------------------------------------------------------------------


def proxy_a_distance(
    Xs,
    Xt,
    *,
    seed: int = 0,
    Cs: tuple[float, ...] = (0.01, 0.1, 1.0),
) -> float:
    """Proxy A-distance between two samples (Ben-David et al., NeurIPS 2007; Ganin et al. 2016).

    ``PAD = 2 * (1 - 2 * err)`` where ``err`` is the held-out error of a linear SVM
    (``LinearSVC`` on standardised inputs) separating source (0) from target (1):

    * the joint sample is split half/half, stratified by domain (``random_state=seed``);
    * ``C`` is chosen from ``Cs`` on the training half by 3-fold stratified cross-validation;
    * ``err`` is the *balanced* error on the other half, ``1/2 (err_source + err_target)``, with
      ``class_weight="balanced"`` in training, so unequal sample sizes do not make a trivial
      classifier look informative (for equal sizes it is the plain error);
    * ``err`` is clipped to ``[0, 0.5]``, so ``PAD`` lies in ``[0, 2]``: ``0`` for
      indistinguishable samples, ``2`` for perfectly separable ones.

    Needs at least 4 rows per domain (two in each half, enough for 3-fold CV on the larger).
    """
    from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    S, T = check_pair(Xs, Xt, min_rows=4)
    if len(Cs) == 0 or any(not (c > 0) for c in Cs):
        raise ConfigError(f"proxy_a_distance Cs must be positive numbers; got {Cs!r}")
    X = np.vstack([S, T])
    y = np.r_[np.zeros(S.shape[0], dtype=int), np.ones(T.shape[0], dtype=int)]
    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=0.5, stratify=y, random_state=seed
    )
    pipe = make_pipeline(
        StandardScaler(),
        LinearSVC(class_weight="balanced", dual="auto", max_iter=20000, random_state=seed),
    )
    n_cv = int(min(3, np.bincount(y_tr).min()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LinearSVC convergence chatter on separable data
        if n_cv >= 2:
            search = GridSearchCV(
                pipe,
                {"linearsvc__C": list(Cs)},
                cv=StratifiedKFold(n_splits=n_cv, shuffle=True, random_state=seed),
                scoring="balanced_accuracy",
            )
            model = search.fit(X_tr, y_tr).best_estimator_
        else:
            model = pipe.set_params(linearsvc__C=float(Cs[0])).fit(X_tr, y_tr)
    pred = model.predict(X_te)
    err_s = float(np.mean(pred[y_te == 0] != 0))
    err_t = float(np.mean(pred[y_te == 1] != 1))
    err = min(max(0.5 * (err_s + err_t), 0.0), 0.5)
    return 2.0 * (1.0 - 2.0 * err)


# --------------------------------------------------------------------------------------------
# TrAdaBoost
# --------------------------------------------------------------------------------------------


def tradaboost_beta(n_source: int, n_rounds: int) -> float:
    """TrAdaBoost's fixed source factor (Dai, Yang, Xue & Yu, ICML 2007, algorithm 1).

    ``beta = 1 / (1 + sqrt(2 ln(n_source) / n_rounds))``; a misclassified source row's weight
    is multiplied by ``beta`` each round.
    """
    if int(n_source) != n_source or n_source < 1:
        raise ConfigError(f"n_source must be a positive integer; got {n_source!r}")
    if int(n_rounds) != n_rounds or n_rounds < 1:
        raise ConfigError(f"n_rounds must be a positive integer; got {n_rounds!r}")
    return 1.0 / (1.0 + math.sqrt(2.0 * math.log(n_source) / n_rounds))


def _miss(m, name: str, n: int) -> np.ndarray:
    a = _as_vector(m, name, n)
    if ((a < 0) | (a > 1)).any():
        raise ConfigError(f"{name} must hold 0/1 (or [0, 1]) values")
    return a


def tradaboost_target_error(w_tgt, miss_tgt) -> float:
    """Weighted error on the labelled target rows: ``eps_t = sum(w_tgt * miss) / sum(w_tgt)``
    (unclipped, so a caller can stop when it is no better than chance)."""
    w = _as_vector(w_tgt, "target weights")
    miss = _miss(miss_tgt, "target misses", w.shape[0])
    if (w < 0).any() or w.sum() <= 0:
        raise ConfigError("target weights must be non-negative with a positive sum")
    return float((w * miss).sum() / w.sum())


def tradaboost_update(
    w_src,
    w_tgt,
    miss_src,
    miss_tgt,
    beta_src: float,
    K: int = 2,
) -> tuple[np.ndarray, np.ndarray, float]:
    """One TrAdaBoost weight update (Dai et al. 2007), multi-class via a SAMME target step.

    ``miss_*`` are per-row 0/1 indicators (``|h(x) - y|``; values in ``[0, 1]`` are accepted) of
    the round's learner on source and labelled target rows; ``K`` is the number of classes.

    1. Target error ``eps_t = sum(w_tgt * miss_tgt) / sum(w_tgt)``, clipped to
       ``[1e-10, (1 - 1/K) - 1e-3]`` (``0.499`` for ``K = 2``).
    2. Learner weight (SAMME, Zhu et al. 2009) ``alpha_t = ln((1 - eps_t) / eps_t) + ln(K - 1)``.
       For ``K = 2`` this is ``ln(1 / beta_t)`` with ``beta_t = eps_t / (1 - eps_t)``, exactly
       Dai et al.'s learner weight.
    3. Source rows: ``w_i <- w_i * beta_src ** miss_i`` (misclassified source rows lose weight).
    4. Target rows: ``w_j <- w_j * exp(alpha_t * miss_j)`` (``= beta_t ** -miss_j`` for ``K = 2``;
       misclassified target rows gain weight).
    5. Both vectors are rescaled by one common factor so that all weights sum to 1.

    When the learner is no better than chance on the weighted target
    (``eps_t >= 1 - 1/K``) the clip makes ``alpha_t`` about ``0.004``: target weights barely
    move and the learner contributes almost nothing to the vote, while the source update still
    applies.  Use :func:`tradaboost_target_error` to detect this and stop early if preferred.
    (The "dynamic" source correction ``2 (1 - eps_t)`` of Al-Stouhi & Reddy 2011 is not applied.)

    Returns ``(new_w_src, new_w_tgt, alpha_t)``.  The final hypothesis of Dai et al. votes with
    ``alpha_t`` over the second half of the rounds.
    """
    ws = _as_vector(w_src, "source weights")
    wt = _as_vector(w_tgt, "target weights")
    ms = _miss(miss_src, "source misses", ws.shape[0])
    mt = _miss(miss_tgt, "target misses", wt.shape[0])
    if (ws < 0).any() or (wt < 0).any():
        raise ConfigError("TrAdaBoost weights must be non-negative")
    if not (0 < beta_src <= 1):
        raise ConfigError(f"beta_src must be in (0, 1]; got {beta_src!r}")
    if int(K) != K or K < 2:
        raise ConfigError(f"K (number of classes) must be an integer >= 2; got {K!r}")
    eps_t = tradaboost_target_error(wt, mt)
    eps_t = min(max(eps_t, 1e-10), (1.0 - 1.0 / K) - 1e-3)
    alpha = math.log((1.0 - eps_t) / eps_t) + math.log(K - 1.0)
    new_s = ws * np.power(beta_src, ms)
    new_t = wt * np.exp(alpha * mt)
    total = new_s.sum() + new_t.sum()
    return new_s / total, new_t / total, float(alpha)
