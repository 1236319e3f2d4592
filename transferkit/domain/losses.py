"""Loss terms for deep unsupervised domain adaptation (PyTorch).

Every function here is pure math over feature batches: ``f_s`` of shape ``(n_s, d)`` from the
labelled source domain and ``f_t`` of shape ``(n_t, d)`` from the unlabelled target domain.
A strategy adds these terms to the task loss; none of them owns a training loop.

* :func:`grad_reverse`, :func:`dann_lambda`, :class:`DomainDiscriminator`,
  :func:`domain_adversarial_loss`, :func:`domain_accuracy` - DANN (Ganin & Lempitsky, ICML 2015;
  Ganin et al., JMLR 2016);
* :func:`gaussian_kernels`, :func:`mk_mmd` - multi-kernel MMD of DAN (Long et al., ICML 2015);
* :func:`coral_loss` - Deep CORAL (Sun & Saenko, ECCV-W 2016);
* :func:`entropy`, :func:`cdan_features`, :func:`entropy_weights` - CDAN / CDAN+E
  (Long et al., NeurIPS 2018).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = [
    "DAN_KERNEL_MULTS",
    "DomainDiscriminator",
    "GradientReversal",
    "cdan_features",
    "coral_loss",
    "dann_lambda",
    "domain_accuracy",
    "domain_adversarial_loss",
    "entropy",
    "entropy_weights",
    "gaussian_kernels",
    "grad_reverse",
    "mk_mmd",
]

#: Bandwidth multiples of DAN as used by TLlib's examples: ``alpha = 2**k, k = -3..1``.
DAN_KERNEL_MULTS: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0)


# --------------------------------------------------------------------------------------------
# shape checks
# --------------------------------------------------------------------------------------------


def _check_pair(f_s: Tensor, f_t: Tensor, min_rows: int = 1) -> None:
    if f_s.dim() != 2 or f_t.dim() != 2:
        raise ConfigError(
            f"source and target features must be 2-D (rows, dim); got shapes "
            f"{tuple(f_s.shape)} and {tuple(f_t.shape)}"
        )
    if f_s.shape[1] != f_t.shape[1]:
        raise ConfigError(
            f"source and target feature dims differ: {f_s.shape[1]} vs {f_t.shape[1]}"
        )
    if f_s.shape[0] < min_rows or f_t.shape[0] < min_rows:
        raise ConfigError(
            f"need at least {min_rows} row(s) per domain; got {f_s.shape[0]} source and "
            f"{f_t.shape[0]} target"
        )


def _check_probs(probs: Tensor, name: str = "probs") -> None:
    if probs.dim() != 2:
        raise ConfigError(f"{name} must be 2-D (rows, classes); got shape {tuple(probs.shape)}")


# --------------------------------------------------------------------------------------------
# DANN
# --------------------------------------------------------------------------------------------


class GradientReversal(torch.autograd.Function):
    """Gradient reversal layer (Ganin & Lempitsky 2015, eq. 9-10).

    Forward: ``R(x) = x``.  Backward: ``dR/dx = -lambd * I``, so the gradient that flows back
    into the feature extractor is the discriminator's gradient times ``-lambd``.
    """

    @staticmethod
    def forward(ctx, x: Tensor, lambd: float) -> Tensor:  # type: ignore[override]
        ctx.lambd = float(lambd)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # type: ignore[override]
        return grad_output.neg() * ctx.lambd, None


def grad_reverse(x: Tensor, lambd: float = 1.0) -> Tensor:
    """Identity in the forward pass; multiplies the gradient by ``-lambd`` in the backward pass."""
    return GradientReversal.apply(x, float(lambd))


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """Adaptation factor schedule of Ganin & Lempitsky (2015), section 5.2.

    ``lambda_p = 2 / (1 + exp(-gamma * p)) - 1`` where ``p`` is training progress in ``[0, 1]``
    (``step / total_steps``).  ``lambda_0 = 0`` and ``lambda_p -> 1`` as ``p`` grows
    (``0.99991`` at ``p = 1`` with ``gamma = 10``), so the discriminator's noisy early signal is
    suppressed.  ``progress`` outside ``[0, 1]`` (a last step counted twice, say) is clamped.
    """
    p = float(progress)
    if not math.isfinite(p):
        raise ConfigError(f"dann_lambda progress must be a finite number; got {progress!r}")
    if not math.isfinite(gamma) or gamma <= 0:
        raise ConfigError(f"dann_lambda gamma must be a positive number; got {gamma!r}")
    p = min(max(p, 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


class DomainDiscriminator(nn.Module):
    """Binary domain classifier used by DANN and CDAN (TLlib ``DomainDiscriminator`` layout).

    ``Linear(in_dim, hidden) - ReLU - Dropout(p) - Linear(hidden, hidden) - ReLU - Dropout(p) -
    Linear(hidden, 1)``.  With ``batch_norm=True`` each hidden block is
    ``Linear - BatchNorm1d - ReLU`` without dropout (TLlib's other variant).

    ``forward(f)`` takes ``(N, in_dim)`` and returns **logits** of shape ``(N,)``: a positive
    logit means "source" (label 1), negative means "target" (label 0).
    """

    def __init__(self, in_dim: int, hidden: int = 256, *, dropout: float = 0.5,
                 batch_norm: bool = False):
        super().__init__()
        if int(in_dim) < 1 or int(hidden) < 1:
            raise ConfigError(
                f"DomainDiscriminator needs in_dim >= 1 and hidden >= 1; got {in_dim}, {hidden}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"DomainDiscriminator dropout must be in [0, 1); got {dropout}")
        self.in_dim = int(in_dim)
        self.hidden = int(hidden)

        def block(i: int, o: int) -> list[nn.Module]:
            if batch_norm:
                return [nn.Linear(i, o), nn.BatchNorm1d(o), nn.ReLU()]
            return [nn.Linear(i, o), nn.ReLU(), nn.Dropout(dropout)]

        self.net = nn.Sequential(
            *block(self.in_dim, self.hidden),
            *block(self.hidden, self.hidden),
            nn.Linear(self.hidden, 1),
        )

    def forward(self, f: Tensor) -> Tensor:
        if f.dim() != 2 or f.shape[1] != self.in_dim:
            raise ConfigError(
                f"DomainDiscriminator expects features of shape (N, {self.in_dim}); "
                f"got {tuple(f.shape)}"
            )
        return self.net(f).squeeze(-1)


def _weighted_mean(values: Tensor, weight: Tensor | None) -> Tensor:
    if weight is None:
        return values.mean()
    weight = weight.reshape(-1).to(values)
    if weight.shape[0] != values.shape[0]:
        raise ConfigError(
            f"got {weight.shape[0]} weights for {values.shape[0]} rows"
        )
    return (weight * values).sum() / weight.sum().clamp_min(1e-12)


def domain_adversarial_loss(
    disc: nn.Module,
    f_s: Tensor,
    f_t: Tensor,
    lambd: float = 1.0,
    *,
    weight_s: Tensor | None = None,
    weight_t: Tensor | None = None,
) -> Tensor:
    """DANN domain loss through a gradient reversal layer (Ganin et al. 2016, eq. 18).

    With ``z = disc(grad_reverse([f_s; f_t], lambd))`` (one forward over the joint batch, so a
    BatchNorm discriminator sees both domains), source label 1 and target label 0::

        L = 1/2 * ( mean_i BCE(z_i^s, 1) + mean_j BCE(z_j^t, 0) )

    Each domain weighs one half whatever the batch sizes.  Minimising ``L`` trains the
    discriminator; the reversed gradient trains the feature extractor to *maximise* it.
    Optional per-row ``weight_s`` / ``weight_t`` turn each mean into ``sum(w*l) / sum(w)``
    (CDAN+E, see :func:`entropy_weights`).  Returns a scalar tensor.
    """
    _check_pair(f_s, f_t)
    n_s = f_s.shape[0]
    logits = disc(grad_reverse(torch.cat([f_s, f_t], dim=0), lambd)).reshape(-1)
    z_s, z_t = logits[:n_s], logits[n_s:]
    l_s = F.binary_cross_entropy_with_logits(z_s, torch.ones_like(z_s), reduction="none")
    l_t = F.binary_cross_entropy_with_logits(z_t, torch.zeros_like(z_t), reduction="none")
    return 0.5 * (_weighted_mean(l_s, weight_s) + _weighted_mean(l_t, weight_t))


@torch.no_grad()
def domain_accuracy(disc: nn.Module, f_s: Tensor, f_t: Tensor) -> float:
    """Balanced accuracy of the discriminator: ``1/2 * (acc on source + acc on target)``.

    A source row counts as correct when its logit is ``> 0``, a target row when it is ``<= 0``.
    The discriminator is run in eval mode (no dropout) and its mode is restored afterwards.
    ``0.5`` means the domains are indistinguishable to it.
    """
    _check_pair(f_s, f_t)
    was_training = disc.training
    disc.eval()
    try:
        z_s = disc(f_s).reshape(-1)
        z_t = disc(f_t).reshape(-1)
    finally:
        disc.train(was_training)
    acc_s = (z_s > 0).float().mean().item()
    acc_t = (z_t <= 0).float().mean().item()
    return 0.5 * (acc_s + acc_t)


# --------------------------------------------------------------------------------------------
# MK-MMD (DAN)
# --------------------------------------------------------------------------------------------


def gaussian_kernels(x: Tensor, y: Tensor, bandwidths: Sequence[float] | Tensor) -> Tensor:
    """Gaussian kernel matrices for several bandwidths, stacked: shape ``(K, n_x, n_y)``.

    ``out[k, i, j] = exp(-||x_i - y_j||^2 / (2 * s_k))`` where ``s_k = bandwidths[k]`` is the
    *squared* bandwidth ``sigma_k^2`` (the quantity TLlib's ``GaussianKernel`` calls
    ``sigma_square``).
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ConfigError(
            f"gaussian_kernels needs 2-D inputs of equal dim; got {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )
    s = torch.as_tensor(bandwidths, dtype=x.dtype, device=x.device).reshape(-1)
    if s.numel() == 0 or bool((s <= 0).any()):
        raise ConfigError(
            "gaussian_kernels bandwidths must be a non-empty list of positive numbers"
        )
    d2 = torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist").pow(2)
    return torch.exp(-d2.unsqueeze(0) / (2.0 * s.view(-1, 1, 1)))


def _sq_dist_rows(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).pow(2).sum(dim=1)


def mk_mmd(
    f_s: Tensor,
    f_t: Tensor,
    kernel_mults: Sequence[float] = DAN_KERNEL_MULTS,
    linear: bool = False,
    *,
    base_bandwidth: float | None = None,
) -> Tensor:
    """Multi-kernel maximum mean discrepancy ``MMD^2`` of DAN (Long et al., ICML 2015).

    Kernel: ``k(a, b) = 1/K * sum_k exp(-||a - b||^2 / (2 * m_k * s0))`` - an equal-weight convex
    combination (DAN's ``beta_u = 1/K``) of ``K = len(kernel_mults)`` Gaussian kernels whose
    squared bandwidths are multiples ``m_k`` of a base ``s0``.  By default ``s0`` is the mean
    squared distance over all ordered pairs (diagonal included) of the joint batch
    ``z = [f_s; f_t]`` (``N = n_s + n_t`` rows)::

        s0 = 1/N^2 * sum_{i,j} ||z_i - z_j||^2 = 2 * ( 1/N sum_i ||z_i||^2 - ||z_bar||^2 )

    computed without gradient, as TLlib's ``GaussianKernel(track_running_stats=False)``.  (TLlib
    *sums* its kernels, which is ``K`` times this value.)

    * ``linear=False`` (default): the biased V-statistic (Gretton et al. 2012, eq. 5)::

          MMD^2_b = 1/n_s^2 sum_{i,i'} k(s_i, s_i') + 1/n_t^2 sum_{j,j'} k(t_j, t_j')
                    - 2/(n_s n_t) sum_{i,j} k(s_i, t_j)

      ``>= 0``, zero for identical batches, and defined for unequal batch sizes.
    * ``linear=True``: DAN's linear-time unbiased estimate (eq. 5 of DAN; Gretton et al. 2012,
      lemma 14), requiring ``n_s == n_t = n >= 2``; with ``q = floor(n/2)`` quads
      ``(s_{2i-1}, s_{2i}, t_{2i-1}, t_{2i})``::

          MMD^2_l = 1/q * sum_i [ k(s_{2i-1}, s_{2i}) + k(t_{2i-1}, t_{2i})
                                  - k(s_{2i-1}, t_{2i}) - k(s_{2i}, t_{2i-1}) ]

      (``1/q = 2/n`` for even ``n``).  It can be negative.

    Returns a scalar tensor differentiable w.r.t. both feature batches.
    """
    _check_pair(f_s, f_t)
    mults = torch.as_tensor(list(kernel_mults), dtype=f_s.dtype, device=f_s.device).reshape(-1)
    if mults.numel() == 0 or bool((mults <= 0).any()):
        raise ConfigError("mk_mmd kernel_mults must be a non-empty list of positive numbers")
    z = torch.cat([f_s, f_t], dim=0)
    if base_bandwidth is None:
        zd = z.detach()
        s0 = 2.0 * (zd.pow(2).sum(dim=1).mean() - zd.mean(dim=0).pow(2).sum())
        s0 = s0.clamp_min(1e-12)
    else:
        if not base_bandwidth > 0:
            raise ConfigError(f"mk_mmd base_bandwidth must be positive; got {base_bandwidth}")
        s0 = torch.as_tensor(float(base_bandwidth), dtype=f_s.dtype, device=f_s.device)
    bw = mults * s0

    if not linear:
        n_s = f_s.shape[0]
        k = gaussian_kernels(z, z, bw).mean(dim=0)
        k_ss = k[:n_s, :n_s].mean()
        k_tt = k[n_s:, n_s:].mean()
        k_st = k[:n_s, n_s:].mean()
        return k_ss + k_tt - 2.0 * k_st

    if f_s.shape[0] != f_t.shape[0] or f_s.shape[0] < 2:
        raise ConfigError(
            f"linear-time MMD needs equal batch sizes of at least 2; got {f_s.shape[0]} source "
            f"and {f_t.shape[0]} target"
        )
    q = f_s.shape[0] // 2
    s1, s2 = f_s[0:2 * q:2], f_s[1:2 * q:2]
    t1, t2 = f_t[0:2 * q:2], f_t[1:2 * q:2]

    def kern(a: Tensor, b: Tensor) -> Tensor:
        d2 = _sq_dist_rows(a, b)
        return torch.exp(-d2.unsqueeze(0) / (2.0 * bw.view(-1, 1))).mean(dim=0)

    h = kern(s1, s2) + kern(t1, t2) - kern(s1, t2) - kern(s2, t1)
    return h.mean()


# --------------------------------------------------------------------------------------------
# Deep CORAL
# --------------------------------------------------------------------------------------------


def _cov(f: Tensor) -> Tensor:
    fc = f - f.mean(dim=0, keepdim=True)
    return fc.T @ fc / (f.shape[0] - 1)


def coral_loss(f_s: Tensor, f_t: Tensor) -> Tensor:
    """Deep CORAL loss (Sun & Saenko, ECCV 2016 workshops, eq. 1-3).

    ``L = ||C_s - C_t||_F^2 / (4 d^2)`` with the unbiased covariances
    ``C = (F - 1 mean(F))^T (F - 1 mean(F)) / (n - 1)`` of each ``(n, d)`` batch.  Needs at least
    2 rows per domain.  Returns a scalar tensor.
    """
    _check_pair(f_s, f_t, min_rows=2)
    d = f_s.shape[1]
    diff = _cov(f_s) - _cov(f_t)
    return diff.pow(2).sum() / (4.0 * d * d)


# --------------------------------------------------------------------------------------------
# CDAN / CDAN+E
# --------------------------------------------------------------------------------------------


def entropy(logits: Tensor) -> Tensor:
    """Per-row Shannon entropy (nats) of ``softmax(logits)``: ``H_i = -sum_c p_ic log p_ic``.

    Input ``(N, C)`` logits, output ``(N,)``; computed from ``log_softmax`` so it is stable for
    large logits.  Differentiable (entropy minimisation uses it as a loss).
    """
    _check_probs(logits, "logits")
    logp = F.log_softmax(logits, dim=1)
    return -(logp.exp() * logp).sum(dim=1)


def cdan_features(f: Tensor, probs: Tensor, *, detach: bool = True) -> Tensor:
    """CDAN multilinear map ``T(f, g) = f (x) g`` flattened (Long et al., NeurIPS 2018, eq. 4).

    ``f`` is ``(N, d)`` features, ``probs`` is ``(N, k)`` class probabilities ``g``; the result is
    ``(N, d*k)`` with ``out[n, i*k + c] = f[n, i] * g[n, c]``.  As in the authors' code the
    probabilities are detached (``detach=True``), so the conditioning does not push gradients
    into the classifier.  (The randomized map for large ``d*k`` is not provided.)
    """
    if f.dim() != 2:
        raise ConfigError(f"cdan_features needs 2-D features; got shape {tuple(f.shape)}")
    _check_probs(probs)
    if f.shape[0] != probs.shape[0]:
        raise ConfigError(
            f"cdan_features got {f.shape[0]} feature rows but {probs.shape[0]} probability rows"
        )
    g = probs.detach() if detach else probs
    return torch.einsum("ni,nc->nic", f, g.to(f.dtype)).reshape(f.shape[0], -1)


def entropy_weights(probs: Tensor, *, normalize: bool = True) -> Tensor:
    """CDAN+E entropy conditioning weights (Long et al., NeurIPS 2018, eq. 8).

    ``w_i = 1 + exp(-H(g_i))`` with ``H(g) = -sum_c g_c log g_c`` (nats) computed from the
    *probabilities* ``probs`` (``(N, k)``), so confident rows weigh more.  With ``normalize=True``
    the weights are divided by their sum, giving ``sum_i w_i = 1`` over the rows passed - call it
    once per domain, matching the paper's ``sum_i w_i l_i / sum_i w_i`` per domain (eq. 8).
    :func:`domain_adversarial_loss` accepts the weights normalised or not.  The result is
    detached: it weights the loss and carries no gradient.
    """
    _check_probs(probs)
    p = probs.detach()
    h = -torch.special.xlogy(p, p).sum(dim=1)
    w = 1.0 + torch.exp(-h)
    if normalize:
        w = w / w.sum()
    return w
