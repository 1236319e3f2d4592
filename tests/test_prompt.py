"""``prompt`` strategy: VPT (shallow / deep) on ViTs, deep prompts on BERT-style encoders."""

from __future__ import annotations

import pytest
import torch

import transferkit
from transferkit.backbones import build_backbone
from transferkit.errors import ConfigError
from transferkit.heads import HeadConfig, build_model
from transferkit.strategies.base import get_strategy
from transferkit.strategies.prompt import PromptTokens

from conftest import make_image_folder, make_text_csv


def _prepared(backbone, **options):
    model = build_model(backbone, HeadConfig(), ["a", "b"])
    strategy = get_strategy("prompt", **options)
    strategy.check_backbone(backbone)
    strategy.attach(model)
    model.eval()
    return model, strategy


# --------------------------------------------------------------------------- options

@pytest.mark.parametrize("opts,msg", [
    ({"tokens": 0}, "tokens must be an integer >= 1"),
    ({"tokens": "0"}, "tokens must be an integer >= 1"),
    ({"depth": "medium"}, "depth must be one of"),
    ({"dropout": 1.0}, "dropout must be in"),
    ({"lr": -1}, "lr must be > 0"),
    ({"head_lr": 0}, "head_lr must be > 0"),
])
def test_bad_options_refused(opts, msg):
    with pytest.raises(ConfigError, match=msg):
        get_strategy("prompt", **opts)


@pytest.mark.parametrize("name", ["tiny-cnn", "tiny-wordvec"])
def test_cnn_and_word_vectors_refused(name):
    with pytest.raises(ConfigError, match="strategy 'prompt'.*" + name):
        get_strategy("prompt").check_backbone(build_backbone(name))


# --------------------------------------------------------------------------- ViT

def _vit_backbone(**kw):
    """A small timm ViT; keyword arguments vary its prefix tokens and pooling."""
    from timm.models.vision_transformer import VisionTransformer

    from transferkit.backbones.image import TimmBackbone, _TINY_PREPROCESS

    torch.manual_seed(0)
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2,
                            mlp_ratio=2.0, num_classes=0, **kw)
    return TimmBackbone(vit, name="test-vit", preprocess=dict(_TINY_PREPROCESS), spec={},
                        weights_tag="t")


def _vit_reference(model, x):
    """Prompted features through timm's own ``forward_features``, prompts put in by hooks."""
    vit = model.backbone.model
    pr = model.prompts
    p, n = vit.num_prefix_tokens, pr.n_tokens
    hooks = [vit.norm_pre.register_forward_hook(
        lambda m, i, o: torch.cat([o[:, :p], pr.tokens[0].expand(o.shape[0], -1, -1), o[:, p:]], 1))]
    for li in range(1, pr.layers):
        def pre(m, args, li=li):
            h = args[0]
            return (torch.cat([h[:, :p], pr.tokens[li].expand(h.shape[0], -1, -1), h[:, p + n:]], 1),)
        hooks.append(vit.blocks[li].register_forward_pre_hook(pre))
    hooks.append(vit.norm.register_forward_hook(lambda m, i, o: torch.cat([o[:, :p], o[:, p + n:]], 1)))
    try:
        return vit.forward_head(vit.forward_features(x), pre_logits=True)
    finally:
        for h in hooks:
            h.remove()


@pytest.mark.parametrize("depth", ["shallow", "deep"])
@pytest.mark.parametrize("vit_kw", [{}, {"global_pool": "avg", "reg_tokens": 2}])
def test_vit_prompts_follow_timm(depth, vit_kw):
    bb = _vit_backbone(**vit_kw)
    model, _ = _prepared(bb, depth=depth, tokens=3)
    pr = model.prompts
    assert isinstance(pr, PromptTokens)
    assert tuple(pr.tokens.shape) == ((3 if depth == "deep" else 1), 3, 32)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got = model.features(x)["pooled"]
        plain = bb(x)["pooled"]
        ref = _vit_reference(model, x)
    assert got.shape == plain.shape == (2, bb.feature_dim)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, plain, atol=1e-4), "prompts had no effect"


def test_vit_prompt_init_is_fixed_and_vpt_bounded():
    bb = _vit_backbone()
    torch.manual_seed(123)
    a, _ = _prepared(bb, depth="deep")
    torch.manual_seed(456)
    b, _ = _prepared(_vit_backbone(), depth="deep")
    assert torch.equal(a.prompts.tokens, b.prompts.tokens)
    bound = (6.0 / (3 * 8 * 8 + 32)) ** 0.5
    assert a.prompts.tokens.abs().max() <= bound
    assert a.prompts.tokens.std() > bound / 4


# --------------------------------------------------------------------------- text

