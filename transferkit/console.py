"""Console output: one-line logs and rich progress bars (quiet mode prints nothing)."""

from __future__ import annotations

import sys
from contextlib import contextmanager

from .errors import printable


class Reporter:
    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self._console = None
        if not quiet:
            from rich.console import Console

            self._console = Console(file=sys.stderr, highlight=False, soft_wrap=True)

    def log(self, msg: str) -> None:
        if self._console is not None:
            self._console.print(printable(msg), markup=False)

    @contextmanager
    def progress(self):
        if self._console is None or not self._console.is_terminal:
            yield None
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=self._console,
                      transient=True) as p:
            yield p
