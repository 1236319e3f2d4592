"""What a fitted model looks at: attention maps, attention rollout, Grad-CAM, token attributions.

:func:`explain` loads a bundle, runs each input through it, and writes one PNG per input, a
JSON file with the raw maps (``explain.json``) and one HTML page (``explain.html``) that shows
the PNGs (by relative path) and, for text, the tokens coloured by their scores.

* Vision Transformers (timm ``VisionTransformer``): the last block's attention averaged over
  heads (the class token's row, over the patch grid; the mean over patch rows when the model
  has no class token) and attention rollout (Abnar & Zuidema 2020: per block, heads averaged,
  identity added for the residual path, rows renormalised; multiplied through the blocks).
  *Before*: a fresh backbone rebuilt from the bundle's backbone spec (the pretrained weights);
  *after*: the bundle's model, through whatever path its strategy runs (prompts included).
  The attention probabilities are read by switching each block's ``attn.fused_attn`` off for
  the call and hooking ``attn.attn_drop`` (its input is the softmax).  Tokens that a strategy
  adds (prompts) sit after the class/register tokens; the maps show the patch columns, and for
  deep prompts the rollout treats each block's fresh prompts as new inputs (their rows are
  reset to the identity before the block).  When a strategy runs the blocks more than once,
  the last pass (the one the head reads) is used.
* CNNs (other timm models): Grad-CAM (Selvaraju et al. 2017) for the predicted class on the
  last convolutional activation with at least 2x2 positions.  The pretrained backbone has no
  class for the new labels, so *before* is a class-agnostic map: the L2 norm over channels of
  the same activation of the fresh backbone.
* Transformer text encoders: gradient x input on the token embeddings for the predicted class
  (after), and the last layer's attention averaged over heads and over the (real) query
  tokens, before and after; attention that goes to prompt tokens is reported as a share.

Images are decoded with :func:`~transferkit.data.images.open_image` (``grayscale`` as the
bundle was trained) and preprocessed with the backbone's evaluation transform.
"""

from __future__ import annotations

import html
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from ..backbones import Backbone, build_from_spec
from ..bundle import load_model, read_config
from ..data.images import check_image, open_image
from ..data.readers import IMAGE_EXTENSIONS
from ..data.transforms import eval_transform
from ..errors import ConfigError, DataError
from ..io import save_with, write_json, write_text
from ..strategies.prompt import PromptTokens
from .plots import _plt

_HEAD_NAMES = {"global_pool", "head", "fc", "classifier", "head_drop", "fc_norm", "pool",
               "flatten", "pre_logits", "head_hidden_size"}
_CONTAINERS = ("blocks", "stages", "layers", "features")


# --------------------------------------------------------------------------- entry point

