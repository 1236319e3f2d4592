"""Export a bundle's model to ONNX: one graph from preprocessed tensors to probabilities.

``export_onnx(BUNDLE, OUT.onnx)`` rebuilds the model from the bundle, asks the strategy for
a plain forward pass (:meth:`Strategy.for_export`: LoRA folds its adapters into the weights;
a strategy that cannot be a plain forward pass says why), traces it, checks the graph in ONNX
Runtime against PyTorch on example inputs (at the traced batch size and sequence length and
at others), and writes beside the graph ``OUT.json``:

* ``inputs``: names, shapes (``"batch"`` / ``"sequence"`` for the dynamic axes), dtypes:
  ``pixels`` ``(batch, C, H, W)`` float32 for images; the token ids and masks the backbone's
  tokenizer makes for texts (``input_ids``, ``attention_mask``, ``token_type_ids``);
* ``outputs``: ``logits`` and ``probabilities`` ``(batch, classes)``;
* ``preprocessing``: for images the resize / centre crop / mean / std / grayscale settings;
  for texts the tokenizer (saved beside as ``OUT.tokenizer/`` when the backbone has a
  Hugging Face tokenizer), ``max_length`` and the padding rule;
* ``labels``: the class names in output order;
* ``check``: the largest probability difference between ONNX Runtime and PyTorch on the
  example inputs, and the export time.

Refused, in one line naming the bundle: a strategy whose ``for_export`` says why it cannot be
one forward pass; a model the tracer cannot follow; a graph whose probabilities differ from
the model's by more than :data:`TOLERANCE` (a forward pass whose control flow depends on its
input's shape or values, which tracing freezes).  Attached modules that compute the features
(prompt tokens, TOAST's steered second pass through forward hooks) trace as ordinary
operations: the hooks fire while tracing and their additions are recorded in the graph.

Nothing here trains or reads user data; the bundle is read as JSON + safetensors.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .bundle import load_model
from .data.transforms import describe_transform
from .errors import ConfigError
from .io import save_with, write_json
from .version import __version__

FORMAT = "transferkit-onnx"
FORMAT_VERSION = 1
OPSET = 17
#: largest probability difference between ONNX Runtime and PyTorch an export may show
TOLERANCE = 1e-4
#: example texts: of different lengths, so the traced graph keeps the padding mask
_EXAMPLE_TEXTS = ["a short example", "a longer example sentence, with a few more words in it"]


class _Graph(nn.Module):
    """``(inputs...) -> (logits, probabilities)`` around a model taking a tensor or a dict."""

    def __init__(self, model: nn.Module, names: list[str] | None):
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *xs: torch.Tensor):
        batch = xs[0] if self.names is None else dict(zip(self.names, xs))
        logits = self.model(batch).float()
        return logits, torch.softmax(logits, dim=-1)


def export_onnx(bundle: str | os.PathLike, out: str | os.PathLike, *, opset: int = OPSET,
                check: bool = True) -> dict[str, Any]:
    """Export ``bundle`` to ``out`` (``.onnx``); returns the description written to
    ``out.with_suffix('.json')``.  Raises :class:`ConfigError` (one line, saying why) for a
    model that cannot be a plain forward pass."""
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise ConfigError(f"{out}: the exported file must end in .onnx")
    _require_runtime()
    bundle = bundle_folder(bundle)
    t0 = time.perf_counter()
    model, strategy, cfg = load_model(bundle)
    if model.tasks or model.domains:
        what = "several tasks" if model.tasks else "a part per input domain"
        raise ConfigError(f"{bundle}: the model has {what}; ONNX export takes a model of one "
                          "task and one domain")
    plain = exportable(model, strategy, where=str(bundle))
    names, example = example_inputs(plain)
    graph = _Graph(plain, None if model.backbone.modality == "image" else names).eval()
    _trace(graph, example, names, out, opset)
    seconds = time.perf_counter() - t0
    desc = describe(model, strategy, cfg, names, example, bundle, out, opset)
    desc["check"] = {"export_s": round(seconds, 3)}
    if check:
        desc["check"]["max_abs_diff_probabilities"] = _checked(graph, out, names, example)
    tok = _save_tokenizer(model.backbone, out)
    if tok is not None:
        desc["preprocessing"]["tokenizer_files"] = tok
    write_json(out.with_suffix(".json"), desc)
    return desc


def _require_runtime() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"ONNX export needs the onnx and onnxruntime packages ({e.name} is "
                          "not installed: pip install onnx onnxruntime)") from None


def bundle_folder(path: str | os.PathLike) -> Path:
    """``path`` itself, or ``path/bundle`` when ``path`` is a run folder."""
    path = Path(path)
    if not (path / "config.json").exists() and (path / "bundle" / "config.json").exists():
        return path / "bundle"
    return path


def exportable(model: nn.Module, strategy, *, where: str) -> nn.Module:
    """The model as one plain forward pass, in eval mode, or a ConfigError saying why not."""
    plain = strategy.for_export(model)
    if plain is None:  # pragma: no cover - for_export raises with its reason
        raise ConfigError(f"{where}: strategy {strategy.name!r} cannot be exported")
    return plain.eval()


def example_inputs(model: nn.Module) -> tuple[list[str], tuple[torch.Tensor, ...]]:
    """Input names and example tensors: two images, or two texts of different lengths."""
    bb = model.backbone
    if bb.modality == "image":
        c, h, w = bb.preprocess["input_size"]
        gen = torch.Generator().manual_seed(0)
        return ["pixels"], (torch.randn(2, c, h, w, generator=gen),)
    tok = bb.tokenize(_EXAMPLE_TEXTS)
    names = list(tok)
    return names, tuple(tok[k] for k in names)


def _dynamic_axes(names: list[str], image: bool) -> dict[str, dict[int, str]]:
    axes = {n: ({0: "batch"} if image else {0: "batch", 1: "sequence"}) for n in names}
    axes.update({"logits": {0: "batch"}, "probabilities": {0: "batch"}})
    return axes


def _trace(graph: nn.Module, example, names: list[str], out: Path, opset: int) -> None:
    image = names == ["pixels"]
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            save_with(out, lambda tmp: torch.onnx.export(
                graph, example, tmp, input_names=names, output_names=["logits", "probabilities"],
                dynamic_axes=_dynamic_axes(names, image), opset_version=opset, dynamo=False))
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - the tracer's fault, said in one line
        msg = " ".join(str(e).split())[:200]
        raise ConfigError(f"{out}: ONNX export failed ({type(e).__name__}: {msg})") from None


def session(path: str | os.PathLike, threads: int | None = None):
    """An ONNX Runtime CPU session for an exported graph."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or torch.get_num_threads()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def run_session(sess, names: list[str], tensors) -> np.ndarray:
    """Probabilities from an exported graph for input tensors in ``names`` order."""
    feed = {n: t.detach().cpu().contiguous().numpy() for n, t in zip(names, tensors)}
    return sess.run(["probabilities"], feed)[0]


