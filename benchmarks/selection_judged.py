"""Would judged answers rank the frontier's cuts better than the held-back refusal score does?

``selection_fidelity.py`` found the held-back refusal score (likelihood of the original's refusal
openings on 24 prompts) ranks the report prompts' refusals at Spearman 0.58 only. Here each cut
of the frontier that was evaluated on the report prompts (fitted on 1,024 rows, as there) answers
the 100 bundled ``eval_harmful`` prompts — never used to fit a direction or an edit, never a
report prompt — greedily, 32 tokens, judged by the markers; the count is ranked against the report
prompts' refusals (128 tokens). Written before its run; a data point for the selection's refusal
side, not a change to it.

    flock /tmp/vauban-heavy.lock nice -n 5 python benchmarks/selection_judged.py   # ~20 min
"""

from __future__ import annotations

import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "selection_judged.json"
TOKENS = 32


def main() -> None:
    import sys

    sys.path.insert(0, str(HERE))

    import frontier
    from selection_fidelity import name_of, pairs, spearman
    from vauban import quick
    from vauban.judge.answers import completions
    from vauban.text.prompts import load_prompts

    model, tok = quick.load()
    found = frontier.direction(model, tok)
    prompts = load_prompts("eval_harmful")
    held = {p["cut"]: p for p in pairs() if "every row" not in p["cut"]}
    rows = []
    for path in sorted(frontier.WORK.glob("eval_*.json")):
        settings = json.loads(path.read_text()).get("settings")
        if not settings or name_of(settings) not in held:
            continue
        start = time.perf_counter()
        with frontier.build(model, tok, found, settings):
            done = completions(model, tok, prompts, max_tokens=TOKENS, batch_size=None, prompt_set="eval")
        row = {**held[name_of(settings)], "eval_harmful_refused": sum(a.refused for a in done)}
        rows.append(row | {"seconds": round(time.perf_counter() - start)})
        print(json.dumps(rows[-1]), flush=True)
    out = {
        "what": __doc__.split("\n\n")[1].replace("\n", " "),
        "prompts": f"bundled eval_harmful ({len(prompts)}), greedy, {TOKENS} tokens, markers",
        "cuts": len(rows),
        "spearman_judged_vs_report": spearman(rows, "eval_harmful_refused", "report_refused"),
        "spearman_held_back_score_vs_report": spearman(rows, "held_back_refusal_score", "report_refused"),
        "rows": rows,
    }
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()
