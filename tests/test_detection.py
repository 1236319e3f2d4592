"""Detection: COCO and YOLO readers and their checks, the seeded split, COCO mAP on
hand-checked fixtures, the head on a tiny random backbone, and fit / evaluate / predict /
bundle / resume through the command line on tiny generated canvases."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from transferkit import api
from transferkit.backbones import build_backbone
from transferkit.cli import main
from transferkit.data.detection import (load_images, read_coco, read_detection, read_yolo,
                                        scaled_boxes, split_detection)
from transferkit.detection.metrics import detection_metrics
from transferkit.detection.model import DetectionHeadConfig, build_detector
from transferkit.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT.parent / "shared" / "data" / "digits"


# --------------------------------------------------------------------------- fixtures

def shapes_set(root: Path, n: int, seed: int, size=(48, 40)) -> Path:
    """``n`` noisy images with 1-2 shapes each (a square: class ``box``, a disc: ``disc``)
    as a YOLO folder plus the same boxes as ``root/coco.json``."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("box\ndisc\n")
    coco = {"images": [], "annotations": [], "categories": [{"id": 5, "name": "box"},
                                                            {"id": 9, "name": "disc"}]}
    W, H = size
    for i in range(n):
        im = Image.fromarray(rng.integers(0, 60, (H, W, 3), dtype=np.uint8))
        draw, lines = ImageDraw.Draw(im), []
        for k in range(1 + i % 2):
            cls, s = int(rng.integers(2)), int(rng.integers(10, 16))
            x0, y0 = int(rng.integers(0, W - s)), int(rng.integers(0, H - s))
            box = [x0, y0, x0 + s, y0 + s]
            (draw.rectangle if cls == 0 else draw.ellipse)(box, fill=(230, 200 * cls, 40))
            lines.append(f"{cls} {(x0 + s / 2) / W} {(y0 + s / 2) / H} {s / W} {s / H}")
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": i,
                                        "category_id": (5, 9)[cls], "bbox": [x0, y0, s, s]})
        im.save(root / "images" / f"s{i:03d}.png")
        (root / "labels" / f"s{i:03d}.txt").write_text("\n".join(lines) + "\n")
        coco["images"].append({"id": i, "file_name": f"images/s{i:03d}.png"})
    (root / "coco.json").write_text(json.dumps(coco))
    return root


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return shapes_set(tmp_path_factory.mktemp("shapes"), 24, seed=1)


# --------------------------------------------------------------------------- readers

def test_coco_and_yolo_read_the_same_boxes(shapes):
    coco, yolo = read_coco(shapes / "coco.json"), read_yolo(shapes)
    assert coco.classes == yolo.classes == ["box", "disc"]
    assert [Path(p).name for p in coco.items] == [Path(p).name for p in yolo.items]
    assert coco.sizes[0] == (48, 40)  # read from the image when the JSON has no size
    for a, b, la, lb in zip(coco.boxes, yolo.boxes, coco.labels, yolo.labels):
        np.testing.assert_allclose(a, b, atol=1e-3)
        assert la.tolist() == lb.tolist()
    first = json.loads((shapes / "coco.json").read_text())["annotations"][0]["bbox"]
    x, y, w, h = first
    assert coco.boxes[0][0].tolist() == [x, y, x + w, y + h]  # xywh became xyxy


def test_detection_format_is_detected(shapes, tmp_path):
    assert read_detection(shapes)["all"].source == str(shapes)  # images/ + labels/: YOLO
    only_json = tmp_path / "c"
    only_json.mkdir()
    (only_json / "a.json").write_text((shapes / "coco.json").read_text().replace(
        "images/", str(shapes / "images") + "/"))
    assert len(read_detection(only_json)["all"]) == 24  # a folder with one .json: COCO


