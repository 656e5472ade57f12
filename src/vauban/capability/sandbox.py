"""Run untrusted, model-written Python in a separate, limited process.

What the sandbox does, for each program (Linux only):

- a **new process** (``python -I -S``: isolated mode, no site-packages, no user environment,
  an empty environment apart from ``PATH``) in its own session, with its working directory in a
  fresh temporary directory that is deleted afterwards;
- **no network**: before running anything the child moves itself into new user and network
  namespaces (``unshare(CLONE_NEWUSER | CLONE_NEWNET)``, no privileges needed), where the only
  interface is a loopback that is down: no connection leaves it, not even to localhost. Where
  the kernel refuses (no unprivileged user namespaces), nothing runs and the error says so;
- **resource limits** (``setrlimit``): CPU seconds, address space (memory), written file size,
  open files, no core dumps; and a wall-clock **time limit** after which the whole process group
  is killed;
- inside the process, dangerous calls (``os.system``, ``os.fork``, ``subprocess.Popen``,
  ``os.kill``, file removal, ``shutil.rmtree`` ...) are replaced by stubs, as in HumanEval's own
  ``reliability_guard``, so well-meant but careless code fails instead of acting.

What it does **not** protect against: the filesystem is *not* isolated — the process runs as
your user and can read any file you can (keys, tokens, documents) and write where you can,
within the file-size limit; it can reach local services through Unix sockets on the filesystem
(a Docker socket, for instance); the in-process stubs are no security boundary (``ctypes``
undoes them); and kernel exploits are out of scope. Run untrusted code from models you do not
trust inside a container or VM with nothing of value mounted. That is why it only runs with an
explicit opt-in (``allow_code_execution=True``, ``--allow-code-execution``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import VaubanError

NO_NAMESPACE = 97  # the child's exit code when the kernel refuses the namespaces

# The child: namespaces, limits, stubs, then the program. Runs before any untrusted code.
_RUNNER = r"""
import ctypes, os, resource, sys
CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
    sys.stderr.write("unshare failed: errno %d\n" % ctypes.get_errno())
    sys.exit(97)
cpu, memory, fsize = (int(x) for x in sys.argv[2:5])
for limit, value in ((resource.RLIMIT_CPU, cpu), (resource.RLIMIT_AS, memory),
                     (resource.RLIMIT_FSIZE, fsize), (resource.RLIMIT_NOFILE, 64),
                     (resource.RLIMIT_CORE, 0)):
    resource.setrlimit(limit, (value, value))
source = open(sys.argv[1], encoding="utf-8").read()
import builtins, shutil, subprocess
for name in ("system", "fork", "forkpty", "kill", "killpg", "putenv", "remove", "removedirs", "rmdir",
             "unlink", "rename", "renames", "truncate", "replace", "fchmod", "chmod", "chown", "lchown",
             "setuid", "execv", "execve", "execvp", "spawnv", "spawnve"):
    if hasattr(os, name):
        setattr(os, name, None)
shutil.rmtree = shutil.move = shutil.chown = None
subprocess.Popen = None
builtins.exit = builtins.quit = None
sys.modules["ctypes"] = None
del libc, ctypes
exec(compile(source, "program.py", "exec"), {"__name__": "__main__"})
"""


@dataclass(frozen=True)
class Outcome:
    """How one program ended: ``passed`` (exit 0), ``failed``, ``timeout``."""

    status: str
    output: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def run_untrusted(
    program: str, *, timeout: float = 10.0, memory_mb: int = 1024, file_mb: int = 16
) -> Outcome:
    """Run ``program`` in the sandbox described in the module docstring."""
    if not sys.platform.startswith("linux"):
        raise VaubanError(
            "running model-written code needs the Linux sandbox (network namespaces); run this check on Linux"
        )
    with tempfile.TemporaryDirectory(prefix="vauban-sandbox-") as tmp:
        path = Path(tmp) / "program.py"
        path.write_text(program, encoding="utf-8")
        cpu = max(1, int(timeout))
        command = [
            sys.executable,
            "-I",
            "-S",
            "-c",
            _RUNNER,
            str(path),
            str(cpu),
            str(memory_mb * 2**20),
            str(file_mb * 2**20),
        ]
        proc = subprocess.Popen(
            command,
            cwd=tmp,
            env={"PATH": os.defpath},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return Outcome("timeout", "")
    text = out.decode("utf-8", "replace")[-2000:]
    if proc.returncode == NO_NAMESPACE and text.startswith("unshare failed"):
        raise VaubanError(
            "the sandbox cannot cut the network off: this kernel refuses unprivileged "
            f"user namespaces ({text.strip()}); enable them (sysctl "
            "kernel.unprivileged_userns_clone=1) or run the check in a container"
        )
    if proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL):  # the CPU-time limit: a timeout too
        return Outcome("timeout", text)
    return Outcome("passed" if proc.returncode == 0 else "failed", text)
