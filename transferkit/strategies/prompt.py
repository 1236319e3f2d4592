"""``prompt``: learnable prompt tokens on a frozen transformer (VPT for ViTs, deep prompts for text).

The backbone's own tensors never change; what trains is a few prompt vectors and the head.

Vision Transformers (timm ``VisionTransformer``), visual prompt tuning (Jia et al. 2022, VPT):

* ``depth=shallow``: ``tokens`` learnable vectors are inserted after the class token (and any
  register / distillation tokens), before the patch tokens, at the input of the first block;
* ``depth=deep``: every block gets its own set; before block ``i > 0`` the outputs at the
  prompt positions of block ``i - 1`` are discarded and replaced by block ``i``'s prompts.

The features run timm's own pieces in timm's order (``patch_embed``, ``_pos_embed``,
``patch_drop``, ``norm_pre``, ``blocks``, ``norm``); the prompt positions are removed before
``forward_head(pre_logits=True)``, so the pooling is exactly timm's over the original tokens
("token" = the class token, "avg" = the mean of the patch tokens, an attention pool over them).

BERT-style text encoders (``BertModel``, ``RobertaModel``, ...), deep prompt tuning in the
manner of P-tuning v2 (Liu et al. 2022): ``tokens`` vectors are prepended to the hidden states
at the input of every layer (``deep``) or of the first one only (``shallow``), the attention
mask extended to cover them; the model's ``embeddings`` and each ``encoder.layer[i]`` are run
directly.  Prompt outputs are dropped after the last layer and the sentence vector is pooled
over the real tokens only, as the backbone pools (mean over the mask, or CLS).  Prompts enter
every layer as extra keys and values of the attention, which is what P-tuning v2's prefix
key/values do; here they are hidden-state vectors, so one vector per prompt and layer.

Options

* ``depth``: ``auto`` (default: ``shallow`` for ViTs, ``deep`` for text encoders, where
  prompts at the input alone are known to be weak on small models), ``shallow`` or ``deep``;
* ``tokens``: prompt vectors per layer (default 10; at least 1);
* ``lr``: learning rate of the prompts.  Default: the run's ``--lr`` when given, else 5e-3.
  Prompts are few and start near zero, so they take a larger step than weights do
  (P-tuning v2 trained its prompts with AdamW at 5e-3 to 1e-2);
* ``head_lr``: learning rate of the head (default 1e-3);
* ``dropout``: dropout on the prompt vectors (default 0.0, as VPT).

Prompts are initialised uniformly in ``[-v, v]`` under a fixed seed (the same prompts for every
run), with VPT's Xavier bound ``v = sqrt(6 / (3 * patch_h * patch_w + D))`` for ViTs and
``v = sqrt(6 / (2 * D))`` for text encoders.  They live on the model as ``model.prompts``
(tensor ``prompts.tokens``, shape ``(layers, tokens, D)``), so bundles save them and
``attach`` re-creates the module on load.  The backbone runs in the trainer's train mode
(its own dropout, if any, active, as in P-tuning v2); it has no BatchNorm to disturb.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..backbones import Backbone
from ..errors import ConfigError
from .base import Options, ParamGroup, Stage, Strategy, head_params, register_strategy

DEPTHS = ("auto", "shallow", "deep")
DEFAULT_PROMPT_LR = 5e-3
#: seed of the prompt initialisation (a fixed one: prompts start the same in every run)
PROMPT_INIT_SEED = 0
#: encoder families whose ``embeddings`` / ``encoder.layer[i](hidden, mask)`` are run directly
TEXT_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "camembert")


@dataclass
class PromptOptions(Options):
    depth: str = "auto"
    tokens: int = 10
    lr: float | None = None
    head_lr: float = 1e-3
    dropout: float = 0.0


class PromptTokens(nn.Module):
    """``layers`` sets of ``n_tokens`` learnable vectors of size ``dim``.

    ``kind`` is ``"vit"`` (prompts sit after the ``prefix`` class/register tokens) or
    ``"text"`` (prompts come first).  ``deep`` is true when every layer has its own set.
    """

    def __init__(self, kind: str, layers: int, n_tokens: int, dim: int, init_bound: float,
                 dropout: float, prefix: int = 0, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.kind = kind
        self.n_tokens = int(n_tokens)
        self.prefix = int(prefix)
        self.tokens = nn.Parameter(torch.empty(layers, n_tokens, dim, dtype=dtype))
        gen = torch.Generator().manual_seed(PROMPT_INIT_SEED)
        with torch.no_grad():
            nn.init.uniform_(self.tokens, -init_bound, init_bound, generator=gen)
        self.dropout = nn.Dropout(dropout)

    @property
    def deep(self) -> bool:
        return self.tokens.shape[0] > 1

    @property
    def layers(self) -> int:
        return int(self.tokens.shape[0])

    def forward(self, layer: int, batch: int) -> torch.Tensor:
        """Prompts of ``layer`` expanded to ``(batch, n_tokens, dim)``."""
        return self.dropout(self.tokens[layer].unsqueeze(0).expand(batch, -1, -1))

    def features(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        """The model's features: the backbone run with these prompt tokens inserted."""
        return (_vit_features if self.kind == "vit" else _text_features)(model, batch)


