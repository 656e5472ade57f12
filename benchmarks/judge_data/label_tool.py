"""Labelling tool for the judge's training data: build the answer pool, print batches to read, record labels.

The pool is rebuilt from two public repositories brought in with the `fetch` tool (their git
directories are arguments, their commits are pinned below); labels are written by the reader
(labeller "A", see README.md) into one JSONL per source model under `labels/`.

    python label_tool.py pool  --rd GITDIR --jbb GITDIR   # writes pool.jsonl + queue.txt (gitignored)
    python label_tool.py enrich --rd GITDIR --jbb GITDIR  # + likely partial/late refusals (queue_enrich.txt)
    python label_tool.py enrich-late --rd GITDIR --jbb GITDIR  # + late-decline wording (queue_enrich_late)
    python label_tool.py show N [--enrich | --late]       # the next N unlabelled answers of a queue
    python label_tool.py full ID...                       # whole answers
    python label_tool.py add < labels.tsv                 # lines: id<TAB>label[<TAB>note]
    python label_tool.py counts [--md]                    # counts per model x label
    python label_tool.py card                             # rewrite the counts table of README.md
    python label_tool.py kappa-sample                     # blind 10 % sample for labeller B
    python label_tool.py kappa2-sample PREFIX...          # blind sample of new generated answers
    python label_tool.py kappa FILE_B                     # Cohen's kappa of A vs B (B: JSONL with id, label)
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
POOL = HERE / "pool.jsonl"
QUEUE = HERE / "queue.txt"
LABELS = HERE / "labels"
CATEGORIES = ("compliance", "full_refusal", "partial_refusal", "late_refusal", "evasion")
RD_REPO, RD_COMMIT = "github.com/andyrdt/refusal_direction", "9d852fae1a9121c78b29142de733cb1340770cc3"
JBB_REPO, JBB_COMMIT = "github.com/JailbreakBench/artifacts", "909e68c01d94222b8ad2e397a017e2e12e2adb73"
RD_MODELS = ("gemma-2b-it", "llama-2-7b-chat-hf", "meta-llama-3-8b-instruct", "qwen-1_8b-chat", "yi-6b-chat")
# answers drawn per (prompt set, setting) of each refusal_direction model
RD_DRAW = {
    ("jailbreakbench", "baseline"): 50,
    ("jailbreakbench", "ablation"): 70,
    ("jailbreakbench", "actadd"): 50,
    ("harmless", "baseline"): 30,
    ("harmless", "actadd"): 50,
}
# answers drawn per (attack, model) of JailbreakBench's artifacts
JBB_DRAW = {
    "vicuna-13b-v1.5": {
        "PAIR/black_box": 30,
        "GCG/white_box": 25,
        "DSN/white_box": 20,
        "JBC/manual": 20,
        "prompt_with_random_search/black_box": 25,
    },
    "gpt-3.5-turbo-1106": {
        "GCG/transfer": 30,
        "JBC/manual": 10,
        "PAIR/black_box": 40,
        "prompt_with_random_search/black_box": 40,
    },
    "gpt-4-0125-preview": {
        "GCG/transfer": 30,
        "JBC/manual": 10,
        "PAIR/black_box": 40,
        "prompt_with_random_search/black_box": 40,
    },
    "llama-2-7b-chat-hf": {
        "DSN/white_box": 20,
        "GCG/white_box": 20,
        "JBC/manual": 10,
        "prompt_with_random_search/black_box": 20,
    },
}
SEED = 24
CUES = re.compile(
    r"\b(cannot|can't|can not|unable|won't|will not|not able|sorry|apolog|illegal|unethical|"
    r"not appropriate|inappropriate|instead|refuse|decline|against|disclaimer|fictional|"
    r"hypothetical|important to note|however|but i|i must|not provide|not condone|"
    r"do not|don't)",
    re.I,
)


def git_json(gitdir: str, commit: str, path: str) -> object:
    """The parsed JSON of one file at one commit of a bare git directory."""
    text = subprocess.run(
        ["git", f"--git-dir={gitdir}", "show", f"{commit}:{path}"], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(text)


def rd_items(gitdir: str) -> dict[str, list[dict]]:
    """refusal_direction's drawn answers, per model."""
    rng, out = random.Random(SEED), {}
    for model in RD_MODELS:
        groups = []
        for (pset, setting), n in RD_DRAW.items():
            path = f"pipeline/runs/{model}/completions/{pset}_{setting}_completions.json"
            rows = git_json(gitdir, RD_COMMIT, path)
            picks = sorted(rng.sample(range(len(rows)), n))
            rng.shuffle(picks)
            groups.append(
                [
                    {
                        "id": f"rd:{model}:{pset}_{setting}:{i}",
                        "source": f"{RD_REPO}/{path}@{RD_COMMIT}",
                        "model": model,
                        "setting": setting,
                        "prompt_set": pset,
                        "prompt_harmful": pset == "jailbreakbench",
                        "category": rows[i]["category"],
                        "prompt": rows[i]["prompt"],
                        "answer": rows[i]["response"],
                    }
                    for i in picks
                ]
            )
        out[model] = interleave(groups)
    return out


