"""A run's checkpoint on disk: complete or absent, and checked before it is used.

``RUN/checkpoint/`` holds::

    state.json       the manifest, written last: the loop's position (stage, epoch, history,
                     scheduler, best epoch) and, for every file of the checkpoint, its size
                     and SHA-256, in the folder it names
    <epoch folder>/  model.safetensors (the trained tensors), best.safetensors (the best
                     ones so far), optimizer.safetensors + optimizer.json (its state)

Every save writes a new epoch folder, flushes it to the disk, then replaces ``state.json``
in one atomic rename, and only then removes the folders no manifest names.  A process
killed at any point leaves either the previous checkpoint or the new one, never a mix
(before this layout the files were replaced one after another in place: a kill between two
of them left new weights beside the old epoch number).  :func:`read_checkpoint` verifies
every file against the manifest before anything is loaded; a damaged checkpoint is refused,
naming the file.  The single-folder layout of transferkit 0.1 (no ``format`` in
``state.json``) is still read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file

from ..errors import CheckpointError
from ..io import load_state_tree, save_state_tree, save_tensors, sync, write_json

FORMAT = 2
MANIFEST = "state.json"
#: the manifest's entries, with the JSON types they must have
POSITION = {"stage": int, "epoch": int, "bad_epochs": int, "history": list, "best": dict}


@dataclass
class Restored:
    """What a checkpoint holds: the loop's position and the tensors to put back."""

    manifest: Path
    position: dict[str, Any]
    model: dict[str, Any]
    best: dict[str, Any] | None
    optimizer: Any | None


def damaged(path: Path, why: str, root: Path | None = None) -> CheckpointError:
    """The one-line refusal of a damaged checkpoint file (``root``: the checkpoint folder,
    by default the file's own)."""
    root = root or path.parent
    return CheckpointError(f"{path}: the checkpoint is damaged ({why}); it cannot be resumed. "
                           f"Delete {root} and resume again to train from the start")


def write_checkpoint(folder: Path, tensors: dict, best: dict | None, optimizer: Any | None,
                     position: dict[str, Any]) -> Path:
    """Write one complete checkpoint into ``folder`` and make it the current one."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = Path(tempfile.mkdtemp(dir=folder, prefix=f"e{len(position['history']):04d}-"))
    os.chmod(data, 0o777 & ~_umask())
    save_tensors(data / "model.safetensors", tensors, durable=True)
    if best is not None:
        save_tensors(data / "best.safetensors", best, durable=True)
    if optimizer is not None:
        save_state_tree(data / "optimizer", optimizer, durable=True)
    sync(data)
    files = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(data.iterdir())}
    manifest = write_json(folder / MANIFEST, {"format": FORMAT, "folder": data.name,
                                              "files": files, **position}, durable=True)
    _remove_all_but(folder, {MANIFEST, data.name})
    return manifest


def read_checkpoint(folder: Path, device: str | None = None) -> Restored | None:
    """The checkpoint in ``folder``, verified (``None`` when there is none); a damaged one
    raises :class:`~transferkit.errors.CheckpointError` naming the file."""
    manifest = Path(folder) / MANIFEST
    if not manifest.exists():
        return None
    st = _read_manifest(manifest)
    if "format" in st:
        data = _verified_folder(manifest, st)
    else:  # transferkit 0.1: the files beside state.json, no sizes or hashes to check
        data = manifest.parent
    root = manifest.parent
    model = _tensors(data / "model.safetensors", root)
    best = (_tensors(data / "best.safetensors", root) if (data / "best.safetensors").exists()
            else None)
    optimizer = None
    if (data / "optimizer.json").exists():
        try:
            optimizer = load_state_tree(data / "optimizer", device)
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as e:
            raise damaged(data / "optimizer.json", _why(e), root) from None
    position = {k: st[k] for k in POSITION}
    position["scheduler"] = st.get("scheduler")
    return Restored(manifest, position, model, best, optimizer)


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        st = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        raise damaged(path, f"not readable as JSON: {_why(e)}") from None
    if not isinstance(st, dict):
        raise damaged(path, "not a table")
    for key, kind in POSITION.items():
        if not isinstance(st.get(key), kind) or isinstance(st.get(key), bool):
            raise damaged(path, f"{key!r} is missing or not a {kind.__name__}")
    if "format" in st and st["format"] != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {st['format']!r} is not one this "
                              f"transferkit reads ({FORMAT}); upgrade transferkit")
    return st


def _verified_folder(manifest: Path, st: dict[str, Any]) -> Path:
    name, files = st.get("folder"), st.get("files")
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise damaged(manifest, "it names no checkpoint folder")
    if not isinstance(files, dict) or "model.safetensors" not in files:
        raise damaged(manifest, "it lists no model.safetensors")
    data = manifest.parent / name
    if not data.is_dir():
        raise damaged(data, "the folder state.json names is missing", manifest.parent)
    for fname, want in files.items():
        path = data / str(fname)
        if Path(str(fname)).name != fname or not isinstance(want, dict):
            raise damaged(manifest, f"a bad file entry {fname!r}")
        if not path.is_file():
            raise damaged(path, "the file is missing", manifest.parent)
        if path.stat().st_size != want.get("bytes") or _sha256(path) != want.get("sha256"):
            raise damaged(path, "its size or SHA-256 differs from state.json", manifest.parent)
    return data


def _tensors(path: Path, root: Path) -> dict[str, Any]:
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise damaged(path, "the file is missing", root) from None
    except (OSError, ValueError, SafetensorError) as e:
        raise damaged(path, _why(e), root) from None


def _remove_all_but(folder: Path, keep: set[str]) -> None:
    """Remove what earlier saves left in ``folder`` (older epoch folders, the files of the
    old single-folder layout, the temporary files of a save that was cut short)."""
    for p in folder.iterdir():
        if p.name in keep:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            try:
                p.unlink()
            except OSError:
                pass


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _why(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:200]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
