"""``lora`` and ``bitfit`` on the tiny test backbones: targets, what trains, bundles, PEFT."""

from __future__ import annotations

import json

import pytest
import torch

import transferkit
from transferkit.backbones import build_backbone
from transferkit.errors import ConfigError
from transferkit.heads import HeadConfig, build_model
from transferkit.strategies.base import get_strategy
from transferkit.strategies.bitfit import bitfit_parameters

from conftest import make_image_folder, make_text_csv


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora-bitfit")
    return {"image": make_image_folder(root / "img", per_class=10),
            "text": make_text_csv(root / "texts.csv", n_per_class=14)}


def _prepared(backbone: str, **options):
    strat = get_strategy("lora", **options)
    bb = build_backbone(backbone)
    strat.check_backbone(bb)
    model = build_model(bb, HeadConfig(), ["a", "b"])
    strat.attach(model)
    return strat, model


def _fit(data, backbone, strategy, tmp_path, **options):
    modality = "image" if backbone in ("tiny-cnn", "tiny-vit") else "text"
    return transferkit.fit(data[modality], backbone=backbone, strategy=strategy,
                           out=tmp_path / f"{strategy}-{backbone}", epochs=2, batch_size=8,
                           seed=0, quiet=True, options=options)


def _plain(name: str) -> str:
    return name.replace(".base_layer.", ".")


def _own_tensors(backbone_module) -> dict[str, torch.Tensor]:
    """The backbone's own tensors under their original names (adapters left out)."""
    return {_plain(k): v.detach().clone() for k, v in backbone_module.state_dict().items()
            if "lora_" not in k}


# --------------------------------------------------------------------------- lora: targets

@pytest.mark.parametrize("backbone,suffixes,max_fraction", [
    ("tiny-vit", {"qkv"}, 0.10),
    ("tiny-bert", {"query", "value"}, 0.06),
    ("tiny-cnn", {"conv_pw", "conv_pwl", "conv_head"}, 0.12),
])
def test_lora_targets_per_backbone(backbone, suffixes, max_fraction):
    strat, model = _prepared(backbone)
    root = model.backbone.model
    adapted = {n for n, m in root.named_modules() if hasattr(m, "lora_A")}
    assert adapted, "no adapter injected"
    assert {n.rpartition(".")[2] for n in adapted} == suffixes
    if backbone == "tiny-cnn":  # only ungrouped 1x1 convolutions, never depthwise or SE ones
        for n in adapted:
            base = root.get_submodule(n).get_base_layer()
            assert base.kernel_size == (1, 1) and base.groups == 1, n
            assert ".se." not in n
    n_lora = sum(p.numel() for p in strat.adapter_params(model))
    n_backbone = sum(p.numel() for n, p in model.backbone.named_parameters() if "lora_" not in n)
    assert 0 < n_lora < max_fraction * n_backbone
    # the original weights sit under base_layer, untouched
    fresh = build_backbone(backbone).state_dict()
    assert _own_tensors(model.backbone).keys() == fresh.keys()


def test_lora_prepare_is_deterministic():
    _, a = _prepared("tiny-vit")
    _, b = _prepared("tiny-vit")
    sa, sb = a.backbone.state_dict(), b.backbone.state_dict()  # (heads are random)
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # B starts at zero: an untrained adapter changes nothing
    assert all(float(v.abs().sum()) == 0 for k, v in sa.items() if "lora_B" in k)


def test_lora_explicit_targets():
    _, model = _prepared("tiny-vit", targets="qkv, attn.proj")
    adapted = {n for n, m in model.backbone.model.named_modules() if hasattr(m, "lora_A")}
    assert adapted == {f"blocks.{i}.attn.{s}" for i in (0, 1) for s in ("qkv", "proj")}


