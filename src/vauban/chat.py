"""Talk to a model turn by turn, tokens streamed as they come, optionally steered live.

A :class:`ChatSession` keeps the conversation and formats it with the tokenizer's chat template
each turn (base models without one get a plain "User:/Assistant:" transcript). Steering is a
setting of the session, not of the model: each reply enters a :class:`~vauban.methods.steering.Steering`
context only while it generates, so ``alpha`` can change between turns and the model is never
left hooked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import TextStreamer

from .core.errors import VaubanError, check_alpha
from .direction.results import DirectionResult
from .judge import Judge, Verdict, get_judge, run_judge
from .methods.steering import Steering
from .model.arch import generator
from .runtime.activations import model_device
from .runtime.generating import check_max_tokens, greedy_config, stop_token_ids
from .text.formatting import Formatting, chat_messages, chat_template
from .text.prompts import check_tokenizer
from .text.reasoning import Decoder, budget, split_reasoning

if TYPE_CHECKING:
    from .methods.conditional import Condition


class _CallbackStreamer(TextStreamer):
    """transformers' streamer, handing each finished piece of text to a callback."""

    def __init__(self, tokenizer: Any, on_text: Callable[[str], None]) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self._on_text = on_text

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self._on_text(text)


@dataclass
class ChatSession:
    """A conversation with ``model``; ``direction`` + ``alpha`` steer every reply when set.
    With a ``judge`` (spec or :class:`vauban.judge.Judge`), each reply is judged and its verdict
    kept in ``last_verdict``."""

    model: nn.Module
    tokenizer: Any
    direction: DirectionResult | torch.Tensor | None = None
    alpha: float = 0.0
    max_tokens: int = 256
    history: list[dict[str, str]] = field(default_factory=list)
    judge: str | Judge | None = None
    last_verdict: Verdict | None = field(default=None, init=False)
    formatting: Formatting | None = None  # system prompt (global or the "chat" set's), template options
    condition: Condition | None = None  # steer only turns whose message matches (vauban.conditional)
    mode: str = "remove"  # with a condition: remove or add refusal on matched turns
    last_matched: bool | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        check_tokenizer(self.model, self.tokenizer)
        check_max_tokens(self.max_tokens)
        self.set_alpha(self.alpha)
        if self.judge is not None:
            self.judge = get_judge(self.judge)

    def set_alpha(self, alpha: float) -> None:
        """Change the steering strength for the next replies (0 turns steering off)."""
        alpha = check_alpha(alpha)
        if alpha != 0.0 and self.direction is None:
            raise VaubanError("steering needs a direction: pass --direction FILE (or measure one)")
        self.alpha = alpha

    @property
    def steered(self) -> bool:
        return self.direction is not None and self.alpha != 0.0

    def reset(self) -> None:
        self.history.clear()

    def _prompt_text(self, messages: list[dict[str, str]]) -> str:
        fmt = self.formatting or Formatting()
        system = fmt.system_for("chat")
        if chat_template(self.tokenizer):
            if system is not None:  # the first user turn carries it where the template has no system role
                first = chat_messages(self.tokenizer, messages[0]["content"], system)
                messages = [*first, *messages[1:]]
            return self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False, **fmt.template_options
            )
        turns = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
        return "\n".join([*([system] if system else []), *turns, "Assistant:"])

    def _steering(self, text: str) -> contextlib.AbstractContextManager[Any]:
        """This turn's steering: always when steered, or only when ``text`` matches the condition."""
        if not self.steered:
            return contextlib.nullcontext()
        if self.condition is None:
            return Steering(self.model, self.direction, self.alpha)  # type: ignore[arg-type]
        from .methods.conditional import condition_scores, steered

        score = float(condition_scores(self.model, self.tokenizer, self.condition, [text])[0])
        self.last_matched = score > self.condition.threshold
        if not self.last_matched:
            return contextlib.nullcontext()
        return steered(self.model, self.direction, self.mode, self.alpha)  # type: ignore[arg-type]

    @torch.inference_mode()
    def reply(self, text: str, on_text: Callable[[str], None] | None = None) -> str:
        """Answer ``text`` (greedy), streaming pieces to ``on_text``; the turn joins the history."""
        if not text.strip():
            raise VaubanError("empty message; type something, or /quit to leave")
        messages = [*self.history, {"role": "user", "content": text}]
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        encoded = self.tokenizer(
            self._prompt_text(messages), add_special_tokens=not has_template, return_tensors="pt"
        )
        device = model_device(self.model)
        stops = stop_token_ids(self.model, self.tokenizer)
        decoder = Decoder.make(self.tokenizer, self.formatting, stops, self.max_tokens)
        config = greedy_config(
            self.model, self.tokenizer, self.max_tokens + budget(self.tokenizer, self.formatting)
        )
        streamer = _CallbackStreamer(self.tokenizer, on_text) if on_text is not None else None
        with self._steering(text):
            out = generator(self.model).generate(
                input_ids=encoded["input_ids"].to(device),
                attention_mask=encoded["attention_mask"].to(device),
                generation_config=config,
                streamer=streamer,
            )
        answer = decoder(out[0, encoded["input_ids"].shape[1] :].tolist())
        reply = split_reasoning(answer)[1]  # templates keep replies, not thoughts, in the history
        self.history += [{"role": "user", "content": text}, {"role": "assistant", "content": reply}]
        if isinstance(self.judge, Judge):  # judges see the reply
            (self.last_verdict,) = run_judge(self.judge, [text], [reply])
        return answer
