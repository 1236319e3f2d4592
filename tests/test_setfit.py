"""The setfit strategy: pair sampling, its losses, the contrastive stage (pair loss alone),
the head, self-training on unlabelled sentences, refusals."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
import torch

import transferkit
from transferkit.cli import main
from transferkit.errors import ConfigError
from transferkit.strategies.base import get_strategy
from transferkit.strategies.setfit import PairSampler, pair_loss

from conftest import make_text_csv


# ------------------------------------------------------------------ pairs

def test_partners_are_of_the_right_classes_and_never_the_anchor():
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 0, 2])
    s = PairSampler(y)
    rng = np.random.default_rng(0)
    anchors = np.repeat(np.arange(len(y)), 50)
    pos, neg = s.partners(anchors, rng)
    assert (y[pos] == y[anchors]).all()
    assert (pos != anchors).all()
    assert (y[neg] != y[anchors]).all()
    # every other member of the class and every other-class sample is drawn
    for i in range(len(y)):
        got_p = set(pos[anchors == i].tolist())
        assert got_p == set(np.flatnonzero(y == y[i]).tolist()) - {i}
        assert set(neg[anchors == i].tolist()) == set(np.flatnonzero(y != y[i]).tolist())


def test_a_class_of_one_pairs_with_itself():
    y = np.array([0, 1, 1, 1])
    pos, neg = PairSampler(y).partners([0, 0, 0], np.random.default_rng(1))
    assert (pos == 0).all() and (y[neg] == 1).all()


def test_partners_are_drawn_uniformly():
    y = np.array([0] * 5 + [1] * 3)
    pos, neg = PairSampler(y).partners(np.zeros(4000, int), np.random.default_rng(2))
    counts = np.bincount(pos, minlength=8)[1:5]
    assert counts.min() > 850 and counts.max() < 1150   # 1000 each expected
    counts = np.bincount(neg, minlength=8)[5:]
    assert counts.min() > 1200 and counts.max() < 1470  # 1333 each expected


def test_pair_sampling_memory_is_linear_not_quadratic():
    # SetFit lists every pair: 40,000 sentences in 2 classes are 8e8 pairs.  The sampler holds
    # index tables only: well under a few MB for 40,000 labels and a batch of partners.
    y = np.repeat([0, 1], 20000)
    tracemalloc.start()
    s = PairSampler(y)
    s.partners(np.arange(64), np.random.default_rng(0))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 5e6, peak


def test_one_class_refused():
    with pytest.raises(ConfigError, match="one class"):
        PairSampler(np.zeros(5, int))


def test_cosine_pair_loss_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    p = torch.tensor([[1.0, 1.0], [0.0, 1.0]])     # cosines 0.7071, 1
    n = torch.tensor([[0.0, 1.0], [3.0, 0.0]])     # cosines 0, 0
    y = torch.tensor([0, 1])
    got = pair_loss("cosine", a, p, n, y, 1 - y, 0.25)
    want = ((1 - 2 ** -0.5) ** 2 + 0 + 0 + 0) / 4
    assert abs(float(got) - want) < 1e-6


def test_triplet_pair_loss_is_zero_when_classes_are_far_apart():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 1])
    far = pair_loss("triplet", a, a.clone(), a.flip(0), y, 1 - y, 0.25)
    assert float(far) == 0.0
    near = pair_loss("triplet", a, a.flip(0), a.clone(), y, 1 - y, 0.25)  # swapped: bad
    assert float(near) > 1.0


# ------------------------------------------------------------------ the strategy

@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    return make_text_csv(tmp_path_factory.mktemp("setfit") / "t.csv", n_per_class=20)


def _fit(texts, tmp_path, **kw):
    args = dict(backbone="tiny-bert", strategy="setfit", out=tmp_path / "run", epochs=2,
                batch_size=8, seed=0, quiet=True, shots=4)
    args.update(kw)
    return transferkit.fit(texts, **args)


def test_setfit_tunes_the_encoder_then_fits_the_head(texts, tmp_path):
    tm = _fit(texts, tmp_path, options={"iterations": 3})
    hist = [json.loads(json.dumps(h)) for h in tm.metrics.get("history", [])] or None
    m = tm.metrics
    assert m["best_stage"] == "head"
    assert m["closed_form"]["loss"] == "cosine"
    assert "cross-validation" in m["closed_form"]["selection"]
    assert m["shots"]["unlabelled_used"] is False
    rows = (tm.run_dir / "history.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["contrastive"] * 3 + ["head"]
    assert hist is None or len(hist) == 4
    # the bundle reproduces the logits of the tuned encoder and fitted head
    loaded = transferkit.load(tm.run_dir / "bundle")
    s = ["good great fine", "bad awful poor"]
    assert np.array_equal(tm.logits(s), loaded.logits(s))


def test_contrastive_stage_has_no_cross_entropy(texts, tmp_path, monkeypatch):
    """With the pair loss replaced by zero (and no weight decay), nothing moves: the
    labelled batch's cross-entropy through the untrained head is not part of the loss."""
    from transferkit.strategies import setfit

    monkeypatch.setattr(setfit.PairLoss, "on_batch",
                        lambda self, state, batch: {"pairs": batch.embed.sum() * 0.0})
    from transferkit.backbones import build_backbone

    tm = _fit(texts, tmp_path, weight_decay=0.0, options={"iterations": 2})
    ref = build_backbone("tiny-bert").state_dict()
    got = tm.model.backbone.state_dict()
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_pair_loss_moves_the_encoder(texts, tmp_path):
    from transferkit.backbones import build_backbone

    tm = _fit(texts, tmp_path, weight_decay=0.0, options={"iterations": 2, "lr": 1e-3})
    ref = build_backbone("tiny-bert").state_dict()
    got = tm.model.backbone.state_dict()
    assert any(not torch.equal(ref[k], got[k]) for k in ref)


