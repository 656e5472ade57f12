"""Refusal judges: one protocol, four kinds, chosen by a spec string.

A judge reads a batch of (prompt, answer) pairs and returns one :class:`Verdict` per answer:
``refusal`` (bool), ``score`` (in [0, 1]), ``reason`` and ``late`` (see :mod:`.base`). Every
place that counts refusals takes ``judge=`` (a spec, a judge, or ``None`` for the default) and
the CLI takes ``--judge SPEC`` (also ``VAUBAN_JUDGE`` / ``judge = "..."`` in ``vauban.toml``).

Specs:

- ``markers`` (the default): documented refusal phrases, pure Python, no model
  (:mod:`.markers`); ``markers:FILE`` adds the phrases of a user's marker file.
- ``classifier:ID[?OPTIONS]``: a Hugging Face sequence-classification checkpoint, local directory
  or hub id (:mod:`.classifier`); options ``refusal=LABEL,LABEL`` (the labels that mean refusal;
  a bare ``?LABEL,LABEL`` says the same), ``input=answer|pair|chat`` (what the checkpoint
  reads), ``threshold=X``.
- ``chat:MODEL[?OPTIONS]``: any chat model vauban can load (``chat:demo`` for the demo model),
  asked a documented rubric; the score is the probability of its verdict token in one forward
  pass (:mod:`.chat`, :mod:`.rubric`); options ``threshold=X``, ``answer_tokens=N``.
- ``learned[?threshold=X]``: a probe shipped with vauban over the demo model's hidden states
  (Qwen2.5-Coder-0.5B-Instruct), tiered over the markers, offline on a CPU (:mod:`.learned`;
  ``pip install 'vauban[judge-learned]'``); its verdicts also carry a ``category`` (compliance,
  full/partial/late refusal, evasion). Not the default: its accuracy (``learned/card.json``,
  ``docs/benchmarks.md``) ties the markers' on XSTest and its false alarms on compliant answers to
  harmful prompts are three times theirs, which would inflate every cut's refusal count.
- ``endpoint:URL[#MODEL]``: the same rubric sent to an OpenAI-compatible server through the
  ``openai`` client (:mod:`.endpoint`; ``pip install 'vauban[judge]'``); ``OPENAI_API_KEY`` is
  sent when set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import VaubanError
from .base import Judge, Verdict, opening, run_judge

DEFAULT_SPEC = "markers"
KINDS = ("markers", "classifier", "chat", "endpoint", "learned")

__all__ = [
    "DEFAULT_SPEC",
    "Judge",
    "Spec",
    "Verdict",
    "check_spec",
    "get_judge",
    "opening",
    "parse_spec",
    "run_judge",
]


@dataclass(frozen=True)
class Spec:
    """A parsed judge spec: ``kind``, its ``target`` (file, checkpoint, model or URL), the
    endpoint's ``model`` and ``options`` (``key=value`` after ``?``)."""

    kind: str
    target: str = ""
    model: str = ""
    options: dict[str, str] = field(default_factory=dict)


_OPTIONS = {
    "markers": (),
    "classifier": ("refusal", "input", "threshold"),
    "chat": ("threshold", "answer_tokens"),
    "endpoint": (),
    "learned": ("threshold",),
}


