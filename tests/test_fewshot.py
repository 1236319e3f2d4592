"""Few-shot transfer: the CL2N prototype math, K-shot sampling with --shots, episodes."""

from __future__ import annotations

import numpy as np
import pytest

from transferkit.strategies.prototype import cl2n_prototypes, prototype_head


# ------------------------------------------------------------------ CL2N prototypes

def test_cl2n_prototypes_by_hand():
    # mean (10, 10); centred (3,4) (5,0) (-3,-4) (-5,0); unit (.6,.8) (1,0) (-.6,-.8) (-1,0)
    x = np.array([[13, 14], [15, 10], [7, 6], [5, 10]], float)
    m, p = cl2n_prototypes(x, np.array([0, 0, 1, 1]), 2)
    assert np.allclose(m, [10, 10])
    assert np.allclose(p, [[0.8, 0.4], [-0.8, -0.4]])


def test_cl2n_prototypes_uneven_by_hand():
    # mean (1, 1.5); centred (0,-1.5) (2,-1.5) (-1,.5) (-1,2.5), norms 1.5 2.5 √1.25 √7.25
    x = np.array([[1, 0], [3, 0], [0, 2], [0, 4]], float)
    _, p = cl2n_prototypes(x, np.array([0, 0, 1, 1]), 3)
    a, b = 1 / np.sqrt(1.25), 1 / np.sqrt(7.25)
    assert np.allclose(p[0], [0.4, -0.8])
    assert np.allclose(p[1], [(-a - b) / 2, (0.5 * a + 2.5 * b) / 2])
    assert np.allclose(p[2], 0)   # no support: no prototype


def test_prototype_head_folds_centring_into_bias():
    x = np.array([[13, 14], [15, 10], [7, 6], [5, 10]], float)
    w, b = prototype_head(x, np.array([0, 0, 1, 1]), 3, scale=5.0)
    u = np.array([0.8, 0.4]) / np.sqrt(0.8)     # unit prototype of class 0
    # radius = mean |x - m| = 5, so w = scale / 5 * unit
    assert np.allclose(w[0], u) and np.allclose(w[1], -u)
    assert np.allclose(b[:2], [-u @ [10, 10], u @ [10, 10]])
    assert np.allclose(w[2], 0) and b[2] == -1e4
    # the query (13, 10) is centred to (3, 0): cosine 0.894 with class 0
    assert (np.array([13, 10]) @ w.T + b).argmax() == 0


def test_prototype_head_predicts_as_the_cosine_rule():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 8)) + 3
    y = np.repeat(np.arange(3), 10)
    q = rng.normal(size=(200, 8)) + 3
    m, p = cl2n_prototypes(x, y, 3)
    zq = (q - m) / np.linalg.norm(q - m, axis=1, keepdims=True)
    cos = zq @ (p / np.linalg.norm(p, axis=1, keepdims=True)).T
    w, b = prototype_head(x, y, 3)
    assert ((q @ w.T + b).argmax(1) == cos.argmax(1)).all()
    # logits are scale (10) times the cosine up to the query's norm over the mean radius
    radius = np.linalg.norm(x - m, axis=1).mean()
    ratio = np.linalg.norm(q - m, axis=1, keepdims=True) / radius
    assert np.allclose(q @ w.T + b, 10 * cos * ratio)
