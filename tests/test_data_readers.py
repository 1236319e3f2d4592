"""Tests for reading data sets: folders, archives, tables, .npz, and Samples."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferkit.data import IMAGE_EXTENSIONS, Samples, read_data, sort_classes
from transferkit.errors import ConfigError, DataError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _needs(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


def _png(path: Path, color=(200, 30, 30), size=(8, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def _tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def _error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- image folders

def test_image_folder(tmp_path):
    root = tmp_path / "pics"
    _png(root / "cats" / "a.png")
    _png(root / "cats" / "nested" / "deeper" / "b.jpg")
    _png(root / "dogs" / "c.png")
    _write(root / "dogs" / "notes.txt", "not an image")          # ignored: not an image
    _write(root / "dogs" / ".hidden.png", b"junk")                 # ignored: hidden
    _write(root / "dogs" / "junk.jpg", b"junk")                     # kept: caught when decoding
    _png(root / ".thumbs" / "x.png")                                # hidden folder: not a class
    splits = read_data(root)
    assert list(splits) == ["all"]
    samples = splits["all"]
    assert samples.modality == "image"
    assert samples.classes == ["cats", "dogs"]
    assert samples.class_counts() == {"cats": 2, "dogs": 2}
    assert [os.path.basename(p) for p in samples.items] == ["a.png", "b.jpg", "c.png", "junk.jpg"]
    assert samples.origins == samples.items
    assert samples.labels.dtype == np.int64
    assert samples.labels.tolist() == [0, 0, 1, 1]
    assert samples.source == str(root)


def test_numeric_class_names_sort_numerically(tmp_path):
    for name in ["10", "2", "1"]:
        _png(tmp_path / "d" / name / "x.png")
    assert read_data(tmp_path / "d")["all"].classes == ["1", "2", "10"]
    assert sort_classes(["b", "a", "b"]) == ["a", "b"]


def test_split_folder(tmp_path):
    for split in ["train", "val", "test"]:
        for name in ["ants", "bees"]:
            _png(tmp_path / "d" / split / name / f"{split}_{name}.png")
    splits = read_data(tmp_path / "d")
    assert list(splits) == ["train", "val", "test"]
    for split in splits.values():
        assert split.classes == ["ants", "bees"]
        assert len(split) == 2


def test_split_folder_aliases_and_partial(tmp_path):
    for split in ["train", "validation"]:
        for name in ["a", "b"]:
            _png(tmp_path / "d" / split / name / "x.png")
    splits = read_data(tmp_path / "d")
    assert list(splits) == ["train", "val"]

    for split in ["train", "test"]:
        for name in ["a", "b"]:
            _png(tmp_path / "e" / split / name / "x.png")
    assert list(read_data(tmp_path / "e")) == ["train", "test"]


def test_split_folder_classes_are_shared(tmp_path):
    for name in ["a", "b", "c"]:
        _png(tmp_path / "d" / "train" / name / "x.png")
    _png(tmp_path / "d" / "val" / "c" / "x.png")
    splits = read_data(tmp_path / "d")
    assert splits["val"].classes == ["a", "b", "c"]
    assert splits["val"].labels.tolist() == [2]


def test_split_folder_with_both_val_names(tmp_path):
    for split in ["train", "val", "valid"]:
        for name in ["a", "b"]:
            _png(tmp_path / "d" / split / name / "x.png")
    with pytest.raises(DataError) as excinfo:
        read_data(tmp_path / "d")
    assert "'val' and 'valid'" in _error(excinfo)


def test_empty_class_folder(tmp_path):
    _png(tmp_path / "data" / "train" / "ants" / "a.png")
    (tmp_path / "data" / "train" / "bees").mkdir(parents=True)
    _write(tmp_path / "data" / "train" / "bees" / "readme.md", "nothing")
    _png(tmp_path / "data" / "val" / "ants" / "a.png")
    _png(tmp_path / "data" / "val" / "bees" / "a.png")
    with pytest.raises(DataError) as excinfo:
        read_data(tmp_path / "data")
    bees = os.path.join(str(tmp_path / "data" / "train"), "bees")
    assert _error(excinfo) == f"{bees}: class folder holds no images"


def test_only_one_class(tmp_path):
    _png(tmp_path / "data" / "ants" / "a.png")
    with pytest.raises(DataError) as excinfo:
        read_data(tmp_path / "data")
    assert _error(excinfo) == f"{tmp_path / 'data'}: found only 1 class ('ants'); need at least 2"


def test_folder_without_class_folders(tmp_path):
    _png(tmp_path / "flat" / "a.png")
    with pytest.raises(DataError, match="no class subfolders"):
        read_data(tmp_path / "flat")


def test_missing_path(tmp_path):
    with pytest.raises(DataError) as excinfo:
        read_data(tmp_path / "nope")
    assert _error(excinfo) == f"{tmp_path / 'nope'}: no such file or folder"


def test_unknown_format(tmp_path):
    with pytest.raises(DataError, match="unknown data format '.xyz'"):
        read_data(_write(tmp_path / "data.xyz", "a"))


def test_image_extensions():
    assert {".jpg", ".jpeg", ".png", ".gif", ".webp", ".pgm"} <= IMAGE_EXTENSIONS


# --------------------------------------------------------------------------- text folders

def test_text_folder(tmp_path):
    _write(tmp_path / "t" / "pos" / "1.txt", "  great film \n")
    _write(tmp_path / "t" / "pos" / "2.txt", "\ufeffloved it")
    _write(tmp_path / "t" / "neg" / "3.txt", "awful")
    _write(tmp_path / "t" / "neg" / "skip.md", "ignored")
    samples = read_data(tmp_path / "t")["all"]
    assert samples.modality == "text"
    assert samples.classes == ["neg", "pos"]
    assert samples.items == ["awful", "great film", "loved it"]
    assert samples.origins[0] == str(tmp_path / "t" / "neg" / "3.txt")


def test_text_folder_bad_utf8(tmp_path):
    _write(tmp_path / "t" / "pos" / "1.txt", "fine")
    bad = _write(tmp_path / "t" / "neg" / "2.txt", b"caf\xe9 au lait")
    with pytest.raises(DataError) as excinfo:
        read_data(tmp_path / "t")
    assert _error(excinfo) == f"{bad}: byte 3 (0xe9) is not valid UTF-8"


def test_text_folder_empty_file(tmp_path):
    _write(tmp_path / "t" / "pos" / "1.txt", "fine")
    empty = _write(tmp_path / "t" / "neg" / "2.txt", "  \n")
    with pytest.raises(DataError) as excinfo:
        read_data(tmp_path / "t")
    assert _error(excinfo) == f"{empty}: empty text"


def test_text_folder_empty_class(tmp_path):
    _write(tmp_path / "t" / "pos" / "1.txt", "fine")
    (tmp_path / "t" / "neg").mkdir()
    with pytest.raises(DataError) as excinfo:
        read_data(tmp_path / "t")
    assert _error(excinfo) == f"{tmp_path / 't' / 'neg'}: class folder holds no .txt files"


# --------------------------------------------------------------------------- archives

def _imdb_like(path: Path) -> Path:
    files = {}
    for split in ["train", "test"]:
        for label in ["pos", "neg"]:
            for i in range(3):
                files[f"aclImdb/{split}/{label}/{i}_{7 if label == 'pos' else 2}.txt"] = \
                    f"{split} {label} review {i}".encode()
        files[f"aclImdb/{split}/urls_pos.txt"] = b"http://example.com"
    files["aclImdb/train/unsup/0_0.txt"] = b"unlabelled"
    files["aclImdb/imdb.vocab"] = b"the\nand\n"
    files["aclImdb/README"] = b"readme"
    files["aclImdb/train/labeledBow.feat"] = b"0 0:1"
    return _tar(path, files)


def test_tar_split_text_folders(tmp_path):
    archive = _imdb_like(tmp_path / "imdb.tar.gz")
    splits = read_data(archive)
    assert list(splits) == ["train", "test"]
    train = splits["train"]
    assert train.modality == "text"
    assert train.classes == ["neg", "pos"]
    assert train.class_counts() == {"neg": 3, "pos": 3}
    assert train.origins[0] == f"{archive}: aclImdb/train/neg/0_2.txt"
    assert train.items[0] == "train neg review 0"
    assert "unlabelled" not in train.items and "http://example.com" not in train.items


def test_tgz_without_splits(tmp_path):
    files = {f"data/{label}/{i}.txt": f"{label} {i}".encode()
             for label in ["b", "a"] for i in range(2)}
    files["data/notes.txt"] = b"top-level file, not in a class folder"
    splits = read_data(_tar(tmp_path / "d.tgz", files))
    assert list(splits) == ["all"]
    assert splits["all"].classes == ["a", "b"]
    assert len(splits["all"]) == 4


def test_tar_bad_utf8_names_member(tmp_path):
    archive = _tar(tmp_path / "d.tar.gz", {"d/train/pos/1.txt": b"ok", "d/train/neg/2.txt": b"\xff",
                                           "d/test/pos/1.txt": b"ok", "d/test/neg/2.txt": b"ok"})
    with pytest.raises(DataError) as excinfo:
        read_data(archive)
    assert _error(excinfo) == f"{archive}: d/train/neg/2.txt: byte 0 (0xff) is not valid UTF-8"


def test_tar_layout_faults(tmp_path):
    one = _tar(tmp_path / "one.tar.gz", {"d/pos/1.txt": b"a", "d/pos/2.txt": b"b"})
    with pytest.raises(DataError) as excinfo:
        read_data(one)
    assert _error(excinfo) == f"{one}: found only 1 class ('pos'); need at least 2"
    flat = _tar(tmp_path / "flat.tar.gz", {"1.txt": b"a", "2.txt": b"b"})
    with pytest.raises(DataError, match="top level, not in class folders"):
        read_data(flat)
    images = _tar(tmp_path / "img.tar.gz", {"d/a/1.png": b"x", "d/b/2.png": b"y"})
    with pytest.raises(DataError, match="holds no .txt files"):
        read_data(images)
    unlabelled = read_data(flat, labelled=False)["all"]
    assert unlabelled.items == ["a", "b"] and unlabelled.labels is None


def test_tar_not_an_archive(tmp_path):
    with pytest.raises(DataError, match="not a readable tar archive"):
        read_data(_write(tmp_path / "broken.tar.gz", b"\x1f\x8b\x08garbage"))


def test_tar_many_files(tmp_path):
    files = {f"r/train/{'pos' if i % 2 else 'neg'}/{i}_1.txt": f"review number {i}".encode()
             for i in range(5000)}
    files.update({f"r/test/{'pos' if i % 2 else 'neg'}/{i}_1.txt": b"x" for i in range(10)})
    archive = _tar(tmp_path / "many.tar.gz", files)
    splits = read_data(archive)
    assert len(splits["train"]) == 5000 and len(splits["test"]) == 10


# --------------------------------------------------------------------------- tables

def test_csv_with_header(tmp_path):
    csv_path = _write(tmp_path / "reviews.csv",
                      'id,review,sentiment\n1,"Great, really great",pos\n2,"Bad ""very"" bad",neg\n'
                      '\n3,fine,pos\n')
    samples = read_data(csv_path)["all"]
    assert samples.modality == "text"
    assert samples.classes == ["neg", "pos"]
    assert samples.items == ["Great, really great", 'Bad "very" bad', "fine"]
    assert samples.labels.tolist() == [1, 0, 1]
    assert samples.origins == [f"{csv_path}: line 2", f"{csv_path}: line 3", f"{csv_path}: line 5"]


def test_csv_without_header_detected(tmp_path):
    rows = ["a long sentence about things,1", "another long one here,0", "short,1", "more text,0",
            "still more words,1"]
    samples = read_data(_write(tmp_path / "d.csv", "\n".join(rows) + "\n"))["all"]
    assert len(samples) == 5
    assert samples.classes == ["0", "1"]
    assert samples.items[0] == "a long sentence about things"


def test_csv_header_detected_from_values(tmp_path):
    rows = ["words,stars"] + [f"sample text {i},{1 + i % 3}" for i in range(9)]
    samples = read_data(_write(tmp_path / "d.csv", "\n".join(rows)))["all"]
    assert len(samples) == 9
    assert samples.classes == ["1", "2", "3"]


def test_csv_named_columns(tmp_path):
    path = _write(tmp_path / "d.csv", "a,b,c\nx,first text,p\ny,second text,q\n")
    samples = read_data(path, text_column="b", label_column="a")["all"]
    assert samples.items == ["first text", "second text"]
    assert samples.classes == ["x", "y"]
    with pytest.raises(DataError) as excinfo:
        read_data(path, text_column="body")
    assert _error(excinfo) == (f"{path}: no column named 'body'; the first line names no such "
                               "column (it reads: a, b, c)")
    named = _write(tmp_path / "n.csv", "text,label\nfirst,p\nsecond,q\n")
    with pytest.raises(DataError) as excinfo:
        read_data(named, label_column="target")
    assert _error(excinfo) == f"{named}: no column named 'target'; the columns are: text, label"
    with pytest.raises(ConfigError):
        read_data(path, text_column="b", image_column="a")


def test_csv_semicolon_and_numeric_classes(tmp_path):
    rows = ["text;label"] + [f"item {i};{[2, 10, 1][i % 3]}" for i in range(6)]
    samples = read_data(_write(tmp_path / "d.csv", "\n".join(rows)))["all"]
    assert samples.classes == ["1", "2", "10"]


def test_csv_multiline_field_line_numbers(tmp_path):
    path = _write(tmp_path / "d.csv", 'text,label\n"two\nlines",a\nok,\n')
    with pytest.raises(DataError) as excinfo:
        read_data(path)
    assert _error(excinfo) == f"{path}: line 4: empty label"


def test_tsv_with_quotes(tmp_path):
    rows = ['He said "wow" and left.\t1', "It's \"fine\"\t0", '"\t1', 'no quote at all\t0']
    samples = read_data(_write(tmp_path / "s.tsv", "\n".join(rows) + "\n"))["all"]
    assert samples.items == ['He said "wow" and left.', "It's \"fine\"", '"', "no quote at all"]
    assert samples.labels.tolist() == [1, 0, 1, 0]


def test_txt_with_tabs_like_uci(tmp_path):
    rows = [f'Sentence "{i}" here.  \t{i % 2}' for i in range(10)]
    samples = read_data(_write(tmp_path / "amazon_labelled.txt", "\r\n".join(rows)))["all"]
    assert len(samples) == 10
    assert samples.items[0] == 'Sentence "0" here.'
    assert samples.classes == ["0", "1"]


def test_txt_without_tabs_is_an_error_when_labelled(tmp_path):
    path = _write(tmp_path / "notes.txt", "just words\nmore words\n")
    with pytest.raises(DataError, match="holds no tab"):
        read_data(path)


def test_table_wrong_field_count(tmp_path):
    path = _write(tmp_path / "reviews.csv", "text,label\na,pos\nb,neg\nc,pos,extra\n")
    with pytest.raises(DataError) as excinfo:
        read_data(path)
    assert _error(excinfo) == f"{path}: line 4: expected 2 fields, got 3"


def test_tsv_wrong_field_count(tmp_path):
    path = _write(tmp_path / "d.tsv", "good\t1\nbad\t0\nhas\ta tab\t1\n")
    with pytest.raises(DataError) as excinfo:
        read_data(path)
    assert _error(excinfo) == f"{path}: line 3: expected 2 fields, got 3"


def test_table_empty_label_and_text(tmp_path):
    path = _write(tmp_path / "d.csv", "text,label\na,pos\nb,\n")
    with pytest.raises(DataError) as excinfo:
        read_data(path)
    assert _error(excinfo) == f"{path}: line 3: empty label"
    path = _write(tmp_path / "e.csv", "text,label\na long text,pos\n  ,neg\n")
    with pytest.raises(DataError) as excinfo:
        read_data(path)
    assert _error(excinfo) == f"{path}: line 3: empty text"


def test_table_no_rows(tmp_path):
    path = _write(tmp_path / "d.csv", "\n\n")
    with pytest.raises(DataError) as excinfo:
        read_data(path)
    assert _error(excinfo) == f"{path}: the file holds no rows"
    path = _write(tmp_path / "h.csv", "text,label\n")
    with pytest.raises(DataError, match="header row but no data rows"):
        read_data(path)


def test_table_bad_utf8(tmp_path):
    path = _write(tmp_path / "d.csv", b"text,label\nfine,a\ncaf\xe9,b\n")
    with pytest.raises(DataError) as excinfo:
        read_data(path)
    assert _error(excinfo) == f"{path}: line 3: byte 0xe9 at column 4 is not valid UTF-8"


def test_table_one_class(tmp_path):
    path = _write(tmp_path / "d.csv", "text,label\na,pos\nb,pos\n")
    with pytest.raises(DataError) as excinfo:
        read_data(path)
    assert _error(excinfo) == f"{path}: found only 1 class ('pos'); need at least 2"


def test_image_csv(tmp_path):
    _png(tmp_path / "imgs" / "a.png")
    _png(tmp_path / "imgs" / "b.jpg")
    path = _write(tmp_path / "list.csv", "filepath,label\nimgs/a.png,cat\nimgs/b.jpg,dog\n")
    samples = read_data(path)["all"]
    assert samples.modality == "image"
    assert samples.items == [os.path.join(str(tmp_path), "imgs/a.png"),
                             os.path.join(str(tmp_path), "imgs/b.jpg")]
    assert samples.origins[1] == f"{path}: line 3: imgs/b.jpg"


def test_image_csv_missing_file(tmp_path):
    _png(tmp_path / "a.png")
    path = _write(tmp_path / "list.csv", "a.png,cat\nmissing.png,dog\n")
    with pytest.raises(DataError) as excinfo:
        read_data(path)
    assert _error(excinfo) == f"{path}: line 2: image file not found: missing.png"


def test_classes_argument(tmp_path):
    path = _write(tmp_path / "d.csv", "text,label\na,pos\nb,neg\nc,meh\n")
    samples = read_data(path, classes=["pos", "neg", "meh"])["all"]
    assert samples.classes == ["pos", "neg", "meh"]
    assert samples.labels.tolist() == [0, 1, 2]
    with pytest.raises(DataError) as excinfo:
        read_data(path, classes=["neg", "pos"])
    assert _error(excinfo) == f"{path}: line 4: label 'meh' is not one of the model's classes: neg, pos"
    # a single class is fine when the classes are given (e.g. a test file of one class)
    one = _write(tmp_path / "one.csv", "text,label\na,pos\n")
    assert read_data(one, classes=["neg", "pos"])["all"].labels.tolist() == [1]


# --------------------------------------------------------------------------- npz

def test_npz_grayscale_and_color(tmp_path):
    x = np.random.default_rng(0).integers(0, 255, (6, 5, 4), dtype=np.uint8)
    y = np.array([3, 1, 3, 10, 1, 3])
    np.savez(tmp_path / "g.npz", x=x, y=y)
    samples = read_data(tmp_path / "g.npz")["all"]
    assert samples.modality == "image"
    assert samples.classes == ["1", "3", "10"]
    assert samples.labels.tolist() == [1, 0, 1, 2, 0, 1]
    assert samples.items[3].shape == (5, 4)
    assert np.array_equal(samples.items[3], x[3])
    assert samples.origins[2] == f"{tmp_path / 'g.npz'}: row 2"

    np.savez(tmp_path / "c.npz", x=np.zeros((2, 3, 3, 3), np.uint8), y=np.array([0, 1]))
    assert read_data(tmp_path / "c.npz")["all"].items[0].shape == (3, 3, 3)
    np.savez(tmp_path / "one.npz", x=np.zeros((2, 3, 3, 1), np.uint8), y=np.array([0, 1]))
    assert read_data(tmp_path / "one.npz")["all"].items[0].shape == (3, 3)


def test_npz_faults(tmp_path):
    np.savez(tmp_path / "nox.npz", images=np.zeros((2, 3, 3), np.uint8), y=np.array([0, 1]))
    with pytest.raises(DataError) as excinfo:
        read_data(tmp_path / "nox.npz")
    assert _error(excinfo) == f"{tmp_path / 'nox.npz'}: missing array 'x' (found: images, y)"

    np.savez(tmp_path / "len.npz", x=np.zeros((3, 3, 3), np.uint8), y=np.array([0, 1]))
    with pytest.raises(DataError, match="'x' has 3 rows but 'y' has 2"):
        read_data(tmp_path / "len.npz")

    np.savez(tmp_path / "float.npz", x=np.zeros((2, 3, 3), np.float32), y=np.array([0, 1]))
    with pytest.raises(DataError, match="must be uint8"):
        read_data(tmp_path / "float.npz")

    objects = np.empty(2, dtype=object)
    objects[:] = [{"a": 1}, {"b": 2}]
    np.savez(tmp_path / "obj.npz", x=objects, y=np.array([0, 1]))
    with pytest.raises(DataError, match="without unpickling"):
        read_data(tmp_path / "obj.npz")

    with pytest.raises(DataError, match="not a readable .npz"):
        read_data(_write(tmp_path / "junk.npz", b"not a zip"))


# --------------------------------------------------------------------------- unlabelled inputs

def test_unlabelled_inputs(tmp_path):
    _png(tmp_path / "flat" / "a.png")
    _png(tmp_path / "flat" / "sub" / "b.png")
    flat = read_data(tmp_path / "flat", labelled=False)["all"]
    assert flat.labels is None and len(flat) == 2 and flat.modality == "image"

    image = _png(tmp_path / "one.png")
    single = read_data(image, labelled=False)["all"]
    assert single.items == [str(image)] and single.labels is None
    with pytest.raises(DataError, match="a single image has no label"):
        read_data(image)

    text = _write(tmp_path / "review.txt", "A whole review.\nOn two lines.")
    doc = read_data(text, labelled=False, classes=["neg", "pos"])["all"]
    assert doc.items == ["A whole review.\nOn two lines."]
    assert doc.classes == ["neg", "pos"]

    table = _write(tmp_path / "texts.csv", "text\nfirst one\nsecond one\n")
    rows = read_data(table, labelled=False)["all"]
    assert rows.items == ["first one", "second one"] and rows.labels is None

    labelled_table = _write(tmp_path / "both.tsv", "a long sentence\t1\nanother sentence\t0\n")
    rows = read_data(labelled_table, labelled=False)["all"]
    assert rows.items == ["a long sentence", "another sentence"] and rows.labels is None


# --------------------------------------------------------------------------- Samples

def _samples(labels, classes=("a", "b")):
    n = len(labels)
    return Samples("text", [f"t{i}" for i in range(n)], np.array(labels), list(classes),
                   [f"d.csv: line {i + 2}" for i in range(n)], "d.csv")


def test_samples_subset_and_counts():
    samples = _samples([0, 1, 1, 0, 1])
    part = samples.subset([4, 0])
    assert part.items == ["t4", "t0"] and part.labels.tolist() == [1, 0]
    assert part.classes == ["a", "b"] and part.origins == ["d.csv: line 6", "d.csv: line 2"]
    assert samples.class_counts() == {"a": 2, "b": 3}
    assert len(samples.subset(np.array([True, False, False, False, True]))) == 2


def test_samples_with_classes():
    samples = _samples([0, 1, 1], classes=["meh", "pos"])
    moved = samples.with_classes(["neg", "pos", "meh"])
    assert moved.labels.tolist() == [2, 1, 1]
    with pytest.raises(DataError) as excinfo:
        samples.with_classes(["neg", "pos"])
    assert _error(excinfo) == "d.csv: line 2: label 'meh' is not one of the model's classes: neg, pos"


def test_fingerprint(tmp_path):
    a = _samples([0, 1])
    assert a.fingerprint() == _samples([0, 1]).fingerprint()
    assert a.fingerprint() != _samples([1, 0]).fingerprint()
    image = _png(tmp_path / "x.png")
    images = Samples("image", [str(image)], np.array([0]), ["a"], [str(image)], str(tmp_path))
    before = images.fingerprint()
    assert before == images.fingerprint()
    os.utime(image, ns=(1, 1))
    assert images.fingerprint() != before
    arrays = Samples("image", [np.zeros((2, 2), np.uint8)], None, [], ["r0"], "x.npz")
    changed = Samples("image", [np.ones((2, 2), np.uint8)], None, [], ["r0"], "x.npz")
    assert arrays.fingerprint() != changed.fingerprint()


# --------------------------------------------------------------------------- shared data

@pytest.mark.integration
def test_real_hymenoptera():
    splits = read_data(_needs(SHARED / "hymenoptera"))
    assert list(splits) == ["train", "val"]
    assert splits["train"].classes == ["ants", "bees"]
    assert splits["train"].class_counts() == {"ants": 124, "bees": 121}
    assert splits["val"].class_counts() == {"ants": 70, "bees": 83}


@pytest.mark.integration
@pytest.mark.parametrize("name", ["amazon_cells", "imdb", "yelp"])
def test_real_uci_sentiment(name):
    samples = read_data(_needs(SHARED / "uci_sentiment" / f"{name}_labelled.txt"))["all"]
    assert len(samples) == 1000
    assert samples.class_counts() == {"0": 500, "1": 500}
    assert all(samples.items)


@pytest.mark.integration
def test_real_imdb_archive():
    splits = read_data(_needs(SHARED / "imdb" / "aclImdb_v1_sup.tar.gz"))
    assert list(splits) == ["train", "test"]
    for split in splits.values():
        assert split.class_counts() == {"neg": 12500, "pos": 12500}


@pytest.mark.integration
def test_real_digits():
    samples = read_data(_needs(SHARED / "digits" / "usps_train.npz"))["all"]
    assert len(samples) == 7291
    assert samples.classes == [str(i) for i in range(10)]
    assert samples.items[0].shape == (16, 16)
