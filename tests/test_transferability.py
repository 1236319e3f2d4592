"""Transferability scores against values computed by hand and by straightforward
re-implementations, plus the properties a ranking relies on."""

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from transferkit.errors import ConfigError
from scipy import linalg

from transferkit.select import SCORES, h_score, h_score_shrunk, leep, logme, nce, scores_for, sfda
from transferkit.select.transferability import ledoit_wolf_shrinkage


def _blobs(n=60, d=5, k=3, sep=4.0, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    centres = rng.normal(size=(k, d)) * sep
    return centres[y] + rng.normal(size=(n, d)), y


# --------------------------------------------------------------------------- LogME

def _logme_direct(F, y, tol=1e-6, max_iter=100):
    """LogME written as the paper states it: matrix inverse for the posterior, the evidence
    as the Gaussian marginal likelihood N(t; 0, I/beta + F F^T/alpha)."""
    n, d = F.shape
    sig = np.linalg.eigvalsh(F.T @ F)
    out = []
    for c in np.unique(y):
        t = (y == c).astype(float)
        a, b = 1.0, 1.0
        for _ in range(max_iter):
            A = a * np.eye(d) + b * F.T @ F
            m = b * np.linalg.solve(A, F.T @ t)
            g = (b * sig / (a + b * sig)).sum()
            a2, b2 = g / (m @ m), (n - g) / ((t - F @ m) @ (t - F @ m))
            done = abs(a2 / b2 - a / b) <= tol * (a / b)
            a, b = a2, b2
            if done:
                break
        C = np.eye(n) / b + F @ F.T / a
        out.append(multivariate_normal(np.zeros(n), C).logpdf(t) / n)
    return float(np.mean(out))


@pytest.mark.parametrize("n,d", [(12, 3), (8, 10), (30, 30)])
def test_logme_matches_the_direct_computation(n, d):
    rng = np.random.default_rng(n + d)
    F = rng.normal(size=(n, d))
    y = np.arange(n) % 3
    assert logme(F, y) == pytest.approx(_logme_direct(F, y), rel=1e-6, abs=1e-8)


def test_logme_on_one_feature_column():
    # a single feature, more feature columns than rows, and a constant column all take the
    # same path (the zero eigenvalues of F^T F count in the evidence's determinant)
    F = np.array([[1.0], [0.2], [0.9], [0.1], [0.7]])
    y = np.array([1, 0, 1, 0, 1])
    assert logme(F, y) == pytest.approx(_logme_direct(F, y), rel=1e-6)
    G = np.hstack([F, np.ones((5, 1)), F ** 2])
    assert logme(G, y) == pytest.approx(_logme_direct(G, y), rel=1e-6)


def test_logme_prefers_separable_labels_and_is_permutation_invariant():
    F, y = _blobs()
    shuffled = np.random.default_rng(1).permutation(y)
    assert logme(F, y) > logme(F, shuffled) + 0.1
    perm = np.random.default_rng(2).permutation(len(y))
    assert logme(F[perm], y[perm]) == pytest.approx(logme(F, y), rel=1e-9)
    assert logme(F, y + 7) == pytest.approx(logme(F, y), rel=1e-12)  # label values are names


# --------------------------------------------------------------------------- H-score

def test_h_score_by_hand():
    # f = 0,1,3,4 in classes 0,0,1,1: cov(f) = 10/3, class means .5,.5,3.5,3.5: cov(g) = 3
    assert h_score(np.array([[0.0], [1], [3], [4]]), [0, 0, 1, 1]) == pytest.approx(0.9)


@pytest.mark.parametrize("n,d", [(40, 6), (10, 30)])
def test_h_score_matches_the_covariance_formula(n, d):
    F, y = _blobs(n=n, d=d, k=3, sep=0.5, seed=d)
    means = np.array([F[y == c].mean(axis=0) for c in range(3)])
    want = np.trace(np.linalg.pinv(np.cov(F, rowvar=False), rcond=1e-15)
                    @ np.cov(means[y], rowvar=False))
    assert h_score(F, y) == pytest.approx(want, rel=1e-6)


def test_h_score_is_invariant_to_invertible_linear_maps():
    F, y = _blobs(d=4)
    M = np.random.default_rng(3).normal(size=(4, 4)) + 3 * np.eye(4)
    assert h_score(F @ M + 5.0, y) == pytest.approx(h_score(F, y), rel=1e-8)
    assert h_score(F, y) > h_score(F, np.random.default_rng(1).permutation(y)) + 1.0


def test_h_score_saturates_at_k_minus_1_when_features_span_the_samples():
    # the documented limit of the shrinkage-free form: d >= n - 1 gives k - 1 for any labels
    rng = np.random.default_rng(0)
    F, y = rng.normal(size=(12, 20)), np.arange(12) % 3
    assert h_score(F, y) == pytest.approx(2.0, rel=1e-6)
    assert h_score(F, rng.permutation(y)) == pytest.approx(2.0, rel=1e-6)
    G, z = _blobs(n=200, d=5, k=3)
    assert 0 < h_score(G, z) < 2.0


# --------------------------------------------------------------------------- shrinkage H-score

def test_h_score_shrunk_by_hand():
    # rows (2,0), (0,1), (-2,0), (0,-1) (mean 0), classes 0,0,1,1: S = diag(2, .5), mu = 1.25,
    # |S - mu I|^2 / d = .5625, (sum |x|^4 / n - |S|^2) / (n d) = (8.5 - 4.25) / 8 = .53125,
    # alpha = .53125 / .5625 = 17/18; class means +-(1, .5): G = [[1, .5], [.5, .25]];
    # cov_a = diag(2/18 + 17/18 * 1.25, .5/18 + 17/18 * 1.25) = diag(23.25, 21.75) / 18;
    # score = (1/18) (1 * 18/23.25 + .25 * 18/21.75) = 1/23.25 + 1/87
    F = np.array([[2.0, 0], [0, 1], [-2, 0], [0, -1]])
    alpha, mu = ledoit_wolf_shrinkage(F)
    assert (alpha, mu) == pytest.approx((17 / 18, 1.25))
    assert h_score_shrunk(F, [0, 0, 1, 1]) == pytest.approx(1 / 23.25 + 1 / 87, rel=1e-12)
    # one feature: the target mu I is S itself, no shrinkage, the plain H-score's 0.9
    assert h_score_shrunk(np.array([[0.0], [1], [3], [4]]), [0, 0, 1, 1]) == pytest.approx(0.9)


@pytest.mark.parametrize("n,d", [(40, 6), (10, 30)])
def test_h_score_shrunk_matches_sklearn_ledoit_wolf(n, d):
    covariance = pytest.importorskip("sklearn.covariance")
    F, y = _blobs(n=n, d=d, k=3, sep=0.5, seed=d)
    lw = covariance.LedoitWolf().fit(F)
    means = np.array([F[y == c].mean(axis=0) for c in range(3)])
    G = means[y] - F.mean(axis=0)
    want = np.trace(np.linalg.inv(lw.covariance_) @ ((1 - lw.shrinkage_) * G.T @ G / n))
    assert ledoit_wolf_shrinkage(F - F.mean(axis=0))[0] == pytest.approx(lw.shrinkage_, rel=1e-9)
    assert h_score_shrunk(F, y) == pytest.approx(want, rel=1e-8)


def test_h_score_shrunk_does_not_saturate_when_features_span_the_samples():
    # where h_score is k - 1 for any labelling, the shrunk score still tells them apart
    rng = np.random.default_rng(0)
    y = np.arange(30) % 3
    F = rng.normal(size=(30, 60)) + 4.0 * np.eye(3, 60)[y]
    shuffled = rng.permutation(y)
    assert h_score(F, y) == pytest.approx(h_score(F, shuffled), rel=1e-6)
    assert h_score_shrunk(F, y) > 1.3 * h_score_shrunk(F, shuffled)
    assert 0 < h_score_shrunk(F, y) < 2.0


# --------------------------------------------------------------------------- NCE, LEEP

Z = np.array([0, 0, 1, 1])
Y = np.array([0, 1, 1, 1])


def _onehot(z, width=3):
    return np.eye(width)[z]


def test_nce_by_hand():
    # z = 0: y is 0 or 1 evenly (ln 2 nats); z = 1: y is 1 (0 nats); P(z) = 1/2 each
    assert nce(_onehot(Z), Y) == pytest.approx(-0.5 * math.log(2))
    assert nce(_onehot(Y), Y) == 0.0


def test_leep_by_hand_and_by_loops():
    # one-hot source probabilities: P(y_i | z_i) = 1/2, 1/2, 1, 1
    assert leep(_onehot(Z), Y) == pytest.approx(-0.5 * math.log(2))
    rng = np.random.default_rng(0)
    theta = rng.dirichlet(np.ones(5), size=9)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 0, 1])
    n, zs = theta.shape
    joint = [[sum(theta[i, z] for i in range(n) if y[i] == c) / n for z in range(zs)]
             for c in range(3)]
    pz = [sum(joint[c][z] for c in range(3)) for z in range(zs)]
    want = sum(math.log(sum(joint[y[i]][z] / pz[z] * theta[i, z] for z in range(zs)))
               for i in range(n)) / n
    assert leep(theta, y) == pytest.approx(want, rel=1e-12)


