"""How prompts become the text a chat model sees, and how its answers split into thinking and reply.

One frozen value, :class:`Formatting`, says everything vauban adds around a prompt: a system
prompt (one for every prompt set, or one per set: ``harmful``, ``harmless``, ``eval``...),
keyword arguments for the chat template (``enable_thinking=False``, ``reasoning_effort="low"``)
and the token budget left for thinking. Every step that formats prompts (measure, probe,
evaluate, steer, chat, optimize, refine, judges that chat with a model) takes it as
``formatting=``; a measured direction records the formatting it was measured with, and exports
record it in ``vauban.json``, so the cut model is evaluated and used the way it was measured.

Per-family defaults, detected from the tokenizer (its chat template and vocabulary) rather than
from a model-type name, so fine-tunes that change the template are handled too:

- **system prompt**: none (the template's own default, if it has one, applies). Templates that
  reject a system role (Gemma 1/2) get it folded into the user turn as ``system + "\\n\\n" +
  prompt``, which is what Gemma 3's own template does; base models without a template get the
  same text with no markers.
- **template options**: none, so the template's defaults hold: Qwen3 and SmolLM3 think
  (``enable_thinking`` defaults to true), Granite 3.3 does not (``thinking`` defaults to
  false), GPT-OSS reasons at ``reasoning_effort="medium"``.
- **thinking budget**: :data:`THINKING_TOKENS` extra new tokens whenever the formatted prompt
  lets the model think (a ``<think>`` template whose generation prompt does not close the think
  block, or GPT-OSS's harmony format), else 0. ``max_tokens`` then counts the *reply's* tokens
  after the thinking, so answers are judged at the same length with thinking on or off.

How answers of thinking models are split into thoughts and reply is :mod:`vauban.text.reasoning`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import VaubanError, check_int

THINKING_TOKENS = 1024
"""New tokens a thinking model may spend before its reply (default; ``thinking_tokens=`` sets it)."""

PROMPT_SETS = (
    "harmful",
    "harmless",
    "eval",
    "reference",
    "validation",
    "selection",
    "probe",
    "steer",
    "chat",
)
"""Names of the prompt sets a per-set system prompt can target."""


@dataclass(frozen=True)
class Formatting:
    """What vauban adds around a prompt; ``None`` / empty means the family default (module
    docstring). ``system_prompts`` maps a prompt set's name (:data:`PROMPT_SETS`) to its own
    system prompt, which wins over ``system_prompt`` for that set."""

    system_prompt: str | None = None
    system_prompts: Mapping[str, str] = field(default_factory=dict)
    template_options: Mapping[str, Any] = field(default_factory=dict)
    thinking_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            raise VaubanError(f"system_prompt must be text, got {type(self.system_prompt).__name__}")
        for name, text in dict(self.system_prompts).items():
            if name not in PROMPT_SETS:
                raise VaubanError(
                    f"no prompt set {name!r} for a system prompt; choose one of {', '.join(PROMPT_SETS)}"
                )
            if not isinstance(text, str):
                raise VaubanError(f"the system prompt of {name!r} must be text, got {type(text).__name__}")
        for key in dict(self.template_options):
            if not isinstance(key, str) or not key.isidentifier():
                raise VaubanError(f"template option {key!r} is not a keyword name; use KEY=VALUE")
        try:
            json.dumps(dict(self.template_options))
        except TypeError as err:
            raise VaubanError(
                f"template options must be JSON values (text, numbers, booleans): {err}"
            ) from None
        if self.thinking_tokens is not None:
            check_int("thinking_tokens", self.thinking_tokens, 0)
        object.__setattr__(self, "system_prompts", dict(self.system_prompts))
        object.__setattr__(self, "template_options", dict(self.template_options))

    def system_for(self, prompt_set: str | None = None) -> str | None:
        """The system prompt of ``prompt_set`` (its own, else the global one, else none)."""
        text = self.system_prompts.get(prompt_set or "", self.system_prompt)
        return text or None

    def over(self, base: Formatting | None) -> Formatting:
        """This formatting with ``base`` filling in what it leaves unset (a saved direction's
        formatting under the command line's, say); options merge key by key."""
        if base is None:
            return self
        return Formatting(
            system_prompt=self.system_prompt if self.system_prompt is not None else base.system_prompt,
            system_prompts={**base.system_prompts, **self.system_prompts},
            template_options={**base.template_options, **self.template_options},
            thinking_tokens=base.thinking_tokens if self.thinking_tokens is None else self.thinking_tokens,
        )

    def record(self) -> dict[str, Any]:
        return {
            "system_prompt": self.system_prompt,
            "system_prompts": dict(self.system_prompts),
            "template_options": dict(self.template_options),
            "thinking_tokens": self.thinking_tokens,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> Formatting | None:
        if record is None:
            return None
        if not isinstance(record, Mapping):
            raise VaubanError(f"a formatting record must be a JSON object, got {type(record).__name__}")
        known = {"system_prompt", "system_prompts", "template_options", "thinking_tokens"}
        return cls(**{k: v for k, v in record.items() if k in known and v is not None})

    def summary(self) -> str:
        parts = []
        if self.system_prompt:
            parts.append(f"system prompt {self.system_prompt[:40]!r}")
        parts += [f"{name} system prompt {text[:40]!r}" for name, text in self.system_prompts.items()]
        parts += [f"{k}={v!r}" for k, v in self.template_options.items()]
        if self.thinking_tokens is not None:
            parts.append(f"thinking budget {self.thinking_tokens} tokens")
        return "Formatting: " + (", ".join(parts) or "family defaults")


DEFAULT = Formatting()


def formatting_for(direction: Any, formatting: Formatting | None) -> Formatting | None:
    """``formatting`` over the one ``direction`` was measured with (either may be missing;
    ``direction`` may also be a saved :class:`Formatting`): a direction's formatting is reused
    unless overridden, key by key."""
    saved = direction if isinstance(direction, Formatting) else getattr(direction, "formatting", None)
    return saved if formatting is None else formatting.over(saved)


def parse_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` from the command line: VALUE as JSON when it parses (``false``, ``3``,
    ``"x"``), else as text (``reasoning_effort=low``)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise VaubanError(f"template option {text!r} is not KEY=VALUE (e.g. enable_thinking=false)")
    value = value.strip()
    lowered = value.lower()
    if lowered in ("true", "false", "yes", "no", "on", "off"):
        return key, lowered in ("true", "yes", "on")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def parse_set_prompt(text: str) -> tuple[str, str]:
    """``SET=TEXT`` (a per-set system prompt from the command line)."""
    name, sep, prompt = text.partition("=")
    if not sep or name.strip() not in PROMPT_SETS:
        raise VaubanError(f"{text[:40]!r} is not SET=TEXT with SET one of {', '.join(PROMPT_SETS)}")
    return name.strip(), prompt


# ---------------------------------------------------------------------------------------------
# the chat template


def chat_template(tokenizer: Any) -> str:
    """The tokenizer's chat template source (the default one of several), or "" for none."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: the default one formats chats
        template = template.get("default") or next(iter(template.values()), None)
    return template if isinstance(template, str) else ""


def _render(tokenizer: Any, messages: list[dict[str, str]], options: Mapping[str, Any]) -> str:
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **options)


def chat_messages(tokenizer: Any, prompt: str, system: str | None) -> list[dict[str, str]]:
    """The conversation for one prompt; a system prompt the template cannot take is folded
    into the user turn (see the module docstring)."""
    return _messages(prompt, system, system is not None and rejects_system(tokenizer))


def _messages(prompt: str, system: str | None, fold: bool) -> list[dict[str, str]]:
    if system is None:
        return [{"role": "user", "content": prompt}]
    if fold:
        return [{"role": "user", "content": f"{system}\n\n{prompt}"}]
    return [{"role": "system", "content": system}, {"role": "user", "content": prompt}]


def rejects_system(tokenizer: Any) -> bool:
    """Whether the chat template raises on a system message (Gemma 1/2 do)."""
    template = chat_template(tokenizer)
    if not template:
        return False
    try:
        _render(tokenizer, [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}], {})
    except Exception as err:  # jinja2's TemplateError from raise_exception, or what a template raises
        return "system" in str(err).lower() or "role" in str(err).lower()
    return False


def chat_text(
    tokenizer: Any, prompt: str, formatting: Formatting | None = None, prompt_set: str | None = None
) -> str:
    """The prompt as the model sees it in a chat: system prompt, user turn, generation prompt.

    Models without a chat template (base models) get the raw prompt (after the system prompt,
    if any), which is what they were trained to continue.
    """
    fmt = formatting or DEFAULT
    system = fmt.system_for(prompt_set)
    if not chat_template(tokenizer):
        return prompt if system is None else f"{system}\n\n{prompt}"
    messages = chat_messages(tokenizer, prompt, system)
    try:
        return _render(tokenizer, messages, fmt.template_options)
    except TypeError as err:
        raise VaubanError(f"the chat template rejected the template options: {err}") from None


def chat_texts(
    tokenizer: Any,
    prompts: Sequence[str],
    formatting: Formatting | None = None,
    prompt_set: str | None = None,
) -> list[str]:
    """:func:`chat_text` of many prompts (the system-role check runs once)."""
    fmt = formatting or DEFAULT
    system = fmt.system_for(prompt_set)
    if system is None or not chat_template(tokenizer):
        return [chat_text(tokenizer, p, fmt, prompt_set) for p in prompts]
    fold = rejects_system(tokenizer)
    try:
        return [_render(tokenizer, _messages(p, system, fold), fmt.template_options) for p in prompts]
    except TypeError as err:
        raise VaubanError(f"the chat template rejected the template options: {err}") from None
