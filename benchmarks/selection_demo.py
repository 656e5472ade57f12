"""Direction chosen by geometry vs by effect on the demo model: layer, refusals, KL, cost (issue 14).

Measures the direction twice, timed, as ``vauban measure`` does with ``--select geometry``
(best cosine separation over all 128 + 128 bundled prompts) and by default (``select="effect"``:
the three geometric best layers and their neighbours cut and scored on the held-back prompts,
see :mod:`vauban.direction.selecting`). Then, not part of either choice:

- a *full scan* of every layer in the candidate range (and with ``--all-layers`` the excluded
  ones), on the same held-back prompts, to show what narrowing the candidates could miss;
- a *held-out* comparison of the two choices (each cut plainly, alpha 1): refusals on prompts
  no selection or search uses — the bundled eval prompts 0-19 (what ``vauban evaluate``
  reports) and 100 AdvBench goals (``random.Random(0).sample``, the report set of
  ``peers.py`` and ``optimize_demo.py``) — greedy answers of ``vauban evaluate``'s default
  length judged by its default judge, and the first-token KL on the 48 bundled reference
  prompts.

Timings are wall seconds on this machine's 2 CPU cores, with the load average before and after
(run it under the heavy-job lock). The 8B estimate scales the measured token counts by the
prefill rate and cut time of ``benchmarks/results/gpu_h200_llama-3.1-8b.json``. Writes
``benchmarks/results/selection_demo.json``::

    flock /tmp/vauban-heavy.lock nice -n 5 python benchmarks/selection_demo.py
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import time
from pathlib import Path

from demo_inputs import advbench_sample
from vauban import cut, load, measure
from vauban.direction.selecting import layer_effects, layer_range, original_refusals, split
from vauban.evaluation.evaluating import DEFAULT_MAX_TOKENS
from vauban.judge.answers import completions
from vauban.runtime.scoring import first_token_logprobs, kl_divergence
from vauban.text.prompts import bundled_records, encode_chat, load_pairs, load_prompts

HERE = Path(__file__).resolve().parent
MAX_TOKENS = DEFAULT_MAX_TOKENS  # vauban evaluate's default answer length
GPU_FILE = HERE / "results" / "gpu_h200_llama-3.1-8b.json"


def say(text: str) -> None:
    print(f"[selection {time.strftime('%H:%M:%S')}] {text}", flush=True)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, round(time.perf_counter() - start, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=MAX_TOKENS)
    parser.add_argument("--all-layers", action="store_true", help="also score the excluded layers")
    parser.add_argument("--json", default=str(HERE / "results" / "selection_demo.json"))
    args = parser.parse_args()
    git = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
    ).stdout.strip()
    report: dict = {"date": time.strftime("%Y-%m-%d"), "git": git, "load_average_start": load_average()}
    model, tokenizer = load()
    geometry, t_geometry = timed(measure, model, tokenizer, select="geometry")
    say(f"{geometry.summary()} ({t_geometry} s)")
    effect, t_effect = timed(measure, model, tokenizer, show_progress=True)
    say(f"{effect.summary()} ({t_effect} s)")
    report |= {
        "model": effect.model_path,
        "seconds": {"geometry": t_geometry, "effect": t_effect, "added": round(t_effect - t_geometry, 1)},
        "geometry": geometry.record(),
        "effect": effect.record(),
    }
    report["full_scan"] = full_scan(model, tokenizer, effect, args.all_layers)
    report["gpu_8b_estimate"] = gpu_estimate(tokenizer, effect)
    write(report, args.json)
    report["held_out"] = held_out(model, tokenizer, geometry, effect, args.max_tokens)
    report["load_average_end"] = load_average()
    write(report, args.json)


def full_scan(model, tokenizer, effect, all_layers: bool) -> dict:
    """Every layer of the candidate range (all layers with ``all_layers``) scored like the
    candidates, on the same held-back prompts: would a full scan have chosen otherwise?"""
    from vauban.direction.selecting import choose

    held_harmful = split(load_prompts("harmful"))[1]
    held_harmless = split(load_prompts("harmless"))[1]
    fmt = effect.formatting
    refusals = original_refusals(model, tokenizer, held_harmful, formatting=fmt)
    scored = {e.layer: e for e in effect.effects}
    layers = range(effect.num_layers) if all_layers else layer_range(effect.num_layers)
    rest = [i for i in layers if i not in scored]
    extra, seconds = timed(
        layer_effects, model, tokenizer, effect, refusals, held_harmless, rest, log=lambda line: say(line)
    )
    every = sorted([*scored.values(), *extra], key=lambda e: e.layer)
    in_range = [e for e in every if e.layer in layer_range(effect.num_layers)]
    best = choose(in_range, effect.max_kl or 0.2)
    return {
        "layers": [e.record() for e in every],
        "candidates": sorted(scored),
        "range": layer_range(effect.num_layers),
        "choice_of_full_scan": best.layer,
        "same_as_narrowed": best.layer == effect.layer_index,
        "held_back_refused": len(refusals),
        "held_back_harmful": len(held_harmful),
        "held_back_harmless": len(held_harmless),
        "seconds_for_the_other_layers": seconds,
        "seconds_per_layer": round(seconds / max(len(rest), 1), 1),
    }


def gpu_estimate(tokenizer, effect) -> dict:
    """Tokens the selection runs (counted on the demo's prompts, scaled to the 8B benchmark's
    mean prompt length) over the H200 capture rate, plus a cut and undo per candidate."""
    from vauban.runtime.batching import common_prefix

    gpu = json.loads(GPU_FILE.read_text())
    fmt = effect.formatting
    held = split(load_prompts("harmful"))[1] + split(load_prompts("harmless"))[1]
    ids = encode_chat(tokenizer, held, fmt)
    shared = common_prefix(ids)
    tokens = sum(len(x) - shared for x in ids) + 24 * 8  # remainders + teacher-forced refusal tokens
    scale = gpu["capture"]["mean_len"] / (sum(map(len, ids)) / len(ids))
    candidates = len(effect.effects)
    per_candidate = (
        tokens * scale / gpu["capture"]["default_tok_s"] + gpu["trial"]["cut_s"] + gpu["trial"]["undo_s"]
    )
    answers = gpu["trial"]["answers_s"] * 24 / gpu["trial"]["prompts"]  # the original's 24 short answers
    return {
        "source": GPU_FILE.name,
        "candidates": candidates,
        "tokens_per_candidate_demo": tokens,
        "length_scale": round(scale, 2),
        "seconds_per_candidate": round(per_candidate, 3),
        "seconds": round(candidates * per_candidate + answers, 2),
        "note": "no sharing of the chat opening assumed beyond the demo's share; bf16, one H200",
    }


def held_out(model, tokenizer, geometry, effect, max_tokens: int) -> dict:
    """Both choices cut, answering prompts no selection used (see the module docstring)."""
    eval_prompts = [r["prompt"] for r in bundled_records("eval_harmful")[:20]]
    advbench = advbench_sample(100, 0)
    reference = [p for p, _ in load_pairs("reference")]
    base = first_token_logprobs(model, tokenizer, reference)
    rows = {}
    for name, direction in (("original", None), ("geometry", geometry), ("effect", effect)):
        start = time.perf_counter()
        with cut(model, direction) if direction is not None else contextlib.nullcontext():
            row = {"layer": None if direction is None else direction.layer_index}
            for set_name, prompts in (("eval_0_19", eval_prompts), ("advbench_100", advbench)):
                answers = completions(model, tokenizer, prompts, max_tokens=max_tokens, batch_size=None)
                row[set_name] = {
                    "refused": sum(a.refused for a in answers),
                    "of": len(answers),
                    "refusals": [[a.prompt, a.text] for a in answers if a.refused],
                }
            after = base if direction is None else first_token_logprobs(model, tokenizer, reference)
            row["reference_first_token_kl"] = kl_divergence(base, after)
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows[name] = row
        say(
            f"{name}: eval 0-19 refused {row['eval_0_19']['refused']}/20, AdvBench "
            f"{row['advbench_100']['refused']}/100, reference first-token KL "
            f"{row['reference_first_token_kl']:.4f}"
        )
    return {
        "prompts": {
            "eval_0_19": "bundled eval prompts 0-19",
            "advbench_100": "AdvBench, random.Random(0).sample(goals, 100)",
        },
        "max_tokens": max_tokens,
        "judge": "vauban's default judge (completions' default)",
        "kl": "first-token KL(original || cut) on the 48 bundled reference prompts",
        "rows": rows,
    }


def write(report: dict, path: str) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(out)
    say(f"wrote {out}")


if __name__ == "__main__":
    main()