def jbb_items(gitdir: str) -> dict[str, list[dict]]:
    """JailbreakBench artifacts' drawn answers (answered jailbreaks only), per model."""
    rng, out = random.Random(SEED + 1), {}
    for model, draws in JBB_DRAW.items():
        groups = []
        for attack, n in draws.items():
            path = f"attack-artifacts/{attack}/{model}.json"
            rows = [r for r in git_json(gitdir, JBB_COMMIT, path)["jailbreaks"] if r.get("response")]
            picks = rng.sample(range(len(rows)), min(n, len(rows)))
            groups.append(
                [
                    {
                        "id": f"jbb:{attack.split('/')[0]}:{model}:{rows[i]['index']}",
                        "source": f"{JBB_REPO}/{path}@{JBB_COMMIT}",
                        "model": model,
                        "setting": f"jailbreak_{attack.split('/')[0]}",
                        "prompt_set": "jbb_behaviors",
                        "prompt_harmful": True,
                        "category": rows[i]["category"],
                        "goal": rows[i]["goal"],
                        "prompt": rows[i]["prompt"],
                        "answer": rows[i]["response"],
                    }
                    for i in picks
                ]
            )
        out[model] = interleave(groups)
    return out


def interleave(groups: list[list[dict]]) -> list[dict]:
    """Round-robin over the groups, so any prefix mixes every setting."""
    out, k = [], 0
    while any(k < len(g) for g in groups):
        out += [g[k] for g in groups if k < len(g)]
        k += 1
    return out


def build_pool(rd: str, jbb: str) -> None:
    """Write pool.jsonl and queue.txt: chunks of 20 per model in turn (labels stay balanced if cut short)."""
    per_model = rd_items(rd)
    for model, items in jbb_items(jbb).items():
        per_model[model] = per_model.get(model, []) + items
    queue, pos = [], dict.fromkeys(per_model, 0)
    while any(pos[m] < len(v) for m, v in per_model.items()):
        for m, v in per_model.items():
            queue += [x["id"] for x in v[pos[m] : pos[m] + 20]]
            pos[m] += 20
    with POOL.open("w") as f:
        for items in per_model.values():
            for x in items:
                f.write(json.dumps(x, ensure_ascii=False) + "\n")
    QUEUE.write_text("\n".join(queue) + "\n")
    print(f"{len(queue)} answers of {len(per_model)} models")


EARLY = re.compile(
    r"\b(I cannot|I can't|I can not|I'm unable|I am unable|I won't|I will not|I'm sorry|"
    r"I apologi[sz]e|As an AI|not able to (provide|assist|help|fulfill)|"
    r"I must (decline|refuse))",
    re.I,
)
TURN = re.compile(
    r"\b(however|but I can|but here|instead, here|that said|that being said|with that said|"
    r"here (is|are) (a|an|some|the))\b",
    re.I,
)


