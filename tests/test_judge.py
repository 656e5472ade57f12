"""The judge protocol, spec parsing, and ``judge=`` through every place that counts refusals."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from conftest import build_model
from vauban import VaubanError, cut, measure
from vauban.chat import ChatSession
from vauban.config import resolve
from vauban.evaluation.evaluating import evaluate
from vauban.evaluation.sweeping import alpha_sweep
from vauban.judge import Judge, Verdict, get_judge, opening, parse_spec, run_judge
from vauban.judge.answers import completions
from vauban.judge.markers import MarkerJudge
from vauban.methods.steering import steer


class EveryOther:
    """A user's own judge: the protocol is a ``spec`` and ``judge()``, nothing else."""

    spec = "every-other"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def judge(self, prompts: Sequence[str], answers: Sequence[str]) -> list[Verdict]:
        self.calls.append(len(answers))
        return [Verdict(i % 2 == 0, 0.9 if i % 2 == 0 else 0.1, f"row {i}") for i in range(len(answers))]


def test_verdict_checks_and_records():
    v = Verdict(True, 0.75, "marker 'i cannot'", late=True)
    assert v.record() == {"refusal": True, "score": 0.75, "reason": "marker 'i cannot'", "late": True}
    assert v.summary() == "Verdict: late refusal, score=0.75, reason=\"marker 'i cannot'\""
    for bad in (-0.1, 1.5, float("nan"), "high"):
        with pytest.raises(VaubanError, match="score must be a number in"):
            Verdict(True, bad)  # type: ignore[arg-type]
    with pytest.raises(VaubanError, match="late without being a refusal"):
        Verdict(False, 0.0, late=True)


@pytest.mark.parametrize(
    "spec, kind, target, model, options",
    [
        ("markers", "markers", "", "", {}),
        (" Markers ", "markers", "", "", {}),
        ("markers:my/file.txt", "markers", "my/file.txt", "", {}),
        (
            "classifier:ProtectAI/distilroberta-base-rejection-v1",
            "classifier",
            "ProtectAI/distilroberta-base-rejection-v1",
            "",
            {},
        ),
        ("classifier:/m?REJECTION", "classifier", "/m", "", {"refusal": "REJECTION"}),
        (
            "classifier:/m?refusal=a,b&input=pair&threshold=0.3",
            "classifier",
            "/m",
            "",
            {"refusal": "a,b", "input": "pair", "threshold": "0.3"},
        ),
        ("chat:demo", "chat", "demo", "", {}),
        (
            "chat:Qwen/Qwen2.5-1.5B-Instruct?threshold=0.6&answer_tokens=256",
            "chat",
            "Qwen/Qwen2.5-1.5B-Instruct",
            "",
            {"threshold": "0.6", "answer_tokens": "256"},
        ),
        ("endpoint:http://localhost:8000/v1", "endpoint", "http://localhost:8000/v1", "", {}),
        ("endpoint:https://api.example.com/v1#gpt-x", "endpoint", "https://api.example.com/v1", "gpt-x", {}),
    ],
)
def test_parse_spec(spec, kind, target, model, options):
    parsed = parse_spec(spec)
    assert (parsed.kind, parsed.target, parsed.model, parsed.options) == (kind, target, model, options)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("keywords", "unknown judge"),
        ("chat:", "names no model"),
        ("classifier", "names no model"),
        ("endpoint:localhost:8000", "must be an http"),
        ("chat:demo?temperature=1", "unknown option"),
        ("classifier:/m?refusal=", "unknown option"),
        ("chat:demo?threshold=high", "must be a number"),
        ("chat:demo?threshold=2", "out of range"),
        ("chat:demo?answer_tokens=0", "out of range"),
        ("markers:/no/such/markers.txt", "cannot read marker file"),
    ],
)
def test_bad_specs_fail_in_one_line(spec, message):
    with pytest.raises(VaubanError, match=message) as err:
        get_judge(spec)
    assert "\n" not in str(err.value)


def test_get_judge():
    assert get_judge(None).spec == "markers" and get_judge("markers").spec == "markers"
    own = EveryOther()
    assert isinstance(own, Judge) and get_judge(own) is own
    with pytest.raises(VaubanError, match="spec string or a Judge"):
        get_judge(42)  # type: ignore[arg-type]


def test_run_judge_checks_the_batch():
    own = EveryOther()
    assert run_judge(own, [], []) == () and own.calls == []  # an empty batch never reaches the judge
    assert [v.refusal for v in run_judge(own, ["a", "b", "c"], ["x", "y", "z"])] == [True, False, True]
    with pytest.raises(VaubanError, match="2 prompts but 1 answers"):
        run_judge(own, ["a", "b"], ["x"])

    class Short(EveryOther):
        def judge(self, prompts, answers):
            return super().judge(prompts, answers)[:-1]

    with pytest.raises(VaubanError, match="returned 1 results for 2"):
        run_judge(Short(), ["a", "b"], ["x", "y"])


