"""Save and load a trained model: ``config.json`` + ``model.safetensors``, never pickle.

The bundle holds every tensor that training touched (the head always, adapters and other
strategy modules, backbone tensors when the backbone trained), the label names, the
preprocessing and the backbone's spec and weights identity.  Loading rebuilds the backbone
from its spec, checks the identity, lets the strategy add its modules again, then loads the
tensors strictly: every saved tensor must land, the head must be there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .backbones import backbone_modality, build_from_spec
from .errors import BackboneError, BundleError, TransferkitError
from .heads import HeadConfig, build_model
from .io import save_tensors, write_json
from .strategies.base import get_strategy
from .version import __version__

FORMAT = "transferkit-bundle"
FORMAT_VERSION = 1


def save_bundle(path: str | Path, model, strategy, *, touched: list[str], grayscale: bool,
                extra: dict[str, Any] | None = None) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    sd = model.state_dict()
    names = sorted(set(touched) | {n for n in sd if n.startswith("head.")})
    missing = [n for n in names if n not in sd]
    if missing:
        raise BundleError(f"{path}: cannot save, model has no tensor {missing[0]!r}")
    bb = model.backbone
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "transferkit_version": __version__,
        "modality": bb.modality,
        "backbone": bb.spec(),
        "backbone_identity": bb.identity(),
        "head": model.head.cfg.to_dict(),
        "strategy": strategy.to_dict(),
        "classes": list(model.classes),
        **({"tasks": [list(t) for t in model.tasks]} if getattr(model, "tasks", None) else {}),
        **({"domains": list(model.domains)} if getattr(model, "domains", None) else {}),
        "preprocess": bb.preprocess,
        "max_length": getattr(bb, "max_length", None) if bb.modality == "text" else None,
        "grayscale": bool(grayscale),
        "tensors": names,
        **(extra or {}),
    }
    save_tensors(path / "model.safetensors", {n: sd[n] for n in names},
                 metadata={"format": FORMAT, "transferkit_version": __version__})
    write_json(path / "config.json", config)
    strategy.save_extra(model, path)
    return path


def bundle_task(cfg: dict[str, Any]) -> str:
    """The task of a bundle's model (``classification`` for bundles that do not say)."""
    task = cfg.get("task", "classification")
    return task if isinstance(task, str) else "?"


