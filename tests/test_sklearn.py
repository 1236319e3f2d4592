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


# ----------------------------------------------------------------------------- the contract

def test_unfitted_estimator_raises_not_fitted(texts):
    from sklearn.exceptions import NotFittedError

    X, y = texts
    clf = TransferClassifier(backbone="tiny-bert", strategy="linear")
    for call in (lambda: clf.predict(X), lambda: clf.predict_proba(X), lambda: clf.score(X, y)):
        with pytest.raises(NotFittedError):
            call()


def _temp_root(tmp_path, monkeypatch):
    import tempfile

    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def test_no_run_folder_is_left_behind(texts, tmp_path, monkeypatch):
    import gc

    root = _temp_root(tmp_path, monkeypatch)
    X, y = texts
    clf = TransferClassifier(backbone="tiny-bert", strategy="linear", cache_dir=str(tmp_path / "c"))
    clf.fit(X, y)
    first = list(root.iterdir())
    assert len(first) == 1 and (first[0] / "bundle").is_dir()  # there while the estimator lives
    clf.fit(X, y)  # fitting again releases the first folder
    assert not first[0].exists() and len(list(root.iterdir())) == 1
    assert clf.predict(X[:2]).shape == (2,)
    del clf
    gc.collect()
    assert list(root.iterdir()) == []


def test_failed_fit_leaves_no_folder(texts, tmp_path, monkeypatch):
    from transferkit.errors import ConfigError

    root = _temp_root(tmp_path, monkeypatch)
    X, y = texts
    bad = TransferClassifier(backbone="tiny-bert", strategy="linear", options={"C": -1})
    with pytest.raises(ConfigError):
        bad.fit(X, y)
    assert list(root.iterdir()) == []
    assert not hasattr(bad, "classes_") and not hasattr(bad, "model_")


def test_out_keeps_the_run_folder(texts, tmp_path):
    import gc

    X, y = texts
    out = tmp_path / "kept"
    clf = TransferClassifier(backbone="tiny-bert", strategy="linear", out=str(out),
                             cache_dir=str(tmp_path / "c")).fit(X, y)
    del clf
    gc.collect()
    assert (out / "bundle" / "config.json").exists() and (out / "report.html").exists()


def test_get_set_params_and_clone_round_trip():
    from transferkit.api import CLASSIFIER_PARAMS

    values = {"backbone": "tiny-cnn", "strategy": "partial", "epochs": 7, "lr": 0.02,
              "batch_size": 5, "seed": 3, "options": {"layers": 1}, "head": "mlp",
              "image_size": 48, "val_fraction": 0.3, "cache_dir": "/tmp/c", "out": "/tmp/o",
              "quiet": False}
    assert set(values) == set(CLASSIFIER_PARAMS)
    clf = TransferClassifier()
    assert clf.set_params(**values) is clf
    assert clf.get_params() == values
    c2 = clone(clf)
    assert c2.get_params() == values and c2 is not clf
    c2.options["layers"] = 2  # a clone's table is its own
    assert clf.options == {"layers": 1}
    assert TransferClassifier(**values).get_params() == values


#: scikit-learn's estimator checks that apply to an estimator whose inputs are file paths,
#: image arrays or strings (the others feed 2-d numeric arrays; see SKIPPED)
APPLICABLE_CHECKS = ["check_estimator_cloneable", "check_estimator_tags_renamed",
                     "check_valid_tag_types", "check_estimator_repr",
                     "check_no_attributes_set_in_init", "check_estimators_unfitted",
                     "check_do_not_raise_errors_in_init_or_set_params", "check_mixin_order",
                     "check_parameters_default_constructible", "check_get_params_invariance",
                     "check_set_params"]
#: the rest of check_estimator's list, each fed numeric (n_samples, n_features) arrays from
#: make_blobs / random floats, which are not image paths, image arrays or texts; the ones
#: marked * are checked here on texts instead (test_numeric_checks_on_texts)
SKIPPED = ["check_fit_score_takes_y", "check_estimators_overwrite_params *",
           "check_dont_overwrite_parameters *", "check_estimators_fit_returns_self *",
           "check_readonly_memmap_input", "check_n_features_in_after_fitting",
           "check_positive_only_tag_during_fit", "check_estimators_dtypes",
           "check_sample_weights_*", "check_estimators_pickle *", "check_classifiers_*",
           "check_methods_sample_order_invariance *", "check_methods_subset_invariance *",
           "check_fit2d_1sample", "check_fit2d_1feature", "check_fit1d", "check_dict_unchanged",
           "check_supervised_y_2d", "check_estimators_nan_inf", "check_n_features_in"]


@pytest.mark.parametrize("check", APPLICABLE_CHECKS)
def test_sklearn_estimator_checks_that_apply(check):
    from sklearn.utils import estimator_checks

    fn = getattr(estimator_checks, check)
    fn("TransferClassifier", TransferClassifier(backbone="tiny-bert", strategy="linear"))


def test_check_estimator_knows_the_inputs_are_not_numeric():
    from sklearn.utils import get_tags

    tags = get_tags(TransferClassifier())
    assert tags.input_tags.string and not tags.input_tags.two_d_array
    assert tags.estimator_type == "classifier"


def test_numeric_checks_on_texts(texts, tmp_path):
    """The checks scikit-learn can only run on numeric arrays, run on texts."""
    import copy
    import pickle

    X, y = texts
    clf = TransferClassifier(backbone="tiny-bert", strategy="linear", options={"C": 1.0},
                             cache_dir=str(tmp_path))
    before = copy.deepcopy(clf.get_params())
    assert clf.fit(X, y) is clf                          # fit returns self
    assert clf.get_params() == before                    # and changes no parameter
    assert not [k for k in vars(clf) if not k.startswith("_") and not k.endswith("_")
                and k not in before]                     # only fitted attributes are added
    proba = clf.predict_proba(X)
    order = np.random.default_rng(0).permutation(len(X))
    np.testing.assert_allclose(clf.predict_proba([X[i] for i in order]), proba[order], atol=1e-6)
    half = len(X) // 2                                   # subsets give the same answers
    np.testing.assert_allclose(clf.predict_proba(X[:half]), proba[:half], atol=1e-6)
    copy_ = pickle.loads(pickle.dumps(clf))              # a pickled estimator predicts the same
    np.testing.assert_allclose(copy_.predict_proba(X), proba, atol=1e-6)
    assert "_cleanup" not in vars(copy_)
