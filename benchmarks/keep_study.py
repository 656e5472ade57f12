"""Which ``--keep`` edit keeps one category's refusal and removes the others' (issue 28), on
development prompts only: the last ``DEV`` of each category's measuring prompts, every edit fitted
on the first ones (and the generic harmful prompts of no kept category), none on the development
prompts; ``benchmarks/control_demo.py`` reports the chosen one on the held-out prompts.

    flock /tmp/vauban-heavy.lock nice -n 10 env OMP_NUM_THREADS=2 python benchmarks/keep_study.py

Refusal: the markers judge on greedy answers of ``MAX_TOKENS`` (32) tokens, per category; the score
is :func:`control_demo.keep_score` (others' mean refusal + the kept category's shortfall below 80 %
of its original). Rows are written to ``benchmarks/results/keep_study.json`` as they come; the
committed file holds the rows run before the heavy-job lock was needed elsewhere (the vector cuts
at alpha 2 and 3, per layer at 1 and 2); the others ran in ``control_demo.py``'s development
stage, which now tries them (``VECTOR_ALPHAS``, ``PRESERVING``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from control_demo import DEV, default_direction, keep_score, refusals, say
from provenance import stamp
from vauban import load
from vauban.direction.categories import category_prompts, from_residuals, keep_vector
from vauban.methods.keeping import KeepPreserving, harmful_records, keep_prompt_sets
from vauban.methods.preserving import capture_set
from vauban.methods.protocol import Inputs
from vauban.model import arch
from vauban.runtime.activations import last_token_residuals
from vauban.text.prompts import load_prompts

RESULTS = Path(__file__).resolve().parent / "results" / "keep_study.json"


def write(data: dict) -> None:
    RESULTS.write_text(json.dumps(data | stamp(), indent=1, ensure_ascii=False) + "\n")


def captured_sets(model, tokenizer, inputs: Inputs, kept: list[str], last: int | None, max_rows: int):
    """(remove, kept, harmless) writer inputs at every token or the ``last`` ones."""

    def grab(prompts, prompt_set):
        return capture_set(model, tokenizer, inputs, prompts, prompt_set, max_rows, last=last)

    return grab(inputs.harmful, "harmful"), grab(kept, "harmful"), grab(inputs.harmless, "harmless")


def joined(a, b):
    """Two captures' rows together, per writer set."""
    return tuple({k: torch.cat([x[k], y[k]]) for k in x} for x, y in zip(a, b, strict=True))


def per_layer_orthogonal(direction, cats, keep: str, layers: int) -> torch.Tensor:
    """``(layers, 1, d)``: at each layer, that layer's refusal direction less its part along the
    kept category's direction there."""
    rows = []
    for layer in range(layers):
        r = (direction.harmful_means[layer] - direction.harmless_means[layer]).float()
        rows.append(keep_vector(r, cats, [keep], "orthogonal", layer=layer))
    return torch.stack(rows)[:, None, :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", default="weapons")
    parser.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    rows = data.setdefault("rows", {})
    model, tokenizer = load()
    direction = default_direction(model, tokenizer)
    keep = args.keep
    measuring = category_prompts("measure")
    dev = {c: p[-DEV:] for c, p in measuring.items()}
    fit = {c: p[:-DEV] for c, p in measuring.items()}
    exclude = {p for g in dev.values() for p in g}
    generic = harmful_records("harmful")
    remove, kept = keep_prompt_sets(fit, [keep], generic, exclude)
    inputs = Inputs(remove, load_prompts("harmless"))
    data.update({"keep": keep, "max_tokens": 32, "judge": "markers", "dev": f"last {DEV} per category"})
    wanted = set(filter(None, args.only.split(",")))

    def run(name: str, edit) -> None:
        if (wanted and name not in wanted) or (not wanted and name in rows):
            return
        start = time.perf_counter()
        rates = refusals(model, tokenizer, dev, edit)[0]
        score = keep_score(rates, rows["original"]["rates"], keep) if "original" in rows else None
        rows[name] = {"rates": rates, "score": score, "seconds": round(time.perf_counter() - start)}
        say(f"{name}: {rates} score {score}")
        write(data)

    run("original", None)
    acts = {c: last_token_residuals(model, tokenizer, p, prompt_set="harmful") for c, p in fit.items()}
    base = last_token_residuals(model, tokenizer, inputs.harmless, prompt_set="harmless")
    cats = from_residuals(acts, base, direction.layer_index)
    for alpha in (1.5, 1.75, 2.0, 3.0):
        run(f"orthogonal α{alpha:g}", lambda a=alpha: _vector(model, keep_vector(direction, cats, [keep]), a))
    layered = per_layer_orthogonal(direction, cats, keep, arch.num_layers(model))
    for alpha in (1.0, 2.0):
        run(f"per-layer orthogonal α{alpha:g}", lambda a=alpha: _vector(model, layered, a))

    cache: dict = {}

    def sets(key: str):
        if key not in cache:
            say(f"capture {key}")
            if key == "all":
                cache[key] = captured_sets(model, tokenizer, inputs, kept, None, 1024)
            elif key.startswith("last"):
                cache[key] = captured_sets(model, tokenizer, inputs, kept, int(key[4:]), 4096)
            elif key == "all+last5":
                cache[key] = joined(sets("all"), sets("last5"))
            elif key == "rows4096":
                cache[key] = captured_sets(model, tokenizer, inputs, kept, None, 4096)
        return cache[key]

    def preserving(key: str, **settings):
        return lambda: KeepPreserving().make(
            model, tokenizer, direction, inputs, kept=kept, captured=sets(key), **settings
        )

    for beta in (1.0, 3.0):
        run(f"preserving all λ100 β{beta:g}", preserving("all", keep=100.0, boost=beta))
    for key, lam in (("last5", 100.0), ("last5", 1000.0), ("all+last5", 100.0)):
        run(f"preserving {key} λ{lam:g}", preserving(key, keep=lam))
    say("done")


def _vector(model, vector, alpha: float):
    from vauban import cut

    return cut(model, vector, alpha=alpha)


if __name__ == "__main__":
    main()
