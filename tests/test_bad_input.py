"""Bad input, everywhere: every mistake ends in VaubanError / exit code 2 with one line.

Hypothesis throws malformed prompt files, malformed directions (tensors and files), bad
alpha / max_tokens / layer values and bad paths at the library's public functions, and bad
command lines at ``vauban.cli.main`` (in-process). Each case either works (a valid input the
generator happened to produce) or raises vauban's own one-line error; anything else is a
traceback, counted and reported by the last test of this module.
"""

from __future__ import annotations

import io
import json
import math
import os
import string
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from conftest import HARMFUL, HARMLESS, build_model
from vauban import DirectionResult, VaubanError, cut, export, load, measure, probe, quick, steer, verify
from vauban.cli import main
from vauban.methods.steering import Steering
from vauban.text.prompts import load_prompts

COUNTS: Counter[str] = Counter()
TRACEBACKS: list[str] = []
FAST = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def outcome(label: str, call) -> str:
    """Run one case: 'ok', 'error' (a one-line VaubanError) or a recorded traceback."""
    COUNTS["cases"] += 1
    try:
        call()
    except VaubanError as err:
        message = str(err)
        assert message and "\n" not in message, f"{label}: multi-line message {message!r}"
        COUNTS["errors"] += 1
        return "error"
    except Exception as err:
        COUNTS["tracebacks"] += 1
        TRACEBACKS.append(f"{label}: {type(err).__name__}: {err}")
        raise
    COUNTS["accepted"] += 1
    return "ok"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tokenizer):
    """A tiny GPT-2 (learned positions: a too-long prompt would be an IndexError) loaded as users do."""
    root = tmp_path_factory.mktemp("bad-input")
    path = root / "tiny-gpt2"
    build_model("gpt2").save_pretrained(path)
    tokenizer.save_pretrained(path)
    model, tok = load(path, device="cpu")
    direction = measure(model, tok, HARMFUL[:3], HARMLESS[:3])
    saved = direction.save(root / "direction.safetensors")
    return {
        "root": root,
        "path": path,
        "model": model,
        "tokenizer": tok,
        "direction": direction,
        "saved": saved,
    }


# --- prompt files ------------------------------------------------------------------------------

SUFFIXES = [".txt", ".jsonl", ".json", ".csv", ".tsv", ""]
text_lines = st.lists(st.text(string.printable + "é中\u2028", max_size=30), max_size=5)
CONTENTS = st.one_of(
    st.just(b""),
    st.just(b"\n \n\t\n"),
    st.binary(min_size=1, max_size=200),  # binary junk
    text_lines.map(lambda lines: "\n".join(lines).encode("latin-1", "replace") + b"\xff\xfe"),  # not UTF-8
    st.integers(2_000, 60_000).map(lambda n: ("x" * n + "\n").encode()),  # a huge line
    st.lists(
        st.one_of(
            st.none(),
            st.integers(),
            st.text(max_size=5),
            st.dictionaries(
                st.sampled_from(["prompt", "goal", "foo", "response"]),
                st.one_of(st.none(), st.integers(), st.text(max_size=8)),
            ),
            st.lists(st.integers(), max_size=2),
        ),
        max_size=4,
    ).map(lambda xs: json.dumps(xs).encode()),
    st.lists(st.lists(st.text(string.ascii_letters + ' ,"\n', max_size=6), max_size=4), max_size=5).map(
        lambda rows: "\n".join(",".join(r) for r in rows).encode()
    ),  # CSV with ragged/wrong columns
    st.sampled_from(
        [
            b"prompt,other\nonly-one-cell\n",
            b'goal\n""\n',
            b'{"prompt": 1}\n',
            b"[1, 2]",
            b'{"prompt": "ok"}\n{bad json\n',
            b'"just a string"',
            b"\x00\x00\x00",
        ]
    ),
)


