"""Training curves, confusion matrices and the run's HTML report."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from ..io import save_with, write_text


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_history(history: list[dict[str, Any]], path: Path) -> Path | None:
    rows = [h for h in history if h.get("val_accuracy") is not None]
    if not rows:
        return None
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ep = [h["epoch"] for h in rows]
    tl = [h["train_loss"] for h in rows]
    if any(v is not None for v in tl):
        ax1.plot(ep, [v if v is not None else float("nan") for v in tl], "o-", label="train loss")
    ax1.plot(ep, [h["val_loss"] for h in rows], "o-", label="val loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.plot(ep, [h["val_accuracy"] for h in rows], "o-", label="val accuracy")
    ax2.plot(ep, [h["val_macro_f1"] for h in rows], "s--", label="val macro F1")
    ax2.set_xlabel("epoch")
    ax2.legend()
    stages = [h["stage"] for h in rows]
    for i in range(1, len(stages)):
        if stages[i] != stages[i - 1]:
            for ax in (ax1, ax2):
                ax.axvline(ep[i] - 0.5, color="grey", ls=":")
    fig.tight_layout()
    save_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def plot_confusion(cm: list[list[int]], classes: list[str], path: Path, title: str) -> Path:
    import numpy as np

    plt = _plt()
    k = len(classes)
    size = min(12, 2.5 + 0.45 * k)
    fig, ax = plt.subplots(figsize=(size, size))
    arr = np.asarray(cm)
    ax.imshow(arr, cmap="Blues")
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if k <= 30:
        hi = arr.max() / 2 if arr.size else 0
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(arr[i, j]), ha="center", va="center",
                        color="white" if arr[i, j] > hi else "black", fontsize=8)
    fig.tight_layout()
    save_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def write_report(run_dir: Path, metrics: dict[str, Any], per_class: dict[str, Any],
                 images: list[str]) -> Path:
    def fmt(v):
        return "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else html.escape(str(v)))

    rows = []
    for split in ("val", "test"):
        m = metrics.get(split)
        if m:
            rows.append(f"<tr><td>{split}</td><td>{fmt(m['accuracy'])}</td><td>{fmt(m['macro_f1'])}"
                        f"</td><td>{fmt(m['loss'])}</td><td>{m['n']}</td></tr>")
    pc = []
    for split, table in per_class.items():
        if not table:
            continue
        pc.append(f"<h3>per class ({split})</h3><table><tr><th>class</th><th>precision</th>"
                  "<th>recall</th><th>F1</th><th>support</th></tr>")
        for c, r in table.items():
            pc.append(f"<tr><td>{html.escape(c)}</td><td>{fmt(r['precision'])}</td><td>"
                      f"{fmt(r['recall'])}</td><td>{fmt(r['f1'])}</td><td>{r['support']}</td></tr>")
        pc.append("</table>")
    imgs = "".join(f'<p><img src="{html.escape(i)}" style="max-width:100%"></p>' for i in images)
    t = metrics.get("timing", {})
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>transferkit run</title>
<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto}}td,th{{padding:2px 10px;
border-bottom:1px solid #ddd;text-align:right}}td:first-child{{text-align:left}}</style></head><body>
<h1>transferkit run</h1>
<p>backbone <b>{html.escape(str(metrics.get('backbone')))}</b>, strategy
<b>{html.escape(str(metrics.get('strategy')))}</b>, trainable parameters
{metrics.get('trainable_params', 0):,} / {metrics.get('total_params', 0):,};
best epoch {metrics.get('best_epoch')} (chosen on validation; test was never used for a choice).</p>
<table><tr><th>split</th><th>accuracy</th><th>macro F1</th><th>loss</th><th>n</th></tr>{''.join(rows)}</table>
<p>time: total {t.get('total_s', 0):.1f} s, features {t.get('features_s', 0):.1f} s,
train {t.get('train_s', 0):.1f} s</p>
{''.join(pc)}{imgs}</body></html>"""
    return write_text(run_dir / "report.html", doc)
