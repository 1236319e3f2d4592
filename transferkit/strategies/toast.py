"""``toast`` and ``toast-lite``: transfer by steering a frozen transformer's attention top-down.

TOAST (Shi et al., "TOAST: Transfer Learning via Attention Steering", 2023; built on the
top-down attention of AbSViT, Shi et al., "Top-Down Visual Attention from Analysis by
Synthesis", CVPR 2023) keeps the pretrained transformer frozen and learns a small *top-down*
module that tells it what to attend to:

1. **First pass.**  The frozen backbone runs as usual (here without gradients).
2. **Feature selection.**  Each output token ``z`` (all tokens, prefix/CLS included) is weighted
   by ``clamp(cos(z, prompt), 0, 1)`` with a learned task prompt ``prompt`` (``D``), then
   multiplied by a learned channel transform ``transform`` (``D x D``, initialised to the
   identity): ``x = (z * clamp(cos(z, prompt), 0, 1)) @ transform``.
3. **Feedback.**  A bias-free linear decoder per layer runs from the top layer down: for layer
   ``l = L-1 .. 0``, ``x <- propagate_l(x)`` and the top-down signal of that layer is
   ``td_l = emit_l(x)``.
4. **Second pass.**  The backbone runs again on the same input; in every self-attention layer
   the value projection sees ``h + td_l`` instead of ``h``: ``v = W_v (h + td_l) + b_v``.
   Queries and keys are unchanged, so the attention *pattern* is computed as before while what
   each token contributes is steered.  The second pass's features, pooled as the backbone
   always pools them, go to the usual head.

Only the prompt, the channel transform, the feedback decoders and the head train; the
backbone's own tensors never change (``trains_backbone = "none"``).

What the official code (github.com/bfshi/TOAST; ``visual_classification/src/models/vit/
vit_top_down.py``, ``vit_models.py``, ``language_generation/models/llama_top_down*.py``,
``language_generation/pretune_top_down.py``; and ``models/absvit.py`` of bfshi/AbSViT) does,
and how this module relates to it:

* *Selection*: ``cos_sim = normalize(x) @ normalize(prompt)``, ``mask = cos_sim.clamp(0, 1)``,
  ``x = x * mask``, ``x = x @ top_down_transform`` on the output of ``forward_features``
  (after the final norm, all tokens).  Same here; for text the padding tokens' weights are
  also set to zero (they cannot reach any real token anyway: padded keys are masked).
  ``prompt`` is initialised ``randn(D)``, the transform ``eye(D)``, as there.
* *Feedback*: ``Decode_Block`` holds **two** bias-free ``D x D`` maps, ``linear`` (carried
  down to the next layer and the one the reconstruction loss trains) and ``linear2`` (the
  signal of this layer): ``x = linear(x); out = linear2(x)``, run from the last block to the
  first.  Reproduced as ``propagate`` / ``emit``, initialised like timm's ViT init there
  (truncated normal, std 0.02), from a fixed seed so that a reloaded bundle re-creates the
  same values for any tensor that never trained.
* *Value injection*: the ViT code computes ``v = v + qkv(td)[2]`` (the fused ``qkv`` applied to
  ``td``, V third), the LLaMA code ``v = v_proj(h + td)``.  Here ``W_v td`` is added to the
  value projection's output through a forward hook that exists only during the second pass
  (BERT-style: ``attention.self.value``; timm ViT: the V third of the fused ``qkv``).  The
  value *bias* is not added a second time: the ViT code's ``qkv(td)`` adds ``b_v`` twice,
  which shifts V even when ``td = 0``; the LLaMA form (no double bias) is what is used here,
  so a zero feedback path gives a second pass identical to the first.
* *Variational (reconstruction) loss*: on the second pass, with ``in_l``/``out_l`` the input
  and output of block ``l``, ``sum_l mse(propagate_l(out_l.detach()), in_l.detach())`` --
  the feedback path learns to invert the feedforward one (analysis by synthesis).  The ViT
  code weights it by 0.1 (``var_weight`` default); the LLaMA code scales both sides by 1/10.
  For text the mean runs over real (non-padding) tokens only.
* *Pre-tuning*: the official language code pre-tunes decoders and prompt on unlabelled text
  (OpenWebText) with the language-modelling loss plus the variational loss; the visual models
  start from an ImageNet-trained AbSViT.  A classification task has no unlabelled objective
  besides reconstruction, so here ``pretune_epochs > 0`` adds a first stage that trains only
  the ``propagate`` maps with ``var_weight`` x the reconstruction loss and **uses no labels**:
  in that stage the second pass runs without gradients and the features handed to the head
  are detached, so the classification loss the engine always computes (the head is frozen
  and untrained there) reaches no trainable tensor; it only shows up, as a constant, in the
  stage's logged train loss.  Its validation scores are those of an untrained head, so the
  stage is marked not selectable: the best epoch is always a fine-tuning one.  In the
  fine-tuning stage the
  reconstruction loss is off, as in the official visual-classification fine-tuning (the
  language code keeps adding it).
* *Trainable in fine-tuning*: official ``toast`` trains the names matching ``decoders`` /
  ``prompt`` / ``head`` -- the channel transform (``top_down_transform``) stays at its
  pre-trained value there; here it trains too (``toast-lite`` trains it in the official code
  as well).
* *toast-lite*: official ``toast-lite`` swaps every ``linear`` / ``linear2`` for a loralib
  ``Linear(r=4)`` whose full weight is kept (frozen) and marks only the LoRA factors, the
  prompt and the transform trainable.  Same here with rank ``lite_rank`` (default 8) and
  scaling 1 (loralib's default ``lora_alpha=1`` would scale by ``1/r``); ``A`` starts like
  loralib's (Kaiming uniform), ``B`` at zero.  The frozen full weights are the pre-tuned ones
  when ``pretune_epochs > 0`` (that stage trains them, then they freeze), otherwise their
  seeded initial values.  On minilm (384-d, 6 layers) this trains about 0.9 % of all
  parameters (``toast``: about 7.8 %).
* *Dropout*: official training keeps the ViT's drop-path (0.1) active in both passes.  Here
  the frozen backbone runs in eval mode in both passes (no dropout, no drop-path, BatchNorm
  statistics untouched), so the first pass gives exactly the backbone's usual features and a
  zero feedback gives exactly the first pass; the head keeps its own dropout.

Supported backbones: timm Vision Transformers (``timm.models.vision_transformer``
``VisionTransformer`` with the fused ``qkv`` attention of that module) and BERT-style
Hugging Face encoders (``attention.self.value``, DistilBERT's ``attention.v_lin``, MPNet's
``attention.attn.v``).  CNNs and static word vectors are refused by :meth:`check_backbone`.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import Backbone, ValueProjection
from ..errors import ConfigError
from ..events import Callback
from .base import Options, ParamGroup, Stage, Strategy, head_params, register_strategy

#: seed of the top-down module's initial values (fixed, so a bundle can re-create them)
INIT_SEED = 0
#: std of the feedback maps' truncated-normal initialisation (timm's ViT init, as upstream)
INIT_STD = 0.02


# --------------------------------------------------------------------------- the module

class FeedbackMap(nn.Module):
    """A bias-free ``D x D`` linear map; with ``rank`` a frozen full weight plus a trainable
    low-rank update ``B @ A`` (LoRA, scaling 1)."""

    def __init__(self, dim: int, rank: int | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, dim))
        nn.init.trunc_normal_(self.weight, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD)
        self.rank = rank
        if rank:
            self.lora_a = nn.Parameter(torch.empty(rank, dim))
            nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
            self.lora_b = nn.Parameter(torch.zeros(dim, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight)
        if self.rank:
            out = out + F.linear(F.linear(x, self.lora_a), self.lora_b)
        return out

    def adapter_parameters(self) -> list[nn.Parameter]:
        return [self.lora_a, self.lora_b] if self.rank else [self.weight]


class FeedbackBlock(nn.Module):
    """Upstream's ``Decode_Block``: ``x <- propagate(x)``; the layer's signal is ``emit(x)``."""

    def __init__(self, dim: int, rank: int | None = None):
        super().__init__()
        self.propagate = FeedbackMap(dim, rank)
        self.emit = FeedbackMap(dim, rank)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.propagate(x)
        return x, self.emit(x)


class ToastModule(nn.Module):
    """Task prompt, channel transform and one feedback block per backbone layer."""

    def __init__(self, dim: int, depth: int, rank: int | None = None):
        super().__init__()
        self.dim, self.depth, self.rank = dim, depth, rank
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(INIT_SEED)
            self.prompt = nn.Parameter(torch.randn(dim))
            self.transform = nn.Parameter(torch.eye(dim))
            self.feedback = nn.ModuleList([FeedbackBlock(dim, rank) for _ in range(depth)])
        #: reconstruction loss of the last pre-tuning forward (read by :class:`ReconLoss`)
        self.pending_recon: torch.Tensor | None = None

    def select(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Token reweighting by the clamped cosine similarity to the prompt, then the
        channel transform."""
        sim = F.normalize(tokens, dim=-1) @ F.normalize(self.prompt, dim=0)  # (B, N)
        weight = sim.clamp(0, 1)
        if mask is not None:
            weight = weight * mask.to(weight.dtype)
        return (tokens * weight.unsqueeze(-1)) @ self.transform

    def top_down(self, x: torch.Tensor) -> list[torch.Tensor]:
        """One signal per layer (index = layer), computed from the top layer down."""
        td: list[torch.Tensor | None] = [None] * self.depth
        for i in range(self.depth - 1, -1, -1):
            x, td[i] = self.feedback[i](x)
        return td  # type: ignore[return-value]

    def recon_loss(self, ins: list[torch.Tensor], outs: list[torch.Tensor],
                   mask: torch.Tensor | None) -> torch.Tensor:
        """Variational loss: each ``propagate`` map rebuilds its layer's input from its output."""
        total = None
        for i in range(self.depth):
            pred = self.feedback[i].propagate(outs[i].detach().float())
            err = (pred - ins[i].detach().float()).pow(2)
            if mask is None:
                term = err.mean()
            else:
                m = mask.to(err.dtype).unsqueeze(-1)
                term = (err * m).sum() / (m.sum() * err.shape[-1]).clamp_min(1.0)
            total = term if total is None else total + term
        return total

    def task_parameters(self) -> list[nn.Parameter]:
        """What fine-tuning trains: prompt, transform, and the feedback maps (or their LoRA
        factors)."""
        ps = [self.prompt, self.transform]
        for blk in self.feedback:
            ps += blk.propagate.adapter_parameters() + blk.emit.adapter_parameters()
        return ps

    def pretune_parameters(self) -> list[nn.Parameter]:
        """What pre-tuning trains: the full ``propagate`` weights (the maps the
        reconstruction loss reaches)."""
        return [blk.propagate.weight for blk in self.feedback]

    def features(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        """The model's features: the steered second pass (see :func:`toast_features`)."""
        return toast_features(model, batch)


class ReconLoss(Callback):
    """Adds the reconstruction loss of the pre-tuning pass, ``var_weight`` x its value."""

    def __init__(self, var_weight: float):
        self.var_weight = var_weight

    def on_batch(self, state, batch):
        tk = state.model.attached("toast")
        recon = tk.pending_recon
        if recon is None:
            return None
        tk.pending_recon = None
        return {"toast_recon": self.var_weight * recon}


# --------------------------------------------------------------------------- backbone access

class _Target:
    """How to run one backbone: its layers, value projections and the two passes."""

    def __init__(self, dim: int, layers: list[nn.Module], values: list[ValueProjection],
                 run: Callable[[Any], tuple[dict[str, torch.Tensor], torch.Tensor,
                                            torch.Tensor | None]]):
        self.dim, self.layers, self.values, self.run = dim, layers, values, run

    @staticmethod
    def add_value(value: ValueProjection, out: torch.Tensor, td: torch.Tensor) -> torch.Tensor:
        """Add ``W_v td`` to the value rows of the projection's output (the V third of a fused
        ``[q | k | v]``), without adding the bias a second time."""
        add = F.linear(td.to(out.dtype), value.weight)
        if (value.start, value.stop) != (0, out.shape[-1]):
            add = F.pad(add, (value.start, out.shape[-1] - value.stop))
        return out + add


def _target(backbone: Backbone) -> _Target | None:
    """The :class:`_Target` for a backbone whose attention values can be steered, else ``None``."""
    layers = backbone.transformer_blocks()
    values = backbone.attention_values()
    if not layers or len(values) != len(layers):
        return None
    return _Target(values[0].linear.in_features, layers, values, backbone.token_features)


def _first(x: Any) -> torch.Tensor:
    return x[0] if isinstance(x, (tuple, list)) else x


# --------------------------------------------------------------------------- the two passes

def toast_features(model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
    """TOAST's features: first pass, selection, feedback, steered second pass."""
    tk: ToastModule = model.toast
    tk.pending_recon = None
    bb = model.backbone
    target = _target(bb)
    if target is None:  # pragma: no cover - check_backbone refused it before
        raise ConfigError(f"toast: backbone {bb.name!r} is not supported")
    pretuning = (tk.training and torch.is_grad_enabled() and not tk.prompt.requires_grad
                 and any(p.requires_grad for p in tk.pretune_parameters()))
    modes = [(m, m.training) for m in bb.modules()]
    bb.eval()  # frozen backbone: no dropout / drop-path, BatchNorm statistics untouched
    handles = []
    try:
        with torch.no_grad():
            feats1, tokens, mask = target.run(batch)
        if tokens.shape[0] == 0:
            return feats1
        if tokens.dim() != 3 or tokens.shape[-1] != tk.dim:
            raise ConfigError(f"toast: backbone {bb.name!r} gave features of shape "
                              f"{tuple(tokens.shape)}, expected (batch, tokens, {tk.dim})")
        # pre-tuning trains only through the reconstruction loss: no graph for the passes
        grad = torch.no_grad if pretuning else contextlib.nullcontext
        with grad():
            td = tk.top_down(tk.select(tokens.float(), mask))
        fired = [0] * len(target.values)

        def value_hook(i: int):
            def hook(module, args, out):
                fired[i] += 1
                return target.add_value(target.values[i], out, td[i])
            return hook

        for i, v in enumerate(target.values):  # first in line: other hooks see steered values
            handles.append(v.linear.register_forward_hook(value_hook(i), prepend=True))
        ins: list[torch.Tensor | None] = [None] * len(target.layers)
        outs: list[torch.Tensor | None] = [None] * len(target.layers)
        if pretuning:
            def capture(i: int):
                def pre(module, args, kwargs):
                    ins[i] = args[0] if args else kwargs["hidden_states"]

                def post(module, args, kwargs, out):
                    outs[i] = _first(out)
                return pre, post

            for i, layer in enumerate(target.layers):
                pre, post = capture(i)
                handles.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
                handles.append(layer.register_forward_hook(post, with_kwargs=True))
        with grad():
            feats2, _, _ = target.run(batch)
        if fired != [1] * len(fired):
            raise RuntimeError(f"toast: the value projections of {bb.name!r} were called "
                               f"{fired} times in the steered pass (expected once each)")
    finally:
        for h in handles:
            h.remove()
        for m, was in modes:
            m.training = was
    if pretuning:
        tk.pending_recon = tk.recon_loss(ins, outs, mask)  # type: ignore[arg-type]
        return {k: v.detach() for k, v in feats2.items()}
    return feats2


# --------------------------------------------------------------------------- strategies

@dataclass
class ToastOptions(Options):
    lr: float | None = None      # top-down module; default: the run's --lr, else 1e-3
    head_lr: float = 1e-3
    pretune_epochs: int = 0
    var_weight: float = 0.1      # weight of the reconstruction loss in pre-tuning


@dataclass
class ToastLiteOptions(ToastOptions):
    lite_rank: int = 8


@register_strategy
class Toast(Strategy):
    name = "toast"
    description = ("frozen ViT/BERT steered top-down: task prompt + feedback decoders add a "
                   "signal to every attention layer's values in a second pass")
    options_cls = ToastOptions
    trains_backbone = "none"
    rank: int | None = None

    def validate(self) -> None:
        o = self.options
        self.require_positive("lr", "head_lr")
        if o.pretune_epochs < 0:
            raise ConfigError(f"{self.name}: pretune_epochs must be >= 0, got {o.pretune_epochs}")
        if o.var_weight < 0:
            raise ConfigError(f"{self.name}: var_weight must be >= 0, got {o.var_weight}")
        if o.pretune_epochs > 0 and o.var_weight == 0:
            raise ConfigError(f"{self.name}: pretune_epochs > 0 needs var_weight > 0 "
                              "(pre-tuning trains on the reconstruction loss only)")

    def check_backbone(self, backbone) -> None:
        if _target(backbone) is None:
            raise ConfigError(
                f"{self.name} needs a transformer whose self-attention it can steer (a timm "
                f"Vision Transformer, or a BERT-style Hugging Face encoder such as minilm); "
                f"backbone {backbone.name!r} is not one (CNNs and word vectors have no "
                f"attention values to steer)")

    def attach(self, model: nn.Module) -> None:
        bb = model.backbone
        target = _target(bb)
        if target is None:
            self.check_backbone(bb)
        ref = next(bb.parameters())
        model.attach("toast", ToastModule(target.dim, len(target.layers), self.rank).to(ref.device),
                     computes_features=True)

    def stages(self, model, train):
        o = self.options
        lr = o.lr if o.lr is not None else (train.lr if train.lr is not None else 1e-3)
        tk: ToastModule = model.toast
        stages = []
        if o.pretune_epochs > 0:
            stages.append(Stage("pretune", o.pretune_epochs,
                                [ParamGroup("toast.propagate", tk.pretune_parameters(), lr)],
                                frozen_backbone=False, selectable=False,
                                callbacks=[ReconLoss(o.var_weight)]))
        stages.append(Stage(self.name, train.epochs,
                            [ParamGroup("toast", tk.task_parameters(), lr),
                             ParamGroup("head", head_params(model), o.head_lr)],
                            frozen_backbone=False, warmup_epochs=train.warmup_epochs))
        return stages


@register_strategy
class ToastLite(Toast):
    name = "toast-lite"
    description = ("TOAST with low-rank (LoRA) updates of the feedback decoders: the same "
                   "steering at about 1 % trainable parameters")
    options_cls = ToastLiteOptions

    def validate(self) -> None:
        super().validate()
        if self.options.lite_rank < 1:
            raise ConfigError(f"{self.name}: lite_rank must be >= 1, got {self.options.lite_rank}")

    @property
    def rank(self) -> int:  # type: ignore[override]
        return int(self.options.lite_rank)
