"""The refusal–damage frontier, method by method, on the demo model and the report prompts of the
heretic comparison (``benchmarks/peers.py``: 100 AdvBench goals ``random.Random(0).sample``, 100
harmless instructions ``peers_harmless.harmless_prompts(0)[500:600]``).

Stages (each keeps its results in ``WORK`` = ``benchmarks/frontier_work/`` and resumes; the folder is
committed, so that a run cut off with its session goes on in the next):

- ``select``: the direction of ``vauban.measure``'s defaults (bundled prompts 0-103 measured,
  104-127 held back); every candidate cut (method × layer × settings: ``method="auto"``'s and
  :func:`extra_settings`) scored on the held-back prompts only (refusal likelihood, first-token
  KL); each method's best and the default (among auto's candidates) picked by
  :func:`vauban.methods.default.choose_by_damage`. No report prompt is read here.
- ``report``: the original, today's default (plain cut at the layer of the old rule) and each
  pick on the report prompts: refusals (default judge, 128 tokens), first-token KL, KL at every
  position of the first 64 tokens of the 48 bundled reference answers and the perplexity there,
  over-refusal on 48 bundled safe prompts, the norm-preserving leak, wall time.
- ``capability``: GSM8K and HumanEval (``--problems``, default 50) for the original and the
  new default.
- ``heretic``: heretic's own yardstick for the cuts in ``--cuts`` (default: the new and the old
  default): each exported (float32 safetensors, ``vauban.export``) to ``EXPORTS/<name>``, then
  ``heretic --model ORIGINAL --evaluate-model EXPORT`` with the report prompts as its evaluation
  files, heretic run as a separate program in its own venv (``peers.py``'s install and data
  stages, ``peers_evaluate``'s parsing); the original's row is the base model's "Initial
  refusals" that each run prints. Does not gather (run ``gather`` after it).
- ``gather``: ``benchmarks/results/frontier_demo.json`` with bootstrap 95 % intervals over prompts.

Run under the heavy-job lock: ``flock /tmp/vauban-heavy.lock nice -n 5 python benchmarks/frontier.py``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORK = HERE / "frontier_work"
RESULTS = HERE / "results" / "frontier_demo.json"
HERETIC_WORK = HERE / ".peers"  # peers.py's work folder (ignored by git): heretic's venv, prompt files
EXPORTS = Path("/tmp/vauban-frontier-exports")  # the cuts heretic evaluates, outside the repository
HERETIC_CUTS = ("default_new", "default_old")
MAX_TOKENS = 128
LEARNED: dict = {}  # learned directions by (layer, steps), fitted once a process
CAPTURED: dict = {}  # the preserving edits' writer inputs (as auto captures them), once a process
# beyond auto's candidates, for the table only: the learned direction's plain cut and the
# preserving edit along it (λ × strength), at measure's layer, 4 learning steps; auto does not
# score them (docs/methods.md)
EXTRA_KEEPS, EXTRA_STRENGTHS = (0.3, 1.0, 3.0), (1.0, 1.15, 1.3, 1.5)
SAFE = 48
BOOT = 2000
# optimize's front trial 5 of the heretic comparison (peers_demo.json "frontier"): a kernel cut at
# partial strengths, where the norm-preserving rescale leaks
TRIAL5 = {
    "direction_index": 20.5662991376811,
    "projected": True,
    "attention": {
        "peak": 15.721666156072478,
        "max_weight": 0.8714313675236197,
        "min_weight": 0.1405701737650981,
        "width": 15.368383160238766,
    },
    "mlp": {
        "peak": 18.090059110278016,
        "max_weight": 0.9773041217778475,
        "min_weight": 0.23887813853115683,
        "width": 4.497330840201434,
    },
}


def say(text: str) -> None:
    print(time.strftime("%H:%M:%S"), text, flush=True)


def save(name: str, row: dict) -> None:
    from vauban.core.atomic import write_file

    text = json.dumps(row, indent=1) + "\n"
    write_file(WORK / f"{name}.json", lambda tmp: tmp.write_text(text))


def read(name: str) -> dict | None:
    path = WORK / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


class Scored(dict):
    """Candidates scored so far (name → ``Candidate``), written to ``WORK/<name>.json`` after each:
    a stopped ``select`` resumes at the next candidate."""

    def __init__(self, name: str) -> None:
        from vauban.methods.default import Candidate

        super().__init__({k: Candidate(**v) for k, v in (read(name) or {}).items()})
        self.name = name

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        save(self.name, {k: v.__dict__ for k, v in self.items()})


def report_prompts() -> tuple[list[str], list[str]]:
    from demo_inputs import advbench_sample
    from peers_harmless import harmless_prompts

    return advbench_sample(100, 0), harmless_prompts(0)[500:600]


def direction(model: Any, tokenizer: Any) -> Any:
    from vauban import DirectionResult, measure

    path = WORK / "direction.safetensors"
    if path.is_file():
        return DirectionResult.load(path)
    start = time.perf_counter()
    found = measure(model, tokenizer)
    found.save(path)
    save("direction_time", {"seconds": round(time.perf_counter() - start, 1)})
    return found


def fit_sets() -> tuple[list[str], list[str], list[str], list[str]]:
    """``(harmful fit, harmless fit, harmful held back, harmless held back)`` of the bundled sets,
    split as ``measure`` splits them."""
    from vauban.direction.selecting import split
    from vauban.text.prompts import load_prompts

    harmful, held_harmful = split(load_prompts("harmful"))
    harmless, held_harmless = split(load_prompts("harmless"))
    return harmful, harmless, held_harmful, held_harmless


def build(model: Any, tokenizer: Any, found: Any, settings: dict, captured: Any = None) -> Any:
    """The applied cut of a candidate's ``settings`` (:func:`vauban.methods.choosing.build`, the
    preserving edits fitted on :func:`~vauban.methods.choosing.preserving_inputs` as ``auto`` fits
    them), or of optimize's front trial 5 (``trial`` in ``settings``) with one of the
    norm-preserving edits."""
    from vauban.methods.choosing import build as build_candidate
    from vauban.methods.choosing import preserving_inputs
    from vauban.methods.cutspec import CutSpec, _weights
    from vauban.methods.preserving import capture
    from vauban.methods.protocol import Inputs
    from vauban.methods.registry import get_method

    harmful, harmless, held_harmful, _ = fit_sets()
    inputs = Inputs(harmful, harmless, formatting=found.formatting)
    if "trial" not in settings:
        if captured is None and settings["method"] in ("harmless_preserving", "learned_preserving"):
            if "pair" not in CAPTURED:  # on the original weights: build is never called inside a cut
                CAPTURED["pair"] = capture(model, tokenizer, preserving_inputs(inputs, held_harmful))
            captured = CAPTURED["pair"]
        return build_candidate(model, tokenizer, found, settings, inputs, captured, LEARNED)
    t, name = settings["trial"], settings["method"]
    spec = CutSpec(
        direction_index=t["direction_index"],
        projected=t["projected"],
        attention=_weights(t["attention"], "attention"),
        mlp=_weights(t["mlp"], "mlp"),
    )
    vector = spec.vector(model, tokenizer, found)
    if name == "norm_preserving_leak_free":
        return get_method(name).make(model, tokenizer, vector, inputs, attention=spec.attention, mlp=spec.mlp)
    return CutSpec(**{**spec.__dict__, "norm_preserving": name == "norm_preserving", "source": {}}).apply(
        model, vector
    )


def extra_settings(found: Any) -> list[dict]:
    """The table's candidates that ``method="auto"`` does not score: the learned direction's cut and
    the preserving edit along it (:data:`EXTRA_KEEPS` × :data:`EXTRA_STRENGTHS`)."""
    from vauban.methods.choosing import LEARN_STEPS

    layer = found.layer_index
    return [{"method": "learned", "layer": layer, "steps": LEARN_STEPS}] + [
        {"method": "learned_preserving", "layer": layer, "keep": k, "strength": s, "steps": LEARN_STEPS}
        for k in EXTRA_KEEPS
        for s in EXTRA_STRENGTHS
    ]


def select(model: Any, tokenizer: Any) -> dict:
    """Stage ``select`` (see the module docstring); ``WORK/select.json``."""
    from vauban.methods.choosing import candidate_settings, score_all
    from vauban.methods.default import choose_by_damage
    from vauban.methods.protocol import Inputs

    done = read("select")
    if done:
        return done
    found = direction(model, tokenizer)
    harmful, harmless, held_harmful, held_harmless = fit_sets()
    start = time.perf_counter()
    scored = score_all(
        model,
        tokenizer,
        found,
        Inputs(harmful, harmless, formatting=found.formatting),
        held_harmful,
        held_harmless,
        log=say,
        known=Scored("select_partial"),
        settings=candidate_settings(found) + extra_settings(found),
    )
    methods = sorted({c.settings["method"] for c in scored})
    picks = {m: choose_by_damage([c for c in scored if c.settings["method"] == m]).__dict__ for m in methods}
    auto = [c for c in scored if c.settings not in extra_settings(found)]
    row = {
        "candidates": [c.__dict__ for c in scored],
        "picks": picks,
        "default": choose_by_damage(auto).__dict__,
        "not_auto_candidates": [c.name for c in scored if c not in auto],
        "old_default": {"method": "plain", "layer": found.layer_index},
        "held_back": {"harmful": len(held_harmful), "harmless": len(held_harmless)},
        "seconds": round(time.perf_counter() - start, 1),
    }
    save("select", row)
    return row


def per_row_kl(
    model: Any, tokenizer: Any, rows: Any, base: list
) -> tuple[list[float], list[int], list[float]]:
    """Per row: summed KL(original ‖ model) over its scored positions, their count, and the
    model's summed negative log-likelihood of the forced answer tokens."""
    import torch

    from vauban.runtime.scoring import kl_rows, logprob_batches, token_logprobs

    kl, n, nll = [0.0] * len(rows), [0] * len(rows), [0.0] * len(rows)
    with torch.inference_mode():
        for batch, logp in logprob_batches(model, tokenizer, rows, None):
            picked = token_logprobs(logp, batch)
            for r, i in enumerate(batch.rows):
                length = int(batch.lengths[r])
                kl[i] = float(kl_rows(base[i], logp[r, batch.keep - length :].cpu()).sum())
                n[i], nll[i] = length, -float(picked[r].sum())
    return kl, n, nll


