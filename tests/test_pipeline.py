"""Measure, probe, steer and evaluate on tiny random models."""

from __future__ import annotations

import re

import pytest
import torch

from conftest import build_model
from vauban import DirectionResult, VaubanError, cut, measure, probe
from vauban.evaluation.evaluating import evaluate
from vauban.methods.steering import Steering, steer
from vauban.model import arch
from vauban.runtime.activations import last_token_residuals
from vauban.runtime.generating import generate


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gemma3_text"])
def test_batched_residuals_match_one_by_one(model_type, tokenizer, prompt_sets):
    """Left padding, masks and mask-derived positions make batching invisible."""
    model = build_model(model_type)
    prompts = prompt_sets[0] + ["Hi", "A much longer prompt than the others, to force padding."]
    batched = last_token_residuals(model, tokenizer, prompts, batch_size=8)
    single = torch.cat([last_token_residuals(model, tokenizer, [p]) for p in prompts])
    assert torch.allclose(batched, single, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "gpt2", "gemma3_text", "qwen3_moe"])
def test_shared_opening_residuals_match_one_by_one(model_type, tokenizer, prompt_sets):
    """Prompts with a system prompt share a long opening: each batch runs it once, as one row
    (a single prompt runs unshared), and the residuals agree to float rounding, every layer. A
    sliding window shorter than the prompts (gemma3's 64 tokens) runs unshared."""
    from vauban.runtime.batching import common_prefix
    from vauban.text.formatting import Formatting
    from vauban.text.prompts import encode_chat

    model = build_model(model_type)
    fmt = Formatting(system_prompt="Answer briefly and kindly.")
    prompts = prompt_sets[0] + ["Hi", "A much longer prompt than the others, to force padding."]
    shapes = []
    embed = model.get_input_embeddings()
    handle = embed.register_forward_hook(lambda _m, args, _out: shapes.append(tuple(args[0].shape)))
    batched = last_token_residuals(model, tokenizer, prompts, batch_size=8, formatting=fmt)
    handle.remove()
    single = torch.cat([last_token_residuals(model, tokenizer, [p], formatting=fmt) for p in prompts])
    ids = encode_chat(tokenizer, prompts, fmt)
    opening = common_prefix(ids)
    assert opening >= 30  # the system block and the user header
    longest = max(map(len, ids))
    if model_type == "gemma3_text":
        assert longest > 64 and shapes == [(8, longest)]
    else:  # one batch of 8: the opening once, as one row, then the 8 remainders
        assert shapes == [(1, opening), (8, longest - opening)]
    assert torch.allclose(batched, single, atol=1e-5, rtol=1e-4)


def test_residuals_are_read_before_the_final_norm(tokenizer):
    model = build_model("llama")
    ids = tokenizer(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": "Hello"}], add_generation_prompt=True, tokenize=False
        ),
        return_tensors="pt",
        add_special_tokens=False,
    )
    hidden = model(**ids, output_hidden_states=True).hidden_states
    ours = last_token_residuals(model, tokenizer, ["Hello"])[0]
    assert torch.allclose(ours[-2], hidden[-2][0, -1], atol=1e-5)  # an inner layer: identical
    final_norm_applied = hidden[-1][0, -1]
    assert not torch.allclose(ours[-1], final_norm_applied, atol=1e-3)


def test_measure_direction_result(tokenizer, prompt_sets):
    model = build_model("qwen2")
    result = measure(model, tokenizer, *prompt_sets)
    assert isinstance(result, DirectionResult)
    assert result.direction.shape == (64,)
    assert abs(float(result.direction.norm()) - 1) < 1e-5
    assert len(result.cosine_scores) == 4
    assert result.layer_index == max(range(4), key=lambda i: result.cosine_scores[i])
    assert re.fullmatch(
        r"DirectionResult: layer=\d+, d_model=64, shape=\(64,\), max_cosine=-?\d\.\d{4}, model=\S+",
        result.summary(),
    )
    forced = measure(model, tokenizer, *prompt_sets, layer=0)
    assert forced.layer_index == 0
    assert torch.allclose(result.at_layer(0).direction, forced.direction)


def test_direction_save_load_roundtrip(tmp_path, tokenizer, prompt_sets):
    result = measure(build_model("llama"), tokenizer, *prompt_sets)
    path = result.save(tmp_path / "refusal")
    assert path.name == "refusal.safetensors" and (tmp_path / "refusal.json").is_file()
    back = DirectionResult.load(path)
    assert torch.equal(back.direction, result.direction)
    assert back.record() == result.record()
    assert torch.equal(back.layer_directions(), result.layer_directions())
    with pytest.raises(VaubanError, match="no direction file"):
        DirectionResult.load(tmp_path / "missing.safetensors")


def test_measure_rejects_bad_prompts(tokenizer):
    model = build_model("llama")
    with pytest.raises(VaubanError, match="empty"):
        measure(model, tokenizer, [], ["fine"])
    with pytest.raises(VaubanError, match=r"harmless prompts\[1\] is a int"):
        measure(model, tokenizer, ["fine"], ["ok", 3])


