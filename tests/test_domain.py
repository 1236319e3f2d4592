"""Domain adaptation through the engine: target data, label-free selection, the oracle
column, target labels that never leak, figures, the CLI, and the digits-cnn backbone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import transferkit
from transferkit.cli import main
from transferkit.engine.domain import CRITERIA, selection_key, summarize_selection
from transferkit.errors import BackboneError, ConfigError, DataError

from conftest import interrupt_after


def _digits(path, n=60, seed=0, shift=0, labels=True, colour=False):
    """Tiny 'digit' images: the class is where a bright square sits; ``shift`` moves the
    background brightness (a domain shift)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.integers(0, 40, size=(n, 16, 16)).astype(np.int64) + shift
    for i, c in enumerate(y):
        x[i, 2 + 4 * c: 6 + 4 * c, 4:12] = 230
    x = np.clip(x, 0, 255).astype(np.uint8)
    if colour:
        x = np.repeat(x[..., None], 3, axis=3)
    arrays = {"x": x, "y": y.astype(np.int64)} if labels else {"x": x}
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    root = tmp_path_factory.mktemp("domains")
    return {"source": _digits(root / "src.npz", seed=0),
            "target": _digits(root / "tgt.npz", seed=1, shift=60),
            "target_unlabelled": _digits(root / "tgt_u.npz", seed=1, shift=60, labels=False),
            "test": _digits(root / "tgt_test.npz", n=30, seed=2, shift=60)}


def _fit(domains, tmp_path, strategy="dann", **kw):
    args = dict(target=domains["target"], test=domains["test"], backbone="digits-cnn",
                strategy=strategy, epochs=1, batch_size=16, quiet=True, out=tmp_path / "run",
                figures=False, options={"source_epochs": 1})
    args.update(kw)
    return transferkit.fit(domains["source"], **args)


def test_domain_run_reports_label_free_and_oracle_choices(domains, tmp_path):
    tm = _fit(domains, tmp_path, figures=True)
    m = tm.metrics
    sel = m["domain"]["selection"]
    assert sel["criterion"] == "dev"
    assert set(sel["label_free"]) == set(CRITERIA)
    hist = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert "oracle_target_accuracy" in hist[0] and "dev_risk" in hist[0]
    # the source stage is not a candidate: the choice is among adapted epochs
    assert sel["chosen_epoch"] == 2
    # the test figures are the target test split's, at the label-free choice
    assert m["test"]["n"] == 30
    assert m["test"]["accuracy"] == pytest.approx(sel["chosen_target_accuracy"])
    assert sel["oracle"]["target_accuracy"] >= sel["chosen_target_accuracy"]
    pad = m["domain"]["proxy_a_distance"]
    assert set(pad) == {"before", "after"} and all(0 <= v <= 2 for v in pad.values())
    assert (tmp_path / "run" / "domain_tsne.png").stat().st_size > 1000


def test_target_labels_are_never_read(domains, tmp_path):
    """Scrambling the target's labels changes nothing: they are not read at all."""
    d = np.load(domains["target"])
    scrambled = tmp_path / "scrambled.npz"
    np.savez(scrambled, x=d["x"], y=(d["y"] + 1) % 3)
    a = _fit(domains, tmp_path / "a")
    b = _fit(domains, tmp_path / "b", target=scrambled)
    c = _fit(domains, tmp_path / "c", target=domains["target_unlabelled"])
    x = list(np.load(domains["test"])["x"][:10])
    assert np.array_equal(a.logits(x), b.logits(x))
    assert np.array_equal(a.logits(x), c.logits(x))


def test_selection_criterion_is_honoured(domains, tmp_path):
    tm = _fit(domains, tmp_path, select="source-val")
    sel = tm.metrics["domain"]["selection"]
    assert sel["criterion"] == "source-val"
    assert sel["chosen_epoch"] == sel["label_free"]["source-val"]["epoch"]


def test_source_only_scores_the_target_without_training_on_it(domains, tmp_path):
    tm = _fit(domains, tmp_path, strategy="source-only")
    assert tm.metrics["domain"]["selection"]["oracle"] is not None


