"""The harness every benchmark script shares.

* paths: ``SHARED`` (the data sets), ``CACHE`` (features, finished runs; ignored by git) and
  :func:`results_dir` (``benchmarks/results``, or ``benchmarks/.cache/quick_results`` after
  :func:`use_quick_results`, so a smoke run never overwrites the committed results);
* the run store: :class:`RunStore` keeps finished runs one JSON object a line, keyed by
  :func:`run_key` (a stable hash of the run's settings); :meth:`RunStore.run` skips a finished
  run and runs and stores the rest, so an interrupted benchmark continues;
* threads: :func:`pin_blas_threads` (before numpy is imported), :func:`set_threads` and
  :func:`one_thread` (a function run on one torch thread);
  :func:`episode_count` (the arguments every episodic benchmark takes);
* formatting: :func:`mean_sd`, :func:`fmt_pct` (mean ± sd in %), :func:`fmt_share`
  (one fraction in %);
* tables: :func:`write_table` (CSV + markdown headed by the command, the machine and the
  date), :func:`md_table`;
* figures: :func:`pyplot`, :func:`grouped_bars` (bars with error bars), :func:`bars_by_group`
  (one bar per configuration within each group of rows), :func:`save_figure`;
* data files: :func:`read_sentence_lines` (the sentence-classification sets),
  :func:`uci_tsv` (a UCI sentiment domain as a TSV ``fit`` reads);
* child processes: :func:`run_child` (a fresh process, e.g. for a peak-memory figure).

Nothing here imports a private name of ``transferkit``.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
CACHE = HERE / ".cache"
RESULTS = HERE / "results"
QUICK_RESULTS = CACHE / "quick_results"

_results = RESULTS


# --------------------------------------------------------------------------- places

def results_dir() -> Path:
    """Where tables and figures go: ``results/``, or ``.cache/quick_results/`` in quick mode."""
    return _results


def use_quick_results(quick: bool = True) -> Path:
    """Send this process's tables and figures to ``.cache/quick_results`` (a smoke run's
    figures are not the committed ones); returns the folder now in use."""
    global _results
    _results = QUICK_RESULTS if quick else RESULTS
    return _results


def runs_path(stem: str, quick: bool = False) -> Path:
    """The run store of benchmark ``stem`` (a smoke run has its own)."""
    return CACHE / (f"{stem}_quick_runs.jsonl" if quick else f"{stem}_runs.jsonl")


# --------------------------------------------------------------------------- threads

def pin_blas_threads(n: int = 1) -> None:
    """Default the BLAS / OpenMP pools to ``n`` threads; call it before numpy is imported.
    On a small shared machine scikit-learn's and numpy's default pools oversubscribe the
    cores and closed-form fits slow down several-fold.  A value already set is kept."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(n))


def one_thread(fn: Callable) -> Callable:
    """``fn`` run with one torch thread (the count before is restored)."""
    def run(*a, **k):
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*a, **k)
        finally:
            torch.set_num_threads(before)
    return run


def set_threads(n: int) -> None:
    """torch CPU threads (the machine line of every table names the count)."""
    import torch

    torch.set_num_threads(n)


def add_threads_arg(ap, default: int = 1) -> None:
    ap.add_argument("--threads", type=int, default=default,
                    help="torch CPU threads (default 1: on a small shared machine more "
                         "OpenMP threads than free cores slow training down several-fold)")


def episode_count(description: str) -> int:
    """The arguments of an episodic benchmark (``--quick``: 60 episodes into the quick
    results folder; ``--episodes N``; ``--threads``, default 2), applied; returns the
    number of episodes."""
    import argparse

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true", help="60 episodes, quick results folder")
    ap.add_argument("--episodes", type=int, default=600)
    add_threads_arg(ap, default=2)
    a = ap.parse_args()
    use_quick_results(a.quick)
    set_threads(a.threads)
    return 60 if a.quick else a.episodes


# --------------------------------------------------------------------------- run store

