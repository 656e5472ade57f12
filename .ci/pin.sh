#!/usr/bin/env bash
# Regenerate .ci/constraints.txt: the newest versions pip resolves today for vauban[dev], with the
# CPU build of torch (2.13.0: the wheel CI's machines have on disk; a newer torch from PyPI is a
# multi-GB CUDA build). Nothing is installed (pip's dry-run resolver). Review the diff, run
# .ci/run, commit. pyproject.toml's ranges are not touched: constraints bind only CI and the
# README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH=${TORCH:-2.13.0}
report=$(mktemp)
python3 -m pip install -q --dry-run --ignore-installed --report "$report" -e ".[dev]" "torch==$TORCH"
{
    echo "# Exact versions CI installs (.ci/run) and the README's test command uses: the newest that"
    echo "# resolved for vauban[dev] on $(date -u +%F), CPU torch. Regenerate with .ci/pin.sh."
    python3 - "$report" <<'PY'
import json, sys
items = json.load(open(sys.argv[1]))["install"]
pins = sorted((i["metadata"]["name"].lower(), i["metadata"]["version"]) for i in items
              if i["metadata"]["name"].lower() != "vauban")
# "torch==2.13.0", not "+cpu": pip takes the CPU wheel on disk where there is one (a local label
# sorts higher), and the same line still resolves on machines that only reach PyPI.
print("\n".join(f"{name}=={version.split('+')[0]}" for name, version in pins))
PY
} > .ci/constraints.txt
rm -f "$report"
wc -l .ci/constraints.txt
