"""TOAST / TOAST-Lite: steering a frozen transformer's attention values top-down."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import transferkit
from transferkit.backbones import build_backbone
from transferkit.engine.config import TrainConfig
from transferkit.errors import BackboneError, ConfigError
from transferkit.heads import HeadConfig, build_model
from transferkit.strategies.base import get_strategy
from transferkit.strategies.toast import ToastModule

from conftest import make_text_csv

STRATS = ["toast", "toast-lite"]
TRANSFORMERS = ["tiny-vit", "tiny-bert"]


def _model(backbone: str, strategy: str, **opts):
    bb = build_backbone(backbone)
    model = build_model(bb, HeadConfig(), ["neg", "pos"])
    strat = get_strategy(strategy, **opts)
    strat.check_backbone(bb)
    strat.attach(model)
    return model, strat


def _batch(model):
    bb = model.backbone
    if bb.modality == "image":
        return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return bb.tokenize(["this is good and nice", "bad", "really awful and terrible day"])


def _zero_feedback(model):
    with torch.no_grad():
        for blk in model.toast.feedback:
            for m in (blk.propagate, blk.emit):
                m.weight.zero_()
                if m.rank:
                    m.lora_b.zero_()


def _value_modules(model):
    bb = model.backbone
    if bb.modality == "image":
        return [b.attn.qkv for b in bb.model.blocks]
    return [layer.attention.self.value for layer in bb.model.encoder.layer]


@pytest.mark.parametrize("strategy", STRATS)
@pytest.mark.parametrize("backbone", TRANSFORMERS)
def test_zero_feedback_second_pass_is_first_pass(backbone, strategy):
    model, _ = _model(backbone, strategy)
    _zero_feedback(model)
    x = _batch(model)
    with torch.no_grad():
        first = model.backbone(x)
        second = model.features(x)
    assert set(first) == set(second)
    for k in first:
        assert torch.equal(first[k], second[k]), k
    # also in training mode with gradients on: the frozen backbone runs in eval mode
    model.train()
    second = model.features(x)
    assert second["pooled"].requires_grad
    for k in first:
        assert torch.equal(first[k], second[k].detach()), k


@pytest.mark.parametrize("strategy", STRATS)
@pytest.mark.parametrize("backbone", TRANSFORMERS)
def test_signal_steers_values_only(backbone, strategy):
    model, _ = _model(backbone, strategy)
    x = _batch(model)
    values = _value_modules(model)
    seen: list[torch.Tensor] = []
    h = values[0].register_forward_hook(lambda m, a, out: seen.append(out.detach().clone()))
    try:
        with torch.no_grad():
            first = model.backbone(x)
            second = model.features(x)
    finally:
        h.remove()
    assert not torch.allclose(first["pooled"], second["pooled"]), "top-down signal had no effect"
    # seen: [plain pass, toast first pass, toast second pass] of layer 0's value projection
    plain, first_pass, steered = seen
    assert torch.equal(plain, first_pass)
    if backbone == "tiny-vit":  # fused [q | k | v]: q and k unchanged, v steered
        a = values[0].out_features // 3
        assert torch.equal(steered[..., :2 * a], plain[..., :2 * a])
        assert not torch.equal(steered[..., 2 * a:], plain[..., 2 * a:])
    else:
        assert not torch.equal(steered, plain)
        # queries and keys are not touched: layer 0 sees the same input in both passes
        att = model.backbone.model.encoder.layer[0].attention.self
        qk: list[torch.Tensor] = []
        hs = [att.query.register_forward_hook(lambda m, a, out: qk.append(out.detach())),
              att.key.register_forward_hook(lambda m, a, out: qk.append(out.detach()))]
        try:
            with torch.no_grad():
                model.features(x)
        finally:
            for hh in hs:
                hh.remove()
        assert torch.equal(qk[0], qk[2]) and torch.equal(qk[1], qk[3])
    # gradients reach the top-down module, never the backbone
    model.train()
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    model.features(x)["pooled"].pow(2).sum().backward()
    tk = model.toast
    assert all(p.grad is not None for p in tk.task_parameters())
    # LoRA's A gets no gradient while B is still zero (its initial value); all else does
    trained = ".weight" if strategy == "toast" else ".lora_b"
    moving = [p for n, p in tk.named_parameters()
              if n in ("prompt", "transform") or n.endswith(trained)]
    assert len(moving) == 2 + 2 * len(tk.feedback)
    assert all(p.grad.abs().sum() > 0 for p in moving)
    assert all(p.grad is None for p in model.backbone.parameters())


@pytest.mark.parametrize("backbone", TRANSFORMERS)
def test_hooks_removed_and_first_pass_unaffected(backbone):
    model, _ = _model(backbone, "toast")
    x = _batch(model)
    with torch.no_grad():
        before = model.backbone(x)
        model.features(x)
        after = model.backbone(x)
    for k in before:
        assert torch.equal(before[k], after[k])
    for m in model.backbone.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
    model.train()  # the backbone runs in eval mode inside, and its modes come back after
    model.features(x)
    assert all(m.training for m in model.backbone.modules())


@pytest.mark.parametrize("strategy", STRATS)
@pytest.mark.parametrize("backbone", ["tiny-cnn", "tiny-wordvec"])
def test_cnn_and_word_vectors_refused(backbone, strategy):
    with pytest.raises(ConfigError, match=f"{strategy} needs a transformer"):
        get_strategy(strategy).check_backbone(build_backbone(backbone))


def _fraction(model, strat):
    stage = strat.stages(model, TrainConfig())[-1]
    trainable = sum(p.numel() for p in stage.parameters())
    return trainable, sum(p.numel() for p in model.parameters()), stage


@pytest.mark.parametrize("backbone", TRANSFORMERS)
def test_trainable_parameters_are_what_is_claimed(backbone):
    fr = {}
    for name in STRATS:
        model, strat = _model(backbone, name)
        trainable, total, stage = _fraction(model, strat)
        names = {n for n, p in model.named_parameters() if any(p is q for q in stage.parameters())}
        assert not any(n.startswith("backbone.") for n in names)
        head = {n for n, _ in model.head.named_parameters(prefix="head")}
        toast = names - head
        assert head <= names
        assert {"toast.prompt", "toast.transform"} <= toast
        depth = len(model.toast.feedback)
        if name == "toast":
            assert toast == {n for n, _ in model.toast.named_parameters(prefix="toast")}
        else:
            lora = {n for n in toast if ".lora_" in n}
            assert len(lora) == 4 * depth and toast == lora | {"toast.prompt", "toast.transform"}
        fr[name] = trainable / total
    assert fr["toast-lite"] < fr["toast"]


def test_toast_lite_under_two_percent_on_minilm():
    try:
        bb = build_backbone("minilm")
    except BackboneError as e:
        pytest.skip(f"minilm not available: {e}")
    fr = {}
    for name in STRATS:
        model = build_model(bb, HeadConfig(), ["neg", "pos"])
        strat = get_strategy(name)
        strat.attach(model)
        trainable, total, _ = _fraction(model, strat)
        fr[name] = trainable / total
    assert fr["toast-lite"] < 0.02 < fr["toast"]


def test_pretuning_uses_no_labels():
    model, strat = _model("tiny-bert", "toast", pretune_epochs=1)
    stages = strat.stages(model, TrainConfig(epochs=1))
    assert [s.name for s in stages] == ["pretune", "toast"]
    for p in model.parameters():  # as the engine sets up the pre-tuning stage
        p.requires_grad_(False)
    for p in stages[0].parameters():
        p.requires_grad_(True)
    model.train()
    x = _batch(model)
    feats = model.features(x)
    assert not feats["pooled"].requires_grad  # the classification loss cannot train anything

    def loss_terms():  # what the pre-tuning stage's callbacks add to the loss of a batch
        state = SimpleNamespace(model=model)
        out = {}
        for cb in stages[0].callbacks:
            out.update(cb.on_batch(state, None) or {})
        return out

    terms = loss_terms()
    assert set(terms) == {"toast_recon"} and terms["toast_recon"] > 0
    terms["toast_recon"].backward()
    tk: ToastModule = model.toast
    assert all(p.grad is not None for p in tk.pretune_parameters())
    assert tk.prompt.grad is None and tk.transform.grad is None
    assert all(b.emit.weight.grad is None for b in tk.feedback)
    assert loss_terms() == {}  # consumed once
    # outside pre-tuning there is no reconstruction term
    for p in stages[1].parameters():
        p.requires_grad_(True)
    feats = model.features(x)
    assert feats["pooled"].requires_grad
    assert loss_terms() == {}


def test_fit_with_pretuning_frozen_backbone_and_bundle(tmp_path):
    data = make_text_csv(tmp_path / "t.csv", n_per_class=8)
    tm = transferkit.fit(data, backbone="tiny-bert", strategy="toast-lite",
                         options={"pretune_epochs": 1, "lite_rank": 4}, out=tmp_path / "run",
                         epochs=1, batch_size=8, seed=0, quiet=True)
    stages = [line.split(",")[0] for line in
              (tm.run_dir / "history.csv").read_text().splitlines()[1:]]
    assert stages == ["pretune", "toast-lite"]
    ref = build_backbone("tiny-bert").state_dict()
    got = tm.model.backbone.state_dict()
    assert all(torch.equal(ref[k], got[k]) for k in ref), "backbone changed"
    fresh = ToastModule(tm.model.toast.dim, tm.model.toast.depth, 4)
    moved = [not torch.equal(a.propagate.weight, b.propagate.weight)
             for a, b in zip(tm.model.toast.feedback, fresh.feedback)]
    assert all(moved), "pre-tuning did not train the propagate maps"
    same_emit = [torch.equal(a.emit.weight, b.emit.weight)
                 for a, b in zip(tm.model.toast.feedback, fresh.feedback)]
    assert all(same_emit), "toast-lite changed a frozen full weight"
    loaded = transferkit.load(tm.run_dir / "bundle")
    from transferkit.data import read_data, resolve_splits

    s = resolve_splits(read_data(data), seed=0)["test"]
    assert (tm.logits(s) == loaded.logits(s)).all()


@pytest.mark.parametrize("opts,msg", [
    ({"lr": 0}, "lr must be > 0"),
    ({"head_lr": -1}, "head_lr must be > 0"),
    ({"pretune_epochs": -1}, "pretune_epochs must be >= 0"),
    ({"var_weight": -0.1}, "var_weight must be >= 0"),
    ({"pretune_epochs": 2, "var_weight": 0}, "needs var_weight > 0"),
])
def test_bad_options_refused(opts, msg):
    for name in STRATS:
        with pytest.raises(ConfigError, match=msg):
            get_strategy(name, **opts)
    with pytest.raises(ConfigError, match="lite_rank must be >= 1"):
        get_strategy("toast-lite", lite_rank=0)
    with pytest.raises(ConfigError, match="no option 'lite_rank'"):
        get_strategy("toast", lite_rank=4)
