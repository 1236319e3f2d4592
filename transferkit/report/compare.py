"""One page comparing finished runs: ``transferkit report RUN [RUN ...] --out DIR``.

Reads each run folder's ``metrics.json``, ``history.csv`` and ``run_config.json`` (never a
bundle) and writes to ``DIR``:

* ``index.html``: self-contained (figures inlined); at the top, plainly, whatever makes the
  runs not comparable (different data, label sets, modality, or test splits carved with
  different seeds); then one table (validation and test scores, best epoch, trainable
  parameters, time), the validation curves of every run overlaid, test accuracy against
  trainable parameters, and each run's test confusion matrix;
* ``runs.csv``: the table;  ``curves.png``, ``accuracy_vs_parameters.png``: the figures.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..io import save_with, write_text
from .page import esc, fmt, inline_image
from .plots import _plt

_STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}
td:first-child,th:first-child{text-align:left}img{max-width:100%}
h2{margin-top:1.6em;border-bottom:1px solid #ccc}.muted{color:#666}
.warn{background:#fff3cd;padding:.6em 1em;border:1px solid #e0c36c}
.row{display:flex;flex-wrap:wrap;gap:1em}.row figure{width:31%;margin:0}
figcaption{font-size:13px;text-align:center}"""


@dataclass
class Run:
    """What a finished run folder recorded."""

    name: str
    folder: Path
    metrics: dict[str, Any]
    history: list[dict[str, str]]
    config: dict[str, Any] | None


