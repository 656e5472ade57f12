"""Direction chosen by geometry vs by effect on the demo model: layer, refusals, KL, cost (issue 14).

Measures the direction twice, as vauban did before (``select="geometry"``: best cosine
separation over all 128 + 128 bundled prompts) and as it does now (``select="effect"``: each
candidate layer's direction cut and scored on the held-back quarter of the bundled sets, see
:mod:`vauban.selecting`), timing both. Then cuts each choice (plain cut, alpha 1) and reports,
with the same yardstick for both: refusals on 100 AdvBench goals never used by any selection or
search (``random.Random(0).sample``, as ``optimize_demo.py`` and ``peers.py`` report), greedy
``--max-tokens`` answers judged by ``vauban.evaluating.completions``' judge, and the first-token
KL on the 48 bundled reference prompts. ``--all-layers`` also scores the excluded layers (not
part of the choice) to show what the exclusion avoids. Writes
``benchmarks/results/selection_demo.json``::

    nice -n 5 python benchmarks/selection_demo.py --all-layers
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from vauban import load, measure
from vauban.evaluating import completions
from vauban.optimize import first_token_logprobs, kl_divergence
from vauban.prompts import load_pairs, load_prompts
from vauban.selecting import candidate_layers, layer_effects, original_refusals, split

HERE = Path(__file__).resolve().parent
SHARED = next((p / "shared" / "data" for p in HERE.parents if (p / "shared" / "data").is_dir()),
              HERE.parents[1] / "shared" / "data")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--all-layers", action="store_true", help="also score the excluded layers")
    parser.add_argument("--json", default=str(HERE / "results" / "selection_demo.json"))
    args = parser.parse_args()
    model, tokenizer = load()
    t0 = time.perf_counter()
    geometry = measure(model, tokenizer, select="geometry")
    t_geometry = time.perf_counter() - t0
    t0 = time.perf_counter()
    effect = measure(model, tokenizer, show_progress=True)
    t_effect = time.perf_counter() - t0
    print(geometry.summary(), f"({t_geometry:.1f} s)")
    print(effect.summary(), f"({t_effect:.1f} s)", flush=True)

    report = {"model": effect.model_path, "seconds": {"geometry": round(t_geometry, 1),
                                                       "effect": round(t_effect, 1)},
              "geometry": geometry.record(), "effect": effect.record()}
    if args.all_layers:
        scored = {e.layer for e in effect.effects}
        rest = [i for i in range(effect.num_layers) if i not in scored]
        held_harmful = split(load_prompts("harmful"))[1]
        held_harmless = split(load_prompts("harmless"))[1]
        refusals = original_refusals(model, tokenizer, held_harmful)
        extra = layer_effects(model, tokenizer, effect, refusals, held_harmless, rest,
                              log=lambda line: print(line, flush=True))
        report["excluded_layers"] = [e.record() for e in extra]
        report["candidates"] = candidate_layers(effect.num_layers)

    if effect.layer_index == geometry.layer_index:  # the same layer: nearly the same cut
        report["held_out"] = {"same_layer": True, "note": "both choices take the same layer (the effect "
                              "choice's direction comes from the first three quarters of the prompts)"}
        write(report, args.json)
        return
    goals = load_prompts(str(SHARED / "advbench_harmful_behaviors.csv"))
    prompts = random.Random(0).sample(goals, 100)
    pairs = load_pairs("reference")
    base = first_token_logprobs(model, tokenizer, [p for p, _ in pairs])
    rows = {}
    original = completions(model, tokenizer, prompts, max_tokens=args.max_tokens, batch_size=None)
    rows["original"] = {"refusals": sum(a.refused for a in original), "first_token_kl": 0.0}
    for name, direction in (("geometry", geometry), ("effect", effect)):
        with vauban_cut(model, direction):
            answers = completions(model, tokenizer, prompts, max_tokens=args.max_tokens, batch_size=None)
            kl = kl_divergence(base, first_token_logprobs(model, tokenizer, [p for p, _ in pairs]))
        rows[name] = {"layer": direction.layer_index, "refusals": sum(a.refused for a in answers),
                      "first_token_kl": kl,
                      "refused": [[a.prompt, a.text] for a in answers if a.refused]}
        print(f"{name}: layer {direction.layer_index}, refused {rows[name]['refusals']}/100, "
              f"first-token KL {kl:.4f}", flush=True)
    report["held_out"] = {"prompts": "AdvBench, random.Random(0).sample(goals, 100)",
                          "max_tokens": args.max_tokens, "judge": "vauban markers (vauban.refusal)",
                          "kl": "first-token KL on the 48 bundled reference prompts", "rows": rows}
    write(report, args.json)


def write(report: dict, path: str) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


def vauban_cut(model, direction):
    from vauban import cut

    return cut(model, direction)


if __name__ == "__main__":
    main()
