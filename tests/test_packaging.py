"""vauban as an installed package: what importing it costs, what each extra adds, what is shipped.

``import vauban`` and ``vauban --help`` must not import torch or transformers (seconds; PEP 562
``__getattr__`` in the package, imports inside each CLI command), checked in a fresh process.
"""

from __future__ import annotations

import importlib
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


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["measure", "--help"], ["optimize", "--help"], ["probe", "--alpha", "x"], ["nonsense"]],
)
def test_help_and_usage_errors_import_no_torch(argv):
    code = (
        "import contextlib, io\nfrom vauban.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        f"    try: main({argv!r})\n    except SystemExit: pass"
    )
    assert not any(_imported_after(code).values())


def test_exported_names_resolve_lazily():
    import vauban

    assert set(vauban.__all__) | {"load_model"} == set(vauban._EXPORTS)
    for name in vauban.__all__:
        assert getattr(vauban, name) is not None
    assert vauban.load is vauban.load_model
    with pytest.raises(AttributeError):
        vauban.no_such_name  # noqa: B018


@pytest.mark.parametrize(
    ("module", "extra", "call"),
    [
        ("matplotlib", "plots", lambda: __import__("vauban.plots").plots.plot_sweep(None, None)),
        (
            "optuna",
            "optimize",
            lambda: importlib.import_module("vauban.search.optimizing").optimize(None, None, None),
        ),
        (
            "gguf",
            "gguf",
            lambda: importlib.import_module("vauban.core.extras").require("gguf", "gguf", "reading x.gguf"),
        ),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(monkeypatch, module, extra, call):
    from vauban.core.errors import VaubanError

    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError, as if not installed
    with pytest.raises(VaubanError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message and f"pip install 'vauban[{extra}]'" in message, message


def test_shipped_files_include_the_prompt_data():
    from importlib import resources

    data = resources.files("vauban") / "data"
    assert {"harmful.jsonl", "harmless.jsonl", "eval_harmful.jsonl", "reference.jsonl"} <= {
        p.name for p in data.iterdir()
    }


def test_every_runtime_requirement_has_a_tested_lower_bound():
    """pyproject declares ranges; .ci/oldest.sh installs exactly their lower bounds."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("lower_bounds", root / ".ci" / "lower_bounds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pins = module.lower_bounds(root / "pyproject.toml")
    names = {pin.split("==")[0] for pin in pins}
    assert {"torch", "transformers", "accelerate", "safetensors", "gguf", "matplotlib", "optuna"} <= names
    assert all("==" in pin and ">" not in pin and "<" not in pin.split(";")[0] for pin in pins), pins


def test_version_is_written_once_and_matches_pyproject():
    import tomllib
    from pathlib import Path

    import vauban
    from vauban.core.version import __version__

    pyproject_file = Path(__file__).resolve().parents[1] / "pyproject.toml"
    pyproject = tomllib.loads(pyproject_file.read_text(encoding="utf-8"))
    assert vauban.__version__ == __version__ == pyproject["project"]["version"]
