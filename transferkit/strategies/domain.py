"""Domain adaptation: train on a labelled source domain, predict on an unlabelled target.

Deep strategies (the representation and the classifier train together, over two stages:
``source``, plain source-only training that gives the "before" picture, then ``adapt``,
where every source batch comes with an unlabelled target batch and a loss term that pulls
the two domains together in the representation the classifier's last layer reads):

* ``source-only``  the baseline: the same model and epochs, no target data in training;
* ``dann``         domain-adversarial training (Ganin & Lempitsky 2015): a domain
                   discriminator behind a gradient-reversal layer, lambda = 2/(1+exp(-10p))-1;
* ``mmd``          multi-kernel MMD between the domains' representations (DAN, Long 2015);
* ``coral``        Deep CORAL (Sun & Saenko 2016): the distance of the covariances;
* ``cdan``         conditional adversarial (Long et al. 2018): the discriminator reads the
                   outer product of representation and prediction, with entropy weights
                   (CDAN+E) by default.

On a pretrained backbone the backbone stays frozen by default (its features are cached and
the adaptation happens in the MLP head's hidden layer, the "bottleneck"); ``tune_backbone``
lets it train.  A backbone that is not pretrained (``digits-cnn``) always trains.

Strategies on frozen features and instance strategies live in ``domain_features.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .base import (Options, ParamGroup, Stage, Strategy, default_backbone_lr, head_params,
                   register_strategy)
from ..domain import (DomainDiscriminator, cdan_features, coral_loss, dann_lambda,
                      domain_adversarial_loss, entropy, grad_reverse, mk_mmd)
from ..errors import ConfigError
from ..events import Callback


@dataclass
class DeepOptions(Options):
    #: epochs of source-only training before adaptation (the "before" picture)
    source_epochs: int = 3
    #: train the backbone too (default: only when it is not pretrained)
    tune_backbone: bool | None = None
    backbone_lr: float | None = None
    head_lr: float = 1e-3
    #: weight of the domain loss term
    weight: float = 1.0


def _tunes_backbone(opts, model) -> bool:
    if not model.backbone.pretrained:
        return True
    return bool(opts.tune_backbone)


def _backbone_lr(opts, model, train) -> float:
    if opts.backbone_lr is not None:
        return opts.backbone_lr
    if not model.backbone.pretrained:
        return train.lr if train.lr is not None else 1e-3
    return train.lr if train.lr is not None else default_backbone_lr(model)


def source_stage(name: str, epochs: int, opts, model, train, extra=(), *,
                 selectable: bool = True, snapshot: str | None = None) -> Stage:
    """One stage that trains the head (and the backbone when it tunes) on the source.
    ``selectable=False`` for a warm-up before adaptation: its epochs are not candidates,
    the method's choice is among adapted models.  ``snapshot="before"`` keeps the
    representation at the end of the stage: the "before adaptation" picture."""
    tune = _tunes_backbone(opts, model)
    groups = []
    if tune:
        groups.append(ParamGroup("backbone", [p for g in model.backbone.layer_groups() for p in g],
                                 _backbone_lr(opts, model, train)))
    groups.append(ParamGroup("head", head_params(model), opts.head_lr))
    groups.extend(extra)
    return Stage(name, epochs, groups, frozen_backbone=not tune, train_bn=tune,
                 warmup_epochs=train.warmup_epochs if name == "source" else 0.0,
                 selectable=selectable, snapshot=snapshot)


class TargetStream(Callback):
    """Puts an unlabelled target batch beside every source batch (forwarded with it) and
    adds the strategy's domain loss on the two representations."""

    def __init__(self, strategy: "DomainStrategy"):
        self.strategy = strategy
        self._batches = None

    def on_epoch_start(self, state) -> None:
        self._batches = state.stream("target")

    def on_batch_start(self, state, batch) -> None:
        batch.streams["target"] = next(self._batches)

    def on_batch(self, state, batch):
        source = {"embed": batch.embed, "logits": batch.logits, "labels": batch.labels}
        return self.strategy.domain_terms(state.model, source, batch.outputs["target"],
                                          batch.progress)


class DomainStrategy(Strategy):
    """What every domain-adaptation strategy shares: it needs pooled features, and the end
    of its ``source`` stage is the "before" picture of the run."""

    uses_target = True

    def check_backbone(self, backbone) -> None:
        if backbone.output != "pooled":
            raise ConfigError(f"{self.name}: needs a backbone with pooled features; "
                              f"{backbone.name!r} gives token vectors only")

    def domain_terms(self, model: nn.Module, source: dict[str, torch.Tensor],
                     target: dict[str, torch.Tensor], progress: float) -> dict[str, torch.Tensor]:
        """Loss terms of the adaptation stage.  ``source`` holds ``embed`` (what the
        classifier's last layer reads), ``logits`` and ``labels``; ``target`` holds ``embed``
        and ``logits``; ``progress`` runs from 0 to 1 over the stage."""
        return {}


