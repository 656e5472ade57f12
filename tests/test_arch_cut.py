"""The architecture table and the cut, on tiny random models of every supported family."""

from __future__ import annotations

import pytest
import torch

from conftest import POST_NORM_TYPES, TINY_CONFIGS, build_model
from vauban import VaubanError, active_cuts, cut, original_weights
from vauban.model import arch
from vauban.runtime.activations import last_token_residuals

PROMPTS = ["Hello there, how are you?", "Tell me a story.", "x"]


def random_direction(model: torch.nn.Module, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(arch.d_model(model), generator=g)
    return d / d.norm()


@pytest.mark.parametrize("model_type", sorted(TINY_CONFIGS))
def test_cut_with_embeddings_removes_direction_from_every_layer(model_type, tokenizer):
    model = build_model(model_type)
    d = random_direction(model)
    before = last_token_residuals(model, tokenizer, PROMPTS) @ d
    with cut(model, d, embeddings=True):
        after = last_token_residuals(model, tokenizer, PROMPTS)
    norms = after.norm(dim=-1)
    assert before.abs().max() > 1e-3  # there was something to remove
    assert ((after @ d).abs() / norms).max() < 1e-5


@pytest.mark.parametrize("model_type", POST_NORM_TYPES)
def test_post_norm_writers_need_the_gain_correction(model_type, tokenizer):
    """Orthogonalizing o_proj/down_proj against d itself leaves d in the residual when a
    post-norm with non-uniform gain sits before the residual add; vauban's correction does not."""
    model = build_model(model_type)
    d = random_direction(model)
    writers = arch.residual_writers(model)
    assert all(w.post_norm is not None for w in writers)
    with torch.no_grad():
        for w in writers:  # the naive edit: W <- W - d dᵀ W
            w.weight.sub_(torch.outer(d, d @ w.weight))
        for emb in arch.embeddings(model):
            emb.weight.sub_(torch.outer(emb.weight @ d, d))
    naive = last_token_residuals(model, tokenizer, PROMPTS)
    assert ((naive @ d).abs() / naive.norm(dim=-1)).max() > 1e-3


def test_writers_cover_attention_and_mlp_of_every_layer():
    model = build_model("qwen3_moe")
    names = [w.name for w in arch.residual_writers(model)]
    assert len(names) == 2 * 4
    assert all(".mlp.experts.down_proj" in n for n in names[1::2])
    gpt2 = build_model("gpt2")
    assert {w.axis for w in arch.residual_writers(gpt2)} == {-1}


def test_unknown_architecture_is_named():
    class Odd(torch.nn.Module):
        class config:
            model_type = "my_new_arch"

    with pytest.raises(VaubanError, match="my_new_arch"):
        arch.residual_writers(Odd())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("model_type", ["qwen2", "gemma3_text", "gpt2"])
def test_undo_restores_every_bit(model_type, dtype):
    model = build_model(model_type, dtype=dtype)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    c = cut(model, random_direction(model), alpha=1.3, embeddings=True)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, original[k])]
    assert changed, "the cut changed nothing"
    c.undo()
    for key, value in model.state_dict().items():
        assert torch.equal(value.view(torch.uint8), original[key].view(torch.uint8)), key
    c.apply()  # the cached re-apply gives the same weights as the first apply
    reapplied = {k: v.clone() for k, v in model.state_dict().items()}
    c.undo()
    fresh = cut(model, random_direction(model), alpha=1.3, embeddings=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, reapplied[key]), key
    fresh.undo()


def test_cuts_stack_and_original_weights_context():
    model = build_model("llama")
    w = arch.residual_writers(model)[0].weight
    w0 = w.detach().clone()
    a = cut(model, random_direction(model, 1))
    w1 = w.detach().clone()
    b = cut(model, random_direction(model, 2))
    assert active_cuts(model) == [a, b]
    with pytest.raises(VaubanError, match="undo that one first"):
        a.undo()
    with original_weights(model):
        assert torch.equal(w, w0)
        assert active_cuts(model) == []
    assert active_cuts(model) == [a, b]
    b.undo()
    assert torch.equal(w, w1)
    a.undo()
    assert torch.equal(w, w0)


def test_alpha_zero_changes_nothing_and_alpha_scales_the_removal(tokenizer):
    model = build_model("llama")
    d = random_direction(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with cut(model, d, alpha=0.0):
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    writer = arch.residual_writers(model, [0])[0].weight
    proj = d @ writer
    with cut(model, d, alpha=0.5, layers=[0]):
        assert torch.allclose(d @ writer, 0.5 * proj, atol=1e-6)
    with cut(model, d, alpha=2.0, layers=[0]):
        assert torch.allclose(d @ writer, -proj, atol=1e-6)


def test_cut_rejects_bad_directions_and_quantized_weights():
    model = build_model("llama")
    with pytest.raises(VaubanError, match="hidden size is 64"):
        cut(model, torch.ones(65))
    with pytest.raises(VaubanError, match="NaN"):
        cut(model, torch.full((64,), float("nan")))
    with pytest.raises(VaubanError, match="zero vector"):
        cut(model, torch.zeros(64))
    with pytest.raises(VaubanError, match="alpha"):
        cut(model, torch.ones(64), alpha=float("inf"))
    with pytest.raises(VaubanError, match="out of range"):
        cut(model, torch.ones(64), layers=[7])
    layer = arch.decoder_layers(model)[0]
    layer.self_attn.o_proj.weight = torch.nn.Parameter(
        torch.zeros(64, 64, dtype=torch.int8), requires_grad=False
    )
    with pytest.raises(VaubanError, match="float weights"):
        cut(model, torch.ones(64))
