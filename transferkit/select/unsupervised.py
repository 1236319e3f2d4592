"""Label-free model selection for unsupervised domain adaptation (NumPy).

Plain functions over arrays; each returns one float.  Which direction is better is part of
each name's contract:

* :func:`mean_entropy` - mean prediction entropy on target rows; **lower** is preferred;
* :func:`importance_weighted_accuracy` - IWCV accuracy (Sugiyama et al. 2007); higher is better;
* :func:`dev_risk` - Deep Embedded Validation risk (You et al. 2019); **lower** is better;
* :func:`snd_score` - Soft Neighborhood Density (Saito et al. 2021); higher is better.
"""

from __future__ import annotations

import numpy as np

from ..domain.features import as_matrix, domain_classifier_weights
from ..errors import ConfigError

__all__ = ["dev_risk", "importance_weighted_accuracy", "mean_entropy", "snd_score"]


def _probs(probs, name: str = "probs") -> np.ndarray:
    P = as_matrix(probs, name, 1)
    if (P < 0).any():
        raise ConfigError(f"{name} has negative entries; pass softmax probabilities, not logits")
    s = P.sum(axis=1)
    if not np.allclose(s, 1.0, atol=1e-3):
        raise ConfigError(
            f"{name} rows must sum to 1 (softmax probabilities); got a row summing to "
            f"{s[~np.isclose(s, 1.0, atol=1e-3)][0]:.4g}"
        )
    return P / s[:, None]


def _vector(v, name: str, n: int | None = None) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ConfigError(f"{name} must be 1-D; got shape {a.shape}")
    if a.shape[0] < 1:
        raise ConfigError(f"{name} is empty")
    if n is not None and a.shape[0] != n:
        raise ConfigError(f"{name} has {a.shape[0]} entries; expected {n}")
    if not np.isfinite(a).all():
        raise ConfigError(f"{name} contains NaN or infinite values")
    return a


def mean_entropy(probs) -> float:
    """Mean Shannon entropy (nats) of the predicted class distributions on target rows.

    ``1/n sum_i -sum_c p_ic ln p_ic`` for ``probs`` of shape ``(n, k)`` (rows summing to 1;
    ``0 ln 0 = 0``).  **Lower is preferred** (more confident predictions; Morerio et al. 2018
    and the "Ent" validator of Musgrave et al. 2022).  Ranges over ``[0, ln k]``.  Beware that it
    rewards over-confident collapse; pair it with an accuracy-like score.
    """
    P = _probs(probs)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(P > 0, P * np.log(P), 0.0)
    return float(-plogp.sum(axis=1).mean())


def importance_weighted_accuracy(correct, weights) -> float:
    """Importance-weighted validation accuracy (IWCV; Sugiyama, Krauledat & Mueller, JMLR 2007).

    ``sum_i w_i c_i / sum_i w_i`` over labelled **source** validation rows, with ``c_i`` in
    ``{0, 1}`` (or a per-row score in ``[0, 1]``) and ``w_i = p_t(x_i) / p_s(x_i)`` density-ratio
    weights (e.g. from :func:`transferkit.domain.domain_classifier_weights`).  An estimate of
    target accuracy; higher is better.
    """
    c = _vector(correct, "correct")
    w = _vector(weights, "weights", c.shape[0])
    if (w < 0).any() or w.sum() <= 0:
        raise ConfigError("weights must be non-negative with a positive sum")
    return float((w * c).sum() / w.sum())


def dev_risk(
    val_features_s,
    val_loss_s,
    features_t,
    *,
    seed: int = 0,
    weights=None,
    C: float = 1.0,
) -> float:
    """Deep Embedded Validation risk (You, Wang, Chen, Wang & Jordan, ICML 2019, algorithm 1).

    1. Density ratios ``w_i`` for the source validation rows from a domain classifier on
       features (``val_features_s`` vs ``features_t``), via
       :func:`transferkit.domain.domain_classifier_weights` (cross-fitted, mean 1); or the given
       ``weights``.
    2. Weighted losses ``L_i = w_i * l_i`` where ``l_i = val_loss_s[i]``.
    3. Control variate: ``eta = -Cov(L, w) / Var(w)`` (both with ``ddof=1``).
    4. ``risk = mean(L) + eta * mean(w) - eta``.

    **Lower is better.**  When the weights do not vary (``Var(w) = 0``, e.g. all equal) ``eta``
    is taken as 0 and the risk is ``mean(L)``, i.e. the plain mean loss when ``w = 1``.
    """
    loss = _vector(val_loss_s, "val_loss_s")
    if weights is None:
        F = as_matrix(val_features_s, "val_features_s", 2)
        if F.shape[0] != loss.shape[0]:
            raise ConfigError(
                f"val_features_s has {F.shape[0]} rows but val_loss_s has {loss.shape[0]}"
            )
        w = domain_classifier_weights(F, features_t, C=C, seed=seed)
    else:
        w = _vector(weights, "weights", loss.shape[0])
        if (w < 0).any():
            raise ConfigError("weights must be non-negative")
    L = w * loss
    if loss.shape[0] < 2:
        return float(L.mean())
    var_w = float(np.var(w, ddof=1))
    if var_w <= 1e-12 * max(float(np.mean(w * w)), 1e-300):
        eta = 0.0
    else:
        cov = float(np.cov(L, w, ddof=1)[0, 1])
        eta = -cov / var_w
    return float(L.mean() + eta * w.mean() - eta)


def snd_score(probs, *, temperature: float = 0.05, max_rows: int = 5000, seed: int = 0) -> float:
    """Soft Neighborhood Density (Saito et al., ICCV 2021), higher is better.

    Target predictions ``P`` (``(n, k)`` softmax probabilities) are L2-normalised per row; the
    cosine similarities ``S = P P^T`` with the diagonal removed are turned into per-row
    neighbour distributions ``q_i = softmax_j(S_ij / temperature)`` (``j != i``), and the score
    is the mean entropy ``1/n sum_i -sum_j q_ij ln q_ij``.  Dense soft neighbourhoods (high
    entropy) indicate well-clustered target predictions.  Cost is ``O(n^2)``: beyond
    ``max_rows`` rows a seeded random subsample of that size is scored.
    """
    P = _probs(probs)
    if P.shape[0] < 2:
        raise ConfigError("snd_score needs at least 2 rows")
    if not temperature > 0:
        raise ConfigError(f"snd_score temperature must be positive; got {temperature!r}")
    if P.shape[0] > max_rows:
        P = P[np.random.default_rng(seed).choice(P.shape[0], max_rows, replace=False)]
    Z = P / np.maximum(np.linalg.norm(P, axis=1, keepdims=True), 1e-12)
    S = (Z @ Z.T) / temperature
    np.fill_diagonal(S, -np.inf)
    S -= S.max(axis=1, keepdims=True)
    E = np.exp(S)
    Q = E / E.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        qlogq = np.where(Q > 0, Q * np.log(Q), 0.0)
    return float(-qlogq.sum(axis=1).mean())