@FAST
@given(suffix=st.sampled_from(SUFFIXES), content=CONTENTS)
def test_malformed_prompt_files_are_one_line_errors(tiny, tmp_path_factory, suffix, content):
    path = tmp_path_factory.mktemp("prompts") / f"prompts{suffix}"
    path.write_bytes(content)
    result = outcome(f"load_prompts({content[:30]!r}{suffix})", lambda: load_prompts(path))
    if result == "ok":  # whatever was accepted must go through the model or fail clearly
        outcome(
            f"measure({content[:30]!r}{suffix})",
            lambda: measure(tiny["model"], tiny["tokenizer"], path, HARMLESS[:2]),
        )


@pytest.mark.parametrize(
    "source", [[], [""], ["ok", "  "], ["ok", 3], "no-such-set", 42, "/no/such/file.txt", [b"bytes"]]
)
def test_bad_prompt_arguments(tiny, source):
    assert (
        outcome(
            f"prompts {source!r}",
            lambda: quick.measure_direction(tiny["model"], tiny["tokenizer"], source, HARMLESS[:2]),
        )
        == "error"
    )


def test_a_directory_or_unreadable_file_as_prompts(tiny, tmp_path):
    assert outcome("dir as prompts", lambda: load_prompts(tmp_path)) == "error"
    locked = tmp_path / "locked.txt"
    locked.write_text("hello\n")
    locked.chmod(0)
    if os.geteuid() != 0:  # root reads anyway
        assert outcome("unreadable prompts", lambda: load_prompts(locked)) == "error"


# --- directions ----------------------------------------------------------------------------------

D = 64  # the tiny models' hidden size
bad_values = st.sampled_from([math.nan, math.inf, -math.inf])


@st.composite
def malformed_vectors(draw):
    kind = draw(st.sampled_from(["size", "nonfinite", "zero", "dtype", "shape", "not a tensor"]))
    if kind == "size":
        return torch.randn(draw(st.integers(0, 200).filter(lambda n: n != D)))
    if kind == "nonfinite":
        vec = torch.randn(D)
        vec[draw(st.integers(0, D - 1))] = draw(bad_values)
        return vec
    if kind == "zero":
        return torch.zeros(D, dtype=draw(st.sampled_from([torch.float32, torch.bfloat16, torch.float64])))
    if kind == "dtype":
        dtype = draw(st.sampled_from([torch.int64, torch.int8, torch.bool, torch.complex64, torch.uint8]))
        return torch.ones(D, dtype=dtype) if dtype != torch.complex64 else torch.randn(D, dtype=dtype)
    if kind == "shape":
        return torch.randn(draw(st.sampled_from([(1, D), (D, 2), (2, D), ()])))
    return draw(st.sampled_from([None, "direction", [0.1] * D, 3.0, {"direction": 1}]))


@FAST
@given(vec=malformed_vectors())
def test_malformed_direction_tensors(tiny, vec):
    model, tok = tiny["model"], tiny["tokenizer"]
    label = f"direction {getattr(vec, 'dtype', type(vec).__name__)} {tuple(getattr(vec, 'shape', ()))}"
    # raw tensors: an error or (for a (1, D) row, or integers that cut/steer convert) a result
    outcome(f"probe {label}", lambda: probe(model, tok, "hello", vec))
    outcome(f"steer {label}", lambda: steer(model, tok, "hello", vec, max_tokens=2))
    outcome(f"cut {label}", lambda: cut(model, vec).undo())
    # as a DirectionResult, every one of them is refused where it is made
    assert outcome(f"DirectionResult {label}", lambda: DirectionResult(vec, 0, (0.1,) * 4, D, "m")) == "error"


@FAST
@given(
    layer=st.one_of(st.integers(-5, 10), st.just(True), st.floats(allow_nan=True)),
    scores=st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=5),
    d_model=st.one_of(st.integers(-2, 70), st.just(1.5)),
)
def test_malformed_direction_fields(layer, scores, d_model):
    outcome(
        "DirectionResult fields", lambda: DirectionResult(torch.randn(D), layer, tuple(scores), d_model, "m")
    )