@pytest.fixture(scope="module")
def tiny_bert():
    return build_backbone("tiny-bert")


def _text_reference(model, batch):
    """Prompted token states through BertModel's own forward, prompts put in by hooks."""
    enc = model.backbone.model
    pr = model.prompts
    n = pr.n_tokens
    mask = batch["attention_mask"]
    hooks = [enc.embeddings.register_forward_hook(
        lambda m, i, o: torch.cat([pr.tokens[0].expand(o.shape[0], -1, -1), o], 1))]
    for li in range(1, pr.layers):
        def pre(m, args, kwargs, li=li):
            h = args[0]
            h = torch.cat([pr.tokens[li].expand(h.shape[0], -1, -1), h[:, n:]], 1)
            return (h, *args[1:]), kwargs
        hooks.append(enc.encoder.layer[li].register_forward_pre_hook(pre, with_kwargs=True))
    full = torch.cat([torch.ones(mask.shape[0], n, dtype=mask.dtype), mask], 1)
    try:
        out = enc(input_ids=batch["input_ids"], attention_mask=full,
                  token_type_ids=batch.get("token_type_ids")).last_hidden_state
    finally:
        for h in hooks:
            h.remove()
    return out[:, n:]


@pytest.mark.parametrize("depth", ["deep", "shallow"])
def test_text_prompts_follow_bert(tiny_bert, depth):
    model, strat = _prepared(tiny_bert, depth=depth, tokens=4)
    assert model.prompts.layers == (len(tiny_bert.model.encoder.layer) if depth == "deep" else 1)
    batch = tiny_bert.tokenize(["this is good and nice", "bad"])
    with torch.no_grad():
        got = model.features(batch)
        plain = tiny_bert(batch)
        ref = _text_reference(model, batch)
    assert got["pooled"].shape == plain["pooled"].shape
    assert got["tokens"].shape == plain["tokens"].shape
    assert torch.equal(got["mask"], plain["mask"])
    torch.testing.assert_close(got["tokens"], ref, rtol=1e-5, atol=1e-5)
    m = got["mask"].unsqueeze(-1).float()
    torch.testing.assert_close(got["pooled"], (ref * m).sum(1) / m.sum(1), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got["pooled"], plain["pooled"], atol=1e-4)


def test_text_default_depth_is_deep(tiny_bert):
    model, strat = _prepared(tiny_bert)
    assert strat.depth_for(tiny_bert) == "deep" and model.prompts.deep


# --------------------------------------------------------------------------- training

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("prompt")
    return {"image": make_image_folder(root / "img", per_class=8),
            "text": make_text_csv(root / "texts.csv", n_per_class=8)}


@pytest.mark.parametrize("backbone,depth", [("tiny-vit", "shallow"), ("tiny-vit", "deep"),
                                            ("tiny-bert", "deep")])
def test_fit_trains_prompts_only_and_round_trips(backbone, depth, data, tmp_path):
    kind = "text" if backbone == "tiny-bert" else "image"
    tm = transferkit.fit(data[kind], backbone=backbone, strategy="prompt", out=tmp_path / "run",
                         options={"depth": depth, "tokens": 4}, epochs=1, batch_size=8,
                         seed=0, quiet=True, test_fraction=0.2)
    fresh = build_backbone(backbone).state_dict()
    for k, v in tm.model.backbone.state_dict().items():
        assert torch.equal(fresh[k], v), f"backbone tensor {k} changed"
    ref, _ = _prepared(build_backbone(backbone), depth=depth, tokens=4)
    assert not torch.equal(ref.prompts.tokens, tm.model.prompts.tokens), "prompts did not train"
    tensors = tm._touched
    assert "prompts.tokens" in tensors
    assert not any(t.startswith("backbone.") for t in tensors)

    loaded = transferkit.load(tm.run_dir / "bundle")
    assert torch.equal(loaded.model.prompts.tokens, tm.model.prompts.tokens)
    from transferkit.data import read_data, resolve_splits

    s = resolve_splits(read_data(data[kind]), seed=0, test_fraction=0.2)["test"]
    a, b = tm.logits(s), loaded.logits(s)
    assert (a == b).all()
    # the prompts change the outputs: the plain backbone under the same head differs
    with torch.no_grad():
        plain = loaded.model.head(loaded.model.backbone(_batch(loaded, s)))
    assert not torch.allclose(plain, torch.as_tensor(b), atol=1e-5)


def _batch(tm, s):
    from transferkit.engine.inputs import InputPipeline

    pipe = InputPipeline(tm.model.backbone)
    parts = list(pipe.batches(s, batch_size=len(s)))
    assert len(parts) == 1
    b = parts[0]
    assert (b.indices.numpy() == range(len(s))).all()
    return b.inputs