def damage(model: Any, tokenizer: Any, harmless: list[str], cache: dict) -> dict:
    """First-token KL per report harmless prompt; KL per reference answer (64 tokens) and NLL."""
    from vauban.edit.cutting import original_weights
    from vauban.runtime.scoring import first_token_logprobs, forced_text, kl_rows, reference_logprobs
    from vauban.text.prompts import load_pairs

    rows = forced_text(tokenizer, load_pairs("reference"), 64)
    if "first" not in cache:
        with original_weights(model):
            cache["first"] = first_token_logprobs(model, tokenizer, harmless)
            cache["reference"] = reference_logprobs(model, tokenizer, rows)
            cache["nll"] = per_row_kl(model, tokenizer, rows, cache["reference"])[2]
    first = kl_rows(cache["first"], first_token_logprobs(model, tokenizer, harmless)).tolist()
    kl, n, nll = per_row_kl(model, tokenizer, rows, cache["reference"])
    return {
        "first_token_kl_rows": first,
        "reference_kl_rows": kl,
        "reference_positions": n,
        "reference_nll_rows": nll,
        "reference_nll_original_rows": cache["nll"],
    }


def answers(model: Any, tokenizer: Any, prompts: list[str], prompt_set: str) -> dict:
    from vauban.judge.answers import completions

    done = completions(
        model, tokenizer, prompts, max_tokens=MAX_TOKENS, batch_size=None, prompt_set=prompt_set
    )
    return {
        "refused_rows": [int(a.refused) for a in done],
        "refused": [[a.prompt, a.text] for a in done if a.refused],
    }


