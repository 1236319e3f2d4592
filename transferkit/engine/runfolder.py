"""The run folder: refused when it would overwrite a run by accident, and touched only once
the inputs have been checked.

:func:`check_run_folder` runs before anything is read (it only looks): ``--out`` must be a
folder or a path where one can be made, and a folder that already holds a run (its record,
checkpoint, figures or bundle) is only used by ``--resume`` (which finishes it) or
``--overwrite`` (which replaces it).  :class:`RunFolder` is the callback that prepares the
folder in ``on_fit_start``, after the data has been read and checked, the backbone built and
the strategy has accepted it: a fit that fails on its inputs leaves every folder as it was.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..events import Callback
from ..io import write_json

#: what a run writes into its folder (``--overwrite`` removes these and nothing else)
RUN_FILES = ("run_config.json", "metrics.json", "history.csv", "per_class.json", "curves.png",
             "report.html", "domain_tsne.png", "bundle", "checkpoint", "auto.json")
RUN_GLOBS = ("confusion_*.csv", "confusion_*.png")
#: any of these makes a folder a run folder
RUN_MARKERS = ("run_config.json", "checkpoint", "metrics.json", "bundle")


def holds_a_run(folder: Path) -> bool:
    return any((Path(folder) / m).exists() for m in RUN_MARKERS)


def check_run_folder(folder, *, resume: bool = False, overwrite: bool = False,
                     flag: str = "--out") -> None:
    """Refuse a run folder that cannot be used, without touching anything."""
    folder = Path(folder)
    if resume and overwrite:
        raise ConfigError("--resume finishes a run and --overwrite replaces it: give one")
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{flag} {folder}: exists and is not a folder")
    for parent in folder.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{flag} {folder}: {parent} is not a folder")
            break
    if resume:
        if not folder.is_dir():
            raise ConfigError(f"{folder}: no such run folder to resume")
        return
    if folder.is_dir() and holds_a_run(folder) and not overwrite:
        raise ConfigError(f"{flag} {folder}: already holds a run; finish it with --resume "
                          f"{folder}, replace it with --overwrite, or choose another folder")


def clear_run(folder: Path) -> None:
    """Remove what an earlier run wrote into ``folder`` (nothing else)."""
    folder = Path(folder)
    paths = [folder / n for n in RUN_FILES]
    paths += [p for g in RUN_GLOBS for p in folder.glob(g)]
    for p in paths:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


class RunFolder(Callback):
    """Prepares the run folder when the fit starts: creates it (clearing the earlier run with
    ``overwrite``) and writes ``run_config.json`` (``record``; None: data given in memory) and
    any further JSON ``files`` (name -> content, e.g. how ``--strategy auto`` chose).
    A resumed run's folder and record are left as they are."""

    def __init__(self, folder: Path, record: dict[str, Any] | None, *, resume: bool = False,
                 overwrite: bool = False, files: dict[str, Any] | None = None):
        self.dir = Path(folder)
        self.record = record
        self.files = dict(files or {})
        self.resume = resume
        self.overwrite = overwrite

    def on_fit_start(self, state) -> None:
        if self.resume:
            return
        check_run_folder(self.dir, overwrite=self.overwrite)
        try:
            if self.overwrite and self.dir.is_dir():
                clear_run(self.dir)
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"--out {self.dir}: cannot prepare the run folder "
                              f"({e.strerror or e})") from None
        state.log(f"run folder: {self.dir}")
        if self.record is not None:
            write_json(self.dir / "run_config.json", self.record)
        for name, content in self.files.items():
            write_json(self.dir / name, content)