@st.composite
def corrupted_files(draw, saved: Path):
    kind = draw(
        st.sampled_from(
            ["random", "truncated", "flipped", "no metadata", "bad metadata", "wrong tensors", "empty"]
        )
    )
    data = saved.read_bytes()
    if kind == "random":
        return draw(st.binary(max_size=300))
    if kind == "truncated":
        return data[: draw(st.integers(0, len(data) - 1))]
    if kind == "flipped":
        at = draw(st.integers(0, min(len(data) - 1, 400)))  # in the header: structure, not values
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    if kind == "empty":
        return b""
    buffer = Path(f"/tmp/vauban-bad-{os.getpid()}.safetensors")
    tensors = {"direction": torch.randn(D)}
    metadata = None
    if kind == "bad metadata":
        meta = {
            "layer_index": draw(st.one_of(st.integers(-3, 9), st.text(max_size=3))),
            "cosine_scores": draw(st.one_of(st.lists(st.floats(), max_size=4), st.text(max_size=3))),
            "d_model": draw(st.one_of(st.just(D), st.integers(-1, 200), st.none())),
        }
        if draw(st.booleans()):
            meta.pop(draw(st.sampled_from(sorted(meta))))
        metadata = {"vauban": draw(st.sampled_from([json.dumps(meta), "{oops", "[]", "null"]))}
    if kind == "wrong tensors":
        tensors = {
            draw(st.sampled_from(["direction", "other"])): draw(
                malformed_vectors().filter(
                    lambda v: isinstance(v, torch.Tensor) and v.dim() > 0 and v.dtype != torch.complex64
                )
            )
        }
        metadata = {
            "vauban": json.dumps(
                {"layer_index": 0, "cosine_scores": [0.1] * 4, "d_model": D, "model_path": "m"}
            )
        }
    save_file(tensors, str(buffer), metadata=metadata)
    out = buffer.read_bytes()
    buffer.unlink()
    return out


@FAST
@given(data=st.data())
def test_corrupted_direction_files(tiny, tmp_path_factory, data):
    content = data.draw(corrupted_files(tiny["saved"]))
    path = tmp_path_factory.mktemp("dir") / "direction.safetensors"
    path.write_bytes(content)
    outcome("DirectionResult.load(corrupted)", lambda: DirectionResult.load(path))


# --- alpha, max_tokens, layers -------------------------------------------------------------------

weird_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**12), 10**12),
    st.sampled_from([None, "1", True, [1.0], 1e300, -1e300]),
)


@FAST
@given(alpha=weird_numbers)
def test_bad_alpha(tiny, alpha):
    model, direction = tiny["model"], tiny["direction"]

    def cut_and_undo():
        cut(model, direction, alpha=alpha).undo()

    results = {
        outcome(f"cut alpha={alpha!r}", cut_and_undo),
        outcome(f"steer alpha={alpha!r}", lambda: Steering(model, direction, alpha)),
    }
    assert len(results) == 1  # the same rule everywhere
    bad = (
        not isinstance(alpha, (int, float))
        or isinstance(alpha, bool)
        or not math.isfinite(alpha)
        or abs(alpha) > 1000
    )
    assert results == ({"error"} if bad else {"ok"})


@FAST
@given(max_tokens=st.one_of(st.integers(-(10**6), 0), st.sampled_from([1.5, "8", None, True, math.nan])))
def test_bad_max_tokens(tiny, max_tokens):
    assert (
        outcome(
            f"steer max_tokens={max_tokens!r}",
            lambda: quick.steer_prompt(
                tiny["model"], tiny["tokenizer"], "hi", tiny["direction"], max_tokens=max_tokens
            ),
        )
        == "error"
    )