def read_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    cfg_path = path / "config.json"
    if not path.exists():
        raise BundleError(f"{path}: no such bundle")
    if not cfg_path.exists():
        raise BundleError(f"{path}: not a bundle (no config.json)")
    try:
        cfg = json.loads(cfg_path.read_bytes().decode("utf-8"))
    except OSError as e:
        raise BundleError(f"{cfg_path}: cannot read file ({e.strerror or e})") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise BundleError(f"{cfg_path}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise BundleError(f"{cfg_path}: not a transferkit bundle config")
    version = cfg.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise BundleError(f"{cfg_path}: format_version must be an integer, not {version!r}")
    if version > FORMAT_VERSION:
        raise BundleError(f"{cfg_path}: bundle format {cfg['format_version']} is newer than this "
                          f"transferkit understands ({FORMAT_VERSION}); upgrade transferkit")
    _check_fields(cfg, cfg_path)
    return cfg


#: the fields every bundle config holds, and the JSON type each must have
_FIELDS = {"modality": str, "backbone": dict, "backbone_identity": str, "head": dict,
           "strategy": dict, "classes": list, "tensors": list}


def _check_fields(cfg: dict[str, Any], cfg_path: Path) -> None:
    """Refuse a config whose fields are missing, of the wrong type, or inconsistent (a
    tampered or hand-edited bundle), naming the field."""
    for name, kind in _FIELDS.items():
        if not isinstance(cfg.get(name), kind):
            got = "missing" if name not in cfg else f"a {type(cfg[name]).__name__}"
            raise BundleError(f"{cfg_path}: field {name!r} must be a {kind.__name__} ({got})")
    for name in ("classes", "tensors"):
        if not all(isinstance(v, str) for v in cfg[name]):
            raise BundleError(f"{cfg_path}: field {name!r} must list strings")
    if len(cfg["classes"]) < 1 or len(set(cfg["classes"])) != len(cfg["classes"]):
        raise BundleError(f"{cfg_path}: field 'classes' must list distinct class names")
    if cfg["modality"] not in ("image", "text"):
        raise BundleError(f"{cfg_path}: modality must be 'image' or 'text', not {cfg['modality']!r}")
    name = cfg["backbone"].get("name")
    if not isinstance(name, str):
        raise BundleError(f"{cfg_path}: backbone has no name")
    if not isinstance(cfg["strategy"].get("name"), str) or not isinstance(
            cfg["strategy"].get("options", {}), dict):
        raise BundleError(f"{cfg_path}: strategy must have a name and a dict of options")
    try:
        modality = backbone_modality(name)
    except BackboneError as e:
        raise BundleError(f"{cfg_path}: {e}") from None
    if modality != cfg["modality"]:
        article = "an" if cfg["modality"] == "image" else "a"
        raise BundleError(f"{cfg_path}: names backbone {name!r}, a {modality} backbone, but "
                          f"the bundle is {article} {cfg['modality']} model (a tampered "
                          "config.json)")


def _classifier(backbone, cfg: dict[str, Any]):
    return build_model(backbone, HeadConfig.from_dict(cfg["head"]), cfg["classes"],
                       cfg.get("tasks"), cfg.get("domains"))


def _rebuild(cfg: dict[str, Any], path: Path, build=_classifier):
    """Backbone, model and strategy as the config says (``build(backbone, cfg)`` puts the
    head on); a value they refuse names the config file."""
    try:
        backbone = build_from_spec(cfg["backbone"])
        if backbone.identity() != cfg["backbone_identity"]:
            raise BundleError(f"{path}: backbone weights differ from the ones this bundle was "
                              f"trained on ({backbone.identity()} != {cfg['backbone_identity']})")
        if cfg.get("max_length") and hasattr(backbone, "max_length"):
            backbone.max_length = int(cfg["max_length"])
        model = build(backbone, cfg)
        strategy = get_strategy(cfg["strategy"]["name"], **cfg["strategy"].get("options", {}))
        strategy.check_backbone(backbone)
        strategy.attach(model)
    except TransferkitError as e:
        if str(e).startswith(str(path)):
            raise
        raise BundleError(f"{path / 'config.json'}: {e}") from None
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise BundleError(f"{path / 'config.json'}: a value the model cannot be rebuilt "
                          f"from ({type(e).__name__}: {e})") from None
    return backbone, model, strategy


def load_model(path: str | Path, *, task: str = "classification", build=_classifier):
    """Rebuild ``(model, strategy, config)`` from a bundle folder holding a model of
    ``task`` (``build(backbone, cfg)`` makes the model of a task other than
    classification)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    cfg = read_config(path)
    found = bundle_task(cfg)
    if found != task:
        raise BundleError(f"{path}: holds a {found} model, not a {task} model")
    backbone, model, strategy = _rebuild(cfg, path, build)
    try:
        tensors = load_file(str(path / "model.safetensors"))
    except FileNotFoundError:
        raise BundleError(f"{path}: model.safetensors is missing") from None
    except (SafetensorError, OSError) as e:
        raise BundleError(f"{path / 'model.safetensors'}: unreadable ({e})") from None
    expected = set(cfg["tensors"])
    if set(tensors) != expected:
        diff = sorted(expected ^ set(tensors))
        raise BundleError(f"{path}: model.safetensors does not match config.json (e.g. {diff[0]!r})")
    if not any(n.startswith("head.") for n in tensors):
        raise BundleError(f"{path}: bundle holds no head tensors")
    sd = model.state_dict()
    with torch.no_grad():
        for n, t in tensors.items():
            if n not in sd:
                raise BundleError(f"{path}: tensor {n!r} has no place in the rebuilt model")
            if sd[n].shape != t.shape:
                raise BundleError(f"{path}: tensor {n!r} has shape {tuple(t.shape)}, "
                                  f"model expects {tuple(sd[n].shape)}")
            sd[n].copy_(t)
    model.eval()
    return model, strategy, cfg
