"""``vauban --help`` fits each command: it offers only the options its code reads, bare ``vauban``
prints the overview of commands, and every example command line (help epilogs, README, docs)
parses. Parse only: no model loads here.

What a command reads is found in its source: the attributes of the settings (``s``) and the
argparse namespace (``args``) that its ``cmd_*`` function, and the vauban.cli helpers it hands
them to, read (``s.formatting()`` reads the four prompt-formatting settings; ``preflight`` turns
``--direction`` into ``args.saved_direction``).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import re
import shlex
from pathlib import Path

import pytest

import vauban.cli
from vauban.cli import main
from vauban.cli.parser import build_parser
from vauban.config import Settings

ROOT = Path(__file__).resolve().parents[1]
CLI = Path(vauban.cli.__file__).parent
HOLDERS = {"s", "args", "settings"}
FORMATTING = {"system_prompt", "system_prompts", "template_options", "thinking_tokens"}
GENERAL = {"help", "config", "quiet", "debug", "json"}  # every command's general group
RENAMED = {"model_arg": "model", "saved_direction": "direction"}
MEASURING = {"run", "measure"}  # they measure the direction themselves: no --direction to read one


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def functions() -> dict[str, ast.FunctionDef]:
    """The vauban.cli functions, and the one library function that reads the namespace."""
    found = {
        node.name: node
        for path in CLI.glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef)
    }
    cutspec = ast.parse((CLI.parent / "methods" / "cutspec.py").read_text())
    found |= {n.name: n for n in ast.walk(cutspec) if isinstance(n, ast.FunctionDef) and n.name == "cut_spec"}
    return found


def _holder(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id in HOLDERS


def reads(name: str, funcs: dict[str, ast.FunctionDef], seen: set[str] | None = None) -> set[str]:
    """The settings and arguments function ``name`` reads, through the helpers it passes them to."""
    seen = seen if seen is not None else {name}
    found: set[str] = set()
    for node in ast.walk(funcs[name]):
        if isinstance(node, ast.Attribute) and _holder(node.value):
            found.add(node.attr)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            callee, given = node.func.id, [*node.args, *(k.value for k in node.keywords)]
            if callee == "getattr" and _holder(given[0]) and isinstance(given[1], ast.Constant):
                found.add(given[1].value)
            elif callee in funcs and callee not in seen and any(map(_holder, given)):
                seen.add(callee)
                found |= reads(callee, funcs, seen)
    if "formatting" in found:
        found |= FORMATTING
    return {RENAMED.get(x, x) for x in found}


def offered(parser: argparse.ArgumentParser) -> set[str]:
    return {RENAMED.get(a.dest, a.dest) for a in parser._actions} - GENERAL


COMMANDS = subparsers(build_parser())


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_command_offers_exactly_what_it_reads(name):
    parser, funcs = COMMANDS[name], functions()
    read = reads(parser.get_default("func").__name__, funcs)
    known = {f.name for f in dataclasses.fields(Settings)} | set().union(*map(offered, COMMANDS.values()))
    shown = offered(parser) | ({"direction"} if name in MEASURING else set())
    assert shown - read == set(), f"vauban {name} --help offers options it never reads"
    assert (read & known) - GENERAL - shown == set(), f"vauban {name} reads settings it offers no flag for"


def help_text(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_judge_help_shows_only_what_judge_uses(capsys):
    text = help_text(["judge", "--help"], capsys)
    for flag in (
        "--harmful",
        "--harmless",
        "--layer",
        "--select",
        "--eval-prompts",
        "--overwrite",
        "--model",
        "--max-tokens",
        "--system-prompt",
        "--batch-size",
        "--alpha",
    ):
        assert not re.search(rf"{flag}\b", text), flag
    for flag in ("--judge", "--device", "--dtype", "--json", "--config", "--quiet"):
        assert flag in text


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_groups_the_options(name, capsys):
    text = help_text([name, "--help"], capsys)
    assert text.startswith(f"usage: vauban {name}") and "[options]" in text.splitlines()[0]
    assert "general:" in text and "examples:\n  vauban " + name in text
    flags = {a.option_strings[-1] for a in COMMANDS[name]._actions if a.option_strings}
    assert all(flag in text for flag in flags)


def test_bare_vauban_prints_the_overview(capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["vauban"])
    assert main() == 0
    out, err = capsys.readouterr()
    assert out.startswith("usage: vauban COMMAND") and not err
    assert all(re.search(rf"^    {name}\b", out, re.M) for name in COMMANDS)
    assert "vauban abliterate " in out and "vauban optimize " in out
    assert help_text(["--help"], capsys) == out


# --- every example command line parses ---------------------------------------------------------


def commands_in(text: str) -> list[list[str]]:
    """The argument lists of the ``vauban`` commands in shell text (``&&``, ``;`` and ``|`` split
    commands; ``#`` starts a comment; a backslash at the end of a line continues it)."""
    found = []
    text = re.sub(r"\\\n\s*", " ", text)  # a backslash continues the line
    text = re.sub(r"\$\{?\w+\}?", "0", text)  # a shell variable ("cuda:$k") stands for a value
    for line in text.splitlines():
        if not re.search(r"(^|\s|/)vauban\s", line.split("#")[0]):
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        words: list[str] = []
        for token in [*lexer, ";"]:
            if set(token) <= set(";&|"):
                if words and re.fullmatch(r"(\S*/)?vauban", words[0]):
                    found.append(words[1:])
                words = []
            else:
                words.append(token)
    return found


def examples() -> list[list[str]]:
    """Every example: the help's epilogs, and the fenced code blocks of README.md and docs/*.md."""
    parser = build_parser()
    texts = [parser.epilog or "", *(p.epilog or "" for p in subparsers(parser).values())]
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        texts += re.findall(r"^```[^\n]*\n(.*?)^```", path.read_text(), re.S | re.M)
    return [argv for text in texts for argv in commands_in(text)]


def test_examples_cover_every_command():
    assert {argv[0] for argv in examples()} == set(COMMANDS)


@pytest.mark.parametrize("argv", examples(), ids=" ".join)
def test_example_parses(argv, capsys):
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"vauban {shlex.join(argv)} does not parse: {capsys.readouterr().err.strip()}")
    assert args.command == argv[0]


def test_the_readme_starts_with_abliterating_a_real_model():
    """Its first screen: `vauban abliterate` on a hub id, a local dir and a .gguf, then optimize."""
    text = (ROOT / "README.md").read_text()
    first = "\n".join(text.splitlines()[:40])
    assert re.search(r"^vauban abliterate [\w.-]+/[\w.-]+ ", first, re.M), "no hub id"
    assert re.search(r"^vauban abliterate \./", first, re.M) and ".gguf " in first
    assert "quick.load(" in first and re.search(r"^vauban optimize ", first, re.M)
    assert "docs/architecture.md" in text and "docs/benchmarks.md" in text
