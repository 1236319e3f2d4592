"""transferkit advise: measurements, the guideline cell, the path of the map, the commands."""

from __future__ import annotations

import json

import numpy as np
import pytest

from transferkit import advise as advise_mod
from transferkit.cli import main
from transferkit.select.transferability import familiarity


def test_familiarity_by_hand():
    assert familiarity(np.full((3, 4), 0.25)) == pytest.approx(0.0, abs=1e-9)
    assert familiarity(np.eye(4)[:2]) == pytest.approx(1.0, abs=1e-6)
    half = np.array([[0.5, 0.5, 0.0, 0.0]])  # H = log 2 of log 4
    assert familiarity(half) == pytest.approx(0.5, abs=1e-6)


def _record(**kw):
    base = {"data": "d/", "backbone": "b", "per_class_median": 50.0, "familiarity": 0.9}
    return {**base, **kw}


@pytest.mark.parametrize("pair,same,path", [
    ({"proxy_a_distance": 1.6}, True, "weight sharing"),
    ({"proxy_a_distance": 0.2}, True, "dataset merging"),
    ({"proxy_a_distance": 1.6}, False, "parallel training"),
    ({"proxy_a_distance": 0.2}, False, "multi-task learning"),
])
def test_source_places_the_case_in_the_simultaneous_paths(pair, same, path):
    m = _record(source={"data": "s/", "same_labels": same, **pair})
    got, commands = advise_mod._path_and_commands(m, ["--strategy linear"])
    assert got == path
    assert commands[-1] == "transferkit fit d/ --backbone b --strategy linear"


def test_target_far_means_domain_adaptation_near_means_fine_tuning():
    far = _record(target={"data": "t/", "proxy_a_distance": 1.9})
    path, commands = advise_mod._path_and_commands(far, ["--strategy linear"])
    assert path == "domain adaptation" and "--target t/ --strategy dann" in commands[0]
    near = _record(target={"data": "t/", "proxy_a_distance": 0.1})
    path, commands = advise_mod._path_and_commands(near, ["--strategy linear"])
    assert path == "task fine-tuning" and commands[-1].startswith("transferkit predict")


def test_advise_images_with_a_source_classifier(image_folder, tmp_path, capsys):
    assert main(["advise", str(image_folder), "--backbone", "tiny-cnn", "--target",
                 str(image_folder), "--cache-dir", str(tmp_path / "c"), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["samples"] > 0 and m["per_class_median"] < advise_mod.SMALL_PER_CLASS
    assert 0.0 <= m["familiarity"] <= 1.0 and np.isfinite(m["logme"])
    assert m["target"]["same_labels"] and m["target"]["proxy_a_distance"] < 0.5  # itself
    assert m["advice"]["size"] == "small" and m["advice"]["path"] == "task fine-tuning"
    assert all(c.startswith("transferkit ") for c in m["advice"]["commands"])


def test_advise_text_says_similarity_is_not_measured(text_csv, tmp_path, capsys):
    assert main(["advise", str(text_csv), "--backbone", "tiny-bert", "--cache-dir",
                 str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "not measured" in out and "$ transferkit fit" in out


def test_advise_refuses_a_target_of_another_modality(image_folder, text_csv, capsys):
    assert main(["advise", str(image_folder), "--backbone", "tiny-cnn", "--target",
                 str(text_csv)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "compare data of one modality" in err[0]
