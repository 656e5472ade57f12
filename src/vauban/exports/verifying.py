"""Integrity of exports: every file's sha256 recorded at export time, checked on demand.

An export's ``vauban.json`` lists each file of the directory (except itself) with its size
and sha256. :func:`verify` re-hashes the directory against that list, so a truncated copy, a
flipped bit or a swapped weight file is found before the model is used or shared; it also
opens every safetensors file's header, which catches a file whose data was cut short even
when the record was rewritten with it. The record's ``format`` says how the weights are
reopened (:mod:`vauban.exports.formats`: safetensors headers, the GGUF's tensor table).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import safe_open

from ..core.errors import VaubanError


@dataclass(frozen=True)
class VerifyResult:
    """An export that matched its record: every listed file present with its sha256."""

    directory: str
    files: int
    bytes: int
    tensors: int

    def summary(self) -> str:
        return (
            f"VerifyResult: ok, files={self.files}, bytes={self.bytes}, tensors={self.tensors}, "
            f"directory={self.directory}"
        )


RECORD_FILE = "vauban.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def _files(root: Path) -> list[str]:
    """Relative POSIX paths of every regular file under ``root`` except the record, sorted."""
    names = []
    for folder, _dirs, files in os.walk(root):
        for name in files:
            rel = (Path(folder) / name).relative_to(root).as_posix()
            if rel != RECORD_FILE:
                names.append(rel)
    return sorted(names)


def file_hashes(root: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """``{relative path: {"bytes": size, "sha256": hex}}`` for every file but the record."""
    base = Path(root)
    return {
        name: {"bytes": (base / name).stat().st_size, "sha256": sha256_file(base / name)}
        for name in _files(base)
    }


def check_weights(root: Path) -> int:
    """Open every safetensors file's header and check the data it announces is all there.

    Returns the number of tensors; raises :class:`VaubanError` naming a truncated or
    malformed file, or a sharded index pointing to a missing shard.
    """
    weights = sorted(root.glob("*.safetensors"))
    if not weights:
        raise VaubanError(f"{root} holds no .safetensors weight files; re-export it")
    total = 0
    for file in weights:
        try:
            with safe_open(str(file), framework="pt") as handle:
                total += len(list(handle.keys()))
        except Exception as err:  # safetensors raises its own (Rust) error type
            raise VaubanError(
                f"{file} is not a complete safetensors file ({_first_line(err)}); re-export or re-download it"
            ) from None
    for index in root.glob("*.safetensors.index.json"):
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError):
            raise VaubanError(f"{index} is not a valid weight index; re-export it") from None
        missing = sorted(s for s in shards if not (root / s).is_file())
        if missing:
            raise VaubanError(f"{index} names missing shards {missing[:3]}; re-export it")
    return total


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def read_record(root: Path) -> dict[str, Any]:
    file = root / RECORD_FILE
    if not root.is_dir():
        raise VaubanError(f"{root} is not a directory; pass the directory vauban exported")
    if not file.is_file():
        raise VaubanError(f"{root} has no {RECORD_FILE}; it was not exported by vauban")
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:
        raise VaubanError(f"{file} is unreadable ({_first_line(err)}); re-export the model") from None
    if not isinstance(record, dict):
        raise VaubanError(f"{file} is not a vauban record (expected a JSON object); re-export the model")
    return record


def verify(directory: str | os.PathLike[str]) -> VerifyResult:
    """Check an export against the sha256 list in its record; raise naming every bad file.

    Missing, changed (size or hash) and unexpected files are all problems: the directory must
    be exactly what vauban wrote.
    """
    root = Path(directory).expanduser()
    record = read_record(root)
    expected = record.get("files")
    if not isinstance(expected, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("sha256"), str) for v in expected.values()
    ):
        raise VaubanError(
            f"{root / RECORD_FILE} lists no file hashes (exported by an older vauban?); "
            "re-export the model to get a verifiable record"
        )
    present = set(_files(root))
    problems = [f"{name} missing" for name in sorted(set(expected) - present)]
    problems += [f"{name} unexpected" for name in sorted(present - set(expected))]
    total = 0
    for name in sorted(set(expected) & present):
        file = root / name
        size = file.stat().st_size
        total += size
        if size != expected[name].get("bytes", size):
            problems.append(f"{name} has {size} bytes, expected {expected[name]['bytes']}")
        elif sha256_file(file) != expected[name]["sha256"]:
            problems.append(f"{name} changed (sha256 differs)")
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        raise VaubanError(f"{root} failed verification: {shown}; re-export it or restore those files")
    from . import formats  # each format knows how to reopen its weights (safetensors headers, GGUF)

    tensors = formats.get(record.get("format")).check(root)
    return VerifyResult(directory=str(root), files=len(expected), bytes=total, tensors=tensors)
