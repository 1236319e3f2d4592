"""``lora``: low-rank adapters (PEFT's LoRA) beside frozen backbone weights, plus a new head.

``attach`` injects LoRA layers into the backbone's own model (``backbone.network``: the timm or
transformers module; the backbone itself when it has none) with
``peft.inject_adapter_in_model``, under a fixed seed, so that preparing a fresh backbone again
(when a bundle is loaded) gives the same module names.  Each adapted layer keeps its original
weight under ``<layer>.base_layer`` and gains ``lora_A`` / ``lora_B`` (``B`` starts at zero, so
the untrained adapter changes nothing).  One stage trains the adapters (``lr``) and the head
(``head_lr``) with the whole model running every batch; the pretrained weights never change and
BatchNorm statistics stay frozen.

Targets (``targets``: comma-separated module-name suffixes, matched as PEFT matches them: a name
equal to the suffix or ending in ``.<suffix>``):

* automatic (default), per backbone: PEFT's own default for the transformers model type
  (``query``, ``value`` for BERT / MiniLM / RoBERTa); else fused ``qkv`` attention projections
  (timm ViT, DeiT, Swin ...); else separate query / value projections under other common names;
  else, in a CNN, outside squeeze-excitation blocks: the pointwise (1x1, ungrouped)
  convolutions (``conv_pw``, ``conv_pwl``, ``conv_head`` in EfficientNet / MobileNet, ``conv1``,
  ``conv3`` and ``downsample.0`` in bottleneck ResNets); the dense layers where the blocks'
  pointwise layers are ``Linear`` (ConvNeXt's ``fc1`` / ``fc2``); every ungrouped convolution
  where there are (almost) no pointwise ones (basic-block ResNets).  Depthwise / grouped
  convolutions are never chosen (PEFT needs the rank divisible by the groups).
* given: every module whose name matches; each must be a layer LoRA supports (Linear,
  Conv1d/2d/3d with groups dividing ``r``, Embedding, transformers' Conv1D).

Modules that take no part in the features (a timm model's original classifier, a transformers
pooler) are excluded.  A target list that matches nothing, or a backbone without any layer to
adapt (static word vectors), is refused up front; an adapter that would silently be empty is not
possible.

Learning rates: ``lr`` (adapters) defaults to the training ``--lr`` or else 1e-3 for images and
text alike.  LoRA wants a higher rate than full fine-tuning (the LoRA paper used 4e-4 to 5e-4
for RoBERTa-base over 30+ epochs; ViT LoRA recipes use 1e-3 to 5e-3); transferkit's runs are
short and on small data sets, so 1e-3.  ``head_lr`` defaults to 1e-3 as in ``freeze``.

``bias``: as PEFT's ``bias`` - ``none`` (default), ``all`` (every backbone bias trains too, as
in BitFit) or ``lora_only`` (the biases of the adapted layers).  With anything but ``none`` some
backbone tensors change.

Besides the bundle, ``save_extra`` writes the adapters in PEFT's own format to
``<bundle>/peft_adapter/`` (``adapter_config.json`` + ``adapter_model.safetensors``, the layout
``PeftModel.save_pretrained`` writes), so that ``PeftModel.from_pretrained(<fresh base model>,
"<bundle>/peft_adapter")`` gives the same backbone outputs outside transferkit.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .base import ParamGroup, Stage, Strategy, head_params, register_strategy
from .regularised import RegOptions, check_reg_backbone, regularise_stage, validate_reg
from ..backbones import Backbone
from ..errors import ConfigError
from ..io import save_tensors, write_text

#: seed of the adapters' initial values (overwritten from the bundle when one is loaded)
INIT_SEED = 0
ADAPTER_NAME = "default"
PEFT_DIR = "peft_adapter"
BIAS_MODES = ("none", "all", "lora_only")
DEFAULT_LR = 1e-3

#: attention projections tried in order when the transformers model type is unknown to PEFT
_ATTENTION_NAMES = (("qkv",), ("query", "value"), ("q_proj", "v_proj"), ("q_lin", "v_lin"),
                    ("query_key_value",), ("Wqkv",), ("c_attn",))
#: squeeze-excitation blocks (timm SqueezeExcite, SEModule, EffectiveSEModule, ...)
_SE_CLASS = re.compile(r"squeeze|excit|^(effective)?se(module|layer|block)?$", re.IGNORECASE)
_AUTO_DESCRIPTION = ("automatic: PEFT's default for the model type, fused qkv, query/value-style "
                     "attention projections, pointwise 1x1 or other ungrouped convolutions, "
                     "dense layers")


@dataclass
class LoraOptions(RegOptions):
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    targets: str | None = None  # comma-separated module-name suffixes; None: automatic
    lr: float | None = None
    head_lr: float = 1e-3
    bias: str = "none"


@dataclass
class _Plan:
    targets: list[str]   # what PEFT's target_modules gets
    exclude: list[str]   # full names matched by targets but left out
    adapted: list[str]   # full names of the modules that get adapters
    automatic: bool


def adapter_root(backbone: nn.Module) -> nn.Module:
    """The module adapters go into: :attr:`Backbone.network` (the timm / transformers model).

    A bare module that is not a :class:`Backbone` gets them in its ``model`` when it has one,
    else in itself."""
    if isinstance(backbone, Backbone):
        return backbone.network
    inner = getattr(backbone, "model", None)
    return inner if isinstance(inner, nn.Module) else backbone


def _matches(name: str, suffix: str) -> bool:
    return name == suffix or name.endswith("." + suffix)


def _candidates(root: nn.Module) -> dict[str, nn.Module]:
    """Named modules of ``root``, without PEFT's own inner modules (``base_layer``, ``lora_*``)."""
    out = {}
    for name, mod in root.named_modules():
        if not name:
            continue
        parts = name.split(".")
        if "base_layer" in parts or any(p.startswith("lora_") for p in parts):
            continue
        out[name] = mod
    return out


