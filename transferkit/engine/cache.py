"""Feature cache: a frozen backbone runs once per sample.

Features are stored per *sample* under a namespace keyed by the backbone (identity and
settings) and the transform; a sample is keyed by its content (a file's path, size and
modification time; an array's bytes; a text's characters).  So ten epochs of head training,
a second run with other head settings, or another seeded split of the same files, read the
features back instead of running the backbone again; only samples never seen are computed.

Layout: ``<cache dir>/<namespace>/<shard>.safetensors`` holding ``pooled`` ``(n, D)`` with the
sample keys in the file's metadata.  Shards are written atomically; a damaged shard is
ignored and its samples are recomputed.  The folder is ``--cache-dir``,
``$TRANSFERKIT_CACHE_DIR`` or ``~/.cache/transferkit/features``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from . import onnx
from .layers import extract_layer_features
from .onnx import run
from ..data.samples import Samples
from ..heads import masked_mean
from ..io import save_tensors

CACHE_VERSION = 2


def default_cache_dir() -> Path:
    env = os.environ.get("TRANSFERKIT_CACHE_DIR")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "transferkit" / "features"


def namespace(backbone, transform: str, runtime: str = "torch") -> str:
    payload = json.dumps({"v": CACHE_VERSION, "backbone": backbone.identity(),
                          "spec": backbone.spec(), "transform": transform, "runtime": runtime},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def item_key(item, modality: str = "image") -> str:
    h = hashlib.sha1()
    if modality == "text":
        h.update(b"text|" + str(item).encode("utf-8", "surrogatepass"))
    elif isinstance(item, np.ndarray):
        h.update(b"array")
        h.update(str((item.shape, item.dtype.str)).encode())
        h.update(np.ascontiguousarray(item).tobytes())
    elif isinstance(item, (str, os.PathLike)) and os.path.isfile(item):
        st = os.stat(item)
        # a path is bytes to the OS: a name that is not valid UTF-8 keeps its bytes
        h.update(b"file|" + os.fsencode(os.path.abspath(item))
                 + f"|{st.st_size}|{st.st_mtime_ns}".encode())
    else:
        h.update(b"other|" + str(item).encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:24]


class FeatureCache:
    """``runtime``: ``"auto"`` (ONNX Runtime on CPU when installed, for image backbones and
    text encoders giving pooled features),
    ``"torch"`` or ``"onnx"``."""

    def __init__(self, directory: str | os.PathLike | None = None, enabled: bool = True,
                 runtime: str = "auto"):
        self.dir = Path(directory) if directory else default_cache_dir()
        self.enabled = enabled
        self.runtime = runtime
        self.used_runtime: str | None = None
        self.hits = 0       # samples read from the cache
        self.misses = 0     # samples computed
        self.compute_s = 0.0   # running the backbone over samples (export not included)
        self.export_s = 0.0    # exporting the backbone to ONNX and starting its session

    def _index(self, ns_dir: Path) -> dict[str, tuple[Path, int]]:
        from safetensors import safe_open

        index: dict[str, tuple[Path, int]] = {}
        if not ns_dir.exists():
            return index
        for shard in sorted(ns_dir.glob("*.safetensors")):
            try:
                with safe_open(str(shard), "pt") as f:
                    keys = json.loads(f.metadata()["keys"])
            except Exception:  # damaged shard: ignore, its samples get recomputed
                continue
            for row, k in enumerate(keys):
                index[k] = (shard, row)
        return index

    def features(self, backbone, pipeline, samples, *, batch_size: int = 64,
                 progress=None) -> torch.Tensor:
        """Pooled features ``(N, D)`` of ``samples`` in item order."""
        runtime = self._runtime(backbone, pipeline)
        if not self.enabled:
            session = self._session(backbone, runtime)
            t0 = time.perf_counter()
            out = extract_features(backbone, pipeline, samples, batch_size=batch_size,
                                   progress=progress, session=session)
            self.compute_s += time.perf_counter() - t0
            self.misses += len(samples)
            return out
        ns_dir = self.dir / namespace(backbone, pipeline.describe(train=False), runtime)
        keys = [item_key(it, samples.modality) for it in samples.items]
        index = self._index(ns_dir)
        missing = [i for i, k in enumerate(keys) if k not in index]
        new_feats = None
        if missing:
            session = self._session(backbone, runtime)
            if runtime == "onnx" and session is None:  # no graph for it: eager, own namespace
                return self.features(backbone, pipeline, samples, batch_size=batch_size,
                                     progress=progress)
            t0 = time.perf_counter()
            sub = samples.subset(missing)
            new_feats = extract_features(backbone, pipeline, sub, batch_size=batch_size,
                                         progress=progress, session=session)
            self.compute_s += time.perf_counter() - t0
            new_keys = [keys[i] for i in missing]
            # one shard per distinct key set; duplicate keys within samples are fine
            name = hashlib.sha1("".join(new_keys).encode()).hexdigest()[:20]
            save_tensors(ns_dir / f"{name}.safetensors", {"pooled": new_feats},
                         metadata={"keys": json.dumps(new_keys), "backbone": backbone.identity()})
        self.misses += len(missing)
        self.hits += len(samples) - len(missing)
        return _assemble(keys, index, missing, new_feats, backbone.feature_dim)

    def features_many(self, backbone, pipeline, sets: dict, *, batch_size: int = 64,
                      progress=None, skip_bad: bool = False
                      ) -> tuple[dict[str, torch.Tensor], dict[str, list[int]]]:
        """:meth:`features` of several named sample sets in one pass: the samples the cache
        lacks, of every set, go through one loader (one start-up) and the backbone together.
        What is stored and counted is what :meth:`features` called set after set stores and
        counts: one shard per set, named by its new keys; a sample already computed for an
        earlier set is a hit of the later ones.

        ``skip_bad``: an image that cannot be decoded does not raise; its position is listed
        under its set's name in the second dict, its row is zero, it is neither stored nor
        counted.  Returns ``({name: (N, D) features}, {name: [bad positions]})``."""
        runtime = self._runtime(backbone, pipeline)
        if runtime == "onnx" and next(iter(sets.values())).modality != "image" \
                and self._session(backbone, runtime) is None:  # no graph: eager, own namespace
            runtime = self._runtime(backbone, pipeline)
        ns_dir = self.dir / namespace(backbone, pipeline.describe(train=False), runtime)
        keys = {n: [item_key(it, s.modality) for it in s.items] for n, s in sets.items()}
        index = self._index(ns_dir) if self.enabled else {}
        todo = _new_positions(keys, index)
        computed, bad_keys = self._compute_many(backbone, pipeline, sets, keys, todo, runtime,
                                                batch_size, progress, skip_bad)
        out: dict[str, torch.Tensor] = {}
        bad: dict[str, list[int]] = {}
        for name, ks in keys.items():
            bad[name] = [i for i, k in enumerate(ks) if k in bad_keys]
            good = [i for i, k in enumerate(ks) if k not in bad_keys]
            mine = [ks[i] for n, i in todo if n == name and ks[i] not in bad_keys]
            if mine and self.enabled:
                shard = hashlib.sha1("".join(mine).encode()).hexdigest()[:20]
                save_tensors(ns_dir / f"{shard}.safetensors",
                             {"pooled": torch.stack([computed[k] for k in mine])},
                             metadata={"keys": json.dumps(mine), "backbone": backbone.identity()})
            new = len(good) if not self.enabled else len(mine)
            self.misses += new
            self.hits += len(good) - new
            out[name] = _rows(ks, good, index, computed, backbone.feature_dim)
        return out, bad

    def _compute_many(self, backbone, pipeline, sets, keys, todo, runtime, batch_size,
                      progress, skip_bad) -> tuple[dict[str, torch.Tensor], set[str]]:
        """The features of the ``todo`` positions, in one pass: ``({key: row}, bad keys)``.
        Texts (read in the main process: no loader start-up to save) keep one pass per set,
        batched by length within the set as :meth:`features` batches them."""
        if not todo:
            return {}, set()
        first = next(iter(sets.values()))
        if first.modality != "image" and len({n for n, _ in todo}) > 1:
            computed: dict[str, torch.Tensor] = {}
            for name in dict.fromkeys(n for n, _ in todo):
                part = [(n, i) for n, i in todo if n == name]
                computed.update(self._compute_many(backbone, pipeline, sets, keys, part,
                                                   runtime, batch_size, progress, skip_bad)[0])
            return computed, set()
        joined = Samples(modality=first.modality, classes=[], labels=None,
                         items=[sets[n].items[i] for n, i in todo],
                         origins=[sets[n].origins[i] for n, i in todo], source=first.source)
        t0, export_before = time.perf_counter(), self.export_s
        bad: list[int] | None = [] if skip_bad else None
        # the graph is exported (a cold cache folder) while the loader's workers decode
        feats = extract_features(backbone, pipeline, joined, batch_size=batch_size,
                                 progress=progress, bad=bad,
                                 session_fn=lambda: self._session(backbone, runtime))
        self.compute_s += time.perf_counter() - t0 - (self.export_s - export_before)
        bad_set = set(bad or [])
        bad_keys = {keys[n][i] for j, (n, i) in enumerate(todo) if j in bad_set}
        return {keys[n][i]: feats[j] for j, (n, i) in enumerate(todo) if j not in bad_set}, bad_keys

    def layer_features(self, backbone, pipeline, samples, layers: list[int], *,
                       batch_size: int = 64) -> dict[int, torch.Tensor]:
        """``{layer: (N, D_layer)}``: the pooled outputs of intermediate ``layers`` (1-based
        numbers into ``feature_modules()``, see :mod:`transferkit.engine.layers`) of
        ``samples``.  Each layer has its own namespace (the transform plus the layer's number;
        always the PyTorch runtime); the samples some layer lacks are computed for every
        layer asked, in one pass."""
        if not self.enabled:
            out = extract_layer_features(backbone, pipeline, samples, layers, batch_size=batch_size)
            self.misses += len(samples)
            return out
        transform = pipeline.describe(train=False)
        dirs = {layer: self.dir / namespace(backbone, f"{transform}|layer={layer}", "torch")
                for layer in layers}
        keys = [item_key(it, samples.modality) for it in samples.items]
        indexes = {layer: self._index(d) for layer, d in dirs.items()}
        missing = sorted({i for idx in indexes.values() for i, k in enumerate(keys) if k not in idx})
        new: dict[int, torch.Tensor] = {}
        if missing:
            t0 = time.perf_counter()
            new = extract_layer_features(backbone, pipeline, samples.subset(missing), layers,
                                         batch_size=batch_size)
            self.compute_s += time.perf_counter() - t0
            new_keys = [keys[i] for i in missing]
            name = hashlib.sha1("".join(new_keys).encode()).hexdigest()[:20]
            for layer, feats in new.items():
                save_tensors(dirs[layer] / f"{name}.safetensors", {"pooled": feats},
                             metadata={"keys": json.dumps(new_keys),
                                       "backbone": backbone.identity()})
        self.misses += len(missing)
        self.hits += len(samples) - len(missing)
        # a sample every layer had is read back; one any layer lacked was just computed
        return {layer: _assemble(keys, indexes[layer], missing, new.get(layer), 0)
                for layer in layers}

    def _runtime(self, backbone, pipeline) -> str:
        rt = self.runtime
        if rt == "auto":
            rt = "onnx" if (pipeline.device.type == "cpu" and onnx.available()
                            and onnx.supports(backbone)) else "torch"
        elif rt == "onnx" and not onnx.supports(backbone):
            rt = "torch"
        self.used_runtime = rt
        return rt

    def _session(self, backbone, runtime: str):
        if runtime != "onnx":
            return None

        t0 = time.perf_counter()
        try:
            return onnx.session_for(backbone, self.dir)
        finally:
            self.export_s += time.perf_counter() - t0


def _new_positions(keys: dict[str, list[str]], index: dict) -> list[tuple[str, int]]:
    """``(set name, position)`` of every sample to compute: not in ``index`` and not first
    met in an earlier set (a set's own repeats are all kept, as :meth:`FeatureCache.features`
    keeps them)."""
    owner: dict[str, str] = {}
    todo = []
    for name, ks in keys.items():
        for i, k in enumerate(ks):
            if k not in index and owner.setdefault(k, name) == name:
                todo.append((name, i))
    return todo


def _rows(keys: list[str], good: list[int], index: dict, computed: dict[str, torch.Tensor],
          dim: int) -> torch.Tensor:
    """Rows of ``keys`` (zero at the positions not in ``good``): computed just now, or read
    from the shards ``index`` names."""
    kept = [keys[i] for i in good]
    missing = [j for j, k in enumerate(kept) if k in computed]
    new = torch.stack([computed[kept[j]] for j in missing]) if missing else None
    rows = _assemble(kept, index, missing, new, dim)
    if len(good) == len(keys):
        return rows
    out = torch.zeros((len(keys), rows.shape[1] if len(kept) else dim), dtype=torch.float32)
    out[good] = rows
    return out


def _assemble(keys: list[str], index: dict[str, tuple[Path, int]], missing: list[int],
              new_feats: torch.Tensor | None, default_dim: int) -> torch.Tensor:
    """Rows in ``keys`` order: ``missing`` positions from ``new_feats`` (in that order), the
    others read from the shards ``index`` names."""
    out: torch.Tensor | None = None
    loaded: dict[Path, torch.Tensor] = {}
    miss_pos = {i: j for j, i in enumerate(missing)}
    for i, k in enumerate(keys):
        if i in miss_pos:
            row = new_feats[miss_pos[i]]
        else:
            shard, r = index[k]
            if shard not in loaded:
                from safetensors.torch import load_file

                loaded[shard] = load_file(str(shard))["pooled"]
            row = loaded[shard][r]
        if out is None:
            out = torch.empty((len(keys), row.shape[0]), dtype=torch.float32)
        out[i] = row
    if out is None:
        out = torch.empty((0, default_dim))
    return out


def extract_features(backbone, pipeline, samples, *, batch_size: int = 64, progress=None,
                     session=None, bad: list[int] | None = None,
                     session_fn=None) -> torch.Tensor:
    """Run the frozen backbone once over ``samples``; pooled features in item order.

    With an ONNX Runtime ``session``, the graph runs there instead.
    ``bad``: a list that receives the positions of images that cannot be decoded (their
    rows stay zero) instead of raising.  ``session_fn()``: builds the session (or returns
    None) once the loader has started, so that exporting the graph overlaps the decoding.
    """
    was_training = backbone.training
    backbone.eval()
    out: torch.Tensor | None = None
    task = progress.add_task("features", total=len(samples)) if progress else None
    held = [session, session_fn is None]   # the session, and whether it is built

    def build() -> None:
        if not held[1]:
            held[0], held[1] = session_fn(), True

    def started() -> None:  # more than a batch: the workers decode while the graph exports
        if len(samples) > batch_size:
            build()
    try:
        with torch.inference_mode():
            for batch in pipeline.batches(samples, batch_size=batch_size, bad=bad,
                                          started=started):
                if not len(batch.indices):
                    continue
                build()  # not before a decodable image (a warm cache rereads bad ones alone)
                session = held[0]
                if session is not None:
                    f = run(session, batch.inputs)
                else:
                    o = backbone(batch.inputs)
                    f = o["pooled"] if "pooled" in o else masked_mean(o["tokens"], o["mask"])
                    f = f.float().cpu()
                if out is None:
                    out = torch.zeros((len(samples), f.shape[1]), dtype=torch.float32)
                out[batch.indices] = f
                if progress:
                    progress.advance(task, len(batch.indices))
    finally:
        backbone.train(was_training)
        if progress and task is not None:
            progress.remove_task(task)
    if out is None:
        out = torch.zeros((len(samples), backbone.feature_dim))
    return out.clone()
