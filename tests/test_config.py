"""One run configuration: RunConfig's fields, the flags derived from them, config files,
run_config.json (versioned, older files migrated), resume, fit() keywords, the estimator."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json

import pytest

import transferkit
from transferkit import api
from transferkit.cli import FIT_COMMAND_FLAGS, build_parser, main
from transferkit.config import (FLAT, FORMAT_VERSION, SECTIONS, RunConfig, leaves,
                                load_config_file)
from transferkit.engine.config import TrainConfig
from transferkit.errors import ConfigError
from transferkit.heads import HeadConfig
from transferkit.settings import coerce, meta
from transferkit.strategies.base import get_strategy

from conftest import interrupt_after, make_image_folder


def _fit_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["fit"]


# ----------------------------------------------------------------------------- declarations

def test_every_field_has_a_type_a_default_and_help():
    n = 0
    for section, f, hint in leaves():
        n += 1
        assert hint is not None, f"{section}.{f.name}"
        assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        assert meta(f)["help"], f"{section}.{f.name} has no help text"
        assert "\n" not in meta(f)["help"]
    assert n == len(FLAT)


def test_flags_and_fields_cannot_drift_apart():
    dests = {a.dest: a for a in _fit_parser()._actions}
    fields = set(FLAT)
    flags = set(dests) - set(FIT_COMMAND_FLAGS)
    assert flags - fields == set(), "a flag of `fit` that is no RunConfig field"
    # the tasks of a multi-task run are given through --task NAME=DATA (the flag of `task`)
    assert fields - flags == {"tasks"}, "a RunConfig field without a flag of `fit`"


def test_existing_flag_names_are_kept():
    strings = {s for a in _fit_parser()._actions for s in a.option_strings}
    for flag in ("--warmup", "--head", "--hidden", "--dropout", "-o", "--option", "-b", "-s",
                 "--select", "--grayscale", "--augment", "--skip-bad", "--no-cache",
                 "--target-labels", "--domain-column", "--batch-size", "--out", "--config",
                 "--resume", "-q", "--quiet", "--debug"):
        assert flag in strings, flag
    a = _fit_parser().parse_args(["x", "--warmup", "2", "--head", "mlp", "-o", "k=v", "--augment"])
    assert (a.warmup_epochs, a.head, a.options, a.augment) == (2.0, "mlp", [("k", "v")], True)
    assert a.grayscale is None and a.epochs is None  # unset flags let a config file show


def test_sections_reuse_the_engine_and_head_configs():
    cfg = RunConfig()
    assert isinstance(cfg.train, TrainConfig) and isinstance(cfg.head, HeadConfig)
    assert list(SECTIONS) == ["data", "backbone", "strategy", "head", "train", "domain", "run",
                             "detection"]


# ----------------------------------------------------------------------------- dicts

def test_round_trip_and_version():
    cfg = RunConfig().updated({"epochs": 3, "strategy": "partial", "options": {"layers": 2},
                               "head": {"kind": "mlp"}, "out": "runs/x", "grayscale": True})
    d = cfg.to_dict()
    assert d["format_version"] == FORMAT_VERSION == 2
    assert d["transferkit_version"] == transferkit.__version__
    assert d["train"]["epochs"] == 3 and d["strategy"] == {"name": "partial",
                                                         "options": {"layers": 2}}
    assert RunConfig.from_dict(json.loads(json.dumps(d))) == cfg


def test_flat_and_nested_mean_the_same():
    flat = RunConfig.from_dict({"backbone": "tiny-cnn", "epochs": 2, "head": "mlp",
                                "hidden": 64, "data": "d/"})
    nested = RunConfig.from_dict({"backbone": {"name": "tiny-cnn"}, "train": {"epochs": 2},
                                  "head": {"kind": "mlp", "hidden": 64}, "data": {"path": "d/"}})
    assert flat == nested


def test_unknown_keys_are_refused_naming_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown setting 'epoch' in section 'train'; "
                                          r"valid: epochs, lr"):
        RunConfig.from_dict({"train": {"epoch": 3}})
    with pytest.raises(ConfigError, match=r"unknown setting 'lr_rate'; valid: sections data, "
                                          r".*settings .*epochs"):
        RunConfig.from_dict({"lr_rate": 3})


def test_values_are_coerced_by_their_annotation():
    cfg = RunConfig.from_dict({"lr": "1e-3", "epochs": "4", "augment": "yes",
                               "patience": "none", "out": __import__("pathlib").Path("r")})
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.augment) == (1e-3, 4, True)
    assert cfg.train.patience is None and cfg.run.out == "r"
    with pytest.raises(ConfigError, match=r"train.epochs='ten' is not a valid int"):
        RunConfig.from_dict({"epochs": "ten"})
    with pytest.raises(ConfigError, match="not one of adamw, adam, sgd"):
        RunConfig.from_dict({"optimizer": "lion"})
    with pytest.raises(ConfigError, match="--batch-size must be >= 1"):
        RunConfig.from_dict({"batch_size": 0})
    assert coerce("none", int | None, "x") is None and coerce(3, float, "x") == 3.0


def test_a_newer_format_is_refused():
    with pytest.raises(ConfigError, match="format_version 3"):
        RunConfig.from_dict({"format_version": 3})


def test_unversioned_run_config_is_migrated():
    v1 = {"data": "/d", "val": None, "test": "/t", "backbone": "tiny-cnn", "strategy": "finetune",
          "options": {"head_epochs": 1}, "head": {}, "cache_dir": None, "no_cache": False,
          "weights": None, "image_size": 32, "max_length": None, "text_column": None,
          "image_column": None, "label_column": None, "val_fraction": 0.2,
          "test_fraction": 0.15, "train": TrainConfig(epochs=3, seed=4).to_dict(),
          "target": None, "target_labels": 0, "domain_column": None}
    cfg = RunConfig.from_dict(v1)
    assert cfg.data.path == "/d" and cfg.data.test == "/t" and cfg.data.val_fraction == 0.2
    assert cfg.strategy.options == {"head_epochs": 1} and cfg.backbone.image_size == 32
    assert cfg.train.epochs == 3 and cfg.train.seed == 4 and cfg.head == HeadConfig()


def test_strategy_options_use_the_same_typed_coercion():
    s = get_strategy("finetune", head_epochs="2", backbone_lr="none", lr_floor=1)
    assert s.options.head_epochs == 2 and s.options.backbone_lr is None
    assert s.options.lr_floor == 1.0 and isinstance(s.options.lr_floor, float)
    with pytest.raises(ConfigError, match="option head_epochs=True is not a valid int"):
        get_strategy("finetune", head_epochs=True)


# ----------------------------------------------------------------------------- config files

@pytest.fixture
def captured(monkeypatch):
    seen = {}

    def fake_fit(data=None, *, config=None, **kw):
        seen["config"] = config
    monkeypatch.setattr(api, "fit", fake_fit)
    return seen


@pytest.mark.parametrize("name,text", [
    ("c.yaml", "backbone: {name: tiny-cnn}\ntrain:\n  epochs: 3\n  lr: 1e-3\n"
               "strategy:\n  name: partial\n  options: {layers: 1}\n"),
    ("c.yml", "backbone: tiny-cnn\nepochs: 3\nlr: 0.001\nstrategy: partial\n"
              "options:\n  layers: 1\n"),
    ("c.json", '{"backbone": "tiny-cnn", "train": {"epochs": 3, "lr": 0.001}, '
               '"strategy": "partial", "options": {"layers": 1}}'),
    ("c.toml", 'backbone = "tiny-cnn"\nstrategy = "partial"\n[train]\nepochs = 3\nlr = 1e-3\n'
               '[options]\nlayers = 1\n'),
])
def test_config_file_formats(tmp_path, captured, capsys, name, text):
    path = tmp_path / name
    path.write_text(text)
    assert main(["fit", "data/", "--config", str(path)]) == 0, capsys.readouterr().err
    cfg = captured["config"]
    assert (cfg.backbone.name, cfg.train.epochs, cfg.train.lr) == ("tiny-cnn", 3, 1e-3)
    assert cfg.strategy.name == "partial" and cfg.strategy.options == {"layers": 1}
    assert cfg.data.path == "data/"


def test_flags_win_over_the_file(tmp_path, captured):
    path = tmp_path / "c.yaml"
    path.write_text("data: from-file/\nepochs: 3\nhead: {kind: mlp, hidden: 64}\n"
                    "options: {layers: 1, head_epochs: 2}\naugment: true\n")
    assert main(["fit", "--config", str(path), "--epochs", "5", "--hidden", "8",
                 "-o", "layers=2"]) == 0
    cfg = captured["config"]
    assert cfg.data.path == "from-file/" and cfg.train.epochs == 5 and cfg.train.augment
    assert (cfg.head.kind, cfg.head.hidden) == ("mlp", 8)
    assert cfg.strategy.options == {"layers": "2", "head_epochs": 2}


@pytest.mark.parametrize("text,needles", [
    ("train:\n  epoch: 3\n", ["c.yaml", "'epoch'", "section 'train'", "valid: epochs"]),
    ("epoch: 3\n", ["c.yaml", "'epoch'", "valid:", "epochs"]),
    ("epochs: [1, 2]\n", ["c.yaml", "train.epochs", "not a valid int"]),
    ("train: [1\n", ["c.yaml", "cannot parse"]),
    ("- 1\n", ["c.yaml", "table of settings"]),
])
def test_bad_config_file_is_one_line_exit_2(tmp_path, captured, capsys, text, needles):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    code = main(["fit", "data/", "--config", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error:")
    for n in needles:
        assert n in err, (n, err)
    assert "config" not in captured


def test_missing_config_file(tmp_path, capsys):
    assert main(["fit", "d/", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: no such config file" in capsys.readouterr().err


def test_load_config_file_nested_toml(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[data]\npath = "x"\nval_fraction = 0.25\n[run]\nout = "r"\n')
    cfg = load_config_file(p)
    assert cfg.data.path == "x" and cfg.data.val_fraction == 0.25 and cfg.run.out == "r"


# ----------------------------------------------------------------------------- fit / resume

def test_fit_refuses_unknown_keywords(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown setting 'epoch'; valid: .*epochs"):
        transferkit.fit(tmp_path, epoch=3)


def _interrupted(monkeypatch, data, out, after=1, **settings):
    """Fit ``data`` into ``out`` and stop it (as Ctrl-C would) after ``after`` epochs."""
    with monkeypatch.context() as m:
        interrupt_after(m, after)
        with pytest.raises(KeyboardInterrupt):
            transferkit.fit(data, out=out, **settings)


def test_fit_writes_a_versioned_run_config_and_resumes_from_it(tmp_path, monkeypatch):
    data = make_image_folder(tmp_path / "imgs", per_class=8)
    cfg = RunConfig().updated({"backbone": "tiny-cnn", "strategy": "freeze", "epochs": 2,
                               "seed": 2, "quiet": True})
    full = transferkit.fit(data, config=cfg, out=tmp_path / "full")
    _interrupted(monkeypatch, data, tmp_path / "run", config=cfg)
    rc = json.loads((tmp_path / "run" / "run_config.json").read_text())
    assert rc["format_version"] == 2 and set(SECTIONS) <= set(rc)
    assert rc["data"]["path"] == str(data.resolve()) and rc["train"]["seed"] == 2
    assert rc["run"]["out"] == str(tmp_path / "run")
    again = api.resume(tmp_path / "run", quiet=True)
    assert again.metrics["val"] == full.metrics["val"]


def test_resume_reads_an_unversioned_run_config(tmp_path, monkeypatch):
    data = make_image_folder(tmp_path / "imgs", per_class=8)
    kw = dict(backbone="tiny-cnn", strategy="freeze", epochs=2, quiet=True)
    full = transferkit.fit(data, out=tmp_path / "full", **kw)
    _interrupted(monkeypatch, data, tmp_path / "run", **kw)
    v1 = {"data": str(data.resolve()), "val": None, "test": None, "backbone": "tiny-cnn",
          "strategy": "freeze", "options": {}, "head": {}, "cache_dir": None,
          "no_cache": False, "weights": None, "image_size": None, "max_length": None,
          "text_column": None, "image_column": None, "label_column": None,
          "val_fraction": 0.15, "test_fraction": 0.15,
          "train": TrainConfig(epochs=2).to_dict(), "target": None, "target_labels": 0,
          "domain_column": None}
    (tmp_path / "run" / "run_config.json").write_text(json.dumps(v1))
    again = api.resume(tmp_path / "run", quiet=True)
    assert again.metrics["val"] == full.metrics["val"]


def test_in_memory_data_writes_no_run_config(tmp_path):
    from transferkit.data import read_data

    data = read_data(make_image_folder(tmp_path / "imgs", per_class=8))["all"]
    transferkit.fit(data, backbone="tiny-cnn", epochs=1, out=tmp_path / "run", quiet=True)
    assert not (tmp_path / "run" / "run_config.json").exists()
    assert (tmp_path / "run" / "metrics.json").exists()


# ----------------------------------------------------------------------------- estimator

def test_classifier_parameters_derive_from_run_config():
    params = inspect.signature(transferkit.TransferClassifier.__init__).parameters
    defaults = RunConfig().flat()
    assert list(params)[1:] == list(api.CLASSIFIER_PARAMS)
    for name in api.CLASSIFIER_PARAMS:
        assert name in FLAT
        expected = {"quiet": True, "options": None}.get(name, defaults[name])
        assert params[name].default == expected, name
    c = transferkit.TransferClassifier("tiny-cnn", epochs=3)
    assert c.get_params()["backbone"] == "tiny-cnn" and c.get_params()["epochs"] == 3
    with pytest.raises(TypeError):
        transferkit.TransferClassifier(epoch=3)


def test_recorded_config_resolves_paths_but_not_a_domain_name(tmp_path):
    cfg = RunConfig().updated({"data": "reviews.csv", "domain_column": "shop", "target": "cafe"})
    rec = api.recorded_config(cfg, tmp_path / "run")
    assert rec.data.path == str((tmp_path.cwd() / "reviews.csv").resolve())
    assert rec.domain.target == "cafe" and rec.run.out == str(tmp_path / "run")
    cfg = RunConfig().updated({"data": "src.npz", "target": "tgt.npz"})
    assert api.recorded_config(cfg, tmp_path).domain.target.endswith("/tgt.npz")
