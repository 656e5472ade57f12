"""vauban as an installed package: what importing it costs, what each extra adds, what is shipped.

``import vauban`` and ``vauban --help`` must not import torch or transformers (seconds; PEP 562
``__getattr__`` in the package, imports inside each CLI command), checked in a fresh process.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "matplotlib", "optuna", "gguf")


def _imported_after(code: str) -> dict[str, bool]:
    """Which heavy modules a fresh interpreter holds after running ``code``."""
    probe = f"{code}\nimport sys; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.split()
    return {name: name in loaded for name in HEAVY}


def test_import_vauban_is_light():
    assert not any(_imported_after("import vauban; vauban.__version__").values())


@pytest.mark.parametrize("argv", [["--help"], ["measure", "--help"], ["optimize", "--help"],
                                  ["probe", "--alpha", "x"], ["nonsense"]])
def test_help_and_usage_errors_import_no_torch(argv):
    code = ("import contextlib, io\nfrom vauban.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
            f"    try: main({argv!r})\n    except SystemExit: pass")
    assert not any(_imported_after(code).values())


def test_exported_names_resolve_lazily():
    import vauban

    assert set(vauban.__all__) | {"load_model"} == set(vauban._EXPORTS)
    for name in vauban.__all__:
        assert getattr(vauban, name) is not None
    assert vauban.load is vauban.load_model
    with pytest.raises(AttributeError):
        vauban.no_such_name  # noqa: B018
