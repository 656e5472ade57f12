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
- **Running.** :func:`load` opens a GGUF on the CPU; :func:`greedy` and
  :func:`first_token_logits` are what the tests and ``benchmarks/exports_demo.py`` compare with
  transformers.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ...core.atomic import building_dir
from ...core.errors import VaubanError
from ...model.loading import cache_dir
from .base import need

EXTRA = "pip install 'vauban[llamacpp]'"
_CONVERTER = "convert_hf_to_gguf.py"
_KEEP = (_CONVERTER, "conversion/", "gguf-py/", "LICENSE")


def available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


@functools.cache
def _ggml() -> Any:
    """llama-cpp-python's ggml library, with the quantization entry points typed."""
    llama_cpp = need("llama_cpp", "llamacpp")
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    candidates = [p for stem in ("ggml-base", "ggml") for p in sorted(lib_dir.glob(f"*{stem}.*"))
                  if p.suffix in (".so", ".dylib", ".dll")]
    if not candidates:
        raise VaubanError(f"llama-cpp-python has no ggml library in {lib_dir}; reinstall it: {EXTRA}")
    lib = ctypes.CDLL(str(candidates[0]))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    return lib


def quantize_rows(values: np.ndarray, qtype: int) -> bytes:
    """``values`` (float32; the last axis is a row) in GGML type ``qtype``, by llama.cpp."""
    lib = _ggml()
    if lib.ggml_quantize_requires_imatrix(qtype):
        raise VaubanError(f"GGML type {qtype} needs an importance matrix to quantize; pass --quant q8_0")
    values = np.ascontiguousarray(values, dtype=np.float32)
    n = values.shape[-1]
    rows = values.size // n
    out = np.empty(lib.ggml_row_size(qtype, n) * rows, dtype=np.uint8)
    written = lib.ggml_quantize_chunk(qtype, values.ctypes.data, out.ctypes.data, 0, rows, n, None)
    if written != out.size:
        raise VaubanError(f"llama.cpp wrote {written} bytes for a tensor of {out.size}; "
                          "this llama-cpp-python build does not quantize that type")
    return out.tobytes()


def file_type(quant: str) -> int:
    """llama.cpp's ``LLAMA_FTYPE_*`` for ``q4_k_m`` and the like."""
    llama_cpp = need("llama_cpp", "llamacpp")
    key = quant.upper()
    for prefix in ("LLAMA_FTYPE_MOSTLY_", "LLAMA_FTYPE_ALL_"):
        if hasattr(llama_cpp, prefix + key):
            return int(getattr(llama_cpp, prefix + key))
    known = sorted(n.removeprefix("LLAMA_FTYPE_MOSTLY_").lower() for n in dir(llama_cpp)
                   if n.startswith("LLAMA_FTYPE_MOSTLY_"))
    raise VaubanError(f"{quant!r} is not a llama.cpp quantization; use one of {', '.join(known[:12])}, ...")


def quantize_file(source: Path, out: Path, quant: str) -> None:
    """Re-quantize a whole GGUF with llama.cpp's ``llama_model_quantize`` (the llama-quantize tool)."""
    llama_cpp = need("llama_cpp", "llamacpp")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = file_type(quant)
    params.nthread = os.cpu_count() or 1
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params))
    if status != 0 or not out.is_file():
        raise VaubanError(f"llama.cpp could not quantize {source.name} to {quant} (status {status})")


def converter_dir() -> Path:
    """A folder holding llama.cpp's ``convert_hf_to_gguf.py`` (see the module docstring)."""
    env = os.environ.get("VAUBAN_LLAMA_CPP")
    if env:
        folder = Path(env).expanduser()
        if not (folder / _CONVERTER).is_file():
            raise VaubanError(f"VAUBAN_LLAMA_CPP={env} holds no {_CONVERTER}; "
                              "point it at a llama.cpp checkout")
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
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                   f"llama-cpp-python=={version}", "-d", tmp]
        done = subprocess.run(command, capture_output=True, text=True)
        archives = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if done.returncode != 0 or not archives:
            last = (done.stderr.strip().splitlines() or ["no archive"])[-1]
            raise VaubanError(f"could not fetch llama.cpp's converter (llama-cpp-python=={version} source: "
                              f"{last}); set VAUBAN_LLAMA_CPP to a llama.cpp checkout")
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
    command = [sys.executable, str(folder / _CONVERTER), str(hf_dir), "--outfile", str(out),
               "--outtype", outtype]
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
        hint = ("; the system most likely ran out of memory: close other programs and export again"
                if -returncode == signal.SIGKILL else "")
        return f"was stopped by {name} before it finished{hint}"
    lines = [x for x in stderr.replace("\r", "\n").splitlines() if x.strip()] or ["no output"]
    return f"failed on this model (exit {returncode}): {lines[-1].strip()[:300]}"


# --- running a GGUF with llama.cpp -----------------------------------------------------------


def load(path: str | os.PathLike[str], *, n_ctx: int = 1024, threads: int | None = None) -> Any:
    """A ``llama_cpp.Llama`` on the CPU, quiet."""
    llama_cpp = need("llama_cpp", "llamacpp")
    return llama_cpp.Llama(str(path), n_ctx=n_ctx, n_threads=threads or os.cpu_count(), n_gpu_layers=0,
                           verbose=False)


def first_token_logits(llm: Any, ids: Sequence[int]) -> np.ndarray:
    """llama.cpp's logits for the token after ``ids`` (a fresh context)."""
    llama_cpp = need("llama_cpp", "llamacpp")
    llm.reset()
    llm.eval(list(ids))
    row = llama_cpp.llama_get_logits_ith(llm.ctx, -1)  # the last position's (logits_all=False)
    return np.ctypeslib.as_array(row, shape=(llm.n_vocab(),)).astype(np.float32)


def greedy(llm: Any, ids: Sequence[int], stops: Sequence[int], max_tokens: int) -> list[int]:
    """llama.cpp's greedy continuation of ``ids``: at most ``max_tokens`` tokens, ending at a stop."""
    out: list[int] = []
    for token in llm.generate(list(ids), top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0,
                              reset=True):
        if token in stops:
            break
        out.append(int(token))
        if len(out) >= max_tokens:
            break
    return out
