"""Atomic file writes: a reader never sees half a file, an interrupt never leaves one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def _atomic(path: str | os.PathLike, write: Callable[[str], None], durable: bool = False) -> Path:
    """Write ``path`` through ``write(tmp)`` on a temporary file beside it, then rename it into
    place; ``durable``: the file's bytes (and then the rename) reach the disk before the call
    returns, so that no later write can be on disk without this one (a power cut)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates the file 0600; give it the mode a plain open() would (0666 - umask)
        os.chmod(tmp, 0o666 & ~_umask())
        if durable:
            sync(tmp)
        os.replace(tmp, path)
        if durable:
            sync(path.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def sync(path: str | os.PathLike) -> None:
    """Flush a file's bytes, or a folder's entries, to the disk (``fsync``)."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if Path(path).is_dir() else 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # a folder that cannot be opened (some platforms): nothing to flush
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path, text: str, durable: bool = False) -> Path:
    def w(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return _atomic(path, w, durable)


def write_json(path, obj: Any, durable: bool = False) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n",
                      durable)


def write_bytes(path, data: bytes) -> Path:
    def w(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
    return _atomic(path, w)


def save_tensors(path, tensors: dict, metadata: dict[str, str] | None = None,
                 durable: bool = False) -> Path:
    from safetensors.torch import save_file

    clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return _atomic(path, lambda tmp: save_file(clean, tmp, metadata=metadata), durable)


def save_with(path, saver: Callable[[str], None]) -> Path:
    """Atomically write ``path`` with ``saver(tmp_path)`` (e.g. ``fig.savefig``)."""
    return _atomic(path, saver)


def _jsonable(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# --------------------------------------------------------------------------- nested state

def _encode_tree(obj: Any, tensors: dict) -> Any:
    import torch

    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().contiguous().cpu()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[_encode_tree(k, tensors), _encode_tree(v, tensors)]
                             for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode_tree(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode_tree(v, tensors) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} without pickle")


def _decode_tree(obj: Any, tensors: dict) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__tuple__" in obj:
            return tuple(_decode_tree(v, tensors) for v in obj["__tuple__"])
        return {_decode_tree(k, tensors): _decode_tree(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [_decode_tree(v, tensors) for v in obj]
    return obj


def save_state_tree(path, tree: Any, durable: bool = False) -> Path:
    """Write a nested state (e.g. an optimizer's ``state_dict()``: dicts with int keys, lists,
    tuples, numbers and tensors) as ``PATH.safetensors`` + ``PATH.json``, never pickle."""
    path = Path(path)
    tensors: dict = {}
    skeleton = _encode_tree(tree, tensors)
    save_tensors(path.with_suffix(".safetensors"), tensors, durable=durable)
    return write_json(path.with_suffix(".json"), skeleton, durable)


def load_state_tree(path, device: str | None = None) -> Any:
    """Read what :func:`save_state_tree` wrote."""
    from safetensors.torch import load_file

    path = Path(path)
    tensors = load_file(str(path.with_suffix(".safetensors")), device=str(device or "cpu"))
    return _decode_tree(json.loads(path.with_suffix(".json").read_text(encoding="utf-8")), tensors)