def test_probe_projections_and_cut(tokenizer, prompt_sets):
    model = build_model("llama")
    direction = measure(model, tokenizer, *prompt_sets)
    before = probe(model, tokenizer, prompt_sets[0][0], direction)
    assert len(before.projections) == arch.num_layers(model)
    assert before.summary().startswith("ProbeResult: layers=4")
    with cut(model, direction, embeddings=True):
        after = probe(model, tokenizer, prompt_sets[0][0], direction)
    assert max(abs(p) for p in after.projections) < 1e-4


def test_steering_alpha_zero_reproduces_generation(tokenizer):
    model = build_model("llama")
    d = torch.randn(64)
    plain = generate(model, tokenizer, ["Tell me a story."], max_tokens=12)
    assert steer(model, tokenizer, "Tell me a story.", d, alpha=0.0, max_tokens=12).text == plain[0]


@pytest.mark.parametrize("model_type", ["qwen2", "gemma3_text", "gpt2"])
def test_steering_removes_direction_at_every_position_and_layer(model_type, tokenizer):
    model = build_model(model_type)
    d = torch.randn(64)
    d = d / d.norm()
    ids = tokenizer(["Tell me a story.", "Hi"], return_tensors="pt", padding=True)
    torch.set_grad_enabled(False)
    plain = model(**ids).logits
    with Steering(model, d, 1.0):
        out = model(**ids, output_hidden_states=True)
    # hidden_states[0] is the embedding output (steered by the pre-hook on layer 0); the last
    # entry has the final norm applied, so it is not a residual-stream reading.
    for hidden in out.hidden_states[:-1]:
        assert float((hidden @ d).abs().max()) < 1e-5
    assert not torch.allclose(plain, out.logits, atol=1e-3)
    with Steering(model, d, 0.5, layers=[1]):
        half = model(**ids, output_hidden_states=True).hidden_states[2]
    raw = model(**ids, output_hidden_states=True).hidden_states[2]
    assert torch.allclose(half @ d, 0.5 * (raw @ d), atol=1e-5)
    torch.set_grad_enabled(True)


def test_steer_records_and_cleans_up(tokenizer):
    model = build_model("llama")
    d = torch.randn(64)
    result = steer(model, tokenizer, "Hello", d, alpha=1.0, max_tokens=6)
    assert 1 <= result.tokens <= 6
    assert all(abs(x) < 1e-4 for row in result.projections_after for x in row)
    assert result.summary().startswith("SteerResult: alpha=1.00")
    blocks = arch.decoder_layers(model)
    with pytest.raises(RuntimeError, match="boom"), Steering(model, d):
        assert all(len(b._forward_hooks) == 1 for b in blocks)
        assert len(blocks[0]._forward_pre_hooks) == 1
        raise RuntimeError("boom")
    assert all(len(b._forward_hooks) == 0 and not b._forward_pre_hooks for b in blocks)
    with pytest.raises(VaubanError, match="max_tokens"):
        steer(model, tokenizer, "Hello", d, max_tokens=0)
    with pytest.raises(VaubanError, match="alpha"):
        steer(model, tokenizer, "Hello", d, alpha=float("nan"))
    with pytest.raises(VaubanError, match="hidden size"):
        steer(model, tokenizer, "Hello", torch.randn(32))
    with pytest.raises(VaubanError, match=r"0\.\.3"):
        Steering(model, d, layers=[4])


def test_evaluate_one_model_with_cut_equals_two_models(tokenizer, prompt_sets):
    import copy

    model = build_model("llama")
    d = measure(model, tokenizer, *prompt_sets)
    reference = [("Say hi.", "Hi there, nice to meet you."), ("Count to three.", "One, two, three.")]
    twin = copy.deepcopy(model)
    cut(twin, d)
    two = evaluate(model, twin, tokenizer, prompt_sets[0][:3], reference=reference, max_tokens=5)
    with cut(model, d):
        one = evaluate(model, model, tokenizer, prompt_sets[0][:3], reference=reference, max_tokens=5)
    assert one == two
    assert one.n_prompts == 3 and one.kl > 0
    assert re.fullmatch(
        r"EvalResult: refusal=\d+% → \d+%, perplexity=\d+\.\d\d → \d+\.\d\d, kl=\d\.\d{4}, prompts=3",
        one.summary(),
    )
    with pytest.raises(VaubanError, match="no cut applied"):
        evaluate(model, model, tokenizer, prompt_sets[0][:1], reference=reference)


def test_mismatched_tokenizer_is_one_clear_error(tokenizer):
    from transformers import AutoConfig, AutoModelForCausalLM

    small = AutoModelForCausalLM.from_config(
        AutoConfig.for_model(
            "llama",
            vocab_size=100,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    )
    with pytest.raises(VaubanError, match="belong to different models"):
        measure(small, tokenizer, ["a"], ["b"])
    with pytest.raises(VaubanError, match="belong to different models"):
        generate(small, tokenizer, ["a"])


def test_quick_passes_empty_lists_through_to_a_clear_error(tokenizer):
    from vauban import quick

    with pytest.raises(VaubanError, match="empty"):
        quick.measure_direction(build_model("llama"), tokenizer, harmful=[])