def test_source_scores_prefer_labels_the_source_predicts():
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    logits = 3.0 * np.eye(10)[y * 2] + rng.normal(size=(90, 10))
    theta = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    shuffled = rng.permutation(y)
    assert leep(theta, y) > leep(theta, shuffled) + 0.2
    assert nce(theta, y) > nce(theta, shuffled) + 0.2
    assert leep(theta, y) <= 0 and nce(theta, y) <= 0


# --------------------------------------------------------------------------- SFDA

def _sfda_published_steps(X, y):
    """SFDA as the paper's code lays it out: total and between scatter, every generalised
    eigenvector of (Sb, Sw), the projection V V^T, a per-class ConfMix loop."""
    X = X.astype(float).copy()
    n, d = X.shape
    k = len(np.unique(y))

    def cov(Z, lam=None):
        C = np.cov(Z.T, bias=True).reshape(d, d)
        if lam is None:
            return C
        return (1 - lam) * C + lam * np.trace(C) / d * np.eye(d)

    def fit(X, lam):
        pri = np.bincount(y) / n
        means = np.array([X[y == c].mean(axis=0) for c in range(k)])
        Sw = sum(pri[c] * cov(X[y == c]) for c in range(k))
        if lam is None:
            lam = max(np.exp(-5 * np.linalg.eigvalsh(Sw).max()), 1e-10)
        Sw_s = (1 - lam) * Sw + lam * np.trace(Sw) / d * np.eye(d)
        Sb = cov(X, lam) - Sw_s
        _, V = linalg.eigh(Sb, Sw_s)
        coef = means @ V @ V.T
        s = X @ coef.T - 0.5 * np.diag(means @ coef.T) + np.log(pri)
        e = np.exp(s - s.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True), lam, means

    p, lam, means = fit(X, None)
    p = np.exp(p) / np.exp(p).sum(axis=1, keepdims=True)
    for c in range(k):
        idx = np.where(y == c)[0]
        q = p[idx, c][:, None]
        other = (means.sum(axis=0) - means[c]) / (k - 1)
        X[idx] = q * X[idx] + (1 - q) * other
    p2, _, _ = fit(X, lam)
    return p2[np.arange(n), y].mean()


