"""``transferkit advise``: where the user's case sits in the eight-path map and in the
size x similarity guideline, from measurements, with the commands to run.

Measured on the training split ``fit`` would carve (cached features of the default backbone):

* **size**: labelled samples per class (the median class); *small* below
  :data:`~transferkit.auto.SMALL_PER_CLASS` (hymenoptera, ~100 per class, is small: ``freeze`` 95.0 % beat
  ``finetune`` 93.2 %; the UCI sentiment files, ~350 per class, are not: fine-tuning gained 3
  points over a probe; ``benchmarks/results/hymenoptera_grid.md``, ``text_uci.md``);
* **similarity to the pretraining data**: with a source classifier (the ImageNet head of the
  image backbones), its *familiarity* ``1 - H(p) / log K``, the mean confidence of its own
  predictions (hymenoptera photos: 0.77, scikit-learn's 8x8 digits: 0.2); *similar* from
  :data:`~transferkit.auto.FAMILIAR`; without one (text encoders) it is not measured and said so;
* **LogME** of the default backbone (``transferkit rank``), and with ``--target`` or
  ``--source`` the **proxy A-distance** between the two data sets' features (0: the same
  distribution, 2: perfectly separable).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .backbones import build_backbone
from .engine.cache import FeatureCache
from .engine.inputs import InputPipeline
from .errors import ConfigError
from .paths import PATHS
from .rank import training_split
from .auto import FAMILIAR, SMALL_PER_CLASS
from .select.transferability import familiarity, logme

#: proxy A-distance from which two data sets count as different domains
FAR = 1.0
DEFAULT_BACKBONE = {"image": "efficientnet_lite0", "text": "minilm"}

GUIDELINE = {
    ("small", "similar"): ("a linear classifier on the frozen features: too little data to "
                           "move the backbone without overfitting, and its features already fit",
                           ["--strategy linear", "--strategy freeze"]),
    ("small", "different"): ("the frozen features fit less well: adapt a little of the network "
                             "(its top layers, or low-rank adapters) and compare with a probe",
                             ["--strategy partial -o layers=2", "--strategy lora",
                              "--strategy linear"]),
    ("large", "similar"): ("enough data to fine-tune without much risk of overfitting",
                           ["--strategy finetune", "--strategy freeze"]),
    ("large", "different"): ("enough data to fine-tune the whole network from the pretrained "
                             "start, which still beats random initialisation",
                             ["--strategy finetune --epochs 15", "--strategy partial"]),
}


def _features(split, backbone: str, cache: FeatureCache):
    bb = build_backbone(backbone)
    pipe = InputPipeline(bb, device=torch.device("cpu"))
    pooled = cache.features(bb, pipe, split, batch_size=64)
    probs = bb.source_probabilities(pooled).double().numpy() if bb.source_head() else None
    return pooled.double().numpy(), probs


def measure(data, *, backbone: str | None = None, target=None, source=None,
            cache_dir: str | None = None, seed: int | None = None,
            skip_bad: bool = False) -> dict[str, Any]:
    """The measurements behind the advice (a JSON-able record)."""
    cache = FeatureCache(cache_dir, enabled=True)
    split = training_split(data, seed=seed, skip_bad=skip_bad)
    name = backbone or DEFAULT_BACKBONE[split.modality]
    feats, probs = _features(split, name, cache)
    counts = np.bincount(np.asarray(split.labels), minlength=len(split.classes))
    record: dict[str, Any] = {
        "data": str(data), "modality": split.modality, "backbone": name,
        "samples": int(len(split)), "classes": list(split.classes),
        "per_class_median": float(np.median(counts)), "per_class_min": int(counts.min()),
        "logme": logme(feats, split.labels),
        "familiarity": None if probs is None else familiarity(probs)}
    for role, other in (("target", target), ("source", source)):
        if other is not None:
            record[role] = _pair(other, name, cache, seed, skip_bad, feats, split)
    return record


def _pair(other, name, cache, seed, skip_bad, feats, split) -> dict[str, Any]:
    from .domain.features import proxy_a_distance

    o_split = training_split(other, seed=seed, skip_bad=skip_bad)
    if o_split.modality != split.modality:
        raise ConfigError(f"{other}: {o_split.modality} data, and {split.source} is "
                          f"{split.modality}: compare data of one modality")
    o_feats, _ = _features(o_split, name, cache)
    shared = sorted(set(split.classes) & set(o_split.classes))
    return {"data": str(other), "samples": int(len(o_split)),
            "proxy_a_distance": proxy_a_distance(feats, o_feats, seed=0),
            "same_labels": set(split.classes) == set(o_split.classes),
            "shared_classes": len(shared)}


def advise(data, **kw) -> dict[str, Any]:
    """Measure, then place the case: the guideline cell, the map's path, the commands."""
    m = measure(data, **kw)
    size = "small" if m["per_class_median"] < SMALL_PER_CLASS else "large"
    if m["familiarity"] is None:
        similarity, why_sim = "similar", ("not measured (the backbone has no source classifier); "
                                          "a text encoder pretrained on web text is assumed close")
    else:
        similarity = "similar" if m["familiarity"] >= FAMILIAR else "different"
        why_sim = f"source-classifier familiarity {m['familiarity']:.2f} (similar from {FAMILIAR})"
    reason, flags = GUIDELINE[(size, similarity)]
    path, commands = _path_and_commands(m, flags)
    m["advice"] = {"size": size, "similarity": similarity, "path": path, "commands": commands,
                   "reasons": [f"{size}: median class has {m['per_class_median']:.0f} labelled "
                               f"samples (small below {SMALL_PER_CLASS})",
                               f"{similarity}: {why_sim}", reason]}
    return m


def _path_and_commands(m: dict[str, Any], flags: list[str]) -> tuple[str, list[str]]:
    data = m["data"]
    base = [f"transferkit fit {data} --backbone {m['backbone']} {f}" for f in flags]
    if "target" in m:
        t = m["target"]
        if t["proxy_a_distance"] >= FAR:
            return "domain adaptation", [
                f"transferkit fit {data} --target {t['data']} --strategy {s}"
                for s in ("dann", "coral", "mmd")] + base[:1]
        return "task fine-tuning", base + [f"transferkit predict RUN/bundle {t['data']}"]
    if "source" in m:
        s = m["source"]
        far = s["proxy_a_distance"] >= FAR
        name = (("weight sharing" if far else "dataset merging") if s["same_labels"]
                else ("parallel training" if far else "multi-task learning"))
        cell = next(p for p in PATHS if p.name == name)
        return name, [cell.command + ("" if cell.ready() else "   (not available yet)")] + base
    return "task fine-tuning", base


def advice_text(m: dict[str, Any]) -> str:
    a = m["advice"]
    fam = "-" if m["familiarity"] is None else f"{m['familiarity']:.2f}"
    lines = [f"data: {m['data']} ({m['modality']}): {m['samples']} training samples, "
             f"{len(m['classes'])} classes (median {m['per_class_median']:.0f} a class)",
             f"measured with {m['backbone']}: LogME {m['logme']:.3f}, familiarity {fam}"]
    for role in ("target", "source"):
        if role in m:
            o = m[role]
            lines.append(f"{role}: {o['data']}: {o['samples']} samples, proxy A-distance "
                         f"{o['proxy_a_distance']:.2f}, {o['shared_classes']} shared classes")
    lines += [f"case: {a['size']} data, {a['similarity']} to the pretraining data; path: "
              f"{a['path']}", "why:"] + [f"  - {r}" for r in a["reasons"]]
    lines += ["run:"] + [f"  $ {c}" for c in a["commands"]]
    return "\n".join(lines)