def evaluated(select_row: dict) -> dict[str, dict]:
    """What the report stage measures, most wanted first: name → settings (None: the original)."""
    picks = select_row["picks"]
    out: dict[str, dict | None] = {
        "default_new": select_row["default"]["settings"],
        "default_old": select_row["old_default"],
        "original": None,
    }
    out |= {f"best_{m}": p["settings"] for m, p in picks.items() if p["settings"] != out["default_new"]}
    if "learned_preserving" in picks:  # the frontier along its strength, at the pick's other settings
        pick = picks["learned_preserving"]["settings"]
        for strength in EXTRA_STRENGTHS:
            if strength != pick["strength"]:
                out[f"learned_preserving_x{strength}"] = {**pick, "strength": strength}
    out |= {
        "trial5_norm_preserving": {"method": "norm_preserving", "trial": TRIAL5},
        "trial5_leak_free": {"method": "norm_preserving_leak_free", "trial": TRIAL5},
    }
    return out  # type: ignore[return-value]


def report(model: Any, tokenizer: Any, select_row: dict, only: list[str] | None) -> None:
    """Stage ``report``: one ``WORK/eval_<name>.json`` per evaluated cut."""
    from vauban.methods.leak import leak
    from vauban.methods.protocol import rank
    from vauban.text.prompts import load_prompts

    found = direction(model, tokenizer)
    harmful, harmless = report_prompts()
    safe = load_prompts("over_refusal")[:SAFE]
    cache: dict = {}
    for name, settings in evaluated(select_row).items():
        if read(f"eval_{name}") or (only and name not in only):
            continue
        start = time.perf_counter()
        if settings is None:
            row = {
                "refusal": answers(model, tokenizer, harmful, "eval"),
                "over_refusal": answers(model, tokenizer, safe, "eval"),
            }
        else:
            with build(model, tokenizer, found, settings) as applied:
                built = time.perf_counter() - start
                row = {
                    "settings": settings,
                    "rank": rank(applied),
                    "leak": leak(applied),
                    "build_seconds": round(built, 1),
                    "refusal": answers(model, tokenizer, harmful, "eval"),
                    "damage": damage(model, tokenizer, harmless, cache),
                    "over_refusal": answers(model, tokenizer, safe, "eval"),
                }
        row["seconds"] = round(time.perf_counter() - start, 1)
        save(f"eval_{name}", row)
        say(f"{name}: {sum(row['refusal']['refused_rows'])}/100 refused ({row['seconds']} s)")