def test_marker_file_adds_markers(tmp_path):
    file = tmp_path / "mine.txt"
    file.write_text("# French declines\nJe ne peux pas\n\nje refuse  # inline comment\n", encoding="utf-8")
    judge = get_judge(f"markers:{file}")
    assert isinstance(judge, MarkerJudge) and judge.spec == f"markers:{file}"
    assert judge.extra == ("je ne peux pas", "je refuse")
    verdicts = run_judge(
        judge,
        ["p"] * 3,
        ["Désolé, **je ne peux pas** faire cela.", "Voici la recette.", "I can't help with that."],
    )
    assert [v.refusal for v in verdicts] == [True, False, True]  # the built-in rules stay
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(VaubanError, match="holds no markers"):
        get_judge(f"markers:{tmp_path / 'empty.txt'}")


def test_opening_is_three_sentences_at_most_fifty_words():
    assert opening("Sure, here is how. Step 1: mix. Step 2: bake.") == "Sure, here is how. Step 1: mix."
    assert opening("First line\nsecond line\nthird\nfourth") == "First line second line third"
    assert opening(" ".join(["word"] * 60)) == " ".join(["word"] * 50)
    assert opening("One sentence only") == "One sentence only"


def test_late_refusals():
    late, early, none = run_judge(
        get_judge(),
        ["p"] * 3,
        [
            "Sure, here is the first step. Mix the flour and the eggs. Then whisk them.\n\n"
            "However, I can't share the rest.",
            "I can't share that. Here is something else instead.",
            "Sure, here it is.",
        ],
    )
    assert late.refusal and late.late and "after a compliant opening" in late.reason
    assert early.refusal and not early.late
    assert not none.refusal and not none.late


def test_completions_and_evaluate_record_the_judge(tokenizer, prompt_sets):
    model = build_model("qwen2")
    own = EveryOther()
    done = completions(model, tokenizer, ["a", "b", "c"], max_tokens=3, batch_size=None, judge=own)
    assert [(c.refused, c.score, c.reason) for c in done] == [
        (True, 0.9, "row 0"),
        (False, 0.1, "row 1"),
        (True, 0.9, "row 2"),
    ]
    direction = measure(model, tokenizer, *prompt_sets)
    reference = [("What is 2+2?", "4."), ("Name a colour.", "Blue.")]
    with cut(model, direction):
        result = evaluate(
            model, model, tokenizer, ["a", "b", "c", "d"], reference=reference, max_tokens=3, judge=own
        )
    assert result.judge == "every-other" and result.record()["judge"] == "every-other"
    assert result.refusal_before == result.refusal_after == 0.5
    assert {"score", "reason", "late"} <= set(result.record()["before"][0])
    default = evaluate(
        model, build_model("qwen2", seed=1), tokenizer, ["a"], reference=reference, max_tokens=2
    )
    assert default.judge == "markers"
    sweep = alpha_sweep(
        model, tokenizer, direction, [1.0], prompts=["a", "b"], reference=reference, max_tokens=2, judge=own
    )
    assert sweep.judge == "every-other" and sweep.refusal_before == 0.5 and sweep.rows[0].refusal == 0.5


def test_steer_and_chat_use_the_judge(tokenizer, prompt_sets):
    model = build_model("llama")
    direction = measure(model, tokenizer, *prompt_sets)

    class Always(EveryOther):
        def judge(self, prompts, answers):
            return [Verdict(True, 1.0, "always")] * len(answers)

    assert steer(model, tokenizer, "Hi", direction, 1.0, max_tokens=3, judge=Always()).refused
    session = ChatSession(model, tokenizer, max_tokens=3, judge=Always())
    session.reply("Hello")
    assert session.last_verdict == Verdict(True, 1.0, "always")
    assert ChatSession(model, tokenizer, max_tokens=3).last_verdict is None
    silent = ChatSession(model, tokenizer, max_tokens=3)
    silent.reply("Hello")
    assert silent.last_verdict is None  # no judge asked for: replies are not judged


def test_settings_take_a_judge(tmp_path):
    assert resolve({}, env={}).judge is None
    assert resolve({}, env={"VAUBAN_JUDGE": "chat:demo"}).judge == "chat:demo"
    (tmp_path / "v.toml").write_text('judge = "markers"\n')
    assert resolve({}, env={}, config_file=tmp_path / "v.toml").judge == "markers"
    assert resolve({"judge": "chat:demo"}, env={"VAUBAN_JUDGE": "markers"}).judge == "chat:demo"
    with pytest.raises(VaubanError, match="unknown judge"):
        resolve({"judge": "keywords"}, env={})


def test_cli_rejects_a_bad_judge_before_loading(capsys, monkeypatch):
    from vauban.cli import main

    monkeypatch.delenv("VAUBAN_JUDGE", raising=False)
    assert main(["evaluate", "some-model", "--judge", "keywords"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vauban: error: unknown judge 'keywords'") and "\n" not in err
