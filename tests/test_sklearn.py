"""TransferClassifier is a scikit-learn estimator: Pipeline, cross_val_score, clone."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from transferkit import TransferClassifier

from conftest import make_text_rows


@pytest.fixture(scope="module")
def texts():
    rows = make_text_rows(n_per_class=15, seed=1)
    X = [r[0] for r in rows]
    y = np.array([1 if r[1] == "pos" else 0 for r in rows])
    return X, y


def test_fit_predict_score_texts(texts, tmp_path):
    X, y = texts
    clf = TransferClassifier(backbone="tiny-bert", strategy="linear", cache_dir=str(tmp_path))
    assert clf.fit(X, y) is clf
    pred = clf.predict(X)
    assert pred.dtype == y.dtype and set(pred) <= {0, 1}
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 2)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    assert list(clf.classes_) == [0, 1]
    assert 0.0 <= clf.score(X, y) <= 1.0


def test_pipeline_and_cross_val_score(texts, tmp_path):
    X, y = texts
    pipe = Pipeline([("lower", FunctionTransformer(lambda xs: [s.lower() for s in xs])),
                     ("clf", TransferClassifier(backbone="tiny-bert", strategy="linear",
                                                cache_dir=str(tmp_path)))])
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,)
    assert np.all((scores >= 0) & (scores <= 1))


def test_clone_keeps_params():
    c = TransferClassifier(backbone="tiny-cnn", strategy="finetune", epochs=3, options={"layers": 1})
    c2 = clone(c)
    assert c2.get_params() == c.get_params()


def test_image_arrays(tmp_path):
    rng = np.random.default_rng(0)
    X = [np.clip(rng.integers(0, 40, (20, 20, 3)) + (180 if i % 2 else 0), 0, 255).astype(np.uint8)
         for i in range(24)]
    y = np.array(["dark" if i % 2 == 0 else "bright" for i in range(24)])
    clf = TransferClassifier(backbone="tiny-cnn", strategy="linear", cache_dir=str(tmp_path))
    clf.fit(X, y)
    assert set(clf.predict(X)) <= {"dark", "bright"}
    assert clf.score(X, y) >= 0.9