def test_max_pairs_ends_the_contrastive_stage(texts, tmp_path):
    # 8 shots: 16 pairs an iteration; 20 pairs are reached in the second iteration of 5
    tm = _fit(texts, tmp_path, options={"iterations": 5, "max_pairs": 20})
    rows = (tm.run_dir / "history.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["contrastive"] * 2 + ["head"]


def test_self_training_uses_unlabelled_sentences(texts, tmp_path):
    tm = _fit(texts, tmp_path, options={"iterations": 1, "pseudo": 10, "pseudo_per_class": 3})
    cf = tm.metrics["closed_form"]
    assert cf["unlabelled_used"] == 10
    assert sum(cf["pseudo_labelled"].values()) <= 6
    assert all(0 <= v <= 3 for v in cf["pseudo_labelled"].values())
    assert "self-trained" in cf["selection"]
    assert tm.metrics["shots"]["unlabelled_used"] is True


def test_setfit_head_is_logistic_regression_on_raw_embeddings(texts, tmp_path):
    tm = _fit(texts, tmp_path, options={"iterations": 1, "classifier": "setfit",
                                        "pseudo": 10, "pseudo_per_class": 2})
    cf = tm.metrics["closed_form"]
    assert cf["C"] == 1.0 and "SetFit's head" in cf["selection"]
    assert cf["classifier"] == "setfit"
    assert sum(cf["pseudo_labelled"].values()) <= 4


def test_self_training_with_validation_data_is_chosen_on_it(texts, tmp_path):
    tm = _fit(texts, tmp_path, val=str(texts), options={"iterations": 1, "pseudo": 10})
    cf = tm.metrics["closed_form"]
    assert cf["chosen"] in ("shots", "self-trained")
    assert "grid" in cf and "val_accuracy" in cf["grid"][0]


def test_transfer_classifier_with_setfit():
    from transferkit.api import TransferClassifier

    x = [f"good nice great {i}" for i in range(6)] + [f"bad awful poor {i}" for i in range(6)]
    y = ["pos"] * 6 + ["neg"] * 6
    clf = TransferClassifier(backbone="tiny-bert", strategy="setfit", epochs=2, batch_size=4,
                             options={"lr": 1e-3})
    clf.fit(x, y)
    assert set(clf.predict(x)) <= {"pos", "neg"}
    assert clf.predict_proba(x).shape == (12, 2)
    assert 0.0 <= clf.score(x, y) <= 1.0


@pytest.mark.parametrize("opts,msg", [
    ({"loss": "hinge"}, "loss must be one of cosine, triplet"),
    ({"pseudo": -1}, "pseudo must be >= 0"),
    ({"iterations": 0}, "iterations must be > 0"),
    ({"max_pairs": 0}, "max_pairs must be > 0"),
    ({"lr": "fast"}, "lr"),
    ({"classifier": "svm"}, "classifier must be one of linear, setfit"),
])
def test_bad_options_refused(opts, msg):
    with pytest.raises(ConfigError, match=msg):
        get_strategy("setfit", **opts)


@pytest.mark.parametrize("backbone", ["tiny-cnn", "tiny-wordvec"])
def test_non_sentence_encoders_refused(backbone):
    from transferkit.backbones import build_backbone

    with pytest.raises(ConfigError, match="setfit.*sentence encoder"):
        get_strategy("setfit").check_backbone(build_backbone(backbone))


def test_word_vectors_refused_on_the_command_line(texts, tmp_path, capsys):
    code = main(["fit", str(texts), "--backbone", "tiny-wordvec", "--strategy", "setfit",
                 "--out", str(tmp_path / "r"), "-q"])
    err = capsys.readouterr().err
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "sentence encoder" in lines[0] and "tiny-wordvec" in lines[0]
    assert "Traceback" not in err
