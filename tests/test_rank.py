"""``transferkit rank``: scores per candidate backbone from cached features, the table, the
JSON record with each score's time, and the one-line refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from transferkit.backbones import build_backbone
from transferkit.engine.cache import extract_features
from transferkit.engine.inputs import InputPipeline
from transferkit.rank import rank, training_split
from transferkit.select import h_score, h_score_shrunk, leep, logme, nce, sfda

from conftest import make_image_folder
from test_cli import assert_one_line_error, run


def test_rank_images_table_json_and_cache(image_folder, tmp_path, capsys):
    out = tmp_path / "rank.json"
    code, table, err = run(["rank", image_folder, "--backbones", "tiny-cnn,tiny-vit",
                            "--out", out], capsys)
    assert code == 0, err
    head = table.splitlines()[0].split()
    assert head[:7] == ["backbone", "logme", "hscore", "hscore_reg", "nce", "leep", "sfda"]
    assert [line.split()[0] for line in table.splitlines()[1:]] == ["tiny-cnn", "tiny-vit"]
    rec = json.loads(out.read_text())
    assert rec["split"] == "train" and rec["classes"] == ["cat", "dog"]
    for row in rec["backbones"]:
        assert set(row["scores"]) == set(row["seconds"]) == {"logme", "hscore", "hscore_reg", "nce", "leep", "sfda"}
        assert all(np.isfinite(v) for v in row["scores"].values())
        assert all(v >= 0 for v in row["seconds"].values())
        assert row["source_classes"] == 10 and row["cached"] is False
    # a second run reads every feature back from the cache and gives the same scores
    code, _, err = run(["rank", image_folder, "--backbones", "tiny-cnn", "--out", out], capsys)
    assert code == 0, err
    again = json.loads(out.read_text())["backbones"][0]
    assert again["cached"] is True
    assert again["scores"] == pytest.approx(rec["backbones"][0]["scores"], rel=1e-5)


def test_rank_text_backbones_have_no_source_scores(text_csv, tmp_path, capsys):
    out = tmp_path / "r.json"
    code, table, err = run(["rank", text_csv, "--backbones", "tiny-bert,tiny-wordvec",
                            "--out", out], capsys)
    assert code == 0, err
    assert "leep" not in table and "nce" not in table
    rows = json.loads(out.read_text())["backbones"]
    assert [r["backbone"] for r in rows] == ["tiny-bert", "tiny-wordvec"]
    assert all(set(r["scores"]) == {"logme", "hscore", "hscore_reg", "sfda"} and "source_classes" not in r
               for r in rows)


def test_rank_scores_are_the_pure_functions_on_fits_training_split(image_folder):
    rec = rank(image_folder, ["tiny-cnn"], no_cache=True)
    train = training_split(image_folder)
    assert rec["samples"] == len(train)
    bb = build_backbone("tiny-cnn")
    pooled = extract_features(bb, InputPipeline(bb), train)
    probs = bb.source_probabilities(pooled).double().numpy()
    F = pooled.double().numpy()
    got = rec["backbones"][0]["scores"]
    assert got["logme"] == pytest.approx(logme(F, train.labels), rel=1e-4)
    assert got["hscore"] == pytest.approx(h_score(F, train.labels), rel=1e-4)
    assert got["hscore_reg"] == pytest.approx(h_score_shrunk(F, train.labels), rel=1e-4)
    assert got["leep"] == pytest.approx(leep(probs, train.labels), rel=1e-4)
    assert got["nce"] == pytest.approx(nce(probs, train.labels), abs=1e-6)
    assert got["sfda"] == pytest.approx(sfda(F, train.labels), rel=1e-4)


@pytest.mark.parametrize("backbones,needles", [
    ("tiny-cnn,no-such-net", ["unknown backbone", "no-such-net"]),
    ("tiny-cnn,tiny-bert", ["tiny-bert", "takes text", "is image"]),
    ("tiny-cnn,tiny-cnn", ["named twice"]),
    ("tiny-cnn,", ["--backbones"]),
])
def test_rank_refuses_bad_backbones_in_one_line(image_folder, tmp_path, capsys, backbones,
                                                needles):
    out = tmp_path / "r.json"
    code, _, err = run(["rank", image_folder, "--backbones", backbones, "--out", out], capsys)
    assert code == 2
    assert_one_line_error(code, err, *needles)
    assert not out.exists()


def test_rank_refuses_one_class_and_an_image_backbone_on_text(tmp_path, text_csv, capsys):
    one = make_image_folder(tmp_path / "one", classes=("cat",))
    code, _, err = run(["rank", one, "--backbones", "tiny-cnn"], capsys)
    assert code == 2
    assert_one_line_error(code, err, "1 class", "need at least 2")
    code, _, err = run(["rank", text_csv, "--backbones", "tiny-vit"], capsys)
    assert code == 2
    assert_one_line_error(code, err, "tiny-vit", "takes image")
    code, _, err = run(["rank", text_csv, "--backbones", "tiny-bert", "--out", tmp_path], capsys)
    assert code == 2
    assert_one_line_error(code, err, "--out", "is a folder")


# --------------------------------------------------------------------------- --layers

def test_rank_layers_rows_per_backbone_and_layer_and_their_cache(image_folder, tmp_path, capsys):
    out = tmp_path / "rank.json"
    argv = ["rank", image_folder, "--backbones", "tiny-cnn,tiny-vit", "--layers", "pooled,-1,1",
            "--cache-dir", tmp_path / "cache", "--out", out]
    code, table, err = run(argv, capsys)
    assert code == 0, err
    assert table.splitlines()[0].split()[:2] == ["backbone", "layer"]
    rows = json.loads(out.read_text())["backbones"]
    assert [(r["backbone"], r["layer"]) for r in rows] == [
        ("tiny-cnn", "pooled"), ("tiny-cnn", 5), ("tiny-cnn", 1),
        ("tiny-vit", "pooled"), ("tiny-vit", 2), ("tiny-vit", 1)]
    bb = build_backbone("tiny-cnn")
    channels = [f["num_chs"] for f in bb.model.feature_info]
    assert [r["feature_dim"] for r in rows[1:3]] == [channels[4], channels[0]]
    for r in rows:  # the source classifier reads the pooled features only
        want = {"logme", "hscore", "hscore_reg", "sfda"} | (
            {"nce", "leep"} if r["layer"] == "pooled" else set())
        assert set(r["scores"]) == want and all(np.isfinite(v) for v in r["scores"].values())
        assert r["cached"] is False
    assert len({round(r["scores"]["logme"], 6) for r in rows}) == len(rows)
    code, _, err = run(argv, capsys)
    assert code == 0, err
    again = json.loads(out.read_text())["backbones"]
    assert all(r["cached"] for r in again)
    for a, b in zip(again, rows):
        assert a["scores"] == pytest.approx(b["scores"], rel=1e-5)


def test_rank_text_layers_are_mask_aware_means_of_the_hidden_states(text_csv):
    import torch

    rec = rank(text_csv, ["tiny-bert"], layers="all", no_cache=True)
    assert [r["layer"] for r in rec["backbones"]] == ["pooled", 1, 2]
    train = training_split(text_csv)
    bb = build_backbone("tiny-bert")
    enc = bb.tokenize(list(train.items))
    with torch.no_grad():
        hidden = bb.network(**enc, output_hidden_states=True).hidden_states
    m = enc["attention_mask"].unsqueeze(-1).float()
    for r in rec["backbones"][1:]:
        F = ((hidden[r["layer"]] * m).sum(1) / m.sum(1)).double().numpy()
        assert r["scores"]["logme"] == pytest.approx(logme(F, train.labels), rel=1e-4)
        assert r["scores"]["hscore_reg"] == pytest.approx(h_score_shrunk(F, train.labels),
                                                          rel=1e-4)


def test_rank_layers_syntax():
    from transferkit.errors import ConfigError
    from transferkit.rank import parse_layers, resolve_layers

    assert parse_layers(None) == ["pooled"]
    assert parse_layers("last, -2,3") == ["pooled", -2, 3]
    assert resolve_layers("x", parse_layers("-1,6,pooled,all"), 6) == [
        6, "pooled", 1, 2, 3, 4, 5]
    assert resolve_layers("x", ["pooled"], 0) == ["pooled"]
    with pytest.raises(ConfigError, match="has 6 layers"):
        resolve_layers("x", [-7], 6)
    with pytest.raises(ConfigError, match="exposes no intermediate layers"):
        resolve_layers("x", ["all"], 0)