def enrich_kind(answer: str) -> str | None:
    """'late': a decline first appears after 300 characters; 'partial': an early decline turns to content."""
    early = EARLY.search(answer[:300])
    if early is None:
        return "late" if EARLY.search(answer[300:]) else None
    rest = answer[early.end() :]
    return "partial" if len(answer) > 500 and TURN.search(rest) else None


def build_enrich(rd: str, jbb: str, per_model: int = 40) -> None:
    """Append to the pool answers outside the random draw whose wording suggests a partial or late refusal.

    A selection aid only: every selected answer is read and labelled like the rest (most turn out otherwise).
    Writes queue_enrich.txt, in chunks of 20 per model.
    """
    pool = load_pool()
    found: dict[str, list[dict]] = {}
    for item in all_items(rd, jbb):
        if item["id"] in pool or enrich_kind(item["answer"]) is None:
            continue
        item["selected_by"] = f"enrichment:{enrich_kind(item['answer'])}"
        found.setdefault(item["model"], []).append(item)
    rng, chosen = random.Random(SEED + 2), {}
    for model, items in sorted(found.items()):
        chosen[model] = rng.sample(items, min(per_model, len(items)))
        print(model, len(items), "candidates,", len(chosen[model]), "taken")
    queue, k = [], 0
    while any(k < len(v) for v in chosen.values()):
        for v in chosen.values():
            queue += [x["id"] for x in v[k : k + 20]]
        k += 20
    with POOL.open("a") as f:
        for v in chosen.values():
            for x in v:
                f.write(json.dumps(x, ensure_ascii=False) + "\n")
    (HERE / "queue_enrich.txt").write_text("\n".join(queue) + "\n")


LATE = re.compile(
    r"(\bI cannot\b|\bI can't\b|\bI'm unable\b|\bI am unable\b|\bI won't\b|\bI will not\b|"
    r"\bI'm sorry\b|\bI apologi[sz]e\b|\bI must (decline|refuse)\b|"
    r"\b(is|are|be) (both )?(illegal|unethical)\b|\bI do not (support|condone|endorse)\b|"
    r"\bnot (able|going) to (provide|assist|help|fulfill|continue)\b)",
    re.I,
)


def build_enrich_late(rd: str, jbb: str) -> None:
    """Second enrichment (after the main queue was done): every answer outside the pool with no decline
    in its first 300 characters (EARLY) nor 150 (LATE), but a LATE phrase after character 150.

    Aimed at late refusals (content first, then a decline or an 'illegal and unethical' turn). A selection
    aid only; each answer is read and labelled like the rest. Writes queue_enrich_late.txt.
    """
    pool = load_pool()
    chosen = []
    for item in all_items(rd, jbb):
        a = item["answer"]
        if item["id"] in pool or EARLY.search(a[:300]) or LATE.search(a[:150]) or not LATE.search(a[150:]):
            continue
        item["selected_by"] = "enrichment:late2"
        chosen.append(item)
    with POOL.open("a") as f:
        for x in chosen:
            f.write(json.dumps(x, ensure_ascii=False) + "\n")
    (HERE / "queue_enrich_late.txt").write_text("\n".join(x["id"] for x in chosen) + "\n")
    print(len(chosen), "answers")


def all_items(rd: str, jbb: str) -> list[dict]:
    """Every answer of both sources, in the pool's record format."""
    global RD_DRAW, JBB_DRAW
    saved = RD_DRAW, JBB_DRAW
    RD_DRAW = dict.fromkeys(RD_DRAW, 100)
    JBB_DRAW = {m: dict.fromkeys(d, 100) for m, d in JBB_DRAW.items()}
    try:
        out = [x for v in rd_items(rd).values() for x in v] + [x for v in jbb_items(jbb).values() for x in v]
    finally:
        RD_DRAW, JBB_DRAW = saved
    return out


def load_pool() -> dict[str, dict]:
    """The pool by id."""
    return {x["id"]: x for x in map(json.loads, POOL.read_text().splitlines())}