@pytest.mark.parametrize("n,d,k,sep", [(30, 4, 3, 1.0), (20, 8, 2, 0.3), (40, 6, 4, 0.2)])
def test_sfda_matches_the_published_steps(n, d, k, sep):
    F, y = _blobs(n=n, d=d, k=k, sep=sep, seed=n)
    assert sfda(F, y) == pytest.approx(_sfda_published_steps(F, y), rel=1e-7)


def test_sfda_by_hand_in_one_dimension():
    # d = 1: the shrinkage changes nothing (mu = Sw); class means .5 and 3.5, Sw = 1/4, so
    # the first discriminant's logit of class 1 against 0 is 12 x - 24
    x, y = np.array([0.0, 1, 3, 4]), np.array([0, 0, 1, 1])
    p1 = 1 / (1 + np.exp(-(12 * x - 24)))
    p1 = np.stack([1 - p1, p1], axis=1)
    q = (np.exp(p1) / np.exp(p1).sum(axis=1, keepdims=True))[np.arange(4), y]
    other = np.array([3.5, 0.5])[y]
    x2 = q * x + (1 - q) * other
    m = np.array([x2[:2].mean(), x2[2:].mean()])
    sw = 0.5 * x2[:2].var() + 0.5 * x2[2:].var()
    logit = ((m[1] - m[0]) * x2 - (m[1] ** 2 - m[0] ** 2) / 2) / sw
    p2 = 1 / (1 + np.exp(-logit))
    want = np.mean(np.where(y == 1, p2, 1 - p2))
    assert sfda(x[:, None], y) == pytest.approx(want, rel=1e-9)


def test_sfda_prefers_separable_labels():
    F, y = _blobs(n=90, d=6, k=3, sep=1.5)
    shuffled = np.random.default_rng(1).permutation(y)
    assert 0 < sfda(F, shuffled) < sfda(F, y) <= 1
    with pytest.raises(ConfigError, match="do not vary within any class"):
        sfda(np.array([[0.0], [0], [1], [1]]), [0, 0, 1, 1])


# --------------------------------------------------------------------------- the table, faults

def test_registry_says_which_scores_need_source_probabilities():
    assert {s.name for s in scores_for(False)} == {"logme", "hscore", "hscore_reg", "sfda"}
    assert {s.name for s in scores_for(True)} == set(SCORES)
    F, y = _blobs()
    theta = _onehot(y, 4) * 0.9 + 0.025
    for s in SCORES.values():
        assert math.isfinite(s.fn(F, y, theta if s.needs_source else None))


@pytest.mark.parametrize("call,needle", [
    (lambda: logme(np.ones((4, 2)), [1, 1, 1, 1]), "at least 2 classes"),
    (lambda: h_score(np.ones((4, 2)), [0, 1, 0]), "labels has 3 entries"),
    (lambda: logme(np.ones((4, 2)), [0.5, 1, 0, 1]), "integer class indices"),
    (lambda: leep(np.ones((4, 3)), [0, 1, 0, 1]), "rows must sum to 1"),
    (lambda: nce(_onehot(Z)[:3], Y), "source_probs has 3 rows"),
    (lambda: logme(np.full((4, 2), np.nan), [0, 1, 0, 1]), "NaN"),
])
def test_bad_input_is_one_line(call, needle):
    with pytest.raises(ConfigError, match=needle) as e:
        call()
    assert "\n" not in str(e.value)


def test_logme_stays_finite_when_the_features_fit_every_target():
    # features of a randomly initialised tiny CNN on 12 images (tests/fixtures), on which
    # the evidence iteration drove the noise precision's numerator n - gamma to exactly 0
    case = np.load(Path(__file__).parent / "fixtures" / "logme_exact_fit.npz")
    assert case["F"].shape[0] < case["F"].shape[1]
    assert np.isfinite(logme(case["F"], case["y"]))
