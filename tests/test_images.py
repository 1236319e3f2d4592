"""Tests for decoding images, scanning for bad ones, transforms and image batches."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transferkit.data import (
    ImageDataset,
    Samples,
    check_image,
    collate_images,
    describe_transform,
    eval_transform,
    make_loader,
    open_image,
    read_data,
    scan_images,
    train_transform,
)
from transferkit.errors import DataError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

PREPROCESS = {"input_size": [3, 32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
              "interpolation": "bicubic", "crop_pct": 0.875}


def _error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth RGB picture (compresses like a photo, unlike noise)."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    a, b, c = rng.uniform(0.01, 0.05, 3)
    rgb = np.stack([np.sin(x * a) * 120 + 128, np.cos(y * b) * 120 + 128,
                    np.sin((x + y) * c) * 120 + 128], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


# --------------------------------------------------------------------------- modes

def test_rgb_and_l(tmp_path):
    Image.new("RGB", (5, 4), (10, 20, 30)).save(tmp_path / "rgb.png")
    Image.new("L", (5, 4), 77).save(tmp_path / "l.png")
    rgb = open_image(tmp_path / "rgb.png", "rgb.png")
    assert rgb.mode == "RGB" and rgb.size == (5, 4) and rgb.getpixel((0, 0)) == (10, 20, 30)
    gray = open_image(str(tmp_path / "l.png"), "l.png")
    assert gray.mode == "RGB" and gray.getpixel((2, 2)) == (77, 77, 77)


def test_rgba_over_white(tmp_path):
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 255))
    image.putpixel((0, 0), (0, 0, 255, 0))        # fully transparent -> white
    image.putpixel((1, 0), (0, 0, 0, 128))        # half black -> mid grey
    image.save(tmp_path / "a.png")
    out = open_image(tmp_path / "a.png", "a.png")
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((2, 2)) == (255, 0, 0)
    assert all(120 <= v <= 130 for v in out.getpixel((1, 0)))
    Image.new("LA", (3, 3), (0, 0)).save(tmp_path / "la.png")
    assert open_image(tmp_path / "la.png", "la.png").getpixel((1, 1)) == (255, 255, 255)


def test_palette_with_and_without_transparency(tmp_path):
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    image.save(tmp_path / "p.png")
    out = open_image(tmp_path / "p.png", "p.png")
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (0, 200, 0)
    image.save(tmp_path / "pt.gif", transparency=1)
    out = open_image(tmp_path / "pt.gif", "pt.gif")
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255)


def test_cmyk(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    out = open_image(tmp_path / "c.jpg", "c.jpg")
    assert out.mode == "RGB"
    r, g, b = out.getpixel((4, 4))
    assert r > 200 and g < 60 and b < 60


def test_sixteen_bit(tmp_path):
    values = np.array([[0, 257 * 100], [65535, 257 * 200]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "d.png")
    with Image.open(tmp_path / "d.png") as raw:
        assert raw.mode.startswith("I")
    out = open_image(tmp_path / "d.png", "d.png")
    assert out.mode == "RGB"
    assert [out.getpixel(p)[0] for p in [(0, 0), (1, 0), (0, 1), (1, 1)]] == [0, 100, 255, 200]
    Image.fromarray(np.full((2, 2), 40000, np.int32), "I").save(tmp_path / "i.tif")
    assert open_image(tmp_path / "i.tif", "i.tif").getpixel((0, 0))[0] == round(40000 / 257)


def test_other_modes(tmp_path):
    Image.new("1", (3, 3), 1).save(tmp_path / "bw.png")
    assert open_image(tmp_path / "bw.png", "bw.png").getpixel((0, 0)) == (255, 255, 255)
    Image.fromarray(np.full((2, 2), 0.5, np.float32), "F").save(tmp_path / "f.tif")
    assert open_image(tmp_path / "f.tif", "f.tif").getpixel((0, 0))[0] in (127, 128)


def test_exif_orientation(tmp_path):
    stored = Image.new("RGB", (40, 20), (255, 0, 0))
    stored.paste((0, 0, 255), (20, 0, 40, 20))       # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6                                  # rotate 90 degrees clockwise to view
    stored.save(tmp_path / "o.jpg", exif=exif.tobytes(), quality=95)
    out = open_image(tmp_path / "o.jpg", "o.jpg")
    assert out.mode == "RGB" and out.size == (20, 40)
    top, bottom = out.getpixel((10, 5)), out.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60             # the stored left (red) is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_grayscale(tmp_path):
    Image.new("RGB", (4, 4), (200, 10, 10)).save(tmp_path / "r.png")
    out = open_image(tmp_path / "r.png", "r.png", grayscale=True)
    assert out.mode == "RGB"
    r, g, b = out.getpixel((0, 0))
    assert r == g == b


def test_arrays():
    assert open_image(np.full((3, 4), 9, np.uint8), "x.npz: row 0").size == (4, 3)
    assert open_image(np.full((3, 4, 1), 9, np.uint8), "r").getpixel((0, 0)) == (9, 9, 9)
    assert open_image(np.zeros((3, 4, 3), np.uint8), "r").mode == "RGB"
    rgba = np.zeros((2, 2, 4), np.uint8)
    assert open_image(rgba, "r").getpixel((0, 0)) == (255, 255, 255)
    with pytest.raises(DataError) as excinfo:
        open_image(np.zeros((3, 4), np.float32), "x.npz: row 3")
    assert _error(excinfo) == "x.npz: row 3: image array must be uint8, not float32"
    with pytest.raises(DataError, match="x.npz: row 1: image array has shape"):
        open_image(np.zeros((3, 4, 2), np.uint8), "x.npz: row 1")


# --------------------------------------------------------------------------- draft

@pytest.mark.parametrize("size,target", [((1600, 1200), 224), ((1000, 333), 300), ((640, 480), 256),
                                         ((300, 500), 224), ((2000, 900), 100), ((100, 80), 224)])
def test_draft_keeps_shorter_side(tmp_path, size, target):
    _photo(*size).save(tmp_path / "big.jpg", quality=85)
    out = open_image(tmp_path / "big.jpg", "big.jpg", target_size=target)
    assert min(out.size) >= min(target, min(size))
    assert out.size[0] <= size[0] and out.size[1] <= size[1]


def test_draft_reduces_big_jpeg(tmp_path):
    _photo(1600, 1200).save(tmp_path / "big.jpg")
    assert open_image(tmp_path / "big.jpg", "big.jpg", target_size=224).size == (400, 300)
    assert open_image(tmp_path / "big.jpg", "big.jpg").size == (1600, 1200)


def test_draft_with_rotation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    _photo(1200, 500).save(tmp_path / "r.jpg", exif=exif.tobytes())
    out = open_image(tmp_path / "r.jpg", "r.jpg", target_size=240)
    assert out.size == (250, 600)


# --------------------------------------------------------------------------- faults

def test_truncated_jpeg(tmp_path):
    _photo(200, 150).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as excinfo:
        open_image(tmp_path / "cut.jpg", "photos/cut.jpg")
    assert _error(excinfo).startswith("photos/cut.jpg: truncated or corrupt image: ")
    check_image(tmp_path / "cut.jpg", "photos/cut.jpg")   # the header alone is fine


def test_text_named_jpg(tmp_path):
    (tmp_path / "x.jpg").write_text("this is not a picture")
    for call in (open_image, check_image):
        with pytest.raises(DataError) as excinfo:
            call(tmp_path / "x.jpg", "x.jpg")
        assert _error(excinfo) == "x.jpg: not a readable image (cannot identify image file)"


def test_empty_and_missing_file(tmp_path):
    (tmp_path / "e.png").write_bytes(b"")
    for call in (open_image, check_image):
        with pytest.raises(DataError) as excinfo:
            call(tmp_path / "e.png", "e.png")
        assert _error(excinfo) == "e.png: empty file (0 bytes)"
        with pytest.raises(DataError) as excinfo:
            call(tmp_path / "gone.png", "gone.png")
        assert _error(excinfo) == "gone.png: image file not found"


@pytest.mark.parametrize("side,pixels", [(40, "1,600"), (100, "10,000")])
def test_decompression_bomb(tmp_path, monkeypatch, side, pixels):
    # 40x40 is over the limit (a warning in PIL), 100x100 over twice the limit (an error)
    Image.new("RGB", (side, side)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    filters = list(warnings.filters)
    for call in (open_image, check_image):
        with pytest.raises(DataError) as excinfo:
            call(tmp_path / "big.png", "big.png")
        assert _error(excinfo) == (f"big.png: image has {pixels} pixels, over the "
                                   "decompression-bomb limit of 1,000")
    assert warnings.filters == filters


def test_check_image_ok(tmp_path):
    Image.new("RGB", (3, 3)).save(tmp_path / "ok.png")
    check_image(tmp_path / "ok.png", "ok.png")
    check_image(np.zeros((2, 2), np.uint8), "row 0")


# --------------------------------------------------------------------------- scan

def _mixed_folder(tmp_path: Path) -> Samples:
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir(parents=True)
    Image.new("RGB", (8, 8), (1, 2, 3)).save(root / "a" / "1.png")
    (root / "a" / "2.jpg").write_text("junk")
    _photo(64, 48).save(root / "b" / "3.jpg")
    data = (root / "b" / "3.jpg").read_bytes()
    (root / "b" / "4.jpg").write_bytes(data[:200])
    return read_data(root)["all"]


def test_scan_images_skip_bad(tmp_path):
    samples = _mixed_folder(tmp_path)
    good, bad = scan_images(samples, skip_bad=True, workers=2)
    assert [Path(p).name for p in good.items] == ["1.png", "3.jpg"]
    assert good.labels.tolist() == [0, 1] and good.classes == ["a", "b"]
    assert [Path(origin).name for origin, _ in bad] == ["2.jpg", "4.jpg"]
    assert bad[0][1] == "not a readable image (cannot identify image file)"
    assert bad[1][1].startswith("truncated or corrupt image")


def test_scan_images_raises_first_bad(tmp_path):
    samples = _mixed_folder(tmp_path)
    with pytest.raises(DataError) as excinfo:
        scan_images(samples, skip_bad=False, workers=1)
    assert _error(excinfo) == f"{samples.origins[1]}: not a readable image (cannot identify image file)"


def test_scan_images_arrays_and_text():
    arrays = Samples("image", [np.zeros((4, 4), np.uint8)] * 3, np.array([0, 1, 0]), ["a", "b"],
                     ["r0", "r1", "r2"], "x.npz")
    assert scan_images(arrays, skip_bad=False)[1] == []
    texts = Samples("text", ["hi"], None, [], ["t"], "t.txt")
    assert scan_images(texts, skip_bad=False) == (texts, [])


@pytest.mark.integration
def test_real_placeholder_gif_is_bad():
    gif = SHARED / "hymenoptera" / "train" / "ants" / "imageNotFound.gif"
    if not gif.exists():
        pytest.skip(f"shared data not available: {gif}")
    with pytest.raises(DataError, match="imageNotFound.gif: a placeholder picture"):
        open_image(gif, str(gif))
    samples = read_data(SHARED / "hymenoptera")["train"]
    good, bad = scan_images(samples, skip_bad=True)
    assert [Path(origin).name for origin, _ in bad] == ["imageNotFound.gif"]
    assert len(good) == len(samples) - 1


# --------------------------------------------------------------------------- transforms

def test_eval_transform():
    transform = eval_transform(PREPROCESS)
    out = transform(_photo(80, 50))
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert out.min() >= -1.0 and out.max() <= 1.0
    white = transform(Image.new("RGB", (40, 60), (255, 255, 255)))
    assert torch.allclose(white, torch.ones_like(white))


def test_train_transform():
    torch.manual_seed(0)
    augmented = train_transform(PREPROCESS, augment=True)(_photo(90, 70))
    assert augmented.shape == (3, 32, 32)
    plain = train_transform(PREPROCESS, augment=False)(_photo(90, 70))
    assert torch.equal(plain, eval_transform(PREPROCESS)(_photo(90, 70)))


def test_describe_transform():
    text = describe_transform(PREPROCESS, False, False)
    assert text == describe_transform(dict(PREPROCESS), False, False)
    assert "\n" not in text
    assert len({text, describe_transform(PREPROCESS, True, False),
                describe_transform(PREPROCESS, False, True),
                describe_transform({**PREPROCESS, "crop_pct": 1.0}, False, False)}) == 4


# --------------------------------------------------------------------------- datasets

def test_image_dataset_and_collate(tmp_path):
    samples = _mixed_folder(tmp_path)
    dataset = ImageDataset(samples, eval_transform(PREPROCESS))
    tensor, label, index = dataset[1]
    assert tensor is None and label == 0 and index == 1
    images, labels, indices, bad = collate_images([dataset[i] for i in range(len(dataset))])
    assert images.shape == (2, 3, 32, 32)
    assert labels.tolist() == [0, 1] and indices.tolist() == [0, 2] and bad == [1, 3]
    images, labels, indices, bad = collate_images([dataset[1]])
    assert images is None and labels.numel() == 0 and bad == [1]


def test_loader_with_workers_survives_bad_items(tmp_path):
    root = tmp_path / "d"
    for i in range(70):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        if i == 5:
            (folder / f"{i}.png").write_text("junk")
        else:
            Image.new("RGB", (10, 10), (i, i, i)).save(folder / f"{i}.png")
    samples = read_data(root)["all"]
    loader = make_loader(samples, transform=eval_transform(PREPROCESS), batch_size=16)
    assert loader.num_workers == min(2, __import__("os").cpu_count())
    seen, bad_seen = [], []
    for images, labels, indices, bad in loader:
        assert images.shape[0] == len(labels) == len(indices)
        seen.extend(indices.tolist())
        bad_seen.extend(bad)
    assert len(seen) == 69 and [Path(samples.items[i]).name for i in bad_seen] == ["5.png"]
