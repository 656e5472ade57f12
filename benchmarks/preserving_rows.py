"""Held-back probe of how many token rows the harmless-preserving edit should fit (issue 25), on
the demo model: does fitting on more rows, or on more harmless prompts, lower the first-token KL
at the same refusal score?

Scored as :func:`vauban.methods.choosing.score_all` scores a candidate, on the bundled prompts
``measure`` holds back (104-127; the edit is fitted on 0-103): refusal likelihood on the held-back
harmful prompts the original refuses, first-token KL on the held-back harmless ones. No report
prompt is read. Fits: the 104 harmless fitting prompts, or those plus the harmless prompts of
``multilingual.jsonl`` (7 languages) and ``reference.jsonl`` (432 in all), each at ``rows`` 1024
(the default) and 4096; the edit of ``measure``'s direction (layer 16, as ``benchmarks/frontier_work``
holds it) at λ 0.3 / 1 / 3 and strength 1 / 1.25. Writes ``results/preserving_rows.json``; under
the heavy-job lock: ``flock /tmp/vauban-heavy.lock python benchmarks/preserving_rows.py`` (~15 min).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "preserving_rows.json"
ROWS = (1024, 4096)
KEEPS, STRENGTHS = (0.3, 1.0, 3.0), (1.0, 1.25)


def main() -> None:
    sys.path.insert(0, str(HERE))
    import frontier
    from preserving_probe import HeldBack
    from provenance import stamp
    from vauban import quick
    from vauban.methods.preserving import capture_set, edit
    from vauban.methods.protocol import Inputs
    from vauban.text.prompts import bundled_records, load_prompts

    model, tok = quick.load()
    found = frontier.direction(model, tok)
    harmful, harmless, _, _ = frontier.fit_sets()
    extra = [r["prompt"] for r in bundled_records("multilingual") if r["set"] == "harmless"]
    extra += load_prompts("reference")
    held, rows = HeldBack(model, tok, found), []
    for prompts in (harmless, harmless + extra):
        inputs = Inputs(harmful, prompts, formatting=found.formatting)
        for count in ROWS:
            start = time.perf_counter()
            captured = (
                capture_set(model, tok, inputs, inputs.harmful, "harmful", count),
                capture_set(model, tok, inputs, prompts, "harmless", count),
            )
            seconds = round(time.perf_counter() - start)
            for keep in KEEPS:
                for strength in STRENGTHS:
                    settings = {"captured": captured, "keep": keep, "strength": strength}
                    with edit(model, tok, found, inputs, "probe", **settings):
                        refusal, kl = held.score()
                    row = {"fit": f"{len(prompts)} prompts, {count} rows", "keep": keep, "strength": strength}
                    rows.append(row | {"refusal": refusal, "kl": kl, "capture_s": seconds})
                    print(json.dumps(rows[-1]), flush=True)
    out = {**stamp(), "held_back": {"harmful": len(held.refusals), "harmless": len(held.harmless)}}
    RESULTS.write_text(json.dumps({**out, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
