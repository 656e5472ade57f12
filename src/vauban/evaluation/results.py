"""What an evaluation returns: each answer with its verdict, and the original-vs-cut report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..capability import CapabilityScore
from ..judge.answers import Completion


def thinking_refusal(completions: tuple[Completion, ...]) -> float | None:
    """Share of ``completions`` whose thoughts read as a refusal, over all of them (None when
    none thought): reported apart from the replies' refusal rate."""
    if not any(c.thinking is not None for c in completions):
        return None
    return sum(bool(c.thinking_refused) for c in completions) / len(completions)


def thinking_unfinished(completions: tuple[Completion, ...]) -> float | None:
    """Share of ``completions`` still thinking when the thinking budget ran out, over all of them
    (None when none thought): a cut that makes a thinking model loop shows here."""
    if not any(c.thinking is not None for c in completions):
        return None
    return sum(c.thinking_ended is False for c in completions) / len(completions)


def percent(rate: float) -> str:
    return f"{rate * 100:.0f}%"


@dataclass(frozen=True)
class EvalResult:
    """Original vs modified: refusal on harmful prompts, perplexity and KL on harmless answers.

    ``kl`` is KL(original ‖ modified) averaged over every answer position of the harmless
    reference set; ``first_token_kl`` only at the first answer position (what other tools
    publish). Per-prompt answers and verdicts are in ``before`` and ``after``; ``judge`` is the
    spec of the judge that counted the refusals.
    """

    refusal_before: float
    refusal_after: float
    perplexity_before: float
    perplexity_after: float
    kl: float
    first_token_kl: float
    n_prompts: int
    n_reference: int
    before: tuple[Completion, ...] = field(repr=False)
    after: tuple[Completion, ...] = field(repr=False)
    max_tokens: int = 0  # answer tokens the refusals were judged on
    judge: str = "markers"
    late_before: float = 0.0  # share of harmful prompts refused late (a part of refusal_*)
    late_after: float = 0.0
    over_refusal_before: float | None = None  # refusal rate on safe prompts that sound unsafe
    over_refusal_after: float | None = None
    n_safe: int = 0
    safe_before: tuple[Completion, ...] = field(default=(), repr=False)
    safe_after: tuple[Completion, ...] = field(default=(), repr=False)
    k_token_kl: float | None = None  # KL over the first kl_tokens tokens of the original's answers
    kl_tokens: int = 0
    capability_before: tuple[CapabilityScore, ...] = field(default=(), repr=False)
    capability_after: tuple[CapabilityScore, ...] = field(default=(), repr=False)
    seconds: dict[str, float] = field(default_factory=dict, compare=False, repr=False)

    @property
    def thinking_refusal_before(self) -> float | None:
        """Share of the original's answers whose *thoughts* read as a refusal (None: no thinking)."""
        return thinking_refusal(self.before)

    @property
    def thinking_refusal_after(self) -> float | None:
        return thinking_refusal(self.after)

    @property
    def thinking_unfinished_before(self) -> float | None:
        """Share of the original's answers still thinking when the budget ran out (None: none thought)."""
        return thinking_unfinished(self.before)

    @property
    def thinking_unfinished_after(self) -> float | None:
        return thinking_unfinished(self.after)

    def summary(self) -> str:
        thinking = ""
        if self.thinking_refusal_before is not None or self.thinking_refusal_after is not None:
            thinking = (
                f", refusal while thinking={percent(self.thinking_refusal_before or 0.0)} → "
                f"{percent(self.thinking_refusal_after or 0.0)}, thinking not ended="
                f"{percent(self.thinking_unfinished_before or 0.0)} → "
                f"{percent(self.thinking_unfinished_after or 0.0)}"
            )
        return (
            f"EvalResult: refusal={percent(self.refusal_before)} → {percent(self.refusal_after)}, "
            f"perplexity={self.perplexity_before:.2f} → {self.perplexity_after:.2f}, "
            f"kl={self.kl:.4f}, prompts={self.n_prompts}{thinking}"
        )

    def rows(self) -> list[tuple[str, str, str]]:
        """The report: ``(measure, original, cut)`` per line; each label says on what it was measured."""

        def pct(x: float | None) -> str:
            return "" if x is None else f"{x * 100:.1f}%"

        judged = f"{self.n_prompts} prompts, {self.max_tokens} tokens"
        judged += f", judge {self.judge}" if self.judge else ""
        rows = [
            (f"refusal on harmful prompts ({judged})", pct(self.refusal_before), pct(self.refusal_after)),
            ("  of which late (complies, then declines)", pct(self.late_before), pct(self.late_after)),
        ]
        if (self.thinking_refusal_before, self.thinking_refusal_after) != (None, None):
            rows.append(
                (
                    "refusal while thinking",
                    pct(self.thinking_refusal_before or 0.0),
                    pct(self.thinking_refusal_after or 0.0),
                )
            )
            rows.append(
                (
                    "thinking not ended within its budget",
                    pct(self.thinking_unfinished_before or 0.0),
                    pct(self.thinking_unfinished_after or 0.0),
                )
            )
        if self.over_refusal_before is not None:
            rows.append(
                (
                    f"over-refusal on safe prompts ({self.n_safe} prompts)",
                    pct(self.over_refusal_before),
                    pct(self.over_refusal_after),
                )
            )
        rows.append(
            (
                f"KL(original ‖ cut), first token ({self.n_reference} reference prompts)",
                "",
                f"{self.first_token_kl:.4f}",
            )
        )
        if self.k_token_kl is not None:
            rows.append(
                (
                    f"KL(original ‖ cut), first {self.kl_tokens} tokens of the original's answers",
                    "",
                    f"{self.k_token_kl:.4f}",
                )
            )
        rows.append(("KL(original ‖ cut), reference answers (every position)", "", f"{self.kl:.4f}"))
        rows.append(
            (
                "perplexity of the reference answers",
                f"{self.perplexity_before:.2f}",
                f"{self.perplexity_after:.2f}",
            )
        )
        for before, after in zip(self.capability_before, self.capability_after, strict=True):
            rows.append(
                (f"{before.name} {before.metric} (n={before.n})", pct(before.value), pct(after.value))
            )
        return rows

    def table(self) -> str:
        """:meth:`rows` as aligned plain text."""
        lines = [("", "original", "cut"), *self.rows()]
        widths = [max(len(r[i]) for r in lines) for i in range(3)]
        return "\n".join(
            f"{a.ljust(widths[0])}  {b.rjust(widths[1])}  {c.rjust(widths[2])}".rstrip() for a, b, c in lines
        )

    def record(self) -> dict[str, Any]:
        """JSON-serializable form, answers included."""
        from dataclasses import asdict

        return {
            **asdict(self),
            "thinking_refusal_before": self.thinking_refusal_before,
            "thinking_refusal_after": self.thinking_refusal_after,
            "thinking_unfinished_before": self.thinking_unfinished_before,
            "thinking_unfinished_after": self.thinking_unfinished_after,
        }
