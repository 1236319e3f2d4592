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
