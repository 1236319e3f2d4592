"""The HTML report of a detection run: the same self-contained page as a classifier's
(:mod:`transferkit.report.page`), with the detection figures.

``RUN/report.html`` shows what ran (backbone, strategy, the head's settings, best epoch), the
COCO scores (validation: the selection split; test: never used for a choice), the time, the
trainable parameters, the curves (training loss, validation mAP per epoch), the first
validation images with their predicted (red) and true (green) boxes, AP per class and the
run's settings.  Everything it shows comes in as plain values and run-folder files: this
module reads no model and no data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io import write_text
from .page import _STYLE, _parameters, _settings, _timing, esc, fmt, inline_image
from .plots import plot_detection_history

CURVES = "history_map.png"


def _scores(metrics: dict[str, Any]) -> str:
    rows = []
    for split, what in (("val", "selection split"), ("test", "held out, never used for a choice")):
        m = metrics.get(split)
        if m:
            rows.append(f"<tr><td>{split} <span class=muted>({what})</span></td>"
                        + "".join(f"<td>{fmt(m.get(k))}</td>" for k in
                                  ("map50", "map", "map75", "mar100", "n", "boxes")) + "</tr>")
    return ("<table><tr><th>split</th><th>mAP@0.5</th><th>mAP@[.5:.95]</th><th>mAP@0.75</th>"
            f"<th>mAR@100</th><th>images</th><th>boxes</th></tr>{''.join(rows)}</table>"
            f"<p class=muted>{esc(metrics.get('metric', ''))}</p>")


def _per_class(per_class: dict[str, Any]) -> str:
    splits = [s for s in ("val", "test") if per_class.get(s)]
    if not splits:
        return ""
    head = "".join(f"<th>{s} AP@0.5</th><th>{s} AP</th>" for s in splits)
    body = "".join(
        f"<tr><td>{esc(c)}</td>" + "".join(
            f"<td>{fmt(per_class[s].get(c, {}).get('ap50'))}</td>"
            f"<td>{fmt(per_class[s].get(c, {}).get('ap'))}</td>" for s in splits) + "</tr>"
        for c in per_class[splits[0]])
    return (f"<h2>Per class</h2><p class=muted>'-': no true box of the class in the split.</p>"
            f"<table><tr><th>class</th>{head}</tr>{body}</table>")


def _examples(run_dir: Path, examples: list[str]) -> str:
    shown = "".join(inline_image(run_dir / f, f) for f in examples)
    if not shown:
        return ""
    return ("<h2>Validation images</h2><p class=muted>The first validation images: predicted "
            "boxes (red, class and score, score &ge; 0.3) and true boxes (green).</p>"
            f"<div class=row>{shown}</div>")


def write_detection_report(run_dir: Path, metrics: dict[str, Any], history: list[dict[str, Any]],
                           examples: list[str], parameters: list[dict[str, Any]],
                           settings: dict[str, Any] | None) -> Path:
    """Write ``run_dir/report.html`` (and the curves ``run_dir/history_map.png``) from the
    run's ``metrics.json`` record, its epochs, the drawn example files (run-folder paths),
    the parameter summary and the recorded settings."""
    run_dir = Path(run_dir)
    curves = plot_detection_history(history, run_dir / CURVES)
    head = metrics.get("head") or {}
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>transferkit detection run</title>
<style>{_STYLE}.row img{{width:240px}}</style></head><body>
<h1>transferkit detection run</h1>
<p>backbone <b>{esc(metrics.get('backbone'))}</b>, strategy <b>{esc(metrics.get('strategy'))}</b>,
head {esc(head.get('kind', 'fcos'))} over the last {esc(head.get('levels'))} stages at
{esc(head.get('image_size'))} px ({esc(head.get('width'))} channels, {esc(head.get('convs'))} convs
per branch); classes {esc(', '.join(metrics.get('classes', [])))};
best epoch {esc(metrics.get('best_epoch'))} of stage {esc(metrics.get('best_stage'))}
(chosen on validation mAP@0.5; test was never used for a choice).</p>
{_scores(metrics)}{_timing(metrics)}
{_parameters(parameters, metrics)}
<h2>Curves</h2>{inline_image(curves, CURVES) if curves else '<p>no epoch recorded</p>'}
{_examples(run_dir, examples)}
{_per_class(metrics.get('per_class') or {})}
{_settings(settings)}
</body></html>"""
    return write_text(run_dir / "report.html", doc)
