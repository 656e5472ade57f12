"""Answers of thinking models: thoughts apart from the reply, one written form, reply budgets.

Thinking models write before they answer: Qwen3, SmolLM3, DeepSeek-R1 distills, Phi-4-reasoning,
OLMo-3-Think inside ``<think>…</think>``; GPT-OSS in the harmony format, an ``analysis`` message
(and maybe ``commentary``) before its ``final`` one. vauban keeps every answer whole, written in
one form whatever the model's own::

    <think>THOUGHTS</think>REPLY      (thought, then replied)
    <think>THOUGHTS                   (cut off while thinking: no reply yet)
    REPLY                             (no thinking)

:func:`split_reasoning` gives ``(thoughts, reply)``: judges see the reply, and the thoughts are
kept in the results and judged apart (a model that decides to refuse while thinking and then
answers is not one that refuses outright).

Budgets: a thinking model gets :data:`~vauban.text.formatting.THINKING_TOKENS` new tokens for its
thoughts on top of ``max_tokens``, and ``max_tokens`` counts the reply's tokens after them: the
reply is cut to ``max_tokens`` tokens, and generation stops a row once its reply has them
(:class:`ReplyBudget`). So a refusal count at ``max_tokens=64`` judges 64-token replies with
thinking on or off.

Stop tokens: GPT-OSS ends every harmony message with ``<|end|>``, the analysis included, and the
whole answer with ``<|return|>`` (or ``<|call|>``): ``<|end|>`` (Phi-3's end of turn) must not
stop it (:func:`stop_markers`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from transformers import StoppingCriteria

from .formatting import DEFAULT, THINKING_TOKENS, Formatting, chat_template, chat_text

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
HARMONY_FINAL = "<|channel|>final<|message|>"
SEED_OPEN, SEED_CLOSE = "<seed:think>", "</seed:think>"  # Seed-OSS's think block
_HARMONY_MARK = "<|channel|>"
_RESPONSE = re.compile(r"^\s*<response>|</response>\s*$")
_HARMONY_MESSAGE = re.compile(
    r"<\|channel\|>(?P<channel>[^<\s]*)[^<]*(?:<\|constrain\|>[^<]*)?<\|message\|>"
    r"(?P<body>.*?)(?=<\|end\|>|<\|return\|>|<\|call\|>|<\|start\|>|<\|channel\|>|$)",
    re.DOTALL,
)


@dataclass(frozen=True)
class Reasoning:
    """How a tokenizer's model thinks: ``kind`` is ``"none"``, ``"think"`` (``<think>…</think>``),
    ``"seed"`` (Seed-OSS's ``<seed:think>…</seed:think>``) or ``"harmony"`` (GPT-OSS channels);
    ``opened``: the generation prompt already opened the think block (DeepSeek-R1 style), so
    answers start inside it; ``thinks``: with this
    formatting the model may think at all (``False`` when the template closed the block)."""

    kind: str = "none"
    opened: bool = False
    thinks: bool = False


def reasoning(tokenizer: Any, formatting: Formatting | None = None) -> Reasoning:
    """Detect :class:`Reasoning` from the chat template, the vocabulary and a rendered prompt.
    The system prompt takes part: it can switch thinking (SmolLM3's ``/no_think``)."""
    template = chat_template(tokenizer)
    if not template:
        return Reasoning()
    if _HARMONY_MARK in template:
        return Reasoning("harmony", opened=False, thinks=True)
    if SEED_OPEN in template:  # thinks unless told a budget of 0 (then it writes no block)
        budget = (formatting or DEFAULT).template_options.get("thinking_budget")
        return Reasoning("seed", opened=False, thinks=budget != 0)
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    if THINK_CLOSE not in template and THINK_CLOSE not in vocab:
        return Reasoning()
    text = chat_text(tokenizer, "x", formatting or DEFAULT)
    tail = text[-64:]
    opened = tail.rfind(THINK_OPEN) > tail.rfind(THINK_CLOSE)
    closed = tail.rstrip().endswith(THINK_CLOSE)
    # a hybrid template (enable_thinking) thinks unless it closed the block; others think when
    # the prompt asks for <think> (Granite 3.3's thinking system prompt, Phi-4-reasoning's)
    asked = "enable_thinking" in template or THINK_OPEN in text
    return Reasoning("think", opened=opened, thinks=opened or (asked and not closed))


def budget(tokenizer: Any, formatting: Formatting | None = None) -> int:
    """New tokens left for thinking: the formatting's ``thinking_tokens``, else
    :data:`~vauban.text.formatting.THINKING_TOKENS` when the model may think, else 0."""
    fmt = formatting or DEFAULT
    if fmt.thinking_tokens is not None:
        return fmt.thinking_tokens
    return THINKING_TOKENS if reasoning(tokenizer, fmt).thinks else 0


def resolved(formatting: Formatting | None, tokenizer: Any) -> Formatting:
    """``formatting`` (default: the family's) with its defaults written out (the thinking budget),
    as recorded with a direction."""
    formatting = formatting or Formatting()
    return replace(formatting, thinking_tokens=budget(tokenizer, formatting))


def split_reasoning(text: str, tokenizer: Any = None) -> tuple[str, str]:
    """``(thoughts, reply)`` of an answer in vauban's form, raw ``<think>`` output, or raw
    harmony text (``<|channel|>analysis<|message|>…<|end|>…<|channel|>final<|message|>…``).
    No thinking: ``("", text)``; cut off while thinking: ``(thoughts, "")``. ``tokenizer`` is
    not needed (accepted so judges can pass what they have)."""
    del tokenizer
    if _HARMONY_MARK in text:
        parts: dict[bool, list[str]] = {True: [], False: []}  # final channel or not
        for match in _HARMONY_MESSAGE.finditer(text):
            parts[match["channel"] == "final"].append(match["body"].strip())
        return "\n".join(t for t in parts[False] if t), "\n".join(parts[True])
    close = text.find(THINK_CLOSE)
    if close >= 0:
        thoughts = text[:close]
        start = thoughts.find(THINK_OPEN)
        thoughts = thoughts[start + len(THINK_OPEN) :] if start >= 0 else thoughts
        reply = _RESPONSE.sub("", text[close + len(THINK_CLOSE) :])  # Granite wraps its reply
        return thoughts.strip(), reply.strip()
    stripped = text.lstrip()
    if stripped.startswith(THINK_OPEN):
        return stripped[len(THINK_OPEN) :].strip(), ""
    return "", text.strip()


def joined(thoughts: str, reply: str, finished: bool = True) -> str:
    """vauban's one form of an answer (see the module docstring)."""
    if not finished:
        return f"{THINK_OPEN}{thoughts}"
    return f"{THINK_OPEN}{thoughts}{THINK_CLOSE}{reply}" if thoughts else reply


def thinking_prefix(tokenizer: Any, thoughts: str, formatting: Formatting | None = None) -> str:
    """What the model writes before its reply, given its thoughts, in its own format: the text a
    teacher-forced reply follows (``""`` for a model that does not think). No thoughts gives the
    empty think block (harmony: the final channel's header), so a reference answer is scored
    where a thinking model's reply starts, not where it would open ``<think>``."""
    kind = reasoning(tokenizer, formatting)
    if kind.kind == "harmony":
        head = f"<|channel|>analysis<|message|>{thoughts}<|end|><|start|>assistant" if thoughts else ""
        return f"{head}{HARMONY_FINAL}"
    if kind.kind == "think" and kind.thinks:
        return f"{'' if kind.opened else THINK_OPEN}{thoughts or chr(10) * 2}{THINK_CLOSE}\n\n"
    if kind.kind == "seed" and kind.thinks:
        return f"{SEED_OPEN}{thoughts}{SEED_CLOSE}"
    return ""


def stop_markers(tokenizer: Any) -> tuple[set[str], set[str]]:
    """``(stop, never)``: end-of-answer markers of this tokenizer's format that must stop
    generation, and end-of-turn markers that must not. Harmony (GPT-OSS) ends an answer with
    ``<|return|>`` (or ``<|call|>`` for a tool call) and every message, the analysis included,
    with ``<|end|>``."""
    if _HARMONY_MARK in chat_template(tokenizer):
        return {"<|return|>", "<|call|>"}, {"<|end|>"}
    return set(), set()


def _find(tokens: Sequence[int], marker: Sequence[int], start: int = 0) -> int:
    """Index just past the first occurrence of ``marker`` in ``tokens[start:]``, or -1."""
    n = len(marker)
    if not n:
        return -1
    first = marker[0]
    for i in range(start, len(tokens) - n + 1):
        if tokens[i] == first and list(tokens[i : i + n]) == list(marker):
            return i + n
    return -1


@dataclass(frozen=True)
class Decoder:
    """Turns a row of generated ids into vauban's form of the answer (module docstring):
    stops at the first stop token, splits off the thoughts, cuts the reply to ``reply_tokens``."""

    tokenizer: Any
    kind: Reasoning
    stops: frozenset[int]
    reply_tokens: int
    marker: tuple[int, ...] = ()  # ids that end the thoughts: </think>, or harmony's final header

    @classmethod
    def make(
        cls, tokenizer: Any, formatting: Formatting | None, stops: Sequence[int], reply_tokens: int
    ) -> Decoder:
        kind = reasoning(tokenizer, formatting)
        text = {"think": THINK_CLOSE, "seed": SEED_CLOSE, "harmony": HARMONY_FINAL}.get(kind.kind)
        marker = tuple(tokenizer.encode(text, add_special_tokens=False)) if text else ()
        return cls(tokenizer, kind, frozenset(stops), reply_tokens, marker)

    def _text(self, ids: Sequence[int], keep_special: bool = False) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=not keep_special)

    def __call__(self, tokens: Sequence[int]) -> str:
        end = next((i for i, t in enumerate(tokens) if t in self.stops), len(tokens))
        tokens = list(tokens[:end])
        if self.kind.kind == "none" or not self.kind.thinks:
            return self._text(tokens[: self.reply_tokens]).strip()
        cut = _find(tokens, self.marker)
        if self.kind.kind == "harmony":
            raw = self._text(tokens[: cut if cut >= 0 else len(tokens)], keep_special=True)
            thoughts, _ = split_reasoning(raw + ("" if cut >= 0 else "<|end|>"))
            thoughts = _clean(self.tokenizer, thoughts)
        else:
            thoughts = self._text(tokens[: cut - len(self.marker)] if cut >= 0 else tokens)
            opening = SEED_OPEN if self.kind.kind == "seed" else THINK_OPEN
            thoughts = thoughts.replace(opening, "").strip()
            started = self._text(tokens[:4], keep_special=True).lstrip().startswith(opening)
            if cut < 0 and not self.kind.opened and not started:
                return self._text(tokens[: self.reply_tokens]).strip()  # it answered without thinking
        if cut < 0:
            return joined(thoughts, "", finished=False)
        while cut < len(tokens) and not self._text(tokens[cut : cut + 1]).strip():
            cut += 1  # the blank line after </think> is not part of the reply's budget
        reply = self._text(tokens[cut : cut + self.reply_tokens]).strip()
        return joined(thoughts, reply)

    def stopping(self, prompt_width: int) -> ReplyBudget | None:
        """A criterion ending each row once its reply has ``reply_tokens`` tokens."""
        return ReplyBudget(self.marker, prompt_width, self.reply_tokens) if self.marker else None


class ReplyBudget(StoppingCriteria):
    """``model.generate`` criterion: a row is done when ``reply_tokens`` tokens followed the end
    of its thoughts (``marker``), plus :data:`SLACK` for the blank line a model writes first
    (which :class:`Decoder` skips). Rows that never end their thoughts run to the full budget."""

    SLACK = 2

    def __init__(self, marker: Sequence[int], prompt_width: int, reply_tokens: int) -> None:
        self.marker = list(marker)
        self.width = prompt_width
        self.reply_tokens = reply_tokens
        self._ends: dict[int, int] = {}

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        rows = input_ids[:, self.width :].tolist()
        for row, tokens in enumerate(rows):
            end = self._ends.get(row)
            if end is None:
                found = _find(tokens, self.marker, max(0, len(tokens) - len(self.marker) - 1))
                if found < 0:
                    continue
                end = self._ends[row] = found
            done[row] = len(tokens) - end >= self.reply_tokens + self.SLACK
        return done  # type: ignore[return-value]


def _clean(tokenizer: Any, text: str) -> str:
    """``text`` without the tokenizer's special tokens (harmony headers left in the thoughts)."""
    for token in getattr(tokenizer, "all_special_tokens", []):
        text = text.replace(token, " ")
    text = re.sub(r"<\|[a-z_]+\|>", " ", text)
    return re.sub(r"[ \t]+", " ", text).strip()


def with_thinking(formatting: Formatting | None, on: bool) -> Formatting:
    """``formatting`` with thinking switched on or off through the usual template options
    (``enable_thinking`` for Qwen3/SmolLM3, ``thinking`` for Granite)."""
    fmt = formatting or DEFAULT
    return replace(fmt, template_options={**fmt.template_options, "enable_thinking": on, "thinking": on})
