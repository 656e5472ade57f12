"""Print pip constraints that pin every runtime requirement of vauban to its lower bound.

Reads ``pyproject.toml``: the core dependencies and the feature extras (``gguf``, ``plots``,
``mlx``, ``optimize``, ``datasets``; not ``dev``, whose test tools are not what vauban runs
with, nor ``demo``'s data packages, pinned already). ``name>=X`` becomes ``name==X``; markers
are kept. Used by ``.ci/oldest.sh``.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

FEATURE_EXTRAS = ("gguf", "plots", "mlx", "optimize", "datasets")


def lower_bounds(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in FEATURE_EXTRAS:
        requirements += project["optional-dependencies"][extra]
    pins = []
    for requirement in requirements:
        spec, _, marker = requirement.partition(";")
        match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*>=\s*([0-9][^,\s]*)\s*", spec)
        if match is None:
            sys.exit(f"lower_bounds.py: no single '>=' lower bound in {requirement!r}")
        pins.append(f"{match[1]}=={match[2]}" + (f"; {marker.strip()}" if marker else ""))
    return pins


if __name__ == "__main__":
    print("\n".join(lower_bounds(Path(__file__).resolve().parent.parent / "pyproject.toml")))
