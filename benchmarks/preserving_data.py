"""Does the harmless-preserving edit remove more refusal when fitted on more varied harmful prompts?

On the report prompts, ``auto``'s pick (the harmless-preserving edit at layer 16, λ 0.3) still
refuses two hacking tutorials that the plain cut answers (``frontier_work/eval_default_new.json``).
The edit is fitted on the 104 bundled harmful prompts ``measure`` fits on (1,024 token rows);
the bundled set has few requests of some kinds. This probe fits the same edits (every
harmless-preserving candidate of ``auto``: the same layers and λ) on those 104 plus the
category prompts of ``harmful_categories.jsonl`` (issue 28's measuring prompts, 120 in each of six
categories; none is a report, eval or test prompt, and the bundled harmful ones among them are
left out: see the correction), still 1,024 rows a set, and scores
them on the held-back prompts of ``frontier.py``'s ``select`` (bundled 104-127), like every candidate.

**Rule, written before this script ran** (2026-12-07, eighth session): the extended-fit candidates
join ``auto``'s candidates of ``frontier_work/select.json`` under the unchanged rule
(:func:`vauban.methods.default.choose_by_damage`). If the rule picks one of them, the default's
preserving edits are to fit on the run's harmful prompts plus the bundled category prompts (a
change committed before any report prompt is read for it), and ``frontier.py report`` evaluates
the new pick once; if it picks none, nothing changes and no report prompt is read.

**Correction (2026-12-08, ninth session), before the second run.** The first run (eighth
session) added all 720 category prompts, and 96 of them are bundled harmful prompts, 18 of them
among the 24 held-back ones its candidates were scored on: its extended fit had seen most of the
prompts that judged it. The extra prompts are now
:func:`vauban.methods.choosing.preserving_inputs`'s (the category prompts that are neither fit nor
held-back prompts: 624), which is what ``auto`` fits on; the rule is unchanged, and the first run's
pick is kept under ``first_run_leaked`` for the record.

    flock /tmp/vauban-heavy.lock nice -n 5 python benchmarks/preserving_data.py
"""

from __future__ import annotations

import json
import time

from frontier import HERE, Scored, direction, fit_sets, read, say
from provenance import stamp
from vauban import load
from vauban.core.atomic import write_file
from vauban.methods.choosing import candidate_settings, preserving_inputs, score_all
from vauban.methods.default import Candidate, choose_by_damage
from vauban.methods.protocol import Inputs

RESULTS = HERE / "results" / "preserving_data.json"
# the first run's outcome (its fit included 18 of the 24 held-back harmful prompts: the docstring)
FIRST_RUN = {
    "categories_added": 720,
    "held_back_in_fit": 18,
    "pick": {"name": "extended fit: harmless_preserving@16@1.0", "refusal": 0.011801, "kl": 0.027747},
}
PREFIX = "extended fit: "


def main() -> None:
    model, tokenizer = load()
    found = direction(model, tokenizer)
    harmful, harmless, held_harmful, held_harmless = fit_sets()
    fit = Inputs(harmful, harmless, formatting=found.formatting)
    extra = preserving_inputs(fit, held_harmful).harmful[len(harmful) :]
    settings = [
        s for s in candidate_settings(found) if s["method"] == "harmless_preserving" and "subspace" not in s
    ]
    start = time.perf_counter()
    scored = score_all(
        model,
        tokenizer,
        found,
        fit,  # score_all fits the preserving edits on preserving_inputs(fit, held_harmful)
        held_harmful,
        held_harmless,
        log=say,
        known=Scored("extended_fit_partial"),
        settings=settings,
    )
    new = [c for c in scored if c.settings in settings]  # score_all also lists the plain cuts
    extended = [Candidate(PREFIX + c.name, c.refusal, c.kl, c.settings) for c in new]
    select = read("select")
    auto = [Candidate(**c) for c in select["candidates"] if c["name"] not in select["not_auto_candidates"]]
    pick = choose_by_damage(auto + extended)
    row = {
        "what": __doc__.split("\n\n**Rule")[0],
        "rule": __doc__.split("**Rule, written before this script ran** ")[1].split("\n\n")[0],
        "fit": {"harmful": len(harmful) + len(extra), "categories": len(extra), "harmless": len(harmless)},
        "first_run_leaked": FIRST_RUN,
        "held_back": {"harmful": len(held_harmful), "harmless": len(held_harmless)},
        "extended": [c.__dict__ for c in extended],
        "bundled_fit": [c.__dict__ for c in auto if c.settings["method"] == "harmless_preserving"],
        "pick": pick.__dict__,
        "picked_extended": pick.name.startswith(PREFIX),
        "previous_pick": select["default"],
        "seconds": round(time.perf_counter() - start),
    }
    text = json.dumps(row | stamp(), indent=1) + "\n"
    write_file(RESULTS, lambda tmp: tmp.write_text(text))
    say(f"pick: {pick.name} (r {pick.refusal:.4f}, KL {pick.kl:.4f}); wrote {RESULTS}")


if __name__ == "__main__":
    main()