def _base(mod: nn.Module) -> nn.Module:
    get = getattr(mod, "get_base_layer", None)
    return get() if callable(get) else mod


def _unsupported_reason(mod: nn.Module, r: int) -> str | None:
    """Why PEFT's LoRA cannot adapt ``mod`` (``None`` when it can)."""
    m = _base(mod)
    if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        if r % m.groups:
            return f"a convolution with groups={m.groups} (the rank r={r} must be a multiple)"
        return None
    if isinstance(m, (nn.Linear, nn.Embedding)) or _is_projection(m):
        return None
    return f"a {type(m).__name__}, which LoRA does not adapt"


def _is_projection(mod: nn.Module) -> bool:
    """A dense projection: Linear, or transformers' Conv1D (GPT-2 style; by name, so that image
    models need not import transformers)."""
    m = _base(mod)
    return isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"


def _is_ungrouped_conv(mod: nn.Module) -> bool:
    m = _base(mod)
    return isinstance(m, nn.Conv2d) and m.groups == 1


def _is_pointwise(mod: nn.Module) -> bool:
    m = _base(mod)
    return (isinstance(m, nn.Conv2d) and m.groups == 1
            and all(k == 1 for k in m.kernel_size))


def _unused_modules(root: nn.Module) -> set[str]:
    """Names of modules that never reach the features: a timm classifier, a transformers pooler."""
    wanted: set[int] = set()
    get = getattr(root, "get_classifier", None)
    if callable(get):
        try:
            heads = get()
        except Exception:  # noqa: BLE001 - a model without a classifier
            heads = None
        heads = heads if isinstance(heads, (tuple, list)) else (heads,)
        wanted |= {id(h) for h in heads if isinstance(h, nn.Module)}
    pooler = getattr(root, "pooler", None)
    if isinstance(pooler, nn.Module) and hasattr(root, "config"):
        wanted.add(id(pooler))
    names: set[str] = set()
    for name, mod in root.named_modules():
        if id(mod) in wanted:
            names.add(name)
            names.update(f"{name}.{sub}" for sub, _ in mod.named_modules() if sub)
    return names