class _SqueezeExcite(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv_reduce = torch.nn.Conv2d(c, 4, 1)
        self.conv_expand = torch.nn.Conv2d(4, c, 1)

    def forward(self, x):
        return x * self.conv_expand(self.conv_reduce(x.mean((2, 3), keepdim=True))).sigmoid()


class _Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(16, 32, 1)
        self.conv_dw = torch.nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.se = _SqueezeExcite(32)
        self.conv3 = torch.nn.Conv2d(32, 16, 1)

    def forward(self, x):
        return x + self.conv3(self.se(self.conv_dw(self.conv1(x))))


class _ToyCNN(torch.nn.Module):
    """A stem ``conv1`` (3x3) whose name is also the blocks' pointwise ``conv1``."""

    name = "toy-cnn"

    def __init__(self):
        super().__init__()
        self.model = torch.nn.Module()
        self.model.conv1 = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.model.blocks = torch.nn.Sequential(_Block(), _Block())

    def forward(self, x):
        return {"pooled": self.model.blocks(self.model.conv1(x)).mean((2, 3))}


def test_lora_pointwise_rule_excludes_exactly():
    strat = get_strategy("lora")
    bb = _ToyCNN()
    plan = strat.plan(bb)
    assert set(plan.targets) == {"conv1", "conv3"} and plan.exclude == ["conv1"]
    holder = torch.nn.Module()
    holder.backbone = bb
    strat.attach(holder)
    adapted = {n for n, m in bb.model.named_modules() if hasattr(m, "lora_A")}
    assert adapted == {f"blocks.{i}.conv{j}" for i in (0, 1) for j in (1, 3)}
    assert bb(torch.randn(2, 3, 8, 8))["pooled"].shape == (2, 16)


@pytest.mark.parametrize("backbone,targets,msg", [
    ("tiny-bert", "nonexistent", "nonexistent"),
    ("tiny-vit", "qkv,nope", "nope"),
    ("tiny-cnn", "conv_dw", "groups"),          # depthwise: PEFT needs r divisible by groups
    ("tiny-vit", "mlp", "Mlp"),                 # a container, not a layer
    ("tiny-vit", "head", "no part in its features"),  # the timm classifier is not used
])
def test_lora_bad_targets_refused(backbone, targets, msg):
    strat = get_strategy("lora", targets=targets)
    with pytest.raises(ConfigError, match="lora") as err:
        strat.check_backbone(build_backbone(backbone))
    assert msg in str(err.value)


def test_lora_refuses_word_vectors(data, tmp_path):
    with pytest.raises(ConfigError, match=r"lora.*tiny-wordvec.*targets tried"):
        get_strategy("lora").check_backbone(build_backbone("tiny-wordvec"))
    with pytest.raises(ConfigError, match="lora"):
        _fit(data, "tiny-wordvec", "lora", tmp_path)


@pytest.mark.parametrize("opts,msg", [
    ({"r": 0}, "r must be"), ({"alpha": "0"}, "alpha must"), ({"dropout": 1.0}, "dropout"),
    ({"bias": "some"}, "bias must"), ({"lr": "-1"}, "lr must"), ({"targets": ","}, "names no"),
])
def test_lora_bad_options_refused(opts, msg):
    with pytest.raises(ConfigError, match=msg):
        get_strategy("lora", **opts)


# --------------------------------------------------------------------------- lora: training

def test_lora_trains_adapters_only_and_round_trips(data, tmp_path):
    from peft import PeftModel

    tm = _fit(data, "tiny-bert", "lora", tmp_path)
    model = tm.model
    # the pretrained weights never move
    fresh = build_backbone("tiny-bert")
    ref = fresh.state_dict()
    got = _own_tensors(model.backbone)
    assert got.keys() == ref.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref), "lora changed a backbone weight"
    # the adapters did: every B moved away from zero
    sd = model.state_dict()
    b_keys = [k for k in sd if "lora_B" in k]
    assert len(b_keys) == 4 and all(float(sd[k].abs().max()) > 0 for k in b_keys)
    # what trained: adapters + head; the count is the adapters' small share
    m = tm.metrics
    n_lora = sum(sd[k].numel() for k in sd if "lora_" in k)
    n_head = sum(p.numel() for p in model.head.parameters())
    assert m["trainable_params"] == n_lora + n_head
    assert m["trainable_params"] < 0.1 * m["total_params"]

    # bundle: adapters + head, identical logits after a reload
    bundle = tm.run_dir / "bundle"
    names = json.loads((bundle / "config.json").read_text())["tensors"]
    assert any(n.startswith("head.") for n in names)
    assert sorted(n for n in names if not n.startswith("head.")) == \
        sorted(k for k in sd if "lora_" in k)
    loaded = transferkit.load(bundle)
    texts = ["this is good and great really nice", "this is bad and awful really poor"]
    assert (tm.logits(texts) == loaded.logits(texts)).all()

    # PEFT's own format: a fresh base model + PeftModel.from_pretrained gives the same outputs
    peft_dir = bundle / "peft_adapter"
    assert (peft_dir / "adapter_config.json").is_file()
    assert (peft_dir / "adapter_model.safetensors").is_file()
    cfg = json.loads((peft_dir / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 8 and cfg["lora_alpha"] == 16
    assert sorted(cfg["target_modules"]) == ["query", "value"]
    pm = PeftModel.from_pretrained(fresh.model, str(peft_dir)).eval()
    inputs = fresh.tokenize(texts)
    with torch.no_grad():
        ours = model.backbone.model(**inputs).last_hidden_state
        theirs = pm(**inputs).last_hidden_state
        plain = build_backbone("tiny-bert").model(**inputs).last_hidden_state
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert not torch.allclose(ours, plain, atol=1e-4), "the adapters changed nothing"


def test_lora_cnn_adapters_train_and_bn_frozen(data, tmp_path):
    tm = _fit(data, "tiny-cnn", "lora", tmp_path)
    ref = build_backbone("tiny-cnn").state_dict()
    got = _own_tensors(tm.model.backbone)
    assert all(torch.equal(ref[k], got[k]) for k in ref)  # running stats included
    sd = tm.model.state_dict()
    b_keys = [k for k in sd if "lora_B" in k]
    assert b_keys and all(float(sd[k].abs().max()) > 0 for k in b_keys)
    assert (tm.run_dir / "bundle" / "peft_adapter" / "adapter_model.safetensors").is_file()


# --------------------------------------------------------------------------- bitfit

def _changed(tm, backbone):
    ref = build_backbone(backbone).state_dict()
    got = tm.model.backbone.state_dict()
    return {k for k in ref if not torch.equal(ref[k], got[k])}


def test_bitfit_trains_exactly_the_biases(data, tmp_path):
    tm = _fit(data, "tiny-bert", "bitfit", tmp_path)
    changed = _changed(tm, "tiny-bert")
    allowed = {n for n, _ in bitfit_parameters(build_backbone("tiny-bert"))}
    assert allowed and all(n.endswith("bias") for n in allowed)
    assert changed, "bitfit changed nothing"
    assert changed <= allowed, f"non-bias tensors changed: {sorted(changed - allowed)[:3]}"
    # every bias on the path to the features moved (the unused pooler's cannot)
    used = {n for n in allowed if not n.startswith("model.pooler.")}
    assert used <= changed, f"biases left unchanged: {sorted(used - changed)[:3]}"
    m = tm.metrics
    n_head = sum(p.numel() for p in tm.model.head.parameters())
    bb = dict(tm.model.backbone.named_parameters())
    assert m["trainable_params"] == n_head + sum(bb[n].numel() for n in allowed)
    loaded = transferkit.load(tm.run_dir / "bundle")
    texts = ["this is good and great really nice", "this is bad and awful really poor"]
    assert (tm.logits(texts) == loaded.logits(texts)).all()


def test_bitfit_norms_on_cnn(data, tmp_path):
    tm = _fit(data, "tiny-cnn", "bitfit", tmp_path, norms=True)
    changed = _changed(tm, "tiny-cnn")
    bb = build_backbone("tiny-cnn")
    allowed = {n for n, _ in bitfit_parameters(bb, norms=True)}
    biases = {n for n, _ in bitfit_parameters(bb)}
    assert biases < allowed  # norms add the BatchNorm scales
    assert not any("running_" in k for k in changed), "BatchNorm statistics moved"
    assert changed <= allowed, f"other tensors changed: {sorted(changed - allowed)[:3]}"
    assert changed & (allowed - biases), "no norm scale trained"
    assert changed & biases, "no bias trained"
    assert not any("classifier" in n for n in allowed)  # timm's own classifier is not a feature


def test_bitfit_refuses_word_vectors(data, tmp_path):
    with pytest.raises(ConfigError, match=r"bitfit.*tiny-wordvec"):
        get_strategy("bitfit").check_backbone(build_backbone("tiny-wordvec"))
    with pytest.raises(ConfigError, match="bitfit"):
        _fit(data, "tiny-wordvec", "bitfit", tmp_path)


def test_bitfit_bad_options_refused():
    with pytest.raises(ConfigError, match="lr must"):
        get_strategy("bitfit", lr="0")
    with pytest.raises(ConfigError, match="not a valid bool"):
        get_strategy("bitfit", norms="maybe")
