"""Object-detection data: COCO JSON and YOLO folders, their checks, a seeded split and the
decoding of images into one fixed-size array with their boxes scaled alike.

:func:`read_detection` detects the format from the path:

* a ``.json`` file in COCO format (``images`` with ``id`` / ``file_name`` and optionally
  ``width`` / ``height``; ``annotations`` with ``image_id``, ``category_id`` and ``bbox``
  ``[x, y, w, h]`` in pixels; ``categories`` with ``id`` / ``name``); ``file_name`` is
  relative to the JSON's folder (or to an ``images/`` folder beside it);
* a YOLO folder: ``images/`` and ``labels/`` (one ``labels/<stem>.txt`` per image, one
  ``class cx cy w h`` line per box, normalised to [0, 1]; an image without a label file has
  no boxes) and a class-name list (``classes.txt``, ``obj.names`` or ``names.txt``, one
  name a line, in the folder or its parent; or ``names:`` in ``data.yaml``);
* a folder holding one COCO ``.json`` (read as above);
* a split folder: ``train/`` and ``val/`` (``valid/``, ``validation/``) and/or ``test/``,
  each one of the above.

Every fault names the file and the line (YOLO) or the annotation (COCO) in one line: a
box outside the image, of zero or negative size, an unknown category, an annotation for an
image that is not listed, a YOLO line with the wrong number of fields.  With ``skip_bad``
the bad boxes are dropped and counted (:attr:`DetectionSamples.notes`).  An empty or
unparsable annotation file is always refused.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from PIL import Image

from ..errors import DataError
from .images import open_image
from .readers import IMAGE_EXTENSIONS, SPLIT_ALIASES

#: how far (pixels) a box may reach past the image's edge and still count as inside (it is
#: clipped): float coordinates written by other tools round this way
EDGE_TOLERANCE = 1.0
#: the same for YOLO's normalised coordinates
NORMALISED_TOLERANCE = 1e-3
CLASS_LIST_NAMES = ("classes.txt", "obj.names", "names.txt")
SKIP_BAD_BOXES_HINT = "--skip-bad drops the bad boxes"


@dataclass
class DetectionSamples:
    """Images with their boxes.

    ``boxes[i]``: ``(n, 4)`` float32 ``x0, y0, x1, y1`` in the pixels of image ``i``;
    ``labels[i]``: ``(n,)`` int64 indices into :attr:`classes`; ``sizes[i]``: ``(width,
    height)``; ``origins[i]``: what an error names.  ``notes``: what a reader dropped.
    """

    items: list
    boxes: list
    labels: list
    sizes: list
    classes: list[str]
    origins: list[str]
    source: str
    notes: list[str] = field(default_factory=list)
    modality: str = "image"

    def __len__(self) -> int:
        return len(self.items)

    def subset(self, indices) -> "DetectionSamples":
        idx = [int(i) for i in indices]
        return DetectionSamples([self.items[i] for i in idx], [self.boxes[i] for i in idx],
                                [self.labels[i] for i in idx], [self.sizes[i] for i in idx],
                                list(self.classes), [self.origins[i] for i in idx],
                                self.source, list(self.notes))

    @property
    def n_boxes(self) -> int:
        return int(sum(len(b) for b in self.boxes))


class _Problems:
    """Bad boxes found while reading: the first one raised, or all of them counted."""

    def __init__(self, skip_bad: bool):
        self.skip_bad = skip_bad
        self.count = 0
        self.first: str | None = None

    def __call__(self, where: str, what: str) -> None:
        message = f"{where}: {what}"
        if not self.skip_bad:
            raise DataError(f"{message}; {SKIP_BAD_BOXES_HINT}")
        self.count += 1
        self.first = self.first or message

    def note(self, source: str) -> list[str]:
        if not self.count:
            return []
        return [f"{source}: dropped {self.count} bad box(es) (--skip-bad); the first: "
                f"{self.first}"]


# --------------------------------------------------------------------------- entry point

def read_detection(path: str | os.PathLike, *, skip_bad: bool = False) -> dict[str, DetectionSamples]:
    """The splits found at ``path`` (``{"all": ...}`` unless it is a split folder)."""
    display = os.fspath(path)
    if not os.path.exists(display):
        raise DataError(f"{display}: no such file or folder")
    if os.path.isdir(display):
        splits = _split_subfolders(display)
        if splits:
            out = {name: _read_one(p, skip_bad) for name, p in splits.items()}
            _same_classes(out)
            return out
    return {"all": _read_one(display, skip_bad)}


def _split_subfolders(folder: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in sorted(os.listdir(folder)):
        split = SPLIT_ALIASES.get(name.lower())
        if split and os.path.isdir(os.path.join(folder, name)) and split not in found:
            found[split] = os.path.join(folder, name)
    return found if "train" in found else {}


def _same_classes(splits: dict[str, DetectionSamples]) -> None:
    first = next(iter(splits.values()))
    for s in splits.values():
        if s.classes != first.classes:
            raise DataError(f"{s.source}: its classes ({', '.join(s.classes)}) differ from "
                            f"those of {first.source} ({', '.join(first.classes)})")


def _read_one(path: str, skip_bad: bool) -> DetectionSamples:
    if os.path.isfile(path):
        if path.lower().endswith(".json"):
            return read_coco(path, skip_bad=skip_bad)
        raise DataError(f"{path}: not a detection data set; give a COCO .json or a YOLO folder "
                        "(images/ + labels/ + classes.txt)")
    if os.path.isdir(os.path.join(path, "images")) and os.path.isdir(os.path.join(path, "labels")):
        return read_yolo(path, skip_bad=skip_bad)
    jsons = [n for n in sorted(os.listdir(path)) if n.lower().endswith(".json")]
    if len(jsons) == 1:
        return read_coco(os.path.join(path, jsons[0]), skip_bad=skip_bad)
    what = f"{len(jsons)} .json files" if jsons else "no COCO .json and no images/ + labels/"
    raise DataError(f"{path}: not a detection data set ({what}); give a COCO .json or a YOLO "
                    "folder (images/ + labels/ + classes.txt)")


# --------------------------------------------------------------------------- COCO

def _load_json(path: str) -> dict:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if not raw.strip():
        raise DataError(f"{path}: empty annotation file")
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}: not a COCO annotation file (no 'images' list)")
    for key in ("annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: not a COCO annotation file (no {key!r} list)")
    if not data["images"]:
        raise DataError(f"{path}: empty annotation file (no images)")
    return data


def _coco_categories(path: str, cats: list) -> tuple[dict[int, int], list[str]]:
    """``(category id -> class index, class names)``, the classes ordered by id."""
    table: dict[int, str] = {}
    for i, c in enumerate(cats):
        if not (isinstance(c, dict) and _is_int(c.get("id")) and isinstance(c.get("name"), str)):
            raise DataError(f"{path}: categories[{i}] needs an integer 'id' and a 'name'")
        if c["id"] in table:
            raise DataError(f"{path}: categories[{i}]: id {c['id']} is listed twice")
        table[int(c["id"])] = c["name"]
    if not table:
        raise DataError(f"{path}: no categories")
    names = [table[k] for k in sorted(table)]
    if len(set(names)) != len(names):
        raise DataError(f"{path}: category names must be distinct")
    return {k: i for i, k in enumerate(sorted(table))}, names


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _coco_image_path(json_path: str, file_name: str) -> str:
    base = os.path.dirname(os.path.abspath(json_path))
    direct = os.path.join(base, file_name)
    if os.path.exists(direct):
        return direct
    beside = os.path.join(base, "images", file_name)
    return beside if os.path.exists(beside) else direct


def _coco_images(path: str, images: list) -> tuple[dict, list]:
    """image id -> position; per position ``(file, origin, (w, h))``."""
    index: dict[int, int] = {}
    rows = []
    for i, im in enumerate(images):
        if not (isinstance(im, dict) and _is_int(im.get("id")) and isinstance(im.get("file_name"), str)):
            raise DataError(f"{path}: images[{i}] needs an integer 'id' and a 'file_name'")
        if im["id"] in index:
            raise DataError(f"{path}: images[{i}]: id {im['id']} is listed twice")
        file = _coco_image_path(path, im["file_name"])
        w, h = im.get("width"), im.get("height")
        size = (int(w), int(h)) if _is_int(w) and _is_int(h) and w > 0 and h > 0 else None
        index[im["id"]] = len(rows)
        rows.append((file, size))
    return index, rows


def read_coco(path: str | os.PathLike, *, skip_bad: bool = False) -> DetectionSamples:
    """A COCO annotation file (see the module's notes)."""
    path = os.fspath(path)
    data = _load_json(path)
    cat_index, classes = _coco_categories(path, data["categories"])
    index, rows = _coco_images(path, data["images"])
    sizes = [s or image_size(f) for f, s in rows]
    boxes: list[list] = [[] for _ in rows]
    labels: list[list] = [[] for _ in rows]
    bad = _Problems(skip_bad)
    for k, ann in enumerate(data["annotations"]):
        where = f"{path}: annotation {k}" + (f" (id {ann['id']})" if isinstance(ann, dict)
                                              and "id" in ann else "")
        got = _coco_box(ann, index, cat_index, sizes, where, bad)
        if got is not None:
            pos, box, label = got
            boxes[pos].append(box)
            labels[pos].append(label)
    return DetectionSamples([f for f, _ in rows], [_as_boxes(b) for b in boxes],
                            [np.asarray(v, np.int64) for v in labels], sizes, classes,
                            [f for f, _ in rows], path, bad.note(path))


def _coco_box(ann, index, cat_index, sizes, where: str, bad: _Problems):
    """``(image position, xyxy box, class index)`` of one annotation, or None (reported)."""
    if not isinstance(ann, dict):
        return bad(where, "is not an object")
    if not _is_int(ann.get("image_id")) or ann["image_id"] not in index:
        return bad(where, f"image_id {ann.get('image_id')!r} names no image of 'images'")
    if not _is_int(ann.get("category_id")) or ann["category_id"] not in cat_index:
        return bad(where, f"unknown category_id {ann.get('category_id')!r}")
    b = ann.get("bbox")
    if not (isinstance(b, list) and len(b) == 4 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in b)):
        return bad(where, f"bbox must be 4 numbers [x, y, w, h], got {b!r}")
    pos = index[ann["image_id"]]
    box = _checked_box(float(b[0]), float(b[1]), float(b[0]) + float(b[2]),
                       float(b[1]) + float(b[3]), sizes[pos], where, bad)
    return None if box is None else (pos, box, cat_index[ann["category_id"]])