def labelled() -> dict[str, dict]:
    """Every labelled record by id."""
    out = {}
    for p in sorted(LABELS.glob("*.jsonl")):
        for line in p.read_text().splitlines():
            r = json.loads(line)
            out[r["id"]] = r
    return out


def condensed(answer: str, head: int = 600, tail: int = 300) -> str:
    """The answer to read: whole if short, else head + middle sentences with refusal/hedge cues + tail."""
    text = re.sub(r"\n\s*\n+", "\n", answer.strip()).replace("\n", " ⏎ ")
    if len(text) <= head + tail + 200:
        return text
    middle = text[head:-tail]
    sentences = re.split(r"(?<=[.!?⏎])\s+", middle)
    cues = list(dict.fromkeys(s.strip()[:180] for s in sentences if CUES.search(s)))[:4]
    mid = " … ".join(f"«{c}»" for c in cues) if cues else "(no cue sentence)"
    return f"{text[:head]} [… middle {len(middle)} chars; cue sentences: {mid} …] {text[-tail:]}"


def show(n: int, queue: Path = QUEUE) -> None:
    """Print the next n unlabelled answers of the queue."""
    pool, done = load_pool(), labelled()
    todo = [i for i in queue.read_text().split() if i not in done][:n]
    for i in todo:
        x = pool[i]
        p = x["prompt"] if "goal" not in x else f"GOAL: {x['goal']} || ATTACK PROMPT: {x['prompt'][:250]}"
        kind = "harmful" if x["prompt_harmful"] else "harmless"
        print(f"=== {i} [{kind}]\nQ: {p}\nA: {condensed(x['answer'])}\n")
    left = sum(i not in done for i in queue.read_text().split())
    print(f"({len(done)} labelled, {left} left in {queue.name})")


def add(lines: list[str]) -> None:
    """Append labelled records (id<TAB>label[<TAB>note]) to labels/<model>.jsonl."""
    pool, done = load_pool(), labelled()
    LABELS.mkdir(exist_ok=True)
    for line in filter(str.strip, lines):
        parts = line.rstrip("\n").split("\t")
        i, label, note = parts[0].strip(), parts[1].strip(), (parts[2].strip() if len(parts) > 2 else "")
        if label not in CATEGORIES or i not in pool or i in done:
            sys.exit(f"bad line (unknown label/id or already labelled): {line!r}")
        x = pool[i]
        keys = ("id", "source", "model", "setting", "prompt_set", "prompt_harmful", "category")
        rec = {k: x[k] for k in keys}
        rec["selected_by"] = x.get("selected_by", "random_draw")
        rec.update(
            {
                "goal": x.get("goal"),
                "prompt": x["prompt"],
                "answer": x["answer"],
                "label": label,
                "refusal": label != "compliance",
                "labeller": "A",
            }
        )
        if note:
            rec["note"] = note
        with (LABELS / f"{x['model']}.jsonl").open("a") as f:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        done[i] = rec


def counts(md: bool = False) -> None:
    """Counts per model x label (a markdown table with --md)."""
    c = Counter((r["model"], r["label"]) for r in labelled().values())
    rows = [(m, [c[m, k] for k in CATEGORIES]) for m in sorted({m for m, _ in c})]
    rows.append(("**all**", [sum(r[1][i] for r in rows) for i in range(len(CATEGORIES))]))
    if md:
        print("| model | " + " | ".join(CATEGORIES) + " | total |")
        print("|---" * (len(CATEGORIES) + 2) + "|")
        for m, v in rows:
            print(f"| {m} | " + " | ".join(map(str, v)) + f" | {sum(v)} |")
        return
    print(f"{'model':28s}" + "".join(f"{k[:12]:>14s}" for k in CATEGORIES) + f"{'total':>8s}")
    for m, v in rows:
        print(f"{m:28s}" + "".join(f"{n:14d}" for n in v) + f"{sum(v):8d}")


def generated(r: dict) -> bool:
    """Whether a record was generated here (benchmarks/judge_generate.py), not drawn from a public source."""
    return r["id"].startswith("gen:")


