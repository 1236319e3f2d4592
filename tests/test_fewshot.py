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


# ------------------------------------------------------------------ --shots K

import json  # noqa: E402

import transferkit  # noqa: E402
from transferkit.cli import main  # noqa: E402
from transferkit.data import Samples, few_shot_splits, resolve_splits  # noqa: E402
from transferkit.errors import ConfigError, DataError  # noqa: E402

from conftest import make_image_folder, make_text_csv  # noqa: E402


def _samples(counts: dict[str, int]) -> Samples:
    labels = [i for i, n in enumerate(counts.values()) for _ in range(n)]
    return Samples("text", [f"t{i}" for i in range(len(labels))], np.array(labels),
                   list(counts), [f"row {i}" for i in range(len(labels))], "d.csv")


def test_shots_are_seeded_per_class_and_the_rest_is_unlabelled():
    s = _samples({"a": 8, "b": 5, "c": 6})
    splits = resolve_splits({"all": s}, seed=0)
    got = few_shot_splits(splits, 2, seed=3, val_given=False)
    train = got["train"]
    assert np.bincount(train.labels).tolist() == [2, 2, 2]
    assert got["val"] is train                     # choices on the shots themselves
    assert got["test"] is splits["test"]           # test untouched
    rest = got["unlabelled"]
    assert rest.labels is None
    pool = set(splits["train"].origins) | set(splits["val"].origins)
    assert set(train.origins) | set(rest.origins) == pool
    assert not set(train.origins) & set(rest.origins)
    again = few_shot_splits(splits, 2, seed=3, val_given=False)["train"]
    other = few_shot_splits(splits, 2, seed=4, val_given=False)["train"]
    assert again.origins == train.origins and other.origins != train.origins


def test_shots_keep_a_given_validation_split():
    s = _samples({"a": 8, "b": 8})
    splits = resolve_splits({"train": s}, val={"all": _samples({"a": 2, "b": 2})}, seed=0)
    got = few_shot_splits(splits, 3, seed=0, val_given=True)
    assert got["val"] is splits["val"] and len(got["unlabelled"]) == 10


def test_shots_refusals():
    splits = resolve_splits({"all": _samples({"a": 20, "bee": 6})}, seed=0)
    with pytest.raises(DataError, match=r"--shots 9: class 'bee' has only \d training samples"):
        few_shot_splits(splits, 9, seed=0, val_given=False)
    with pytest.raises(ConfigError, match="zero-shot"):
        few_shot_splits(splits, 0, seed=0, val_given=False)


