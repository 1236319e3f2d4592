"""``zeroshot``: a classifier from the class names alone; no labelled training at all.

Text: a class is the mean embedding of its descriptions (``--descriptions FILE``: JSON,
class -> description(s), ``{label}`` templates; else the class name), and an input goes to
the class whose embedding is nearest by cosine.  With ``-o centre=true`` the mean of the
unlabelled inputs (the training split) is subtracted from an input first.  With ``-o self_train=true`` the class
embeddings are re-centred on the unlabelled inputs (the training split, its labels never
read): each round assigns every input to its nearest class and moves each class embedding
to the mean of its most confident inputs (a transductive step; the descriptions' embedding
stays as one of the members, so a class cannot drift away from what it was named for).

Images, with no image-text model: the ImageNet-1k head of the backbone gives source-class
probabilities ``p`` (the top ``top`` of them kept and renormalised), and a dense layer maps
them to the classes (``model.head``, reading a 1000-d input):

* ``direct``: a class named like an ImageNet class (its WordNet lemmas: ``ant``, ``bee``,
  ``hotdog``), or naming a group of them (``cat``: the domestic cat breeds; ``dog``: the dog
  breeds), scores the probability mass of those classes;
* ``conse`` (Norouzi et al. 2014, "Zero-shot learning by convex combination of semantic
  embeddings"): the input's embedding is the probability-weighted combination of the
  sentence embeddings of the top ImageNet class names, and a class scores its cosine with
  the class's own embedding (up to the input's norm, a factor shared by every class: a
  dense layer over ``p`` whose weights are the cosines between class and ImageNet names);
* ``auto``: ``direct`` when every class has a match, else ``conse`` (a matched class's
  embedding is then the mean of its matched ImageNet classes' embeddings).

Labels of the data are never read, except to name the classes and, by the engine, to score.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..backbones.base import build_backbone
from ..errors import ConfigError
from ..heads import Head
from ..io import write_json
from .base import Options, Solution, Stage, Strategy, register_strategy

MAPPINGS = ("auto", "direct", "conse")
#: the sentence encoder that embeds class names for ConSE (offline, all-MiniLM-L6-v2)
ENCODER = "minilm"
SOURCE_CLASSES = 1000


@dataclass
class ZeroShotOptions(Options):
    #: logits are about ``scale`` times the cosine similarities (probabilities' sharpness)
    scale: float = 20.0
    #: text: subtract the mean of the unlabelled inputs (the training split) before the
    #: cosine (a transductive step; no label read)
    centre: bool = False
    #: text: re-centre the class embeddings on the unlabelled inputs (the training split)
    self_train: bool = False
    #: text, self-training: rounds of assigning inputs and re-centring
    rounds: int = 3
    #: text, self-training: share of each class's inputs (the most confident) it is
    #: re-centred on
    keep: float = 1.0
    #: images: how classes map to ImageNet classes: auto, direct, conse
    mapping: str = "auto"
    #: images: how many of the top ImageNet classes an image's embedding combines (ConSE's T)
    top: int = 10


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def class_embeddings(text_embeddings: list[np.ndarray]) -> np.ndarray:
    """``(K, d)``: per class, the unit mean of its descriptions' unit embeddings."""
    return unit(np.stack([unit(e).mean(0) for e in text_embeddings]))


def self_train(protos: np.ndarray, x: np.ndarray, rounds: int, keep: float) -> np.ndarray:
    """Class embeddings re-centred on unlabelled inputs ``x`` ``(N, d)``: each round, every
    input goes to its nearest class by cosine; a class moves to the unit mean of its
    ``keep`` most confident inputs (by the margin of its cosine over the runner-up's) and
    its initial embedding.  Returns unit ``(K, d)`` embeddings."""
    start = unit(protos)
    z = unit(x)
    current = start
    for _ in range(rounds):
        cos = z @ current.T
        pred = cos.argmax(1)
        top2 = np.sort(cos, axis=1)[:, -2:] if cos.shape[1] > 1 else np.c_[cos * 0, cos]
        margin = top2[:, 1] - top2[:, 0]
        new = []
        for c in range(len(start)):
            members = np.flatnonzero(pred == c)
            n = max(1, int(round(keep * len(members)))) if len(members) else 0
            chosen = members[np.argsort(-margin[members])[:n]]
            new.append(unit(np.vstack([z[chosen], start[c][None]]).mean(0)))
        current = np.stack(new)
    return current