@pytest.mark.parametrize("strategy", ["tca", "coral-features"])
def test_feature_strategies_choose_among_settings(domains, tmp_path, strategy):
    tm = _fit(domains, tmp_path, strategy=strategy)
    cf = tm.metrics["closed_form"]
    assert cf["chosen"] in {label for label in _labels(tmp_path / "run")}
    # the projection and the classifier fold into the linear head: reload is exact
    x = list(np.load(domains["test"])["x"][:8])
    assert np.array_equal(tm.logits(x), transferkit.load(tmp_path / "run" / "bundle").logits(x))


def _labels(run):
    rows = (run / "history.csv").read_text().splitlines()
    col = rows[0].split(",").index("setting")
    return [r.split(",")[col] for r in rows[1:] if r.split(",")[col]]


def test_tradaboost_needs_target_labels(domains, tmp_path):
    with pytest.raises(ConfigError, match="--target-labels"):
        _fit(domains, tmp_path, strategy="tradaboost")
    tm = _fit(domains, tmp_path, strategy="tradaboost", target_labels=2,
              options={"source_epochs": 1, "rounds": 4})
    assert tm.metrics["closed_form"]["labelled_target"] == 6


def test_target_labels_need_a_labelled_target(domains, tmp_path):
    with pytest.raises(DataError, match="tgt_u.npz: missing array .y."):
        _fit(domains, tmp_path, target=domains["target_unlabelled"], target_labels=2)


def test_adapting_strategy_without_target_is_refused(domains, tmp_path):
    with pytest.raises(ConfigError, match="'dann' adapts to a target domain"):
        transferkit.fit(domains["source"], backbone="digits-cnn", strategy="dann", epochs=1,
                        quiet=True, out=tmp_path / "r")
    with pytest.raises(ConfigError, match="needs a target domain"):
        transferkit.fit(domains["source"], backbone="digits-cnn", strategy="freeze", epochs=1,
                        quiet=True, out=tmp_path / "r", target_labels=3)


