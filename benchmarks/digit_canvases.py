"""Generate the digit-canvas detection set: MNIST digits pasted at random scales and
places on textured canvases, 1-4 digits each, with COCO and YOLO annotations; seeded.

    python benchmarks/digit_canvases.py OUT [--train 2000 --val 300 --test 300 --size 128 --seed 0]

Writes::

    OUT/classes.txt                         0 .. 9, one a line (YOLO class list)
    OUT/{train,val,test}/images/NNNNNN.png  the canvases
    OUT/{train,val,test}/labels/NNNNNN.txt  YOLO: "class cx cy w h", normalised
    OUT/{train,val,test}.json               COCO (file_name relative to OUT)

so ``transferkit fit OUT --task detection`` reads the YOLO splits and ``transferkit fit
OUT/train.json --val OUT/val.json --test OUT/test.json --task detection`` the COCO ones.

Digits come from the MNIST test split (``../shared/data/digits/mnist_test.npz``): train
canvases use digits 0-7999, val 8000-8999, test 9000-9999, so no digit image is shared
between splits.  Backgrounds are random crops of the hymenoptera photos
(``../shared/data/hymenoptera``: every other training photo for train canvases, every other
validation photo, alternately, for val and test), with noise; each digit gets a random
colour far from the background under it, a scale of 14-52 px on a 128 px canvas
(proportionally on others) and a place overlapping no earlier digit by more than 5 % of the smaller box.
The box is the tight box of the digit's visible stroke pixels.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
DIGITS = HERE.parent.parent / "shared" / "data" / "digits"
PHOTOS = HERE.parent.parent / "shared" / "data" / "hymenoptera"
SPLIT_DIGITS = {"train": (0, 8000), "val": (8000, 9000), "test": (9000, 10000)}


def _photos(folder: Path, every: int = 2, side: int = 256) -> list[np.ndarray]:
    """Every ``every``-th photo under ``folder``, its shorter side resized to ``side``."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    out = []
    for p in files[::every]:
        with Image.open(p) as im:
            im.draft("RGB", (side, side))
            im = im.convert("RGB")
            scale = side / min(im.size)
            out.append(np.asarray(im.resize((max(side, round(im.size[0] * scale)),
                                             max(side, round(im.size[1] * scale))),
                                            Image.BILINEAR), np.uint8))
    return out


def load_sources(folder: Path = DIGITS, photos: Path = PHOTOS) -> tuple:
    """``(digits (N, 28, 28) uint8, labels (N,), {split: background photos})``: the
    training photos of hymenoptera for train canvases, its validation photos, alternately,
    for val and test."""
    m = np.load(folder / "mnist_test.npz")
    val_photos = _photos(photos / "val")
    bg = {"train": _photos(photos / "train"), "val": val_photos[0::2], "test": val_photos[1::2]}
    return m["x"], m["y"].astype(np.int64), bg


