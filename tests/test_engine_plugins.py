"""New kinds of task plug into the engine without a change to its loop.

Two toy strategies, defined here and registered only for the test that uses them:

* ``toy-two-heads``: a second head on the same backbone, for a second label column, trained
  with its own loss term beside the first (multi-task); one bundle holds both heads and,
  reloaded, predicts both.
* ``toy-zero-shot``: trains nothing; the head is set from the embeddings of the class names
  (zero-shot), in a closed-form stage.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

import transferkit
from transferkit.events import Callback
from transferkit.strategies import base
from transferkit.strategies.base import (Options, ParamGroup, Solution, Stage, Strategy,
                                         head_params)

from conftest import make_text_rows

#: second label of each sentence: its length class (the toy's second task)
SECOND = ("short", "long")


def _second_label(text: str) -> int:
    return int(len(text) > 34)


class SecondTaskLoss(Callback):
    """The loss of the second head, on the labels of the second column of the batch's rows."""

    def __init__(self, labels: torch.Tensor):
        self.labels = labels

    def on_batch(self, state, batch):
        logits2 = state.model.head2(batch.embed)
        return {"task2": nn.functional.cross_entropy(logits2, self.labels[batch.indices])}


@dataclass
class TwoHeadOptions(Options):
    lr: float = 1e-2


class TwoHeads(Strategy):
    name = "toy-two-heads"
    description = "two heads, two losses, one backbone (test only)"
    options_cls = TwoHeadOptions
    #: second labels of the training split, in its order (given by the test)
    train_labels2: torch.Tensor | None = None

    def attach(self, model):
        if model.attached("head2") is None:
            head2 = model.attach("head2", nn.Linear(model.head.embed_dim, len(SECOND)))
            self.initial_head2 = head2.weight.detach().clone()

    def stages(self, model, train):
        groups = [ParamGroup("head", head_params(model), self.options.lr),
                  ParamGroup("head2", list(model.head2.parameters()), self.options.lr)]
        return [Stage("two-heads", train.epochs, groups,
                      callbacks=[SecondTaskLoss(self.train_labels2)])]


@dataclass
class ZeroShotOptions(Options):
    scale: float = 10.0


class ZeroShot(Strategy):
    name = "toy-zero-shot"
    description = "head from the class names' embeddings; trains nothing (test only)"
    options_cls = ZeroShotOptions

    def stages(self, model, train):
        return [Stage("zero-shot", 0, [], solve=self.solve)]

    def solve(self, state) -> Solution:
        model = state.model
        with torch.no_grad():
            names = model.backbone(model.backbone.tokenize(list(model.classes)))["pooled"]
        w = self.options.scale * nn.functional.normalize(names.float(), dim=1)
        return Solution([("class names", lambda m: m.head.set_linear(w, torch.zeros(len(w))))],
                        {"classes": list(model.classes)})


@pytest.fixture
def two_column_csv(tmp_path):
    rows = make_text_rows(12, seed=1)
    path = tmp_path / "two.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "length"])
        for text, label in rows:
            w.writerow([text, label, SECOND[_second_label(text)]])
    return path


def _loop_source() -> str:
    import inspect

    from transferkit.engine import trainer

    return inspect.getsource(trainer.Trainer)


def test_the_loop_names_no_strategy():
    src = _loop_source()
    for name in ("toy", "dann", "toast", "linear", "lora", "domain_disc", "head2"):
        assert name not in src.lower().replace("nn.linear", ""), name


def test_two_heads_two_losses_one_bundle(two_column_csv, tmp_path, monkeypatch):
    from transferkit.data import read_data, resolve_splits

    monkeypatch.setitem(base._STRATEGIES, TwoHeads.name, TwoHeads)
    splits = resolve_splits(read_data(two_column_csv), seed=0)
    y2 = torch.tensor([_second_label(t) for t in splits["train"].items])
    monkeypatch.setattr(TwoHeads, "train_labels2", y2)
    seen = {}
    real = SecondTaskLoss.on_batch

    def spy(self, state, batch):
        terms = real(self, state, batch)
        seen.setdefault("terms", set()).update(terms)
        return terms

    monkeypatch.setattr(SecondTaskLoss, "on_batch", spy)
    tm = transferkit.fit(splits["train"], val=splits["val"], test=splits["test"],
                         backbone="tiny-bert", strategy="toy-two-heads", epochs=3, batch_size=8,
                         seed=0, quiet=True, out=tmp_path / "run")
    assert seen["terms"] == {"task2"}
    # both heads trained and both are in the one bundle
    tensors = (tmp_path / "run" / "bundle" / "config.json").read_text()
    assert '"head2.weight"' in tensors and '"head.fc.weight"' in tensors
    loaded = transferkit.load(tmp_path / "run" / "bundle")
    assert torch.equal(loaded.model.head2.weight, tm.model.head2.weight)
    assert not torch.equal(tm.model.head2.weight, tm.strategy.initial_head2), "head2 did not train"
    test = splits["test"]
    assert (loaded.logits(test) == tm.logits(test)).all()
    # the reloaded bundle predicts the second task too, as the trained model does
    def second(model):
        model.eval()
        with torch.no_grad():
            z = model.head.embed(model.features(model.backbone.tokenize(list(test.items))))
            return model.head2(z).argmax(1)

    assert torch.equal(second(loaded.model), second(tm.model))


def test_a_strategy_that_trains_nothing(text_csv, tmp_path, monkeypatch):
    from transferkit.backbones import build_backbone

    monkeypatch.setitem(base._STRATEGIES, ZeroShot.name, ZeroShot)
    tm = transferkit.fit(text_csv, backbone="tiny-bert", strategy="toy-zero-shot", quiet=True,
                         out=tmp_path / "run")
    ref = build_backbone("tiny-bert").state_dict()
    got = tm.model.backbone.state_dict()
    assert all(torch.equal(ref[k], got[k]) for k in ref), "the backbone changed"
    m = tm.metrics
    assert m["closed_form"]["classes"] == ["neg", "pos"]
    assert m["trainable_params"] == sum(p.numel() for p in tm.model.head.parameters())
    hist = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert len(hist) == 2 and "class names" in hist[1]  # one "epoch": the one setting
    # the head is exactly the normalised class-name embeddings
    names = tm.model.backbone(tm.model.backbone.tokenize(["neg", "pos"]))["pooled"]
    w = 10.0 * nn.functional.normalize(names.float(), dim=1)
    torch.testing.assert_close(tm.model.head.fc.weight.detach(), w.detach())
    loaded = transferkit.load(tmp_path / "run" / "bundle")
    texts = [t for t, _ in make_text_rows(3)]
    np.testing.assert_array_equal(loaded.logits(texts), tm.logits(texts))