def test_target_of_another_modality_is_refused(domains, tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("text,label\nhello there,0\nbye now,1\n")
    with pytest.raises(DataError, match="target holds text data"):
        _fit(domains, tmp_path, target=csv)


def test_cli_domain_run(domains, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["fit", str(domains["source"]), "--target", str(domains["target"]), "--test",
                 str(domains["test"]), "-b", "digits-cnn", "-s", "coral", "--epochs", "1",
                 "-o", "source_epochs=1", "--batch-size", "16", "--select", "entropy",
                 "--out", str(out), "-q"])
    assert code == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["domain"]["selection"]["criterion"] == "entropy"
    assert "label-free: entropy" in m["selection"]
    with pytest.raises(SystemExit) as e:
        main(["fit", str(domains["source"]), "--target", str(domains["target"]), "--select", "oracle"])
    assert e.value.code == 2


# ------------------------------------------------------------------ pure selection logic

def test_selection_key_and_summary_by_hand():
    rows = [
        {"epoch": 1, "stage": "source", "selectable": False, "val_accuracy": 0.99,
         "val_loss": 0.1, "iw_val_accuracy": 0.5, "dev_risk": 0.1, "target_entropy": 0.1,
         "oracle_target_accuracy": 0.95},
        {"epoch": 2, "stage": "adapt", "val_accuracy": 0.9, "val_loss": 0.3,
         "iw_val_accuracy": 0.8, "dev_risk": 0.5, "target_entropy": 0.4,
         "oracle_target_accuracy": 0.7},
        {"epoch": 3, "stage": "adapt", "val_accuracy": 0.8, "val_loss": 0.4,
         "iw_val_accuracy": 0.7, "dev_risk": 0.4, "target_entropy": 0.6,
         "oracle_target_accuracy": 0.8},
    ]
    assert selection_key("dev", rows[1]) == (-0.5, 0.9)
    s = summarize_selection(rows, "dev", 3)
    assert s["chosen_target_accuracy"] == 0.8
    assert s["label_free"]["source-val"] == {"epoch": 2, "target_accuracy": 0.7}
    assert s["label_free"]["iwv"]["epoch"] == 2
    assert s["label_free"]["dev"]["epoch"] == 3
    assert s["label_free"]["entropy"]["epoch"] == 2
    # the oracle looks only at eligible epochs (never the source stage's)
    assert s["oracle"] == {"epoch": 3, "target_accuracy": 0.8}
    with pytest.raises(ConfigError, match="unknown selection criterion"):
        selection_key("oracle", rows[1])


# ------------------------------------------------------------------ digits-cnn

def test_digits_cnn_shapes_and_weights_from_a_bundle(domains, tmp_path):
    from transferkit.backbones import build_backbone

    bb = build_backbone("digits-cnn")
    assert bb.pretrained is False and bb.feature_dim == 500
    assert bb(torch.zeros(2, 3, 32, 32))["pooled"].shape == (2, 500)
    tm = _fit(domains, tmp_path, strategy="source-only")
    path = tmp_path / "run" / "bundle" / "model.safetensors"
    trained = build_backbone("digits-cnn", weights=str(path))
    assert trained.pretrained is True and trained.identity() != bb.identity()
    sd = tm.model.backbone.state_dict()
    assert all(torch.equal(v, sd[k]) for k, v in trained.state_dict().items())
    # feature-level strategies can now use it frozen, with no source stage
    run = transferkit.fit(domains["source"], target=domains["target"], backbone="digits-cnn",
                          weights=str(path), strategy="coral-features", quiet=True,
                          out=tmp_path / "feat", figures=False)
    assert not any(h["stage"] == "source" for h in run.metrics.get("history", []) or [])
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(BackboneError, match="cannot read digits-cnn weights"):
        build_backbone("digits-cnn", weights=str(bad))


# ------------------------------------------------------------------ domains as a column

def _domain_csv(path):
    from conftest import make_text_rows

    rows = [(t, l, "shop") for t, l in make_text_rows(12, seed=0)]
    rows += [(t + " here", l, "cafe") for t, l in make_text_rows(12, seed=1)]
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "domain"])
        w.writerows(rows)
    return path


def test_domains_from_one_table(tmp_path):
    from transferkit.data import read_domains

    csv_path = _domain_csv(tmp_path / "reviews.csv")
    parts = read_domains(csv_path, "domain")
    assert sorted(parts) == ["cafe", "shop"] and len(parts["cafe"]) == 24
    assert parts["cafe"].classes == parts["shop"].classes
    tm = transferkit.fit(csv_path, domain_column="domain", target="cafe", backbone="tiny-bert",
                         strategy="coral", epochs=1, options={"source_epochs": 1}, quiet=True,
                         out=tmp_path / "run", figures=False, batch_size=8)
    # source = the other domain (train + carved val), test = a carved part of the target
    assert tm.metrics["test"]["n"] < 24
    with pytest.raises(DataError, match="no row has domain = 'bar'"):
        transferkit.fit(csv_path, domain_column="domain", target="bar", backbone="tiny-bert",
                        strategy="coral", quiet=True, out=tmp_path / "r2")
    with pytest.raises(DataError, match="no such column|'region'"):
        read_domains(csv_path, "region")


def test_interrupted_domain_run_resumes_to_the_same_figures(domains, tmp_path, monkeypatch):
    from transferkit import api

    kw = dict(epochs=2, options={"source_epochs": 1})
    full = _fit(domains, tmp_path / "full", **kw)
    with monkeypatch.context() as m:
        interrupt_after(m, 2)  # after the source epoch and the first adaptation epoch
        with pytest.raises(KeyboardInterrupt):
            _fit(domains, tmp_path / "cut", **kw)
    resumed = api.resume(tmp_path / "cut" / "run", quiet=True)
    a, b = full.metrics, resumed.metrics
    assert a["test"]["accuracy"] == b["test"]["accuracy"]
    assert a["domain"]["selection"]["label_free"] == b["domain"]["selection"]["label_free"]
