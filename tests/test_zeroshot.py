"""Zero-shot: class names and descriptions, ImageNet names, the math, fits with and without
data, bundles, and labels never read."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import transferkit
from transferkit.backbones.imagenet import SourceClass, imagenet_classes, matching_classes
from transferkit.cli import main
from transferkit.data.descriptions import class_texts, parse_class_names
from transferkit.errors import ConfigError, DataError
from transferkit.strategies.zeroshot import (class_embeddings, conse_map, direct_map,
                                             self_train, text_head, top_probabilities, unit)

from conftest import make_text_rows, shared_data


# ------------------------------------------------------------------ names and descriptions

def test_class_names_parsed_and_refused():
    assert parse_class_names(" ant, bee ") == ["ant", "bee"]
    with pytest.raises(ConfigError, match="'ant' is named twice"):
        parse_class_names("ant,bee,ant")
    with pytest.raises(ConfigError, match="empty"):
        parse_class_names("ant,,bee")
    with pytest.raises(ConfigError, match="at least two"):
        parse_class_names("ant")


def test_descriptions_templates_and_defaults(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"good_news": "This review is {label}.",
                                "bad": ["awful", "It was {label}."]}))
    assert class_texts(["bad", "good_news"], path) == {
        "bad": ["awful", "It was bad."], "good_news": ["This review is good news."]}
    # classes from the file alone, in its order; without a file, each class's own name
    assert list(class_texts(None, path)) == ["good_news", "bad"]
    assert class_texts(["a_b", "c"], None) == {"a_b": ["a b"], "c": ["c"]}


@pytest.mark.parametrize("content,msg", [
    ({"a": "x"}, "no description for class 'b'"),
    ({"a": "x", "b": "y", "c": "z"}, "describes 'c', which is not a class"),
    ({"a": "x", "b": []}, "class 'b': give a description"),
    (["a", "b"], "expected a JSON object"),
])
def test_descriptions_refused(tmp_path, content, msg):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(content))
    with pytest.raises(DataError, match=msg):
        class_texts(["a", "b"], path)


# ------------------------------------------------------------------ ImageNet names

def test_imagenet_names_in_head_order():
    classes = imagenet_classes()
    assert len(classes) == 1000
    assert classes[0].names[0] == "tench" and classes[309].names == ("bee",)


@pytest.mark.parametrize("name,first", [("ant", "ant"), ("ants", "ant"), ("Bees", "bee"),
                                        ("hotdog", "hotdog"), ("hot dog", "hotdog"),
                                        ("emmet", "ant")])
def test_direct_matches_by_lemma(name, first):
    m = matching_classes(name)
    assert len(m) == 1 and imagenet_classes()[m[0]].names[0] == first


def test_cat_and_dog_gather_their_breeds():
    names = lambda idx: {imagenet_classes()[i].names[0] for i in idx}  # noqa: E731
    cats = names(matching_classes("cat"))
    assert {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"} <= cats
    dogs = matching_classes("dogs")
    assert {"Chihuahua", "Afghan hound", "beagle", "toy terrier"} <= names(dogs)
    assert "hotdog" not in names(dogs) and len(dogs) > 60
    assert matching_classes("zzyzx") == []


def test_kinds_found_through_breed_glosses():
    toy = (SourceClass(("wolf",), "a wild canine"),
           SourceClass(("Spotted hound",), "a breed of hound with spots"),
           SourceClass(("Blue hound",), "a fast hound"),
           SourceClass(("pugdog",), "small breed of dog with a wrinkled face"),
           SourceClass(("hotdog", "hot dog"), "a frankfurter served hot on a bun"))
    # pugdog is a breed of dog; its lemma's head ("pugdog") names nothing further; the
    # hounds are no breed of dog here, so they stay out
    assert matching_classes("dog", toy) == [3]
    assert matching_classes("hound", toy) == [1, 2]


# ------------------------------------------------------------------ the math

def test_direct_map_scores_the_mass_of_owned_classes():
    m = direct_map([[0, 2], [1]], n_source=4)
    p = np.array([[0.1, 0.3, 0.5, 0.1]])
    assert np.allclose(p @ m.T, [[0.6, 0.3]])


def test_top_probabilities_renormalise():
    p = torch.tensor([[0.5, 0.1, 0.3, 0.1]])
    assert torch.allclose(top_probabilities(p, 2), torch.tensor([[0.625, 0, 0.375, 0]]))


def test_conse_scores_rank_as_the_cosine_of_the_convex_combination():
    rng = np.random.default_rng(0)
    src, cls = rng.normal(size=(6, 5)), rng.normal(size=(3, 5))
    p = rng.dirichlet(np.ones(6), size=20)
    f = p @ unit(src)                                  # ConSE's image embedding
    cos = unit(f) @ unit(cls).T
    scores = p @ conse_map(cls, src).T
    assert np.allclose(scores, cos * np.linalg.norm(f, axis=1, keepdims=True))
    assert (scores.argmax(1) == cos.argmax(1)).all()


def test_class_embeddings_and_head_by_hand():
    e = class_embeddings([np.array([[3.0, 0], [0, 2]]), np.array([[0, -5.0]])])
    assert np.allclose(e, [[2 ** -0.5, 2 ** -0.5], [0, -1]])
    w, b = text_head(e, radius=2.0, scale=10.0)
    assert np.allclose(w, 5 * e) and np.allclose(b, 0)


def test_self_training_moves_to_the_clusters():
    rng = np.random.default_rng(0)
    a = rng.normal([5, 1, 0], 0.3, size=(50, 3))
    b = rng.normal([1, 5, 0], 0.3, size=(50, 3))
    start = unit(np.array([[1.0, 0, 1], [0, 1.0, 1]]))  # off the clusters, right side
    moved = self_train(start, np.vstack([a, b]), rounds=3, keep=0.5)
    assert np.allclose(np.linalg.norm(moved, axis=1), 1)
    assert unit(a.mean(0)) @ moved[0] > unit(a.mean(0)) @ start[0] + 0.2
    assert unit(b.mean(0)) @ moved[1] > unit(b.mean(0)) @ start[1] + 0.2
    assert np.allclose(self_train(start, np.vstack([a, b]), rounds=0, keep=0.5), start)


# ------------------------------------------------------------------ fits

def _fit_text(data, tmp_path, name, **kw):
    return transferkit.fit(data, backbone="tiny-bert", strategy="zeroshot", quiet=True,
                           out=tmp_path / name, **kw)


def test_text_fit_never_reads_labels(text_csv, tmp_path):
    from transferkit.data import read_data, resolve_splits

    splits = resolve_splits(read_data(text_csv), seed=0)
    train = splits["train"]
    flipped = train.subset(list(range(len(train))))
    flipped.labels = 1 - np.asarray(train.labels)
    opts = {"self_train": True, "rounds": 2}
    a = _fit_text(train, tmp_path, "a", val=splits["val"], options=opts)
    b = _fit_text(flipped, tmp_path, "b", val=splits["val"], options=opts)
    assert torch.equal(a.model.head.fc.weight, b.model.head.fc.weight)
    assert a.metrics["closed_form"]["self_train"] is True
    assert a.metrics["closed_form"]["unlabelled_used"] == len(train)


def test_text_bundle_holds_descriptions_and_embeddings(text_csv, tmp_path):
    desc = tmp_path / "d.json"
    desc.write_text(json.dumps({"neg": "This is {label}.", "pos": ["good", "great"]}))
    tm = _fit_text(text_csv, tmp_path, "run", descriptions=str(desc))
    bundle = tmp_path / "run" / "bundle"
    assert json.loads((bundle / "descriptions.json").read_text()) == {
        "neg": ["This is neg."], "pos": ["good", "great"]}
    assert "head.class_embeddings" in json.loads((bundle / "config.json").read_text())["tensors"]
    loaded = transferkit.load(bundle)
    emb = loaded.model.head.class_embeddings
    assert emb.shape == (2, tm.model.backbone.feature_dim)
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    texts = [t for t, _ in make_text_rows(3)]
    np.testing.assert_array_equal(loaded.logits(texts), tm.logits(texts))


def test_fit_from_class_names_alone_then_predict(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["fit", "--strategy", "zeroshot", "--classes", "negative,positive",
                 "--backbone", "tiny-bert", "--out", str(out), "-q"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["val"] is None and m["classes"] == ["negative", "positive"]
    capsys.readouterr()
    assert main(["predict", str(out / "bundle"), "--text", "a fine day", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and rows[0]["label"] in ("negative", "positive")


def test_classes_must_match_the_data(text_csv, tmp_path):
    with pytest.raises(ConfigError, match="the data's classes are neg, pos"):
        _fit_text(text_csv, tmp_path, "x", classes="neg,neutral")
    tm = _fit_text(text_csv, tmp_path, "y", classes="pos,neg")  # same set: the data's order
    assert tm.classes == ["neg", "pos"]


def test_shots_zero_is_zeroshot(text_csv, tmp_path):
    tm = _fit_text(text_csv, tmp_path, "z", shots=0)
    assert tm.metrics["strategy"] == "zeroshot" and "shots" not in tm.metrics
    with pytest.raises(ConfigError, match="--shots 0"):
        transferkit.fit(text_csv, backbone="tiny-bert", strategy="prototype", shots=0)


def test_images_need_named_imagenet_classes(image_folder, tmp_path):
    with pytest.raises(ConfigError, match="zeroshot: backbone 'tiny-cnn' has no ImageNet"):
        transferkit.fit(image_folder, backbone="tiny-cnn", strategy="zeroshot", quiet=True,
                        out=tmp_path / "r")


def test_hymenoptera_zero_shot_images(tmp_path):
    data = shared_data("hymenoptera")
    out = tmp_path / "r"
    assert main(["fit", "--strategy", "zeroshot", "--classes", "ant,bee", "--backbone",
                 "efficientnet_lite0", "--out", str(out), "-q"]) == 0
    loaded = transferkit.load(out / "bundle")
    assert loaded.model.head.fc.weight.shape == (2, 1000)
    ants = sorted((data / "val" / "ants").iterdir())[:4]
    bees = sorted((data / "val" / "bees").iterdir())[:4]
    pred = loaded.predict([str(p) for p in ants + bees])
    assert sum(p == "ant" for p in pred[:4]) + sum(p == "bee" for p in pred[4:]) >= 7


# ------------------------------------------------------------------ tip

def test_tip_keeps_the_prior_when_the_cache_does_not_help():
    from transferkit.strategies.tip import choose_blend

    z = unit(np.array([[1.0, 0.1], [1.0, -0.1], [-1.0, 0.1], [-1.0, -0.1]]))
    y = np.array([0, 0, 1, 1])
    prior = np.array([[2.0, 0], [2.0, 0], [0, 2.0], [0, 2.0]])      # already right
    alpha, beta, loo = choose_blend(prior, z, y, 2)
    assert alpha == 0.0 and loo == 1.0


def test_tip_blends_in_the_cache_when_it_corrects_the_prior():
    from transferkit.strategies.tip import affinities, choose_blend, log_softmax

    z = unit(np.array([[1.0, 0.1], [1.0, -0.1], [1.0, 0.0], [-1.0, 0.1], [-1.0, -0.1]]))
    y = np.array([0, 0, 0, 1, 1])
    prior = np.array([[0.2, 0], [0, 0.2], [0, 0.2], [0, 2.0], [0, 2.0]])   # shots 1, 2 wrong
    alpha, beta, loo = choose_blend(prior, z, y, 2)
    assert alpha > 0 and loo == 1.0
    # one shot corrected is not enough to give up the prior alone
    one_wrong = prior.copy()
    one_wrong[2] = [0.2, 0]
    assert choose_blend(one_wrong, z, y, 2)[0] == 0.0
    # by hand: leave-one-out caches of shots 1, 2 hold the other class-0 shots ...
    a = affinities(z, z, beta)
    np.fill_diagonal(a, 0)
    lp = log_softmax(log_softmax(prior) + alpha * a @ np.eye(2)[y])
    assert (lp.argmax(1) == y).all()
    # ... and the smallest alpha that does it at that beta was taken
    smaller = [x for x in (0.0, 0.25, 0.5, 1.0, 2.0, 4.0) if x < alpha]
    for s in smaller:
        assert (log_softmax(prior) + s * a @ np.eye(2)[y]).argmax(1).tolist() != y.tolist()
    assert loo == 1.0


def test_tip_fit_bundle_and_cache(text_csv, tmp_path):
    tm = transferkit.fit(text_csv, backbone="tiny-bert", strategy="tip", shots=4, quiet=True,
                         out=tmp_path / "run")
    cfg = json.loads((tmp_path / "run" / "bundle" / "config.json").read_text())
    assert cfg["strategy"]["options"]["cache_size"] == 8
    assert "head.cache.keys" in cfg["tensors"]
    info = tm.metrics["closed_form"]
    assert info["cache_size"] == 8 and info["alpha"] in (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
    loaded = transferkit.load(tmp_path / "run" / "bundle")
    texts = [t for t, _ in make_text_rows(3)]
    np.testing.assert_allclose(loaded.logits(texts), tm.logits(texts), rtol=0, atol=0)
    # the cache's keys are the unit, centred support features
    keys = loaded.model.head.cache.keys
    assert torch.allclose(keys.norm(dim=1), torch.ones(8), atol=1e-5)


def test_tip_needs_data(tmp_path):
    with pytest.raises(ConfigError, match="fit needs DATA"):
        transferkit.fit(strategy="tip", classes="a,b", backbone="tiny-bert", out=tmp_path / "r")


def test_episodes_accept_tip_and_zeroshot(text_csv, tmp_path):
    from transferkit.episodes import episodes

    got = {}
    for strategy in ("zeroshot", "tip", "prototype"):
        r = episodes(text_csv, backbone="tiny-bert", strategy=strategy, ways=2, shots=2,
                     queries=3, episodes=5, seed=0, quiet=True, out=tmp_path / strategy)
        got[strategy] = r["accuracy"]["mean"]
        assert 0.0 <= got[strategy] <= 1.0 and r["strategy"] == strategy
    assert (tmp_path / "tip" / "episodes.csv").read_text().count("\n") == 6


@pytest.mark.parametrize("strategy", ["zeroshot", "tip"])
def test_transfer_classifier(strategy):
    from transferkit.api import TransferClassifier

    rows = make_text_rows(8)
    X, y = [t for t, _ in rows], [label for _, label in rows]
    clf = TransferClassifier(backbone="tiny-bert", strategy=strategy).fit(X, y)
    assert set(clf.predict(X[:4])) <= {"neg", "pos"}
    assert clf.predict_proba(X[:4]).shape == (4, 2)
    assert 0.0 <= clf.score(X, y) <= 1.0


def test_centre_subtracts_the_unlabelled_mean(text_csv, tmp_path):
    from transferkit.data import read_data, resolve_splits

    splits = resolve_splits(read_data(text_csv), seed=0)
    tm = _fit_text(splits["train"], tmp_path, "c", val=splits["val"], options={"centre": True})
    assert tm.metrics["closed_form"]["centre"] is True
    w = tm.model.head.fc.weight.detach().double().numpy()
    b = tm.model.head.fc.bias.detach().double().numpy()
    emb = tm.model.backbone(tm.model.backbone.tokenize(list(splits["train"].items)))["pooled"]
    m = emb.detach().double().numpy().mean(0)
    assert np.allclose(b, -(w @ m), atol=1e-4)   # logits = w . (x - mean of the inputs)