def _checked_box(x0, y0, x1, y1, size, where: str, bad: _Problems, tol: float = EDGE_TOLERANCE):
    w, h = size
    if x1 - x0 <= 0 or y1 - y0 <= 0:
        return bad(where, f"box of zero or negative size ({x1 - x0:g} x {y1 - y0:g})")
    if x0 < -tol or y0 < -tol or x1 > w + tol or y1 > h + tol:
        return bad(where, f"box [{x0:g}, {y0:g}, {x1:g}, {y1:g}] lies outside the "
                          f"{w} x {h} image")
    return [max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1)]


def _as_boxes(rows: list) -> np.ndarray:
    return np.asarray(rows, np.float32).reshape(-1, 4)


def image_size(path: str) -> tuple[int, int]:
    """``(width, height)`` from the image's header (after its EXIF orientation is not
    applied: boxes refer to the stored pixels)."""
    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except FileNotFoundError:
        raise DataError(f"{path}: no such image file") from None
    except Exception as e:  # noqa: BLE001 - not an image, unreadable, ...
        raise DataError(f"{path}: not a readable image ({type(e).__name__})") from None


# --------------------------------------------------------------------------- YOLO

def _text(path: str) -> str:
    try:
        with open(path, encoding="utf-8-sig") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({type(e).__name__})") from None