# --------------------------------------------------------------------------- backbones

def vit_of(backbone: Backbone) -> Any | None:
    """The timm ``VisionTransformer`` inside ``backbone``, or None."""
    return backbone.network if backbone.family == "vit" else None


def text_encoder_of(backbone: Backbone) -> Any | None:
    """The BERT-style encoder inside a text backbone, or None."""
    if backbone.family != "text-encoder":
        return None
    model = backbone.network
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) not in TEXT_MODEL_TYPES:
        return None
    if getattr(config, "is_decoder", False):
        return None
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if not isinstance(getattr(model, "embeddings", None), nn.Module) or \
            not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        return None
    return model


def _vit_features(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    vit = model.backbone.network
    prompts: PromptTokens = model.prompts
    p, n = vit.num_prefix_tokens, prompts.n_tokens
    h = vit.patch_embed(x)
    h = vit._pos_embed(h)
    h = vit.patch_drop(h)
    h = vit.norm_pre(h)
    b = h.shape[0]
    h = torch.cat([h[:, :p], prompts(0, b).to(h.dtype), h[:, p:]], dim=1)
    for i, block in enumerate(vit.blocks):
        if i > 0 and i < prompts.layers:
            h = torch.cat([h[:, :p], prompts(i, b).to(h.dtype), h[:, p + n:]], dim=1)
        h = block(h)
    h = vit.norm(h)
    h = torch.cat([h[:, :p], h[:, p + n:]], dim=1)  # pool over the original tokens only
    return {"pooled": vit.forward_head(h, pre_logits=True)}


def _text_features(model, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from transformers.masking_utils import create_bidirectional_mask

    bb = model.backbone
    enc = bb.network
    prompts: PromptTokens = model.prompts
    device = enc.get_input_embeddings().weight.device
    ids = batch["input_ids"].to(device)
    mask = batch.get("attention_mask")
    mask = torch.ones_like(ids) if mask is None else mask.to(device)
    if ids.shape[0] == 0:
        return bb(batch)
    token_types = batch.get("token_type_ids")
    kw = {"token_type_ids": token_types.to(device)} if token_types is not None else {}
    h = enc.embeddings(input_ids=ids, **kw)
    b, n = ids.shape[0], prompts.n_tokens
    full_mask = torch.cat([torch.ones((b, n), dtype=mask.dtype, device=device), mask], dim=1)
    h = torch.cat([prompts(0, b).to(h.dtype), h], dim=1)
    attn_mask = create_bidirectional_mask(config=enc.config, inputs_embeds=h,
                                          attention_mask=full_mask)
    for i, layer in enumerate(enc.encoder.layer):
        if i > 0 and i < prompts.layers:
            h = torch.cat([prompts(i, b).to(h.dtype), h[:, n:]], dim=1)
        h = layer(h, attn_mask)
        if isinstance(h, (tuple, list)):
            h = h[0]
    tokens = h[:, n:]
    m = mask.bool()
    return {"pooled": bb.pool_tokens(tokens, m), "tokens": tokens, "mask": m}


# --------------------------------------------------------------------------- the strategy

@register_strategy
class Prompt(Strategy):
    name = "prompt"
    description = ("learnable prompt tokens on a frozen transformer: VPT (shallow/deep) for "
                   "ViTs, deep prompts (P-tuning v2 style) for BERT-style text encoders")
    options_cls = PromptOptions
    trains_backbone = "none"

    def validate(self) -> None:
        o = self.options
        if o.depth not in DEPTHS:
            raise ConfigError(f"prompt: depth must be one of {', '.join(DEPTHS)}, got {o.depth!r}")
        if not isinstance(o.tokens, int) or isinstance(o.tokens, bool) or o.tokens < 1:
            raise ConfigError(f"prompt: tokens must be an integer >= 1, got {o.tokens!r}")
        self.require_positive("lr", "head_lr")
        if not 0.0 <= o.dropout < 1.0:
            raise ConfigError(f"prompt: dropout must be in [0, 1), got {o.dropout}")

    def check_backbone(self, backbone) -> None:
        if vit_of(backbone) is not None or text_encoder_of(backbone) is not None:
            return
        name = getattr(backbone, "name", "?")
        raise ConfigError(f"strategy 'prompt' needs a Vision Transformer (timm VisionTransformer) "
                          f"or a BERT-style text encoder; backbone {name!r} is neither")

    def depth_for(self, backbone) -> str:
        d = self.options.depth
        if d == "auto":
            return "shallow" if vit_of(backbone) is not None else "deep"
        return d

    def attach(self, model: nn.Module) -> None:
        bb = model.backbone
        self.check_backbone(bb)
        deep = self.depth_for(bb) == "deep"
        n = self.options.tokens
        vit = vit_of(bb)
        if vit is not None:
            dim = int(vit.embed_dim)
            layers = len(vit.blocks) if deep else 1
            ph, pw = vit.patch_embed.patch_size
            chans = int(getattr(getattr(vit.patch_embed, "proj", None), "in_channels", 3))
            bound = math.sqrt(6.0 / float(chans * ph * pw + dim))
            kind, prefix = "vit", int(vit.num_prefix_tokens)
            dtype = vit.cls_token.dtype if vit.cls_token is not None else torch.float32
        else:
            enc = text_encoder_of(bb)
            dim = int(enc.config.hidden_size)
            layers = len(enc.encoder.layer) if deep else 1
            bound = math.sqrt(6.0 / float(2 * dim))
            kind, prefix = "text", 0
            dtype = enc.get_input_embeddings().weight.dtype
        old = model.attached("prompts")
        if not (isinstance(old, PromptTokens) and tuple(old.tokens.shape) == (layers, n, dim)
                and old.kind == kind):
            device = next(bb.parameters()).device
            old = PromptTokens(kind, layers, n, dim, bound, self.options.dropout,
                               prefix=prefix, dtype=dtype).to(device)
        model.attach("prompts", old, computes_features=True)

    def stages(self, model, train):
        o = self.options
        lr = o.lr if o.lr is not None else (train.lr if train.lr is not None else DEFAULT_PROMPT_LR)
        groups = [ParamGroup("prompts", list(model.prompts.parameters()), lr),
                  ParamGroup("head", head_params(model), o.head_lr)]
        return [Stage("prompt", train.epochs, groups, frozen_backbone=False, train_bn=False,
                      warmup_epochs=train.warmup_epochs)]
