#!/usr/bin/env bash
# Build the sdist and the wheel, install the wheel (not the source tree) into a fresh venv with the
# [demo] extra, and run the tutorial's first snippets from it (.ci/first_snippets.py): the bundled
# prompt files and everything else the package needs must be inside the wheel.
#   bash .ci/wheel_check.sh [PYTHON-WITH-build]     (default: .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-.venv/bin/python}
rm -rf dist .venv-wheel
"$python" -m build --sdist --wheel --outdir dist . > /dev/null
ls -l dist
wheel=$(ls dist/vauban-*.whl)
python3 - "$wheel" dist/vauban-*.tar.gz <<'PY'
import sys, tarfile, zipfile
wheel, sdist = sys.argv[1:]
names = zipfile.ZipFile(wheel).namelist()
data = sorted(n for n in names if n.startswith("vauban/data/"))
assert data, f"no package data in {wheel}"
assert "vauban/cli/__init__.py" in names and not any(n.startswith(("tests/", "benchmarks/")) for n in names), names
members = tarfile.open(sdist).getnames()
assert any(m.endswith("/src/vauban/data/harmful.jsonl") for m in members), "sdist lacks the prompt data"
print(f"wheel: {len(names)} files, data: {', '.join(n.split('/')[-1] for n in data)}; sdist: {len(members)}")
PY
python3 -m venv .venv-wheel
.venv-wheel/bin/pip install -q -c .ci/constraints.txt "$wheel[demo]"
cd /tmp  # away from the source tree: only the installed wheel can be imported
"$OLDPWD/.venv-wheel/bin/python" "$OLDPWD/.ci/first_snippets.py"
