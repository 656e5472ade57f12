"""lm-evaluation-harness on the in-memory demo model, original vs the default cut, offline.

Runs the harness's gsm8k task definition over the shared GSM8K test file
(``benchmarks/lm_eval_tasks/gsm8k_local.yaml``: 5-shot, greedy, exact match with the harness's
strict and flexible filters) on the first ``--limit`` problems, through
:class:`vauban.capability.harness.Harness` exactly as ``vauban evaluate --tasks`` does, and
records the scores and the wall and CPU time of each side in
``benchmarks/results/lm_eval_demo.json``::

    flock /tmp/vauban-heavy.lock nice -n 5 python benchmarks/lm_eval_demo.py --limit 10
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from demo_inputs import DIRECTION_HELP, SHARED, load_or_measure
from vauban import cut, load
from vauban.capability.harness import Harness
from vauban.core.atomic import write_file
from vauban.edit.cutting import original_weights

RESULTS = Path(__file__).parent / "results"
TASK = Path(__file__).parent / "lm_eval_tasks" / "gsm8k_local.yaml"


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--direction", help=DIRECTION_HELP)
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--json", default=str(RESULTS / "lm_eval_demo.json"))
    args = parser.parse_args()
    model, tokenizer = load()
    direction = load_or_measure(model, tokenizer, args.direction)
    out: dict = {
        "task": "gsm8k_local (lm-eval's gsm8k v3.0 over the shared test file, 5-shot)",
        "limit": args.limit,
        "model": "demo (Qwen2.5-Coder-0.5B-Instruct, float32, 2-core CPU)",
        "date": time.strftime("%Y-%m-%d"),
    }
    with tempfile.TemporaryDirectory() as folder:  # the task file with this checkout's data path
        text = TASK.read_text().replace("../shared/data", str(SHARED))
        (Path(folder) / TASK.name).write_text(text)
        harness = Harness(("gsm8k_local",), limit=args.limit, include_path=folder)
        with cut(model, direction):
            for name, side in (("original", original_weights(model)), ("cut", None)):
                t0, c0 = time.perf_counter(), cpu()
                if side is not None:
                    with side:
                        scores = harness.run(model, tokenizer)
                else:
                    scores = harness.run(model, tokenizer)
                out[name] = {
                    "scores": {s.name: s.value for s in scores},
                    "n": scores[0].n,
                    "wall_seconds": round(time.perf_counter() - t0, 1),
                    "cpu_seconds": round(cpu() - c0, 1),
                }
                print(name, out[name], flush=True)
    text = json.dumps(out, indent=1) + "\n"
    write_file(args.json, lambda tmp: tmp.write_text(text))


if __name__ == "__main__":
    main()
