"""How well do the held-back scores that choose a cut rank what the report prompts then measure?

Every cut of ``frontier.py`` that was both scored on the held-back bundled prompts (``select``:
refusal likelihood of the original's refusal openings, first-token KL on 24 harmless prompts) and
evaluated on the report prompts (``report``: refusals judged by the markers at 128 tokens on 100
AdvBench goals, first-token KL on 100 harmless prompts), including the two re-run with every token
row (``frontier_work/rows_all``). Spearman rank correlations between each held-back score and its
report counterpart; nothing is run, only the frontier's files are read.

    python benchmarks/selection_fidelity.py     # writes results/selection_fidelity.json
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORK = HERE / "frontier_work"
RESULTS = HERE / "results" / "selection_fidelity.json"


def name_of(settings: dict[str, Any]) -> str:
    """The candidate name ``select`` gives these settings."""
    keys = ("layer", "k", "keep", "strength", "steps")
    return "@".join([settings["method"], *(str(settings[k]) for k in keys if k in settings)])


def pairs() -> list[dict[str, Any]]:
    """Each cut with its held-back and report figures."""
    out = []
    for folder in (WORK, WORK / "rows_all"):
        scored = {c["name"]: c for c in json.loads((folder / "select.json").read_text())["candidates"]}
        for path in sorted(folder.glob("eval_*.json")):
            row = json.loads(path.read_text())
            held = scored.get(name_of(row["settings"])) if "damage" in row else None
            if held is None or "trial" in row["settings"]:
                continue
            out.append(
                {
                    "cut": name_of(row["settings"]) + (" (every row)" if folder != WORK else ""),
                    "held_back_refusal_score": round(held["refusal"], 4),
                    "held_back_first_token_kl": round(held["kl"], 4),
                    "report_refused": sum(row["refusal"]["refused_rows"]),
                    "report_first_token_kl": round(statistics.mean(row["damage"]["first_token_kl_rows"]), 4),
                }
            )
    return out


def spearman(rows: list[dict[str, Any]], x: str, y: str) -> list[float]:
    """``[rho, p]``: the Spearman rank correlation of columns ``x`` and ``y`` of ``rows``."""
    from scipy.stats import spearmanr

    result = spearmanr([r[x] for r in rows], [r[y] for r in rows])
    return [round(float(result.statistic), 3), float(result.pvalue)]


def main() -> None:
    rows = pairs()
    out = {
        "what": __doc__.split("\n\n")[1].replace("\n", " "),
        "cuts": len(rows),
        "spearman_first_token_kl": spearman(rows, "held_back_first_token_kl", "report_first_token_kl"),
        "spearman_refusal": spearman(rows, "held_back_refusal_score", "report_refused"),
        "rows": rows,
    }
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()
