"""Nothing lost, nothing unsafe: crash safety, integrity records, safe loading, determinism.

The SIGKILL test forks the export (the parent has already paid for importing torch and
building the model) and kills the child with SIGKILL at named points, found by wrapping the
functions the export calls at that moment, and at timed points in between.
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import json
import multiprocessing
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import pytest
import torch

import vauban.core.atomic as atomic
from conftest import HARMFUL, HARMLESS, build_model
from vauban import VaubanError, cut, export, load, measure, verify
from vauban.core.atomic import TEMP_TAG
from vauban.direction.results import DirectionResult
from vauban.exports.exporting import DIRECTION_FILE, RECORD_FILE

load_module = importlib.import_module("vauban.model.loading")  # the module, not vauban.load()


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VAUBAN_CACHE", str(tmp_path / "cache"))


def tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if TEMP_TAG in p.name)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny model saved as a local source directory, loaded, with a measured direction."""
    from conftest import build_tokenizer

    path = tmp_path_factory.mktemp("source") / "tiny-llama"
    build_model("llama").save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    model, tokenizer = load(path, device="cpu")
    direction = measure(model, tokenizer, HARMFUL, HARMLESS)
    return path, model, tokenizer, direction


# --- crash safety ------------------------------------------------------------------------------


def _pause_after(ready, original):
    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        ready.set()
        time.sleep(60)
        return result

    return wrapper


def _pause_before(ready, original):
    def wrapper(*args, **kwargs):
        ready.set()
        time.sleep(60)
        return original(*args, **kwargs)

    return wrapper


def _install_kill_point(point: str, ready, tokenizer) -> None:
    """Patch, in the child only, the function running at ``point`` so the child stops there."""
    import transformers.modeling_utils as modeling_utils

    import vauban.direction.results as results

    if point == "weights written":
        modeling_utils.safe_save_file = _pause_after(ready, modeling_utils.safe_save_file)
    elif point == "tokenizer written":
        tokenizer.save_pretrained = _pause_after(ready, tokenizer.save_pretrained)
    elif point == "direction half-written":
        results.save_file = _pause_after(ready, results.save_file)
    elif point == "record written, before fsync":
        atomic.fsync_tree = _pause_before(ready, atomic.fsync_tree)
    elif point == "fsynced, before rename":
        os.rename = _pause_before(ready, os.rename)
    elif point == "before atomic exchange":
        atomic._exchange = _pause_before(ready, atomic._exchange)
    elif point == "exchanged, old copy not yet removed":
        atomic._exchange = _pause_after(ready, atomic._exchange)
    elif point != "timed":
        raise AssertionError(point)


def _child(point, ready, model, tokenizer, direction, out, overwrite, marker):
    torch.set_num_threads(1)
    _install_kill_point(point, ready, tokenizer)
    with cut(model, direction) as applied:
        export(
            model,
            tokenizer,
            out,
            direction=direction,
            overwrite=overwrite,
            record={"marker": marker, "edited": len(applied.edited)},
        )
    ready.set()
    time.sleep(60)


FRESH_POINTS = [
    "weights written",
    "tokenizer written",
    "direction half-written",
    "record written, before fsync",
    "fsynced, before rename",
]
OVERWRITE_POINTS = [
    "weights written",
    "record written, before fsync",
    "before atomic exchange",
    "exchanged, old copy not yet removed",
]


def _kill_during_export(point, source, out, overwrite, marker, delay=None) -> None:
    _path, model, tokenizer, direction = source
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    child = ctx.Process(
        target=_child, args=(point, ready, model, tokenizer, direction, out, overwrite, marker)
    )
    child.start()
    if delay is None:
        assert ready.wait(30), f"export never reached {point!r}"
    else:
        time.sleep(delay)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert child.exitcode == -signal.SIGKILL


def _state(out: Path) -> str | None:
    """None if ``out`` is absent, else the marker of the complete, verified export there."""
    if not out.exists():
        return None
    verify(out)  # raises if anything in it is partial or changed
    return json.loads((out / RECORD_FILE).read_text())["marker"]


