"""``transferkit compare``: the freeze-vs-fine-tune grid as one command.

Every cell (backbone x strategy x colour / grey) is fitted once per seed through the same
``fit`` as any run, into ``OUT/runs/<cell>-s<seed>``; a finished run is read back instead of
being fitted again, and an interrupted one is resumed from its checkpoint, so the command
can be stopped and started again.  The summary gives each cell's validation and test
accuracy as mean ± sd over the seeds and its time per run, and marks the cell that
validation would choose (test is reported, never used for a choice): ``OUT/compare.json``,
``compare.csv``, ``compare.md``, ``compare.png`` and the run-comparison page
``OUT/report/index.html``.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import api
from .backbones import backbone_modality, list_backbones
from .data import read_data
from .errors import ConfigError
from .io import save_with, write_text
from .report.compare import compare_runs
from .strategies.base import list_strategies

GREY_CHOICES = {"no": (False,), "yes": (True,), "both": (False, True)}


@dataclass(frozen=True)
class Cell:
    backbone: str
    strategy: str
    grey: bool

    @property
    def name(self) -> str:
        safe = self.backbone.replace(":", "_").replace("/", "_")
        return f"{safe}-{self.strategy}-{'grey' if self.grey else 'colour'}"


def split_list(text: str, option: str) -> list[str]:
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise ConfigError(f"{option}: give one or more names separated by commas")
    dupes = sorted({t for t in items if items.count(t) > 1})
    if dupes:
        raise ConfigError(f"{option}: {', '.join(dupes)} named twice")
    return items


def plan(strategies: str, backbones: str | None, grayscale: str, seeds: int,
         modality: str) -> tuple[list[Cell], list[int]]:
    """The grid's cells and seeds, every name checked before anything runs."""
    known = {s.name for s in list_strategies()}
    strat = split_list(strategies, "--strategies")
    unknown = [s for s in strat if s not in known]
    if unknown:
        raise ConfigError(f"--strategies: unknown {', '.join(unknown)}; see transferkit list "
                          "strategies")
    names = split_list(backbones, "--backbones") if backbones else [
        "efficientnet_lite0" if modality == "image" else "minilm"]
    listed = {e.name for e in list_backbones(include_test=True)}
    for b in names:
        base = b.split(":", 1)[0]
        if b not in listed and base not in listed:
            raise ConfigError(f"--backbones: unknown backbone {b!r}; see transferkit list backbones")
        if backbone_modality(b) != modality:
            raise ConfigError(f"--backbones: {b} is a {backbone_modality(b)} backbone and the "
                              f"data is {modality}")
    if grayscale not in GREY_CHOICES:
        raise ConfigError(f"--grayscale {grayscale!r}: choose no, yes or both")
    if grayscale != "no" and modality != "image":
        raise ConfigError("--grayscale applies to images only")
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    cells = [Cell(b, s, g) for b in names for s in strat for g in GREY_CHOICES[grayscale]]
    return cells, list(range(seeds))


def run_cell(cell: Cell, seed: int, folder: Path, settings: dict[str, Any],
             log: Callable[[str], None]) -> dict[str, Any]:
    """One run of the grid: read back when finished, resumed when interrupted, else fitted."""
    metrics = folder / "metrics.json"
    if metrics.is_file():
        log(f"{folder.name}: finished before, kept")
        return _row(cell, seed, folder, json.loads(metrics.read_text()))
    resume = (folder / "run_config.json").is_file()
    log(f"{folder.name}: {'resuming' if resume else 'fitting'}")
    t0 = time.perf_counter()
    if resume:
        api.resume(str(folder), quiet=True)
    else:
        api.fit(**settings, backbone=cell.backbone, strategy=cell.strategy, grayscale=cell.grey,
                seed=seed, out=str(folder), quiet=True)
    row = _row(cell, seed, folder, json.loads(metrics.read_text()))
    test = "-" if row["test_accuracy"] is None else f"{row['test_accuracy']:.3f}"
    log(f"{folder.name}: val {row['val_accuracy']:.3f}  test {test}  "
        f"{time.perf_counter() - t0:.0f} s")
    return row


