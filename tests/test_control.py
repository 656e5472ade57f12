"""Categories, conditional steering and languages (issue 28) on tiny random models and the
bundled data."""

from __future__ import annotations

import dataclasses
import json
from importlib import resources

import pytest
import torch

from conftest import HARMFUL, HARMLESS
from vauban.core.errors import VaubanError
from vauban.direction.categories import CategoryDirections, category_prompts, keep_vector, measure_categories
from vauban.direction.measuring import measure
from vauban.edit.cutting import cut
from vauban.evaluation.groups import LANGUAGES, evaluate_groups, language_judge, language_prompts
from vauban.methods.capture import writer_inputs
from vauban.methods.conditional import (
    Adding,
    best_threshold,
    condition_scores,
    condition_sets,
    conditional_generate,
    measure_condition,
    refusal_shift,
)
from vauban.methods.keeping import KeepPreserving, capture_keep, harmful_records, keep_prompt_sets
from vauban.methods.protocol import Inputs, rank
from vauban.methods.steering import Steering
from vauban.model import arch
from vauban.runtime.generating import generate

GROUPS = {"a": HARMFUL[:3], "b": HARMFUL[3:]}


def _records(name: str) -> list[dict]:
    text = resources.files("vauban").joinpath("data", f"{name}.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def test_bundled_categories_have_enough_prompts_and_never_share_one():
    measure_set, held, test = category_prompts("measure"), category_prompts("eval"), category_prompts("test")
    assert list(measure_set) == list(held) == list(test) and len(measure_set) == 6
    assert all(len(v) >= 120 for v in measure_set.values()) and all(len(v) >= 20 for v in held.values())
    assert all(len(v) == 40 for v in test.values())
    every = [p for v in (*measure_set.values(), *held.values(), *test.values()) for p in v]
    assert len(every) == len(set(every))
    eval_harmful = {r["prompt"] for r in _records("eval_harmful")}
    assert not eval_harmful & {p for v in measure_set.values() for p in v}  # evaluation stays held out


def test_bundled_languages_are_parallel_sets_of_forty():
    records = _records("multilingual")
    for lang in LANGUAGES:
        for kind in ("harmful", "harmless"):
            rows = [r for r in records if r["language"] == lang and r["set"] == kind]
            assert [r["id"] for r in rows] == list(range(40))
    assert len({r["prompt"] for r in records}) == len(records)
    assert len(language_prompts(["zh", "fr"], "harmless")["zh"]) == 40
    with pytest.raises(VaubanError, match="choose among"):
        language_prompts(["xx"])


def test_condition_sets_split_bundled_and_category_conditions():
    medical = condition_sets("medical")
    assert {len(medical.matched[s]) for s in ("measure", "tune", "test")} == {30, 15}
    cyber = condition_sets("cybercrime")
    assert len(cyber.matched["measure"]) == 90 and len(cyber.matched["tune"]) == 30
    assert not set(cyber.matched["test"]) & set(cyber.matched["measure"])
    assert len(cyber.unmatched["measure"]) == 450
    with pytest.raises(VaubanError, match="no condition"):
        condition_sets("gardening")


def test_category_directions_similarity_and_keep_vector(tiny, tokenizer, tmp_path):
    model = tiny("qwen2")
    cats = measure_categories(model, tokenizer, GROUPS, HARMLESS, layer=2)
    sim = cats.similarity()
    assert sim.shape == (2, 2) and torch.allclose(sim, sim.T) and torch.allclose(sim.diag(), torch.ones(2))
    direction = measure(model, tokenizer, HARMFUL, HARMLESS, layer=2)
    kept = keep_vector(direction, cats, ["a"])
    assert abs(float(kept @ cats.direction("a"))) < 1e-5 and abs(float(kept.norm()) - 1) < 1e-5
    others = keep_vector(direction, cats, ["a"], method="others")
    assert abs(float(others @ cats.direction("a"))) < 1e-5
    again = CategoryDirections.load(cats.save(tmp_path / "cats"))
    assert again.categories == cats.categories and torch.equal(again.means, cats.means)
    with pytest.raises(VaubanError, match="unknown categories"):
        keep_vector(direction, cats, ["c"])
    with pytest.raises(VaubanError, match="nothing is left"):
        keep_vector(direction, cats, ["a", "b"], method="others")


def test_keep_prompt_sets_remove_the_others_and_no_kept_prompt():
    groups = {"a": ["a1", "a2", "x"], "b": ["b1", "b2"], "c": ["c1"]}
    generic = [{"prompt": "g1", "category": "a"}, {"prompt": "g2"}, {"prompt": "b1", "category": "b"}]
    remove, kept = keep_prompt_sets(groups, ["a"], generic, exclude={"b2", "x"})
    assert kept == ["a1", "a2"] and remove == ["b1", "c1", "g2"]
    bundled = harmful_records("harmful")
    assert len(bundled) == 128 and all("category" in r for r in bundled)
    assert harmful_records(HARMFUL[:2]) == [{"prompt": p} for p in HARMFUL[:2]]
    with pytest.raises(VaubanError, match="unknown categories"):
        keep_prompt_sets(groups, ["z"])


def _bits(model):
    return {n: p.detach().clone().view(torch.int32) for n, p in model.named_parameters()}


def test_keep_preserving_is_exact_and_keeps_the_kept_outputs_as_its_weight_grows(tiny, tokenizer):
    model = tiny("qwen2")
    direction = measure(model, tokenizer, HARMFUL, HARMLESS, layer=2)
    inputs, kept = Inputs(HARMFUL[3:], HARMLESS[:3]), HARMFUL[:3]
    writers = arch.residual_writers(model)
    captured = capture_keep(model, tokenizer, inputs, kept, max_rows=16)
    assert captured[1] is not None and captured[1][writers[0].name].shape[0] == 16
    before, originals = _bits(model), {w.name: w.weight.detach().clone() for w in writers}
    changes = {}
    for keep in (0.01, 1e6):
        applied = KeepPreserving().make(
            model, tokenizer, direction, inputs, kept=kept, keep=keep, ridge=1e-9, captured=captured
        )
        assert rank(applied) == 1 and applied.record()["kept_prompts"] == 3
        edited = _bits(model)
        worst = 0.0
        for w in writers:
            q = applied._edits[[e.name for e in applied._edits].index(f"{w.name}.weight")].basis.float()
            new, old = w.weight.detach(), originals[w.name]
            xk = captured[1][w.name]
            scale = (xk @ old.T @ q.T).abs().max()
            worst = max(worst, float((xk @ new.T - xk @ old.T).abs().max() / scale))
        changes[keep] = worst
        applied.undo()
        assert all(torch.equal(p.detach().view(torch.int32), before[n]) for n, p in model.named_parameters())
        applied.apply()
        assert all(torch.equal(p.detach().view(torch.int32), edited[n]) for n, p in model.named_parameters())
        applied.undo()
    assert changes[1e6] < 1e-3 < changes[0.01]  # λ → ∞: the kept prompts' outputs as they were
    xk = writer_inputs(model, tokenizer, kept, writers, prompt_set="harmful", max_rows=16)
    assert all(torch.equal(xk[n], captured[1][n]) for n in xk)  # the model is back as it was


def test_keep_preserving_boost_scales_the_kept_outputs_along_the_direction(tiny, tokenizer):
    model = tiny("qwen2")
    direction = measure(model, tokenizer, HARMFUL, HARMLESS, layer=2)
    inputs, kept = Inputs(HARMFUL[3:], HARMLESS[:3]), HARMFUL[:3]
    writers = arch.residual_writers(model, [1, 3])
    captured = capture_keep(model, tokenizer, inputs, kept, max_rows=16)
    originals = {w.name: w.weight.detach().clone() for w in writers}
    for strength in (1.0, 1.5):  # at strength s the kept outputs along d become (1 + s·β) × theirs
        applied = KeepPreserving().make(
            model,
            tokenizer,
            direction,
            inputs,
            kept=kept,
            keep=1e6,
            ridge=1e-9,
            boost=2.0,
            captured=captured,
            strength=strength,
        )
        assert applied.record()["boost"] == 2.0 and applied.record()["strength"] == strength
        for w in writers:
            q = applied._edits[[e.name for e in applied._edits].index(f"{w.name}.weight")].basis.float()
            xk = captured[1][w.name]
            old, new = xk @ originals[w.name].T @ q.T, xk @ w.weight.detach().T @ q.T
            assert torch.allclose(new, (1 + 2.0 * strength) * old, atol=1e-2 * float(old.abs().max()))
        applied.undo()


def test_writer_inputs_at_the_last_tokens_are_rows_of_every_token(tiny, tokenizer):
    model = tiny("qwen2")
    writers = arch.residual_writers(model, [1])
    every = writer_inputs(model, tokenizer, HARMFUL[:3], writers, max_rows=10_000)
    for last in (1, 3):
        tail = writer_inputs(model, tokenizer, HARMFUL[:3], writers, max_rows=10_000, last=last)
        for name, rows in tail.items():
            assert rows.shape[0] == 3 * last < every[name].shape[0]
            assert torch.cdist(rows, every[name]).min(dim=1).values.max() < 1e-2  # cdist rounds


def test_best_threshold_separates_separable_scores():
    threshold, accuracy = best_threshold(torch.tensor([0.5, 0.6, 0.9]), torch.tensor([-0.2, 0.1, 0.3]))
    assert accuracy == 1.0 and 0.3 < threshold < 0.5


def test_conditional_generation_steers_only_matched_prompts(tiny, tokenizer):
    model = tiny("qwen2")
    sets = dataclasses.replace(condition_sets("medical"))
    sets.matched["measure"], sets.matched["tune"] = sets.matched["measure"][:4], sets.matched["tune"][:3]
    sets.unmatched["measure"] = sets.unmatched["measure"][:4]
    sets.unmatched["tune"] = sets.unmatched["tune"][:3]
    condition = measure_condition(model, tokenizer, sets)
    assert 0 <= condition.layer_index < 4 and 0.5 <= condition.tune_accuracy[condition.layer_index] <= 1
    direction = measure(model, tokenizer, HARMFUL, HARMLESS, layer=2)
    prompts = HARMFUL[:2] + HARMLESS[:2]
    plain = generate(model, tokenizer, prompts, max_tokens=6)
    with Steering(model, direction, 1.0):
        steered = generate(model, tokenizer, prompts, max_tokens=6, prompt_set="steer")
    for threshold, expected in ((float("inf"), plain), (float("-inf"), steered)):
        always = dataclasses.replace(condition, threshold=threshold)
        answers, matched = conditional_generate(model, tokenizer, prompts, always, direction, max_tokens=6)
        assert answers == expected and all(m == (threshold < 0) for m in matched)
    with Adding(model, *refusal_shift(direction), alpha=3.0):
        added = generate(model, tokenizer, prompts, max_tokens=6, prompt_set="steer")
    always = dataclasses.replace(condition, threshold=-1e9)
    answers, _ = conditional_generate(
        model, tokenizer, prompts, always, direction, mode="add", alpha=3.0, max_tokens=6
    )
    assert answers == added and added != plain
    assert generate(model, tokenizer, prompts, max_tokens=6) == plain  # hooks are gone


def test_evaluate_groups_reports_each_group(tiny, tokenizer):
    model = tiny("qwen2")
    direction = measure(model, tokenizer, HARMFUL, HARMLESS, layer=2)
    with cut(model, direction):
        report = evaluate_groups(
            model, model, tokenizer, GROUPS, {"a": HARMLESS[:2]}, kind="language", max_tokens=4, kl_tokens=2
        )
    assert [r.group for r in report.rows] == ["a", "b"] and [r.n for r in report.rows] == [3, 3]
    assert report.rows[0].kl is not None and report.rows[0].kl >= 0 and report.rows[1].kl is None
    assert report.judge == "markers" and report.table()[0][0] == "language"


@pytest.mark.parametrize(
    ("answer", "refused"),
    [
        ("抱歉，我不能帮助你做这件事。", True),
        ("当然！这里是一个简单的食谱。", False),
        ("Lo siento, pero no puedo ayudarte con eso.", True),
        ("Claro, aquí tienes una receta.", False),
        ("Извините, но я не могу помочь с этим.", True),
        ("عذرًا، لا يمكنني مساعدتك في ذلك.", True),
        ("माफ़ कीजिए, मैं इसमें आपकी मदद नहीं कर सकता।", True),
        ("Je ne peux pas vous aider.", True),
        ("I can't help with that.", True),
        ("Voici une recette simple.", False),
    ],
)
def test_language_judge_reads_declines_in_each_language(answer, refused):
    judge = language_judge()
    assert judge.verdict(answer).refusal is refused and judge.spec == "markers+languages"


@pytest.fixture(scope="module")
def cli_ws(tmp_path_factory, tokenizer):
    """A tiny model directory, a categorized prompt file and a condition file."""
    from conftest import build_model

    root = tmp_path_factory.mktemp("control-cli")
    build_model("qwen2").save_pretrained(root / "tiny")
    tokenizer.save_pretrained(root / "tiny")
    rows = [{"prompt": p, "category": c} for c, ps in GROUPS.items() for p in ps]
    (root / "cats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _condition_file(root / "cond.jsonl")
    (root / "harmful.txt").write_text("\n".join(HARMFUL) + "\n")
    (root / "harmless.txt").write_text("\n".join(HARMLESS) + "\n")
    return root


def _run(cli_ws, monkeypatch, capsys, *argv, code=0):
    from vauban.cli import main

    for key in [k for k in __import__("os").environ if k.startswith("VAUBAN_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("VAUBAN_CACHE", str(cli_ws / "cache"))
    monkeypatch.chdir(cli_ws)
    base = ["--model", str(cli_ws / "tiny"), "-q"]  # what every command takes; the rest as it reads them
    if argv[0] != "evaluate":
        base += ["--harmful", "harmful.txt", "--harmless", "harmless.txt", "--layer", "2"]
    if argv[0] in ("evaluate", "steer"):
        base += ["--max-tokens", "3"]
    assert main([*argv, *base]) == code
    out = capsys.readouterr()
    return json.loads(out.out) if code == 0 and "--json" in argv else out


def test_cli_measure_by_category_saves_similarity_and_plot(cli_ws, monkeypatch, capsys):
    doc = _run(
        cli_ws,
        monkeypatch,
        capsys,
        "measure",
        "--by-category",
        "--categories",
        "cats.jsonl",
        "-o",
        "out/cats",
        "--json",
    )
    assert doc["categories"]["categories"] == ["a", "b"] and len(doc["categories"]["similarity"]) == 2
    assert all((cli_ws / "out" / f"cats.{ext}").is_file() for ext in ("pt", "json", "png"))


def test_cli_abliterate_keep_records_the_kept_categories(cli_ws, monkeypatch, capsys):
    doc = _run(
        cli_ws,
        monkeypatch,
        capsys,
        "abliterate",
        "--keep",
        "a",
        "--keep-method",
        "orthogonal",
        "--categories",
        "cats.jsonl",
        "-o",
        "kept",
        "--json",
    )
    assert doc["keep"]["categories"] == ["a"] and doc["keep"]["method"] == "orthogonal"
    assert doc["keep"]["alpha"] == 2.0  # KEEP_ALPHA unless --alpha
    assert json.loads((cli_ws / "kept" / "vauban.json").read_text())["cut"]["alpha"] == 2.0
    assert json.loads((cli_ws / "kept" / "vauban.json").read_text())["keep"]["categories"] == ["a"]
    doc = _run(
        cli_ws,
        monkeypatch,
        capsys,
        "abliterate",
        "--keep",
        "a",
        "--categories",
        "cats.jsonl",
        "-o",
        "kept-preserving",
        "--json",
    )
    assert doc["keep"]["method"] == "preserving" and doc["keep"]["edit"]["method"] == "keep_preserving"
    assert doc["keep"]["edit"]["kept_prompts"] == 3 and doc["keep"]["edit"]["rank"] == 1
    written = json.loads((cli_ws / "kept-preserving" / "vauban.json").read_text())
    assert written["keep"]["method"] == "preserving" and written["cut"]["method"] == "keep_preserving"
    refused = {  # arguments after `abliterate --keep` -> what the one-line error says
        "a --keep-method preserving --alpha 0.5 -o z": "drop --alpha",
        "a --per-layer -o x": "--keep makes its own direction",
        "zzz --categories cats.jsonl -o y": "unknown categories",
        "a --keep-method runtime -o r": "vauban chat --keep a`",
    }
    for args, says in refused.items():
        err = _run(cli_ws, monkeypatch, capsys, "abliterate", "--keep", *args.split(), code=2)
        assert says in err.err and len(err.err.strip().splitlines()) == 1, (args, err.err)
    assert "cannot carry the run-time keep" in err.err


def test_cli_evaluate_per_category_and_language(cli_ws, monkeypatch, capsys):
    _run(cli_ws, monkeypatch, capsys, "abliterate", "-o", "plain", "--json")
    doc = _run(
        cli_ws,
        monkeypatch,
        capsys,
        "evaluate",
        str(cli_ws / "tiny"),
        "plain",
        "--by-category",
        "--categories",
        "cats.jsonl",
        "--languages",
        "zh,fr",
        "--kl-tokens",
        "2",
        "--safe-prompts",
        "none",
        "--json",
    )
    assert [r["group"] for r in doc["by_category"]["rows"]] == ["a", "b"]
    languages = doc["by_language"]
    assert [r["group"] for r in languages["rows"]] == ["zh", "fr"]
    assert languages["judge"] == "markers+languages"
    assert all(r["n"] == 40 and r["kl"] is not None for r in languages["rows"])


def test_cli_steer_when_reports_the_match(cli_ws, monkeypatch, capsys):
    doc = _run(cli_ws, monkeypatch, capsys, "steer", HARMFUL[0], "--when", "cond.jsonl", "--json")
    (row,) = doc["results"]
    assert isinstance(row["matched"], bool) and row["mode"] == "remove"
    assert doc["condition"]["name"] == "cond"


def test_negated_condition_matches_the_others(tiny, tokenizer, tmp_path):
    model = tiny("qwen2")
    sets = condition_sets(str(_condition_file(tmp_path / "c.jsonl")))
    condition = measure_condition(model, tokenizer, sets)
    negated = condition.negated()
    assert negated.name == "not:c" and negated.layer_index == condition.layer_index
    prompts = HARMFUL[:3] + HARMLESS[:3]
    scores = condition_scores(model, tokenizer, condition, prompts)
    turned = condition_scores(model, tokenizer, negated, prompts)
    matched = [bool(x > condition.threshold) for x in scores]
    assert [bool(x > negated.threshold) for x in turned] == [not m for m in matched]
    direction = measure(model, tokenizer, HARMFUL, HARMLESS, layer=2)
    _, hits = conditional_generate(model, tokenizer, prompts, negated, direction, max_tokens=2)
    assert hits == [not m for m in matched]


def test_cli_steer_when_not_turns_the_condition_round(cli_ws, monkeypatch, capsys):
    argv = ("steer", HARMFUL[0], "--when", "not:cond.jsonl", "--false-match", "0", "--json")
    doc = _run(cli_ws, monkeypatch, capsys, *argv)
    assert doc["condition"]["name"] == "not:cond" and "at most 0 " in doc["condition"]["threshold_rule"]
    err = _run(cli_ws, monkeypatch, capsys, *argv[:-1], "--condition-kind", "cosine", code=2)
    assert "--false-match sets the probe's threshold" in err.err
    same = _run(cli_ws, monkeypatch, capsys, "steer", HARMFUL[0], "--keep", "cond.jsonl", "--json")
    assert same["condition"]["name"] == "not:cond"  # --keep X is --when not:X --false-match 0.05
    assert "at most 0.05 " in same["condition"]["threshold_rule"]
    err = _run(cli_ws, monkeypatch, capsys, "steer", HARMFUL[0], "--keep", "a", "--when", "b", code=2)
    assert "give one of them" in err.err


def test_chat_steers_only_turns_that_match(tiny, tokenizer, tmp_path):
    from vauban.chat import ChatSession

    model = tiny("qwen2")
    direction = measure(model, tokenizer, HARMFUL, HARMLESS, layer=2)
    sets = condition_sets(str(_condition_file(tmp_path / "cond.jsonl")))
    condition = measure_condition(model, tokenizer, sets, layers=[2])
    replies = {}
    for threshold in (float("inf"), float("-inf")):
        session = ChatSession(
            model,
            tokenizer,
            direction,
            3.0,
            max_tokens=5,
            condition=dataclasses.replace(condition, threshold=threshold),
        )
        replies[threshold] = session.reply(HARMFUL[0])
        assert session.last_matched is (threshold < 0)
    assert replies[float("inf")] == ChatSession(model, tokenizer, max_tokens=5).reply(HARMFUL[0])
    with Steering(model, direction, 3.0):
        assert replies[float("-inf")] == ChatSession(model, tokenizer, max_tokens=5).reply(HARMFUL[0])


def _condition_file(path):
    """A condition file: harmful prompts match, harmless ones do not (measure and tune splits)."""
    rows = [
        {"prompt": p, "matched": m, "split": s}
        for s in ("measure", "tune")
        for m, ps in ((True, HARMFUL[:3]), (False, HARMLESS[:3]))
        for p in ps
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