@FAST
@given(
    layer=st.one_of(
        st.integers(-100, 100).filter(lambda n: not 0 <= n < 4),
        st.sampled_from([1.5, "2", None, True, math.nan]),
    )
)
def test_bad_layer_indices(tiny, layer):
    model, tok, direction = tiny["model"], tiny["tokenizer"], tiny["direction"]
    cases = [
        ("at_layer", lambda: direction.at_layer(layer)),
        ("Steering layers", lambda: Steering(model, direction, layers=[layer])),
        ("cut layers", lambda: cut(model, direction, layers=[layer]).undo()),
    ]
    if layer is not None:
        cases.append(("measure layer", lambda: measure(model, tok, HARMFUL[:2], HARMLESS[:2], layer=layer)))
    for name, call in cases:
        assert outcome(f"{name}={layer!r}", call) == "error"


# --- paths ----------------------------------------------------------------------------------------


def test_bad_paths(tiny, tmp_path):
    model, tok, direction = tiny["model"], tiny["tokenizer"], tiny["direction"]
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    (tmp_path / "bad-config").mkdir()
    (tmp_path / "bad-config" / "config.json").write_text("{")
    (tmp_path / "taken.safetensors").mkdir()
    cases = {
        "load missing": lambda: load(tmp_path / "missing"),
        "load empty dir": lambda: load(tmp_path / "empty"),
        "load a text file": lambda: load(a_file),
        "load NUL in path": lambda: load("bad\0path"),
        "load dir with bad config": lambda: load(tmp_path / "bad-config"),
        "export under a file": lambda: export(model, tok, a_file / "out"),
        "export onto a file": lambda: export(model, tok, a_file),
        "export into non-empty dir": lambda: export(model, tok, tmp_path / "full"),
        "save direction to a dir": lambda: direction.save(tmp_path / "taken.safetensors"),
        "save direction under a file": lambda: direction.save(a_file / "d.safetensors"),
        "load direction missing": lambda: DirectionResult.load(tmp_path / "nope.safetensors"),
        "load direction from a dir": lambda: DirectionResult.load(tmp_path / "empty"),
        "verify a file": lambda: verify(a_file),
        "verify a non-export": lambda: verify(tmp_path / "full"),
        "abliterate under a file": lambda: quick.abliterate(
            model, tok, output_dir=a_file / "o", direction=direction
        ),
        "prompts NUL path": lambda: load_prompts("a\0b.txt"),
    }
    for name, call in cases.items():
        assert outcome(name, call) == "error", name


# --- the command line ----------------------------------------------------------------------------


def run_cli(argv: list[str]) -> tuple[int, str]:
    err, out = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse
            code = exit_.code
    return code, err.getvalue()