class LoraPlanner:
    """Resolves which modules of a backbone get adapters (no model is changed)."""

    def __init__(self, r: int, targets: list[str] | None):
        self.r = r
        self.targets = targets

    def plan(self, backbone: nn.Module) -> _Plan:
        root = adapter_root(backbone)
        mods = _candidates(root)
        unused = _unused_modules(root)
        bb_name = getattr(backbone, "name", type(backbone).__name__)
        if self.targets is not None:
            return self._given(mods, unused, bb_name)
        plan = self._automatic(root, mods, unused)
        if plan is None:
            raise ConfigError(
                f"lora: backbone {bb_name!r} has no layer LoRA can adapt (targets tried: "
                f"{_AUTO_DESCRIPTION}); use a transformer or CNN backbone, or another strategy")
        return plan

    # -- given targets ------------------------------------------------------------------
    def _given(self, mods, unused, bb_name) -> _Plan:
        matched = {t: [n for n in mods if _matches(n, t)] for t in self.targets}
        tried = ",".join(self.targets)
        empty = [t for t, names in matched.items() if not names]
        if empty:
            raise ConfigError(f"lora: targets={tried}: {', '.join(repr(t) for t in empty)} "
                              f"match no module of backbone {bb_name!r}"
                              + _suggest(mods, self.r))
        exclude = sorted({n for names in matched.values() for n in names if n in unused})
        adapted = sorted({n for names in matched.values() for n in names if n not in unused})
        if not adapted:
            raise ConfigError(f"lora: targets={tried} match only modules of backbone {bb_name!r} "
                              f"that take no part in its features ({', '.join(exclude[:3])})")
        bad = [(n, _unsupported_reason(mods[n], self.r)) for n in adapted]
        bad = [(n, why) for n, why in bad if why]
        if bad:
            n, why = bad[0]
            more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
            raise ConfigError(f"lora: targets={tried} match {n!r}{more} of backbone {bb_name!r}: "
                              f"{why}; LoRA adapts Linear, Conv1d/2d/3d and Embedding layers")
        return _Plan(list(self.targets), exclude, adapted, automatic=False)

    # -- automatic targets --------------------------------------------------------------
    def _automatic(self, root, mods, unused) -> _Plan | None:
        def ok(n):
            return n not in unused and _unsupported_reason(mods[n], self.r) is None

        def suffix_plan(suffixes) -> _Plan | None:
            adapted, exclude = set(), set()
            for s in suffixes:
                names = [n for n in mods if _matches(n, s)]
                good = [n for n in names if ok(n)]
                if not good:
                    return None
                adapted.update(good)
                exclude.update(n for n in names if n not in good)
            return _Plan(list(suffixes), sorted(exclude), sorted(adapted), automatic=True)

        model_type = getattr(getattr(root, "config", None), "model_type", None)
        if model_type:
            from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as table

            if model_type in table:
                plan = suffix_plan(table[model_type])
                if plan is not None:
                    return plan
        for names in _ATTENTION_NAMES:
            plan = suffix_plan(names)
            if plan is not None and all(_is_projection(mods[n]) for n in plan.adapted):
                return plan
        # a CNN: its pointwise convolutions (or, as in ConvNeXt, its dense layers), outside
        # squeeze-excitation blocks
        parents = dict(root.named_modules())

        def outside_se(n):
            parent = parents.get(n.rpartition(".")[0])
            return parent is None or parent is root or not _SE_CLASS.search(type(parent).__name__)

        def layers(kind):
            return [n for n, m in mods.items() if n not in unused and kind(m) and outside_se(n)
                    and _unsupported_reason(m, self.r) is None]

        def size(names):
            return sum(_base(mods[n]).weight.numel() for n in names)

        pointwise, dense = layers(_is_pointwise), layers(_is_projection)
        convs = layers(_is_ungrouped_conv)
        if pointwise and size(pointwise) >= 0.1 * size(convs):
            return _names_plan(mods, pointwise)
        if dense and size(dense) >= 0.1 * size(convs):  # ConvNeXt-style blocks: Linear MLPs
            return _names_plan(mods, dense)
        if convs:  # basic-block ResNets: (almost) no pointwise convolution; all ungrouped ones
            return _names_plan(mods, convs)
        return None