def prompt_set(r: dict) -> str:
    """A record's prompt set; generated records: safe_scary, advbench or harmless (judge_generate.py)."""
    if not generated(r):
        return r["prompt_set"]
    return r.get("prompt_kind") or ("advbench" if r.get("harmful") else "harmless")


def selection(r: dict) -> str:
    """How a record was selected: random (draw), enrichment, or generated (all generated answers)."""
    if generated(r):
        return "generated"
    return "random" if r["selected_by"] == "random_draw" else "enrichment"


def by_setting_md() -> str:
    """Markdown table: prompt set x setting x selection (random draw / enrichment) against label."""
    c: Counter = Counter()
    for r in labelled().values():
        c[
            (prompt_set(r), f"{r['model']} {r['setting']}" if generated(r) else r["setting"], selection(r)),
            r["label"],
        ] += 1
    rows = sorted({k for k, _ in c})
    out = [
        "| prompt set | setting | selected | " + " | ".join(CATEGORIES) + " | total |",
        "|---" * (len(CATEGORIES) + 4) + "|",
    ]
    for k in rows:
        v = [c[k, lab] for lab in CATEGORIES]
        out.append(f"| {k[0]} | {k[1]} | {k[2]} | " + " | ".join(map(str, v)) + f" | {sum(v)} |")
    return "\n".join(out) + "\n"


def replace_block(text: str, name: str, body: str) -> str:
    """Replace what lies between <!-- NAME:start ... --> and <!-- NAME:end --> in text."""
    head, rest = text.split(f"<!-- {name}:start", 1)
    start_line, rest = rest.split("\n", 1)
    _, tail = rest.split(f"<!-- {name}:end -->", 1)
    return f"{head}<!-- {name}:start{start_line}\n{body}<!-- {name}:end -->{tail}"


def card() -> None:
    """Rewrite the count tables of README.md (between the counts:/settings: start and end markers)."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        counts(md=True)
    readme = replace_block((HERE / "README.md").read_text(), "counts", buf.getvalue())
    (HERE / "README.md").write_text(replace_block(readme, "settings", by_setting_md()))


def kappa_sample(frac: float = 0.10) -> None:
    """Write kappa_sample.jsonl: a seeded sample of about frac of the labels, stratified by model x label
    (at least one per non-empty stratum), with id/model/prompt/goal/answer only -- no label, no note."""
    by: dict[tuple[str, str], list[str]] = {}
    recs = labelled()
    for i, r in sorted(recs.items()):
        by.setdefault((r["model"], r["label"]), []).append(i)
    rng, ids = random.Random(SEED + 3), []
    for key in sorted(by):
        ids += rng.sample(by[key], max(1, round(frac * len(by[key]))))
    rng.shuffle(ids)
    with (HERE / "kappa_sample.jsonl").open("w") as f:
        for i in ids:
            r = recs[i]
            f.write(
                json.dumps({k: r[k] for k in ("id", "model", "goal", "prompt", "answer")}, ensure_ascii=False)
                + "\n"
            )
    print(len(ids), "answers in kappa_sample.jsonl")


def kappa2_sample(prefixes: list[str], frac: float = 0.12) -> None:
    """Write kappa2_sample.jsonl: a blind sample of the answers generated in the second round (generated/
    records whose id starts with one of ``prefixes``), stratified by model x setting x prompt kind (labels
    play no part: the sample can be drawn before labelling), seeded, shuffled, id/model/prompt/answer only."""
    by: dict[tuple[str, str, str], list[dict]] = {}
    for path in sorted((HERE / "generated").glob("*.jsonl")):
        for r in map(json.loads, path.read_text().splitlines()):
            if r["id"].startswith(tuple(prefixes)):
                by.setdefault((r["model"], r["setting"], prompt_set(r)), []).append(r)
    rng, picked = random.Random(SEED + 4), []
    for key in sorted(by):
        picked += rng.sample(by[key], max(1, math.ceil(len(by[key]) * frac)))
    rng.shuffle(picked)
    with (HERE / "kappa2_sample.jsonl").open("w") as f:
        for r in picked:
            f.write(
                json.dumps({k: r[k] for k in ("id", "model", "prompt", "answer")}, ensure_ascii=False) + "\n"
            )
    counts = Counter(
        f"{m} {s} {k}" for m, s, k in ((r["model"], r["setting"], prompt_set(r)) for r in picked)
    )
    print(len(picked), "answers in kappa2_sample.jsonl of", sum(map(len, by.values())), dict(counts))


def cohen(pairs: list[tuple[str, str]]) -> float:
    """Cohen's kappa of a list of (label_a, label_b)."""
    n = len(pairs)
    po = sum(a == b for a, b in pairs) / n
    ca, cb = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    pe = sum(ca[k] * cb[k] for k in ca) / n / n
    return (po - pe) / (1 - pe) if pe < 1 else 1.0


