"""llama.cpp, reached through ``llama-cpp-python`` (the ``[llamacpp]`` extra): its quantizer, its
converter, and running a GGUF to check an export.

- **Quantizer.** ``llama-cpp-python`` ships llama.cpp's ggml library; ``ggml_quantize_chunk``
  writes every GGML type that needs no importance matrix (Q4_K, Q6_K, Q5_0, Q8_0, ...), and
  ``llama_model_quantize`` re-quantizes a whole file (``q4_k_m``, ``q5_k_m``, ...).
- **Converter.** ``convert_hf_to_gguf.py`` is not in the wheel; it is in the same
  ``llama-cpp-python`` release's source distribution on PyPI (``vendor/llama.cpp``, the
  llama.cpp commit the library was built from, with its ``conversion`` package and ``gguf-py``).
  :func:`converter_dir` uses ``$VAUBAN_LLAMA_CPP`` (a llama.cpp checkout) if set, else that
  source distribution, fetched once with ``pip download`` into vauban's cache. It runs in a
  subprocess with that commit's ``gguf-py`` first on the path.
- **Running.** :func:`greedy_answers` and :func:`first_logits` run a GGUF on the CPU; they are
  what the tests and ``benchmarks/exports_demo.py`` compare with transformers.
- **In a child process.** llama.cpp's native code runs only in a spawned child (:class:`Child`):
  a native build can crash on some processors (AVX-512/AMX Intel Xeons: a segmentation fault
  on any prompt of more than a few tokens), and a crash in the vauban process would end it
  with no message. A child stopped by a signal is a one-line :class:`VaubanError` naming the
  signal and the fix (:data:`PORTABLE`, a portable rebuild); an error raised in the child is
  raised again here.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import multiprocessing
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ...core.atomic import building_dir, write_file
from ...core.errors import VaubanError
from ...model.loading import cache_dir
from .base import need

EXTRA = "pip install 'vauban[llamacpp]'"
PORTABLE = (
    'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --force-reinstall --no-cache-dir --no-deps '
    "llama-cpp-python"
)  # a build for any x86-64 processor; no cached (native) wheel
KILL_ENV = "VAUBAN_LLAMACPP_KILL"  # tests: a signal name (SIGSEGV) the child sends itself at start
_CONVERTER = "convert_hf_to_gguf.py"
_KEEP = (_CONVERTER, "conversion/", "gguf-py/", "LICENSE")


def available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


@functools.cache
def _ggml() -> Any:
    """llama-cpp-python's ggml library, with the quantization entry points typed."""
    llama_cpp = need("llama_cpp", "llamacpp")
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    candidates = [
        p
        for stem in ("ggml-base", "ggml")
        for p in sorted(lib_dir.glob(f"*{stem}.*"))
        if p.suffix in (".so", ".dylib", ".dll")
    ]
    if not candidates:
        raise VaubanError(f"llama-cpp-python has no ggml library in {lib_dir}; reinstall it: {EXTRA}")
    lib = ctypes.CDLL(str(candidates[0]))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_void_p,
    ]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    return lib


def quantize_rows(values: np.ndarray, qtype: int, child: Child | None = None) -> bytes:
    """``values`` (float32; the last axis is a row) in GGML type ``qtype``, by llama.cpp, in
    ``child`` (one :class:`Child` for many tensors) or else in a child of its own."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    if child is None:
        return in_child(f"quantizing to GGML type {qtype}", _quantize_rows_here, values, qtype)
    return child.call(_quantize_rows_here, values, qtype)


def _quantize_rows_here(values: np.ndarray, qtype: int) -> bytes:
    """:func:`quantize_rows` in this process."""
    lib = _ggml()
    if lib.ggml_quantize_requires_imatrix(qtype):
        raise VaubanError(f"GGML type {qtype} needs an importance matrix to quantize; pass --quant q8_0")
    n = values.shape[-1]
    rows = values.size // n
    out = np.empty(lib.ggml_row_size(qtype, n) * rows, dtype=np.uint8)
    written = lib.ggml_quantize_chunk(qtype, values.ctypes.data, out.ctypes.data, 0, rows, n, None)
    if written != out.size:
        raise VaubanError(
            f"llama.cpp wrote {written} bytes for a tensor of {out.size}; "
            "this llama-cpp-python build does not quantize that type"
        )
    return out.tobytes()


def file_type(quant: str) -> int:
    """llama.cpp's ``LLAMA_FTYPE_*`` for ``q4_k_m`` and the like."""
    llama_cpp = need("llama_cpp", "llamacpp")
    key = quant.upper()
    for prefix in ("LLAMA_FTYPE_MOSTLY_", "LLAMA_FTYPE_ALL_"):
        if hasattr(llama_cpp, prefix + key):
            return int(getattr(llama_cpp, prefix + key))
    known = sorted(
        n.removeprefix("LLAMA_FTYPE_MOSTLY_").lower()
        for n in dir(llama_cpp)
        if n.startswith("LLAMA_FTYPE_MOSTLY_")
    )
    raise VaubanError(f"{quant!r} is not a llama.cpp quantization; use one of {', '.join(known[:12])}, ...")


