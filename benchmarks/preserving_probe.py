"""Held-back probe of the harmless-preserving edit past full strength and along the learned
direction (issue 25), on the demo model: which candidates ``method="auto"`` should score.

Every row is scored as :func:`vauban.methods.choosing.score_all` scores a candidate, on the
bundled prompts ``measure`` holds back (104-127; the edits and learned directions are fitted on
0-103, the learned direction on their first 32): refusal likelihood on the held-back harmful
prompts the original refuses, first-token KL on the held-back harmless ones. No report prompt is
read. The direction is ``benchmarks/frontier_work/direction.safetensors`` (``measure``'s defaults).

Rows: the harmless-preserving edit of the measured direction at layers 16 and 15, λ 0.3 and 1,
strength 1.25-2 (``hp@LAYER@λxSTRENGTH``); along the learned direction (``hpL<steps>@...``) at
layers 15, 16 and 17, 4 learning steps (and 8 at layer 16), λ 0.3 / 1 / 3, strength 1-1.5.
Writes ``results/preserving_probe.json``. Run under the heavy-job lock:
``flock /tmp/vauban-heavy.lock python benchmarks/preserving_probe.py``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "preserving_probe.json"
PLAIN = [(layer, keep, s) for layer in (16, 15) for keep in (0.3, 1.0) for s in (1.25, 1.5, 2.0)]
LEARNED = [(16, 4, (0.3, 1.0, 3.0)), (15, 4, (0.3, 1.0)), (16, 8, (0.3, 1.0)), (17, 4, (0.3, 1.0))]
STRENGTHS = (1.0, 1.15, 1.3, 1.5)


class HeldBack:
    """The held-back scoring of a candidate edit, as :func:`vauban.methods.choosing.score_all`
    scores one: refusal likelihood on the held-back harmful prompts the original refuses,
    first-token KL on the held-back harmless ones (set up on the original model)."""

    def __init__(self, model: Any, tokenizer: Any, found: Any) -> None:
        import frontier
        from vauban.direction.selecting import original_refusals
        from vauban.runtime.scoring import first_token_logprobs

        _, _, held_harmful, self.harmless = frontier.fit_sets()
        self.model, self.tokenizer, self.fmt = model, tokenizer, found.formatting
        self.refusals = original_refusals(model, tokenizer, list(held_harmful), formatting=self.fmt)
        self.base = first_token_logprobs(model, tokenizer, list(self.harmless), None, self.fmt)

    def score(self) -> tuple[float, float]:
        """``(refusal, kl)`` of the model as it is (call it under the edit)."""
        from vauban.runtime.scoring import first_token_logprobs, kl_divergence, refusal_likelihood

        now = first_token_logprobs(self.model, self.tokenizer, list(self.harmless), None, self.fmt)
        refusal = refusal_likelihood(self.model, self.tokenizer, self.refusals, 8, None, self.fmt)
        return refusal, kl_divergence(self.base, now)


def main() -> None:
    sys.path.insert(0, str(HERE))
    import frontier
    from provenance import stamp
    from vauban import quick
    from vauban.methods.learned import fit_direction
    from vauban.methods.preserving import capture, edit
    from vauban.methods.protocol import Inputs

    model, tok = quick.load()
    found = frontier.direction(model, tok)
    harmful, harmless, _, _ = frontier.fit_sets()
    inputs = Inputs(harmful, harmless, formatting=found.formatting)
    held = HeldBack(model, tok, found)
    captured = capture(model, tok, inputs)
    rows, fits = [], {}

    def score(name: str, direction: object, keep: float, strength: float) -> None:
        start = time.perf_counter()
        with edit(model, tok, direction, inputs, "probe", captured=captured, keep=keep, strength=strength):
            refusal, kl = held.score()
        seconds = round(time.perf_counter() - start)
        rows.append({"name": name, "refusal": refusal, "kl": kl, "seconds": seconds})
        print(json.dumps(rows[-1]), flush=True)

    for layer, keep, s in PLAIN:
        score(f"hp@{layer}@{keep}x{s}", found.at_layer(layer), keep, s)
    for layer, steps, keeps in LEARNED:
        start = time.perf_counter()
        learned = fit_direction(model, tok, found.at_layer(layer), inputs, steps=steps)
        fits[f"{layer}@{steps}"] = {"seconds": round(time.perf_counter() - start)}
        for keep in keeps:
            for s in STRENGTHS:
                score(f"hpL{steps}@{layer}@{keep}x{s}", learned, keep, s)
    sizes = {"harmful": len(held.refusals), "harmless": len(held.harmless)}
    out = {**stamp(), "held_back": sizes, "fits": fits}
    RESULTS.write_text(json.dumps({**out, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