def explain(bundle_path, inputs: list[str], out_dir, *, texts: bool = False,
            model=None) -> list[Path]:
    """Write attention / attribution maps of the bundle's model for ``inputs`` under ``out_dir``.

    ``inputs`` are image files or folders of images for an image model; for a text model they
    are text files (each file one text) or, with ``texts=True``, the texts themselves.
    Returns the paths written: one PNG per input, ``explain.json`` and ``explain.html``.
    ``model``: the model the bundle was just saved from, still in memory (a run's report),
    used in place of rebuilding it from the bundle's files (the same weights).
    """
    inputs = [str(x) for x in (inputs or [])]
    if not inputs:
        raise ConfigError("explain: no inputs given")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: exists and is not a folder")
    if model is None:
        model, _, cfg = load_model(bundle_path)
    else:
        cfg = read_config(Path(bundle_path))
    if model.tasks or model.domains:
        what = "several tasks" if model.tasks else "a part per input domain"
        raise ConfigError(f"{bundle_path}: the model has {what}; explain takes a model of one "
                          "task and one domain")
    classes = list(model.classes)
    bb = model.backbone
    kind = _kind(bb)

    if bb.modality == "image":
        if texts:
            raise ConfigError("explain: this model takes images, not texts")
        items = _image_files(inputs)
        for origin, path in items:  # a bad file fails before any work is done
            check_image(path, origin)
    else:
        if texts:
            items = [(f"text {i + 1}", t) for i, t in enumerate(inputs)]
        else:
            items = [(x, _read_text_file(x)) for x in inputs]

    fresh = _fresh_backbone(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    written: list[Path] = []
    model.eval()
    if bb.modality == "image":
        tf = eval_transform(bb.preprocess)
        grayscale = bool(cfg.get("grayscale", False))
        for i, (origin, path) in enumerate(items):
            x = tf(open_image(path, origin, grayscale=grayscale)).unsqueeze(0)
            shown = _denormalise(x[0], bb.preprocess)
            name = f"{i:03d}_{_safe(Path(origin).stem)}.png"
            if kind == "vit":
                rec = _explain_vit(model, fresh, x)
                _plot_vit(shown, rec, classes, out_dir / name)
            else:
                rec = _explain_cnn(model, fresh, x)
                _plot_cnn(shown, rec, classes, out_dir / name)
            rec.update({"input": origin, "png": name})
            records.append(rec)
            written.append(out_dir / name)
    else:
        for i, (origin, text) in enumerate(items):
            rec = _explain_text(model, fresh, text)
            name = f"{i:03d}_text.png"
            _plot_text(rec, classes, out_dir / name)
            rec.update({"input": origin, "text": text, "png": name})
            records.append(rec)
            written.append(out_dir / name)

    for rec in records:
        p = rec.pop("probabilities")
        rec["predicted"] = classes[int(np.argmax(p))]
        rec["probabilities"] = {c: float(v) for c, v in zip(classes, p)}
    meta = {"bundle": str(Path(bundle_path)), "backbone": bb.name, "kind": kind,
            "strategy": cfg.get("strategy", {}).get("name"), "classes": list(classes)}
    written.append(write_json(out_dir / "explain.json", {**meta, "inputs": records}))
    written.append(_write_html(out_dir / "explain.html", meta, records))
    return written


#: what explain shows for each backbone family
_KINDS = {"vit": "vit", "cnn": "cnn", "text-encoder": "text"}
#: the backbone families explain covers
EXPLAINED_FAMILIES = tuple(_KINDS)


def _kind(backbone: Backbone) -> str:
    if backbone.family in _KINDS:
        return _KINDS[backbone.family]
    raise ConfigError(f"explain: backbone {backbone.name!r} is not supported (explain covers "
                      "timm Vision Transformers and CNNs and transformer text encoders)")


def _fresh_backbone(cfg: dict[str, Any]) -> Backbone:
    bb = build_from_spec(cfg["backbone"])
    if cfg.get("max_length") and hasattr(bb, "max_length"):
        bb.max_length = cfg["max_length"]
    bb.eval()
    return bb


def _image_files(inputs: list[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for x in inputs:
        p = Path(x)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise DataError(f"{x}: folder holds no image files")
            out += [(str(f), str(f)) for f in found]
        elif p.exists():
            out.append((x, x))
        else:
            raise DataError(f"{x}: no such file or folder")
    return out


def _read_text_file(x: str) -> str:
    p = Path(x)
    if not p.is_file():
        raise DataError(f"{x}: no such file (use --text for texts given on the command line)")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{x}: not a UTF-8 text file") from None
    except OSError as e:
        raise DataError(f"{x}: cannot read file ({e.strerror or e})") from None
    if not text.strip():
        raise DataError(f"{x}: empty text file")
    return text.strip()


def _safe(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[:40] or "input"


def _denormalise(x: torch.Tensor, pre: dict[str, Any]) -> np.ndarray:
    mean = torch.tensor(pre["mean"]).view(-1, 1, 1)
    std = torch.tensor(pre["std"]).view(-1, 1, 1)
    return (x * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def _softmax(logits: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits.detach().float()[0], dim=0).numpy()


# --------------------------------------------------------------------------- ViT attention

def attention_rollout(maps: list[torch.Tensor], reset_rows: list[int] | None = None) -> torch.Tensor:
    """Attention rollout ``(N, N)`` of per-block attention ``(heads, N, N)`` (one sample).

    Each block: heads averaged, identity added (residual path), rows renormalised; the result
    multiplied through the blocks.  ``reset_rows`` (deep prompts) are tokens replaced by fresh
    inputs before every block after the first: their rows start again as the identity.
    """
    n = maps[0].shape[-1]
    eye = torch.eye(n, dtype=torch.float64)
    r = eye.clone()
    for li, a in enumerate(maps):
        a = a.double().mean(0) + eye
        a = a / a.sum(-1, keepdim=True)
        if li > 0 and reset_rows:
            r[reset_rows] = eye[reset_rows]
        r = a @ r
    return r


def _vit_layout(backbone: Backbone, n_seq: int, model=None) -> dict[str, Any]:
    tl = backbone.token_layout()
    prefix = tl.prefix
    gh, gw = tl.grid
    extra = n_seq - prefix - gh * gw
    if extra < 0:
        raise ConfigError(f"explain: attention over {n_seq} tokens does not cover the "
                          f"{gh}x{gw} patch grid")
    prompts = getattr(model, "prompts", None) if model is not None else None
    deep = isinstance(prompts, PromptTokens) and prompts.kind == "vit" and prompts.deep and \
        prompts.n_tokens == extra
    return {"prefix": prefix, "extra": extra, "grid": (gh, gw), "deep_prompts": deep,
            "has_cls": tl.has_cls}


def _vit_maps(maps: list[torch.Tensor], layout: dict[str, Any]) -> dict[str, Any]:
    p, e = layout["prefix"], layout["extra"]
    gh, gw = layout["grid"]
    start = p + e
    last = maps[-1][0].double().mean(0)
    reset = list(range(p, p + e)) if layout["deep_prompts"] else None
    roll = attention_rollout([m[0] for m in maps], reset)

    def row(mat: torch.Tensor) -> torch.Tensor:
        if layout["has_cls"]:
            return mat[0]
        return mat[start:].mean(0)

    out = {"last": row(last)[start:].reshape(gh, gw).numpy(),
           "rollout": row(roll)[start:].reshape(gh, gw).numpy(),
           "rollout_matrix": roll,
           "extra_share_last": float(row(last)[p:start].sum()) if e else 0.0}
    return out


def vit_attention(target: nn.Module, x: torch.Tensor, *, model: nn.Module | None = None
                  ) -> tuple[dict[str, Any], Any]:
    """Last-block attention and rollout maps of one image through ``target``.

    ``target`` is a ViT backbone or a model around one (``model``: the fitted model, whose
    prompts tell where the extra tokens sit).  Returns ``(maps, target(x))``; maps holds the
    ``last`` and ``rollout`` patch grids, the full ``rollout_matrix`` and the ``layout``.
    """
    bb = target if isinstance(target, Backbone) else target.backbone
    if bb.family != "vit":
        raise ConfigError("explain: attention maps need a timm Vision Transformer backbone")
    with bb.attention_maps() as maps, torch.no_grad():
        out = target(x)
    if not maps:
        raise ConfigError("explain: the model ran no attention block")
    maps = maps[-len(bb.transformer_blocks()):]
    layout = _vit_layout(bb, maps[-1].shape[-1], model)
    res = _vit_maps(maps, layout)
    res["layout"] = layout
    return res, out


def _explain_vit(model, fresh, x: torch.Tensor) -> dict[str, Any]:
    before, _ = vit_attention(fresh, x)
    after, _ = vit_attention(model, x, model=model)
    with torch.no_grad():
        logits = model(x)  # the model's own (fused-attention) path gives the prediction
    rec = {"kind": "vit", "probabilities": _softmax(logits),
           "grid": list(after["layout"]["grid"]),
           "prompt_tokens": after["layout"]["extra"],
           "prompt_attention_share": after["extra_share_last"],
           "before": {"last_layer": before["last"].tolist(), "rollout": before["rollout"].tolist()},
           "after": {"last_layer": after["last"].tolist(), "rollout": after["rollout"].tolist()}}
    return rec


# --------------------------------------------------------------------------- CNN Grad-CAM

def _conv_candidates(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """Top-level children and the elements of stage containers, in definition order."""
    skip = set()
    get = getattr(net, "get_classifier", None)
    if callable(get):
        head = get()
        for h in (head if isinstance(head, (tuple, list)) else (head,)):
            if isinstance(h, nn.Module):
                skip.add(id(h))
    out = []
    for name, child in net.named_children():
        if name in _HEAD_NAMES or id(child) in skip:
            continue
        if name in _CONTAINERS and isinstance(child, (nn.Sequential, nn.ModuleList)):
            out += [(f"{name}.{n}", c) for n, c in child.named_children()]
        out.append((name, child))
    return out


@contextmanager
def _capture_convs(net: nn.Module) -> Iterator[list[tuple[str, torch.Tensor]]]:
    acts: list[tuple[str, torch.Tensor]] = []
    nhwc = "NHWC" in str(getattr(net, "output_fmt", "NCHW"))
    handles = []
    for name, mod in _conv_candidates(net):
        def hook(m, args, out, name=name):
            if isinstance(out, torch.Tensor) and out.dim() == 4:
                acts.append((name, out.permute(0, 3, 1, 2) if nhwc else out))
        handles.append(mod.register_forward_hook(hook))
    try:
        yield acts
    finally:
        for h in handles:
            h.remove()


def _pick(acts: list[tuple[str, torch.Tensor]]) -> tuple[str, torch.Tensor]:
    if not acts:
        raise ConfigError("explain: the model produced no convolutional feature map")
    spatial = [a for a in acts if min(a[1].shape[-2:]) >= 2]
    return (spatial or acts)[-1]


def _normalised(m: np.ndarray) -> np.ndarray:
    m = np.nan_to_num(np.asarray(m, dtype=np.float64))
    lo, hi = float(m.min()), float(m.max())
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def grad_cam(model, x: torch.Tensor) -> dict[str, Any]:
    """Grad-CAM of ``model`` (backbone + head) for its predicted class on one image."""
    net = model.backbone.network
    x = x.clone().requires_grad_(True)
    with _capture_convs(net) as acts, torch.enable_grad():
        logits = model(x)
        layer, act = _pick(acts)
        cls = int(logits[0].argmax())
        grad, = torch.autograd.grad(logits[0, cls], act)
    weights = grad[0].mean(dim=(1, 2))
    cam = torch.relu((weights[:, None, None] * act[0]).sum(0)).detach()
    return {"layer": layer, "cam": cam.double().numpy(), "class": cls, "logits": logits.detach()}


def activation_norm(backbone, x: torch.Tensor, layer: str) -> np.ndarray:
    """L2 norm over channels of ``layer``'s activation in ``backbone`` (class-agnostic)."""
    with _capture_convs(backbone.network) as acts, torch.no_grad():
        backbone(x)
    named = [a for a in acts if a[0] == layer]
    _, act = (named or [_pick(acts)])[-1]
    return act[0].double().norm(dim=0).numpy()


def _explain_cnn(model, fresh, x: torch.Tensor) -> dict[str, Any]:
    g = grad_cam(model, x)
    before = activation_norm(fresh, x, g["layer"])
    return {"kind": "cnn", "probabilities": _softmax(g["logits"]), "layer": g["layer"],
            "grid": list(g["cam"].shape),
            "before": {"activation_norm": before.tolist()},
            "after": {"grad_cam": g["cam"].tolist()}}


# --------------------------------------------------------------------------- text

def _attention_profile(attn: list[torch.Tensor], n_tokens: int) -> tuple[np.ndarray | None, float]:
    """Attention each real token receives (mean over heads and real queries), prompt share."""
    if not attn:
        return None, 0.0
    a = attn[-1][0].double().mean(0)         # (Tq, Tk), the last pass
    extra = a.shape[-1] - n_tokens            # prompts come first
    if extra < 0:
        return None, 0.0
    received = a[extra:].mean(0)               # over real queries
    return received[extra:].numpy(), float(received[:extra].sum())


def text_attribution(model, text: str) -> dict[str, Any]:
    """Gradient x input on the token embeddings for the predicted class, and attention."""
    bb = model.backbone
    batch = bb.tokenize([text])
    ids = batch["input_ids"][0].tolist()
    store: list[torch.Tensor] = []

    def keep(m, args, out):
        t = out.detach().requires_grad_(True)
        store.append(t)
        return t

    h = bb.input_embeddings().register_forward_hook(keep)
    try:
        with bb.attention_maps() as attn, torch.enable_grad():
            logits = model(batch)
            cls = int(logits[0].argmax())
            # a strategy may embed the tokens more than once (a second, steered pass): the
            # total gradient is the sum over every use of the same embeddings
            grads = torch.autograd.grad(logits[0, cls], store, allow_unused=True)
    finally:
        h.remove()
    used = [(g, e) for g, e in zip(grads, store) if g is not None]
    if not used:
        raise ConfigError("explain: the prediction does not depend on the token embeddings")
    gxi = sum((g[0] * e[0]).sum(-1) for g, e in used).detach().double().numpy()
    received, share = _attention_profile(attn, len(ids))
    tokens = bb.token_names(ids)
    return {"tokens": list(tokens), "grad_x_input": gxi, "attention": received,
            "prompt_share": share, "logits": logits.detach(), "class": cls}


def text_attention(backbone: Backbone, text: str) -> np.ndarray | None:
    with backbone.attention_maps() as attn, torch.no_grad():
        batch = backbone.tokenize([text])
        backbone(batch)
    return _attention_profile(attn, batch["input_ids"].shape[1])[0]


def _explain_text(model, fresh, text: str) -> dict[str, Any]:
    after = text_attribution(model, text)
    before = text_attention(fresh, text)

    def lst(v):
        return None if v is None else [float(a) for a in v]

    return {"kind": "text", "probabilities": _softmax(after["logits"]), "tokens": after["tokens"],
            "grad_x_input": lst(after["grad_x_input"]),
            "attention_before": lst(before), "attention_after": lst(after["attention"]),
            "prompt_attention_share": after["prompt_share"]}


# --------------------------------------------------------------------------- plots

def _overlay(ax, image: np.ndarray, grid: np.ndarray | None, title: str) -> None:
    ax.imshow(image)
    if grid is not None:
        g = torch.as_tensor(_normalised(grid), dtype=torch.float32)[None, None]
        up = torch.nn.functional.interpolate(g, size=image.shape[:2], mode="bilinear",
                                             align_corners=False)[0, 0].numpy()
        ax.imshow(up, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def _pred_title(rec: dict[str, Any], classes: list[str]) -> str:
    p = rec["probabilities"]
    i = int(np.argmax(p))
    return f"after: predicted {classes[i]} ({p[i]:.2f})"


def _save(fig, path: Path) -> None:
    plt = _plt()
    fig.tight_layout()
    save_with(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


def _plot_vit(image: np.ndarray, rec: dict[str, Any], classes: list[str], path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(2, 3, figsize=(9, 6.4))
    b, a = rec["before"], rec["after"]
    _overlay(axes[0, 0], image, None, "before: pretrained backbone")
    _overlay(axes[0, 1], image, np.array(b["last_layer"]), "last-layer attention (heads avg)")
    _overlay(axes[0, 2], image, np.array(b["rollout"]), "attention rollout")
    _overlay(axes[1, 0], image, None, _pred_title(rec, classes))
    _overlay(axes[1, 1], image, np.array(a["last_layer"]), "last-layer attention (heads avg)")
    _overlay(axes[1, 2], image, np.array(a["rollout"]), "attention rollout")
    _save(fig, path)


def _plot_cnn(image: np.ndarray, rec: dict[str, Any], classes: list[str], path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.4))
    _overlay(axes[0], image, None, "input")
    _overlay(axes[1], image, np.array(rec["before"]["activation_norm"]),
             f"before: activation norm ({rec['layer']})")
    _overlay(axes[2], image, np.array(rec["after"]["grad_cam"]),
             _pred_title(rec, classes).replace("after:", "after: Grad-CAM,"))
    _save(fig, path)


def _plot_text(rec: dict[str, Any], classes: list[str], path: Path) -> None:
    plt = _plt()
    tokens = rec["tokens"]
    n = len(tokens)
    width = min(24.0, max(6.0, 0.32 * n + 1.5))
    rows = [("gradient x input (after)", rec["grad_x_input"]),
            ("attention received, before", rec["attention_before"]),
            ("attention received, after", rec["attention_after"])]
    rows = [r for r in rows if r[1] is not None]
    fig, axes = plt.subplots(len(rows), 1, figsize=(width, 1.9 * len(rows) + 0.8), sharex=True,
                             squeeze=False)
    xs = np.arange(n)
    for ax, (title, vals) in zip(axes[:, 0], rows):
        v = np.asarray(vals, dtype=float)
        colours = ["#c0392b" if t >= 0 else "#2e86c1" for t in v]
        ax.bar(xs, v, color=colours)
        ax.set_title(title, fontsize=9, loc="left")
        ax.axhline(0, color="grey", lw=0.5)
    axes[-1, 0].set_xticks(xs, tokens, rotation=60, ha="right", fontsize=8)
    fig.suptitle(_pred_title(rec, classes), fontsize=10)
    _save(fig, path)


# --------------------------------------------------------------------------- HTML

def _coloured(tokens: list[str], vals: list[float] | None, signed: bool) -> str:
    if vals is None:
        return "<em>not available</em>"
    v = np.asarray(vals, dtype=float)
    scale = float(np.abs(v).max()) or 1.0
    spans = []
    for t, s in zip(tokens, v):
        a = min(1.0, abs(s) / scale)
        colour = (f"rgba(192,57,43,{a:.2f})" if s >= 0 else f"rgba(46,134,193,{a:.2f})") if signed \
            else f"rgba(39,174,96,{a:.2f})"
        spans.append(f'<span class="tok" style="background:{colour}" title="{s:.4g}">'
                     f"{html.escape(t)}</span>")
    return " ".join(spans)


_NOTES = {
    "vit": ("Attention of the last block averaged over heads (the class token's row over the "
            "patch grid), and attention rollout (heads averaged, identity added, rows "
            "renormalised, multiplied through the blocks). Before: the pretrained backbone "
            "rebuilt from the bundle's spec. After: the fitted model, including any prompt "
            "tokens its strategy adds (their columns are left out of the maps; the share of "
            "last-layer attention they take is given)."),
    "cnn": ("After: Grad-CAM for the predicted class on the last convolutional feature map with "
            "at least 2x2 positions (named under each image). Before: the pretrained backbone "
            "has no class for these labels, so it shows a class-agnostic map, the L2 norm over "
            "channels of the same feature map."),
    "text": ("Gradient x input on the token embeddings for the predicted class (after; red "
             "supports the prediction, blue speaks against it), and the attention each token "
             "receives in the last layer, averaged over heads and over the query tokens, before "
             "(pretrained encoder) and after (fitted model)."),
}


def _write_html(path: Path, meta: dict[str, Any], records: list[dict[str, Any]]) -> Path:
    parts = []
    for rec in records:
        probs = ", ".join(f"{html.escape(c)} {p:.3f}" for c, p in rec["probabilities"].items())
        head = (f"<h2>{html.escape(rec['input'])}</h2><p>predicted <b>{html.escape(rec['predicted'])}"
                f"</b> ({probs})")
        if rec.get("prompt_tokens") or rec.get("prompt_attention_share"):
            head += (f"; prompt tokens take {100 * rec['prompt_attention_share']:.1f}% of the "
                     "last layer's attention")
        head += "</p>"
        body = ""
        if rec["kind"] == "text":
            toks = rec["tokens"]
            rows = [("gradient x input (after)", rec["grad_x_input"], True),
                    ("attention, before", rec["attention_before"], False),
                    ("attention, after", rec["attention_after"], False)]
            body = "<table>" + "".join(
                f"<tr><th>{label}</th><td>{_coloured(toks, vals, signed)}</td></tr>"
                for label, vals, signed in rows) + "</table>"
        img = f'<p><img src="{html.escape(rec["png"])}" alt="{html.escape(rec["input"])}"></p>'
        parts.append(f"<section>{head}{body}{img}</section>")
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>transferkit explain</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}img{{max-width:100%}}
section{{border-top:1px solid #ccc;margin-top:1.5em}}th{{text-align:left;padding-right:1em;
vertical-align:top;font-weight:normal;color:#555;white-space:nowrap}}
.tok{{padding:1px 2px;border-radius:3px;line-height:1.9}}</style></head><body>
<h1>What the model attends to</h1>
<p>bundle <b>{html.escape(meta['bundle'])}</b>, backbone <b>{html.escape(str(meta['backbone']))}</b>,
strategy <b>{html.escape(str(meta['strategy']))}</b>.</p>
<p>{html.escape(_NOTES[meta['kind']])}</p>
{''.join(parts)}</body></html>"""
    return write_text(path, doc)