def quantize_file(source: Path, out: Path, quant: str) -> None:
    """Re-quantize a whole GGUF with llama.cpp's ``llama_model_quantize`` (the llama-quantize tool)
    in a child process; ``out`` appears only complete (written under a temporary name)."""
    ftype = file_type(quant)
    what = f"quantizing {source.name} to {quant}"
    write_file(out, lambda tmp: in_child(what, _quantize_file_here, str(source), str(tmp), ftype, quant))


def _quantize_file_here(source: str, out: str, ftype: int, quant: str) -> None:
    """:func:`quantize_file` in this process, into ``out`` (which may exist, empty)."""
    llama_cpp = need("llama_cpp", "llamacpp")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = os.cpu_count() or 1
    status = llama_cpp.llama_model_quantize(source.encode(), out.encode(), ctypes.byref(params))
    if status != 0 or not os.path.getsize(out):
        raise VaubanError(f"llama.cpp could not quantize {Path(source).name} to {quant} (status {status})")


def converter_dir() -> Path:
    """A folder holding llama.cpp's ``convert_hf_to_gguf.py`` (see the module docstring)."""
    env = os.environ.get("VAUBAN_LLAMA_CPP")
    if env:
        folder = Path(env).expanduser()
        if not (folder / _CONVERTER).is_file():
            raise VaubanError(
                f"VAUBAN_LLAMA_CPP={env} holds no {_CONVERTER}; point it at a llama.cpp checkout"
            )
        return folder
    need("llama_cpp", "llamacpp")
    version = metadata.version("llama_cpp_python")
    target = cache_dir() / "llama.cpp" / version
    if not (target / _CONVERTER).is_file():
        _fetch_converter(version, target)
    return target


