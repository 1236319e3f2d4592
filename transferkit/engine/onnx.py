"""ONNX Runtime path for frozen backbones (image backbones and text encoders).

On CPUs, ONNX Runtime runs convolutional backbones several times faster than eager PyTorch
(it folds BatchNorm into convolutions and has better depthwise kernels), and BERT-style text
encoders faster too (its graph optimisations fuse the transformer's small operators), so
feature extraction with a frozen backbone goes through it when ``onnxruntime`` is installed
(``TRANSFERKIT_NO_ONNX`` turns it off).  The exported graph is kept next to the feature cache,
keyed by the backbone's identity and settings, so export (a few seconds) happens once.

A text encoder's graph (:meth:`~transferkit.backbones.base.Backbone.export_pooled`: encoder,
pooling and normalisation, dynamic batch and sequence axes) is checked against eager PyTorch
on batches of other sizes and lengths before it is kept; a graph that does not agree is
dropped (the backbone then runs eagerly).  ONNX Runtime's offline transformer optimiser
(fp32 fused attention / skip-LayerNorm / GELU) is available (``optimize=True``) but not used
by default: on the 2-core EPYC of ``benchmarks/results/text_features.md`` the session's own
graph optimisations (level ALL) on the plain graph ran MiniLM 10-20 % faster than the fused
graph.  Sessions run with intra-op threads = torch's; a text session's threads do not spin
while waiting (on a loaded, shared CPU spinning cost its 2-thread runs 10-15 %).

Features agree with eager PyTorch to about 1e-6 (text) / 1e-5 (images); the cache namespace
records which runtime made them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from ..io import save_with

_SESSIONS: dict[str, object] = {}
#: text backbones (by graph key) whose graph could not be made to agree with eager PyTorch
_FAILED: set[str] = set()
#: bump when the way a text graph is made changes (its file name changes with it)
TEXT_GRAPH_VERSION = 1
#: run text graphs through ONNX Runtime's offline transformer optimiser (see above)
TRANSFORMER_OPTIMIZER = False
#: largest difference from eager PyTorch a text graph may show on the check batches,
#: relative to the largest feature magnitude (at least 1)
TEXT_TOLERANCE = 2e-5
#: sentences the text graph is checked on: several lengths, padded and unpadded batches
CHECK_TEXTS = (
    ["The film was good.", "A slow, beautiful and quite long story about two brothers who "
     "travel across the country in an old car, arguing all the way.", "no", "Why not?",
     "It works as described."],
    ["short one", "short two"],
)


def available() -> bool:
    if os.environ.get("TRANSFERKIT_NO_ONNX"):
        return False
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def supports(backbone) -> bool:
    """Whether ``backbone``'s pooled features can come from ONNX Runtime: image backbones, and
    text encoders that give ``pooled`` features (unless their graph failed its check)."""
    if backbone.modality == "image":
        return True
    return (backbone.modality == "text" and backbone.output == "pooled"
            and _key(backbone) not in _FAILED)


class _Pooled(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        return self.backbone(x)["pooled"]


def _key(backbone, optimize: bool = TRANSFORMER_OPTIMIZER) -> str:
    info = {"id": backbone.identity(), "spec": backbone.spec(), "pre": backbone.preprocess,
            "torch": torch.__version__}
    if backbone.modality == "text":
        import onnxruntime

        info |= {"graph": TEXT_GRAPH_VERSION, "ort": onnxruntime.__version__,
                 "optimize": optimize}
    payload = json.dumps(info, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def session_for(backbone, folder: Path, *, optimize: bool = TRANSFORMER_OPTIMIZER):
    """An ONNX Runtime session computing ``pooled`` features of ``backbone``; ``None`` when a
    text backbone's graph cannot be made (then :func:`supports` says no from now on).
    ``optimize``: pass a text graph through the transformer optimiser (kept only when it
    still agrees with eager PyTorch; the plain graph otherwise)."""
    key = _key(backbone, optimize)
    if key in _SESSIONS:
        return _SESSIONS[key]
    path = Path(folder) / "onnx" / f"{key}.onnx"
    if not path.exists():
        if backbone.modality == "text":
            if not _export_text(backbone, path, optimize):
                _FAILED.add(_key(backbone))
                return None
        else:
            _export_image(backbone, path)
    sess = open_session(path, spin=backbone.modality != "text")
    _SESSIONS[key] = sess
    return sess


def open_session(path, threads: int | None = None, *, spin: bool = True):
    """A CPU session on the graph at ``path``: all graph optimisations, ``threads`` intra-op
    threads (default: torch's thread count); ``spin=False``: idle threads do not spin."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or torch.get_num_threads()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _export_image(backbone, path: Path) -> None:
    c, h, w = backbone.preprocess["input_size"]
    was = backbone.training
    backbone.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            save_with(path, lambda tmp: torch.onnx.export(
                _Pooled(backbone), (torch.zeros(1, c, h, w),), tmp, input_names=["x"],
                output_names=["pooled"], dynamic_axes={"x": {0: "batch"}, "pooled": {0: "batch"}},
                opset_version=17, dynamo=False))
    finally:
        backbone.train(was)


def _export_text(backbone, path: Path, optimize: bool) -> bool:
    """Export, optimise and check a text backbone's graph into ``path``; False (with a
    warning) when no graph agrees with eager PyTorch."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        try:
            info = backbone.export_pooled(raw)
        except Exception as e:  # noqa: BLE001 - an encoder the exporter cannot trace
            warnings.warn(f"{backbone.name}: ONNX export failed, features run in PyTorch "
                          f"({type(e).__name__}: {' '.join(str(e).split())[:200]})")
            return False
        if info is None:
            return False
        reference = _eager_reference(backbone)
        best = None
        if optimize:
            fused = _transformer_optimize(raw, Path(tmp) / "fused.onnx", info)
            if fused is not None and _agrees(fused, reference):
                best = fused
        if best is None and _agrees(raw, reference):
            best = raw
        if best is None:
            warnings.warn(f"{backbone.name}: its ONNX graph does not agree with PyTorch; "
                          "features run in PyTorch")
            return False
        save_with(path, lambda t: shutil.copyfile(best, t))
    return True


def _eager_reference(backbone) -> list[tuple[dict, torch.Tensor]]:
    """``(inputs, eager pooled features)`` of the check batches."""
    was = backbone.training
    backbone.eval()
    try:
        with torch.inference_mode():
            out = []
            for texts in CHECK_TEXTS:
                batch = backbone.tokenize(texts)
                out.append((batch, backbone(batch)["pooled"].float().cpu()))
            return out
    finally:
        backbone.train(was)


def _agrees(path: Path, reference) -> bool:
    try:
        sess = open_session(path)
        for batch, want in reference:
            got = run(sess, batch)
            tol = TEXT_TOLERANCE * max(1.0, float(want.abs().max()))
            if got.shape != want.shape or float((got - want).abs().max()) > tol:
                return False
    except Exception:  # noqa: BLE001 - a graph ONNX Runtime cannot run does not agree
        return False
    return True


def _transformer_optimize(raw: Path, out: Path, info: dict) -> Path | None:
    """ONNX Runtime's transformer optimiser (fp32: fused attention, skip-LayerNorm, GELU)
    on ``raw``; ``None`` when it is unavailable or fails."""
    try:
        from onnxruntime.transformers import optimizer
    except Exception:  # noqa: BLE001 - an onnxruntime without it, or without onnx
        return None
    quiet = logging.getLogger("onnxruntime.transformers")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = optimizer.optimize_model(
                str(raw), model_type="bert", num_heads=info.get("num_heads", 0),
                hidden_size=info.get("hidden_size", 0), opt_level=0, use_gpu=False)
            model.save_model_to_file(str(out))
    except Exception:  # noqa: BLE001 - the plain graph is used instead
        return None
    finally:
        quiet.setLevel(level)
    return out


def run(session, x) -> torch.Tensor:
    """``pooled`` features of one batch: an image tensor, or a text backbone's token dict."""
    if isinstance(x, dict):
        feed = {}
        for inp in session.get_inputs():
            v = x.get(inp.name)
            if v is None:  # a batch without a mask: every token is real
                v = torch.ones_like(x["input_ids"])
            feed[inp.name] = v.detach().cpu().to(torch.int64).numpy()
    else:
        feed = {"x": x.detach().cpu().contiguous().numpy()}
    return torch.from_numpy(session.run(None, feed)[0])
