#!/usr/bin/env bash
# The suite on the OLDEST versions vauban claims: every runtime requirement pinned to the lower
# bound pyproject.toml declares (.ci/lower_bounds.py), in a fresh venv (.venv-oldest).
# Run by hand (not in CI: torch's oldest supported release is a CUDA build of ~3 GB on PyPI);
# after changing a lower bound, run it and record the outcome in benchmarks/results/oldest_suite.txt.
#   bash .ci/oldest.sh                 # -m "not demo" (the tiny-model suite)
#   bash .ci/oldest.sh -m demo -x      # any pytest arguments instead
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-oldest
rm -rf "$venv"
python3 -m venv "$venv"
python3 .ci/lower_bounds.py > "$venv/lower-bounds.txt"
"$venv/bin/pip" install -q -c "$venv/lower-bounds.txt" -e ".[dev]"
echo "== installed (lower bounds: $venv/lower-bounds.txt)"
"$venv/bin/pip" list 2>/dev/null | grep -iE "^(torch|transformers|accelerate|safetensors|numpy|tqdm|rich|psutil|gguf|matplotlib|mlx|mlx-lm|mlx-cpu|optuna|triton|huggingface.hub|tokenizers) "
export TRITON_INTERPRET=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
if [ "$#" -eq 0 ]; then set -- -m "not demo"; fi
"$venv/bin/python" -m pytest "$@"