def _overlap(a, b) -> float:
    """Intersection over the smaller box's area."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return ix * iy / smaller if smaller > 0 else 0.0


def _background(rng, backgrounds, size: int) -> np.ndarray:
    """A random ``size`` x ``size`` crop of a random photo (at half to full scale), noised."""
    photo = backgrounds[rng.integers(len(backgrounds))]
    side = int(rng.integers(size, min(photo.shape[:2]) + 1))
    y, x = (int(rng.integers(0, photo.shape[k] - side + 1)) for k in (0, 1))
    patch = Image.fromarray(photo[y:y + side, x:x + side])
    canvas = np.asarray(patch.resize((size, size), Image.BILINEAR), np.float32)
    return np.clip(canvas + rng.normal(0, 6, canvas.shape), 0, 255)


def _paste(rng, canvas: np.ndarray, digit: np.ndarray, scale: int, boxes: list):
    """Paste ``digit`` at a free place; its tight box, or None when no place was free."""
    size = canvas.shape[0]
    alpha = np.asarray(Image.fromarray(digit).resize((scale, scale), Image.BILINEAR),
                       np.float32) / 255.0
    ys, xs = np.nonzero(alpha > 0.25)
    if not len(xs):
        return None
    for _ in range(30):
        x0, y0 = (int(v) for v in rng.integers(0, size - scale + 1, 2))
        box = [x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1]
        if all(_overlap(box, b) <= 0.05 for b in boxes):
            region = canvas[y0:y0 + scale, x0:x0 + scale]
            under = region.reshape(-1, 3).mean(0)
            colour = np.where(under > 128, rng.uniform(0, 70, 3), rng.uniform(185, 255, 3))
            region[:] = region * (1 - alpha[..., None]) + colour * alpha[..., None]
            return [float(v) for v in box]
    return None


def make_canvas(rng, digits, labels, backgrounds, pool: np.ndarray, size: int):
    """One canvas: ``(uint8 image, boxes xyxy, labels)``."""
    canvas = _background(rng, backgrounds, size)
    boxes, classes = [], []
    lo, hi = max(8, round(14 * size / 128)), round(52 * size / 128)
    for _ in range(int(rng.integers(1, 5))):
        k = int(pool[rng.integers(len(pool))])
        box = _paste(rng, canvas, digits[k], int(rng.integers(lo, hi + 1)), boxes)
        if box is not None:
            boxes.append(box)
            classes.append(int(labels[k]))
    return canvas.round().astype(np.uint8), boxes, classes


def write_split(out: Path, split: str, n: int, size: int, seed: int, sources) -> dict:
    """``n`` canvases of ``split`` as PNG + YOLO labels; returns the split's COCO dict."""
    digits, labels, backgrounds = sources
    a, b = SPLIT_DIGITS[split]
    pool = np.arange(a, b)
    bg_pool = backgrounds[split]
    rng = np.random.default_rng([seed, list(SPLIT_DIGITS).index(split)])
    (out / split / "images").mkdir(parents=True, exist_ok=True)
    (out / split / "labels").mkdir(parents=True, exist_ok=True)
    coco = {"images": [], "annotations": [],
            "categories": [{"id": c, "name": str(c)} for c in range(10)]}
    for i in range(n):
        image, boxes, classes = make_canvas(rng, digits, labels, bg_pool, pool, size)
        name = f"{i:06d}"
        Image.fromarray(image).save(out / split / "images" / f"{name}.png")
        lines = [f"{c} {(x0 + x1) / 2 / size:.6f} {(y0 + y1) / 2 / size:.6f} "
                 f"{(x1 - x0) / size:.6f} {(y1 - y0) / size:.6f}"
                 for c, (x0, y0, x1, y1) in zip(classes, boxes)]
        (out / split / "labels" / f"{name}.txt").write_text("\n".join(lines) + "\n")
        coco["images"].append({"id": i + 1, "file_name": f"{split}/images/{name}.png",
                               "width": size, "height": size})
        for c, (x0, y0, x1, y1) in zip(classes, boxes):
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": i + 1,
                                        "category_id": c, "bbox": [x0, y0, x1 - x0, y1 - y0],
                                        "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    (out / f"{split}.json").write_text(json.dumps(coco))
    return coco


def make_canvases(out, *, train: int = 2000, val: int = 300, test: int = 300, size: int = 128,
                  seed: int = 0, sources=None) -> Path:
    """Write the whole set under ``out`` (see the module's notes); returns ``out``."""
    out = Path(out)
    sources = sources or load_sources()
    out.mkdir(parents=True, exist_ok=True)
    (out / "classes.txt").write_text("\n".join(str(c) for c in range(10)) + "\n")
    for split, n in (("train", train), ("val", val), ("test", test)):
        if n:
            write_split(out, split, n, size, seed, sources)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("--train", type=int, default=2000)
    p.add_argument("--val", type=int, default=300)
    p.add_argument("--test", type=int, default=300)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if not (DIGITS / "mnist_test.npz").exists():
        print(f"error: {DIGITS}: the shared digit data is missing", file=sys.stderr)
        return 2
    make_canvases(a.out, train=a.train, val=a.val, test=a.test, size=a.size, seed=a.seed)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