def test_cli_refuses_bad_shots(tmp_path, capsys):
    data = make_text_csv(tmp_path / "t.csv", n_per_class=6)
    assert main(["fit", str(data), "--backbone", "tiny-bert", "--strategy", "prototype",
                 "--shots", "0", "--out", str(tmp_path / "r0")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--shots 0" in err[0] and "zero-shot" in err[0]
    assert main(["fit", str(data), "--backbone", "tiny-bert", "--strategy", "prototype",
                 "--shots", "50", "--out", str(tmp_path / "r1")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--shots 50: class" in err[0] and "has only" in err[0]


@pytest.mark.parametrize("strategy,how", [("prototype", "nothing to choose"),
                                          ("linear", "cross-validation over the training shots")])
def test_fit_with_shots_says_how_it_chose(strategy, how, tmp_path):
    data = make_image_folder(tmp_path / "img", per_class=12)
    tm = transferkit.fit(data, backbone="tiny-cnn", strategy=strategy, shots=3, seed=0,
                         quiet=True, out=tmp_path / "run")
    m = json.loads((tm.run_dir / "metrics.json").read_text())
    assert m["shots"] == {"k": 3, "labelled": 6, "unlabelled": m["shots"]["unlabelled"],
                          "unlabelled_used": False, "val": "the K shots themselves"}
    assert m["shots"]["unlabelled"] == 24 - 6 - m["test"]["n"]
    assert how in m["selection"] and "not held out" in m["selection"]
    assert m["val"]["n"] == 6      # scored on the shots, and said so
    loaded = transferkit.load(tm.run_dir / "bundle")
    assert loaded.predict([str(p) for p in sorted((data / "cat").iterdir())[:2]]) == \
        tm.predict([str(p) for p in sorted((data / "cat").iterdir())[:2]])


def test_fit_with_shots_and_val(tmp_path):
    data = make_text_csv(tmp_path / "t.csv", n_per_class=12)
    val = make_text_csv(tmp_path / "v.csv", n_per_class=3, seed=1)
    tm = transferkit.fit(data, val=val, backbone="tiny-bert", strategy="prototype", shots=2,
                         quiet=True, out=tmp_path / "run")
    assert tm.metrics["shots"]["val"] == "given" and tm.metrics["val"]["n"] == 6
    assert "given validation data" in tm.metrics["selection"]


def test_linear_on_one_shot_fixes_C_and_says_so():
    from types import SimpleNamespace

    import torch

    from transferkit.strategies.base import get_strategy

    model = SimpleNamespace(head=SimpleNamespace(kind="linear"), classes=["a", "b"])
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    sol = get_strategy("linear").fit_on_shots(model, x, torch.tensor([0, 1]), seed=0)
    assert sol.info["C"] == 1.0 and "nothing to cross-validate" in sol.info["selection"]
    x = torch.randn(12, 3) + torch.tensor([2.0, 0, 0]) * torch.tensor([0, 1] * 6)[:, None]
    sol = get_strategy("linear").fit_on_shots(model, x, torch.tensor([0, 1] * 6), seed=0)
    assert "5-fold" in sol.info["selection"] and len(sol.info["grid"]) == 6


# ------------------------------------------------------------------ episodes

from transferkit.engine.episodes import EpisodeSpec, mean_ci95, run_episodes, sample_episode  # noqa: E402
from transferkit.episodes import episodes  # noqa: E402


def test_ci95_by_hand():
    # values 0.5, 1.0, 0.75, 0.75: mean 0.75, sample sd sqrt(0.125/3), n 4
    mean, ci = mean_ci95([0.5, 1.0, 0.75, 0.75])
    assert mean == 0.75
    assert ci == pytest.approx(1.96 * np.sqrt(0.125 / 3) / 2)
    assert mean_ci95([0.6]) == (0.6, 0.0)


def test_episode_sampler_is_seeded_and_disjoint():
    labels = np.repeat(np.arange(5), 8)
    spec = EpisodeSpec(ways=3, shots=2, queries=4, episodes=1, seed=7)
    eligible = spec.check(labels, list("abcde"), "d")
    chosen, support, query = sample_episode(labels, eligible, spec, 3)
    assert len(set(chosen)) == 3 and not set(support) & set(query)
    assert labels[support].tolist() == np.repeat(chosen, 2).tolist()
    assert labels[query].tolist() == np.repeat(chosen, 4).tolist()
    again = sample_episode(labels, eligible, spec, 3)
    assert all((a == b).all() for a, b in zip(again, (chosen, support, query)))
    assert not (sample_episode(labels, eligible, spec, 4)[1] == support).all()


def test_episodes_score_the_strategy_on_queries():
    from transferkit.strategies.base import get_strategy

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 10)
    centres = np.eye(4) * 10
    feats = centres[labels] + rng.normal(size=(40, 4))
    rows = run_episodes(feats, labels, list("abcd"), get_strategy("prototype"),
                        EpisodeSpec(2, 1, 5, 30, 0))
    assert len(rows) == 30 and all(r["accuracy"] == 1.0 for r in rows)
    shuffled = rng.permutation(labels)       # labels unrelated to the features: near chance
    rows = run_episodes(feats, shuffled, list("abcd"), get_strategy("prototype"),
                        EpisodeSpec(2, 1, 5, 200, 0))
    assert 0.35 < np.mean([r["accuracy"] for r in rows]) < 0.65


def test_episodes_command_writes_json_and_csv(tmp_path, capsys):
    data = make_image_folder(tmp_path / "img", per_class=8, classes=("a", "b", "c"))
    out = tmp_path / "ep"
    assert main(["episodes", str(data), "--backbone", "tiny-cnn", "--ways", "2", "--shots",
                 "2", "--queries", "3", "--episodes", "25", "--seed", "1", "--out",
                 str(out), "-q"]) == 0
    assert "2-way 2-shot" in capsys.readouterr().out
    rec = json.loads((out / "episodes.json").read_text())
    assert (rec["ways"], rec["shots"], rec["queries"], rec["episodes"]) == (2, 2, 3, 25)
    rows = (out / "episodes.csv").read_text().splitlines()
    assert rows[0] == "episode,accuracy,classes" and len(rows) == 26
    acc = [float(r.split(",")[1]) for r in rows[1:]]
    mean, ci = mean_ci95(acc)
    assert rec["accuracy"]["mean"] == pytest.approx(mean, abs=1e-6)
    assert rec["accuracy"]["ci95"] == pytest.approx(ci, abs=1e-6)
    again = episodes(data, backbone="tiny-cnn", strategy="linear", ways=2, shots=2, queries=3,
                     episodes=5, seed=1, quiet=True)
    assert again["strategy"] == "linear" and 0 <= again["accuracy"]["mean"] <= 1


def test_episodes_on_text(tmp_path):
    data = make_text_csv(tmp_path / "t.csv", n_per_class=10)
    rec = episodes(data, backbone="tiny-bert", ways=2, shots=3, queries=4, episodes=10,
                   quiet=True)
    assert rec["backbone"] == "tiny-bert" and 0 <= rec["accuracy"]["mean"] <= 1


@pytest.mark.parametrize("args,msg", [
    (["--ways", "4"], "--ways 4: "),
    (["--ways", "2", "--shots", "5", "--queries", "5"], "needs 2 classes with 10 samples"),
    (["--ways", "2", "--strategy", "freeze"], "no closed-form fit on features"),
    (["--ways", "2", "--episodes", "0"], "--episodes must be >= 1"),
])
def test_episodes_refusals(args, msg, tmp_path, capsys):
    data = make_image_folder(tmp_path / "img", per_class=6, classes=("a", "b", "c"))
    assert main(["episodes", str(data), "--backbone", "tiny-cnn", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0], err


def test_prototype_centred_on_unlabelled_features(tmp_path):
    from transferkit.strategies.base import get_strategy

    x = np.array([[13, 14], [15, 10], [7, 6], [5, 10]], float)
    u = np.array([[30.0, 30.0]] * 4)            # with the support: mean (20, 20)
    y = np.array([0, 0, 1, 1])
    plain = get_strategy("prototype").solve_features(x, y, 2, 0, unlabelled=u)
    assert np.allclose(plain[0], prototype_head(x, y, 2)[0])    # centre=support ignores u
    w, b = get_strategy("prototype", centre="all").solve_features(x, y, 2, 0, unlabelled=u)
    m, p = cl2n_prototypes(x, y, 2, centre=[20, 20])
    assert np.allclose(w / np.linalg.norm(w, axis=1, keepdims=True),
                       p / np.linalg.norm(p, axis=1, keepdims=True))
    assert np.allclose(b, -(w @ [20, 20]))
    with pytest.raises(ConfigError, match="centre must be one of support, all"):
        get_strategy("prototype", centre="middle")
    data = make_image_folder(tmp_path / "img", per_class=12)
    tm = transferkit.fit(data, backbone="tiny-cnn", strategy="prototype", shots=2, quiet=True,
                         options={"centre": "all"}, out=tmp_path / "run")
    assert tm.metrics["shots"]["unlabelled_used"] is True
    assert tm.metrics["closed_form"]["unlabelled_used"] == tm.metrics["shots"]["unlabelled"] > 0