def _row(cell: Cell, seed: int, folder: Path, m: dict[str, Any]) -> dict[str, Any]:
    test = m.get("test") or {}
    return {"cell": cell.name, "backbone": cell.backbone, "strategy": cell.strategy,
            "grey": cell.grey, "seed": seed, "val_accuracy": m["val"]["accuracy"],
            "test_accuracy": test.get("accuracy"), "seconds": m.get("timing", {}).get("total_s"),
            "trainable_params": m.get("trainable_params"), "run": str(folder)}


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± sd of each cell over its seeds; ``chosen`` marks the best validation mean."""
    out = []
    for name in dict.fromkeys(r["cell"] for r in rows):
        rs = [r for r in rows if r["cell"] == name]
        out.append({"cell": name, "backbone": rs[0]["backbone"], "strategy": rs[0]["strategy"],
                    "grey": rs[0]["grey"], "seeds": len(rs),
                    **_stats("val", [r["val_accuracy"] for r in rs]),
                    **_stats("test", [r["test_accuracy"] for r in rs]),
                    "seconds_per_run": _mean([r["seconds"] for r in rs]),
                    "trainable_params": rs[0]["trainable_params"], "chosen": False})
    for grey in {s["grey"] for s in out}:
        group = [s for s in out if s["grey"] == grey]
        max(group, key=lambda s: s["val_mean"])["chosen"] = True
    return out


def _mean(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def _stats(split: str, xs: list) -> dict[str, float | None]:
    xs = [x for x in xs if x is not None]
    return {f"{split}_mean": statistics.fmean(xs) if xs else None,
            f"{split}_sd": statistics.stdev(xs) if len(xs) > 1 else (0.0 if xs else None)}


def compare(data: str, *, strategies: str, out: str, backbones: str | None = None,
            grayscale: str = "no", seeds: int = 1, log: Callable[[str], None] = print,
            **settings: Any) -> dict[str, Any]:
    """Fit the grid into ``out`` (finished runs kept) and write its summary."""
    modality = next(iter(read_data(data).values())).modality
    cells, seed_list = plan(strategies, backbones, grayscale, seeds, modality)
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    settings = {**settings, "data": data}
    rows = [run_cell(c, s, out_dir / "runs" / f"{c.name}-s{s}", settings, log)
            for c in cells for s in seed_list]
    record = {"data": str(data), "strategies": strategies, "backbones": backbones,
              "grayscale": grayscale, "seeds": seeds, "runs": rows, "cells": summarize(rows)}
    write_compare(record, out_dir)
    compare_runs([r["run"] for r in rows], out_dir / "report")
    return record


def table_markdown(cells: list[dict[str, Any]]) -> str:
    def pct(m, s):
        return "-" if m is None else f"{100 * m:.1f} ± {100 * (s or 0):.1f}"
    lines = ["| cell | seeds | val acc % | test acc % | s / run | trainable | chosen on val |",
             "|---|---|---|---|---|---|---|"]
    for c in cells:
        secs = "-" if c["seconds_per_run"] is None else f"{c['seconds_per_run']:.0f}"
        params = "-" if c["trainable_params"] is None else f"{c['trainable_params']:,}"
        lines.append(f"| {c['cell']} | {c['seeds']} | {pct(c['val_mean'], c['val_sd'])} | "
                     f"{pct(c['test_mean'], c['test_sd'])} | {secs} | {params} | "
                     f"{'yes' if c['chosen'] else ''} |")
    return "\n".join(lines) + "\n"


def write_compare(record: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "compare.json", json.dumps(record, indent=2) + "\n")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(record["cells"][0]))
    w.writeheader()
    w.writerows(record["cells"])
    write_text(out / "compare.csv", buf.getvalue())
    write_text(out / "compare.md", f"# transferkit compare on {record['data']}\n\n"
               "Validation chooses (the cell marked in each colour mode); test is held out "
               "and only reported.\n\n" + table_markdown(record["cells"]))
    plot_grid(record["cells"], out / "compare.png")


def plot_grid(cells: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(cells) + 2), 3.6))
    xs = range(len(cells))
    for offset, split in ((-0.2, "val"), (0.2, "test")):
        means = [100 * (c[f"{split}_mean"] or 0) for c in cells]
        sds = [100 * (c[f"{split}_sd"] or 0) for c in cells]
        ax.bar([x + offset for x in xs], means, 0.4, yerr=sds, capsize=3, label=split)
    ax.set_xticks(list(xs), [c["cell"] for c in cells], rotation=30, ha="right", fontsize=8)
    lo = min(100 * (c[k] or 1) for c in cells for k in ("val_mean", "test_mean"))
    ax.set_ylim(max(0.0, lo - 10), 100)
    ax.set_ylabel("accuracy, % (mean ± sd over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path