def _names_plan(mods, chosen: list[str]) -> _Plan:
    """Adapters on exactly ``chosen``, named by their last name part where that is unambiguous."""
    keep = set(chosen)
    suffixes = sorted({n.rpartition(".")[2] for n in chosen})
    suffixes = [s for s in suffixes if s and not s.isdigit()]
    adapted, exclude = set(), set()
    for s in suffixes:
        for n in mods:
            if _matches(n, s):
                (adapted if n in keep else exclude).add(n)
    # a layer whose own name is a number (inside a Sequential) is named in full
    full = sorted(keep - adapted)
    return _Plan(suffixes + full, sorted(exclude), sorted(adapted | set(full)), automatic=True)


def _suggest(mods, r: int) -> str:
    """A hint listing some adaptable layer names of the model."""
    seen: list[str] = []
    for n, m in mods.items():
        if _unsupported_reason(m, r) is None:
            s = n.rpartition(".")[2]
            if s not in seen and not s.isdigit():
                seen.append(s)
    return f" (adaptable layer names include: {', '.join(seen[:8])})" if seen else ""


def _exact(names: list[str]) -> str | None:
    """A PEFT module pattern (matched with ``re.fullmatch``) for exactly ``names``."""
    return "|".join(re.escape(n) for n in names) if names else None


def lora_modules(root: nn.Module) -> list[tuple[str, nn.Module]]:
    """PEFT's LoRA layers inside ``root`` (none before PEFT was imported: importing it costs
    seconds, which refusing a backbone need not spend)."""
    lora = sys.modules.get("peft.tuners.lora")
    if lora is None:
        return []
    return [(n, m) for n, m in root.named_modules() if isinstance(m, lora.LoraLayer)]


