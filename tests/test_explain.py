"""``explain``: attention maps / rollout for ViTs, Grad-CAM for CNNs, token attributions for text."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import transferkit
from transferkit.backbones import build_backbone
from transferkit.backbones.image import capture_vit_attention
from transferkit.errors import ConfigError, TransferkitError
from transferkit.heads import HeadConfig, build_model
from transferkit.report.explain import _kind, attention_rollout, explain, vit_attention

from conftest import make_image_folder, make_text_csv


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain-data")
    return {"image": make_image_folder(root / "img", per_class=6),
            "text": make_text_csv(root / "texts.csv", n_per_class=6)}


def _fit(data, root, backbone, strategy, options=None):
    kind = "text" if backbone == "tiny-bert" else "image"
    tm = transferkit.fit(data[kind], backbone=backbone, strategy=strategy, options=options or {},
                         out=root / f"{backbone}-{strategy}", epochs=1, batch_size=8, seed=0,
                         quiet=True, no_cache=True)
    return tm.run_dir / "bundle"


@pytest.fixture(scope="module")
def vit_bundle(data, tmp_path_factory):
    return _fit(data, tmp_path_factory.mktemp("vit"), "tiny-vit", "prompt",
                {"depth": "deep", "tokens": 3})


@pytest.fixture(scope="module")
def cnn_bundle(data, tmp_path_factory):
    return _fit(data, tmp_path_factory.mktemp("cnn"), "tiny-cnn", "freeze")


@pytest.fixture(scope="module")
def bert_bundle(data, tmp_path_factory):
    return _fit(data, tmp_path_factory.mktemp("bert"), "tiny-bert", "prompt", {"tokens": 2})


def _images(data):
    return [str(data["image"] / "cat" / "cat_000.png"), str(data["image"] / "dog" / "dog_000.png")]


def _check_outputs(files, out, n_inputs):
    pngs = [f for f in files if f.suffix == ".png"]
    assert len(pngs) == n_inputs
    for f in files:
        assert f.exists() and f.parent == out
    for p in pngs:
        with Image.open(p) as im:
            im.verify()
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
    page = (out / "explain.html").read_text(encoding="utf-8")
    for p in pngs:
        assert f'src="{p.name}"' in page
    return json.loads((out / "explain.json").read_text()), page


def _finite(v):
    a = np.asarray(v, dtype=float)
    return a.size > 0 and np.isfinite(a).all()


# --------------------------------------------------------------------------- ViT

def test_vit_explain_writes_maps(vit_bundle, data, tmp_path):
    out = tmp_path / "ex"
    files = explain(vit_bundle, _images(data), out)
    report, page = _check_outputs(files, out, 2)
    assert report["kind"] == "vit" and report["strategy"] == "prompt"
    assert "attention rollout" in page
    for rec in report["inputs"]:
        assert rec["predicted"] in ("cat", "dog")
        assert rec["prompt_tokens"] == 3 and 0 < rec["prompt_attention_share"] < 1
        for when in ("before", "after"):
            for name in ("last_layer", "rollout"):
                grid = np.asarray(rec[when][name])
                assert grid.shape == (4, 4) and _finite(grid) and (grid >= 0).all()


def test_vit_rollout_rows_sum_to_one(vit_bundle, data):
    from transferkit.data.images import open_image
    from transferkit.data.transforms import eval_transform

    tm = transferkit.load(vit_bundle)
    x = eval_transform(tm.model.backbone.preprocess)(open_image(_images(data)[0], "x")).unsqueeze(0)
    fused = [blk.attn.fused_attn for blk in tm.model.backbone.model.blocks]
    after, logits = vit_attention(tm.model, x, model=tm.model)
    torch.testing.assert_close(logits, tm.model(x).detach())
    roll = after["rollout_matrix"]
    n = 1 + 3 + 16  # class token, prompts, 4x4 patches
    assert roll.shape == (n, n) and torch.isfinite(roll).all()
    torch.testing.assert_close(roll.sum(-1), torch.ones(n, dtype=roll.dtype))
    assert after["layout"]["deep_prompts"] and after["layout"]["extra"] == 3
    # fused attention is switched back on after the capture
    assert [blk.attn.fused_attn for blk in tm.model.backbone.model.blocks] == fused


def test_captured_attention_is_the_softmax_of_qk():
    bb = build_backbone("tiny-vit")
    vit = bb.model
    x = torch.randn(1, 3, 32, 32)
    with capture_vit_attention(vit) as maps, torch.no_grad():
        bb(x)
    assert len(maps) == len(vit.blocks)
    with torch.no_grad():
        h = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))
        attn = vit.blocks[0].attn
        qkv = attn.qkv(vit.blocks[0].norm1(h)).reshape(1, h.shape[1], 3, attn.num_heads, -1)
        q, k = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)
        ref = (q @ k.transpose(-2, -1) * attn.scale).softmax(-1)
    torch.testing.assert_close(maps[0], ref)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(ref.shape[:-1]))


def test_rollout_follows_abnar_zuidema():
    torch.manual_seed(0)
    maps = [torch.softmax(torch.randn(2, 5, 5), -1) for _ in range(3)]
    eye = torch.eye(5, dtype=torch.float64)
    ref = eye
    for a in maps:
        a = 0.5 * a.double().mean(0) + 0.5 * eye
        ref = a @ ref
    torch.testing.assert_close(attention_rollout(maps), ref)
    reset = attention_rollout(maps, reset_rows=[1, 2])
    torch.testing.assert_close(reset.sum(-1), torch.ones(5, dtype=torch.float64))


def test_plain_model_attention_equals_the_backbone():
    bb = build_backbone("tiny-vit")
    model = build_model(bb, HeadConfig(), ["a", "b"]).eval()
    x = torch.randn(1, 3, 32, 32)
    a, _ = vit_attention(bb, x)
    b, _ = vit_attention(model, x, model=model)
    assert b["layout"]["extra"] == 0
    np.testing.assert_array_equal(a["rollout"], b["rollout"])
    np.testing.assert_array_equal(a["last"], b["last"])


# --------------------------------------------------------------------------- CNN

def test_cnn_explain_grad_cam(cnn_bundle, data, tmp_path):
    import shutil

    folder = tmp_path / "pictures"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(_images(data)[0], folder / "a.png")
    shutil.copy(_images(data)[1], folder / "sub" / "b.png")
    out = tmp_path / "ex"
    files = explain(cnn_bundle, [str(folder)], out)  # a folder: all its images
    report, page = _check_outputs(files, out, 2)
    assert [r["input"] for r in report["inputs"]] == [str(folder / "a.png"), str(folder / "sub" / "b.png")]
    assert report["kind"] == "cnn"
    assert "Grad-CAM" in page and "class-agnostic" in page
    for rec in report["inputs"]:
        cam = np.asarray(rec["after"]["grad_cam"])
        norm = np.asarray(rec["before"]["activation_norm"])
        assert rec["layer"].startswith("blocks")
        assert cam.shape == norm.shape and min(cam.shape) >= 2
        assert _finite(cam) and (cam >= 0).all() and _finite(norm) and (norm >= 0).all()


# --------------------------------------------------------------------------- text

def test_text_explain_tokens(bert_bundle, tmp_path):
    out = tmp_path / "ex"
    texts = ["this is good and nice", "awful bad"]
    files = explain(bert_bundle, texts, out, texts=True)
    report, page = _check_outputs(files, out, 2)
    assert report["kind"] == "text"
    assert page.count('class="tok"') == 3 * sum(len(r["tokens"]) for r in report["inputs"])
    for rec, text in zip(report["inputs"], texts):
        toks = rec["tokens"]
        assert toks[0] == "[CLS]" and toks[-1] == "[SEP]" and rec["text"] == text
        for key in ("grad_x_input", "attention_before", "attention_after"):
            assert len(rec[key]) == len(toks) and _finite(rec[key])
        assert any(v != 0 for v in rec["grad_x_input"])
        # attention received, averaged over queries: the real tokens share all of it before,
        # and what the two prompt tokens do not take after
        assert sum(rec["attention_before"]) == pytest.approx(1.0, abs=1e-6)
        share = rec["prompt_attention_share"]
        assert 0 < share < 1
        assert sum(rec["attention_after"]) + share == pytest.approx(1.0, abs=1e-6)


def test_text_files_as_inputs(bert_bundle, tmp_path):
    f = tmp_path / "review.txt"
    f.write_text("great and fine\n", encoding="utf-8")
    files = explain(bert_bundle, [str(f)], tmp_path / "ex")
    report = json.loads((tmp_path / "ex" / "explain.json").read_text())
    assert report["inputs"][0]["input"] == str(f) and len(files) == 3


# --------------------------------------------------------------------------- faults

def test_bad_inputs_named(vit_bundle, bert_bundle, data, tmp_path):
    missing = tmp_path / "no-such-picture.png"
    with pytest.raises(TransferkitError, match="no-such-picture.png"):
        explain(vit_bundle, [_images(data)[0], str(missing)], tmp_path / "ex")
    assert not (tmp_path / "ex").exists()
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    with pytest.raises(TransferkitError, match="broken.png"):
        explain(vit_bundle, [str(broken)], tmp_path / "ex")
    with pytest.raises(TransferkitError, match="missing-review.txt"):
        explain(bert_bundle, [str(tmp_path / "missing-review.txt")], tmp_path / "ex")
    with pytest.raises(TransferkitError, match="no-bundle"):
        explain(tmp_path / "no-bundle", ["x"], tmp_path / "ex")
    with pytest.raises(ConfigError, match="takes images"):
        explain(vit_bundle, ["a text"], tmp_path / "ex", texts=True)


def test_word_vectors_not_supported():
    with pytest.raises(ConfigError, match="tiny-wordvec"):
        _kind(build_backbone("tiny-wordvec"))


def test_a_second_pass_is_what_is_explained():
    """Strategies that run the backbone twice (the first pass without gradients): the maps
    and attributions are those of the last pass, the gradient summed over both uses."""
    from transferkit.report.explain import text_attribution

    class Twice(torch.nn.Module):
        def features(self, m, batch):
            with torch.no_grad():
                m.backbone(batch)
            return m.backbone(batch)

    bert = build_model(build_backbone("tiny-bert"), HeadConfig(), ["a", "b"]).eval()
    ref = text_attribution(bert, "good and nice")
    bert.attach("twice", Twice(), computes_features=True)
    got = text_attribution(bert, "good and nice")
    np.testing.assert_allclose(got["grad_x_input"], ref["grad_x_input"], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(got["attention"], ref["attention"], rtol=1e-6)

    vit = build_model(build_backbone("tiny-vit"), HeadConfig(), ["a", "b"]).eval()
    x = torch.randn(1, 3, 32, 32)
    a, _ = vit_attention(vit, x, model=vit)
    vit.attach("twice", Twice(), computes_features=True)
    b, _ = vit_attention(vit, x, model=vit)
    np.testing.assert_array_equal(a["rollout"], b["rollout"])