def test_skip_bad_drops_bad_boxes_and_counts_them(tmp_path):
    root = shapes_set(tmp_path / "y", 3, seed=2)
    with open(root / "labels" / "s000.txt", "a") as fh:
        fh.write("1 0.5 0.5 0.2\n0 0.5 0.5 0 0.1\n7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DataError, match=r"s000.txt: line \d: expected 5 fields"):
        read_yolo(root)
    s = read_yolo(root, skip_bad=True)
    assert len(s.boxes[0]) == 1 and s.notes and "dropped 3 bad box(es)" in s.notes[0]


def test_coco_skip_bad_keeps_the_good_boxes(tmp_path):
    root = shapes_set(tmp_path / "c", 2, seed=3)
    data = json.loads((root / "coco.json").read_text())
    good = len(data["annotations"])
    data["annotations"] += [{"id": 90, "image_id": 0, "category_id": 5, "bbox": [40, 30, 20, 20]},
                            {"id": 91, "image_id": 42, "category_id": 5, "bbox": [1, 1, 5, 5]},
                            {"id": 92, "image_id": 0, "category_id": 6, "bbox": [1, 1, 5, 5]}]
    (root / "coco.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"annotation \d+ \(id 90\).*outside the 48 x 40 image"):
        read_coco(root / "coco.json")
    s = read_coco(root / "coco.json", skip_bad=True)
    assert s.n_boxes == good and "dropped 3 bad box(es)" in s.notes[0]


def test_images_of_any_size_and_mode_decode_to_one_square(tmp_path):
    modes = [("L", (30, 20)), ("RGBA", (64, 64)), ("P", (17, 41)), ("I;16", (40, 30))]
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}
    for i, (mode, size) in enumerate(modes):
        im = (Image.fromarray(np.full(size[::-1], 3000, np.uint16)) if mode == "I;16"
              else Image.new("RGB", size, (90, 20, 200)).convert(mode))
        im.save(tmp_path / f"m{i}.png")
        coco["images"].append({"id": i, "file_name": f"m{i}.png"})
        coco["annotations"].append({"id": i, "image_id": i, "category_id": 1,
                                    "bbox": [1, 2, size[0] - 2, size[1] - 3]})
    (tmp_path / "a.json").write_text(json.dumps(coco))
    s = read_coco(tmp_path / "a.json")
    kept, images = load_images(s, 32)
    assert images.shape == (4, 32, 32, 3) and images.dtype == np.uint8 and len(kept) == 4
    scaled = scaled_boxes(kept, 32)
    np.testing.assert_allclose(scaled[0][0], [32 / 30, 3.2, 32 * 29 / 30, 32 * 19 / 20], rtol=1e-5)


def test_seeded_split_is_disjoint_and_repeatable(shapes):
    s = read_yolo(shapes)
    a = split_detection(s, {"train": 1.0, "val": 0.25, "test": 0.25}, seed=4)
    b = split_detection(s, {"train": 1.0, "val": 0.25, "test": 0.25}, seed=4)
    assert [len(a[k]) for k in ("train", "val", "test")] == [12, 6, 6]
    assert a["val"].items == b["val"].items
    assert not set(a["train"].items) & set(a["val"].items)
    assert split_detection(s, {"train": 1.0, "val": 0.25}, seed=5)["val"].items != a["val"].items


# --------------------------------------------------------------------------- metrics

def _pred(boxes, scores, labels):
    return {"boxes": np.array(boxes, np.float32), "scores": np.array(scores),
            "labels": np.array(labels)}


def test_map_of_perfect_predictions_is_one():
    gts = [(np.array([[0, 0, 10, 10], [20, 20, 40, 35]], np.float32), np.array([0, 1]))]
    m = detection_metrics([_pred(gts[0][0], [0.9, 0.8], [0, 1])], gts, [(50, 50)], ["a", "b"])
    assert m["map"] == pytest.approx(1.0) and m["map50"] == pytest.approx(1.0)
    assert m["per_class"]["b"]["ap"] == pytest.approx(1.0)


def test_map_counts_iou_thresholds_by_hand():
    """One box found with IoU 0.6: a hit at IoU 0.50, 0.55 and 0.60, a miss at the seven
    thresholds above, so AP@[0.5:0.95] = 3/10 and AP@0.5 = 1, AP@0.75 = 0."""
    gt = np.array([[0, 0, 10, 10]], np.float32)
    pred = [[0, 0, 10, 6]]  # IoU 60 / 100
    m = detection_metrics([_pred(pred, [0.9], [0])], [(gt, np.array([0]))], [(20, 20)], ["a"])
    assert m["map50"] == pytest.approx(1.0)
    assert m["map75"] == pytest.approx(0.0)
    assert m["map"] == pytest.approx(0.3)


def test_map_of_wrong_class_and_no_detections_is_zero():
    gts = [(np.array([[0, 0, 10, 10]], np.float32), np.array([0]))]
    assert detection_metrics([_pred([[0, 0, 10, 10]], [0.9], [1])], gts, [(20, 20)],
                             ["a", "b"])["map50"] == pytest.approx(0.0)
    empty = detection_metrics([_pred(np.zeros((0, 4)), [], [])], gts, [(20, 20)], ["a", "b"])
    assert empty["map50"] == 0.0 and empty["boxes"] == 1


# --------------------------------------------------------------------------- the head

def test_head_on_a_tiny_backbone_trains_and_detects():
    torch.manual_seed(0)
    model = build_detector(build_backbone("tiny-cnn"), DetectionHeadConfig(image_size=64),
                           ["box", "disc"])
    maps = model.maps(torch.randn(2, 3, 64, 64))
    assert [m.shape[-1] for m in maps] == [64 // s for _, s in model.backbone.feature_map_info()]
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 30.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.long)}]
    terms = model.head.loss(maps, targets)
    assert set(terms) == {"classification", "bbox_regression", "bbox_ctrness"}
    sum(terms.values()).backward()
    assert all(p.grad is not None for p in model.head.fpn.parameters())
    model.eval()
    d = model(torch.randn(3, 3, 64, 64))
    assert len(d) == 3 and d[0]["boxes"].shape[-1] == 4