def text_head(protos: np.ndarray, radius: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The cosine rule over unit class embeddings as a dense layer: logits are ``scale``
    times the cosines for inputs of norm ``radius``."""
    return unit(protos) * (scale / max(radius, 1e-12)), np.zeros(len(protos))


def direct_map(matches: list[list[int]], n_source: int = SOURCE_CLASSES) -> np.ndarray:
    """``(K, n_source)``: 1 where a class owns a source class."""
    m = np.zeros((len(matches), n_source))
    for c, idx in enumerate(matches):
        m[c, idx] = 1.0
    return m


def conse_map(class_emb: np.ndarray, source_emb: np.ndarray) -> np.ndarray:
    """``(K, n_source)``: cosines between each class's and each source class's embedding.
    Over renormalised top-T probabilities ``p``, ``p @ map.T`` is the ConSE score: the
    cosine of ``sum_t p_t e_t`` with the class embedding times that sum's norm."""
    return unit(class_emb) @ unit(source_emb).T


def top_probabilities(p: torch.Tensor, top: int) -> torch.Tensor:
    """``p`` with all but each row's ``top`` largest entries set to 0, renormalised."""
    k = min(int(top), p.shape[-1])
    vals, idx = p.topk(k, dim=-1)
    out = torch.zeros_like(p).scatter_(-1, idx, vals)
    return out / out.sum(-1, keepdim=True).clamp_min(1e-12)


class SourceProbabilities(nn.Module):
    """Computes the features the head reads for zero-shot images: the backbone's top-T
    ImageNet probabilities, renormalised (no tensors of its own: the source head is the
    backbone's)."""

    def __init__(self, top: int):
        super().__init__()
        self.top = int(top)

    def features(self, model, batch) -> dict[str, torch.Tensor]:
        pooled = model.backbone(batch)["pooled"]
        head = model.backbone.source_head()
        p = torch.softmax(head(pooled.to(next(head.parameters()).dtype)).float(), dim=-1)
        return {"pooled": top_probabilities(p, self.top)}


def embed_texts(backbone, head, texts: list[str], batch: int = 64) -> np.ndarray:
    """``(N, d)`` pooled embeddings of ``texts`` as the head reads them."""
    out = []
    backbone.eval()
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            feats = backbone(backbone.tokenize(texts[i:i + batch]))
            out.append(head.embed(feats).float().cpu().numpy() if head is not None
                       else feats["pooled"].float().cpu().numpy())
    return np.concatenate(out).astype(np.float64)


@register_strategy
class ZeroShot(Strategy):
    name = "zeroshot"
    description = ("no labelled training: classes from their names or descriptions (text: "
                   "embedding similarity, optional self-training; images: ImageNet head "
                   "mapped by WordNet names / ConSE)")
    options_cls = ZeroShotOptions
    default_head = "linear"
    uses_class_texts = True
    needs_data = False

    def validate(self) -> None:
        self.require_positive("scale", "top", "keep")
        o = self.options
        if o.mapping not in MAPPINGS:
            raise ConfigError(f"{self.name}: mapping must be one of {', '.join(MAPPINGS)}, got "
                              f"{o.mapping!r}")
        if o.rounds < 0 or o.keep > 1:
            raise ConfigError(f"{self.name}: rounds must be >= 0 and keep in (0, 1]")

    def check_backbone(self, backbone) -> None:
        if backbone.modality == "image" and backbone.source_classes() is None:
            raise ConfigError(f"{self.name}: backbone {backbone.name!r} has no ImageNet-1k "
                              "classifier with named classes (zero-shot images need one, e.g. "
                              "efficientnet_lite0)")

    def attach(self, model) -> None:
        if model.backbone.modality == "image":
            if model.attached("zeroshot") is None:
                model.attach("zeroshot", SourceProbabilities(self.options.top),
                             computes_features=True)
            if model.head.embed_dim != SOURCE_CLASSES:  # the head reads the probabilities
                model.head = Head(model.head.cfg, SOURCE_CLASSES, len(model.classes))
        elif not hasattr(model.head, "class_embeddings"):
            model.head.register_buffer("class_embeddings",
                                       torch.zeros(len(model.classes), model.head.embed_dim))

    def stages(self, model, train):
        return [Stage("zero-shot", 0, [], frozen_backbone=True, solve=self.solve)]

    def texts(self, model) -> dict[str, list[str]]:
        given = self.class_texts or {}
        return {c: given.get(c) or [c.replace("_", " ")] for c in model.classes}

    def solve(self, state) -> Solution:
        model = state.model
        unlabelled = None
        o = self.options
        if model.backbone.modality == "text" and (o.self_train or o.centre) and state.has("train"):
            # the training split's inputs, their labels never read
            unlabelled = state.features("train").double().numpy()
        w, b, info = self.head_weights(model, unlabelled)
        return Solution([("class descriptions", lambda m: m.head.set_linear(w, b))], info)

    def fit_without_data(self, model):
        w, b, info = self.head_weights(model)
        model.head.set_linear(w, b)
        return info

    def head_weights(self, model, unlabelled=None):
        """``(weight, bias, info)`` of the head: the whole fit, usable without any data."""
        if model.head.kind != "linear":
            raise ConfigError("zeroshot needs a linear head (head kind 'linear')")
        if model.backbone.modality == "image":
            return self._image_weights(model)
        return self._text_weights(model, unlabelled)

    def _text_weights(self, model, unlabelled):
        o, texts = self.options, self.texts(model)
        embs = [embed_texts(model.backbone, model.head, t) for t in texts.values()]
        protos = class_embeddings(embs)
        if hasattr(model.head, "class_embeddings"):  # attached: kept in the bundle
            with torch.no_grad():
                model.head.class_embeddings.copy_(torch.as_tensor(protos))
        radius = float(np.mean([np.linalg.norm(e, axis=1).mean() for e in embs]))
        info = {"descriptions": texts, "metric": "cosine", "self_train": False,
                "centre": False}
        has_pool = unlabelled is not None and len(unlabelled) > 0
        centre = np.zeros(protos.shape[1])
        if o.centre and has_pool:
            centre = unlabelled.mean(0)
            radius = float(np.linalg.norm(unlabelled - centre, axis=1).mean())
            info.update(centre=True, unlabelled_used=len(unlabelled))
        if o.self_train and has_pool and o.rounds:
            protos = self_train(protos, unlabelled - centre, o.rounds, o.keep)
            radius = float(np.linalg.norm(unlabelled - centre, axis=1).mean())
            info.update(self_train=True, unlabelled_used=len(unlabelled), rounds=o.rounds,
                        keep=o.keep)
        w, b = text_head(protos, radius, o.scale)
        return w, b - w @ centre, info

    def _image_weights(self, model):
        o, texts = self.options, self.texts(model)
        source = model.backbone.source_classes()
        matches = [model.backbone.source_matches(c) for c in model.classes]
        mapping = o.mapping
        if mapping == "auto":
            mapping = "direct" if all(matches) else "conse"
        if mapping == "direct" and not all(matches):
            c = model.classes[[i for i, m in enumerate(matches) if not m][0]]
            raise ConfigError(f"zeroshot -o mapping=direct: class {c!r} names no ImageNet "
                              "class (use mapping=conse or auto)")
        info = {"descriptions": texts, "mapping": mapping, "top": o.top,
                "matched": {c: [source[i].names[0] for i in m]
                            for c, m in zip(model.classes, matches)}}
        if mapping == "direct":
            return o.scale * direct_map(matches), np.zeros(len(matches)), info
        enc = build_backbone(ENCODER)
        src = embed_texts(enc, None, [", ".join(s.names) for s in source])
        embs = []
        for c, m in zip(model.classes, matches):
            own = unit(embed_texts(enc, None, texts[c])).mean(0)
            embs.append(unit(src[m]).mean(0) if m else own)
        self.embeddings = np.stack(embs)
        return o.scale * conse_map(self.embeddings, src), np.zeros(len(embs)), info

    # -- fits on features alone (episodes): the zero-shot prior over the data's classes --
    def prepare_features(self, model) -> None:
        w, b, _ = self.head_weights(model)
        self._prior = (model.backbone, w, b)

    def prior_logits(self, pooled) -> np.ndarray:
        """Zero-shot logits ``(N, K)`` over the prepared classes of pooled backbone features
        ``(N, D)`` (as the feature cache holds them)."""
        prior = getattr(self, "_prior", None)
        if prior is None:
            raise ConfigError(f"{self.name}: prepare_features(model) first")
        backbone, w, b = prior
        x = np.asarray(pooled, np.float64)
        if backbone.modality == "image":
            p = backbone.source_probabilities(torch.as_tensor(x, dtype=torch.float32))
            x = top_probabilities(p, self.options.top).double().numpy()
        return x @ w.T + b

    def fit_features(self, x, y, n_classes: int, seed: int, unlabelled=None, classes=None):
        cls = np.arange(n_classes) if classes is None else np.asarray(classes)
        return lambda q: self.prior_logits(q)[:, cls]

    def save_extra(self, model, bundle_dir) -> None:
        if self.class_texts is not None:
            write_json(Path(bundle_dir) / "descriptions.json", self.class_texts)