def verify(graph: nn.Module, out: Path, names: list[str], example) -> float:
    """Largest probability difference between ONNX Runtime and PyTorch on ``example`` and on
    its first sample alone (another batch size and, for texts, another sequence length than
    the traced ones: a shape frozen into the graph shows up here)."""
    sess = session(out)
    worst = 0.0
    for xs in (example, _first_sample(example, names)):
        with torch.inference_mode():
            ref = graph(*xs)[1].numpy()
        got = run_session(sess, names, xs)
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst


def _first_sample(example, names: list[str]) -> tuple[torch.Tensor, ...]:
    if names == ["pixels"]:
        return (example[0][:1],)
    mask = example[names.index("attention_mask")][0] if "attention_mask" in names else None
    n = int(mask.sum()) if mask is not None else example[0].shape[1]
    return tuple(t[:1, :n] for t in example)


def _checked(graph: nn.Module, out: Path, names: list[str], example) -> float:
    """:func:`verify`, refusing (and removing) a graph that does not reproduce the model."""
    diff = verify(graph, out, names, example)
    if not diff <= TOLERANCE:
        out.unlink(missing_ok=True)
        raise ConfigError(f"{out}: cannot export: the traced graph does not reproduce the "
                          f"model (probabilities differ by {diff:.2g} > {TOLERANCE:g}); its "
                          "forward pass depends on its input in a way tracing cannot keep")
    return diff


def describe(model, strategy, cfg, names, example, bundle, out: Path, opset: int) -> dict:
    bb = model.backbone
    image = bb.modality == "image"
    inputs = []
    for n, t in zip(names, example):
        shape = ["batch", *t.shape[1:]] if image else ["batch", "sequence"]
        inputs.append({"name": n, "shape": [int(s) if not isinstance(s, str) else s
                                            for s in shape],
                       "dtype": str(t.dtype).replace("torch.", "")})
    k = len(model.classes)
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "transferkit_version": __version__,
        "onnx": out.name, "opset": opset, "bundle": str(Path(bundle).resolve()),
        "modality": bb.modality, "backbone": cfg["backbone"], "strategy": cfg["strategy"],
        "inputs": inputs,
        "outputs": [{"name": "logits", "shape": ["batch", k], "dtype": "float32"},
                    {"name": "probabilities", "shape": ["batch", k], "dtype": "float32",
                     "note": "softmax of logits"}],
        "labels": list(model.classes),
        "preprocessing": _image_preprocessing(bb, cfg) if image else _text_preprocessing(bb),
    }


def _image_preprocessing(bb, cfg) -> dict[str, Any]:
    pre = dict(bb.preprocess)
    grayscale = bool(cfg.get("grayscale"))
    return {**pre, "grayscale": grayscale,
            "steps": describe_transform(pre, False, grayscale),
            "layout": "NCHW float32: RGB scaled to [0, 1], minus mean, divided by std"
                      + ("; grayscale images repeated over the 3 channels" if grayscale else "")}


def _text_preprocessing(bb) -> dict[str, Any]:
    return {"tokenizer": bb.name, "max_length": int(getattr(bb, "max_length", 0) or 0),
            "padding": "pad every text of a batch to the longest one; attention_mask is 1 for "
                       "real tokens and 0 for padding; texts cut at max_length tokens",
            "python": f"transferkit backbone {bb.name!r}: backbone.tokenize(texts)"}


def _save_tokenizer(bb, out: Path) -> str | None:
    """Save the backbone's tokenizer beside the graph (``OUT.tokenizer/``) when it can."""
    if bb.modality != "text":
        return None
    target = out.with_suffix(".tokenizer")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=out.parent))
    try:
        if not bb.save_tokenizer(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
            return None
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target.name
