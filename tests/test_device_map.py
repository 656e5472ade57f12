"""Models placed by accelerate's ``device_map`` (``device="auto"``, offloading): measure, generate
and score them as if they sat on one device. (Split over two GPUs: benchmarks/gpu.py.)"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import HARMFUL, build_model
from vauban import load_model
from vauban.evaluation.evaluating import Pair, answer_scores
from vauban.runtime.activations import last_token_residuals
from vauban.runtime.generating import generate


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("tiny") / "llama"
    build_model("llama").save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_auto_device_loads_through_device_map(saved, tokenizer):
    model, _ = load_model(saved, device="auto")
    # accelerate fills the GPUs first and offloads what does not fit; the tiny model fits on any
    # GPU (spread over several where there are), and stays in CPU memory where there is none
    expected = {"cuda"} if torch.cuda.is_available() else {"cpu"}
    assert {p.device.type for p in model.parameters()} == expected
    assert last_token_residuals(model, tokenizer, HARMFUL[:2]).shape == (2, 4, 64)


def test_offloaded_model_measures_generates_and_scores_like_the_original(saved, tokenizer, tmp_path):
    reference = AutoModelForCausalLM.from_pretrained(saved).eval()
    placement = {
        "model.embed_tokens": "cpu",
        "model.rotary_emb": "cpu",
        "model.layers.0": "cpu",
        "model.layers.1": "cpu",
        "model.layers.2": "disk",
        "model.layers.3": "disk",
        "model.norm": "cpu",
        "lm_head": "cpu",
    }
    offloaded = AutoModelForCausalLM.from_pretrained(
        saved, device_map=placement, offload_folder=str(tmp_path)
    ).eval()
    assert any(p.device.type == "meta" for p in offloaded.parameters())  # really offloaded
    prompts = HARMFUL[:3]
    expected = last_token_residuals(reference, tokenizer, prompts)
    assert torch.allclose(last_token_residuals(offloaded, tokenizer, prompts), expected, atol=1e-5)
    assert generate(offloaded, tokenizer, prompts, max_tokens=6) == generate(
        reference, tokenizer, prompts, max_tokens=6
    )
    pairs = [(p, "Sure, here is how.") for p in prompts]
    scores = answer_scores(Pair(reference, offloaded), tokenizer, pairs)
    assert scores.kl < 1e-6 and scores.perplexity_before == pytest.approx(scores.perplexity_after)
