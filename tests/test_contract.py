"""Contract matrix: every registered strategy on tiny random image and text backbones.

Each fits on CPU in seconds, trains exactly what it claims, survives a bundle round trip
with identical logits, and refuses bad configuration with a clear message.
"""

from __future__ import annotations

import pytest
import torch

import transferkit
from transferkit.backbones import build_backbone
from transferkit.errors import ConfigError
from transferkit.strategies.base import get_strategy, list_strategies

from conftest import make_image_folder, make_text_csv

STRATEGIES = [s.name for s in list_strategies()]
BACKBONES = {"tiny-cnn": "image", "tiny-vit": "image", "tiny-bert": "text", "tiny-wordvec": "text"}
STAGED = {"head_epochs": 1, "source_epochs": 1}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    return {"image": make_image_folder(root / "img", per_class=12),
            "text": make_text_csv(root / "texts.csv", n_per_class=14)}


def _plain(name: str) -> str:
    # adapters may wrap a layer and move its weight under ``base_layer``
    return name.replace(".base_layer.", ".")


def _backbone_changes(model, name):
    """Names of the backbone's own pretrained tensors that differ from a fresh copy."""
    ref = build_backbone(name).state_dict()
    got = {_plain(k): v for k, v in model.backbone.state_dict().items()}
    missing = [k for k in ref if k not in got]
    assert not missing, f"backbone tensors disappeared: {missing[:3]}"
    return {k for k in ref if not torch.equal(ref[k], got[k])}


def _options(strategy: str) -> dict:
    cls = type(get_strategy(strategy))
    fields = cls.options_cls.__dataclass_fields__
    return {k: v for k, v in STAGED.items() if k in fields}


def _applicable(strategy: str, backbone: str) -> bool:
    try:
        get_strategy(strategy, **_options(strategy)).check_backbone(build_backbone(backbone))
    except ConfigError:
        return False
    return True


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_strategy_contract(strategy, backbone, datasets, tmp_path):
    data = datasets[BACKBONES[backbone]]
    kw = dict(backbone=backbone, strategy=strategy, out=tmp_path / "run", epochs=2, batch_size=8,
              seed=0, quiet=True, options=_options(strategy))
    cls = type(get_strategy(strategy))
    if cls.uses_target:
        # domain adaptation: the same data stands in for the target (its labels unread)
        kw.update(target=data, test=data, figures=False)  # the t-SNE figure: test_domain.py
        if cls.needs_target_labels:
            kw["target_labels"] = 2
    if not _applicable(strategy, backbone):
        # refused up front, with a message naming the strategy
        with pytest.raises(ConfigError, match=strategy):
            transferkit.fit(data, **kw)
        return
    tm = transferkit.fit(data, **kw)
    m = tm.metrics
    assert 0.0 <= m["val"]["accuracy"] <= 1.0
    assert m["test"] is not None and m["test"]["n"] > 0
    assert m["trainable_params"] > 0

    # trains exactly what it claims
    cls = type(tm.strategy)
    changed = _backbone_changes(tm.model, backbone)
    assert not any("running_" in k for k in changed), "BatchNorm statistics moved"
    if cls.trains_backbone == "none":
        assert changed == set(), f"{strategy} changed backbone tensors {sorted(changed)[:3]}"
    else:
        assert changed, f"{strategy} left the backbone unchanged"
    if strategy == "partial":
        groups = tm.model.backbone.layer_groups()
        names = {id(p): _plain(n) for n, p in tm.model.backbone.named_parameters()}
        allowed = {names[id(p)] for g in groups[-min(2, len(groups)):] for p in g}
        assert changed <= allowed, f"partial changed frozen tensors {sorted(changed - allowed)[:3]}"

    # the bundle holds what trained (head always) and reproduces the logits exactly
    cfg = (tm.run_dir / "bundle" / "config.json").read_text()
    assert '"head.' in cfg
    loaded = transferkit.load(tm.run_dir / "bundle")
    from transferkit.data import read_data, resolve_splits

    s = resolve_splits(read_data(data), seed=0)["test"]
    a, b = tm.logits(s), loaded.logits(s)
    assert a.shape == (len(s), 2)
    assert (a == b).all(), "reloaded bundle gives different logits"
    assert loaded.predict(s) == tm.predict(s)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_unknown_option_refused(strategy):
    with pytest.raises(ConfigError, match="no option 'bogus'"):
        get_strategy(strategy, bogus=1)


@pytest.mark.parametrize("name,opts,msg", [
    ("partial", {"layers": 0}, "layers must be >= 1"),
    ("finetune", {"bn": "sometimes"}, "bn must be"),
    ("finetune", {"lr_floor": "2"}, "lr_floor"),
    ("linear", {"C": -1}, "C must be > 0"),
    ("partial", {"layers": "many"}, "not a valid int"),
])
def test_bad_option_values_refused(name, opts, msg):
    with pytest.raises(ConfigError, match=msg):
        get_strategy(name, **opts)


def test_unknown_strategy_refused():
    with pytest.raises(ConfigError, match="unknown strategy 'magic'"):
        get_strategy("magic")


def test_partial_too_many_layers_refused(datasets, tmp_path):
    with pytest.raises(ConfigError, match="layer groups"):
        transferkit.fit(datasets["image"], backbone="tiny-cnn", strategy="partial",
                        options={"layers": 99}, out=tmp_path / "r", epochs=1, quiet=True)


def test_every_strategy_is_listed():
    assert {"linear", "freeze", "partial", "finetune"} <= set(STRATEGIES)
