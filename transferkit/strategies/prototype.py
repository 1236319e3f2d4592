"""``prototype``: nearest class prototype on frozen, cached features (SimpleShot's CL2N).

Centring and L2 normalisation (Wang et al. 2019, "SimpleShot"): subtract the mean ``m`` of
the support (training) features, L2-normalise each, average them per class into prototypes
``p_c``, and give a query the class of the prototype nearest by cosine similarity.

The rule folds into the ordinary linear head: the cosine ``(x - m)·p_c / (|x - m| |p_c|)``
ranks the classes as ``w_c·x + b_c`` does with ``w_c = s p_c / |p_c|`` and
``b_c = -w_c·m`` (the query's own norm is one positive factor shared by every class), so the
bundle holds a plain dense layer and predictions equal the cosine rule's.  ``s`` (the logit
scale) is ``scale`` divided by the mean norm of the centred support features, so that logits
are about ``scale`` times the cosines.  Euclidean distance to the prototypes is not offered:
the query's norm then weighs the classes differently and no dense layer reproduces it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .base import Options, Solution, Stage, Strategy, register_strategy


def cl2n_prototypes(x: np.ndarray, y: np.ndarray, n_classes: int,
                    centre: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(centre (d,), prototypes (n_classes, d))``: the centre (the support mean unless
    given), and per class the mean of the centred, L2-normalised support features (zeros
    for a class without support)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    m = x.mean(0) if centre is None else np.asarray(centre, dtype=np.float64)
    z = x - m
    z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    protos = np.zeros((n_classes, x.shape[1]))
    for c in range(n_classes):
        if (y == c).any():
            protos[c] = z[y == c].mean(0)
    return m, protos


def prototype_head(x: np.ndarray, y: np.ndarray, n_classes: int, scale: float = 10.0,
                   centre: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The CL2N cosine nearest-prototype rule as one dense layer ``(weight (K, d), bias
    (K,))``; a class without support gets a bias of -1e4."""
    x = np.asarray(x, dtype=np.float64)
    m, protos = cl2n_prototypes(x, y, n_classes, centre)
    norms = np.linalg.norm(protos, axis=1, keepdims=True)
    present = norms[:, 0] > 0
    unit = np.where(present[:, None], protos / np.maximum(norms, 1e-12), 0.0)
    radius = np.linalg.norm(x - m, axis=1).mean()
    w = unit * (scale / max(radius, 1e-12))
    b = np.where(present, -(w @ m), -1e4)
    return w, b


CENTRES = ("support", "all")


@dataclass
class PrototypeOptions(Options):
    #: logits are about ``scale`` times the cosine similarities (probabilities' sharpness)
    scale: float = 10.0
    #: what is subtracted before normalising: the mean of the labelled support features
    #: ("support"), or of the support and the unlabelled features together ("all": the rest
    #: of the training split under --shots, the whole pool in episodes; labels never read)
    centre: str = "support"


@register_strategy
class Prototype(Strategy):
    name = "prototype"
    description = ("nearest class prototype on frozen features, centred and L2-normalised "
                   "(SimpleShot CL2N), folded into a linear head")
    options_cls = PrototypeOptions
    default_head = "linear"

    def validate(self) -> None:
        self.require_positive("scale")
        if self.options.centre not in CENTRES:
            raise ConfigError(f"prototype: centre must be one of {', '.join(CENTRES)}, got "
                              f"{self.options.centre!r}")

    def stages(self, model, train):
        return [Stage("prototypes", 0, [], frozen_backbone=True, solve=self.solve)]

    def solve(self, state) -> Solution:
        model = state.model
        if model.head.kind != "linear":
            raise ConfigError("prototype strategy needs a linear head (head kind 'linear')")
        unlabelled = None
        if self.options.centre == "all" and state.has("unlabelled"):
            unlabelled = state.features("unlabelled").double().numpy()
        w, b = self.solve_features(state.features("train").double().numpy(),
                                   state.labels("train").numpy(), len(model.classes),
                                   state.cfg.seed, unlabelled=unlabelled)
        n_u = 0 if unlabelled is None else len(unlabelled)
        info = {"metric": "cosine", "scale": self.options.scale, "unlabelled_used": n_u,
                "centring": ("mean of the training and unlabelled features" if n_u
                             else "mean of the training features"),
                "selection": "nothing to choose (one setting: cosine CL2N prototypes)"}
        return Solution([("cl2n", lambda m: m.head.set_linear(w, b))], info)

    def solve_features(self, x, y, n_classes: int, seed: int, unlabelled=None):
        centre = None
        if self.options.centre == "all" and unlabelled is not None and len(unlabelled):
            centre = np.concatenate([np.asarray(x, np.float64),
                                     np.asarray(unlabelled, np.float64)]).mean(0)
        return prototype_head(x, y, n_classes, self.options.scale, centre)
