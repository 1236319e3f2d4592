"""Property-based fuzzing of every reader: arbitrary bytes and structured near-misses give
either data or a one-line :class:`~transferkit.errors.TransferkitError`, never another
exception.

Two profiles: ``quick`` (the default, part of ``make test``: derandomized, a few dozen
examples per reader) and ``long`` (``make fuzz``: ``TRANSFERKIT_FUZZ=long``, 500
random examples per reader in each round, failures kept in ``.hypothesis/`` and replayed first).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from transferkit.errors import TransferkitError  # noqa: E402

settings.register_profile("quick", max_examples=int(os.environ.get("TRANSFERKIT_FUZZ_EXAMPLES", 25)),
                          deadline=None, derandomize=True, database=None,
                          suppress_health_check=list(HealthCheck))
settings.register_profile("long", max_examples=int(os.environ.get("TRANSFERKIT_FUZZ_EXAMPLES", 500)),
                          deadline=None, suppress_health_check=list(HealthCheck))
PROFILE = settings.get_profile(os.environ.get("TRANSFERKIT_FUZZ", "quick"))


def fuzz(scale: float = 1.0):
    """The profile's settings, with ``scale`` times its examples (slow readers get fewer)."""
    return settings(PROFILE, max_examples=max(3, int(PROFILE.max_examples * scale)))


def data_or_refusal(fn, *args, **kwargs):
    """``fn(...)``'s result, or ``None`` when it refused with a one-line TransferkitError;
    any other exception fails the property."""
    try:
        return fn(*args, **kwargs)
    except TransferkitError as exc:
        message = str(exc)
        assert message and "\n" not in message, repr(message)
        return None


# --------------------------------------------------------------------------- building blocks

#: characters that break tables: separators, quotes, line ends, a BOM, odd spaces
TABLE_CHARS = st.sampled_from(list(",;|\t\"'\r\n \ufeff\u00e9\u2028\x00") + list("abcxyz019.-"))
FIELD = st.text(alphabet=TABLE_CHARS, max_size=12) | st.sampled_from(
    ["label", "text", "image", "path", "class", "a.png", "img/1.jpg", "0.5", "1", "2", "", "nan",
     "-1", "1e309", "pos", "neg", "\"unterminated"])
ROWS = st.lists(st.lists(FIELD, min_size=0, max_size=5), min_size=0, max_size=12)


def table_bytes(rows, delimiter: str, line_end: str, bom: bool, mangle: bytes | None) -> bytes:
    text = line_end.join(delimiter.join(fields) for fields in rows)
    data = ("\ufeff" if bom else "").encode() + text.encode("utf-8", "surrogatepass")
    if mangle:
        cut = len(data) // 2
        data = data[:cut] + mangle + data[cut:]
    return data


def safe_name(min_size: int = 1):
    """A file or folder name the OS accepts (no separator, no NUL, not . or ..)."""
    return st.text(alphabet=st.characters(blacklist_characters="/\x00",
                                          blacklist_categories=("Cs",)),
                   min_size=min_size, max_size=10).filter(lambda s: s not in (".", ".."))


# --------------------------------------------------------------------------- tables

@fuzz()
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".csv", ".tsv", ".txt"]),
       labelled=st.booleans())
def test_table_arbitrary_bytes(data, suffix, labelled):
    from transferkit.data import read_data

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"t{suffix}"
        path.write_bytes(data)
        data_or_refusal(read_data, path, labelled=labelled)


@fuzz()
@given(rows=ROWS, delimiter=st.sampled_from([",", ";", "\t", "|"]),
       line_end=st.sampled_from(["\n", "\r\n", "\r"]), bom=st.booleans(),
       mangle=st.none() | st.binary(min_size=1, max_size=3),
       suffix=st.sampled_from([".csv", ".tsv", ".txt"]), labelled=st.booleans(),
       columns=st.dictionaries(st.sampled_from(["text_column", "image_column", "label_column"]),
                               st.sampled_from(["text", "label", "image", "nope", "column 1"]),
                               max_size=2))
