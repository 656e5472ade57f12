"""The direction at run time: ``vauban steer`` (generate once) and ``vauban chat`` (interactive)."""

from __future__ import annotations

import argparse
import sys

from ..config import Settings
from ..core.errors import VaubanError
from .common import direction_for, judge_for, load, run_formatting
from .report import Report


def cmd_steer(s: Settings, args: argparse.Namespace, report: Report) -> None:
    from ..methods.steering import steer

    model, tokenizer = load(s, report, trust=args.trust_remote_code)
    judge = judge_for(s, report)
    direction = direction_for(s, report, model, tokenizer, args)
    results = []
    for alpha in args.alphas or [s.alpha]:
        with report.step(f"steer alpha={alpha:g}"):
            result = steer(model, tokenizer, args.prompt, direction, alpha, max_tokens=s.max_tokens,
                           judge=judge, formatting=s.formatting())
        report.say(result.summary())
        report.say("  " + result.text.replace("\n", "\n  "))
        results.append({"alpha": alpha, "text": result.text, "refused": result.refused,
                        "projection_before": result.mean_projection(),
                        "projection_after": result.mean_projection(after=True)})
    report.put("prompt", args.prompt)
    report.put("judge", judge.spec)
    report.put("results", results)


def cmd_chat(s: Settings, args: argparse.Namespace, report: Report) -> None:
    from ..chat import ChatSession

    model, tokenizer = load(s, report, trust=args.trust_remote_code)
    judge = judge_for(s, report) if s.judge is not None else None  # judge replies only when asked
    direction = None
    if args.direction or args.alpha:
        direction = direction_for(s, report, model, tokenizer, args)
    session = ChatSession(model, tokenizer, direction, args.alpha or 0.0, max_tokens=args.max_tokens or 256,
                          judge=judge, formatting=run_formatting(s, direction))
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
        session.reply(text, on_text=lambda piece: (sys.stdout.write(piece), sys.stdout.flush()))
        sys.stdout.write("\n")
        if session.last_verdict is not None:
            say(f"({session.judge.spec}: {session.last_verdict.summary()})", style="dim")