def yolo_classes(folder: str) -> list[str]:
    """The class-name list of a YOLO folder (see the module's notes)."""
    for where in (folder, os.path.dirname(os.path.abspath(folder))):
        for name in CLASS_LIST_NAMES:
            p = os.path.join(where, name)
            if os.path.isfile(p):
                names = [ln.strip() for ln in _text(p).splitlines()]
                names = [n for n in names if n]
                if not names:
                    raise DataError(f"{p}: empty class-name list")
                if len(set(names)) != len(names):
                    raise DataError(f"{p}: class names must be distinct")
                return names
        yaml_path = os.path.join(where, "data.yaml")
        if os.path.isfile(yaml_path):
            return _yaml_names(yaml_path)
    raise DataError(f"{folder}: no class-name list (classes.txt, obj.names, names.txt or "
                    "data.yaml with names:)")


def _yaml_names(path: str) -> list[str]:
    import yaml

    try:
        data = yaml.safe_load(_text(path))
    except yaml.YAMLError as e:
        raise DataError(f"{path}: cannot read ({type(e).__name__})") from None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise DataError(f"{path}: 'names' must list the class names")
    return names


def read_yolo(folder: str | os.PathLike, *, skip_bad: bool = False) -> DetectionSamples:
    """A YOLO folder (see the module's notes)."""
    folder = os.fspath(folder)
    classes = yolo_classes(folder)
    img_dir, lab_dir = os.path.join(folder, "images"), os.path.join(folder, "labels")
    files = sorted(n for n in os.listdir(img_dir)
                   if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS and not n.startswith("."))
    if not files:
        raise DataError(f"{img_dir}: no images")
    bad = _Problems(skip_bad)
    items, boxes, labels, sizes = [], [], [], []
    for name in files:
        path = os.path.join(img_dir, name)
        size = image_size(path)
        label_file = os.path.join(lab_dir, os.path.splitext(name)[0] + ".txt")
        b, lab = _yolo_labels(label_file, size, len(classes), bad)
        items.append(path)
        boxes.append(b)
        labels.append(lab)
        sizes.append(size)
    return DetectionSamples(items, boxes, labels, sizes, classes, list(items), folder,
                            bad.note(folder))


