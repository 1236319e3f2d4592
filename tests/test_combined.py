"""``concat:A+B``: image backbones side by side, and ``auto`` probing its best two together."""

from __future__ import annotations

import torch

import transferkit
from transferkit import auto
from transferkit.api import build_strategy, configure, read_run_data
from transferkit.backbones import build_backbone, build_from_spec


def test_features_are_the_members_features_side_by_side():
    bb = build_backbone("concat:tiny-cnn+tiny-vit")
    a, b = build_backbone("tiny-cnn"), build_backbone("tiny-vit")
    x = torch.randn(3, *bb.preprocess["input_size"])
    with torch.no_grad():
        want = torch.cat([a(x)["pooled"], b(x)["pooled"]], 1)
        got = bb(x)["pooled"]
    assert got.shape == (3, a.feature_dim + b.feature_dim)
    torch.testing.assert_close(got, want)
    assert build_from_spec(bb.spec()).identity() == bb.identity()


def test_a_smaller_member_sees_the_pixels_resized_and_renormalised():
    bb = build_backbone("concat:tiny-cnn+tiny-vit")
    small = bb.members[0]
    small.preprocess = dict(small.preprocess, input_size=[3, 16, 16], mean=[0.0] * 3,
                            std=[1.0] * 3)
    bb = type(bb)([small, bb.members[1]], {})
    seen = []
    small.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    x = torch.randn(2, *bb.preprocess["input_size"])
    with torch.no_grad():
        bb(x)
    pre = bb.members[1].preprocess
    pixels = x * torch.tensor(pre["std"]).view(1, -1, 1, 1) + torch.tensor(pre["mean"]).view(
        1, -1, 1, 1)
    want = torch.nn.functional.interpolate(pixels, size=(16, 16), mode="bilinear",
                                           align_corners=False)
    torch.testing.assert_close(seen[0], want)


def test_partial_unfreezes_the_top_of_every_member():
    bb = build_backbone("concat:tiny-cnn+tiny-vit")
    top = {id(p) for p in bb.layer_groups()[-1]}
    for m in bb.members:
        assert {id(p) for p in m.layer_groups()[-1]} <= top


def test_fit_predict_and_bundle_round_trip(image_folder, tmp_path):
    tm = transferkit.fit(image_folder, backbone="concat:tiny-cnn+tiny-vit", strategy="linear",
                         out=tmp_path / "r", quiet=True)
    paths = [str(p) for p in sorted(image_folder.rglob("*.png"))[:4]]
    back = transferkit.load(tmp_path / "r" / "bundle")
    assert back.predict(paths) == tm.predict(paths)


def test_auto_probes_the_best_two_together(image_folder, tmp_path, monkeypatch):
    monkeypatch.setitem(auto.CANDIDATES, "image", ("tiny-cnn", "tiny-vit"))
    cfg = configure(image_folder, None, {"cache_dir": str(tmp_path / "c")})
    data = read_run_data(cfg, build_strategy(cfg)[0], lambda s: None)
    chosen, record = auto.choose(cfg, data.splits, data.modality, lambda n: {}, lambda s: None)
    names = [c["backbone"] for c in record["candidates"]]
    assert names[:2] == ["tiny-cnn", "tiny-vit"] and names[2].startswith("concat:")
    assert set(names[2][len("concat:"):].split("+")) == {"tiny-cnn", "tiny-vit"}
    assert chosen.backbone.name in names