def test_vit_backbone_is_refused():
    with pytest.raises(ConfigError, match="gives no feature maps"):
        build_detector(build_backbone("tiny-vit"), DetectionHeadConfig(), ["a", "b"])


# --------------------------------------------------------------------------- the command line

def _fit(data, out, *more):
    return main(["fit", str(data), "--task", "detection", "--backbone", "tiny-cnn",
                 "--image-size", "64", "--epochs", "2", "--batch-size", "8", "--out", str(out),
                 "-q", *more])


@pytest.fixture(scope="module")
def run(shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("det") / "run"
    assert _fit(shapes, out, "--strategy", "partial", "-o", "head_epochs=1", "-o", "layers=2") == 0
    return out


def test_fit_writes_metrics_history_and_bundle(run):
    m = json.loads((run / "metrics.json").read_text())
    assert set(m["val"]) >= {"map50", "map", "map75", "mar100", "n", "boxes"}
    assert m["test"] is not None and m["test"]["n"] == 4  # 24 images: 4 val, 4 test (seeded)
    assert set(m["per_class"]["val"]) == {"box", "disc"}
    assert 0.0 <= m["val"]["map50"] <= 1.0 and m["best_stage"] in ("head", "finetune")
    hist = (run / "history.csv").read_text().splitlines()
    assert "val_map50" in hist[0] and len(hist) == 1 + 3  # 1 head epoch + 2 partial epochs
    cfg = json.loads((run / "bundle" / "config.json").read_text())
    assert cfg["task"] == "detection" and any(t.startswith("backbone.") for t in cfg["tensors"])
    assert json.loads((run / "run_config.json").read_text())["data"]["task"] == "detection"


def test_fit_writes_a_report_page_with_curves_examples_and_ap_per_class(run):
    page = (run / "report.html").read_text()
    m = json.loads((run / "metrics.json").read_text())
    examples = sorted((run / "examples").glob("*.png"))
    assert len(examples) == 4  # every validation image of the 24 (fewer than EXAMPLES)
    assert (run / "history_map.png").is_file()
    assert page.count("<img src=\"data:image/png;base64,") == 1 + len(examples)
    assert f"{m['val']['map50']:.4f}" in page and f"{m['test']['map50']:.4f}" in page
    for c, r in m["per_class"]["test"].items():
        assert f"<td>{c}</td>" in page and f"{r['ap50']:.4f}" in page
    assert "&quot;task&quot;: &quot;detection&quot;" in page  # the settings
    assert "stages at\n64 px" in page and "partial" in page


def test_drawn_examples_show_true_boxes_in_green_and_predictions_in_red():
    from transferkit.detection.run import drawn

    im = Image.new("RGB", (40, 40))
    pred = {"boxes": np.array([[20.0, 20.0, 35.0, 35.0], [2.0, 30.0, 8.0, 38.0]]),
            "scores": np.array([0.9, 0.1]), "labels": ["disc", "box"]}
    drawn(im, pred, 0.3, truth=(np.array([[2.0, 2.0, 15.0, 15.0]]), ["box"]))
    assert im.getpixel((8, 2)) == (40, 220, 60)       # the true box's top edge
    assert im.getpixel((27, 35)) == (255, 40, 40)     # the kept prediction's bottom edge
    assert im.getpixel((5, 38)) == (0, 0, 0)          # the low-score one is not drawn


def test_flipped_targets_mirror_the_boxes_in_the_square():
    from transferkit.detection.trainer import ImageSet
    from transferkit.data.detection import DetectionSamples

    samples = DetectionSamples(["a", "b"], [np.zeros((1, 4)), np.zeros((1, 4))],
                               [np.array([0]), np.array([1])], [(64, 64)] * 2, ["x", "y"],
                               ["a", "b"], "mem")
    boxes = [np.array([[4.0, 6.0, 20.0, 30.0]], np.float32), np.array([[0, 0, 8, 8]], np.float32)]
    data = ImageSet(samples, np.zeros((2, 64, 64, 3), np.uint8), boxes)
    t = data.targets([0, 1], "cpu", flip=[True, False])
    assert t[0]["boxes"].tolist() == [[44.0, 6.0, 60.0, 30.0]]
    assert t[1]["boxes"].tolist() == [[0.0, 0.0, 8.0, 8.0]] and t[1]["labels"].tolist() == [1]


@pytest.mark.parametrize("strategy", [["freeze"], ["partial", "-o", "head_epochs=1"]])
def test_augment_flips_training_images_in_frozen_and_trained_stages(shapes, tmp_path, strategy):
    plain, flipped = tmp_path / "plain", tmp_path / "flip"
    assert _fit(shapes, plain, "--strategy", *strategy) == 0
    assert _fit(shapes, flipped, "--strategy", *strategy, "--augment") == 0
    a = (plain / "history.csv").read_text().splitlines()
    b = (flipped / "history.csv").read_text().splitlines()
    assert len(a) == len(b) and a[1].split(",")[2] != b[1].split(",")[2]  # other train loss
    m = json.loads((flipped / "metrics.json").read_text())
    assert 0.0 <= m["val"]["map50"] <= 1.0


def test_grayscale_detector_sees_colour_and_grey_images_alike(shapes, tmp_path):
    out = tmp_path / "grey"
    assert _fit(shapes, out, "--strategy", "freeze", "--grayscale") == 0
    assert json.loads((out / "bundle" / "config.json").read_text())["grayscale"] is True
    colour = np.asarray(Image.open(shapes / "images" / "s002.png").convert("RGB"))
    grey = np.asarray(Image.fromarray(colour).convert("L").convert("RGB"))
    assert (colour != grey).any()
    tm = api.load(out / "bundle")
    a, b = tm.predict([colour, grey])
    np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-6)
    np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1e-4)


