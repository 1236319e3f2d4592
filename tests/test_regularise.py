"""Regularised fine-tuning: the penalties against hand-computed values, each regulariser
fitted on a tiny model, what it needs of the backbone, and resume."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

import transferkit
from transferkit import api
from transferkit import regularise as pen
from transferkit.errors import ConfigError
from transferkit.strategies.base import get_strategy

from conftest import interrupt_after

REGS = ("l2sp", "delta", "bss", "lwf", "cotuning")


# ----------------------------------------------------------------------------- penalties

def test_starting_point_and_l2_by_hand():
    params = [torch.tensor([1.0, 2.0]), torch.tensor([[0.0, 3.0]])]
    start = [torch.tensor([0.0, 0.0]), torch.tensor([[1.0, 1.0]])]
    # 1/2 (1 + 4) + 1/2 (1 + 4)
    assert float(pen.starting_point(params, start)) == pytest.approx(5.0)
    assert float(pen.l2([torch.tensor([3.0, 4.0])])) == pytest.approx(12.5)


def test_starting_point_pulls_towards_the_start_not_zero():
    w = torch.tensor([2.0, -1.0], requires_grad=True)
    pen.starting_point([w], [torch.tensor([1.0, 1.0])]).backward()
    assert w.grad.tolist() == [1.0, -2.0]  # w - w0


def test_feature_map_distance_by_hand():
    cur = [torch.ones(2, 2), torch.tensor([[2.0, 0.0]])]
    ref = [torch.zeros(2, 2), torch.zeros(1, 2)]
    assert float(pen.feature_map_distance(cur, ref)) == pytest.approx(1.0 + 2.0)
    assert float(pen.feature_map_distance(ref, ref)) == 0.0
    with pytest.raises(ValueError):
        pen.feature_map_distance(cur, ref[:1])


def test_spectral_shrinkage_by_hand():
    f = torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # singular values 3 and 1
    assert float(pen.spectral_shrinkage(f, 1)) == pytest.approx(1.0)
    assert float(pen.spectral_shrinkage(f, 2)) == pytest.approx(10.0)
    assert float(pen.spectral_shrinkage(f, 5)) == pytest.approx(10.0)  # no more than it has


def test_distillation_by_hand():
    q = torch.zeros(1, 2)  # uniform
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    p1 = torch.tensor([[math.log(3.0), 0.0]])  # softmax [0.75, 0.25]
    assert float(pen.distillation(q, p1, 1.0)) == pytest.approx(kl, rel=1e-5)
    # at T = 2 the same softened target, times T^2
    assert float(pen.distillation(q, 2 * p1, 2.0)) == pytest.approx(4 * kl, rel=1e-5)
    assert float(pen.distillation(p1, p1, 3.0)) == pytest.approx(0.0, abs=1e-5)


def test_class_relation_by_hand():
    probs = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    rel = pen.class_relation(probs, torch.tensor([0, 0, 1]), 3)
    expect = [[0.75, 0.25], [0.0, 1.0], [0.5, 0.5]]  # class 2 has no sample: uniform
    assert torch.allclose(rel, torch.tensor(expect))


def test_relation_loss_by_hand():
    rel = torch.tensor([[0.75, 0.25], [0.0, 1.0]])
    assert float(pen.relation_loss(torch.zeros(1, 2), torch.tensor([0]), rel)) == \
        pytest.approx(math.log(2.0))
    logits = torch.tensor([[math.log(3.0), 0.0]])
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert float(pen.relation_loss(logits, torch.tensor([0]), rel)) == pytest.approx(entropy)


# ----------------------------------------------------------------------------- options

@pytest.mark.parametrize("strategy", ["finetune", "partial", "lora"])
def test_reg_options_are_declared_once_and_recorded_with_their_weight(strategy):
    s = get_strategy(strategy, reg="DELTA")
    assert s.options.reg == "delta" and s.options.reg_weight == 1.0
    assert get_strategy(strategy, reg="bss", reg_weight="0.5").to_dict()["options"]["reg_weight"] == 0.5
    assert get_strategy(strategy).options.reg == "none"


@pytest.mark.parametrize("opts,msg", [({"reg": "dropout"}, "unknown reg 'dropout'"),
                                      ({"reg": "l2sp", "reg_weight": -1}, "reg_weight"),
                                      ({"reg": "l2sp", "reg_weight": "nan"}, "reg_weight"),
                                      ({"reg": "bss", "reg_k": 0}, "reg_k"),
                                      ({"reg": "lwf", "reg_temperature": 0}, "reg_temperature")])
def test_bad_reg_options_refused(opts, msg):
    with pytest.raises(ConfigError, match=msg):
        get_strategy("finetune", **opts)


@pytest.mark.parametrize("reg", ["lwf", "cotuning"])
def test_source_head_regularisers_refuse_a_backbone_without_one(reg, text_csv, tmp_path):
    with pytest.raises(ConfigError, match=f"reg={reg} needs the backbone's classifier"):
        transferkit.fit(text_csv, backbone="tiny-bert", strategy="finetune",
                        options={"reg": reg}, epochs=1, out=tmp_path / "r", quiet=True)
    assert not (tmp_path / "r" / "metrics.json").exists()


# ----------------------------------------------------------------------------- fits

def _fit(data, out, reg, **kw):
    opts = {"head_epochs": 1, "reg": reg, **kw.pop("options", {})}
    return transferkit.fit(data, backbone="tiny-cnn", strategy="finetune", options=opts,
                           epochs=2, batch_size=8, seed=1, out=out, quiet=True, **kw)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    from conftest import make_image_folder

    root = tmp_path_factory.mktemp("plain")
    data = make_image_folder(root / "images", per_class=8)
    _fit(data, root / "none", "none")
    return data, root / "none"


def _history(run) -> list[dict]:
    lines = (run / "history.csv").read_text().splitlines()
    cols = lines[0].split(",")
    return [dict(zip(cols, r.split(","))) for r in lines[1:]]


@pytest.mark.parametrize("reg", REGS)
def test_each_regulariser_fits_and_keeps_the_bundle_shape(reg, plain, tmp_path):
    data, plain_run = plain
    m = _fit(data, tmp_path / reg, reg, options={"backbone_lr": 1e-2})
    assert m.metrics["strategy_options"]["reg"] == reg
    rows = _history(tmp_path / reg)
    col = f"term_reg_{reg}"
    # the head stage has no penalty; the fine-tuning stage records it each epoch
    assert [r["stage"] for r in rows] == ["head", "finetune", "finetune"]
    assert rows[0][col] == "" and all(float(r[col]) >= -1e-6 for r in rows[1:])
    if reg in ("l2sp", "delta", "lwf"):  # the backbone moved away from where it started
        assert float(rows[2][col]) > 0
    a = load_file(str(tmp_path / reg / "bundle" / "model.safetensors"))
    b = load_file(str(plain_run / "bundle" / "model.safetensors"))
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    assert math.isfinite(m.metrics["val"]["loss"])


def _drift(run, pretrained) -> float:
    t = load_file(str(run / "bundle" / "model.safetensors"))
    return sum(float((t[k] - v).pow(2).sum()) for k, v in pretrained.items() if k in t)


def test_a_strong_l2sp_keeps_the_weights_near_the_pretrained_ones(plain, tmp_path):
    from transferkit.backbones import build_backbone

    data, plain_run = plain
    opts = {"backbone_lr": 1e-2}
    pretrained = {f"backbone.{k}": v for k, v in build_backbone("tiny-cnn").state_dict().items()
                  if v.is_floating_point()}
    _fit(data, tmp_path / "free", "none", options=opts)
    _fit(data, tmp_path / "sp", "l2sp", options={**opts, "reg_weight": 1000.0})
    free, sp = _drift(tmp_path / "free", pretrained), _drift(tmp_path / "sp", pretrained)
    assert free > 0 and sp < 0.5 * free


@pytest.mark.parametrize("reg", ["l2sp", "delta", "lwf"])
def test_lora_takes_a_regulariser(reg, plain, tmp_path):
    data, _ = plain
    transferkit.fit(data, backbone="tiny-cnn", strategy="lora", options={"reg": reg},
                    epochs=2, batch_size=8, seed=1, out=tmp_path / "l", quiet=True)
    rows = _history(tmp_path / "l")
    assert float(rows[-1][f"term_reg_{reg}"]) > 0  # the adapters moved the features


@pytest.mark.parametrize("reg", ["cotuning", "lwf"])
def test_resume_mid_stage_gives_the_same_run(reg, plain, tmp_path, monkeypatch):
    """A resumed run learns its reference (Co-Tuning's relation, LwF's targets) from the
    pretrained weights, not from the half-trained ones it restored."""
    data, _ = plain
    kw = dict(backbone="tiny-cnn", strategy="finetune", epochs=3, batch_size=8, seed=3,
              quiet=True, options={"head_epochs": 1, "reg": reg, "backbone_lr": 1e-2})
    full = transferkit.fit(data, out=tmp_path / "full", **kw)
    with monkeypatch.context() as m:
        interrupt_after(m, 2)  # the head epoch and the first fine-tuning epoch
        with pytest.raises(KeyboardInterrupt):
            transferkit.fit(data, out=tmp_path / "cut", **kw)
    resumed = api.resume(tmp_path / "cut", quiet=True)
    for split in ("val", "test"):
        assert full.metrics[split]["loss"] == pytest.approx(resumed.metrics[split]["loss"],
                                                            abs=1e-4)
    a = [float(r[f"term_reg_{reg}"]) for r in _history(tmp_path / "full")[1:]]
    b = [float(r[f"term_reg_{reg}"]) for r in _history(tmp_path / "cut")[1:]]
    assert a == pytest.approx(b, rel=1e-3, abs=1e-6)
