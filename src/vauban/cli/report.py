"""Where a command's results go: text and rich tables for people, one JSON document for scripts."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

# Width of tables printed where there is no terminal to fit: wide enough that rich never cuts a
# value with "…" (it would squeeze every column into 80 characters otherwise).
NON_TERMINAL_WIDTH = 10_000


class Report:
    """Where a command's results go: people get text and tables, ``--json`` gets one document.

    Human output goes to stdout; spinners and step times go to stderr so that ``--json`` output
    stays parseable and ``--quiet`` can silence them without losing results.
    """

    def __init__(self, command: str, *, as_json: bool, quiet: bool) -> None:
        self.as_json = as_json
        self.quiet = quiet
        self.out = Console(highlight=False, soft_wrap=True)
        if not self.out.is_terminal:  # a log file, CI, a pipe: never squeeze tables to 80 columns
            self.out = Console(highlight=False, soft_wrap=True, width=NON_TERMINAL_WIDTH)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)  # long lines: never re-wrapped
        self.data: dict[str, Any] = {"command": command}
        self.times: dict[str, float] = {}

    def say(self, text: str = "") -> None:
        if not self.as_json:
            self.out.print(text, markup=False)

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if self.as_json:
            return
        table = Table(title=title, title_justify="left")
        for name in columns:
            table.add_column(name, justify="right" if name != columns[0] else "left")
        for row in rows:
            table.add_row(*(str(cell) for cell in row))
        self.out.print(table)

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value

    @contextlib.contextmanager
    def step(self, what: str, key: str | None = None) -> Iterator[None]:
        """A spinner while ``what`` runs (terminals only), then its wall time on stderr."""
        start = time.perf_counter()
        show = not self.quiet
        spinner: Any = contextlib.nullcontext()
        if show and self.err.is_terminal:
            spinner = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=self.err,
                transient=True,
            )
            spinner.add_task(what)
        with spinner:
            yield
        seconds = time.perf_counter() - start
        if key is not None:
            self.times[key] = round(seconds, 1)
        if show:
            self.err.print(f"  {what}: {seconds:.1f} s", markup=False, style="dim")

    def finish(self) -> None:
        if self.times:
            self.data["seconds"] = self.times
        if self.as_json:
            sys.stdout.write(json.dumps(self.data, indent=1, default=str) + "\n")
