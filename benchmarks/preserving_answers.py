"""Does the harmless-preserving edit keep more of the model's *answers* when it also fits on them?

On the report prompts the preserving edits keep the first-token distribution far better than the
later answer tokens: ``auto``'s pick costs first-token KL 0.018 and 64-token KL 0.019, the
learned-preserving edit at strength 1.5 0.013 and 0.034 (``frontier_demo.json``). The edit keeps a
writer's harmless outputs on the rows it fits, and those rows are prompt tokens only (the chat
template and the request): the states of the answer the model writes afterwards are not among
them. This probe adds them: each harmless fit prompt's greedy 32-token answer by the original
model, teacher-forced after it, its answer tokens' writer inputs captured. Three fits of every
harmless-preserving candidate of ``auto`` (layers 15-18 × λ 0.3, 1, 3, along the measured
direction), all with ``auto``'s harmful rows (:func:`vauban.methods.choosing.preserving_inputs`):

- ``prompts``: the harmless rows ``auto`` fits on today (1,024 rows of prompt tokens);
- ``mixed``: 512 of those and 512 answer-token rows (the same number of rows: where they come from
  is the only change);
- ``added``: all 1,024 prompt rows and 1,024 answer rows.

Scored on the held-back prompts only (bundled 104-127): refusal likelihood ``r`` and first-token
KL as :func:`vauban.methods.choosing.score_all` scores them, and the answer KL: the mean KL per
token over the original's own greedy 32-token answers to the 24 held-back harmless prompts,
teacher-forced (no reference answer and no report prompt is read).

**Rule, written before this script ran** (2026-12-08, ninth session): this probe reports and
changes nothing in ``auto`` or any method. If a variant lowers the held-back answer KL at ``auto``'s
pick (layer 16, λ 3) by at least 10 % with ``r`` no more than 0.001 higher, the next step (a later
session) is to make answer rows an option of the preserving edits and to commit, before any report
prompt is read for it, a rule for whether ``auto`` uses them; otherwise answer rows are not pursued.

    flock /tmp/vauban-heavy.lock nice -n 5 python benchmarks/preserving_answers.py
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch

from frontier import HERE, direction, fit_sets, say
from provenance import stamp
from vauban import load
from vauban.core.atomic import write_file
from vauban.direction.selecting import original_refusals
from vauban.methods.capture import MAX_ROWS, writer_module
from vauban.methods.choosing import KEEPS, preserving_inputs
from vauban.methods.preserving import capture
from vauban.methods.protocol import Inputs
from vauban.methods.registry import get_method
from vauban.model import arch
from vauban.runtime.generating import generate_tokens, stop_token_ids
from vauban.runtime.scoring import (
    first_token_logprobs,
    forced,
    kl_divergence,
    kl_rows,
    logprob_batches,
    reference_logprobs,
    refusal_likelihood,
)

RESULTS = HERE / "results" / "preserving_answers.json"
TOKENS = 32
LAYERS = (15, 16, 17, 18)
PICK = (16, 3.0)  # auto's pick (frontier_work/select.json)


def answer_rows(model: Any, tokenizer: Any, prompts: list[str], fmt: Any) -> Any:
    """The original's greedy answers, as :class:`~vauban.runtime.scoring.Forced` rows (cut at the
    first stop token, at most :data:`TOKENS`)."""
    stops = set(stop_token_ids(model, tokenizer))
    answers = []
    for ids in generate_tokens(model, tokenizer, prompts, max_tokens=TOKENS, formatting=fmt):
        cut = next((i for i, t in enumerate(ids) if t in stops), len(ids))
        answers.append(ids[: max(cut, 1)])
    return forced(tokenizer, prompts, answers, TOKENS, formatting=fmt)


@torch.inference_mode()
def answer_inputs(model: Any, rows: Any, rows_kept: int) -> dict[str, torch.Tensor]:
    """Writer name → inputs at the answer tokens of ``rows`` (one prompt a forward pass), a seeded
    subsample of ``rows_kept``."""
    writers = arch.residual_writers(model)
    kept: dict[str, list[torch.Tensor]] = {w.name: [] for w in writers}
    start = {"at": 0}

    def hook_for(name: str) -> Any:
        return lambda _m, args: kept[name].append(args[0][0, start["at"] :].float().cpu())

    handles = [writer_module(model, w).register_forward_pre_hook(hook_for(w.name)) for w in writers]
    try:
        for ids, prompt in zip(rows.inputs, rows.prompts, strict=True):
            start["at"] = len(prompt) - 1  # the state that writes the first answer token, onward
            arch.decoder(model)(input_ids=torch.tensor([ids]), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    generator = torch.Generator().manual_seed(0)
    out = {}
    for name, parts in kept.items():
        x = torch.cat(parts)
        out[name] = x[torch.randperm(x.shape[0], generator=generator)[:rows_kept]]
    return out


def answer_kl(model: Any, tokenizer: Any, rows: Any, base: list[torch.Tensor]) -> float:
    """Mean KL(original ‖ model) per answer token of ``rows`` (``base``: the original's)."""
    total, count = 0.0, 0
    with torch.inference_mode():
        for batch, logp in logprob_batches(model, tokenizer, rows, None):
            for r, i in enumerate(batch.rows):
                length = int(batch.lengths[r])
                total += float(kl_rows(base[i], logp[r, batch.keep - length :].cpu()).sum())
                count += length
    return total / count


def main() -> None:
    model, tokenizer = load()
    found = direction(model, tokenizer)
    fmt = found.formatting
    harmful, harmless, held_harmful, held_harmless = fit_sets()
    inputs = Inputs(harmful, harmless, formatting=fmt)
    start = time.perf_counter()
    refusals = original_refusals(model, tokenizer, held_harmful, formatting=fmt)
    base_first = first_token_logprobs(model, tokenizer, held_harmless, None, fmt)
    held_rows = answer_rows(model, tokenizer, held_harmless, fmt)
    base_answers = reference_logprobs(model, tokenizer, held_rows)
    harmful_x, prompt_x = capture(model, tokenizer, preserving_inputs(inputs, held_harmful))
    answer_x = answer_inputs(model, answer_rows(model, tokenizer, harmless, fmt), MAX_ROWS)
    half = MAX_ROWS // 2
    variants = {
        "prompts": prompt_x,
        "mixed": {k: torch.cat([v[:half], answer_x[k][:half]]) for k, v in prompt_x.items()},
        "added": {k: torch.cat([v, answer_x[k]]) for k, v in prompt_x.items()},
    }
    rows = []
    for name, harmless_x in variants.items():
        for layer in LAYERS:
            for keep in KEEPS:
                at = found.at_layer(layer)
                made = get_method("harmless_preserving").make
                with made(model, tokenizer, at, inputs, keep=keep, captured=(harmful_x, harmless_x)):
                    first = kl_divergence(
                        base_first, first_token_logprobs(model, tokenizer, held_harmless, None, fmt)
                    )
                    r = refusal_likelihood(model, tokenizer, refusals, 8, None, fmt)
                    kl = answer_kl(model, tokenizer, held_rows, base_answers)
                rows.append(
                    {"fit": name, "layer": layer, "keep": keep, "refusal": r, "kl": first, "answer_kl": kl}
                )
                say(f"{name} @{layer} λ{keep}: r {r:.4f}, first-token KL {first:.4f}, answer KL {kl:.4f}")
    pick = {row["fit"]: row for row in rows if (row["layer"], row["keep"]) == PICK}
    base = pick["prompts"]
    passed = [
        n
        for n, row in pick.items()
        if n != "prompts"
        and row["answer_kl"] <= 0.9 * base["answer_kl"]
        and row["refusal"] <= base["refusal"] + 0.001
    ]
    result = {
        "what": __doc__.split("\n\n**Rule")[0],
        "rule": __doc__.split("**Rule, written before this script ran** ")[1].split("\n\n")[0],
        "held_back": {"harmful": len(held_harmful), "harmless": len(held_harmless), "answer_tokens": TOKENS},
        "rows": rows,
        "at_auto_pick": pick,
        "variants_meeting_the_rule": passed,
        "seconds": round(time.perf_counter() - start),
    }
    text = json.dumps(result | stamp(), indent=1) + "\n"
    write_file(RESULTS, lambda tmp: tmp.write_text(text))
    say(f"meeting the rule: {passed or 'none'}; wrote {RESULTS}")


if __name__ == "__main__":
    main()
