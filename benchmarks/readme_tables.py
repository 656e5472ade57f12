"""Regenerate the measured tables of README.md and docs/benchmarks.md from ``benchmarks/results/``,
or check them (CI).

Every measured table in those documents sits between two marker lines::

    <!-- table: NAME -->
    ...generated, never edited by hand...
    <!-- /table -->

and is written by the function registered under ``NAME`` (in ``tables_quality.py``,
``tables_control.py``, ``tables_frontier.py`` or ``tables_speed.py``, with the machinery of
``tables_common.py``). A function reads its results files with :func:`load` (which remembers them)
and returns markdown lines; the block ends with a ``Source:`` line naming each file read, with the
commit and date recorded inside it. So a number in a table can only come from a committed results
file, and ``--check`` (run by ``.ci/run``) fails when a document and the files disagree, or when a
table is placed in no document or in two.

    python benchmarks/readme_tables.py           # rewrite the blocks of both documents
    python benchmarks/readme_tables.py --check   # exit 1, with a diff, if any block is stale

To add a table: write a results file in ``benchmarks/results/`` from your benchmark (record
``date`` and ``git`` at top level), add a function decorated ``@table("name")`` that builds the
lines from it to ``tables_quality.py`` or ``tables_speed.py`` (or a module of its own, imported
below), and put the two marker lines where it belongs (docs/benchmarks.md, or README.md for the
few a new user needs); then run this script.
Prose around the blocks stays hand-written: keep numbers out of it, or name their file next to
them.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the table modules, beside this file

import tables_common as common
import tables_control  # noqa: F401 (registers its tables)
import tables_frontier  # noqa: F401 (registers its tables)
import tables_quality  # noqa: F401 (registers its tables)
import tables_speed  # noqa: F401 (registers its tables)
from tables_common import ROOT, build

README = ROOT / "README.md"
DOCUMENTS = (README, ROOT / "docs" / "benchmarks.md")
BLOCK = re.compile(r"(<!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def render(text: str) -> str:
    """``text`` with every marked block rebuilt."""
    names = [m["name"] for m in BLOCK.finditer(text)]
    unknown = sorted(set(names) - set(common.TABLES))
    if unknown:
        known = sorted(common.TABLES)
        raise SystemExit(f"readme_tables: README marks unknown tables {unknown}; known: {known}")
    return BLOCK.sub(lambda m: m[1] + build(m["name"]) + m[4], text)


# Registered tables placed in no document on purpose, and why.
NOT_PLACED = {
    "selection": "its builder reads a selection_demo.json with held-out rows and a full scan, "
    "which the committed file (an earlier run) does not have",
}


def placed(texts: dict[Path, str]) -> list[str]:
    """Problems with where the tables are: a registered table in no document (unless listed in
    :data:`NOT_PLACED`), or in more than one."""
    where: dict[str, list[str]] = {name: [] for name in common.TABLES if name not in NOT_PLACED}
    for path, text in texts.items():
        for m in BLOCK.finditer(text):
            where.setdefault(m["name"], []).append(path.name)
    return [
        f"table {name!r} is in {', '.join(paths) if paths else 'no document'}"
        for name, paths in where.items()
        if len(paths) != 1
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description="regenerate or check the measured tables of the documents")
    parser.add_argument("--check", action="store_true", help="fail (exit 1) if a document is stale")
    parser.add_argument(
        "documents",
        nargs="*",
        type=Path,
        default=list(DOCUMENTS),
        help="markdown files (default: README.md and docs/benchmarks.md)",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    texts = {path: path.read_text() for path in args.documents}
    problems = placed(texts) if args.documents == list(DOCUMENTS) else []
    for line in problems:
        print(f"readme_tables: {line}", file=sys.stderr)
    stale = []
    for path, text in texts.items():
        new = render(text)
        if new == text:
            continue
        if args.check:
            name = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
            sys.stdout.writelines(
                difflib.unified_diff(text.splitlines(True), new.splitlines(True), name, "regenerated")
            )
            stale.append(name)
        else:
            path.write_text(new)
            print(f"rewrote {len(BLOCK.findall(text))} blocks in {path}")
    if stale:
        print(f"stale tables in {', '.join(stale)}: run python benchmarks/readme_tables.py", file=sys.stderr)
    if args.check and not stale and not problems:
        blocks = sum(len(BLOCK.findall(t)) for t in texts.values())
        print(f"tables match benchmarks/results/ ({blocks} blocks in {len(texts)} documents)")
    return 1 if stale or problems else 0


if __name__ == "__main__":
    sys.exit(main())