@pytest.fixture(scope="module")
def cli_files(tiny):
    root = tiny["root"]
    files = {
        "binary": b"\x00\x01\x02\xff" * 20,
        "latin1": "caf\xe9\n".encode("latin-1"),
        "empty": b"",
        "huge": b"y" * 5000 + b"\n",
        "short.csv": b"b,prompt\nonly\n",
    }  # row 2 lacks the prompt column
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / "empty.safetensors").write_bytes(b"")
    DirectionResult(torch.randn(32), 0, (0.5,), 32, "other").save(root / "other-model.safetensors")
    (root / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    return root


BAD_OPTIONS = [
    ["--harmful", "binary"],
    ["--harmful", "latin1"],
    ["--harmful", "empty"],
    ["--harmful", "huge"],
    ["--harmless", "short.csv"],
    ["--harmful", "no-such-file"],
    ["--layer", "99"],
    ["--layer", "-1"],
    ["--layer", "x"],
    ["--batch-size", "0"],
    ["--batch-size", "-4"],
    ["--max-tokens", "0"],
    ["--max-tokens", "-3"],
    ["--device", "tpu"],
    ["--dtype", "int4"],
    ["--config", "no-such.toml"],
    ["--config", "binary"],
    ["--direction", "junk.safetensors"],
    ["--direction", "empty.safetensors"],
    ["--direction", "other-model.safetensors"],
    ["--direction", "no-such.safetensors"],
    ["--alpha", "nan"],
    ["--alpha", "inf"],
    ["--alpha", "1e9"],
    ["--alpha", "abc"],
    ["--alphas", "1,x"],
    ["--eval-prompts", "binary"],
]
COMMANDS = {
    "measure": [],
    "probe": ["hello"],
    "steer": ["hello"],
    "abliterate": ["-o", "out-{n}"],
    "sweep": ["-o", "sweep-{n}"],
}


def accepts(command: str, flag: str) -> bool:
    """Whether ``vauban COMMAND`` offers ``flag`` (each command offers only the options it reads)."""
    import argparse

    from vauban.cli.parser import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return any(flag in a.option_strings for a in sub.choices[command]._actions)


@FAST
@given(
    command=st.sampled_from(sorted(COMMANDS)), option=st.sampled_from(BAD_OPTIONS), n=st.integers(0, 10**6)
)
def test_cli_bad_options_exit_2_with_one_line(tiny, cli_files, monkeypatch, command, option, n):
    if not accepts(command, option[0]):
        option = ["--unknown-flag", option[1]]  # a mistyped flag is a bad input too
    monkeypatch.chdir(cli_files)
    base = [
        ("-q",),
        ("--model", str(tiny["path"])),
        ("--harmful", str(cli_files / "h.txt")),
        ("--harmless", str(cli_files / "b.txt")),
        ("--max-tokens", "2"),
    ]  # those the command offers
    argv = [
        command,
        *(a.format(n=n) for a in COMMANDS[command]),
        *(a for pair in base if accepts(command, pair[0]) for a in pair),
        *option,
    ]
    (cli_files / "h.txt").write_text("\n".join(HARMFUL[:2]))
    (cli_files / "b.txt").write_text("\n".join(HARMLESS[:2]))
    check_cli(argv)


def check_cli(argv: list[str]) -> None:
    COUNTS["cases"] += 1
    COUNTS["cli"] += 1
    code, err = run_cli(argv)
    lines = [line for line in err.splitlines() if line.strip()]
    if "Traceback" in err or code not in (0, 2):
        COUNTS["tracebacks"] += 1
        TRACEBACKS.append(f"vauban {' '.join(argv)}: exit {code}: {err[-300:]}")
    assert "Traceback" not in err, err
    assert code == 2, f"vauban {' '.join(argv)} exited {code}: {err}"
    assert len(lines) == 1 and lines[0].startswith("vauban: error: "), err
    COUNTS["errors"] += 1


@pytest.mark.parametrize(
    "argv",
    [
        ["frobnicate"],
        ["measure", "--model"],
        ["verify"],
        ["verify", "/no/such/dir"],
        ["verify", "{root}/binary"],
        ["verify", "{root}"],
        ["measure", "--model", "/no/such/model", "-q"],
        ["measure", "--model", "{root}/binary", "-q"],
        ["measure", "--model", "./missing.gguf", "-q"],
        ["evaluate", "{path}", "{path}", "{path}", "-q"],
        ["abliterate", "-q", "--model", "{path}", "-o", "{root}/binary/out"],
        ["measure", "-q", "--model", "{path}", "--harmful", "{path}"],
    ],
)
def test_cli_bad_commands_and_paths(tiny, cli_files, argv):
    check_cli([a.format(root=cli_files, path=tiny["path"]) for a in argv])


def test_zz_report_counts():
    """The figures for the issue: every bad input tried above, and how many gave a traceback."""
    if COUNTS["cases"] < 300:
        pytest.skip("run the whole module to get the figures")
    print(
        f"\nbad-input cases tried: {COUNTS['cases']} ({COUNTS['cli']} on the command line; one-line "
        f"errors {COUNTS['errors']}, valid inputs accepted {COUNTS['accepted']}), "
        f"tracebacks: {COUNTS['tracebacks']}"
    )
    assert COUNTS["tracebacks"] == 0, "\n".join(TRACEBACKS)