def capability(model: Any, tokenizer: Any, select_row: dict, problems: int, which: list[str] | None) -> None:
    """Stage ``capability``: GSM8K and HumanEval for the original and the new default."""
    from demo_inputs import SHARED
    from vauban.capability.gsm8k import GSM8K
    from vauban.capability.humaneval import HumanEval

    found = direction(model, tokenizer)
    for name, settings in (("original", None), ("default_new", select_row["default"]["settings"])):
        if read(f"capability_{name}") or (which and name not in which):
            continue
        checks = [
            GSM8K(SHARED / "gsm8k" / "test.jsonl", limit=problems),
            HumanEval(SHARED / "humaneval" / "HumanEval.jsonl.gz", limit=problems, allow_code_execution=True),
        ]
        start = time.perf_counter()
        if settings is None:
            scores = [s for c in checks for s in c.run(model, tokenizer)]
        else:
            with build(model, tokenizer, found, settings):
                scores = [s for c in checks for s in c.run(model, tokenizer)]
        rows = {
            s.name: {
                "value": s.value,
                "n": s.n,
                "correct_rows": [int(d.get("correct", d.get("status") == "passed")) for d in s.details],
            }
            for s in scores
        }
        save(f"capability_{name}", {**rows, "seconds": round(time.perf_counter() - start, 1)})
        say(f"capability {name}: " + ", ".join(f"{k} {v['value']:.2f}" for k, v in rows.items()))


def heretic(model: Any, tokenizer: Any, select_row: dict, names: list[str]) -> None:
    """Stage ``heretic``: one ``WORK/heretic_<name>.json`` per cut in ``names`` (the module docstring)."""
    from peers import install, write_data
    from peers_common import demo_dir, heretic_common, run_logged
    from peers_evaluate import ANSI, initial_refusals, lines, parse_heretic
    from vauban import export

    program = install(HERETIC_WORK)
    files = write_data(HERETIC_WORK)
    if (lines(files["harmful_report"]), lines(files["harmless_report"])) != report_prompts():
        raise SystemExit("peers.py's report files are not frontier's report prompts")
    logs = HERETIC_WORK / "frontier"
    logs.mkdir(parents=True, exist_ok=True)
    found = direction(model, tokenizer)
    cuts = evaluated(select_row)
    for name in names:
        if read(f"heretic_{name}") or cuts.get(name) is None:
            continue
        start = time.perf_counter()
        with build(model, tokenizer, found, cuts[name]):
            folder = export(
                model,
                tokenizer,
                EXPORTS / name,
                direction=found,
                record={"frontier": name, "settings": cuts[name]},
                overwrite=True,
                dtype="float32",
            )
        exported = round(time.perf_counter() - start, 1)
        cmd = [str(program), "--model", str(demo_dir()), "--evaluate-model", str(folder)]
        # heretic opens an (empty) study journal even to evaluate: keep it out of the working directory
        cmd += [*heretic_common(files, "report"), "--study-checkpoint-dir", str(logs / "checkpoints")]
        log = logs / f"heretic_eval_{name}.log"
        rc, seconds = run_logged(cmd, log)
        text = log.read_text(errors="replace")
        row = {
            "settings": cuts[name],
            **parse_heretic(text),
            "initial_refusals": initial_refusals(log),
            "seconds": round(seconds, 1),
            "export": {"path": str(folder), "dtype": "float32", "format": "safetensors", "seconds": exported},
            "command": cmd,
            "rc": rc,
            "output_tail": ANSI.sub("", text)[-1500:],
        }
        if rc != 0 or "refusals" not in row or "kl" not in row:
            raise SystemExit(f"heretic --evaluate-model failed for {name} (rc {rc}); see {log}")
        save(f"heretic_{name}", row)
        say(f"heretic yardstick, {name}: {row['refusals']}/100 refused, KL {row['kl']:.4f} ({seconds:.0f} s)")


