"""The math of domain adaptation: loss terms (PyTorch) and shallow feature-level methods (NumPy).

Strategies and the trainer import these names; each is a small pure function or module,
documented with its paper and formula.
"""

from .features import (
    KMM_MAX_ROWS,
    TCA,
    coral_matrix,
    coral_transform,
    domain_classifier_weights,
    kmm_weights,
    proxy_a_distance,
    tca_fit,
    tradaboost_beta,
    tradaboost_target_error,
    tradaboost_update,
)
from .losses import (
    DAN_KERNEL_MULTS,
    DomainDiscriminator,
    GradientReversal,
    cdan_features,
    coral_loss,
    dann_lambda,
    domain_accuracy,
    domain_adversarial_loss,
    entropy,
    entropy_weights,
    gaussian_kernels,
    grad_reverse,
    mk_mmd,
)

__all__ = [
    "DAN_KERNEL_MULTS",
    "KMM_MAX_ROWS",
    "TCA",
    "DomainDiscriminator",
    "GradientReversal",
    "cdan_features",
    "coral_loss",
    "coral_matrix",
    "coral_transform",
    "dann_lambda",
    "domain_accuracy",
    "domain_adversarial_loss",
    "domain_classifier_weights",
    "entropy",
    "entropy_weights",
    "gaussian_kernels",
    "grad_reverse",
    "kmm_weights",
    "mk_mmd",
    "proxy_a_distance",
    "tca_fit",
    "tradaboost_beta",
    "tradaboost_target_error",
    "tradaboost_update",
]