@register_strategy
class Lora(Strategy):
    name = "lora"
    description = ("low-rank adapters (PEFT LoRA, -o r=8 -o alpha=16) on attention projections "
                   "or pointwise convolutions; pretrained weights frozen; also in PEFT format")
    options_cls = LoraOptions
    trains_backbone = "none"

    def validate(self) -> None:
        o = self.options
        if isinstance(o.targets, str) and o.targets.strip().lower() in ("", "auto", "none"):
            o.targets = None
        if o.r < 1:
            raise ConfigError(f"lora: r must be >= 1, got {o.r}")
        if not o.alpha > 0:
            raise ConfigError(f"lora: alpha must be > 0, got {o.alpha}")
        if not 0.0 <= o.dropout < 1.0:
            raise ConfigError(f"lora: dropout must be in [0, 1), got {o.dropout}")
        self.require_positive("lr", "head_lr")
        if o.bias not in BIAS_MODES:
            raise ConfigError(f"lora: bias must be one of {', '.join(BIAS_MODES)}, got {o.bias!r}")
        if o.targets is not None and not self._target_list():
            raise ConfigError(f"lora: targets={o.targets!r} names no module")
        if o.bias != "none":
            self.trains_backbone = "some"  # the backbone's biases train too
        validate_reg(self.name, o)

    def _target_list(self) -> list[str] | None:
        t = self.options.targets
        if t is None:
            return None
        return [s.strip() for s in t.split(",") if s.strip()]

    def plan(self, backbone) -> _Plan:
        """Which modules of ``backbone`` get adapters (raises ConfigError when none can)."""
        return LoraPlanner(self.options.r, self._target_list()).plan(backbone)

    def check_backbone(self, backbone) -> None:
        check_reg_backbone(self.name, self.options, backbone)
        if lora_modules(adapter_root(backbone)):
            return  # already prepared
        self.plan(backbone)

    def lora_config(self, plan: _Plan):
        from peft import LoraConfig

        o = self.options
        return LoraConfig(r=o.r, lora_alpha=o.alpha, lora_dropout=o.dropout, bias=o.bias,
                          target_modules=list(plan.targets),
                          # exact names: a list would also exclude every module whose
                          # name merely ends in one of them
                          exclude_modules=_exact(plan.exclude))

    def attach(self, model) -> None:
        from peft import inject_adapter_in_model

        root = adapter_root(model.backbone)
        if lora_modules(root):
            return  # adapters already there (attach is idempotent)
        plan = self.plan(model.backbone)
        config = self.lora_config(plan)
        was_training = root.training
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(INIT_SEED)
                inject_adapter_in_model(config, root, adapter_name=ADAPTER_NAME)
        except ValueError as e:  # PEFT refusing a layer: a configuration fault
            raise ConfigError(f"lora: PEFT cannot adapt backbone {model.backbone.name!r} with "
                              f"targets {','.join(plan.targets)}: {e}") from None
        root.train(was_training)
        n = sum(p.numel() for p in self.adapter_params(model))
        if n == 0 or not lora_modules(root):
            raise ConfigError(f"lora: no adapter was created on backbone {model.backbone.name!r} "
                              f"(targets {','.join(plan.targets)})")

    def adapter_params(self, model) -> list[nn.Parameter]:
        """The LoRA matrices (and the biases PEFT's ``bias`` option adds)."""
        root = adapter_root(model.backbone)
        params = [p for n, p in root.named_parameters() if "lora_" in n]
        bias = self.options.bias
        if bias == "none":
            return params
        seen = {id(p) for p in params}
        if bias == "all":
            unused = _unused_modules(root)
            extra = [p for n, p in root.named_parameters()
                     if n.rpartition(".")[2] == "bias" and "lora_" not in n
                     and n.rpartition(".")[0].replace(".base_layer", "") not in unused]
        else:  # lora_only
            extra = [m.get_base_layer().bias for _, m in lora_modules(root)
                     if getattr(m.get_base_layer(), "bias", None) is not None]
        for p in extra:
            if id(p) not in seen:
                seen.add(id(p))
                params.append(p)
        return params

    def stages(self, model, train):
        o = self.options
        lr = o.lr if o.lr is not None else (train.lr if train.lr is not None else DEFAULT_LR)
        return [regularise_stage(o, model, Stage(
            "lora", train.epochs, [ParamGroup("lora", self.adapter_params(model), lr),
                                   ParamGroup("head", head_params(model), o.head_lr)],
            frozen_backbone=False, train_bn=False, warmup_epochs=train.warmup_epochs))]

    def for_export(self, model):
        """A copy of ``model`` with every adapter merged into its layer's weight
        (``W + B A * alpha / r``, PEFT's ``merge``) and the LoRA wrapper replaced by the plain
        layer: the exported graph holds no adapter."""
        folded = copy.deepcopy(model)
        root = adapter_root(folded.backbone)
        for name, module in lora_modules(root):
            if not hasattr(module, "merge"):
                raise ConfigError(f"lora: the adapter of {name!r} cannot be merged for export")
            module.merge(safe_merge=True)
            parent_name, _, child = name.rpartition(".")
            parent = root.get_submodule(parent_name) if parent_name else root
            setattr(parent, child, module.get_base_layer())
        return folded

    def save_extra(self, model, bundle_dir) -> None:
        """The adapters in PEFT's format, for ``PeftModel.from_pretrained(base, <dir>)``."""
        from peft import get_peft_model_state_dict

        root = adapter_root(model.backbone)
        configs = getattr(root, "peft_config", None)
        if not configs or ADAPTER_NAME not in configs:
            return
        out = Path(bundle_dir) / PEFT_DIR
        out.mkdir(parents=True, exist_ok=True)
        config = copy.deepcopy(configs[ADAPTER_NAME])
        config.inference_mode = True
        # a hub name tells PEFT's AutoPeftModel where the base model lives; a local folder
        # would only hold on this machine, so the bundle does not record it
        base = getattr(root, "name_or_path", None) or None
        config.base_model_name_or_path = None if base is None or Path(base).exists() else base
        sd = get_peft_model_state_dict(root, adapter_name=ADAPTER_NAME,
                                       save_embedding_layers=False)
        # PeftModel.save_pretrained's key layout: PeftModel -> base_model (LoraModel) -> model
        save_tensors(out / "adapter_model.safetensors",
                     {f"base_model.model.{k}": v for k, v in sd.items()},
                     metadata={"format": "pt"})
        # as LoraConfig.save_pretrained writes it, with sets as sorted lists (a stable file)
        cfg = {k: sorted(v) if isinstance(v, set) else v for k, v in config.to_dict().items()}
        write_text(out / "adapter_config.json", json.dumps(cfg, indent=2, sort_keys=True))
