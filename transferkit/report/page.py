"""The run's HTML report: one self-contained page (every figure inlined, nothing fetched).

``RUN/report.html`` shows, in order: what ran (backbone, strategy, best epoch), the scores
(validation: the selection split; test: never used for a choice), the time, the
trainable-parameter summary (per part of the model), the training curves and confusion
matrices, the validation and test examples the model got most wrong (a thumbnail for an
image, the text for a sentence, with the true and predicted label and probabilities), the
strategy's own figures (t-SNE of a domain run, attention maps / Grad-CAM of the worst test
examples where ``explain`` applies, the candidates a closed-form or automatic choice
scored), the per-class tables and the run's settings (``run_config.json``).
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import write_text

THUMBNAIL = 112
TEXT_CHARS = 400

_STYLE = """body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}
td,th{padding:2px 10px;border-bottom:1px solid #ddd;text-align:right;vertical-align:top}
td:first-child,th:first-child{text-align:left}.l{text-align:left}
img{max-width:100%}h2{margin-top:1.6em;border-bottom:1px solid #ccc}
.ex td{text-align:left}.ex img{width:112px}.warn{background:#fff3cd;padding:.6em;border:1px solid #e0c36c}
.row{display:flex;gap:1em}.row p{flex:1;margin:0}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:12px}.muted{color:#666}"""


@dataclass
class Example:
    """One misclassified sample as the report shows it."""

    split: str
    origin: str
    true: str
    predicted: str
    p_predicted: float
    p_true: float
    text: str | None = None
    png: bytes | None = None   # a thumbnail


@dataclass
class ReportContent:
    """What the page shows beyond ``metrics.json``: figure files of the run folder (shown
    inline), examples, the parameter summary, the strategy's figures and the settings."""

    figures: list[str] = field(default_factory=list)
    examples: list[Example] = field(default_factory=list)
    parameters: list[dict[str, Any]] = field(default_factory=list)
    strategy_figures: list[tuple[str, str]] = field(default_factory=list)  # (caption, file)
    settings: dict[str, Any] | None = None


def esc(v: Any) -> str:
    return html.escape(str(v))


def fmt(v: Any) -> str:
    return "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else esc(v))


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def inline_image(path: Path, alt: str) -> str:
    """``<img>`` with the file's bytes inlined (empty when the file is absent)."""
    if not path.is_file():
        return ""
    return f'<p><img src="{data_uri(path.read_bytes())}" alt="{esc(alt)}"></p>'


def thumbnail_png(image, size: int = THUMBNAIL) -> bytes:
    """A PIL image as a PNG thumbnail of at most ``size`` pixels a side."""
    im = image.copy()
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def parameter_summary(model, touched: list[str]) -> list[dict[str, Any]]:
    """Per part of the model (backbone, head, each attached module): its parameters and how
    many of them trained (``touched``: the names of the tensors training changed)."""
    keep = set(touched)
    rows = []
    for name, child in model.named_children():
        total = sum(p.numel() for p in child.parameters())
        trained = sum(p.numel() for n, p in child.named_parameters(prefix=name) if n in keep)
        if total:
            rows.append({"part": name, "trainable": trained, "total": total})
    return rows


# --------------------------------------------------------------------------- sections

def _scores(metrics: dict[str, Any]) -> str:
    rows = []
    for split, what in (("val", "selection split"), ("test", "held out, never used for a choice")):
        m = metrics.get(split)
        if m:
            rows.append(f"<tr><td>{split} <span class=muted>({what})</span></td><td>"
                        f"{fmt(m['accuracy'])}</td><td>{fmt(m['macro_f1'])}</td><td>"
                        f"{fmt(m['loss'])}</td><td>{m['n']}</td></tr>")
    return ("<table><tr><th>split</th><th>accuracy</th><th>macro F1</th><th>loss</th>"
            f"<th>n</th></tr>{''.join(rows)}</table>")


def _parts(metrics: dict[str, Any]) -> str:
    """The figures of each task (several tasks) or of each merged source: the summary above
    is their average (tasks) or the pooled figure (sources)."""
    for key, what in (("tasks", "task"), ("sources", "source")):
        parts = metrics.get(key)
        if not parts:
            continue
        rows = "".join(
            f"<tr><td>{esc(name)}</td>" + "".join(
                f"<td>{fmt(m[split]['accuracy']) if m.get(split) else '-'}</td>"
                f"<td>{fmt(m[split]['macro_f1']) if m.get(split) else '-'}</td>"
                for split in ("val", "test")) + "</tr>"
            for name, m in parts.items())
        note = ("the scores above are the tasks' average" if key == "tasks"
                else "the scores above pool every source")
        return (f"<h2>Per {what}</h2><p class=muted>{note}</p><table><tr><th>{what}</th>"
                "<th>val accuracy</th><th>val macro F1</th><th>test accuracy</th>"
                f"<th>test macro F1</th></tr>{rows}</table>")
    return ""


def _timing(metrics: dict[str, Any]) -> str:
    t = metrics.get("timing", {})
    parts = [f"{k.removesuffix('_s')} {v:.1f} s" for k, v in t.items()
             if isinstance(v, (int, float)) and k.endswith("_s") and k != "total_s"]
    return f"<p>time: total {t.get('total_s', 0):.1f} s ({', '.join(parts)})</p>"


def _parameters(rows: list[dict[str, Any]], metrics: dict[str, Any]) -> str:
    tr, tot = metrics.get("trainable_params", 0), metrics.get("total_params", 0) or 1
    body = "".join(f"<tr><td>{esc(r['part'])}</td><td>{r['trainable']:,}</td><td>{r['total']:,}"
                   f"</td><td>{100 * r['trainable'] / max(r['total'], 1):.2f}%</td></tr>"
                   for r in rows)
    return (f"<h2>Trainable parameters</h2><p>trainable {tr:,} / {tot:,} "
            f"({100 * tr / tot:.2f}%)</p><table><tr><th>part</th><th>trainable</th>"
            f"<th>total</th><th>share</th></tr>{body}</table>")


def _examples(examples: list[Example]) -> str:
    if not examples:
        return "<h2>Most wrong examples</h2><p>none: every validation and test sample was right.</p>"
    out = ["<h2>Most wrong examples</h2><p class=muted>Misclassified validation and test "
           "samples whose true class got the lowest probability, worst first.</p>"]
    for split in ("val", "test"):
        rows = [e for e in examples if e.split == split]
        if not rows:
            continue
        out.append(f"<h3>{split}</h3><table class=ex><tr><th>sample</th><th>true</th>"
                   "<th>predicted</th><th>p(predicted)</th><th>p(true)</th></tr>")
        for e in rows:
            shown = (f'<img src="{data_uri(e.png)}" alt="{esc(e.origin)}"><br>' if e.png else "")
            if e.text is not None:
                shown += f"&ldquo;{esc(e.text)}&rdquo;<br>"
            out.append(f"<tr><td>{shown}<span class=muted>{esc(e.origin)}</span></td><td>"
                       f"{esc(e.true)}</td><td>{esc(e.predicted)}</td><td>{e.p_predicted:.3f}"
                       f"</td><td>{e.p_true:.3f}</td></tr>")
        out.append("</table>")
    return "".join(out)


def _candidates(metrics: dict[str, Any]) -> str:
    """Tables of the settings a closed-form or automatic choice scored (lists of records in
    ``closed_form`` / ``candidates``)."""
    out = []
    for source in (metrics.get("closed_form") or {}, {"candidates": metrics.get("candidates")}):
        for key, value in source.items():
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                cols = list(value[0])
                head = "".join(f"<th>{esc(c)}</th>" for c in cols)
                body = "".join("<tr>" + "".join(f"<td>{fmt(v.get(c))}</td>" for c in cols)
                               + "</tr>" for v in value)
                out.append(f"<h3>candidates ({esc(key)})</h3><table><tr>{head}</tr>{body}</table>")
    return "".join(out)


def _auto(metrics: dict[str, Any]) -> str:
    """How ``--strategy auto`` chose: the choice, the reasons, every candidate's figures."""
    auto = metrics.get("auto")
    if not auto:
        return ""
    chosen = auto["chosen"]
    reasons = "".join(f"<li>{esc(r)}</li>" for r in auto.get("reasons", []))
    return (f"<h3>auto: {esc(chosen['backbone'])} + {esc(chosen['strategy'])}</h3>"
            f"<ul>{reasons}</ul>" + _candidates({"candidates": auto.get("candidates")}))


def _strategy_section(content: ReportContent, metrics: dict[str, Any], run_dir: Path) -> str:
    parts = [f"<h3>{esc(caption)}</h3>" + inline_image(run_dir / f, caption)
             for caption, f in content.strategy_figures if (run_dir / f).is_file()]
    parts.append(_auto(metrics))
    parts.append(_candidates(metrics))
    body = "".join(parts)
    return f"<h2>Strategy figures</h2>{body}" if body else ""


def _per_class(per_class: dict[str, Any]) -> str:
    out = []
    for split, table in per_class.items():
        if not table:
            continue
        out.append(f"<h3>per class ({split})</h3><table><tr><th>class</th><th>precision</th>"
                   "<th>recall</th><th>F1</th><th>support</th></tr>")
        for c, r in table.items():
            out.append(f"<tr><td>{esc(c)}</td><td>{fmt(r['precision'])}</td><td>"
                       f"{fmt(r['recall'])}</td><td>{fmt(r['f1'])}</td><td>{r['support']}</td></tr>")
        out.append("</table>")
    return "".join(out)


def _settings(settings: dict[str, Any] | None) -> str:
    if not settings:
        return ("<h2>Settings</h2><p class=muted>not recorded (the data was given in memory)</p>")
    return f"<h2>Settings</h2><pre>{esc(json.dumps(settings, indent=2, default=str))}</pre>"


def write_report(run_dir: Path, metrics: dict[str, Any], per_class: dict[str, Any],
                 content: ReportContent) -> Path:
    """Write ``run_dir/report.html``: one page, every image inlined."""
    run_dir = Path(run_dir)
    curves = "".join(inline_image(run_dir / f, f) for f in content.figures if "confusion" not in f)
    confusion = "".join(inline_image(run_dir / f, f) for f in content.figures if "confusion" in f)
    figures = f'{curves}<div class=row>{confusion}</div>'
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>transferkit run</title>
<style>{_STYLE}</style></head><body>
<h1>transferkit run</h1>
<p>backbone <b>{esc(metrics.get('backbone'))}</b>, strategy <b>{esc(metrics.get('strategy'))}</b>,
trainable parameters {metrics.get('trainable_params', 0):,} / {metrics.get('total_params', 0):,};
best epoch {metrics.get('best_epoch')} (chosen on validation; test was never used for a choice).</p>
{_scores(metrics)}{_parts(metrics)}{_timing(metrics)}
{_parameters(content.parameters, metrics)}
<h2>Curves and confusion</h2>{figures}
{_examples(content.examples)}
{_strategy_section(content, metrics, run_dir)}
<h2>Per class</h2>{_per_class(per_class)}
{_settings(content.settings)}
</body></html>"""
    return write_text(run_dir / "report.html", doc)
