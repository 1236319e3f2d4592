"""Heads put on top of a backbone, and the model that joins the two.

A head reads the backbone's feature dict (``pooled`` or ``tokens`` + ``mask``) and returns
logits.  Kinds:

* ``linear``  - dropout + one dense layer on pooled features;
* ``mlp``     - dense -> GELU -> dropout -> dense (one hidden layer of ``hidden`` units);
* ``bilstm``  - a bidirectional LSTM over token vectors, mean- and max-pooled over the
  sequence, then dropout + dense (the classic recipe over frozen word vectors);
* ``auto``    - ``bilstm`` for sequence-only backbones (word vectors), else ``linear``.

Sequence features without ``pooled`` are mean-pooled over the mask for ``linear``/``mlp``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from .errors import ConfigError
from .settings import Settings, setting

HEAD_KINDS = ("auto", "linear", "mlp", "bilstm")
DOMAIN_PARTS = ("norm", "adapter")
#: bottleneck width of a domain adapter
ADAPTER_WIDTH = 64


@dataclass
class HeadConfig(Settings):
    """The head's settings (a section of the run's configuration)."""

    section: ClassVar[str] = "head"

    kind: str = setting("auto", "head on top of the backbone: linear, mlp, bilstm, or auto "
                        "(the strategy's, else bilstm for word vectors, else linear)",
                        flag="--head", choices=HEAD_KINDS, flat="head")
    hidden: int = setting(256, "hidden units of an mlp / bilstm head")
    dropout: float = setting(0.2, "head dropout")
    domain_specific: str | None = setting(None, "weight sharing over several DATA (one domain "
                                          "each): every domain its own normalisation (norm) "
                                          "or residual adapter (adapter) of the pooled "
                                          "features, under the shared backbone and head",
                                          choices=DOMAIN_PARTS)

    def validate(self) -> "HeadConfig":
        if self.kind not in HEAD_KINDS:
            raise ConfigError(f"unknown head {self.kind!r}; choose one of {', '.join(HEAD_KINDS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"head dropout must be in [0, 1), got {self.dropout}")
        if self.hidden < 1:
            raise ConfigError(f"head hidden size must be >= 1, got {self.hidden}")
        if self.domain_specific is not None and self.domain_specific not in DOMAIN_PARTS:
            raise ConfigError(f"unknown --domain-specific {self.domain_specific!r}; choose "
                              + ", ".join(DOMAIN_PARTS))
        return self

    def resolved(self, backbone_output: str) -> "HeadConfig":
        self.validate()
        kind = self.kind
        if kind == "auto":
            kind = "bilstm" if backbone_output == "sequence" else "linear"
        if kind == "bilstm" and backbone_output != "sequence":
            raise ConfigError("head 'bilstm' needs a backbone that yields token vectors "
                              "(wordllama or vectors:FILE)")
        if self.domain_specific is not None and kind == "bilstm":
            raise ConfigError("--domain-specific acts on pooled features; head 'bilstm' reads "
                              "token vectors")
        return HeadConfig(kind=kind, hidden=self.hidden, dropout=self.dropout,
                          domain_specific=self.domain_specific)


class DomainParts(nn.Module):
    """One small part per input domain on the pooled features: ``norm`` standardises each
    domain's features with its own batch statistics and affine scale / shift (domain-specific
    batch normalisation, on the features), ``adapter`` adds a residual bottleneck of its
    own (``x + up(gelu(down(x)))``, ``up`` starting at zero so training starts from the
    shared model)."""

    def __init__(self, kind: str, dim: int, domains: int):
        super().__init__()
        self.kind = kind
        if kind == "norm":
            self.parts = nn.ModuleList(nn.BatchNorm1d(dim) for _ in range(domains))
        else:
            self.parts = nn.ModuleList(nn.Sequential(nn.Linear(dim, ADAPTER_WIDTH), nn.GELU(),
                                                     nn.Linear(ADAPTER_WIDTH, dim))
                                       for _ in range(domains))
            for p in self.parts:
                nn.init.zeros_(p[2].weight)
                nn.init.zeros_(p[2].bias)

    def forward(self, x: torch.Tensor, domains: torch.Tensor | None) -> torch.Tensor:
        if domains is None:
            raise ConfigError("this model keeps a part per input domain: say which domain the "
                              "inputs come from (--domain NAME)")
        out = torch.empty_like(x)
        for d, part in enumerate(self.parts):
            rows = (domains == d).nonzero(as_tuple=True)[0]
            if len(rows) == 0:
                continue
            xs = x[rows]
            if self.kind == "norm" and self.training and len(rows) == 1:
                part.eval()  # one sample has no batch statistics: use the running ones
                y = part(xs)
                part.train()
            else:
                y = part(xs) if self.kind == "norm" else xs + part(xs)
            out = out.index_put((rows,), y)
        return out


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * m).sum(1) / m.sum(1).clamp_min(1.0)


class Head(nn.Module):
    def __init__(self, cfg: HeadConfig, in_dim: int, num_classes: int, domains: int = 0):
        super().__init__()
        self.cfg = cfg
        self.kind = cfg.kind
        self.dropout = nn.Dropout(cfg.dropout)
        #: the domain-specific parts (weight sharing), or None
        self.domain = (DomainParts(cfg.domain_specific, in_dim, domains)
                       if cfg.domain_specific is not None else None)
        if cfg.kind == "linear":
            self.fc = nn.Linear(in_dim, num_classes)
        elif cfg.kind == "mlp":
            self.hidden = nn.Linear(in_dim, cfg.hidden)
            self.act = nn.GELU()
            self.fc = nn.Linear(cfg.hidden, num_classes)
        elif cfg.kind == "bilstm":
            self.lstm = nn.LSTM(in_dim, cfg.hidden, batch_first=True, bidirectional=True)
            self.fc = nn.Linear(4 * cfg.hidden, num_classes)
        else:  # pragma: no cover - resolved() guards this
            raise ConfigError(f"unknown head {cfg.kind!r}")

    def forward(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fc(self.dropout(self.embed(feats)))

    def embed(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        """The representation the final dense layer reads (before its dropout): the pooled
        features for ``linear``, the hidden layer for ``mlp``, the pooled LSTM states for
        ``bilstm``.  Domain-adaptation losses act on it."""
        if self.kind == "bilstm":
            tokens, mask = feats["tokens"], feats["mask"].bool()
            lengths = mask.sum(1).clamp_min(1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(tokens, lengths, batch_first=True,
                                                       enforce_sorted=False)
            out, _ = self.lstm(packed)
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                      total_length=tokens.shape[1])
            m = mask[:, : out.shape[1]]
            mean = masked_mean(out, m)
            mx = out.masked_fill(~m.unsqueeze(-1), float("-inf")).amax(1)
            mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
            return torch.cat([mean, mx], dim=1)
        x = feats.get("pooled")
        if x is None:
            x = masked_mean(feats["tokens"], feats["mask"])
        if self.domain is not None:
            x = self.domain(x, feats.get("domain"))
        if self.kind == "mlp":
            x = self.act(self.hidden(self.dropout(x)))
        return x

    @property
    def embed_dim(self) -> int:
        return self.fc.in_features

    @property
    def reads(self) -> str:
        """``"tokens"`` when the head reads token vectors (``bilstm``), else ``"pooled"``."""
        return "tokens" if self.kind == "bilstm" else "pooled"

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        """Logits from the representation :meth:`embed` gave (dropout acts in training)."""
        return self.fc(self.dropout(z))

    def set_linear(self, weight, bias) -> None:
        """Set the final dense layer (``(K, d)`` weight, ``(K,)`` bias), e.g. to a classifier
        fitted in closed form."""
        fc = self.fc
        with torch.no_grad():
            fc.weight.copy_(torch.as_tensor(weight).to(fc.weight.dtype))
            fc.bias.copy_(torch.as_tensor(bias).to(fc.bias.dtype))


class TransferModel(nn.Module):
    """A backbone and a head; ``forward(batch) -> logits``.

    A strategy may :meth:`attach` modules of its own (adapters' companions, prompts, a
    domain discriminator, a top-down module): they are ordinary submodules, so their tensors
    are in ``state_dict`` and in the bundle.  One attached module may compute the features in
    place of the backbone (``computes_features=True``: its ``features(model, batch)`` is
    called, e.g. TOAST's steered second pass or prompt tokens fed through the encoder).
    """

    RESERVED = ("backbone", "head")

    def __init__(self, backbone, head: Head, classes: list[str],
                 tasks: list[tuple[str, int]] | None = None, domains: list[str] | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.classes = list(classes)
        #: several tasks: ``[(name, number of classes), ...]``, each owning the next block
        #: of ``classes`` and of the head's outputs (transferkit.engine.tasks); None: one task
        self.tasks = [(str(n), int(k)) for n, k in tasks] if tasks else None
        if self.tasks and sum(k for _, k in self.tasks) != len(self.classes):
            raise ConfigError(f"tasks {self.tasks} do not cover the {len(self.classes)} classes")
        #: the input domains of a model with domain-specific parts (in their index order)
        self.domains = list(domains) if domains else None
        #: name of the attached module that computes the features, if any
        self.feature_module: str | None = None

    def attach(self, name: str, module: nn.Module, *, computes_features: bool = False) -> nn.Module:
        if name in self.RESERVED or not name.isidentifier():
            raise ConfigError(f"cannot attach a module named {name!r}")
        self.add_module(name, module)
        if computes_features:
            if not callable(getattr(module, "features", None)):
                raise ConfigError(f"module {name!r} computes features but has no features()")
            self.feature_module = name
        return module

    def attached(self, name: str) -> nn.Module | None:
        """The module attached under ``name``, or ``None``."""
        return self._modules.get(name) if name not in self.RESERVED else None

    def features(self, batch: Any) -> dict[str, torch.Tensor]:
        if self.feature_module is not None:
            return self._modules[self.feature_module].features(self, batch)
        return self.backbone(batch)

    @property
    def features_fixed(self) -> bool:
        """Whether what the head reads is a function of the backbone's pooled output alone,
        so that it can be computed once and cached (no attached feature module, no head
        reading token vectors)."""
        return self.feature_module is None and self.head.reads == "pooled"

    def forward(self, batch: Any, domains: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of ``batch``; ``domains``: each input's domain index, for a model with
        domain-specific parts."""
        feats = self.features(batch)
        if domains is not None:
            feats = {**feats, "domain": domains}
        return self.head(feats)


def build_model(backbone, head_cfg: HeadConfig, classes: list[str],
                tasks: list[tuple[str, int]] | None = None,
                domains: list[str] | None = None) -> TransferModel:
    cfg = head_cfg.resolved(backbone.output)
    if cfg.domain_specific is not None and not domains:
        raise ConfigError("--domain-specific needs several DATA (one input domain each)")
    head = Head(cfg, backbone.feature_dim, len(classes), len(domains or []))
    return TransferModel(backbone, head, classes, tasks, domains if cfg.domain_specific else None)


def count_parameters(module: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return trainable, total
