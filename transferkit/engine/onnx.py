"""ONNX Runtime path for frozen image backbones.

On CPUs, ONNX Runtime runs convolutional backbones several times faster than eager PyTorch
(it folds BatchNorm into convolutions and has better depthwise kernels), so feature
extraction with a frozen backbone goes through it when ``onnxruntime`` is installed.  The
exported graph is kept next to the feature cache, keyed by the backbone's identity and input
size, so export (a few seconds) happens once.  Features agree with eager PyTorch to about
1e-5; the cache namespace records which runtime made them.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from ..io import save_with

_SESSIONS: dict[str, object] = {}


def available() -> bool:
    if os.environ.get("TRANSFERKIT_NO_ONNX"):
        return False
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class _Pooled(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        return self.backbone(x)["pooled"]


def _key(backbone) -> str:
    payload = json.dumps({"id": backbone.identity(), "spec": backbone.spec(),
                          "pre": backbone.preprocess, "torch": torch.__version__},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def session_for(backbone, folder: Path):
    """An ONNX Runtime session computing ``pooled`` features of ``backbone`` (or None)."""
    key = _key(backbone)
    if key in _SESSIONS:
        return _SESSIONS[key]
    import onnxruntime as ort

    path = Path(folder) / "onnx" / f"{key}.onnx"
    if not path.exists():
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
    so = ort.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    _SESSIONS[key] = sess
    return sess


def run(session, x: torch.Tensor) -> torch.Tensor:
    out = session.run(None, {"x": x.contiguous().numpy()})[0]
    return torch.from_numpy(out)
