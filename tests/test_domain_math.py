"""Domain-adaptation math and label-free validation, checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from transferkit.domain import (
    TCA,
    DomainDiscriminator,
    cdan_features,
    coral_loss,
    coral_matrix,
    coral_transform,
    dann_lambda,
    domain_accuracy,
    domain_adversarial_loss,
    domain_classifier_weights,
    entropy,
    entropy_weights,
    gaussian_kernels,
    grad_reverse,
    kmm_weights,
    mk_mmd,
    proxy_a_distance,
    tca_fit,
    tradaboost_beta,
    tradaboost_target_error,
    tradaboost_update,
)
from transferkit.errors import ConfigError
from transferkit.select import (
    dev_risk,
    importance_weighted_accuracy,
    mean_entropy,
    snd_score,
)

T = torch.tensor


class _Identity1d(nn.Module):
    """A 'discriminator' whose logit is the single feature itself: z = f[:, 0]."""

    def forward(self, f):
        return f[:, 0]


# ------------------------------------------------------------------------------------- DANN


def test_grad_reverse_is_identity_forward_and_negates_scaled_gradient():
    x = T([1.0, 2.0, 3.0], requires_grad=True)
    y = grad_reverse(x, 0.5)
    assert torch.equal(y, x.detach())
    (y * T([1.0, 2.0, 3.0])).sum().backward()
    # d/dx sum(c * x) = c, reversed and scaled by 0.5
    assert torch.allclose(x.grad, T([-0.5, -1.0, -1.5]))


def test_dann_lambda_schedule():
    assert dann_lambda(0.0) == 0.0
    # gamma = 2, p = 0.5: 2 / (1 + e^-1) - 1 = tanh(1/2)
    assert dann_lambda(0.5, gamma=2.0) == pytest.approx(math.tanh(0.5))
    # p = 1, gamma = 10: 2 / (1 + e^-10) - 1
    assert dann_lambda(1.0) == pytest.approx(2.0 / (1.0 + math.exp(-10.0)) - 1.0)
    assert dann_lambda(1.0) > 0.9999
    values = [dann_lambda(p / 10) for p in range(11)]
    assert values == sorted(values)
    assert dann_lambda(1.5) == dann_lambda(1.0)  # clamped
    with pytest.raises(ConfigError):
        dann_lambda(float("nan"))


def test_domain_discriminator_layout_and_shape():
    disc = DomainDiscriminator(8, hidden=16)
    kinds = [type(m).__name__ for m in disc.net]
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert disc(torch.randn(5, 8)).shape == (5,)
    bn = DomainDiscriminator(8, hidden=16, batch_norm=True)
    assert "BatchNorm1d" in [type(m).__name__ for m in bn.net]
    assert bn(torch.randn(5, 8)).shape == (5,)
    with pytest.raises(ConfigError):
        disc(torch.randn(5, 7))


def test_domain_adversarial_loss_by_hand():
    disc = _Identity1d()
    # logit 0 everywhere: BCE = ln 2 for both domains
    zero = torch.zeros(3, 1)
    assert domain_adversarial_loss(disc, zero, zero[:1], 1.0).item() == pytest.approx(math.log(2))

    f_s = T([[1.0], [2.0]], requires_grad=True)
    f_t = T([[0.0]])
    # source label 1: BCE(z, 1) = ln(1 + e^-z); target label 0 at z = 0: ln 2
    a, b = math.log1p(math.exp(-1.0)), math.log1p(math.exp(-2.0))
    loss = domain_adversarial_loss(disc, f_s, f_t, lambd=0.3)
    assert loss.item() == pytest.approx(0.5 * ((a + b) / 2 + math.log(2)), rel=1e-6)
    loss.backward()
    # dL/dz_i = 0.5 * 1/2 * (sigmoid(z_i) - 1); reversal multiplies by -0.3
    sig = lambda z: 1 / (1 + math.exp(-z))
    expected = [-0.3 * 0.25 * (sig(1.0) - 1), -0.3 * 0.25 * (sig(2.0) - 1)]
    assert f_s.grad[:, 0].tolist() == pytest.approx(expected, rel=1e-6)

    # weights: sum(w * l) / sum(w) per domain
    weighted = domain_adversarial_loss(disc, f_s, f_t, 1.0, weight_s=T([3.0, 1.0]))
    assert weighted.item() == pytest.approx(0.5 * ((3 * a + b) / 4 + math.log(2)), rel=1e-6)


def test_domain_accuracy_is_balanced_and_restores_mode():
    disc = nn.Sequential(nn.Linear(1, 1), nn.Flatten(0))
    with torch.no_grad():
        disc[0].weight.fill_(1.0)
        disc[0].bias.zero_()
    disc.train()
    # source correct when z > 0: 2/2; target correct when z <= 0: 1/2  -> (1 + 0.5) / 2
    acc = domain_accuracy(disc, T([[1.0], [2.0]]), T([[-1.0], [1.0]]))
    assert acc == pytest.approx(0.75)
    assert disc.training


# ------------------------------------------------------------------------------------- MMD


def test_gaussian_kernels_by_hand():
    k = gaussian_kernels(T([[0.0, 0.0]]), T([[3.0, 4.0]]), [12.5, 25.0])
    # ||x - y||^2 = 25; exp(-25 / (2 * 12.5)) = e^-1, exp(-25 / 50) = e^-0.5
    assert k.shape == (2, 1, 1)
    assert k.flatten().tolist() == pytest.approx([math.exp(-1.0), math.exp(-0.5)], rel=1e-6)


def test_mk_mmd_identical_batches_is_zero():
    f = torch.randn(6, 4)
    assert mk_mmd(f, f.clone()).item() == pytest.approx(0.0, abs=1e-6)


def test_mk_mmd_two_points_by_hand():
    f_s, f_t = T([[0.0]]), T([[2.0]])
    # joint batch {0, 2}: mean squared distance over 4 ordered pairs = (0 + 4 + 4 + 0) / 4 = 2
    # one kernel, sigma^2 = 2: k(0, 2) = exp(-4 / 4) = e^-1; MMD^2 = 1 + 1 - 2 e^-1
    assert mk_mmd(f_s, f_t, kernel_mults=(1.0,)).item() == pytest.approx(2 - 2 * math.exp(-1))
    # three kernels sigma^2 = 1, 2, 4: k = mean(e^-2, e^-1, e^-0.5)
    k = (math.exp(-2) + math.exp(-1) + math.exp(-0.5)) / 3
    got = mk_mmd(f_s, f_t, kernel_mults=(0.5, 1.0, 2.0)).item()
    assert got == pytest.approx(2 - 2 * k, rel=1e-6)


def test_mk_mmd_unequal_sizes_by_hand():
    # joint {0, 0, 2}: 4 ordered pairs at squared distance 4 out of 9 -> s0 = 16/9
    # k(0, 2) = exp(-4 / (2 * 16/9)) = exp(-9/8); k_ss = k_tt = 1
    got = mk_mmd(T([[0.0], [0.0]]), T([[2.0]]), kernel_mults=(1.0,)).item()
    assert got == pytest.approx(2 - 2 * math.exp(-9 / 8), rel=1e-6)


def test_mk_mmd_matches_brute_force_v_statistic():
    g = torch.Generator().manual_seed(0)
    f_s, f_t = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(
        7, 3, generator=g, dtype=torch.float64) + 1.0
    z = torch.cat([f_s, f_t])
    d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    s0 = d2.mean()
    mults = (0.5, 1.0, 2.0)
    k = sum(torch.exp(-d2 / (2 * m * s0)) for m in mults) / len(mults)
    expected = k[:5, :5].mean() + k[5:, 5:].mean() - 2 * k[:5, 5:].mean()
    assert mk_mmd(f_s, f_t, mults).item() == pytest.approx(expected.item(), rel=1e-10)


def test_mk_mmd_linear_by_hand():
    # one quad (s1, s2, t1, t2) = (0, 1, 2, 4), sigma^2 = 1:
    # k(0,1) + k(2,4) - k(0,4) - k(1,2) = e^-0.5 + e^-2 - e^-8 - e^-0.5
    got = mk_mmd(T([[0.0], [1.0]]), T([[2.0], [4.0]]), (1.0,), linear=True, base_bandwidth=1.0)
    assert got.item() == pytest.approx(math.exp(-2) - math.exp(-8), rel=1e-6)
    with pytest.raises(ConfigError):
        mk_mmd(torch.zeros(3, 1), torch.zeros(2, 1), linear=True)


def test_mk_mmd_gradient_is_finite_with_repeated_rows():
    f_s = torch.zeros(4, 3, requires_grad=True)
    f_t = torch.randn(4, 3)
    mk_mmd(f_s, f_t).backward()
    assert torch.isfinite(f_s.grad).all()


def test_shape_errors_are_config_errors():
    with pytest.raises(ConfigError, match="dims differ"):
        mk_mmd(torch.zeros(3, 2), torch.zeros(3, 4))
    with pytest.raises(ConfigError, match="at least 2"):
        coral_loss(torch.zeros(1, 2), torch.zeros(3, 2))
    with pytest.raises(ConfigError, match="dims differ"):
        coral_transform(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ConfigError):
        domain_classifier_weights(np.zeros((1, 2)), np.zeros((3, 2)))
    with pytest.raises(ConfigError):
        kmm_weights(np.zeros(3), np.zeros((3, 1)))


# ------------------------------------------------------------------------------------- CORAL


def test_coral_loss_by_hand():
    f = torch.randn(10, 3)
    assert coral_loss(f, f + 5.0).item() == pytest.approx(0.0, abs=1e-6)  # a shift keeps C
    # C_s = [[2, 0], [0, 0]], C_t = [[0, 0], [0, 2]] (unbiased, n = 2);
    # ||diag(2, -2)||_F^2 = 8; 8 / (4 * 2^2) = 0.5
    f_s = T([[0.0, 0.0], [2.0, 0.0]])
    f_t = T([[0.0, 0.0], [0.0, 2.0]])
    assert coral_loss(f_s, f_t).item() == pytest.approx(0.5)


def test_coral_matrix_one_dimensional_by_hand():
    xs, xt = np.array([[0.0], [2.0]]), np.array([[0.0], [4.0]])  # variances 2 and 8
    assert coral_matrix(xs, xt, eps=0.0)[0, 0] == pytest.approx(2.0)  # sqrt(8 / 2)
    assert coral_matrix(xs, xt, eps=1.0)[0, 0] == pytest.approx(math.sqrt(3.0))  # sqrt(9 / 3)
    with pytest.raises(ConfigError, match="singular"):
        coral_matrix(np.zeros((4, 2)), np.ones((4, 2)), eps=0.0)


def test_coral_transform_matches_target_covariance():
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(300, 3)) @ np.array([[2.0, 0.3, 0.0], [0.0, 1.0, 0.5], [0.0, 0.0, 0.5]])
    xt = rng.normal(size=(200, 3)) @ np.array([[0.5, 0.0, 0.0], [0.4, 1.5, 0.0], [0.0, 0.2, 3.0]])
    out = coral_transform(xs, xt, eps=0.0)
    assert np.allclose(np.cov(out, rowvar=False), np.cov(xt, rowvar=False), atol=1e-8)
    # with eps: A^T (C_s + eps I) A = C_t + eps I
    A = coral_matrix(xs, xt, eps=1.0)
    cs, ct = np.cov(xs, rowvar=False) + np.eye(3), np.cov(xt, rowvar=False) + np.eye(3)
    assert np.allclose(A.T @ cs @ A, ct, atol=1e-8)
    assert np.allclose(coral_transform(xs, xt, eps=1.0), xs @ A)


# ------------------------------------------------------------------------------------- CDAN


def test_entropy_by_hand():
    h = entropy(torch.zeros(1, 4))
    assert h.item() == pytest.approx(math.log(4))
    # logits (0, ln 3) -> p = (1/4, 3/4)
    h = entropy(T([[0.0, math.log(3.0)]]))
    assert h.item() == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), rel=1e-6)
    assert entropy(T([[1000.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-6)


def test_cdan_features_outer_product():
    f = T([[1.0, 2.0]])
    g = T([[0.25, 0.75]], requires_grad=True)
    out = cdan_features(f, g)
    # out[i*k + c] = f_i * g_c
    assert out.shape == (1, 4)
    assert out[0].tolist() == pytest.approx([0.25, 0.75, 0.5, 1.5])
    assert not out.requires_grad  # probabilities are detached, f has no grad here
    f2 = torch.randn(3, 5, requires_grad=True)
    assert cdan_features(f2, torch.softmax(torch.randn(3, 2), 1)).shape == (3, 10)


def test_entropy_weights_by_hand():
    probs = T([[1.0, 0.0], [0.5, 0.5]])
    # H = 0 and ln 2 -> w = 1 + e^0 = 2 and 1 + 1/2 = 1.5
    raw = entropy_weights(probs, normalize=False)
    assert raw.tolist() == pytest.approx([2.0, 1.5])
    assert entropy_weights(probs).tolist() == pytest.approx([2.0 / 3.5, 1.5 / 3.5])


# ------------------------------------------------------------------------------------- TCA


def test_tca_solves_the_generalised_eigenproblem_with_explicit_matrices():
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(12, 4))
    xt = rng.normal(size=(8, 4)) + np.array([2.0, 0.0, 0.0, 0.0])
    tca = tca_fit(xs, xt, dim=2, mu=0.5)
    X = np.vstack([xs, xt])
    ns, nt, n = 12, 8, 20
    e = np.r_[np.full(ns, 1 / ns), np.full(nt, -1 / nt)]
    L = np.outer(e, e)  # 1/ns^2, 1/nt^2, -1/(ns nt) blocks
    assert L[0, 0] == pytest.approx(1 / 144) and L[0, -1] == pytest.approx(-1 / 96)
    H = np.eye(n) - np.ones((n, n)) / n
    M = np.linalg.solve(X.T @ L @ X + 0.5 * np.eye(4), X.T @ H @ X)
    assert np.allclose(M @ tca.W_, tca.W_ * tca.eigenvalues_, atol=1e-8)
    # the leading eigenvalues of M
    assert np.allclose(tca.eigenvalues_, np.sort(np.linalg.eigvals(M).real)[::-1][:2])
    x_new = rng.normal(size=(3, 4))
    assert np.allclose(tca.transform(x_new), (x_new - X.mean(0)) @ tca.W_)


def test_tca_brings_shifted_domains_closer():
    rng = np.random.default_rng(0)
    scale = np.array([3.0, 2.0, 1.0])
    xs = rng.normal(size=(200, 3)) * scale
    xt = rng.normal(size=(200, 3)) * scale + np.array([0.0, 0.0, 4.0])

    def gap(a, b):  # distance between domain means relative to the pooled spread
        return np.linalg.norm(a.mean(0) - b.mean(0)) / np.sqrt(np.vstack([a, b]).var(0).sum())

    zs, zt = TCA(dim=2, mu=1.0).fit_transform(xs, xt)
    assert gap(zs, zt) < 0.5 * gap(xs, xt)


def test_tca_guards():
    with pytest.raises(ConfigError, match="exceeds"):
        tca_fit(np.zeros((5, 3)), np.ones((5, 3)), dim=4)
    with pytest.raises(ConfigError, match="linear"):
        TCA(kernel="rbf")


# ------------------------------------------------------------------------------------- weights


def test_domain_classifier_weights_favour_the_target_region():
    rng = np.random.default_rng(0)
    xs = rng.normal(0.0, 1.0, size=(200, 1))
    xt = rng.normal(1.5, 1.0, size=(200, 1))
    w = domain_classifier_weights(xs, xt, seed=0)
    assert w.shape == (200,)
    assert w.mean() == pytest.approx(1.0)
    assert w[xs[:, 0] > 1.0].mean() > 3 * w[xs[:, 0] < 0.0].mean()
    assert np.array_equal(w, domain_classifier_weights(xs, xt, seed=0))  # deterministic
    # true ratio N(1.5,1)/N(0,1) = exp(1.5 x - 1.125) is increasing: so are the weights
    rank_w = np.argsort(np.argsort(w[np.argsort(xs[:, 0])]))
    assert np.corrcoef(np.arange(200), rank_w)[0, 1] > 0.95  # Spearman correlation


def _kmm_objective(b, xs, xt, sigma):
    d2 = lambda a, c: ((a[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    K = np.exp(-d2(xs, xs) / (2 * sigma**2))
    kappa = len(xs) / len(xt) * np.exp(-d2(xs, xt) / (2 * sigma**2)).sum(1)
    return 0.5 * b @ K @ b - kappa @ b, K, kappa


def test_kmm_reweights_toward_target_and_respects_constraints():
    rng = np.random.default_rng(0)
    xs = np.linspace(-3, 3, 40)[:, None]
    xt = rng.normal(1.5, 0.5, size=(60, 1))
    B, eps = 5.0, 0.1
    b = kmm_weights(xs, xt, sigma=0.5, B=B, eps=eps)
    assert b.min() >= 0 and b.max() <= B + 1e-9
    assert abs(b.sum() - 40) <= 40 * eps + 1e-6
    weighted_mean = (b * xs[:, 0]).sum() / b.sum()
    assert abs(weighted_mean - xt.mean()) < 0.25 < abs(xs.mean() - xt.mean())
    assert b[xs[:, 0] > 1].mean() > 5 * b[xs[:, 0] < -1].mean()

    # the QP optimum agrees with a general-purpose solver on a small problem
    from scipy.optimize import minimize

    xs2, xt2 = xs[::4], xt[:20]
    b2 = kmm_weights(xs2, xt2, sigma=0.7, B=B, eps=eps)
    f_ours, K, kappa = _kmm_objective(b2, xs2, xt2, 0.7)
    n = len(xs2)
    ref = minimize(
        lambda v: 0.5 * v @ K @ v - kappa @ v, np.ones(n), jac=lambda v: K @ v - kappa,
        bounds=[(0, B)] * n, method="SLSQP", options={"ftol": 1e-12, "maxiter": 500},
        constraints=[{"type": "ineq", "fun": lambda v: n * eps - (v.sum() - n)},
                     {"type": "ineq", "fun": lambda v: n * eps + (v.sum() - n)}],
    )
    assert f_ours <= ref.fun + 1e-6 * abs(ref.fun)


def test_kmm_refuses_too_many_rows():
    with pytest.raises(ConfigError, match="exceeds the limit"):
        kmm_weights(np.zeros((11, 1)), np.zeros((3, 1)), max_rows=10)


# ------------------------------------------------------------------------------------- PAD


def test_proxy_a_distance_same_vs_far():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 2)), rng.normal(size=(200, 2))
    assert proxy_a_distance(a, b, seed=0) < 0.3
    far = rng.normal(size=(200, 2)) + 10.0
    assert proxy_a_distance(a, far, seed=0) > 1.8
    assert proxy_a_distance(a, far, seed=0) <= 2.0


# ------------------------------------------------------------------------------------- TrAdaBoost


def test_tradaboost_beta_by_hand():
    # 1 / (1 + sqrt(2 ln 100 / 10)) = 1 / (1 + sqrt(0.9210340)) = 1 / 1.9597052
    assert tradaboost_beta(100, 10) == pytest.approx(1 / 1.9597052, rel=1e-6)
    assert tradaboost_beta(1, 5) == 1.0  # ln 1 = 0
    with pytest.raises(ConfigError):
        tradaboost_beta(0, 5)


def test_tradaboost_update_by_hand():
    w_s, w_t = [0.25, 0.25], [0.1, 0.3]
    # eps_t = 0.1 / 0.4 = 0.25; beta_t = 1/3; alpha = ln 3
    assert tradaboost_target_error(w_t, [1, 0]) == pytest.approx(0.25)
    ns, nt, alpha = tradaboost_update(w_s, w_t, [1, 0], [1, 0], beta_src=0.5)
    assert alpha == pytest.approx(math.log(3))
    # source: 0.25 * 0.5, 0.25; target: 0.1 * 3, 0.3; total 0.975
    assert ns.tolist() == pytest.approx([0.125 / 0.975, 0.25 / 0.975])
    assert nt.tolist() == pytest.approx([0.3 / 0.975, 0.3 / 0.975])
    # K = 3 (SAMME): alpha = ln 3 + ln 2 = ln 6; target 0.1 * 6 = 0.6; total 0.125+0.25+0.6+0.3
    _ns3, nt3, alpha3 = tradaboost_update(w_s, w_t, [1, 0], [1, 0], beta_src=0.5, K=3)
    assert alpha3 == pytest.approx(math.log(6))
    assert nt3.tolist() == pytest.approx([0.6 / 1.275, 0.3 / 1.275])


def test_tradaboost_update_worse_than_chance_is_clipped():
    # eps_t = 0.8 >= 0.5 -> clipped to 0.499, alpha = ln(0.501 / 0.499)
    _, nt, alpha = tradaboost_update([0.5], [0.4, 0.1], [0], [1, 0], beta_src=0.5)
    assert alpha == pytest.approx(math.log(0.501 / 0.499))
    assert nt.sum() == pytest.approx(0.5, abs=1e-2)


# ------------------------------------------------------------------------------------- selection


def test_mean_entropy_by_hand():
    assert mean_entropy([[0.5, 0.5], [1.0, 0.0]]) == pytest.approx(math.log(2) / 2)
    with pytest.raises(ConfigError, match="sum to 1"):
        mean_entropy([[2.0, 1.0]])


def test_importance_weighted_accuracy_by_hand():
    # (2*1 + 1*0 + 1*1) / (2 + 1 + 1)
    assert importance_weighted_accuracy([1, 0, 1], [2.0, 1.0, 1.0]) == pytest.approx(0.75)
    assert importance_weighted_accuracy([1, 0], [1.0, 1.0]) == pytest.approx(0.5)
    with pytest.raises(ConfigError):
        importance_weighted_accuracy([1, 0], [1.0])


def test_dev_risk_by_hand():
    loss = np.array([0.2, 0.5, 1.1, 0.4])
    # equal weights: Var(w) = 0 -> eta = 0 -> plain mean loss
    assert dev_risk(None, loss, None, weights=np.ones(4)) == pytest.approx(loss.mean())
    # w = (0.5, 1.5), l = (2, 0): L = (1, 0); Cov(L, w) = -0.5, Var(w) = 0.5 -> eta = 1
    # risk = mean(L) + eta * mean(w) - eta = 0.5 + 1 - 1
    assert dev_risk(None, [2.0, 0.0], None, weights=[0.5, 1.5]) == pytest.approx(0.5)
    # w = (1, 2, 3), l = 1: L = w, eta = -1, risk = 2 - 2 + 1 = 1 (the true constant loss)
    assert dev_risk(None, [1.0, 1.0, 1.0], None, weights=[1.0, 2.0, 3.0]) == pytest.approx(1.0)


def test_dev_risk_from_features():
    rng = np.random.default_rng(0)
    fs, ft = rng.normal(size=(60, 2)), rng.normal(size=(80, 2)) + 0.5
    loss = rng.uniform(size=60)
    r = dev_risk(fs, loss, ft, seed=0)
    assert math.isfinite(r)
    assert r == dev_risk(fs, loss, ft, seed=0)
    with pytest.raises(ConfigError, match="rows"):
        dev_risk(fs[:10], loss, ft)


def test_snd_score_by_hand():
    # rows (1,0), (1,0), (0,1); temperature 1: cosine similarities off the diagonal
    # row 1: (1, 0) -> q = (e, 1)/(e + 1); row 2 the same; row 3: (0, 0) -> (1/2, 1/2)
    q = math.e / (math.e + 1)
    h1 = -(q * math.log(q) + (1 - q) * math.log(1 - q))
    got = snd_score([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], temperature=1.0)
    assert got == pytest.approx((2 * h1 + math.log(2)) / 3)
