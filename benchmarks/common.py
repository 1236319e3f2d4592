"""Helpers shared by the benchmark scripts: machine description, tables, mean ± sd."""

from __future__ import annotations

import csv
import datetime as _dt
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any, Iterable

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SHARED = HERE.parent.parent / "shared" / "data"
CACHE = HERE / ".cache"


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {mem}, Python {platform.python_version()}, "
            f"torch {torch.__version__} (CPU, {torch.get_num_threads()} threads)")


def command() -> str:
    return "python " + " ".join([os.path.relpath(sys.argv[0], HERE.parent)] + sys.argv[1:])


def mean_sd(xs: Iterable[float]) -> tuple[float, float]:
    xs = [x for x in xs if x is not None]
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def fmt_pct(xs: Iterable[float]) -> str:
    m, s = mean_sd(xs)
    return f"{100 * m:.1f} ± {100 * s:.1f}"


def write_table(stem: str, rows: list[dict[str, Any]], *, title: str, notes: str = "",
                md_rows: list[dict[str, Any]] | None = None) -> Path:
    """Write ``results/<stem>.csv`` (all rows) and ``results/<stem>.md`` (``md_rows`` or rows)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    cols = list(rows[0].keys()) if rows else []
    with open(RESULTS / f"{stem}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    show = md_rows if md_rows is not None else rows
    mcols = list(show[0].keys()) if show else []
    lines = [f"# {title}", "",
             f"- command: `{command()}`",
             f"- machine: {machine()}",
             f"- date: {_dt.date.today().isoformat()}", ""]
    if notes:
        lines += [notes.strip(), ""]
    lines.append("| " + " | ".join(mcols) + " |")
    lines.append("|" + "|".join("---" for _ in mcols) + "|")
    for r in show:
        lines.append("| " + " | ".join(_cell(r[c]) for c in mcols) + " |")
    path = RESULTS / f"{stem}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def load_runs(path: Path) -> dict[str, dict]:
    """Finished runs stored one JSON object a line in ``path``, by their ``key``."""
    import json

    done: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by an interrupted write
                continue
            done[row["key"]] = row
    return done


def store_run(path: Path, row: dict) -> None:
    """Append one finished run to ``path`` (so an interrupted benchmark continues)."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
