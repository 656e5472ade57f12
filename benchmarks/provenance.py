"""What every results file records about the run that made it: the commit and the date
(``benchmarks/readme_tables.py`` prints both under each README table)."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent


def commit(where: Path = HERE) -> str:
    """The checkout's short commit, with ``+`` when its tracked files differ from it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+" if git("status", "--porcelain", "--untracked-files=no") else "")


def stamp() -> dict[str, str]:
    """``{"git": ..., "date": ...}`` for the top level of a results file."""
    return {"git": commit(), "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
