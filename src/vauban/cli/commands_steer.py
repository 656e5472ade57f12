"""The direction at run time: ``vauban steer`` (generate once) and ``vauban chat`` (interactive)."""

from __future__ import annotations

import argparse
import sys

from ..config import Settings
from ..core.errors import VaubanError
from .commands_control import cmd_steer_when, condition_for, when_of
from .common import direction_for, judge_for, load, run_formatting
from .report import Report


def cmd_steer(s: Settings, args: argparse.Namespace, report: Report) -> None:
    from ..methods.steering import steer

    args.when = when_of(args)
    model, tokenizer = load(s, report, trust=args.trust_remote_code)
    judge = judge_for(s, report)
    direction = direction_for(s, report, model, tokenizer, args)
    if args.when:
        if args.alphas:
            raise VaubanError("--when steers with one --alpha; drop --alphas")
        cmd_steer_when(s, args, report, model, tokenizer, direction, judge)
        return
    results = []
    for alpha in args.alphas or [s.alpha]:
        with report.step(f"steer alpha={alpha:g}"):
            result = steer(
                model,
                tokenizer,
                args.prompt,
                direction,
                alpha,
                max_tokens=s.max_tokens,
                judge=judge,
                formatting=s.formatting(),
            )
        report.say(result.summary())
        report.say("  " + result.text.replace("\n", "\n  "))
        results.append(
            {
                "alpha": alpha,
                "text": result.text,
                "refused": result.refused,
                "projection_before": result.mean_projection(),
                "projection_after": result.mean_projection(after=True),
            }
        )
    report.put("prompt", args.prompt)
    report.put("judge", judge.spec)
    report.put("results", results)


def cmd_chat(s: Settings, args: argparse.Namespace, report: Report) -> None:
    from ..chat import ChatSession
    from ..judge import Judge

    args.when = when_of(args)
    model, tokenizer = load(s, report, trust=args.trust_remote_code)
    judge = judge_for(s, report) if s.judge is not None else None  # judge replies only when asked
    direction = None
    if args.direction or args.alpha or args.when:
        direction = direction_for(s, report, model, tokenizer, args)
    condition = None
    if args.when:
        condition = condition_for(
            s, report, model, tokenizer, args.when, args.condition_kind, args.false_match
        )
    alpha = args.alpha if args.alpha is not None else 1.0 if args.when else 0.0
    session = ChatSession(
        model,
        tokenizer,
        direction,
        alpha,
        max_tokens=args.max_tokens or 256,
        judge=judge,
        formatting=run_formatting(s, direction),
        condition=condition,
        mode="add" if args.add else "remove",
    )
    say = report.out.print
    say("Chat with greedy decoding. Commands: /alpha X (steer; 0 = off), /reset, /quit.", style="dim")
    while True:
        try:
            text = input(f"you{f' [alpha={session.alpha:g}]' if session.steered else ''}> ").strip()
        except EOFError:
            say()
            return
        if not text:
            continue
        if text in ("/quit", "/exit"):
            return
        if text == "/reset":
            session.reset()
            say("(history cleared)", style="dim")
            continue
        if text.startswith("/alpha"):
            try:
                session.set_alpha(float(text.split(maxsplit=1)[1]))
                say(f"(alpha={session.alpha:g})", style="dim")
            except (IndexError, ValueError):
                say("usage: /alpha NUMBER, e.g. /alpha 1.0", style="dim")
            except VaubanError as err:
                say(f"({err})", style="dim")
            continue
        if text.startswith("/"):
            say("unknown command; use /alpha X, /reset or /quit", style="dim")
            continue
        sys.stdout.write("model> ")
        session.reply(text, on_text=_show)
        sys.stdout.write("\n")
        if session.last_verdict is not None and isinstance(session.judge, Judge):
            say(f"({session.judge.spec}: {session.last_verdict.summary()})", style="dim")
        if session.last_matched is not None:
            say(
                f"(condition {'matched: steered' if session.last_matched else 'not matched: not steered'})",
                style="dim",
            )


def _show(piece: str) -> None:
    """A streamed piece of the reply, on the terminal at once."""
    sys.stdout.write(piece)
    sys.stdout.flush()