def test_table_near_misses(rows, delimiter, line_end, bom, mangle, suffix, labelled, columns):
    from transferkit.data import read_data

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"t{suffix}"
        path.write_bytes(table_bytes(rows, delimiter, line_end, bom, mangle))
        (Path(tmp) / "a.png").write_bytes(b"")  # an image path some rows name
        got = data_or_refusal(read_data, path, labelled=labelled, **columns)
        if got is not None:
            for split in got.values():
                assert len(split) > 0 and len(split.origins) == len(split.items)


@fuzz(0.5)
@given(rows=ROWS, domain=st.sampled_from(["domain", "text", "nope"]))
def test_domain_table_near_misses(rows, domain):
    from transferkit.data import read_domains

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.csv"
        path.write_bytes(table_bytes([["text", "label", "domain"]] + rows, ",", "\n", False, None))
        data_or_refusal(read_domains, path, domain)


# --------------------------------------------------------------------------- text folders

FILE_BYTES = st.binary(max_size=40) | st.sampled_from(
    [b"good film", b"\xef\xbb\xbfbom text", b"caf\xe9", b"", b"  \n ", b"a\x00b"])


@fuzz(0.6)
@given(layout=st.dictionaries(safe_name(), st.dictionaries(
           safe_name().map(lambda s: s + ".txt") | safe_name(), FILE_BYTES, max_size=3),
           max_size=4),
       split=st.sampled_from([None, "train", "val", "test"]), labelled=st.booleans())
def test_text_folder(layout, split, labelled):
    from transferkit.data import read_data

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        base = root / split if split else root
        base.mkdir(parents=True)
        for cls, files in layout.items():
            folder = base / cls
            folder.mkdir(exist_ok=True)
            for name, content in files.items():
                (folder / name).write_bytes(content)
        data_or_refusal(read_data, root, labelled=labelled)


# --------------------------------------------------------------------------- archives

MEMBER = st.tuples(
    st.sampled_from(["a/pos/1.txt", "a/neg/2.txt", "train/pos/x.txt", "test/neg/y.txt",
                     "../evil.txt", "/abs/pos/z.txt", "pos/.hidden.txt", "top.txt",
                     "a/unsup/u.txt", "a/pos/dir", "x/y/z/w/v.txt", "\u00e9/neg/q.txt"]),
    FILE_BYTES, st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE,
                                 tarfile.LNKTYPE, tarfile.FIFOTYPE]))


def tar_bytes(members, compress: bool) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if compress else "w") as archive:
        for name, content, kind in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.REGTYPE:
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
            else:
                info.linkname = "a/pos/1.txt"
                archive.addfile(info)
    return buffer.getvalue()


@fuzz()
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".tar.gz", ".tgz", ".tar"]),
       gzipped=st.booleans())
def test_archive_arbitrary_bytes(data, suffix, gzipped):
    from transferkit.data import read_data

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"a{suffix}"
        path.write_bytes(gzip.compress(data) if gzipped else data)
        data_or_refusal(read_data, path)


@fuzz()
@given(members=st.lists(MEMBER, max_size=8), compress=st.booleans(),
       cut=st.none() | st.floats(0.0, 1.0), labelled=st.booleans())