def test_sigkill_at_any_point_loses_nothing(source, tmp_path):
    """Kill -9 the export at named and timed points: the target is absent, the old export, or
    the complete new one; the source is untouched; the next export cleans up and succeeds."""
    src_path = source[0]
    before_source = tree_digest(src_path)
    tried, lost = 0, 0

    start = time.perf_counter()
    export(*source[1:3], tmp_path / "reference", direction=source[3])
    duration = time.perf_counter() - start

    runs = [(p, False, None) for p in FRESH_POINTS] + [(p, True, None) for p in OVERWRITE_POINTS]
    runs += [("timed", overwrite, duration * f) for overwrite in (False, True) for f in (0.2, 0.5, 0.8)]
    for i, (point, overwrite, delay) in enumerate(runs):
        out = tmp_path / f"run{i}" / "abliterated"
        if overwrite:
            export(*source[1:3], out, direction=source[3], record={"marker": "old"})
        _kill_during_export(point, source, out, overwrite, "new", delay)
        tried += 1
        try:
            state = _state(out)
        except VaubanError:
            state = "partial"
        allowed = {"old", "new"} if overwrite else {None, "new"}
        lost += state not in allowed
        assert state in allowed, f"kill at {point!r} (overwrite={overwrite}) left {state!r}"
        if delay is None:  # the killed writer left its temporary sibling behind
            assert leftovers(out.parent)
        # the killed writer's temporary sibling is removed by the next export to that path
        export(*source[1:3], out, direction=source[3], overwrite=True, record={"marker": "next"})
        assert _state(out) == "next"
        assert leftovers(out.parent) == []
    assert tree_digest(src_path) == before_source
    assert (tried, lost) == (len(runs), 0)
    print(f"\nkill points tried: {tried}, outputs lost or partial: {lost}")


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "no space left"),
        (OSError(errno.EACCES, "Permission denied"), "no permission"),
        (OSError(errno.EROFS, "Read-only file system"), "no permission"),
        # safetensors reports write errors as its own type, with the OS error number in the text
        (
            RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"),
            "no space left",
        ),
    ],
)
def test_write_errors_are_one_line_and_clean_up(source, tmp_path, monkeypatch, error, message):
    _path, model, tokenizer, direction = source
    out = tmp_path / "out"
    export(model, tokenizer, out, direction=direction, record={"marker": "old"})

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(type(tokenizer), "save_pretrained", fail)
    with pytest.raises(VaubanError, match=message) as info:
        export(model, tokenizer, out, direction=direction, overwrite=True, record={"marker": "new"})
    assert "\n" not in str(info.value) and str(out) in str(info.value)
    assert _state(out) == "old" and leftovers(tmp_path) == []


