"""What people read when stdout is not a terminal (a log file, CI, a pipe): full values."""

from __future__ import annotations

import subprocess
import sys

CODE = """
from vauban.cli import Report
report = Report("optimize", as_json=False, quiet=True)
columns = ["trial", "refusal", "first-token KL", "refusal likelihood", "attention kernel", "mlp kernel"]
rows = [[n, "0.0%", f"{0.0512345678 + n:.10f}", f"{4.4e-3 * (n + 1):.6e}", "peak 12.3456 width 7.8901",
         "peak 23.0000 width 23.0000"] for n in range(3)]
report.table("Pareto front (31 trials; refusal on 40 validation prompts, first-token KL on 48 harmless "
             "prompts; * = the pick, checked on 40 selection prompts)", columns, rows)
"""


def test_tables_to_a_pipe_keep_every_value_whole():
    done = subprocess.run(
        [sys.executable, "-c", CODE],
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "80", "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)},
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "…" not in out
    for value in (
        "0.0512345678",
        "2.0512345678",
        "4.400000e-03",
        "1.320000e-02",
        "peak 12.3456 width 7.8901",
        "first-token KL",
        "refusal likelihood",
        "checked on 40 selection prompts)",
    ):
        assert value in out, value
    widths = {len(line) for line in out.splitlines() if line.startswith(("┃", "│"))}
    assert len(widths) == 1 and widths.pop() > 80  # one aligned table, wider than a terminal


def test_no_progress_silences_bars_for_the_block_only(capsys):
    from vauban.core.progress import no_progress, progress_off
    from vauban.runtime.batching import progress

    batches = [[0], [1], [2]]
    with no_progress():
        assert progress_off()
        assert list(progress(batches, "quiet", True)) == batches
    assert capsys.readouterr().err == ""
    assert not progress_off()
    assert list(progress(batches, "loud", True)) == batches
    assert "loud" in capsys.readouterr().err