def test_archive_near_misses(members, compress, cut, labelled):
    from transferkit.data import read_data

    data = tar_bytes(members, compress)
    if cut is not None:
        data = data[:int(len(data) * cut)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("a.tar.gz" if compress else "a.tar")
        path.write_bytes(data)
        data_or_refusal(read_data, path, labelled=labelled)
        assert not (Path(tmp).parent / "evil.txt").exists()  # nothing is extracted


# --------------------------------------------------------------------------- .npz

DTYPES = st.sampled_from(["uint8", "int64", "int8", "float32", "float64", "bool", "complex64",
                          "<U3", "|S3", "object", "uint16", "datetime64[s]"])
ARRAY = st.tuples(DTYPES, st.lists(st.integers(0, 4), max_size=4))


def make_array(dtype: str, shape: list[int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape)) if shape else 1
    if dtype == "object":
        return np.array([{"k": i} for i in range(size)] + [None], dtype=object)[:size].reshape(shape)
    if dtype.startswith(("<U", "|S")):
        return rng.choice(["a", "b", "", "caf"], size=size).astype(dtype).reshape(shape)
    if dtype.startswith("datetime"):
        return np.zeros(shape, dtype=dtype)
    return (rng.normal(size=size) * 3).astype(dtype).reshape(shape)


@fuzz()
@given(arrays=st.dictionaries(st.sampled_from(["x", "y", "z", "X"]), ARRAY, max_size=3),
       seed=st.integers(0, 5), compressed=st.booleans(), cut=st.none() | st.floats(0.0, 1.0),
       labelled=st.booleans())
def test_npz_near_misses(arrays, seed, compressed, cut, labelled):
    from transferkit.data import read_data

    buffer = io.BytesIO()
    save = np.savez_compressed if compressed else np.savez
    save(buffer, **{name: make_array(dtype, shape, seed) for name, (dtype, shape) in arrays.items()})
    data = buffer.getvalue()
    if cut is not None:
        data = data[:int(len(data) * cut)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.npz"
        path.write_bytes(data)
        data_or_refusal(read_data, path, labelled=labelled)


@fuzz()
@given(data=st.binary(max_size=300), zipped=st.booleans())
def test_npz_arbitrary_bytes(data, zipped):
    from transferkit.data import read_data

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.npz"
        if zipped:  # a real zip whose members are garbage .npy files
            with zipfile.ZipFile(path, "w") as archive:
                archive.writestr("x.npy", data)
                archive.writestr("y.npy", data[::-1])
        else:
            path.write_bytes(data)
        data_or_refusal(read_data, path)


# --------------------------------------------------------------------------- image files

def image_bytes(fmt: str, mode: str, size: tuple[int, int], seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    image = image.convert(mode) if mode != "RGB" else image
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt)
    except (OSError, ValueError, KeyError):  # a mode this format cannot hold
        image.convert("RGB").save(buffer, format=fmt)
    return buffer.getvalue()


@fuzz()
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".png", ".jpg", ".gif", ".webp",
                                                             ".tif", ".bmp", ".ppm"]))
def test_image_arbitrary_bytes(data, suffix):
    from transferkit.data import check_image, open_image

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"i{suffix}"
        path.write_bytes(data)
        data_or_refusal(check_image, str(path), str(path))
        image = data_or_refusal(open_image, str(path), str(path), target_size=32)
        assert image is None or image.mode == "RGB"


@fuzz()
@given(fmt=st.sampled_from(["PNG", "JPEG", "GIF", "WEBP", "TIFF", "BMP", "PPM"]),
       mode=st.sampled_from(["RGB", "L", "RGBA", "P", "CMYK", "1", "I", "F", "LA", "I;16"]),
       size=st.tuples(st.integers(1, 24), st.integers(1, 24)), seed=st.integers(0, 3),
       damage=st.sampled_from(["none", "truncate", "flip", "insert"]),
       where=st.floats(0.0, 1.0), byte=st.integers(0, 255))
def test_image_near_misses(fmt, mode, size, seed, damage, where, byte):
    from transferkit.data import check_image, open_image

    data = bytearray(image_bytes(fmt, mode, size, seed))
    at = min(len(data) - 1, int(len(data) * where))
    if damage == "truncate":
        data = data[:at]
    elif damage == "flip":
        data[at] = byte
    elif damage == "insert":
        data[at:at] = bytes([byte]) * 4
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"i.{fmt.lower()}"
        path.write_bytes(bytes(data))
        data_or_refusal(check_image, str(path), str(path))
        image = data_or_refusal(open_image, str(path), str(path), target_size=16)
        assert image is None or image.mode == "RGB"
        if damage == "none":
            assert image is not None and image.size == size


# --------------------------------------------------------------------------- bundles