def parse_spec(spec: str) -> Spec:
    """Split a spec string into its parts; a malformed one is a one-line error naming the fix."""
    text = spec.strip()
    kind, _, target = text.partition(":")
    kind = kind.strip().lower()
    if kind.startswith("learned?"):  # learned?threshold=X
        kind, target = "learned", text[len("learned") :]
    usage = (
        "use markers, markers:FILE, learned, classifier:ID[?refusal=LABEL], chat:MODEL or "
        "endpoint:URL[#model]"
    )
    if kind not in KINDS:
        raise VaubanError(f"unknown judge {spec!r}; {usage}")
    if kind == "learned" and target.strip() and not target.startswith("?"):
        raise VaubanError(f"judge {spec!r}: learned takes no model; use learned or learned?threshold=X")
    if kind not in ("markers", "learned") and not target.strip():
        raise VaubanError(f"judge {spec!r} names no {'URL' if kind == 'endpoint' else 'model'}; {usage}")
    if kind == "endpoint":
        url, _, model = target.partition("#")
        if not url.startswith(("http://", "https://")):
            raise VaubanError(
                f"judge {spec!r}: the endpoint must be an http(s) URL, e.g. "
                "endpoint:http://localhost:8000/v1#my-model"
            )
        return Spec(kind, url, model.strip())
    target, _, query = target.partition("?")
    options: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if not eq and kind == "classifier" and not options:
            key, value = "refusal", item  # classifier:ID?LABEL,LABEL
        if key not in _OPTIONS[kind] or not value:
            known = ", ".join(f"{k}=..." for k in _OPTIONS[kind]) or "none"
            raise VaubanError(f"judge {spec!r}: unknown option {item!r}; options of {kind}: {known}")
        options[key] = value
    return Spec(kind, target.strip(), "", options)


def check_spec(spec: str) -> Spec:
    """Parse ``spec`` and check what can be checked without loading a model (the marker file
    exists and reads, numeric options are numbers), so a typo fails in a second."""
    parsed = parse_spec(spec)
    if parsed.kind == "markers" and parsed.target:
        from .markers import read_marker_file

        read_marker_file(parsed.target)
    for key in ("threshold", "answer_tokens"):
        if key in parsed.options:
            number_option(parsed, key, float if key == "threshold" else int)
    if parsed.options.get("input", "answer") not in ("answer", "pair", "chat"):
        raise VaubanError(f"judge {spec!r}: input must be answer, pair or chat")
    return parsed


def number_option(spec: Spec, key: str, kind: type, default: Any = None) -> Any:
    """Option ``key`` of ``spec`` as an int or a float (threshold in [0, 1], counts >= 1)."""
    if key not in spec.options:
        return default
    raw = spec.options[key]
    what, bounds = ("a number", "0 to 1") if kind is float else ("an integer", ">= 1")
    try:
        value = kind(raw)
    except ValueError:
        raise VaubanError(f"judge option {key}={raw!r} must be {what}") from None
    if (kind is float and not 0 <= value <= 1) or (kind is int and value < 1):
        raise VaubanError(f"judge option {key}={raw!r} out of range ({bounds})")
    return value


def get_judge(spec: str | Judge | None = None, **load_options: Any) -> Judge:
    """The judge a spec names (``None``: the default marker judge); a :class:`Judge` is returned
    as it is. ``load_options`` (``device``, ``dtype``) go to the model of a ``chat:`` or
    ``classifier:`` judge."""
    if spec is None:
        from .markers import DEFAULT

        return DEFAULT
    if not isinstance(spec, str):
        if isinstance(spec, Judge):
            return spec
        raise VaubanError(f"judge must be a spec string or a Judge, got {type(spec).__name__}")
    parsed = check_spec(spec)
    if parsed.kind == "markers":
        from .markers import DEFAULT, MarkerJudge

        return MarkerJudge.from_file(Path(parsed.target)) if parsed.target else DEFAULT
    if parsed.kind == "classifier":
        from .classifier import ClassifierJudge

        return ClassifierJudge.load(parsed.target, parsed.options, spec.strip(), **load_options)
    if parsed.kind == "learned":
        from .learned import LearnedJudge

        threshold = number_option(parsed, "threshold", float)
        return LearnedJudge.load(spec.strip(), threshold, device=load_options.get("device"))
    if parsed.kind == "chat":
        from .chat import ChatJudge

        return ChatJudge.load(parsed.target, spec.strip(), **load_options)
    from .endpoint import EndpointJudge

    return EndpointJudge(parsed.target, parsed.model, spec=spec.strip())
