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

``python benchmarks/preserving_rows.py report`` adds the check on the report prompts of
``frontier.py`` (section ``report_prompts``): ``method="auto"``'s candidates re-scored on the
held-back prompts with every token row (``frontier_work/rows_all/select.json``), the rule's pick
and the best harmless-preserving edit evaluated as ``frontier.py report`` evaluates every row
(``frontier_work/rows_all/eval_*.json``, made on 2026-12-07 with the preserving edit's row default
set to every row, a change reverted after this check), beside the same rows fitted on 1,024.
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


def report() -> None:
    """The ``report_prompts`` section (see the module docstring) from the frontier's eval files."""
    sys.path.insert(0, str(HERE))
    import frontier

    every = frontier.WORK / "rows_all"
    pairs = {
        "auto's pick": ("eval_default_new", "eval_default_new"),
        "best harmless preserving": ("eval_best_harmless_preserving", "eval_best_harmless_preserving"),
    }
    out = {}
    for name, (many, few) in pairs.items():
        a = json.loads((every / f"{many}.json").read_text())
        b = json.loads((frontier.WORK / f"{few}.json").read_text())
        out[name] = {
            "every_row": frontier.summary(a),
            "1024_rows": frontier.summary(b),
            "every_minus_1024": frontier.paired(a, b) if a["settings"] == b["settings"] else None,
        }
    held = json.loads((every / "select.json").read_text())
    data = json.loads(RESULTS.read_text())
    data["report_prompts"] = {
        "what": "markers judge, 128 answer tokens, the report prompts of frontier.py; bootstrap 95 %",
        "held_back_picks_every_row": {
            "auto": held["default"],
            "harmless_preserving": held["picks"]["harmless_preserving"],
        },
        "rows": out,
        "finding": REPORT_FINDING,
    }
    RESULTS.write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps(data["report_prompts"], indent=1)[:3000])


REPORT_FINDING = (
    "on the report prompts every row changed nothing that the interval separates: auto's pick (the"
    " same setting, harmless_preserving at layer 16, keep 0.3) 3/100 at first-token KL 0.0198 and"
    " 64-token KL 0.0188 against 0.0200 and 0.0193 at 1,024 rows; the held-back gain (19-30 %) does"
    " not carry over, so the row default stays 1,024"
)


if __name__ == "__main__":
    report() if sys.argv[1:] == ["report"] else main()