def kappa(path: str) -> None:
    """Agreement of labeller A with a second labelling (JSONL lines with id and label)."""
    recs = labelled()
    b = {r["id"]: r["label"] for r in map(json.loads, Path(path).read_text().splitlines()) if r.get("label")}
    bad = [x for x in b.values() if x not in CATEGORIES]
    if bad:
        sys.exit(f"unknown labels in {path}: {sorted(set(bad))}")
    pairs = [(recs[i]["label"], lab) for i, lab in b.items() if i in recs]
    print(f"{len(pairs)} doubly labelled; raw agreement {sum(a == x for a, x in pairs) / len(pairs):.3f}")
    print(f"kappa, 5 categories: {cohen(pairs):.3f}")
    print(f"kappa, refusal yes/no: {cohen([(a != 'compliance', x != 'compliance') for a, x in pairs]):.3f}")
    conf = Counter(pairs)
    print("A \\ B " + " ".join(f"{k[:8]:>9s}" for k in CATEGORIES))
    for ka in CATEGORIES:
        print(f"{ka[:8]:8s}" + " ".join(f"{conf[ka, kb]:9d}" for kb in CATEGORIES))


def main() -> None:
    """Command line."""
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pool")
    p.add_argument("--rd", required=True)
    p.add_argument("--jbb", required=True)
    sh = sub.add_parser("show")
    sh.add_argument("n", type=int)
    sh.add_argument("--enrich", action="store_true")
    sh.add_argument("--late", action="store_true")
    e = sub.add_parser("enrich")
    e.add_argument("--rd", required=True)
    e.add_argument("--jbb", required=True)
    el = sub.add_parser("enrich-late")
    el.add_argument("--rd", required=True)
    el.add_argument("--jbb", required=True)
    sub.add_parser("full").add_argument("ids", nargs="+")
    sub.add_parser("add")
    sub.add_parser("counts").add_argument("--md", action="store_true")
    sub.add_parser("card")
    sub.add_parser("kappa-sample")
    sub.add_parser("kappa2-sample").add_argument("prefixes", nargs="+", help="id prefixes of the new answers")
    sub.add_parser("kappa").add_argument("file")
    a = ap.parse_args()
    if a.cmd == "pool":
        build_pool(a.rd, a.jbb)
    elif a.cmd == "show":
        name = "queue_enrich.txt" if a.enrich else "queue_enrich_late.txt" if a.late else QUEUE.name
        show(a.n, HERE / name)
    elif a.cmd == "kappa-sample":
        kappa_sample()
    elif a.cmd == "kappa2-sample":
        kappa2_sample(a.prefixes)
    elif a.cmd == "kappa":
        kappa(a.file)
    elif a.cmd == "enrich-late":
        build_enrich_late(a.rd, a.jbb)
    elif a.cmd == "enrich":
        build_enrich(a.rd, a.jbb)
    elif a.cmd == "full":
        pool = load_pool()
        for i in a.ids:
            print(f"=== {i}\nQ: {pool[i]['prompt'][:600]}\nA: {pool[i]['answer']}\n")
    elif a.cmd == "add":
        add(sys.stdin.readlines())
    elif a.cmd == "card":
        card()
    else:
        counts(a.md)


if __name__ == "__main__":
    main()