def _yolo_labels(path: str, size, n_classes: int, bad: _Problems):
    if not os.path.exists(path):
        return _as_boxes([]), np.zeros(0, np.int64)
    text = _text(path)
    boxes, labels = [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        got = _yolo_line(line.split(), size, n_classes, f"{path}: line {n}", bad)
        if got is not None:
            boxes.append(got[0])
            labels.append(got[1])
    return _as_boxes(boxes), np.asarray(labels, np.int64)


def _yolo_line(fields: list[str], size, n_classes: int, where: str, bad: _Problems):
    if len(fields) != 5:
        return bad(where, f"expected 5 fields (class cx cy w h), got {len(fields)}")
    try:
        cls = int(fields[0])
        cx, cy, w, h = (float(v) for v in fields[1:])
    except ValueError:
        return bad(where, f"not a class index and four numbers: {' '.join(fields)!r}")
    if not 0 <= cls < n_classes:
        return bad(where, f"class {cls} is not in the class list (0..{n_classes - 1})")
    if not all(np.isfinite(v) for v in (cx, cy, w, h)):
        return bad(where, "coordinates must be finite")
    W, H = size
    box = _checked_box((cx - w / 2) * W, (cy - h / 2) * H, (cx + w / 2) * W, (cy + h / 2) * H,
                       size, where, bad, tol=max(EDGE_TOLERANCE, NORMALISED_TOLERANCE * max(W, H)))
    return None if box is None else (box, cls)


# --------------------------------------------------------------------------- splits

def split_detection(samples: DetectionSamples, fractions: dict[str, float],
                    seed: int) -> dict[str, DetectionSamples]:
    """A seeded random split of the images by ``fractions`` (name -> share, in order; the
    first takes the rest); each part gets at least one image when it asks for any."""
    n = len(samples)
    order = np.random.default_rng(seed).permutation(n)
    names = list(fractions)
    counts = {k: (max(1, int(round(fractions[k] * n))) if fractions[k] > 0 else 0)
              for k in names[1:]}
    if n - sum(counts.values()) < 1:
        raise DataError(f"{samples.source}: {n} images are too few to split into "
                        + ", ".join(names))
    out, start = {}, 0
    for k in names[1:]:
        out[k] = samples.subset(order[start:start + counts[k]])
        start += counts[k]
    out[names[0]] = samples.subset(order[start:])
    return {k: out[k] for k in names}


# --------------------------------------------------------------------------- decoding

def decode_resized(item, origin: str, size: int, grayscale: bool = False) -> np.ndarray:
    """One image as ``(size, size, 3)`` uint8, stretched to the square (boxes scale by
    ``size / width`` and ``size / height``); ``grayscale``: one channel, fed as three."""
    image = open_image(item, origin, grayscale=grayscale)
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def load_images(samples: DetectionSamples, size: int, *, skip_bad: bool = False,
                grayscale: bool = False,
                log: Callable[[str], None] = print) -> tuple[DetectionSamples, np.ndarray]:
    """Every image decoded and resized once: ``(samples kept, (N, size, size, 3) uint8)``;
    an unreadable image raises, or with ``skip_bad`` is left out and named."""
    arrays, keep = [], []
    for i, (item, origin) in enumerate(zip(samples.items, samples.origins)):
        try:
            arrays.append(decode_resized(item, origin, size, grayscale))
            keep.append(i)
        except DataError as e:
            if not skip_bad:
                raise DataError(f"{e}; --skip-bad leaves unreadable images out") from None
            log(f"skipped unreadable image {e}")
    if len(keep) != len(samples):
        samples = samples.subset(keep)
    stack = np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.uint8)
    return samples, stack


def scaled_boxes(samples: DetectionSamples, size: int) -> list[np.ndarray]:
    """Each image's boxes in the pixels of the ``size`` x ``size`` square it is fed as."""
    out = []
    for b, (w, h) in zip(samples.boxes, samples.sizes):
        scale = np.array([size / w, size / h, size / w, size / h], np.float32)
        out.append((b * scale).astype(np.float32))
    return out