def _fetch_converter(version: str, target: Path) -> None:
    """Unpack the converter from ``llama-cpp-python==version``'s source distribution."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"llama-cpp-python=={version}",
            "-d",
            tmp,
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        archives = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if done.returncode != 0 or not archives:
            last = (done.stderr.strip().splitlines() or ["no archive"])[-1]
            raise VaubanError(
                f"could not fetch llama.cpp's converter (llama-cpp-python=={version} source: "
                f"{last}); set VAUBAN_LLAMA_CPP to a llama.cpp checkout"
            )
        with tarfile.open(archives[0]) as archive, building_dir(target, overwrite=True) as build:
            for member in archive.getmembers():
                _, _, rest = member.name.partition("/vendor/llama.cpp/")
                if rest and rest.startswith(_KEEP) and (member.isfile() or member.isdir()):
                    member.name = rest
                    archive.extract(member, build, filter="data")


def convert_hf(hf_dir: Path, out: Path, outtype: str) -> None:
    """Run llama.cpp's converter on a transformers directory."""
    folder = converter_dir()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder / "gguf-py"), env.get("PYTHONPATH")) if p)
    command = [
        sys.executable,
        str(folder / _CONVERTER),
        str(hf_dir),
        "--outfile",
        str(out),
        "--outtype",
        outtype,
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0 or not out.is_file():
        raise VaubanError(f"llama.cpp's converter {converter_failure(done.returncode, done.stderr)}")


def converter_failure(returncode: int, stderr: str) -> str:
    """What went wrong, in one line: the signal that stopped the converter (a kill prints nothing
    of its own, so its last line is only a progress bar), else its last line of output."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = (
            "; the system most likely ran out of memory: close other programs and export again"
            if -returncode == signal.SIGKILL
            else ""
        )
        return f"was stopped by {name} before it finished{hint}"
    lines = [x for x in stderr.replace("\r", "\n").splitlines() if x.strip()] or ["no output"]
    return f"failed on this model (exit {returncode}): {lines[-1].strip()[:300]}"


# --- llama.cpp in a child process ---------------------------------------------------------


class Child:
    """A spawned process that runs llama.cpp calls for this one (:meth:`call`), started at the
    first call; if a signal stops it (a crash of llama.cpp's native code), the call raises a
    one-line :class:`VaubanError` naming llama.cpp, ``what`` it was doing, the signal and the fix."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._process: Any = None
        self._conn: Any = None
        self._busy = False

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in the child (``fn`` importable, arguments and result picklable); an
        exception raised there is raised here."""
        if self._process is None:
            self._start()
        self._busy = True
        try:
            self._conn.send((fn, args))
            ok, value = self._conn.recv()
        except (EOFError, OSError):  # the child is gone: no answer, or a broken pipe
            raise VaubanError(self._stopped()) from None
        self._busy = False
        if not ok:
            raise value
        return value

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")  # llama.cpp's threads do not survive a fork
        self._conn, theirs = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(theirs,), daemon=True, name="vauban-llama.cpp")
        self._process.start()
        theirs.close()

    def _stopped(self) -> str:
        """The one-line error for a child that ended without answering."""
        self._process.join(10)
        code = self._process.exitcode
        problem = converter_failure(code, "") if code is not None else "stopped answering"
        fix = (
            ""
            if code == -signal.SIGKILL
            else f"; a native build of llama-cpp-python can crash on some processors (AVX-512): "
            f"rebuild it portable with {PORTABLE}"
        )
        return f"llama.cpp ({self.what}) {problem}{fix}"

    def close(self) -> None:
        """End the child: at once if it is mid-call (this process was interrupted), else when
        it has read the end of its work."""
        if self._process is None:
            return
        with contextlib.suppress(OSError):
            if not self._busy:
                self._conn.send(None)
        self._conn.close()
        self._process.join(0 if self._busy else 30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._process = None


@contextlib.contextmanager
def child(what: str) -> Iterator[Child]:
    """A :class:`Child` for the block, ended when it ends."""
    worker = Child(what)
    try:
        yield worker
    finally:
        worker.close()


def in_child(what: str, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a child process of its own (see :class:`Child`)."""
    with child(what) as worker:
        return worker.call(fn, *args)


def _serve(conn: Any) -> None:
    """The child: answer ``(fn, args)`` requests with ``(True, result)`` or ``(False, error)``
    until ``None`` or the parent's end; ``$VAUBAN_LLAMACPP_KILL`` (tests) kills it first."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if name := os.environ.get(KILL_ENV):
        os.kill(os.getpid(), signal.Signals[name])
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        fn, args = request
        try:
            reply = (True, fn(*args))
        except Exception as err:  # raised again in the parent
            reply = (False, err)
        try:
            conn.send(reply)
        except Exception as err:  # an unpicklable result or error
            conn.send((False, RuntimeError(f"{type(err).__name__}: {err} (in llama.cpp's child process)")))


# --- running a GGUF with llama.cpp -----------------------------------------------------------


def greedy_answers(
    path: str | os.PathLike[str],
    ids: Sequence[Sequence[int]],
    stops: Sequence[int],
    max_tokens: int,
    *,
    n_ctx: int = 1024,
) -> list[list[int]]:
    """llama.cpp's greedy continuation of each of ``ids`` (at most ``max_tokens`` tokens, ending
    at a stop, which is left out), the GGUF at ``path`` run on the CPU in a child process."""
    args = (str(path), [list(seq) for seq in ids], list(stops), max_tokens, n_ctx)
    return in_child(f"answering with {Path(path).name}", _greedy_answers_here, *args)


def first_logits(
    path: str | os.PathLike[str], ids: Sequence[Sequence[int]], *, n_ctx: int = 1024
) -> np.ndarray:
    """``(len(ids), vocab)`` llama.cpp logits for the token after each of ``ids`` (a fresh
    context each), the GGUF at ``path`` run on the CPU in a child process."""
    args = (str(path), [list(seq) for seq in ids], n_ctx)
    return in_child(f"running {Path(path).name}", _first_logits_here, *args)


def _load(path: str, n_ctx: int) -> Any:
    """A ``llama_cpp.Llama`` on the CPU, quiet."""
    llama_cpp = need("llama_cpp", "llamacpp")
    return llama_cpp.Llama(path, n_ctx=n_ctx, n_threads=os.cpu_count(), n_gpu_layers=0, verbose=False)


def _greedy_answers_here(
    path: str, ids: list[list[int]], stops: list[int], max_tokens: int, n_ctx: int
) -> list[list[int]]:
    """:func:`greedy_answers` in this process."""
    llm = _load(path, n_ctx)
    try:
        return [_greedy(llm, seq, stops, max_tokens) for seq in ids]
    finally:
        llm.close()


def _greedy(llm: Any, ids: list[int], stops: list[int], max_tokens: int) -> list[int]:
    out: list[int] = []
    for token in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
        if token in stops:
            break
        out.append(int(token))
        if len(out) >= max_tokens:
            break
    return out


def _first_logits_here(path: str, ids: list[list[int]], n_ctx: int) -> np.ndarray:
    """:func:`first_logits` in this process."""
    llama_cpp = need("llama_cpp", "llamacpp")
    llm = _load(path, n_ctx)
    try:
        rows = []
        for seq in ids:
            llm.reset()
            llm.eval(seq)
            row = llama_cpp.llama_get_logits_ith(llm.ctx, -1)  # the last position's (logits_all=False)
            rows.append(np.ctypeslib.as_array(row, shape=(llm.n_vocab(),)).astype(np.float32))
        return np.stack(rows)
    finally:
        llm.close()
