"""ONNX export: every exportable strategy on tiny backbones, ONNX Runtime against the bundle.

The exported graph takes the preprocessed tensors (image pixels, or token ids and masks) and
gives probabilities that agree with the bundle's to 1e-4 on the held-out split; the JSON beside
it names the inputs, the labels and the preprocessing.  Refusals are one line, exit code 2.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import transferkit
from transferkit.cli import main
from transferkit.data import read_data, resolve_splits
from transferkit.engine.inputs import InputPipeline
from transferkit.errors import ConfigError
from transferkit.export import export_onnx, run_session, session
from transferkit.strategies import base as strategy_base
from transferkit.strategies.base import get_strategy, list_strategies
from transferkit.strategies.freeze import Freeze

from conftest import make_image_folder, make_text_csv

pytest.importorskip("onnxruntime")

STRATEGIES = [s.name for s in list_strategies()]
STAGED = {"head_epochs": 1, "source_epochs": 1}
#: every strategy on a ViT and a BERT (prompts, TOAST and LoRA need attention layers), plus
#: LoRA on convolutions and a BiLSTM head over word vectors
CASES = ([(s, "tiny-vit") for s in STRATEGIES] + [(s, "tiny-bert") for s in STRATEGIES]
         + [("lora", "tiny-cnn"), ("bitfit", "tiny-cnn"), ("freeze", "tiny-wordvec")])
MODALITY = {"tiny-cnn": "image", "tiny-vit": "image", "tiny-bert": "text", "tiny-wordvec": "text"}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    return {"image": make_image_folder(root / "img", per_class=12),
            "text": make_text_csv(root / "texts.csv", n_per_class=14)}


def _fit(strategy: str, backbone: str, data, out):
    cls = type(get_strategy(strategy))
    opts = {k: v for k, v in STAGED.items() if k in cls.options_cls.__dataclass_fields__}
    kw = dict(backbone=backbone, strategy=strategy, out=out, epochs=1, batch_size=8, seed=0,
              quiet=True, options=opts)
    if cls.uses_target:
        kw.update(target=data, test=data, figures=False)
        if cls.needs_target_labels:
            kw["target_labels"] = 2
    return transferkit.fit(data, **kw)


def onnx_probabilities(path, desc, backbone, samples, batch_size: int = 5) -> np.ndarray:
    """ONNX Runtime's probabilities for ``samples``, fed as transferkit preprocesses them."""
    sess = session(path)
    names = [i["name"] for i in desc["inputs"]]
    out = np.zeros((len(samples), len(desc["labels"])), dtype=np.float64)
    for b in InputPipeline(backbone).batches(samples, batch_size=batch_size):
        xs = [b.inputs] if names == ["pixels"] else [b.inputs[n] for n in names]
        out[b.indices.numpy()] = run_session(sess, names, xs)
    return out


@pytest.mark.parametrize("strategy,backbone", CASES)
def test_onnx_runtime_reproduces_the_bundle(strategy, backbone, datasets, tmp_path):
    data = datasets[MODALITY[backbone]]
    try:
        tm = _fit(strategy, backbone, data, tmp_path / "run")
    except ConfigError as e:
        assert strategy in str(e)  # the strategy does not take this backbone (test_contract)
        pytest.skip(f"{strategy} does not apply to {backbone}")
    out = tmp_path / "model.onnx"
    desc = export_onnx(tm.run_dir / "bundle", out)
    assert desc["labels"] == tm.classes
    assert desc["check"]["max_abs_diff_probabilities"] <= 1e-4
    assert json.loads(out.with_suffix(".json").read_text())["inputs"] == desc["inputs"]

    loaded = transferkit.load(tm.run_dir / "bundle")
    test = resolve_splits(read_data(data), seed=0)["test"]
    expected = loaded.predict_proba(test)
    got = onnx_probabilities(out, desc, loaded.model.backbone, test)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-4
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_json_describes_inputs_and_preprocessing(datasets, tmp_path):
    tm = _fit("freeze", "tiny-cnn", datasets["image"], tmp_path / "img")
    desc = export_onnx(tm.run_dir, tmp_path / "img.onnx")  # a run folder names its bundle
    assert [i["name"] for i in desc["inputs"]] == ["pixels"]
    c, h, w = tm.model.backbone.preprocess["input_size"]
    assert desc["inputs"][0]["shape"] == ["batch", c, h, w]
    pre = desc["preprocessing"]
    assert pre["mean"] == list(tm.model.backbone.preprocess["mean"]) and "steps" in pre
    assert [o["name"] for o in desc["outputs"]] == ["logits", "probabilities"]

    tm = _fit("freeze", "tiny-bert", datasets["text"], tmp_path / "txt")
    out = tmp_path / "txt.onnx"
    desc = export_onnx(tm.run_dir / "bundle", out)
    names = [i["name"] for i in desc["inputs"]]
    assert names[:2] == ["input_ids", "attention_mask"]
    assert desc["inputs"][0]["shape"] == ["batch", "sequence"]
    # the tokenizer is saved beside the graph and tokenizes as the backbone does
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tmp_path / desc["preprocessing"]["tokenizer_files"]))
    texts = ["this is good", "this is really terrible and sad"]
    enc = tok(texts, padding="longest", truncation=True,
              max_length=desc["preprocessing"]["max_length"], return_tensors="np")
    got = session(out).run(["probabilities"], {n: enc[n].astype(np.int64) for n in names})[0]
    np.testing.assert_allclose(got, tm.predict_proba(texts), atol=1e-4)


