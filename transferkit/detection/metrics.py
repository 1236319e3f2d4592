"""Detection metrics by the COCO definition, computed by ``pycocotools``' ``COCOeval``.

:func:`detection_metrics` returns ``map`` (AP averaged over IoU 0.50:0.05:0.95, 101-point
interpolated precision, up to 100 detections per image), ``map50``, ``map75``, ``mar100``
and, per class, ``ap`` and ``ap50`` (``None`` for a class with no ground-truth box in the
split, as COCO reports -1 there), plus ``n`` (images) and ``boxes`` (ground-truth boxes).
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np


def _coco_ground_truth(gts, sizes, n_classes: int) -> dict[str, Any]:
    images = [{"id": i + 1, "width": int(w), "height": int(h)} for i, (w, h) in enumerate(sizes)]
    anns = []
    for i, (boxes, labels) in enumerate(gts):
        for b, c in zip(np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(labels)):
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(c) + 1,
                         "bbox": [float(b[0]), float(b[1]), w, h], "area": w * h,
                         "iscrowd": 0})
    cats = [{"id": k + 1, "name": str(k)} for k in range(n_classes)]
    return {"images": images, "annotations": anns, "categories": cats}


def _detections(preds) -> np.ndarray:
    rows = []
    for i, p in enumerate(preds):
        b = np.asarray(p["boxes"], np.float64).reshape(-1, 4)
        for box, s, c in zip(b, np.asarray(p["scores"]), np.asarray(p["labels"])):
            rows.append([i + 1, box[0], box[1], box[2] - box[0], box[3] - box[1], float(s),
                         int(c) + 1])
    return np.asarray(rows, np.float64).reshape(-1, 7)


def _empty(classes, n: int, boxes: int) -> dict[str, Any]:
    per = {c: {"ap": 0.0, "ap50": 0.0} for c in classes}
    return {"map": 0.0, "map50": 0.0, "map75": 0.0, "mar100": 0.0, "n": n, "boxes": boxes,
            "per_class": per}


def detection_metrics(preds: list[dict], gts: list[tuple], sizes: list[tuple[int, int]],
                      classes: list[str]) -> dict[str, Any]:
    """COCO box metrics of ``preds`` (per image ``boxes`` ``(n, 4)`` xyxy, ``scores``,
    ``labels`` as class indices) against ``gts`` (per image ``(boxes, labels)``) on images
    of ``sizes`` (``(width, height)``)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    n_boxes = int(sum(len(lab) for _, lab in gts))
    dets = _detections(preds)
    if not len(dets) or not n_boxes:
        return _empty(classes, len(gts), n_boxes)
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        gt = COCO()
        gt.dataset = _coco_ground_truth(gts, sizes, len(classes))
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [max(0.0, float(v)) for v in ev.stats]
    return {"map": stats[0], "map50": stats[1], "map75": stats[2], "mar100": stats[8],
            "n": len(gts), "boxes": n_boxes, "per_class": _per_class(ev, classes)}


def _per_class(ev, classes: list[str]) -> dict[str, dict[str, float | None]]:
    """AP and AP50 per class from ``COCOeval.eval['precision']`` ``[T, R, K, A, M]`` (area
    'all', 100 detections)."""
    prec = ev.eval["precision"]
    out: dict[str, dict[str, float | None]] = {}
    for k, c in enumerate(classes):
        p_all, p50 = prec[:, :, k, 0, -1], prec[0, :, k, 0, -1]
        out[c] = {"ap": float(p_all[p_all > -1].mean()) if (p_all > -1).any() else None,
                  "ap50": float(p50[p50 > -1].mean()) if (p50 > -1).any() else None}
    return out


def summary(m: dict[str, Any] | None) -> dict[str, Any] | None:
    """The figures of ``metrics.json``'s ``val`` / ``test`` (per class kept beside)."""
    if m is None:
        return None
    return {k: m[k] for k in ("map50", "map", "map75", "mar100", "n", "boxes")}
