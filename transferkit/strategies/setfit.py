"""``setfit``: contrastive fine-tuning of a sentence encoder on pairs of the labelled
sentences, then a logistic-regression head (Tunstall et al. 2022, "Efficient Few-Shot
Learning Without Prompts", SetFit).

Stage 1 (``contrastive``) trains the whole encoder on pairs built from the training
sentences; the labelled batch's cross-entropy is not part of its loss (``task_loss=False``).
One epoch of it is one of SetFit's *iterations* (``num_iterations``): every training
sentence, as the anchor, is paired once with a sentence of its own class (a positive pair)
and once with a sentence of another class (a negative pair), each partner drawn uniformly.
Positive and negative pairs are therefore equally many, which is what SetFit's
``sampling_strategy="oversampling"`` achieves by repeating the rarer kind.  The loss is
``cosine`` (SetFit's: sentence-transformers' ``CosineSimilarityLoss``, the squared gap
between the pair's cosine similarity and 1 or 0) or ``triplet`` (``BatchHardTripletLoss``
over the anchors and their partners, cosine distance, margin ``margin``).

Pairs are drawn per batch from per-class index tables: memory is O(N) in the number of
training sentences, never the O(N^2) list of pairs that SetFit materialises (its users hit
out-of-memory errors at about 40,000 sentences).  ``max_pairs`` caps the compute as well:
the stage stops after the iteration in which that many pairs have been seen.

Stage 2 (``head``) fits logistic regression on the tuned encoder's features, exactly as
the ``linear`` strategy does (``C`` chosen on the validation split, or by cross-validation
over the shots under ``--shots`` without ``--val``), or with ``classifier=setfit`` as SetFit
does (scikit-learn's logistic regression at ``C`` = 1 on the raw embeddings).  With ``pseudo=N`` it self-trains:
``N`` unlabelled sentences of the task (the rest of a ``--shots`` training split; their
labels never read) are encoded, labelled by that head, the ``pseudo_per_class`` most
confident per predicted class are added to the shots, and the head is refitted.  With a
separate validation split both heads are candidates and validation chooses.

Only text encoders that give a sentence embedding (``minilm``, ``hf:`` models,
``tiny-bert``) are accepted: image backbones and static word vectors are refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError
from ..events import Callback
from .base import Options, ParamGroup, Solution, Stage, Strategy, register_strategy
from .linear import Linear, LinearOnShots, fit_logreg

LOSSES = ("cosine", "triplet")
CLASSIFIERS = ("linear", "setfit")


class PairSampler:
    """Partners for anchors: one sentence of the anchor's class (never the anchor itself
    when its class has another) and one of any other class, each drawn uniformly.

    Holds the labels grouped by class (``order``, class ``start`` and ``count``) and each
    sample's place among them: O(N) memory whatever the number of pairs drawn."""

    def __init__(self, labels):
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) < 2:
            raise ConfigError("setfit: the training samples hold one class only; contrastive "
                              "pairs need at least two classes")
        self.labels = y
        self.order = np.argsort(y, kind="stable")
        self.place = np.empty_like(self.order)
        self.place[self.order] = np.arange(len(y))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.start = dict(zip(classes.tolist(), starts.tolist()))
        self.count = dict(zip(classes.tolist(), counts.tolist()))

    def partners(self, anchors, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(positives, negatives)``: sample indices, one of each per anchor."""
        anchors = np.asarray(anchors, dtype=np.int64).reshape(-1)
        n = len(self.labels)
        pos = np.empty_like(anchors)
        neg = np.empty_like(anchors)
        for k, i in enumerate(anchors):
            c = int(self.labels[i])
            s, m = self.start[c], self.count[c]
            if m > 1:  # uniform over the class without the anchor
                r = int(rng.integers(m - 1))
                r += int(r >= self.place[i] - s)
            else:
                r = 0
            pos[k] = self.order[s + r]
            r = int(rng.integers(n - m))  # uniform over the other classes' block
            neg[k] = self.order[r if r < s else r + m]
        return pos, neg


def pair_loss(kind: str, anchors: torch.Tensor, positives: torch.Tensor,
              negatives: torch.Tensor, labels: torch.Tensor, negative_labels: torch.Tensor,
              margin: float) -> torch.Tensor:
    """The contrastive loss of one batch through sentence-transformers' loss modules
    (``compute_loss_from_embeddings``: the embeddings are computed by transferkit's loop)."""
    from sentence_transformers.sentence_transformer.losses import (
        BatchHardTripletLoss, BatchHardTripletLossDistanceFunction, CosineSimilarityLoss)

    if kind == "cosine":
        left = torch.cat([anchors, anchors])
        right = torch.cat([positives, negatives])
        target = torch.cat([torch.ones(len(anchors)), torch.zeros(len(anchors))])
        return CosineSimilarityLoss(None).compute_loss_from_embeddings(
            [left, right], target.to(left.device))
    loss = BatchHardTripletLoss(None, margin=margin,
                                distance_metric=BatchHardTripletLossDistanceFunction.cosine_distance)
    emb = torch.cat([anchors, positives, negatives])
    y = torch.cat([labels, labels, negative_labels]).to(emb.device)
    return loss.compute_loss_from_embeddings([emb], y)


class PairLoss(Callback):
    """The contrastive stage's loss: partners of each batch's anchors travel as two streams
    (``positive``, ``negative``) through the live encoder; the loss term is
    :func:`pair_loss` of the three embeddings."""

    def __init__(self, kind: str, margin: float, max_pairs: int):
        self.kind, self.margin, self.max_pairs = kind, margin, max_pairs
        self.sampler: PairSampler | None = None
        self.pairs = 0
        self._negative_labels: torch.Tensor | None = None

    def on_stage_start(self, state) -> None:
        self.sampler = PairSampler(state.labels("train").numpy())
        self.pairs = 0

    def on_batch_start(self, state, batch) -> None:
        rng = np.random.default_rng([state.epoch_seed, state.step])
        pos, neg = self.sampler.partners(batch.indices.numpy(), rng)
        texts = state.data["train"].items
        bb = state.model.backbone
        for name, idx in (("positive", pos), ("negative", neg)):
            tok = bb.tokenize([texts[i] for i in idx])
            batch.streams[name] = {k: v.to(state.device) for k, v in tok.items()}
        self._negative_labels = torch.as_tensor(self.sampler.labels[neg])

    def on_batch(self, state, batch):
        self.pairs += 2 * len(batch.labels)
        out = batch.outputs
        loss = pair_loss(self.kind, batch.embed, out["positive"]["embed"],
                         out["negative"]["embed"], batch.labels.cpu(), self._negative_labels,
                         self.margin)
        return {"pairs": loss}

    def on_epoch_end(self, state, record) -> None:
        record["pairs"] = self.pairs
        if self.pairs >= self.max_pairs and state.epoch + 1 < state.stage.epochs:
            state.log(f"  setfit: {self.pairs:,} pairs seen (max_pairs {self.max_pairs:,}); "
                      "the contrastive stage ends here")
            state.stop = True


@dataclass
class SetFitOptions(Options):
    #: iterations of pairs (SetFit's num_iterations): epochs of the contrastive stage;
    #: default: --epochs
    iterations: int | None = None
    #: learning rate of the encoder in the contrastive stage (SetFit's body learning rate)
    lr: float = 2e-5
    #: contrastive loss: "cosine" (SetFit's CosineSimilarityLoss) or "triplet" (batch-hard)
    loss: str = "cosine"
    #: margin of the triplet loss (cosine distance)
    margin: float = 0.25
    #: stop the contrastive stage after the iteration in which this many pairs were seen
    max_pairs: int = 20000
    #: the head: "linear" (standardised features, C chosen as the linear strategy chooses
    #: it) or "setfit" (SetFit's: scikit-learn's logistic regression on the raw embeddings,
    #: C = 1 unless given)
    classifier: str = "linear"
    #: logistic regression's C (default: see classifier)
    C: float | None = None
    #: unlabelled sentences of the task to pseudo-label for a self-trained head (0: none)
    pseudo: int = 0
    #: pseudo-labelled sentences added per predicted class (the most confident)
    pseudo_per_class: int = 16


@register_strategy
class SetFit(Strategy):
    name = "setfit"
    description = ("SetFit: contrastive fine-tuning of a sentence encoder on pairs of the "
                   "labelled sentences, then logistic regression (-o pseudo=N: self-trained "
                   "on N unlabelled sentences)")
    options_cls = SetFitOptions
    default_head = "linear"
    trains_backbone = "all"

    def validate(self) -> None:
        o = self.options
        self.require_positive("iterations", "lr", "margin", "max_pairs", "C",
                              "pseudo_per_class")
        if o.loss not in LOSSES:
            raise ConfigError(f"setfit: loss must be one of {', '.join(LOSSES)}, got {o.loss!r}")
        if o.classifier not in CLASSIFIERS:
            raise ConfigError(f"setfit: classifier must be one of {', '.join(CLASSIFIERS)}, "
                              f"got {o.classifier!r}")
        if o.pseudo < 0:
            raise ConfigError(f"setfit: pseudo must be >= 0, got {o.pseudo}")

    def check_backbone(self, backbone) -> None:
        if backbone.modality != "text" or backbone.family != "text-encoder" \
                or backbone.output != "pooled":
            raise ConfigError(f"strategy 'setfit' needs a sentence encoder (minilm, hf:<model>); "
                              f"backbone {backbone.name!r} is a {backbone.modality} "
                              f"{backbone.family} backbone")

    def stages(self, model, train):
        o = self.options
        epochs = o.iterations if o.iterations is not None else train.epochs
        params = [p for p in model.backbone.parameters()]
        contrastive = Stage("contrastive", epochs, [ParamGroup("backbone", params, o.lr)],
                            frozen_backbone=False, selectable=False, task_loss=False,
                            warmup_epochs=train.warmup_epochs,
                            callbacks=[PairLoss(o.loss, o.margin, o.max_pairs)])
        head = Stage("head", 0, [], frozen_backbone=True, solve=self.solve)
        return [contrastive, head] if epochs > 0 else [head]

    # ------------------------------------------------------------------ the head
    def solve(self, state) -> Solution:
        model = state.model
        if model.head.kind != "linear":
            raise ConfigError("setfit strategy needs a linear head (head kind 'linear')")
        x, y = state.features("train"), state.labels("train")
        first = self.first_head(state, x, y)
        info = {**first.info, "loss": self.options.loss, "classifier": self.options.classifier}
        if not self.options.pseudo or not state.has("unlabelled"):
            return Solution(first.candidates, info)
        w, b, added = self.self_train(state, x.double().numpy(), y.numpy(), first.info["C"])
        info["pseudo_labelled"] = added
        info["unlabelled_used"] = min(self.options.pseudo, len(state.data["unlabelled"]))
        second = ("self-trained", lambda m: m.head.set_linear(w, b))
        if state.val_is_train:  # nothing held out to choose by: the self-trained head
            info["selection"] += "; head self-trained on pseudo-labels"
            return Solution([second], info)
        return Solution([("shots", first.candidates[0][1]), second], info)

    def first_head(self, state, x, y) -> Solution:
        """The head on the labelled sentences alone."""
        o, model, seed = self.options, state.model, state.cfg.seed
        if o.classifier == "setfit":
            c = o.C if o.C is not None else 1.0
            w, b = fit_logreg(x.double().numpy(), y.numpy(), c, len(model.classes), seed)
            return Solution([("fit", lambda m: m.head.set_linear(w, b))],
                            {"C": c, "selection": f"SetFit's head: logistic regression at C = "
                                                  f"{c:g} on the raw embeddings; nothing chosen"})
        linear = Linear(C=o.C)
        if state.val_is_train:
            return linear.fit_on_shots(model, x, y, seed)
        return linear.fit_closed_form(model, x, y, state.features("val"), state.labels("val"),
                                      seed)

    def fit_head(self, x, y, C: float, n_classes: int, seed: int):
        """``(weight, bias)`` of the head kind ``classifier`` at ``C``."""
        if self.options.classifier == "setfit":
            return fit_logreg(x, y, C, n_classes, seed)
        return LinearOnShots(C).fit(x, y, n_classes, seed)

    def self_train(self, state, x, y, C: float):
        """Refit on the shots plus the most confident pseudo-labelled unlabelled sentences:
        ``(weight, bias, {class: number added})``."""
        from scipy.special import softmax

        o, k, seed = self.options, len(state.model.classes), state.cfg.seed
        pool = state.data["unlabelled"]
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.permutation(len(pool))[: o.pseudo])
        state.data["setfit-unlabelled"] = pool.subset(pick)
        xu = state.features("setfit-unlabelled").double().numpy()
        w, b = self.fit_head(x, y, C, k, seed)
        p = softmax(xu @ w.T + b, axis=1)
        guess, conf = p.argmax(1), p.max(1)
        chosen, added = [], {}
        for c in range(k):
            idx = np.flatnonzero(guess == c)
            idx = idx[np.argsort(-conf[idx], kind="stable")][: o.pseudo_per_class]
            chosen.append(idx)
            added[state.model.classes[c]] = int(len(idx))
        chosen = np.concatenate(chosen)
        w2, b2 = self.fit_head(np.concatenate([x, xu[chosen]]),
                               np.concatenate([y, guess[chosen]]), C, k, seed)
        state.log(f"  setfit: self-trained on {len(chosen)} pseudo-labelled sentences "
                  f"of {len(pick)}")
        return w2, b2, added
