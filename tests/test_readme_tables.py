"""benchmarks/readme_tables.py: the blocks between markers in README.md and docs/benchmarks.md are
rebuilt from results files, each table in one document."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def tables(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "benchmarks" / "readme_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    common = module.common  # the registry and results reading, in benchmarks/tables_common.py
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    monkeypatch.setattr(common, "TABLES", dict(common.TABLES))  # the test's table registered in a copy
    (tmp_path / "speed.json").write_text(
        json.dumps({"date": "2026-11-30T01:02:03", "git": "abc1234", "tok_s": 1234.5})
    )

    @common.table("speed")
    def speed() -> list[str]:
        tok_s = common.load("speed.json")["tok_s"]
        return common.markdown(["what", "result"], [["decode", f"{tok_s:,.0f} tok/s"]])

    return module


def test_blocks_are_rebuilt_with_their_sources(tables):
    text = "intro\n<!-- table: speed -->\nstale | rows\n<!-- /table -->\noutro 5 %\n"
    new = tables.render(text)
    assert new == (
        "intro\n<!-- table: speed -->\n| what | result |\n| --- | --- |\n| decode | 1,234 tok/s |\n\n"
        "Source: `benchmarks/results/speed.json` (run at commit abc1234, 2026-11-30).\n<!-- /table -->\n"
        "outro 5 %\n"
    )
    assert tables.render(new) == new  # regenerating is stable: --check passes right after


def test_unknown_tables_and_missing_files_are_errors(tables):
    with pytest.raises(SystemExit, match="unknown tables"):
        tables.render("<!-- table: nope -->\n<!-- /table -->\n")
    (tables.common.RESULTS / "speed.json").unlink()
    with pytest.raises(SystemExit, match="missing"):
        tables.render("<!-- table: speed -->\n<!-- /table -->\n")


def test_the_committed_readme_is_current():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "readme_tables.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def test_every_table_is_placed_in_one_document(tables):
    block = "<!-- table: speed -->\n<!-- /table -->\n"
    problems = tables.placed({Path("README.md"): block, Path("benchmarks.md"): block})
    assert "table 'speed' is in README.md, benchmarks.md" in problems
    assert "table 'judges' is in no document" in problems
    assert not any("'selection'" in line for line in problems)  # NOT_PLACED, with its reason
