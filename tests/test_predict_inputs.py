"""Prediction inputs: whatever works alone works in a list, from the command line and the
Python API; each real file is read once."""

from __future__ import annotations

import os

import numpy as np
import pytest

from transferkit import api
from transferkit.data import read_inputs
from transferkit.errors import DataError

from bad_inputs.corpus import image_folder, make_bundles, npz, images_u8


@pytest.fixture(scope="module")
def image_model(tmp_path_factory):
    return api.load(make_bundles(tmp_path_factory.mktemp("b"))["image"])


def test_api_predicts_a_list_of_folders_files_and_arrays(image_model, tmp_path):
    data = image_folder(tmp_path / "d")
    path = npz(tmp_path / "x.npz", x=images_u8(2))
    assert len(image_model.predict([data / "cat", data / "dog"])) == 6
    assert len(image_model.predict([str(data / "cat"), data / "dog" / "dog_0.png", path])) == 6
    assert len(image_model.predict(data)) == 6
    assert len(image_model.predict(list(images_u8(3)))) == 3


def test_read_inputs_names_the_input_of_the_other_modality(tmp_path):
    data = image_folder(tmp_path / "d")
    (tmp_path / "note.txt").write_text("hello")
    with pytest.raises(DataError, match="note.txt: holds text data but this model takes image"):
        read_inputs([data / "cat", tmp_path / "note.txt"], "image")
    with pytest.raises(DataError, match="cat: holds image data but this model takes text"):
        read_inputs([tmp_path / "note.txt", data / "cat"], "text")


def test_a_file_linked_twice_is_read_once(tmp_path):
    data = image_folder(tmp_path / "d")
    os.symlink(data / "cat" / "cat_0.png", data / "cat" / "again.png")
    s = read_inputs([data], "image")
    assert len(s) == 6 and s.notes and "skipped 1 link" in s.notes[0]
    assert not any(o.endswith("again.png") for o in s.origins)


def test_cache_key_of_a_name_that_is_not_utf8(tmp_path):
    from transferkit.engine.cache import item_key

    path = os.fsdecode(os.fsencode(tmp_path) + b"/\xe9t\xe9.png")
    open(path, "wb").write(b"x")
    other = os.fsdecode(os.fsencode(tmp_path) + b"/\xe8t\xe9.png")
    open(other, "wb").write(b"x")
    assert item_key(path) != item_key(other)
    assert np.asarray([item_key(path)]).dtype.kind == "U"
