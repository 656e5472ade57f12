"""The frontier table: every edit method at its pick and ``method='auto'`` against today's default
on the report prompts, by vauban's yardstick and heretic's (``benchmarks/frontier.py``; registered
in ``tables_common``, see ``benchmarks/readme_tables.py``).
"""

from __future__ import annotations

from tables_common import load, markdown, table


@table("frontier")
def frontier() -> list[str]:
    """Every edit method at its best (chosen on held-back prompts) and the default, on the report
    prompts of the heretic comparison, with bootstrap intervals (``benchmarks/frontier.py``)."""
    r = load("frontier_demo.json")
    rows, caps = r["rows"], r.get("capability") or {}
    label = {
        "original": "original",
        "default_new": "**`method='auto'`**: the rule's pick (damage at a refusal level)",
        "default_old": "**today's default**: the plain cut at `measure`'s layer",
    }
    order = sorted(rows, key=lambda n: (n != "original", n != "default_new", n != "default_old", n))

    def cell(row: dict, key: str, digits: int) -> str:
        if not row.get(key):
            return "–"
        value, low, high = (f"{x:.{digits}f}".replace("-", "−") for x in row[key])
        return f"{value} ({low}–{high})" if not low.startswith("−") else f"{value} ({low} to {high})"

    def solved(name: str, check: str) -> str:
        score = (caps.get(name) or {}).get(check)
        return f"{sum(score['correct_rows'])}/{score['n']}" if score else "–"

    def settings(row: dict) -> str:
        shown = {k: v for k, v in (row.get("settings") or {}).items() if k != "trial"}
        if "trial" in (row.get("settings") or {}):
            shown["at"] = "optimize front trial 5"
        return ", ".join(f"{k} {v}" for k, v in shown.items())

    def leaked(row: dict) -> str:
        norm_preserving = str((row.get("settings") or {}).get("method", "")).startswith("norm_preserving")
        return f"{row['leak']['leak']:.2%}" if norm_preserving and row.get("leak") else "–"

    def rank(row: dict) -> str:
        if "rank" not in row:
            return "–"
        return "full (rescale)" if row["rank"] is None else str(row["rank"])

    def heretic(row: dict) -> str:
        h = row.get("heretic") or {}
        return "–" if h.get("refusals") is None else f"{h['refusals']}, {h.get('kl', 0.0):.4f}"

    table_rows = [
        [
            label.get(name, name.replace("_", " ")),
            settings(rows[name]),
            cell(rows[name], "refusals", 0),
            cell(rows[name], "first_token_kl", 4),
            cell(rows[name], "kl_64_tokens", 4),
            cell(rows[name], "perplexity", 2),
            cell(rows[name], "over_refusals", 0),
            solved(name, "gsm8k"),
            solved(name, "humaneval"),
            heretic(rows[name]),
            leaked(rows[name]),
            rank(rows[name]),
            f"{rows[name]['seconds']:.0f}",
        ]
        for name in order
    ]
    diff = r.get("new_minus_old_default")
    note = (
        f" auto minus today's default, paired over the same prompts: refusals {cell(diff, 'refusals', 0)},"
        f" first-token KL {cell(diff, 'first_token_kl', 4)}."
        if diff
        else ""
    )
    yardstick = r.get("heretic_yardstick")
    note += (
        f" heretic's yardstick: `{yardstick['command']}` ({yardstick['what']}; the original's row is"
        " the base model's 'Initial refusals' that every run prints)."
        if yardstick
        else ""
    )
    return [
        f"Demo model (float32, CPU); {r['prompts']['harmful_report']} and {r['prompts']['harmless_report']};"
        f" refusals by {r['judge']} at {r['answer_tokens']} answer tokens; 64-token KL and perplexity on"
        f" the {r['prompts']['reference']}; over-refusal on {r['prompts']['over_refusal']}; every pick"
        " chosen on the held-back bundled prompts (no report prompt read to choose). In parentheses: the"
        f" {r['intervals']}. Leak: the share of the direction a norm-preserving edit puts back in its"
        " writers beyond what its strength leaves (`vauban.methods.leak`)." + note,
        "",
        *markdown(
            [
                "cut",
                "settings",
                "refused /100",
                "first-token KL",
                "64-token KL",
                "perplexity",
                "over-refusals /48",
                "GSM8K",
                "HumanEval",
                "heretic's yardstick: refused /100, KL",
                "leak",
                "rank",
                "s",
            ],
            table_rows,
        ),
    ]