def test_head_settings_from_the_command_line_shape_the_head(shapes, tmp_path):
    out = tmp_path / "shaped"
    assert _fit(shapes, out, "--strategy", "freeze", "--epochs", "1", "--det-width", "32",
                "--det-convs", "1", "--det-levels", "2") == 0
    head = json.loads((out / "metrics.json").read_text())["head"]
    assert (head["width"], head["convs"], head["levels"]) == (32, 1, 2)
    assert json.loads((out / "run_config.json").read_text())["detection"]["convs"] == 1
    tm = api.load(out / "bundle")
    fcos = tm.model.head.fcos.head
    convs = [m for m in fcos.classification_head.conv if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 1 and convs[0].out_channels == 32
    assert len(tm.model.head.strides) == 2


@pytest.mark.parametrize("flags, message", [
    (["--det-width", "100"], "--det-width must be a multiple of 32, got 100"),
    (["--det-convs", "0"], "--det-convs must be >= 1, got 0"),
    (["--det-nms-threshold", "0"], "--det-nms-threshold must be in (0, 1]"),
])
def test_bad_head_settings_are_refused_in_one_line(shapes, tmp_path, capsys, flags, message):
    assert _fit(shapes, tmp_path / "bad", *flags) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_detection_settings_on_a_classification_run_are_refused(shapes, tmp_path, capsys):
    code = main(["fit", str(shapes), "--det-width", "96", "--out", str(tmp_path / "c"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "--det-width: detection settings; this run is not --task detection" in err


def test_bundle_round_trip_gives_the_same_boxes(run, shapes):
    tm = api.load(run / "bundle")
    assert tm.task == "detection" and tm.classes == ["box", "disc"]
    items = [str(shapes / "images" / "s000.png"), str(shapes / "images" / "s001.png")]
    a = tm.predict(items)
    again = api.load(run / "bundle").predict(items)
    for x, y in zip(a, again):
        np.testing.assert_array_equal(x["boxes"], y["boxes"])
        np.testing.assert_array_equal(x["scores"], y["scores"])
    assert all(b[2] <= 48.0 + 1e-4 and b[3] <= 40.0 + 1e-4 for p in a for b in p["boxes"])


def test_evaluate_json_has_the_metrics_keys(run, shapes, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(run / "bundle"), str(shapes / "coco.json"), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert {"map50", "map", "map75", "mar100", "per_class"} <= set(m) and m["n"] == 24
    assert main(["evaluate", str(run / "bundle"), str(shapes)]) == 0
    assert "mAP50" in capsys.readouterr().out


def test_predict_prints_boxes_and_draws(run, shapes, tmp_path, capsys):
    capsys.readouterr()
    img = shapes / "images" / "s003.png"
    code = main(["predict", str(run / "bundle"), str(img), "--json", "--min-score", "0",
                 "--draw", str(tmp_path / "drawn")])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["input"] == str(img) and rows[0]["boxes"]
    assert set(rows[0]["boxes"][0]) == {"label", "score", "x0", "y0", "x1", "y1"}
    drawn = Image.open(tmp_path / "drawn" / "s003.png")
    assert drawn.size == (48, 40)
    assert main(["predict", str(run / "bundle"), str(img), "--min-score", "0"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split("\t")[0].strip() in ("box", "disc")


def test_a_detection_bundle_is_refused_where_a_classifier_is_needed(run, tmp_path, capsys):
    code = main(["export", str(run / "bundle"), "--onnx", str(tmp_path / "m.onnx")])
    assert code == 2 and "holds a detection model" in capsys.readouterr().err


def test_resume_of_a_finished_run_writes_the_same_figures(shapes, tmp_path):
    out = tmp_path / "r"
    assert _fit(shapes, out, "--strategy", "freeze") == 0
    before = json.loads((out / "metrics.json").read_text())
    assert main(["fit", "--resume", str(out), "-q"]) == 0
    after = json.loads((out / "metrics.json").read_text())
    assert after["val"] == before["val"] and after["best_epoch"] == before["best_epoch"]


@pytest.mark.skipif(not (DIGITS / "mnist_test.npz").exists(), reason="../shared/data/digits is absent")
def test_digit_canvas_generator_writes_matching_coco_and_yolo(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from digit_canvases import make_canvases
    finally:
        sys.path.pop(0)
    out = make_canvases(tmp_path / "dc", train=6, val=2, test=2, seed=3)
    splits = read_detection(out)
    assert set(splits) == {"train", "val", "test"} and len(splits["train"]) == 6
    coco = read_coco(out / "train.json")
    assert coco.classes == [str(c) for c in range(10)]
    for a, b in zip(coco.boxes, splits["train"].boxes):
        np.testing.assert_allclose(a, b, atol=0.01)
        assert 1 <= len(a) <= 4


def test_lora_detector_and_its_bundle_give_the_same_boxes(shapes, tmp_path):
    """The model fit returns against the one its bundle rebuilds (adapters included)."""
    out = tmp_path / "lora"
    fitted = api.fit(str(shapes), task="detection", backbone="tiny-cnn", image_size=64,
                     strategy="lora", epochs=1, batch_size=8, out=str(out), quiet=True)
    cfg = json.loads((out / "bundle" / "config.json").read_text())
    assert any("lora_A" in t for t in cfg["tensors"])
    items = [str(shapes / "images" / f"s00{i}.png") for i in range(3)]
    for a, b in zip(fitted.predict(items), api.load(out / "bundle").predict(items)):
        np.testing.assert_array_equal(a["boxes"], b["boxes"])
        np.testing.assert_array_equal(a["scores"], b["scores"])
        assert a["labels"] == b["labels"]
