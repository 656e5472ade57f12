#!/usr/bin/env bash
# The non-demo suite on a GPU machine of the device tool (no internet, its own CUDA torch and
# transformers): the wheels carried in .whl/ installed without their dependencies, the source tree
# on PYTHONPATH as an absolute path (the CLI tests run `python -m vauban.cli` in temporary
# folders: a relative path does not resolve there), -v so that a run cut off by the call's time
# limit still names every test that failed before it; the whole log goes to $OUT when set.
#   bash .ci/gpu_suite.sh 1/2     # the first half of the test files (each half fits one call)
#   bash .ci/gpu_suite.sh 2/2     # the second half; no argument: every file
set -uo pipefail
cd "$(dirname "$0")/.."
part=${1:-1/1}
index=${part%/*} parts=${part#*/}
[ -d .whl ] && python3 -m pip install -q --no-deps --no-index .whl/*.whl >/dev/null 2>&1
mapfile -t files < <(ls tests/test_*.py | sort)
per=$(( (${#files[@]} + parts - 1) / parts ))
chosen=("${files[@]:$(( (index - 1) * per )):$per}")
log=${OUT:-/tmp}/gpu_suite_${index}of${parts}.txt
python3 -c "import sys, torch, transformers; print(sys.version.split()[0], torch.__version__, transformers.__version__, torch.cuda.get_device_name(0))" | tee "$log"
PYTHONPATH="$PWD/src" python3 -m pytest -v -p no:cacheprovider -m "not demo" -n "${WORKERS:-16}" -rfEs \
    --tb=short "${chosen[@]}" >>"$log" 2>&1
rc=$?
grep -E "^(FAILED|ERROR)|^\[gw[0-9]+\] .*(FAILED|ERROR)|passed|failed" "$log" | tail -40
echo "rc=$rc"
exit $rc
