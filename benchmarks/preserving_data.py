"""Does the harmless-preserving edit remove more refusal when fitted on more varied harmful prompts?

On the report prompts, ``auto``'s pick (the harmless-preserving edit at layer 16, λ 0.3) still
refuses two hacking tutorials that the plain cut answers (``frontier_work/eval_default_new.json``).
The edit is fitted on the 104 bundled harmful prompts ``measure`` fits on (1,024 token rows);
the bundled set has few requests of some kinds. This probe fits the same edits (every
harmless-preserving candidate of ``auto``: the same layers and λ) on those 104 plus the 720
category prompts of ``harmful_categories.jsonl`` (issue 28's measuring prompts, 120 in each of six
categories; none is a report, held-back, eval or test prompt), still 1,024 rows a set, and scores
them on the held-back prompts of ``frontier.py``'s ``select`` (bundled 104-127), like every candidate.

**Rule, written before this script ran** (2026-12-07, eighth session): the extended-fit candidates
join ``auto``'s candidates of ``frontier_work/select.json`` under the unchanged rule
(:func:`vauban.methods.default.choose_by_damage`). If the rule picks one of them, the default's
preserving edits are to fit on the run's harmful prompts plus the bundled category prompts (a
change committed before any report prompt is read for it), and ``frontier.py report`` evaluates
the new pick once; if it picks none, nothing changes and no report prompt is read.

    flock /tmp/vauban-heavy.lock nice -n 5 python benchmarks/preserving_data.py
"""

from __future__ import annotations

import json
import time

from frontier import HERE, Scored, direction, fit_sets, read, say
from provenance import stamp
from vauban import load
from vauban.core.atomic import write_file
from vauban.direction.categories import category_prompts
from vauban.methods.choosing import candidate_settings, score_all
from vauban.methods.default import Candidate, choose_by_damage
from vauban.methods.protocol import Inputs

RESULTS = HERE / "results" / "preserving_data.json"
PREFIX = "extended fit: "


def main() -> None:
    model, tokenizer = load()
    found = direction(model, tokenizer)
    harmful, harmless, held_harmful, held_harmless = fit_sets()
    extra = [p for group in category_prompts("measure").values() for p in group]
    settings = [
        s for s in candidate_settings(found) if s["method"] == "harmless_preserving" and "subspace" not in s
    ]
    start = time.perf_counter()
    scored = score_all(
        model,
        tokenizer,
        found,
        Inputs(harmful + extra, harmless, formatting=found.formatting),
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