def heretic_rows(rows: dict) -> dict:
    """heretic's yardstick per cut (``rows``' names), and the original's from the "Initial refusals"
    of every run (when all agree; its KL against itself is 0)."""
    found = {
        p.stem.removeprefix("heretic_"): json.loads(p.read_text())
        for p in sorted(WORK.glob("heretic_*.json"))
    }
    out = {
        name: {k: h.get(k) for k in ("refusals", "prompts", "kl", "initial_refusals", "seconds")}
        for name, h in found.items()
        if name in rows
    }
    initial = {h["initial_refusals"] for h in found.values() if h.get("initial_refusals")}
    if len(initial) == 1 and "original" in rows:
        refusals, prompts = map(int, initial.pop().split("/"))
        out["original"] = {"refusals": refusals, "prompts": prompts, "kl": 0.0, "from": sorted(found)}
    return out


def interval(rows: list[list[float]], stat: Any, seed: int = 0) -> list[float]:
    """``[value, low, high]``: ``stat`` of the rows and its bootstrap 95 % interval (the same
    resampled prompt indices for every column of ``rows``, so paired statistics stay paired)."""
    rng = random.Random(seed)
    n = len(rows[0])
    draws = []
    for _ in range(BOOT):
        pick = [rng.randrange(n) for _ in range(n)]
        draws.append(stat(*[[col[i] for i in pick] for col in rows]))
    draws.sort()
    return [stat(*rows), draws[int(0.025 * BOOT)], draws[int(0.975 * BOOT) - 1]]


def summary(row: dict) -> dict:
    """One evaluated cut's figures with their intervals."""
    import math

    out = {
        "refusals": interval([row["refusal"]["refused_rows"]], sum),
        "over_refusals": interval([row["over_refusal"]["refused_rows"]], sum),
    }
    if "damage" in row:
        d = row["damage"]
        out["first_token_kl"] = interval([d["first_token_kl_rows"]], lambda x: sum(x) / len(x))
        out["kl_64_tokens"] = interval(
            [d["reference_kl_rows"], d["reference_positions"]], lambda k, n: sum(k) / sum(n)
        )
        out["perplexity"] = interval(
            [d["reference_nll_rows"], d["reference_positions"]], lambda k, n: math.exp(sum(k) / sum(n))
        )
        out |= {k: row[k] for k in ("settings", "rank", "leak", "build_seconds")}
    out["seconds"] = row["seconds"]
    return out


def paired(a: dict, b: dict) -> dict:
    """``a - b`` with paired bootstrap intervals (same prompts): refusals and first-token KL."""
    return {
        "refusals": interval(
            [a["refusal"]["refused_rows"], b["refusal"]["refused_rows"]], lambda x, y: sum(x) - sum(y)
        ),
        "first_token_kl": interval(
            [a["damage"]["first_token_kl_rows"], b["damage"]["first_token_kl_rows"]],
            lambda x, y: (sum(x) - sum(y)) / len(x),
        ),
    }