@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    """A real bundle of the tiny CNN, trained for nothing (the head as initialised)."""
    from transferkit.backbones import build_backbone
    from transferkit.bundle import save_bundle
    from transferkit.heads import HeadConfig, build_model
    from transferkit.strategies.base import get_strategy

    bb = build_backbone("tiny-cnn")
    model = build_model(bb, HeadConfig(), ["cat", "dog"])
    strategy = get_strategy("freeze")
    strategy.attach(model)
    return save_bundle(tmp_path_factory.mktemp("bundle") / "b", model, strategy, touched=[],
                       grayscale=False)


JSON = st.recursive(st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats()
                    | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)


#: JSON nested beyond any parser's recursion limit (found by hand: it crashed run_config.json)
NESTED = st.integers(1, 100_000).map(lambda n: b"[" * n + b"]" * n)


def mutate(config: dict, path: list, value, delete: bool) -> dict:
    """``config`` with the value at ``path`` (keys chosen by index, modulo) replaced or
    deleted."""
    config = json.loads(json.dumps(config))
    node = config
    for step in path[:-1]:
        if isinstance(node, dict) and node:
            child = node[sorted(node)[step % len(node)]]
            if not isinstance(child, (dict, list)) or not child:
                break
            node = child
        elif isinstance(node, list) and node:
            child = node[step % len(node)]
            if not isinstance(child, (dict, list)) or not child:
                break
            node = child
    if isinstance(node, dict) and node:
        key = sorted(node)[path[-1] % len(node)]
        if delete:
            del node[key]
        else:
            node[key] = value
    elif isinstance(node, list) and node:
        node[path[-1] % len(node)] = value
    return config


@fuzz(0.6)
@given(path=st.lists(st.integers(0, 50), min_size=1, max_size=3), value=JSON,
       delete=st.booleans(), raw=st.none() | st.binary(max_size=60) | NESTED)
def test_bundle_config(tiny_bundle, path, value, delete, raw):
    from transferkit.bundle import load_model

    config = json.loads((tiny_bundle / "config.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "b"
        bundle.mkdir()
        shutil.copy(tiny_bundle / "model.safetensors", bundle / "model.safetensors")
        text = raw if raw is not None else json.dumps(mutate(config, path, value, delete)).encode()
        (bundle / "config.json").write_bytes(text)
        data_or_refusal(load_model, bundle)


# --------------------------------------------------------------------------- run_config.json

@fuzz()
@given(path=st.lists(st.integers(0, 50), min_size=1, max_size=3), value=JSON,
       delete=st.booleans(), raw=st.none() | st.binary(max_size=60) | NESTED)
def test_run_config(path, value, delete, raw):
    from transferkit.api import recorded_run_config
    from transferkit.config import RunConfig

    recorded = RunConfig().to_dict()
    with tempfile.TemporaryDirectory() as tmp:
        text = raw if raw is not None else json.dumps(mutate(recorded, path, value, delete)).encode()
        (Path(tmp) / "run_config.json").write_bytes(text)
        data_or_refusal(recorded_run_config, tmp)


# --------------------------------------------------------------------------- word vectors

VECTOR_LINE = st.lists(st.sampled_from(["the", "0.1", "-2", "nan", "inf", "1e999", "x", "",
                                        "3", "\u00e9t\u00e9", "0x1", "1,5"]), max_size=5)


@fuzz()
@given(lines=st.lists(VECTOR_LINE, max_size=8), header=st.none() | st.tuples(
           st.integers(-1, 5), st.integers(-1, 5)), raw=st.none() | st.binary(max_size=200),
       gz=st.booleans(), max_vocab=st.none() | st.integers(0, 3))
def test_vectors_file(lines, header, raw, gz, max_vocab):
    from transferkit.backbones.wordvec import read_word_vectors

    text = "\n".join(" ".join(parts) for parts in lines)
    if header is not None:
        text = f"{header[0]} {header[1]}\n" + text
    data = raw if raw is not None else text.encode()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("v.txt.gz" if gz else "v.txt")
        path.write_bytes(gzip.compress(data) if gz else data)
        got = data_or_refusal(read_word_vectors, path, max_vocab=max_vocab)
        if got is not None:
            words, vectors = got
            assert len(words) == vectors.shape[0] and bool(vectors.isfinite().all())
