"""The bad-input corpus: every input a hostile or careless user might give transferkit.

Each case builds its files under a folder (nothing binary is committed: images, tables,
archives, arrays, bundles and weights files are all generated here) and says the command
to run, the exit code it must give, and what its one line must name.  Cases that must
*work* (odd but valid images, BOM / CRLF tables, links, ...) expect exit code 0 and check
the output instead.

    python tests/bad_inputs/corpus.py OUT        # write every case to OUT/<case>/ to look at

``tests/test_bad_inputs.py`` runs each case through ``transferkit.cli.main`` in-process.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import struct
import sys
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

#: a label of each bundle's classes
IMAGE_CLASSES = ("cat", "dog")
TEXT_CLASSES = ("neg", "pos")


@dataclass
class Case:
    """What to run and what it must give."""

    argv: list
    code: int = 2
    #: strings the one ``error:`` line must hold (the file, line or option, and the fault)
    names: tuple = ()
    #: strings stderr must not hold
    never: tuple = ()
    #: for cases that work: ``check(out, err)`` asserts on the output
    check: Callable[[str, str], None] | None = None
    #: ``setup(monkeypatch)`` for faults the test machine cannot make (permissions as root)
    setup: Callable | None = None


@dataclass
class Context:
    """Where a case is built, and the shared bundles and model folders it may use."""

    root: Path
    image_bundle: Path
    text_bundle: Path
    hf_folder: Callable[[], Path] = field(default=lambda: Path("."))


CASES: dict[str, Callable[[Context], Case]] = {}


def case(fn: Callable[[Context], Case]) -> Callable[[Context], Case]:
    CASES[fn.__name__] = fn
    return fn


# --------------------------------------------------------------------------- builders

def png(path: Path, color=(200, 40, 40), size=(12, 12), mode="RGB", **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, color)
    (image.convert(mode) if mode != "RGB" else image).save(path, **save)
    return path


def image_folder(root: Path, per_class: int = 3, classes=IMAGE_CLASSES) -> Path:
    for ci, name in enumerate(classes):
        for i in range(per_class):
            png(root / name / f"{name}_{i}.png", (40 + 80 * ci, 60, 200 - 30 * i))
    return root


def text_rows(n: int = 4) -> list[tuple[str, str]]:
    words = {"pos": ["good", "great", "love", "nice"], "neg": ["bad", "awful", "hate", "poor"]}
    return [(f"this is {words[label][i % 4]} really", label) for label in TEXT_CLASSES
            for i in range(n)]


def csv_file(path: Path, rows, header=("text", "label"), delimiter=",", newline="\n",
             encoding="utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ([delimiter.join(header)] if header else []) + [delimiter.join(r) for r in rows]
    path.write_bytes(newline.join(lines).encode(encoding) + newline.encode())
    return path


def fit(data, ctx: Context, *extra) -> list:
    return ["fit", data, "--backbone", "tiny-cnn", "--epochs", "1", "--out", ctx.root / "run",
            "-q", *extra]


def fit_text(data, ctx: Context, *extra) -> list:
    return ["fit", data, "--backbone", "tiny-wordvec", "--epochs", "1", "--out",
            ctx.root / "run", "-q", *extra]


def with_backbone(args: list, *backbone) -> list:
    """A ``fit`` / ``fit_text`` command with its ``--backbone`` value replaced by ``backbone``
    (one or more arguments)."""
    i = args.index("--backbone") + 1
    return args[:i] + list(backbone) + args[i + 1:]


def evaluated(n: int) -> Callable[[str, str], None]:
    """Check that ``evaluate --json`` scored ``n`` samples."""
    def check(out: str, err: str) -> None:
        assert json.loads(out)["n"] == n, out
    return check


def predicted(n: int, *expect: str) -> Callable[[str, str], None]:
    """Check that ``predict --json`` gave ``n`` rows (naming each ``expect``)."""
    def check(out: str, err: str) -> None:
        rows = json.loads(out)
        assert len(rows) == n, rows
        inputs = " ".join(r["input"] for r in rows)
        for name in expect:
            assert name in inputs, (name, inputs)
    return check


def png_with_size(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def npz(path: Path, **arrays) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def images_u8(n: int = 6) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (n, 8, 8, 3), dtype=np.uint8)


def tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def review_archive(path: Path) -> Path:
    return tar_gz(path, {f"aclImdb/{split}/{label}/{i}.txt": f"{label} review {i}".encode()
                         for split in ("train", "test") for label in TEXT_CLASSES
                         for i in range(3)})


def copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_config(bundle: Path, edit: Callable[[dict], object]) -> Path:
    path = bundle / "config.json"
    config = json.loads(path.read_text())
    result = edit(config)
    path.write_text(json.dumps(config if result is None else result))
    return bundle


def hostile_pth(path: Path) -> Path:
    """A .pth that unpickles to a call of os.system: never to be loaded."""
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo owned > /dev/null",))

    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"weight": Payload()}, path, pickle_module=pickle)
    return path


def unlistable(folder: Path):
    """A folder that cannot be listed: chmod 000, or (as root, who may list anything) an
    ``os.scandir`` that refuses it as the kernel would."""
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        folder.chmod(0)
        return None

    real = os.scandir

    def setup(monkeypatch):
        def scandir(path="."):
            if os.path.realpath(os.fspath(path)) == os.path.realpath(folder):
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real(path)
        monkeypatch.setattr(os, "scandir", scandir)
    return setup


# --------------------------------------------------------------------------- images

@case
def truncated_jpeg(ctx):
    data = image_folder(ctx.root / "d")
    bad = png(data / "cat" / "broken.jpg", format="JPEG", quality=95)
    bad.write_bytes(bad.read_bytes()[:200])
    return Case(fit(data, ctx), names=("broken.jpg", "--skip-bad"))


@case
def zero_byte_image(ctx):
    data = image_folder(ctx.root / "d")
    (data / "dog" / "empty.png").write_bytes(b"")
    return Case(fit(data, ctx), names=("empty.png", "0 bytes", "--skip-bad"))


@case
def text_named_jpeg(ctx):
    data = image_folder(ctx.root / "d")
    (data / "cat" / "note.jpg").write_text("this is not a picture")
    return Case(fit(data, ctx), names=("note.jpg", "not a readable image", "--skip-bad"))


@case
def html_named_png(ctx):
    data = image_folder(ctx.root / "d")
    (data / "dog" / "page.png").write_text("<html><body>404 Not Found</body></html>")
    return Case(fit(data, ctx), names=("page.png", "not a readable image"))


@case
def decompression_bomb(ctx):
    data = image_folder(ctx.root / "d")
    png_with_size(data / "cat" / "bomb.png", 20000, 20000)
    return Case(fit(data, ctx), names=("bomb.png", "decompression-bomb", "--skip-bad"))


@case
def placeholder_gif(ctx):
    from transferkit.data import images

    data = image_folder(ctx.root / "d")
    gif = png(data / "cat" / "imageNotFound.gif", (128, 128, 128), format="GIF")
    raw = gif.read_bytes()
    key = (len(raw), __import__("hashlib").sha256(raw).hexdigest())

    def setup(monkeypatch):  # this file stands for the host's placeholder picture
        monkeypatch.setitem(images.KNOWN_PLACEHOLDERS, key, "a placeholder picture, not a photo")
        monkeypatch.setattr(images, "_PLACEHOLDER_SIZES", images._PLACEHOLDER_SIZES | {len(raw)})
    return Case(fit(data, ctx), names=("imageNotFound.gif", "placeholder", "--skip-bad"),
                setup=setup)


@case
def skip_bad_leaves_bad_images_out(ctx):
    data = image_folder(ctx.root / "d")
    (data / "cat" / "empty.png").write_bytes(b"")
    return Case(["evaluate", ctx.image_bundle, data, "--json"], code=2,
                names=("empty.png", "0 bytes"))


@case
def cmyk_jpeg(ctx):
    data = image_folder(ctx.root / "d")
    png(data / "cat" / "cmyk.jpg", mode="CMYK", format="JPEG")
    return Case(["evaluate", ctx.image_bundle, data, "--json"], code=0, check=evaluated(7))


@case
def png_16_bit(ctx):
    data = image_folder(ctx.root / "d")
    data16 = (np.arange(144, dtype=np.uint16).reshape(12, 12) * 400)
    Image.fromarray(data16).save(data / "dog" / "deep.png")
    assert Image.open(data / "dog" / "deep.png").mode.startswith("I")
    return Case(["evaluate", ctx.image_bundle, data, "--json"], code=0, check=evaluated(7))


@case
def rgba_png(ctx):
    data = image_folder(ctx.root / "d")
    png(data / "cat" / "alpha.png", mode="RGBA")
    return Case(["evaluate", ctx.image_bundle, data, "--json"], code=0, check=evaluated(7))


@case
def palette_png_with_transparency(ctx):
    data = image_folder(ctx.root / "d")
    image = Image.new("P", (10, 10), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] * 128)
    image.save(data / "dog" / "pal.png", transparency=0)
    return Case(["evaluate", ctx.image_bundle, data, "--json"], code=0, check=evaluated(7))


@case
def one_pixel_image(ctx):
    data = image_folder(ctx.root / "d")
    png(data / "cat" / "dot.png", size=(1, 1))
    return Case(["evaluate", ctx.image_bundle, data, "--json"], code=0, check=evaluated(7))


@case
def animated_gif(ctx):
    data = image_folder(ctx.root / "d")
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(data / "dog" / "anim.gif", save_all=True, append_images=frames[1:])
    return Case(["evaluate", ctx.image_bundle, data, "--json"], code=0, check=evaluated(7))


@case
def webp_image(ctx):
    data = image_folder(ctx.root / "d")
    png(data / "cat" / "pic.webp", format="WEBP")
    return Case(["evaluate", ctx.image_bundle, data, "--json"], code=0, check=evaluated(7))


@case
def exif_rotated_jpeg(ctx):
    data = image_folder(ctx.root / "d")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90
    png(data / "dog" / "rotated.jpg", size=(16, 8), format="JPEG", exif=exif.tobytes())
    return Case(["evaluate", ctx.image_bundle, data, "--json"], code=0, check=evaluated(7))


@case
def image_named_with_invalid_utf8(ctx):
    data = image_folder(ctx.root / "d")
    name = os.fsencode(data / "cat") + b"/caf\xe9.png"
    png(Path(os.fsdecode(name)))
    return Case(["predict", ctx.image_bundle, data / "cat", "--json"], code=0,
                check=predicted(4, "caf"))


@case
def broken_image_named_with_invalid_utf8(ctx):
    data = image_folder(ctx.root / "d")
    Path(os.fsdecode(os.fsencode(data / "dog") + b"/na\xefve.png")).write_bytes(b"junk")
    return Case(fit(data, ctx), names=("na\\xefve.png", "not a readable image"))


@case
def fit_with_invalid_utf8_file_name(ctx):
    """The feature cache keys such a file by its bytes (this once crashed the cache)."""
    data = image_folder(ctx.root / "d", per_class=4)
    png(Path(os.fsdecode(os.fsencode(data / "cat") + b"/\xff\xfe.png")))
    return Case(["fit", data, "--backbone", "tiny-cnn", "--epochs", "1", "--out",
                 ctx.root / "run", "-q", "--cache-dir", ctx.root / "cache"], code=0)


@case
def skip_bad_with_invalid_utf8_name(ctx):
    """A skipped file whose name is not UTF-8 is listed (escaped) and the run is written."""
    data = image_folder(ctx.root / "d", per_class=4)
    Path(os.fsdecode(os.fsencode(data / "dog") + b"/bro\xe9ken.png")).write_bytes(b"junk")

    def check(out, err):
        assert "bro\\xe9ken.png" in err, err
        assert (ctx.root / "run" / "bundle" / "config.json").exists()
    return Case(["fit", data, "--backbone", "tiny-cnn", "--epochs", "1", "--out", ctx.root / "run",
                 "--skip-bad", "--cache-dir", ctx.root / "cache"], code=0, check=check)


# --------------------------------------------------------------------------- image folders

@case
def empty_class_folder(ctx):
    data = image_folder(ctx.root / "d")
    (data / "bird").mkdir()
    return Case(fit(data, ctx), names=("bird", "holds no images"))


@case
def single_class(ctx):
    data = image_folder(ctx.root / "d", classes=("cat",))
    return Case(fit(data, ctx), names=("only 1 class", "cat"))


@case
def no_class_folders(ctx):
    data = ctx.root / "d"
    png(data / "a.png")
    png(data / "b.png")
    return Case(fit(data, ctx), names=(str(data), "no class subfolders"))


@case
def empty_folder(ctx):
    (ctx.root / "d").mkdir()
    return Case(fit(ctx.root / "d", ctx), names=("no class subfolders",))


@case
def nested_folders(ctx):
    data = image_folder(ctx.root / "d")
    png(data / "cat" / "deep" / "deeper" / "x.png")
    return Case(["evaluate", ctx.image_bundle, data, "--json"], code=0, check=evaluated(7))


@case
def hidden_files(ctx):
    data = image_folder(ctx.root / "d")
    (data / "cat" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (data / "dog" / "._dog_0.png").write_bytes(b"\0\5\26\7 AppleDouble")
    png(data / ".cache" / "x.png")
    png(data / "cat" / ".thumbs" / "t.png")
    return Case(["evaluate", ctx.image_bundle, data, "--json"], code=0, check=evaluated(6))


@case
def symlink_loop(ctx):
    data = image_folder(ctx.root / "d")
    os.symlink("..", data / "cat" / "loop")
    os.symlink("../..", data / "dog" / "up")

    def check(out, err):
        assert json.loads(out)["n"] == 6, out
        assert "skipped 2 link(s)" in err, err
    return Case(["evaluate", ctx.image_bundle, data, "--json"], code=0, check=check)


@case
def symlink_across_splits(ctx):
    """The same pictures linked into train, val and test are read once (in train)."""
    data = ctx.root / "d"
    image_folder(data / "train", per_class=4)
    for split in ("val", "test"):
        os.symlink("train", data / split)

    def check(out, err):
        assert json.loads(out)["n"] == 8, out
    return Case(["evaluate", ctx.image_bundle, data, "--json"], code=0, check=check)


@case
def symlink_to_outside_folder(ctx):
    outside = image_folder(ctx.root / "elsewhere", per_class=2)
    data = image_folder(ctx.root / "d")
    os.symlink(outside / "cat", data / "cat" / "more")
    return Case(["evaluate", ctx.image_bundle, data, "--json"], code=0, check=evaluated(8))


@case
def broken_symlink(ctx):
    data = image_folder(ctx.root / "d")
    os.symlink(ctx.root / "gone.png", data / "cat" / "gone.png")
    return Case(fit(data, ctx), names=("gone.png", "not found"))


@case
def unlistable_subfolder(ctx):
    data = image_folder(ctx.root / "d")
    locked = data / "dog" / "locked"
    png(locked / "x.png")
    return Case(fit(data, ctx), names=("locked", "cannot list folder"), setup=unlistable(locked))


@case
def named_pipe_among_images(ctx):
    """A FIFO named like an image would block the reader for ever."""
    data = image_folder(ctx.root / "d")
    os.mkfifo(data / "cat" / "pipe.png")
    return Case(fit(data, ctx, "--skip-bad"), names=("pipe.png", "not a regular file"))


# --------------------------------------------------------------------------- tables


@case
def named_pipe_as_table(ctx):
    os.mkfifo(ctx.root / "t.csv")
    return Case(fit_text(ctx.root / "t.csv", ctx), names=("t.csv", "not a regular file"))


@case
def predict_text_bundle_on_endless_device(ctx):
    """/dev/zero never ends: it is refused, not read."""
    return Case(["predict", ctx.text_bundle, "/dev/zero"], names=("/dev/zero", "not a regular file"))

@case
def ragged_csv(ctx):
    path = csv_file(ctx.root / "t.csv", text_rows())
    path.write_text(path.read_text() + "one,two,three\n")
    return Case(fit_text(path, ctx), names=("t.csv", "line 10", "expected 2 fields"))


@case
def bom_csv(ctx):
    path = csv_file(ctx.root / "t.csv", text_rows(), encoding="utf-8-sig")
    return Case(["evaluate", ctx.text_bundle, path, "--json"], code=0, check=evaluated(8))


@case
def crlf_csv(ctx):
    path = csv_file(ctx.root / "t.csv", text_rows(), newline="\r\n")
    return Case(["evaluate", ctx.text_bundle, path, "--json"], code=0, check=evaluated(8))


@case
def cr_only_csv(ctx):
    """Old Mac line ends (a lone CR) once crashed the delimiter sniffing."""
    path = csv_file(ctx.root / "t.csv", text_rows(), newline="\r")
    return Case(["evaluate", ctx.text_bundle, path, "--json"], code=0, check=evaluated(8))


@case
def tsv_table(ctx):
    path = csv_file(ctx.root / "t.tsv", text_rows(), delimiter="\t")
    return Case(["evaluate", ctx.text_bundle, path, "--json"], code=0, check=evaluated(8))


@case
def non_utf8_csv(ctx):
    path = csv_file(ctx.root / "t.csv", text_rows() + [("caf\u00e9 latin-1", "pos")],
                    encoding="latin-1")
    return Case(fit_text(path, ctx), names=("t.csv", "line 10", "0xe9", "not valid UTF-8"))


@case
def header_only_csv(ctx):
    path = csv_file(ctx.root / "t.csv", [])
    return Case(fit_text(path, ctx), names=("t.csv", "no data rows"))


@case
def empty_csv(ctx):
    (ctx.root / "t.csv").write_bytes(b"")
    return Case(fit_text(ctx.root / "t.csv", ctx), names=("t.csv", "holds no rows"))


@case
def blank_lines_only_csv(ctx):
    (ctx.root / "t.csv").write_bytes(b"\n\n  \r\n\n")
    return Case(fit_text(ctx.root / "t.csv", ctx), names=("t.csv", "holds no rows"))


@case
def quoted_newlines_csv(ctx):
    path = ctx.root / "t.csv"
    rows = [f'"{t}\nsecond line, with a comma",{label}' for t, label in text_rows()]
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    return Case(["evaluate", ctx.text_bundle, path, "--json"], code=0, check=evaluated(8))


@case
def unterminated_quote_csv(ctx):
    path = ctx.root / "t.csv"
    path.write_text("text,label\ngood film,pos\n\"never closed,neg\nbad film,neg\n")
    return Case(fit_text(path, ctx), names=("t.csv", "line 3"))


@case
def nul_byte_csv(ctx):
    path = ctx.root / "t.csv"
    path.write_bytes(b"text,label\ngood film,pos\nbad\0film,neg\nok,pos\n")
    return Case(fit_text(path, ctx), names=("t.csv", "line 3"))


@case
def missing_image_paths_csv(ctx):
    data = image_folder(ctx.root / "d")
    rows = [(f"d/{c}/{c}_{i}.png", c) for c in IMAGE_CLASSES for i in range(3)]
    rows.append(("d/cat/gone.png", "cat"))
    path = csv_file(ctx.root / "t.csv", rows, header=("image", "label"))
    assert data.exists()
    return Case(fit(path, ctx), names=("t.csv", "line 8", "image file not found", "gone.png"))


@case
def empty_label(ctx):
    path = csv_file(ctx.root / "t.csv", text_rows() + [("no label here", "")])
    return Case(fit_text(path, ctx), names=("t.csv", "line 10", "empty label"))


@case
def continuous_labels(ctx):
    rows = [(f"house number {i}", f"{100 + i * 3.7:.2f}") for i in range(12)]
    path = csv_file(ctx.root / "t.csv", rows, header=("text", "price"))
    return Case(fit_text(path, ctx), names=("t.csv", "labels look continuous"))


@case
def one_column_csv(ctx):
    path = csv_file(ctx.root / "t.csv", [(t,) for t, _ in text_rows()], header=("text",))
    return Case(fit_text(path, ctx), names=("t.csv", "at least 2 columns"))


@case
def txt_without_tabs(ctx):
    path = ctx.root / "t.txt"
    path.write_text("good film pos\nbad film neg\n")
    return Case(fit_text(path, ctx), names=("t.txt", "holds no tab"))


@case
def label_column_not_found(ctx):
    path = csv_file(ctx.root / "t.csv", text_rows())
    return Case(fit_text(path, ctx, "--label-column", "sentiment_score"),
                names=("t.csv", "no column named 'sentiment_score'"))


@case
def single_class_csv(ctx):
    path = csv_file(ctx.root / "t.csv", [r for r in text_rows() if r[1] == "pos"])
    return Case(fit_text(path, ctx), names=("t.csv", "only 1 class"))


# --------------------------------------------------------------------------- archives

@case
def truncated_tar_gz(ctx):
    path = review_archive(ctx.root / "r.tar.gz")
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    return Case(fit_text(path, ctx), names=("r.tar.gz", "not a readable tar archive"))


@case
def gzip_that_is_not_tar(ctx):
    path = ctx.root / "r.tar.gz"
    path.write_bytes(gzip.compress(b"just some text, no archive\n" * 20))
    return Case(fit_text(path, ctx), names=("r.tar.gz", "not a readable tar archive"))


@case
def tar_without_texts(ctx):
    path = tar_gz(ctx.root / "r.tar.gz", {"a/pos/x.png": b"png?", "a/neg/y.csv": b"a,b"})
    return Case(fit_text(path, ctx), names=("r.tar.gz", "holds no .txt files"))


@case
def tar_texts_at_top_level(ctx):
    path = tar_gz(ctx.root / "r.tar.gz", {"a.txt": b"good", "b.txt": b"bad"})
    return Case(fit_text(path, ctx), names=("r.tar.gz", "not in class folders"))


@case
def tar_with_path_traversal(ctx):
    """Members named ../ are left out (never written anywhere); the rest are read."""
    members = {f"a/{label}/{i}.txt": f"{label} {i}".encode()
               for label in TEXT_CLASSES for i in range(3)}
    members.update({f"../../escape/{label}/x.txt": b"escaped" for label in TEXT_CLASSES})
    path = tar_gz(ctx.root / "r.tar.gz", members)

    def check(out, err):
        assert not (ctx.root.parent / "escape").exists()
        assert json.loads(out)["n"] == 6
    return Case(["evaluate", ctx.text_bundle, path, "--json"], code=0, check=check)


@case
def tar_member_not_utf8(ctx):
    path = tar_gz(ctx.root / "r.tar.gz", {"a/pos/1.txt": b"good", "a/neg/2.txt": b"caf\xe9"})
    return Case(fit_text(path, ctx), names=("r.tar.gz", "a/neg/2.txt", "not valid UTF-8"))


# --------------------------------------------------------------------------- .npz

@case
def npz_missing_y(ctx):
    return Case(fit(npz(ctx.root / "d.npz", x=images_u8()), ctx), names=("d.npz", "missing array 'y'"))


@case
def npz_object_array(ctx):
    y = np.array([{"label": i % 2} for i in range(6)], dtype=object)
    path = npz(ctx.root / "d.npz", x=images_u8(), y=y)
    return Case(fit(path, ctx), names=("d.npz", "without unpickling"))


@case
def npz_float_images(ctx):
    path = npz(ctx.root / "d.npz", x=images_u8().astype(np.float32), y=np.arange(6) % 2)
    return Case(fit(path, ctx), names=("d.npz", "must be uint8"))


@case
def npz_bad_shape(ctx):
    path = npz(ctx.root / "d.npz", x=np.zeros((6, 8, 8, 5), np.uint8), y=np.arange(6) % 2)
    return Case(fit(path, ctx), names=("d.npz", "shape (6, 8, 8, 5)"))


@case
def npz_length_mismatch(ctx):
    path = npz(ctx.root / "d.npz", x=images_u8(), y=np.arange(5) % 2)
    return Case(fit(path, ctx), names=("d.npz", "6 rows but 'y' has 5"))


@case
def npz_labels_2d(ctx):
    path = npz(ctx.root / "d.npz", x=images_u8(), y=np.zeros((6, 2), np.int64))
    return Case(fit(path, ctx), names=("d.npz", "must be 1-d"))


@case
def npz_continuous_labels(ctx):
    path = npz(ctx.root / "d.npz", x=images_u8(), y=np.linspace(0, 1, 6))
    return Case(fit(path, ctx), names=("d.npz", "row 1", "look continuous"))


@case
def npz_nan_label(ctx):
    path = npz(ctx.root / "d.npz", x=images_u8(), y=np.array([0, 1, np.nan, 0, 1, 0]))
    return Case(fit(path, ctx), names=("d.npz", "row 2", "not an integer"))


@case
def npy_named_npz(ctx):
    path = ctx.root / "d.npz"
    np.save(ctx.root / "d.npy", images_u8())
    (ctx.root / "d.npy").rename(path)
    return Case(fit(path, ctx), names=("d.npz", "single array"))


@case
def npz_truncated(ctx):
    path = npz(ctx.root / "d.npz", x=images_u8(), y=np.arange(6) % 2)
    path.write_bytes(path.read_bytes()[:300])
    return Case(fit(path, ctx), names=("d.npz",))


@case
def npz_no_rows(ctx):
    path = npz(ctx.root / "d.npz", x=np.zeros((0, 8, 8, 3), np.uint8), y=np.zeros(0, np.int64))
    return Case(fit(path, ctx), names=("d.npz", "holds no rows"))


@case
def npz_member_not_npy(ctx):
    """Found by fuzzing: a zip whose members are not .npy files once crashed the reader."""
    import zipfile

    path = ctx.root / "d.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", b"not an array")
        archive.writestr("y.npy", b"nor this")
    return Case(fit(path, ctx), names=("d.npz", "not a numpy array"))


# --------------------------------------------------------------------------- bundles

@case
def bundle_missing(ctx):
    return Case(["predict", ctx.root / "nope", ctx.root], names=("nope", "no such bundle"))


@case
def bundle_without_config(ctx):
    bundle = copy_bundle(ctx.image_bundle, ctx.root / "b")
    (bundle / "config.json").unlink()
    return Case(["predict", bundle, ctx.root], names=("b", "no config.json"))


@case
def bundle_config_not_json(ctx):
    bundle = copy_bundle(ctx.image_bundle, ctx.root / "b")
    (bundle / "config.json").write_bytes(b"\x89PNG not json {")
    return Case(["predict", bundle, ctx.root], names=("config.json", "not valid JSON"))


@case
def bundle_config_is_a_list(ctx):
    bundle = edit_config(copy_bundle(ctx.image_bundle, ctx.root / "b"), lambda c: [c])
    return Case(["predict", bundle, ctx.root], names=("config.json", "not a transferkit bundle"))


@case
def bundle_newer_format(ctx):
    bundle = edit_config(copy_bundle(ctx.image_bundle, ctx.root / "b"),
                         lambda c: c.update(format_version=99))
    return Case(["predict", bundle, ctx.root], names=("config.json", "newer", "upgrade"))


@case
def bundle_backbone_of_other_modality(ctx):
    bundle = edit_config(copy_bundle(ctx.image_bundle, ctx.root / "b"),
                         lambda c: c.update(backbone={"name": "tiny-wordvec", "image_size": 32}))
    return Case(["predict", bundle, ctx.root], names=("config.json", "text backbone", "image model"))


@case
def bundle_backbone_setting_unknown(ctx):
    bundle = edit_config(copy_bundle(ctx.image_bundle, ctx.root / "b"),
                         lambda c: c["backbone"].update(depth=7))
    return Case(["predict", bundle, ctx.root], names=("config.json", "depth"))


@case
def bundle_classes_not_a_list(ctx):
    bundle = edit_config(copy_bundle(ctx.image_bundle, ctx.root / "b"),
                         lambda c: c.update(classes="cat,dog"))
    return Case(["predict", bundle, ctx.root], names=("config.json", "'classes'"))


@case
def bundle_unknown_strategy(ctx):
    bundle = edit_config(copy_bundle(ctx.image_bundle, ctx.root / "b"),
                         lambda c: c["strategy"].update(name="telepathy"))
    return Case(["predict", bundle, ctx.root], names=("config.json", "telepathy"))


@case
def bundle_tensors_missing(ctx):
    bundle = copy_bundle(ctx.image_bundle, ctx.root / "b")
    (bundle / "model.safetensors").unlink()
    return Case(["predict", bundle, ctx.root], names=("b", "model.safetensors is missing"))


@case
def bundle_tensors_garbage(ctx):
    bundle = copy_bundle(ctx.image_bundle, ctx.root / "b")
    (bundle / "model.safetensors").write_bytes(os.urandom(256))
    return Case(["predict", bundle, ctx.root], names=("model.safetensors", "unreadable"))


@case
def bundle_tensor_list_tampered(ctx):
    bundle = edit_config(copy_bundle(ctx.image_bundle, ctx.root / "b"),
                         lambda c: c["tensors"].append("head.extra.weight"))
    return Case(["predict", bundle, ctx.root], names=("does not match config.json",))


@case
def bundle_is_a_file(ctx):
    (ctx.root / "b").write_text("not a folder")
    return Case(["predict", ctx.root / "b", ctx.root], names=("b", "no config.json"))


# --------------------------------------------------------------------------- predict / evaluate

@case
def predict_two_folders(ctx):
    data = image_folder(ctx.root / "d")
    return Case(["predict", ctx.image_bundle, data / "cat", data / "dog", "--json"], code=0,
                check=predicted(6, "cat_0.png", "dog_2.png"))


@case
def predict_mixed_inputs(ctx):
    data = image_folder(ctx.root / "d")
    npz(ctx.root / "x.npz", x=images_u8(2))
    return Case(["predict", ctx.image_bundle, data / "cat", data / "dog" / "dog_0.png",
                 ctx.root / "x.npz", "--json"], code=0, check=predicted(6, "x.npz: row 1"))


@case
def predict_text_files_and_table(ctx):
    (ctx.root / "a.txt").write_text("a great film")
    csv_file(ctx.root / "t.csv", text_rows(1))
    folder = ctx.root / "texts"
    folder.mkdir()
    (folder / "b.txt").write_text("an awful film")
    return Case(["predict", ctx.text_bundle, ctx.root / "a.txt", ctx.root / "t.csv", folder,
                 "--json"], code=0, check=predicted(4, "a.txt", "b.txt"))


@case
def predict_text_bundle_on_binary_file(ctx):
    (ctx.root / "blob.dat").write_bytes(bytes(range(256)))
    return Case(["predict", ctx.text_bundle, ctx.root / "blob.dat"],
                names=("blob.dat", "binary file, not text"))


@case
def predict_text_bundle_on_latin1_file(ctx):
    (ctx.root / "review.txt").write_bytes("un film g\u00e9nial".encode("latin-1"))
    return Case(["predict", ctx.text_bundle, ctx.root / "review.txt"],
                names=("review.txt", "0xe9", "not valid UTF-8"))


@case
def predict_text_bundle_on_image_folder(ctx):
    data = image_folder(ctx.root / "d")
    return Case(["predict", ctx.text_bundle, data / "cat"],
                names=("cat", "holds image data but this model takes text"))


@case
def predict_text_bundle_on_empty_folder(ctx):
    (ctx.root / "e").mkdir()
    return Case(["predict", ctx.text_bundle, ctx.root / "e"], names=("e", "holds no image or .txt"))


@case
def predict_text_missing_file(ctx):
    return Case(["predict", ctx.text_bundle, "a great film"], names=("a great film", "--text"))


@case
def predict_image_bundle_on_text_file(ctx):
    (ctx.root / "note.txt").write_text("hello")
    return Case(["predict", ctx.image_bundle, ctx.root / "note.txt"],
                names=("note.txt", "holds text data but this model takes image"))


@case
def predict_image_missing(ctx):
    return Case(["predict", ctx.image_bundle, ctx.root / "gone.png"],
                names=("gone.png", "no such file"))


@case
def predict_image_bundle_on_pdf(ctx):
    (ctx.root / "scan.pdf").write_bytes(b"%PDF-1.4 not an image")
    return Case(["predict", ctx.image_bundle, ctx.root / "scan.pdf"],
                names=("scan.pdf", "not a readable image"))


@case
def evaluate_image_bundle_on_text_table(ctx):
    path = csv_file(ctx.root / "t.csv", text_rows())
    return Case(["evaluate", ctx.image_bundle, path],
                names=("t.csv", "holds text data but this model takes image"))


@case
def evaluate_unknown_label(ctx):
    data = image_folder(ctx.root / "d", classes=("cat", "dog", "fox"))
    return Case(["evaluate", ctx.image_bundle, data], names=("fox", "not one of the model's classes"))


@case
def evaluate_unlabelled_folder(ctx):
    png(ctx.root / "d" / "a.png")
    return Case(["evaluate", ctx.image_bundle, ctx.root / "d"], names=("d", "no class subfolders"))


# --------------------------------------------------------------------------- weights, backbones

@case
def weights_hostile_pth(ctx):
    data = image_folder(ctx.root / "d")
    evil = hostile_pth(ctx.root / "evil.pth")
    return Case(with_backbone(fit(data, ctx), "timm:test_efficientnet", "--weights", evil),
                names=("evil.pth", "not a plain tensor file", "cannot be loaded safely"),
                never=("weights_only", "UserWarning", "arbitrary code"))


@case
def weights_garbage_pth(ctx):
    data = image_folder(ctx.root / "d")
    (ctx.root / "junk.pth").write_bytes(os.urandom(512))
    return Case(with_backbone(fit(data, ctx), "timm:test_efficientnet", "--weights",
                              ctx.root / "junk.pth"),
                names=("junk.pth", "not a plain tensor file"),
                never=("weights_only",))


@case
def weights_missing(ctx):
    data = image_folder(ctx.root / "d")
    return Case(with_backbone(fit(data, ctx), "timm:test_efficientnet", "--weights",
                              ctx.root / "w.pth"),
                names=("w.pth", "does not exist"))


@case
def weights_unknown_format(ctx):
    data = image_folder(ctx.root / "d")
    (ctx.root / "w.onnx").write_bytes(b"onnx?")
    return Case(with_backbone(fit(data, ctx), "timm:test_efficientnet", "--weights",
                              ctx.root / "w.onnx"),
                names=("w.onnx", "unknown format"))


@case
def hf_folder_with_pickled_weights(ctx):
    folder = ctx.hf_folder()
    for name in ("model.safetensors",):
        (folder / name).unlink(missing_ok=True)
    hostile_pth(folder / "pytorch_model.bin")
    path = csv_file(ctx.root / "t.csv", text_rows())
    return Case(with_backbone(fit_text(path, ctx), f"hf:{folder}"),
                names=("pytorch_model.bin", "not a plain tensor file", "cannot be loaded safely"),
                never=("weights_only",))


@case
def hf_folder_without_config(ctx):
    folder = ctx.root / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"")
    path = csv_file(ctx.root / "t.csv", text_rows())
    return Case(with_backbone(fit_text(path, ctx), f"hf:{folder}"),
                names=("model", "no config.json"))


@case
def vectors_file_with_nan(ctx):
    """Found by fuzzing: nan or inf in a vectors file once poisoned every feature."""
    vectors = ctx.root / "v.txt"
    vectors.write_text("good 0.1 0.2\nbad nan 0.3\n")
    path = csv_file(ctx.root / "t.csv", text_rows())
    return Case(with_backbone(fit_text(path, ctx), f"vectors:{vectors}"),
                names=("v.txt", "line 2", "not a finite number"))


@case
def hub_name_offline(ctx):
    path = csv_file(ctx.root / "t.csv", text_rows())
    return Case(with_backbone(fit_text(path, ctx), "hf:nobody/not-a-cached-model"),
                names=("hf:nobody/not-a-cached-model", "not in the local cache"))


@case
def unknown_backbone(ctx):
    data = image_folder(ctx.root / "d")
    return Case(with_backbone(fit(data, ctx), "resnet9000"),
                names=("resnet9000", "unknown backbone"))


@case
def combined_backbone_of_one(ctx):
    data = image_folder(ctx.root / "d")
    return Case(with_backbone(fit(data, ctx), "concat:tiny-cnn"),
                names=("concat:tiny-cnn", "two or more"))


@case
def combined_backbone_with_a_text_member(ctx):
    data = image_folder(ctx.root / "d")
    return Case(with_backbone(fit(data, ctx), "concat:tiny-cnn+tiny-bert"),
                names=("concat:tiny-cnn+tiny-bert", "'tiny-bert' is not an image backbone"))


@case
def image_backbone_on_text(ctx):
    path = csv_file(ctx.root / "t.csv", text_rows())
    return Case(fit(path, ctx), names=("tiny-cnn",))


# --------------------------------------------------------------------------- options

@case
def both_text_and_image_column(ctx):
    path = csv_file(ctx.root / "t.csv", text_rows())
    return Case(fit_text(path, ctx, "--text-column", "text", "--image-column", "text"),
                names=("text column", "image column"))


@case
def grayscale_on_text(ctx):
    path = csv_file(ctx.root / "t.csv", text_rows())
    return Case(fit_text(path, ctx, "--grayscale"), names=("--grayscale",))


@case
def unknown_strategy(ctx):
    data = image_folder(ctx.root / "d")
    return Case(fit(data, ctx, "--strategy", "magic"), names=("magic", "unknown strategy"))


@case
def unknown_strategy_option(ctx):
    data = image_folder(ctx.root / "d")
    return Case(fit(data, ctx, "-o", "warp_speed=9"), names=("warp_speed",))


@case
def unknown_regulariser(ctx):
    data = image_folder(ctx.root / "d")
    return Case(fit(data, ctx, "--strategy", "finetune", "-o", "reg=dropout"),
                names=("unknown reg 'dropout'", "l2sp"))


@case
def negative_regulariser_weight(ctx):
    data = image_folder(ctx.root / "d")
    return Case(fit(data, ctx, "--strategy", "partial", "-o", "reg=l2sp", "-o", "reg_weight=-1"),
                names=("reg_weight", "-1"))


@case
def regulariser_weight_not_a_number(ctx):
    data = image_folder(ctx.root / "d")
    return Case(fit(data, ctx, "--strategy", "finetune", "-o", "reg=delta",
                    "-o", "reg_weight=lots"), names=("reg_weight", "lots"))


@case
def regulariser_needs_a_source_head(ctx):
    data = csv_file(ctx.root / "t.csv", text_rows())
    return Case(["fit", data, "--backbone", "tiny-bert", "--strategy", "finetune", "-o",
                 "reg=cotuning", "--epochs", "1", "--out", ctx.root / "run", "-q"],
                names=("reg=cotuning", "tiny-bert", "source classes"))


def setfit_on_word_vectors(ctx):
    path = csv_file(ctx.root / "t.csv", text_rows())
    return Case(fit_text(path, ctx, "--strategy", "setfit"),
                names=("setfit", "sentence encoder", "tiny-wordvec"))


@case
def setfit_on_images(ctx):
    data = image_folder(ctx.root / "d")
    return Case(fit(data, ctx, "--strategy", "setfit"),
                names=("setfit", "sentence encoder", "tiny-cnn"))


@case
def setfit_unknown_loss(ctx):
    path = csv_file(ctx.root / "t.csv", text_rows())
    return Case(fit_text(path, ctx, "--strategy", "setfit", "-o", "loss=hinge"),
                names=("setfit", "loss", "hinge"))


@case
def data_path_missing(ctx):
    return Case(fit(ctx.root / "nowhere", ctx), names=("nowhere", "no such file or folder"))


@case
def unknown_data_format(ctx):
    (ctx.root / "data.xlsx").write_bytes(b"PK\3\4")
    return Case(fit(ctx.root / "data.xlsx", ctx), names=("data.xlsx", "unknown data format"))


# --------------------------------------------------------------------------- detection data

def coco_set(root: Path, annotations: list, *, images: int = 2, categories=((1, "a"), (2, "b"))) -> Path:
    """A COCO file ``root/ann.json`` over ``images`` 40 x 30 PNGs."""
    for i in range(images):
        png(root / f"im{i}.png", size=(40, 30))
    data = {"images": [{"id": i + 1, "file_name": f"im{i}.png", "width": 40, "height": 30}
                       for i in range(images)],
            "annotations": annotations,
            "categories": [{"id": k, "name": n} for k, n in categories]}
    (root / "ann.json").write_text(json.dumps(data))
    return root / "ann.json"


def coco_ann(k: int, image_id: int = 1, category_id: int = 1, bbox=(2, 3, 10, 8)) -> dict:
    return {"id": k, "image_id": image_id, "category_id": category_id, "bbox": list(bbox)}


def yolo_set(root: Path, lines: list[str]) -> Path:
    """A YOLO folder: two 40 x 30 PNGs, ``lines`` as the first one's label file."""
    for i in range(2):
        png(root / "images" / f"im{i}.png", size=(40, 30))
    (root / "labels").mkdir(parents=True, exist_ok=True)
    (root / "labels" / "im0.txt").write_text("\n".join(lines) + "\n")
    (root / "labels" / "im1.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "classes.txt").write_text("a\nb\n")
    return root


def detect(data, ctx, *more) -> list:
    return fit(data, ctx, "--task", "detection", *more)


@case
def detection_box_outside_image(ctx):
    data = coco_set(ctx.root / "c", [coco_ann(1), coco_ann(7, bbox=(35, 3, 10, 8))])
    return Case(detect(data, ctx), names=("ann.json: annotation 1 (id 7)", "outside the 40 x 30 image"))


@case
def detection_box_of_zero_size(ctx):
    data = coco_set(ctx.root / "c", [coco_ann(1, bbox=(2, 3, 0, 8))])
    return Case(detect(data, ctx), names=("ann.json: annotation 0 (id 1)", "zero or negative size"))


@case
def detection_box_of_negative_size(ctx):
    data = coco_set(ctx.root / "c", [coco_ann(1), coco_ann(2, bbox=(20, 3, -5, 8))])
    return Case(detect(data, ctx), names=("annotation 1 (id 2)", "zero or negative size"))


@case
def detection_unknown_category(ctx):
    data = coco_set(ctx.root / "c", [coco_ann(1, category_id=9)])
    return Case(detect(data, ctx), names=("ann.json: annotation 0 (id 1)", "unknown category_id 9"))


@case
def detection_annotation_for_missing_image(ctx):
    data = coco_set(ctx.root / "c", [coco_ann(1), coco_ann(2, image_id=77)])
    return Case(detect(data, ctx), names=("annotation 1 (id 2)", "image_id 77 names no image"))


@case
def detection_empty_annotation_file(ctx):
    (ctx.root / "ann.json").write_bytes(b"")
    return Case(detect(ctx.root / "ann.json", ctx), names=("ann.json", "empty annotation file"))


@case
def detection_coco_without_images(ctx):
    (ctx.root / "ann.json").write_text('{"images": [], "annotations": [], "categories": []}')
    return Case(detect(ctx.root / "ann.json", ctx), names=("ann.json", "empty annotation file"))


@case
def detection_yolo_wrong_field_count(ctx):
    data = yolo_set(ctx.root / "y", ["0 0.5 0.5 0.2 0.2", "1 0.5 0.5 0.2"])
    return Case(detect(data, ctx), names=("im0.txt: line 2", "expected 5 fields", "--skip-bad"))


@case
def detection_yolo_class_outside_list(ctx):
    data = yolo_set(ctx.root / "y", ["4 0.5 0.5 0.2 0.2"])
    return Case(detect(data, ctx), names=("im0.txt: line 1", "class 4 is not in the class list"))


@case
def detection_yolo_box_outside_image(ctx):
    data = yolo_set(ctx.root / "y", ["0 0.95 0.5 0.3 0.2"])
    return Case(detect(data, ctx), names=("im0.txt: line 1", "outside the 40 x 30 image"))


@case
def detection_yolo_without_class_list(ctx):
    data = yolo_set(ctx.root / "y", ["0 0.5 0.5 0.2 0.2"])
    (data / "classes.txt").unlink()
    return Case(detect(data, ctx), names=("no class-name list",))


@case
def detection_neither_coco_nor_yolo(ctx):
    image_folder(ctx.root / "d")
    return Case(detect(ctx.root / "d", ctx), names=("not a detection data set",))


@case
def detection_image_file_missing(ctx):
    data = coco_set(ctx.root / "c", [coco_ann(1)], images=5)
    (ctx.root / "c" / "im1.png").unlink()
    return Case(detect(data, ctx), names=("im1.png", "--skip-bad"))


@case
def detection_with_shots(ctx):
    data = coco_set(ctx.root / "c", [coco_ann(1)])
    return Case(detect(data, ctx, "--shots", "2"), names=("--task detection does not take --shots",))


@case
def detection_head_width_not_a_multiple_of_32(ctx):
    data = coco_set(ctx.root / "c", [coco_ann(1)])
    return Case(detect(data, ctx, "--det-width", "48"),
                names=("--det-width must be a multiple of 32, got 48",))


@case
def detection_setting_on_a_classification_run(ctx):
    data = image_folder(ctx.root / "d")
    return Case(fit(data, ctx, "--det-convs", "3"),
                names=("--det-convs: detection settings; this run is not --task detection",))


@case
def detection_draw_on_classifier(ctx):
    img = png(ctx.root / "x.png")
    return Case(["predict", ctx.image_bundle, img, "--draw", ctx.root / "out"],
                names=("--draw applies to detection models",))


# --------------------------------------------------------------------------- zero-shot

def zeroshot_names(ctx: Context, *extra) -> list:
    """A zero-shot fit from class names alone (no data) on the tiny text backbone."""
    return ["fit", "--strategy", "zeroshot", "--backbone", "tiny-wordvec", "--out",
            ctx.root / "run", "-q", *extra]


def descriptions_file(ctx: Context, content) -> Path:
    path = ctx.root / "descriptions.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


@case
def zero_shots_without_zeroshot(ctx):
    data = csv_file(ctx.root / "t.csv", text_rows())
    return Case(fit_text(data, ctx, "--shots", "0"), names=("--shots 0", "zeroshot"))


@case
def zeroshot_duplicate_class_names(ctx):
    return Case(zeroshot_names(ctx, "--classes", "neg,pos,neg"), names=("--classes", "'neg'",
                                                                         "twice"))


@case
def zeroshot_empty_class_name(ctx):
    return Case(zeroshot_names(ctx, "--classes", "neg,,pos"), names=("--classes", "empty"))


@case
def zeroshot_without_classes(ctx):
    return Case(zeroshot_names(ctx), names=("zero-shot needs classes", "--classes"))


@case
def descriptions_miss_a_class(ctx):
    path = descriptions_file(ctx, {"neg": "This is bad."})
    return Case(zeroshot_names(ctx, "--classes", "neg,pos", "--descriptions", path),
                names=("descriptions.json", "no description for class 'pos'"))


@case
def descriptions_name_an_unknown_class(ctx):
    path = descriptions_file(ctx, {"neg": "bad", "pos": "good", "meh": "so-so"})
    return Case(zeroshot_names(ctx, "--classes", "neg,pos", "--descriptions", path),
                names=("descriptions.json", "'meh'", "not a class"))


@case
def descriptions_not_json(ctx):
    path = descriptions_file(ctx, "{neg: bad")
    return Case(zeroshot_names(ctx, "--descriptions", path),
                names=("descriptions.json", "not a readable JSON file"))


@case
def descriptions_for_a_data_set_miss_a_class(ctx):
    data = csv_file(ctx.root / "t.csv", text_rows())
    path = descriptions_file(ctx, {"pos": "good"})
    return Case(fit_text(data, ctx, "--strategy", "zeroshot", "--descriptions", path),
                names=("descriptions.json", "'neg'"))


@case
def descriptions_with_a_trained_strategy(ctx):
    data = csv_file(ctx.root / "t.csv", text_rows())
    path = descriptions_file(ctx, {"neg": "bad", "pos": "good"})
    return Case(fit_text(data, ctx, "--descriptions", path),
                names=("--descriptions", "'auto'", "does not read"))


@case
def zeroshot_images_on_a_backbone_without_imagenet_names(ctx):
    return Case(["fit", "--strategy", "zeroshot", "--backbone", "tiny-cnn", "--classes",
                 "cat,dog", "--out", ctx.root / "run", "-q"], names=("tiny-cnn", "ImageNet"))


@case
def zeroshot_without_data_or_backbone(ctx):
    return Case(["fit", "--strategy", "zeroshot", "--classes", "cat,dog", "--out",
                 ctx.root / "run", "-q"], names=("--backbone",))


# --------------------------------------------------------------------------- shared parts

def make_bundles(root: Path) -> dict[str, Path]:
    """An image and a text bundle (tiny backbones, heads as initialised: no training)."""
    from transferkit.backbones import build_backbone
    from transferkit.bundle import save_bundle
    from transferkit.heads import HeadConfig, build_model
    from transferkit.strategies.base import get_strategy

    out = {}
    for kind, name, classes in (("image", "tiny-cnn", IMAGE_CLASSES),
                                ("text", "tiny-wordvec", TEXT_CLASSES)):
        model = build_model(build_backbone(name), HeadConfig(), list(classes))
        strategy = get_strategy("freeze")
        strategy.attach(model)
        out[kind] = save_bundle(root / kind, model, strategy, touched=[], grayscale=False)
    return out


def make_hf_folder(path: Path) -> Path:
    """A transformers model folder (the tiny BERT) to tamper with."""
    from transferkit.backbones import build_backbone

    bb = build_backbone("tiny-bert")
    bb.tokenizer.save_pretrained(str(path))
    bb.model.save_pretrained(str(path))
    return path


def write_all(out: Path) -> None:
    """Build every case under ``out/<case>/``, with the bundles under ``out/_bundles``."""
    bundles = make_bundles(out / "_bundles")
    for name, build in CASES.items():
        root = out / name
        root.mkdir(parents=True, exist_ok=True)
        c = build(Context(root, bundles["image"], bundles["text"],
                          lambda: make_hf_folder(root / "hf")))
        print(f"{name}: exit {c.code}: transferkit {' '.join(str(a) for a in c.argv)}")


if __name__ == "__main__":  # pragma: no cover
    write_all(Path(sys.argv[1] if len(sys.argv) > 1 else "bad_inputs_out"))


@case
def budget_not_a_duration(ctx):
    data = image_folder(ctx.root / "imgs")
    return Case(fit(data, ctx, "--budget", "tomorrow"), names=("--budget", "tomorrow", "10m"))


@case
def negative_patience(ctx):
    data = image_folder(ctx.root / "imgs")
    return Case(fit(data, ctx, "--patience", "-1"), names=("--patience", "-1"))


# --------------------------------------------------------------------------- several sets, tasks

def _tasks_fit(ctx: Context, *extra) -> list:
    return ["fit", "--backbone", "tiny-wordvec", "--epochs", "1", "--out", ctx.root / "run",
            "-q", *extra]


@case
def two_tasks_with_one_name(ctx):
    a = csv_file(ctx.root / "a.csv", text_rows())
    b = csv_file(ctx.root / "b.csv", text_rows())
    return Case(_tasks_fit(ctx, "--task", f"sent={a}", "--task", f"sent={b}"),
                names=("--task", "sent", "twice"))


@case
def a_task_of_images_on_a_text_backbone(ctx):
    a = csv_file(ctx.root / "a.csv", text_rows())
    imgs = image_folder(ctx.root / "imgs")
    return Case(_tasks_fit(ctx, "--task", f"sent={a}", "--task", f"pets={imgs}"),
                names=("image", "text"))


@case
def a_label_column_missing_in_the_table(ctx):
    data = csv_file(ctx.root / "t.csv", text_rows())
    return Case(fit_text(data, ctx, "--label-column", "label,mood"), names=("t.csv", "mood"))


@case
def merged_sets_whose_labels_disagree(ctx):
    a = csv_file(ctx.root / "a.csv", text_rows())
    b = csv_file(ctx.root / "b.csv", [("so so this is", "meh")] * 6 + text_rows())
    return Case(["fit", a, b, "--backbone", "tiny-wordvec", "--epochs", "1", "--out",
                 ctx.root / "run", "-q"], names=("a.csv", "'meh'", "--merge union"))


@case
def several_tasks_with_a_closed_form_strategy(ctx):
    a = csv_file(ctx.root / "a.csv", text_rows())
    b = csv_file(ctx.root / "b.csv", text_rows())
    return Case(_tasks_fit(ctx, "--task", f"x={a}", "--task", f"y={b}", "--strategy", "linear"),
                names=("'linear'", "closed form"))


@case
def an_unknown_task_weight(ctx):
    a = csv_file(ctx.root / "a.csv", text_rows())
    return Case(_tasks_fit(ctx, "--task", f"x={a}", "--task", f"y={a}", "--task-weight",
                           "x=heavy"), names=("--task-weight", "heavy"))


@case
def domain_specific_parts_without_several_sets(ctx):
    data = csv_file(ctx.root / "t.csv", text_rows())
    return Case(fit_text(data, ctx, "--domain-specific", "norm", "--head", "linear"),
                names=("--domain-specific", "several DATA"))


@case
def detection_with_named_tasks(ctx):
    a = csv_file(ctx.root / "a.csv", text_rows())
    return Case(_tasks_fit(ctx, "--task", "detection", "--task", f"x={a}"),
                names=("--task detection", "several tasks"))
def rank_layer_that_does_not_exist(ctx):
    data = image_folder(ctx.root / "imgs")
    return Case(["rank", data, "--backbones", "tiny-vit", "--layers", "pooled,3"],
                names=("--layers", "tiny-vit", "has 2 layers", "3 does not exist"))


@case
def rank_layers_of_a_backbone_without_layers(ctx):
    data = csv_file(ctx.root / "t.csv", text_rows())
    return Case(["rank", data, "--backbones", "tiny-bert,tiny-wordvec", "--layers", "-1"],
                names=("--layers", "tiny-wordvec", "exposes no intermediate layers"))


@case
def rank_layer_that_is_not_a_number(ctx):
    data = image_folder(ctx.root / "imgs")
    return Case(["rank", data, "--backbones", "tiny-cnn", "--layers", "pooled,second"],
                names=("--layers", "'second'", "is not a layer"))


@case
def rank_layer_zero(ctx):
    data = image_folder(ctx.root / "imgs")
    return Case(["rank", data, "--backbones", "tiny-cnn", "--layers", "0"],
                names=("--layers", "0 is no layer"))


@case
def domain_parts_with_several_tasks(ctx):
    a = csv_file(ctx.root / "a.csv", text_rows())
    return Case(_tasks_fit(ctx, "--task", f"x={a}", "--task", f"y={a}", "--domain-specific",
                           "adapter", "--head", "linear"),
                names=("--domain-specific", "several tasks"))