def gather(select_row: dict) -> dict:
    import math

    from provenance import stamp

    rows = {p.stem.removeprefix("eval_"): json.loads(p.read_text()) for p in sorted(WORK.glob("eval_*.json"))}
    caps = {
        p.stem.removeprefix("capability_"): json.loads(p.read_text())
        for p in sorted(WORK.glob("capability_*.json"))
    }
    out = {
        **stamp(),
        "model": "demo (Qwen2.5-Coder-0.5B-Instruct, float32, CPU)",
        "prompts": {
            "harmful_report": "100 AdvBench goals, random.Random(0).sample (as peers.py)",
            "harmless_report": "peers_harmless.harmless_prompts(0)[500:600] (as peers.py)",
            "reference": "48 bundled reference answers, KL at each of their first 64 tokens",
            "over_refusal": f"bundled over_refusal[:{SAFE}]",
            "selection": "bundled harmful/harmless 104-127 (held back by measure); edits fitted "
            "on 0-103; no report prompt used to choose",
        },
        "judge": "vauban default (markers)",
        "answer_tokens": MAX_TOKENS,
        "intervals": f"bootstrap over prompts, {BOOT} resamples, 95 % ([value, low, high])",
        "direction_seconds": (read("direction_time") or {}).get("seconds"),
        "select": select_row,
        "rows": {name: summary(row) for name, row in rows.items()},
        "capability": caps,
    }
    damaged = [row["damage"] for row in rows.values() if "damage" in row]
    if "original" in rows and damaged:
        d = damaged[0]
        out["rows"]["original"]["perplexity"] = interval(
            [d["reference_nll_original_rows"], d["reference_positions"]],
            lambda k, n: math.exp(sum(k) / sum(n)),
        )
    for name, row in heretic_rows(rows).items():
        out["rows"][name]["heretic"] = row
    if any("heretic" in row for row in out["rows"].values()):
        out["heretic_yardstick"] = {
            "command": "heretic --model ORIGINAL --evaluate-model EXPORT",
            "what": "heretic-llm 1.4.0 as a separate program in its own venv, float32 on CPU, the"
            " report prompts as its evaluation files; refusals by its own system prompt, markers and"
            " answer length, KL of the first-token distributions on the 100 harmless prompts",
            "exports": "vauban.export, safetensors, float32",
        }
    if "default_new" in rows and "default_old" in rows:
        out["new_minus_old_default"] = paired(rows["default_new"], rows["default_old"])
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    say(f"wrote {RESULTS}")
    print(table(out))
    return out


def fmt(cell: list[float] | None, digits: int) -> str:
    """``value [low, high]``, or a dash."""
    if not cell:
        return "–"
    value, low, high = cell
    if digits == 0:
        return f"{value:.0f} [{low:.0f}, {high:.0f}]"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def table(out: dict) -> str:
    """The README's frontier table (markdown) from a ``frontier_demo.json`` dict."""
    lines = [
        "| cut | settings | refused /100 | first-token KL | 64-token KL | perplexity "
        "| over-refusals /48 | rank | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in sorted(
        out["rows"].items(),
        key=lambda kv: (kv[0] != "original", kv[1]["refusals"][0], (kv[1].get("first_token_kl") or [0])[0]),
    ):
        settings = {k: v for k, v in (row.get("settings") or {}).items() if k != "trial"}
        lines.append(
            f"| {name} | {json.dumps(settings) if settings else ''} | {fmt(row['refusals'], 0)} | "
            f"{fmt(row.get('first_token_kl'), 4)} | {fmt(row.get('kl_64_tokens'), 4)} | "
            f"{fmt(row.get('perplexity'), 2)} | {fmt(row['over_refusals'], 0)} | "
            f"{row.get('rank', '–')} | {row['seconds']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    import sys

    sys.path.insert(0, str(HERE))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=("select", "report", "capability", "heretic", "gather", "all"))
    parser.add_argument("--only", nargs="*", help="report: only these rows (names of evaluated())")
    parser.add_argument("--problems", type=int, default=50)
    parser.add_argument("--which", nargs="*", help="capability: only these models (original, default_new)")
    parser.add_argument(
        "--cuts", nargs="*", default=list(HERETIC_CUTS), help="heretic: these cuts (names of evaluated())"
    )
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    if args.stage == "gather":
        gather(read("select") or {})
        return
    from vauban import quick

    model, tokenizer = quick.load()
    row = select(model, tokenizer)
    say(f"default: {row['default']['name']}; picks: " + ", ".join(p["name"] for p in row["picks"].values()))
    if args.stage in ("report", "all"):
        report(model, tokenizer, row, args.only)
    if args.stage in ("capability", "all"):
        capability(model, tokenizer, row, args.problems, args.which)
    if args.stage == "heretic":
        heretic(model, tokenizer, row, args.cuts)
        return
    gather(row)


if __name__ == "__main__":
    main()