def test_lora_is_merged_into_the_weights(datasets, tmp_path):
    import onnx

    tm = _fit("lora", "tiny-vit", datasets["image"], tmp_path / "run")
    out = tmp_path / "lora.onnx"
    export_onnx(tm.run_dir / "bundle", out)
    graph = onnx.load(str(out)).graph
    names = [t.name for t in graph.initializer] + [n.name for n in graph.node]
    assert names and not any("lora" in n.lower() for n in names)
    # the bundle's own model still has its adapters (export works on a copy)
    assert any("lora_" in n for n, _ in tm.model.named_parameters())


class NoExport(Freeze):
    name = "toy-no-export"

    def for_export(self, model):
        raise ConfigError("toy-no-export: its forward pass asks a server (test only)")


def _cli(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_refusals_are_one_line_exit_2(datasets, tmp_path, capsys, monkeypatch):
    code, _, err = _cli(["export", tmp_path / "nowhere", "--onnx", tmp_path / "x.onnx"], capsys)
    assert code == 2 and err.count("\n") == 1 and "no such bundle" in err

    tm = _fit("freeze", "tiny-cnn", datasets["image"], tmp_path / "run")
    bundle = tm.run_dir / "bundle"
    code, _, err = _cli(["export", bundle, "--onnx", tmp_path / "x.pt"], capsys)
    assert code == 2 and "must end in .onnx" in err and "Traceback" not in err

    monkeypatch.setitem(strategy_base._STRATEGIES, NoExport.name, NoExport)
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["strategy"]["name"] = NoExport.name
    (bundle / "config.json").write_text(json.dumps(cfg))
    code, _, err = _cli(["export", bundle, "--onnx", tmp_path / "x.onnx"], capsys)
    assert code == 2 and err.count("\n") == 1 and "asks a server" in err
    assert not (tmp_path / "x.onnx").exists()


def test_cli_export_reports_agreement(datasets, tmp_path, capsys):
    tm = _fit("linear", "tiny-bert", datasets["text"], tmp_path / "run")
    code, out, err = _cli(["export", tm.run_dir / "bundle", "--onnx", tmp_path / "m.onnx"], capsys)
    assert code == 0, err
    assert "agrees with the bundle" in out
    assert (tmp_path / "m.onnx").exists() and (tmp_path / "m.json").exists()
    assert (tmp_path / "m.tokenizer").is_dir()


@pytest.mark.integration
def test_real_backbone_lora_export_on_real_images(tmp_path):
    """EfficientNet-Lite0 with LoRA adapters on its pointwise convolutions, merged for export,
    against the bundle on real photos (hymenoptera)."""
    from conftest import shared_data

    splits = read_data(shared_data("hymenoptera"))
    rng = np.random.default_rng(0)
    pick = lambda s, n: s.subset(sorted(rng.choice(len(s), size=n, replace=False).tolist()))  # noqa: E731
    train, test = pick(splits["train"], 24), pick(splits["val"], 16)
    tm = transferkit.fit(train, test=test, backbone="efficientnet_lite0", strategy="lora",
                         image_size=96, epochs=1, batch_size=8, skip_bad=True,
                         out=tmp_path / "run", quiet=True)
    out = tmp_path / "lite0.onnx"
    desc = export_onnx(tm.run_dir / "bundle", out)
    assert desc["inputs"][0]["shape"] == ["batch", 3, 96, 96]
    loaded = transferkit.load(tm.run_dir / "bundle")
    expected = loaded.predict_proba(test)
    got = onnx_probabilities(out, desc, loaded.model.backbone, test)
    assert np.abs(got - expected).max() <= 1e-4