class _Deep(DomainStrategy):
    options_cls: ClassVar[type[Options]] = DeepOptions
    default_head = "mlp"

    #: "none" on a pretrained backbone by default; ``tune_backbone=true`` and backbones that
    #: are not pretrained (``digits-cnn``) train it all
    trains_backbone = "none"

    def validate(self) -> None:
        o = self.options
        if o.source_epochs < 0:
            raise ConfigError(f"{self.name}: source_epochs must be >= 0, got {o.source_epochs}")
        self.require_positive("head_lr", "backbone_lr")
        if o.weight < 0:
            raise ConfigError(f"{self.name}: weight must be >= 0, got {o.weight}")

    def adapt_modules(self, model) -> list[nn.Parameter]:
        return []

    def stages(self, model, train):
        o = self.options
        out = []
        if o.source_epochs > 0:
            out.append(source_stage("source", o.source_epochs, o, model, train, selectable=False,
                                    snapshot="before"))
        extra = self.adapt_modules(model)
        st = source_stage("adapt", train.epochs, o, model, train,
                          [ParamGroup("domain", extra, o.head_lr)] if extra else ())
        st.callbacks.append(TargetStream(self))
        out.append(st)
        return out


@register_strategy
class SourceOnly(_Deep):
    name = "source-only"
    description = ("baseline for domain adaptation: the same model trained on the source only "
                   "(source_epochs + epochs); the target is only scored")
    uses_target = False

    def stages(self, model, train):
        o = self.options
        return [source_stage("source", o.source_epochs + train.epochs, o, model, train)]


@dataclass
class DannOptions(DeepOptions):
    disc_hidden: int = 256
    gamma: float = 10.0


@register_strategy
class Dann(_Deep):
    name = "dann"
    description = ("domain-adversarial training: a domain discriminator behind a gradient-"
                   "reversal layer (Ganin & Lempitsky 2015)")
    options_cls = DannOptions

    def validate(self) -> None:
        super().validate()
        self.require_positive("disc_hidden", "gamma")

    def disc_input(self, model) -> int:
        return model.head.embed_dim

    def attach(self, model) -> None:
        if model.attached("domain_disc") is None:
            model.attach("domain_disc", DomainDiscriminator(self.disc_input(model),
                                                            hidden=self.options.disc_hidden))

    def adapt_modules(self, model):
        return list(model.domain_disc.parameters())

    def disc_features(self, side):
        return side["embed"]

    def domain_terms(self, model, source, target, progress):
        lam = dann_lambda(progress, self.options.gamma)
        loss = domain_adversarial_loss(model.domain_disc, self.disc_features(source),
                                       self.disc_features(target), lam)
        return {"domain": self.options.weight * loss}


@dataclass
class CdanOptions(DannOptions):
    #: weight samples by prediction certainty, 1 + exp(-entropy) (CDAN+E)
    entropy: bool = True


@register_strategy
class Cdan(Dann):
    name = "cdan"
    description = ("conditional domain-adversarial training on representation x prediction, "
                   "with entropy weights (CDAN+E, Long et al. 2018)")
    options_cls = CdanOptions

    def disc_input(self, model) -> int:
        return model.head.embed_dim * len(model.classes)

    def disc_features(self, side):
        probs = torch.softmax(side["logits"], 1).detach()
        return cdan_features(side["embed"], probs)

    def domain_terms(self, model, source, target, progress):
        lam = dann_lambda(progress, self.options.gamma)
        f_s, f_t = self.disc_features(source), self.disc_features(target)
        d_s = model.domain_disc(grad_reverse(f_s, lam))
        d_t = model.domain_disc(grad_reverse(f_t, lam))
        if self.options.entropy:
            # certainty weights 1 + exp(-H), normalised to mean 1 within each domain
            w_s = 1.0 + torch.exp(-entropy(source["logits"].detach()))
            w_t = 1.0 + torch.exp(-entropy(target["logits"].detach()))
            w_s, w_t = w_s / w_s.mean(), w_t / w_t.mean()
        else:
            w_s = torch.ones(len(d_s), device=d_s.device)
            w_t = torch.ones(len(d_t), device=d_t.device)
        bce = nn.functional.binary_cross_entropy_with_logits
        loss = 0.5 * (bce(d_s, torch.ones_like(d_s), weight=w_s)
                      + bce(d_t, torch.zeros_like(d_t), weight=w_t))
        return {"domain": self.options.weight * loss}


@register_strategy
class Mmd(_Deep):
    name = "mmd"
    description = "multi-kernel MMD between source and target representations (DAN, Long et al. 2015)"

    def domain_terms(self, model, source, target, progress):
        return {"mmd": self.options.weight * mk_mmd(source["embed"], target["embed"])}


@register_strategy
class Coral(_Deep):
    name = "coral"
    description = "Deep CORAL: match the covariances of source and target representations"

    def domain_terms(self, model, source, target, progress):
        return {"coral": self.options.weight * coral_loss(source["embed"], target["embed"])}
