"""A terminal for heretic (``benchmarks/peers.py``): heretic asks through interactive menus
(arrow keys, Enter, typed paths), so it runs inside a detached tmux session whose screen is read
(``tmux capture-pane``) and whose keys are sent (``tmux send-keys``); ``script`` keeps the whole
output in a log file. Nothing of heretic is imported."""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Terminal:
    """One detached tmux session running one command."""

    def __init__(self, name: str, log: Path) -> None:
        self.name, self.log = name, log

    def start(self, cmd: list[str], env: dict[str, str] | None = None) -> None:
        self.stop()
        exports = "".join(f"export {k}={shlex.quote(v)}; " for k, v in (env or {}).items())
        inner = exports + shlex.join(cmd)
        # the session stays open after the command ends, so its last screen can still be read
        shell = f"script -q -f -c {shlex.quote(inner)} {shlex.quote(str(self.log))}; sleep 86400"
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", self.name, "-x", "220", "-y", "60", shell], check=True
        )

    def alive(self) -> bool:
        return subprocess.run(["tmux", "has-session", "-t", self.name], capture_output=True).returncode == 0

    def screen(self) -> str:
        out = subprocess.run(
            ["tmux", "capture-pane", "-p", "-J", "-S", "-60", "-t", self.name],
            capture_output=True,
            text=True,
            check=False,
        )
        return ANSI.sub("", out.stdout)

    def keys(self, *keys: str, literal: bool = False) -> None:
        flags = ["-l"] if literal else []
        subprocess.run(["tmux", "send-keys", "-t", self.name, *flags, *keys], check=True)
        time.sleep(1.0)

    def type_line(self, text: str) -> None:
        self.keys(text, literal=True)
        self.keys("Enter")

    def wait_for(self, pattern: str, timeout: float, every: float = 3.0) -> re.Match[str] | None:
        """The first match of ``pattern`` on the screen within ``timeout`` seconds, else None."""
        end = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.screen(), re.M)
            if found or time.monotonic() > end:
                return found
            time.sleep(every)

    def menu(self, question: str) -> list[str]:
        """The choices listed under the last line matching ``question`` (questionary's layout:
        one choice per line, the highlighted one marked ``»``)."""
        lines = self.screen().splitlines()
        starts = [i for i, line in enumerate(lines) if re.search(question, line)]
        if not starts:
            return []
        choices = []
        for line in lines[starts[-1] + 1 :]:
            if not line.strip():
                break
            choices.append(line.replace("»", " ").strip())
        return choices

    def choose(self, question: str, choice: str, timeout: float = 600) -> str:
        """Select the first choice matching ``choice`` in the menu asked by ``question``."""
        if not self.wait_for(question, timeout):
            raise RuntimeError(f"heretic did not ask {question!r}; screen:\n{self.screen()}")
        time.sleep(2)
        choices = self.menu(question)
        index = next((i for i, c in enumerate(choices) if re.search(choice, c)), None)
        if index is None:
            raise RuntimeError(f"no choice {choice!r} in {choices}")
        for _ in range(index):
            self.keys("Down")
        self.keys("Enter")
        return choices[index]

    def stop(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True, check=False)