def test_real_full_disk_is_a_clear_error(source, tmp_path):
    """On a 64 KiB tmpfs (needs root; skipped elsewhere) the export really runs out of space."""
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        with pytest.raises(VaubanError, match="no space left on the device") as info:
            export(*source[1:3], mount / "out", direction=source[3])
        assert "\n" not in str(info.value)
        assert list(mount.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_direction_save_is_atomic(source, tmp_path, monkeypatch):
    direction = source[3]
    path = direction.save(tmp_path / "d.safetensors")
    before = path.read_bytes()
    import vauban.direction.results as results

    def fail(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results, "save_file", fail)
    with pytest.raises(VaubanError, match="no space left"):
        direction.save(path)
    assert path.read_bytes() == before and leftovers(tmp_path) == []
    assert path.stat().st_mode & 0o777 == path.with_suffix(".json").stat().st_mode & 0o777
    assert torch.equal(DirectionResult.load(path).direction, direction.direction)


def test_stale_temp_of_a_dead_process_is_removed_but_a_live_one_is_kept(source, tmp_path):
    out = tmp_path / "out"
    dead = tmp_path / f".out{TEMP_TAG}999999999-abc"  # no such pid
    dead.mkdir()
    (dead / "model.safetensors").write_bytes(b"partial")
    live = tmp_path / f".out{TEMP_TAG}{os.getppid()}-abc"
    live.mkdir()
    export(*source[1:3], out)
    assert not dead.exists() and live.exists()
    verify(out)


# --- integrity ---------------------------------------------------------------------------------


def test_record_lists_every_file_and_verify_names_the_bad_one(source, tmp_path):
    _path, model, tokenizer, direction = source
    out = export(model, tokenizer, tmp_path / "out", direction=direction)
    record = json.loads((out / RECORD_FILE).read_text())
    files = {p.name for p in out.iterdir()} - {RECORD_FILE}
    assert set(record["files"]) == files
    assert {"model.safetensors", "config.json", "tokenizer.json", DIRECTION_FILE} <= files
    assert all(len(v["sha256"]) == 64 for v in record["files"].values())
    assert {"torch", "transformers", "vauban", "safetensors", "python"} <= set(record["versions"])
    result = verify(out)
    assert result.files == len(files) and result.tensors > 0
    mask = os.umask(0)
    os.umask(mask)  # modes as a plain write makes them (not mkdtemp's / safetensors' private 0o700/0o600)
    assert {(p.stat().st_mode & 0o777) for p in out.iterdir()} == {0o666 & ~mask}
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask

    weights = out / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one flipped bit in the last tensor
    weights.write_bytes(bytes(data))
    with pytest.raises(VaubanError, match=r"model\.safetensors changed") as info:
        verify(out)
    assert "\n" not in str(info.value)
    weights.write_bytes(bytes(data[:-100]))
    with pytest.raises(VaubanError, match=r"model\.safetensors has \d+ bytes"):
        verify(out)
    (out / "tokenizer.json").unlink()
    (out / "notes.txt").write_text("hi")
    with pytest.raises(VaubanError, match=r"tokenizer\.json missing.*notes\.txt unexpected"):
        verify(out)


def test_verify_rejects_what_is_not_an_export(tmp_path):
    with pytest.raises(VaubanError, match="not a directory"):
        verify(tmp_path / "nothing")
    with pytest.raises(VaubanError, match="not exported by vauban"):
        verify(tmp_path)
    (tmp_path / RECORD_FILE).write_text("{not json")
    with pytest.raises(VaubanError, match="unreadable"):
        verify(tmp_path)
    (tmp_path / RECORD_FILE).write_text(json.dumps({"source": "old export"}))
    with pytest.raises(VaubanError, match="lists no file hashes"):
        verify(tmp_path)


def test_truncated_weights_are_caught_even_with_a_matching_record(source, tmp_path):
    out = export(*source[1:3], tmp_path / "out")
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    record = json.loads((out / RECORD_FILE).read_text())
    record["files"]["model.safetensors"] = {
        "bytes": weights.stat().st_size,
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
    }
    (out / RECORD_FILE).write_text(json.dumps(record))
    with pytest.raises(VaubanError, match="not a complete safetensors file"):
        verify(out)


def test_demo_chunks_are_hash_checked_before_use(tmp_path, monkeypatch):
    parts = []
    for i in range(6):
        part = tmp_path / f"part{i}.bin"
        part.write_bytes(b"GGUF" + bytes(100))
        parts.append(part)
    monkeypatch.setattr(importlib.import_module("vauban.model.demo"), "demo_gguf_parts", lambda: parts)
    converted = []
    monkeypatch.setattr(load_module, "convert_gguf", lambda *a, **k: converted.append(a))
    with pytest.raises(VaubanError, match="not the expected model; reinstall"):
        load_module.demo_model_dir()
    demo = load_module.cache_dir() / "demo"
    assert converted == [] and [p.name for p in demo.iterdir()] == []


# --- safe loading ------------------------------------------------------------------------------


class _Payload:
    """Unpickling this runs a command: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bin_checkpoint(tmp_path: Path, tokenizer, extra: dict) -> Path:
    path = tmp_path / "bin-model"
    model = build_model("llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "model.safetensors").unlink()
    torch.save({**model.state_dict(), **extra}, path / "pytorch_model.bin")
    return path


def test_pickled_bin_loads_tensors_only_and_never_runs_code(tmp_path, tokenizer):
    marker = tmp_path / "PWNED"
    evil = _bin_checkpoint(tmp_path, tokenizer, {"payload": _Payload(marker)})
    with pytest.raises(VaubanError, match=r"pickled \.bin weights holding more than plain tensors"):
        load(evil, device="cpu")
    assert not marker.exists()
    benign = _bin_checkpoint(tmp_path / "ok", tokenizer, {})
    model, _ = load(benign, device="cpu")
    expected = build_model("llama").state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())


def _custom_code_checkpoint(tmp_path: Path, tokenizer) -> tuple[Path, Path]:
    """A checkpoint whose config asks for its own Python code, which touches a marker file."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "custom"
    build_model("llama").save_pretrained(path)
    tokenizer.save_pretrained(path)
    config = json.loads((path / "config.json").read_text())
    config.update(
        model_type="custom_evil",
        auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"},
    )
    (path / "config.json").write_text(json.dumps(config))
    (path / "evil.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    return path, marker


def test_remote_code_is_not_run_without_the_flag(tmp_path, tokenizer):
    path, marker = _custom_code_checkpoint(tmp_path, tokenizer)
    with pytest.raises(VaubanError, match=r"trust_remote_code=True \(CLI: --trust-remote-code") as info:
        load(path, device="cpu")
    assert "\n" not in str(info.value) and not marker.exists()


def test_cli_runs_remote_code_only_with_trust_remote_code(tmp_path, tokenizer, capsys):
    from transformers.dynamic_module_utils import HF_MODULES_CACHE

    from vauban.cli import main

    path, marker = _custom_code_checkpoint(tmp_path, tokenizer)
    assert main(["measure", "-q", "--model", str(path)]) == 2
    assert "--trust-remote-code" in capsys.readouterr().err and not marker.exists()
    try:
        main(["measure", "-q", "--model", str(path), "--trust-remote-code"])  # fails later: no EvilConfig
        assert marker.exists()  # the user asked for it, so the checkpoint's code did run
    finally:  # transformers copied the code into its modules cache
        shutil.rmtree(Path(HF_MODULES_CACHE) / "transformers_modules" / path.name, ignore_errors=True)


def test_a_local_path_never_touches_the_network(tmp_path, tokenizer, monkeypatch):
    import huggingface_hub

    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for name in ("hf_hub_download", "snapshot_download", "model_info"):
        monkeypatch.setattr(huggingface_hub, name, refuse)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    path = tmp_path / "local"
    build_model("qwen2").save_pretrained(path)
    tokenizer.save_pretrained(path)
    _model, tok = load(path, device="cpu")
    assert calls == [] and len(tok) == len(tokenizer)


# --- determinism -------------------------------------------------------------------------------


def test_same_inputs_give_bit_identical_direction_and_export(tmp_path, tokenizer):
    records, directions = [], []
    for run in range(2):
        model = build_model("qwen2", seed=3)
        direction = measure(model, tokenizer, HARMFUL, HARMLESS)
        directions.append(direction)
        with cut(model, direction) as applied:
            out = export(
                model,
                tokenizer,
                tmp_path / f"run{run}",
                direction=direction,
                record={"edited": len(applied.edited)},
            )
        records.append(json.loads((out / RECORD_FILE).read_text()))
    assert torch.equal(directions[0].direction, directions[1].direction)
    assert torch.equal(directions[0].harmful_means, directions[1].harmful_means)
    assert directions[0].cosine_scores == directions[1].cosine_scores
    assert records[0]["files"] == records[1]["files"]
    assert records[0]["versions"] == records[1]["versions"]