def read_run(folder: str | Path) -> Run:
    """A finished run folder, or a one-line DataError naming it and what is missing."""
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"{folder}: no such run folder")
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder (give a run folder written by transferkit fit)")
    path = folder / "metrics.json"
    if not path.is_file():
        raise DataError(f"{folder}: not a finished run (no metrics.json)")
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    history = []
    if (folder / "history.csv").is_file():
        with open(folder / "history.csv", newline="", encoding="utf-8") as f:
            history = list(csv.DictReader(f))
    config = None
    if (folder / "run_config.json").is_file():
        try:
            config = json.loads((folder / "run_config.json").read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise DataError(f"{folder / 'run_config.json'}: not valid JSON ({e})") from None
    return Run(folder.name or str(folder), folder, metrics, history, config)


def _unique_names(runs: list[Run]) -> None:
    seen: dict[str, int] = {}
    for r in runs:
        seen[r.name] = seen.get(r.name, 0) + 1
    for r in runs:
        if seen[r.name] > 1:
            r.name = str(r.folder)


# --------------------------------------------------------------------------- comparability

def _data_key(run: Run) -> str | None:
    if run.config is None:
        return None
    data = {k: v for k, v in run.config.get("data", {}).items()}
    target = (run.config.get("domain") or {}).get("target")
    return json.dumps({**data, "target": target}, sort_keys=True)


def differences(runs: list[Run]) -> list[str]:
    """Plain sentences for what makes ``runs`` not comparable (empty when nothing does)."""
    out = []
    tasks = {json.dumps(r.metrics.get("classes")) for r in runs}
    if len(tasks) > 1:
        out.append("The runs are different tasks (their label sets differ): "
                   + "; ".join(f"{r.name}: {', '.join(map(str, r.metrics.get('classes') or []))}"
                               for r in runs) + ". Their scores cannot be compared.")
    keys = {_data_key(r) for r in runs}
    if None in keys:
        unknown = [r.name for r in runs if r.config is None]
        out.append(f"No run_config.json in {', '.join(unknown)} (data given in memory): "
                   "whether the runs used the same data cannot be checked.")
    elif len(keys) > 1:
        out.append("The runs used different data: " + "; ".join(
            f"{r.name}: {r.config['data'].get('path')}" for r in runs)
            + ". Their scores are not on the same samples.")
    else:
        out += _split_seeds(runs)
    return out


def _split_seeds(runs: list[Run]) -> list[str]:
    data = runs[0].config["data"] if runs[0].config else {}
    seeds = {(r.config or {}).get("train", {}).get("seed") for r in runs}
    if len(seeds) > 1 and (data.get("test") is None or data.get("val") is None):
        return [f"The runs carved their validation / test splits with different seeds "
                f"({', '.join(str(s) for s in sorted(seeds, key=str))}): the same data, but "
                "the scores are on different samples."]
    return []


# --------------------------------------------------------------------------- table, figures

def rows(runs: list[Run]) -> list[dict[str, Any]]:
    out = []
    for r in runs:
        m, val, test = r.metrics, r.metrics.get("val") or {}, r.metrics.get("test") or {}
        t = m.get("timing") or {}
        tr, tot = m.get("trainable_params") or 0, m.get("total_params") or 0
        out.append({"run": r.name, "backbone": m.get("backbone"), "strategy": m.get("strategy"),
                    "val_accuracy": val.get("accuracy"), "val_macro_f1": val.get("macro_f1"),
                    "test_accuracy": test.get("accuracy"), "test_macro_f1": test.get("macro_f1"),
                    "best_epoch": m.get("best_epoch"), "trainable_params": tr,
                    "total_params": tot, "trainable_share": (tr / tot) if tot else None,
                    "train_s": t.get("train_s"), "total_s": t.get("total_s")})
    return out


def _num(v: str | None) -> float:
    try:
        return float(v) if v not in (None, "") else float("nan")
    except ValueError:
        return float("nan")


def plot_curves(runs: list[Run], path: Path) -> Path | None:
    if not any(r.history for r in runs):
        return None
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    for r in runs:
        ep = [_num(h.get("epoch")) for h in r.history]
        label = f"{r.name} ({r.metrics.get('strategy')})"
        ax1.plot(ep, [_num(h.get("val_loss")) for h in r.history], "o-", ms=3, label=label)
        ax2.plot(ep, [_num(h.get("val_accuracy")) for h in r.history], "o-", ms=3, label=label)
    from matplotlib.ticker import MaxNLocator

    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.set(xlabel="epoch", ylabel="validation loss")
    ax2.set(xlabel="epoch", ylabel="validation accuracy")
    ax2.legend(fontsize=7, loc="best")
    fig.tight_layout()
    save_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def plot_accuracy_vs_parameters(table: list[dict[str, Any]], path: Path) -> Path | None:
    pts = [r for r in table if r["trainable_params"] and
           (r["test_accuracy"] is not None or r["val_accuracy"] is not None)]
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for r in pts:
        acc = r["test_accuracy"] if r["test_accuracy"] is not None else r["val_accuracy"]
        ax.scatter(r["trainable_params"], acc)
        ax.annotate(r["run"], (r["trainable_params"], acc), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set(xlabel="trainable parameters", ylabel="test accuracy (validation if no test)")
    fig.tight_layout()
    save_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- page

def _table_html(table: list[dict[str, Any]]) -> str:
    cols = ["run", "backbone", "strategy", "val_accuracy", "val_macro_f1", "test_accuracy",
            "test_macro_f1", "best_epoch", "trainable_params", "trainable_share", "train_s",
            "total_s"]
    head = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in cols)

    def cell(c, v):
        if c == "trainable_params":
            return f"{v:,}"
        if c == "trainable_share":
            return "-" if v is None else f"{100 * v:.2f}%"
        if c in ("train_s", "total_s"):
            return "-" if v is None else f"{v:.1f}"
        return fmt(v)

    body = "".join("<tr>" + "".join(f"<td>{cell(c, r[c])}</td>" for c in cols) + "</tr>"
                   for r in table)
    return f"<table><tr>{head}</tr>{body}</table>"


def _confusions(runs: list[Run]) -> str:
    figs = []
    for r in runs:
        img = inline_image(r.folder / "confusion_test.png", f"{r.name} confusion (test)") or \
            inline_image(r.folder / "confusion_val.png", f"{r.name} confusion (val)")
        if img:
            figs.append(f"<figure>{img}<figcaption>{esc(r.name)}</figcaption></figure>")
    return f"<h2>Confusion matrices</h2><div class=row>{''.join(figs)}</div>" if figs else ""


def compare_runs(folders: list[str | Path], out: str | Path) -> Path:
    """Write the comparison of the runs in ``folders`` to ``out`` (``index.html``, ``runs.csv``
    and the figures); returns the page's path."""
    if not folders:
        raise DataError("report: give at least one run folder")
    runs = [read_run(f) for f in folders]
    _unique_names(runs)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    table = rows(runs)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(table[0]))
    w.writeheader()
    w.writerows(table)
    write_text(out / "runs.csv", buf.getvalue())
    curves = plot_curves(runs, out / "curves.png")
    scatter = plot_accuracy_vs_parameters(table, out / "accuracy_vs_parameters.png")
    notes = differences(runs)
    warn = "".join(f'<p class=warn>{esc(n)}</p>' for n in notes)
    ok = "" if notes else "<p class=muted>Same data, same labels, same splits.</p>"
    data = (runs[0].config or {}).get("data", {}).get("path")
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>transferkit runs</title>
<style>{_STYLE}</style></head><body>
<h1>{len(runs)} transferkit runs{f" on {esc(data)}" if data and not notes else ""}</h1>
{warn}{ok}
<p class=muted>Validation: the split each run chose its epoch on. Test: held out, never used
for a choice.</p>
{_table_html(table)}
<h2>Validation curves</h2>{inline_image(curves, "validation curves") if curves else "<p>no history</p>"}
<h2>Accuracy against trainable parameters</h2>{inline_image(scatter, "accuracy vs parameters") if scatter else ""}
{_confusions(runs)}
<h2>Runs</h2><ul>{''.join(f"<li>{esc(r.name)}: {esc(r.folder.resolve())}</li>" for r in runs)}</ul>
</body></html>"""
    return write_text(out / "index.html", doc)