def run_key(settings: dict[str, Any]) -> str:
    """A stable 16-hex-digit hash of everything that decides a run's outcome."""
    blob = json.dumps(settings, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _default_summary(row: dict) -> str:
    return f"val {row['val_acc']:.3f}  test {row['test_acc']:.3f}  {row['seconds']:.0f}s"


class RunStore:
    """Finished runs of one benchmark, stored one JSON object a line by their ``key``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.done = load_runs(self.path)

    def __contains__(self, key: str) -> bool:
        return key in self.done

    def __getitem__(self, key: str) -> dict:
        return self.done[key]

    def reload(self) -> None:
        """Read the file again (runs stored by child processes)."""
        self.done = load_runs(self.path)

    def add(self, key: str, row: dict) -> dict:
        row["key"] = key
        store_run(self.path, row)
        self.done[key] = row
        return row

    def run(self, key: str, fn: Callable[[], dict], *, label: str = "",
            summary: Callable[[dict], str] | None = _default_summary,
            only_stored: bool = False) -> dict | None:
        """The stored run ``key``, or run ``fn()`` now and store its row (unless
        ``only_stored``: then ``None``)."""
        if key in self.done:
            return self.done[key]
        if only_stored:
            return None
        log(f"{label} ...")
        row = self.add(key, fn())
        if summary is not None:
            print("    " + summary(row), flush=True)
        return row


def without_key(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "key"}


def load_runs(path: Path) -> dict[str, dict]:
    """Finished runs stored one JSON object a line in ``path``, by their ``key``."""
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
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()


# --------------------------------------------------------------------------- data files

def uci_tsv(domain: str, path: Path) -> Path:
    """UCI sentiment domain ``domain`` (``amazon_cells``, ``yelp``, ``imdb``) as a ``text``
    / ``label`` TSV at ``path`` (written once; whitespace runs collapsed)."""
    if not path.exists():
        lines = ["text\tlabel"]
        raw = (SHARED / "uci_sentiment" / f"{domain}_labelled.txt").read_text(errors="replace")
        for line in raw.splitlines():
            text, _, label = line.strip().rpartition("\t")
            if text and label in ("0", "1"):
                lines.append(f"{' '.join(text.split())}\t{label}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
    return path


def read_sentence_lines(path: Path, keep_empty: bool = False) -> tuple[list[str], list[int]]:
    """``<label> <sentence>`` lines of ``../shared/data/sentence_classification``; a line that
    is not UTF-8 is read as latin-1.  A label without a sentence (CR has 4, MPQA 3) is left
    out unless ``keep_empty`` (the PEFT text benchmark's published runs kept them)."""
    xs, ys = [], []
    for raw in Path(path).read_bytes().splitlines():
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            line = raw.decode("latin-1")
        line = line.strip()
        if not line:
            continue
        label, _, text = line.partition(" ")
        if text.strip() or keep_empty:
            xs.append(text.strip())
            ys.append(int(label))
    return xs, ys


# --------------------------------------------------------------------------- child processes

def run_child(script: str | Path, spec: dict) -> None:
    """Run ``script --child <spec as JSON>`` in a fresh Python process; fail if it fails."""
    subprocess.run([sys.executable, str(script), "--child", json.dumps(spec)], check=True)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its waited-for children."""
    import resource

    me, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# --------------------------------------------------------------------------- numbers

def mean_sd(xs: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value, nan for none); ``None`` skipped."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def fmt_pct(xs: Iterable[float], empty: str | None = None) -> str:
    """Fractions as ``"mean ± sd"`` in %, one decimal; ``empty`` (when given) for no value."""
    xs = [x for x in xs if x is not None]
    if not xs and empty is not None:
        return empty
    m, s = mean_sd(xs)
    return f"{100 * m:.1f} ± {100 * s:.1f}"


def fmt_share(frac: float) -> str:
    """One fraction in %: whole numbers from 10 % up, two significant digits below."""
    p = 100 * frac
    return f"{p:.0f}" if p >= 10 else f"{p:.2g}"


# --------------------------------------------------------------------------- tables

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


def cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def md_table(rows: list[dict[str, Any]], fmt: Callable[[Any], str] = cell) -> str:
    """A markdown table of ``rows`` (columns: the first row's keys), ending in a newline."""
    cols = list(rows[0].keys()) if rows else []
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_table(stem: str, rows: list[dict[str, Any]], *, title: str, notes: str = "",
                md_rows: list[dict[str, Any]] | None = None, extra: str = "") -> Path:
    """Write ``<results>/<stem>.csv`` (all rows) and ``<results>/<stem>.md`` (``md_rows`` or
    rows, after the command, machine, date and ``notes``; ``extra`` appended at the end)."""
    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    cols = list(rows[0].keys()) if rows else []
    with open(out / f"{stem}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    show = md_rows if md_rows is not None else rows
    lines = [f"# {title}", "",
             f"- command: `{command()}`",
             f"- machine: {machine()}",
             f"- date: {_dt.date.today().isoformat()}", ""]
    if notes:
        lines += [notes.strip(), ""]
    path = out / f"{stem}.md"
    path.write_text("\n".join(lines) + "\n" + md_table(show) + extra)
    return path


# --------------------------------------------------------------------------- figures

def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def grouped_bars(ax, n_groups: int, series: list[dict[str, Any]], *, width: float = 0.8,
                 capsize: float = 3, scale: float = 100.0) -> list:
    """Side-by-side bars with error bars: ``series`` = ``[{"label", "values": [(mean, sd),
    ...one per group], "color" (optional)}]``; the series share ``width`` within a group.
    Values are multiplied by ``scale`` (fractions -> %).  Returns the bar containers."""
    import numpy as np

    x = np.arange(n_groups)
    w = width / len(series)
    bars = []
    for i, s in enumerate(series):
        off = (i - (len(series) - 1) / 2) * w
        vals = s["values"]
        bars.append(ax.bar(x + off, [scale * v[0] for v in vals], w,
                           yerr=[scale * v[1] for v in vals], capsize=capsize,
                           label=s.get("label"), color=s.get("color")))
    return bars


def bars_by_group(rows: list[dict[str, Any]], *, group: str, series: str, value: str,
                  names: Iterable[str], ylabel: str, stem: str) -> Path:
    """One bar (mean ± sd of ``value``) per ``series`` name within each ``group`` of
    ``rows``; saved as ``<results>/<stem>.png``."""
    plt = pyplot()
    groups = list(dict.fromkeys(r[group] for r in rows))
    bars = [{"label": n, "values": [mean_sd(r[value] for r in rows
                                            if (r[group], r[series]) == (g, n))
                                    for g in groups]} for n in names]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    grouped_bars(ax, len(groups), bars)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, stem)


def save_figure(fig, name: str, dpi: int = 120) -> Path:
    """Save ``fig`` as ``<results>/<name>`` (``.png`` added when there is no suffix), close it."""
    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    path = out / (name if Path(name).suffix else f"{name}.png")
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path
