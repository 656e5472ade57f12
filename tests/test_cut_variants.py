"""Cut variants (per-layer kernels, per-layer / interpolated / projected directions, norm-preserving
edits, subspaces) on tiny models: each edit equals its formula and undoes bit-exactly."""

from __future__ import annotations

import pytest
import torch

from conftest import build_model
from vauban import VaubanError, cut, measure
from vauban.direction.measuring import measure_subspace
from vauban.direction.results import direction_at, directions_per_layer
from vauban.edit.cutting import LayerKernel, layer_bases
from vauban.methods.steering import Steering
from vauban.model import arch
from vauban.runtime.activations import last_token_residuals

PROMPTS = ["Hello there, how are you?", "Tell me a story.", "x"]
TYPES = ["llama", "gemma2", "gpt2", "qwen3_moe", "gpt_oss"]


def unit(n: int, seed: int) -> torch.Tensor:
    d = torch.randn(n, generator=torch.Generator().manual_seed(seed))
    return d / d.norm()


def per_layer_basis(model: torch.nn.Module, k: int = 1) -> torch.Tensor:
    n, d = arch.num_layers(model), arch.d_model(model)
    return torch.stack([torch.stack([unit(d, 10 * layer + j) for j in range(k)]) for layer in range(n)])


def expected_edit(
    w: torch.Tensor, axis: int, q: torch.Tensor, a: float, norm_preserving: bool
) -> torch.Tensor:
    """``W - a·Q Qᵀ W`` along the residual axis, rescaled per written vector when asked (float64)."""
    x = w.double().movedim(axis, -1)
    q = q.double()
    new = x - a * (x @ q.T) @ q
    if norm_preserving:
        new = new * (x.norm(dim=-1, keepdim=True) / new.norm(dim=-1, keepdim=True))
    return new.movedim(-1, axis)


def writer_basis(writer: arch.ResidualWriter, q: torch.Tensor) -> torch.Tensor:
    if writer.post_norm is None:
        return q
    gain = arch.norm_gain(writer.post_norm, q.shape[-1], torch.device("cpu"))
    basis, _ = torch.linalg.qr((gain * q).double().T)
    return basis.T.float()


def test_kernel_weights_follow_the_tent_formula():
    k = LayerKernel(peak=2.0, max_weight=1.5, min_weight=0.5, width=2.0)
    assert k.weights(6) == pytest.approx((0.5, 1.0, 1.5, 1.0, 0.5, 0.0))
    assert LayerKernel(peak=1.5, max_weight=1.2, min_weight=0.2, width=1.0).weights(4) == pytest.approx(
        (0.0, 0.7, 0.7, 0.0)
    )
    assert LayerKernel(peak=0.0, max_weight=0.9).weights(3) == (0.9, 0.9, 0.9)
    with pytest.raises(VaubanError, match="width"):
        LayerKernel(peak=1.0, width=0.0)


@pytest.mark.parametrize("model_type", TYPES)
@pytest.mark.parametrize("norm_preserving", [False, True])
def test_kernel_per_layer_edit_equals_its_formula_and_undoes_exactly(model_type, norm_preserving):
    model = build_model(model_type)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    n = arch.num_layers(model)
    bases = per_layer_basis(model)
    attention = LayerKernel(peak=1.0, max_weight=1.3, min_weight=0.4, width=1.5)
    mlp = [0.0, 0.5, 1.0, 1.5][:n]
    a_w, m_w = attention.weights(n), tuple(mlp)
    alpha = 0.9
    params = dict(model.named_parameters())
    with cut(model, bases, alpha=alpha, attention=attention, mlp=mlp, norm_preserving=norm_preserving) as c:
        for w in arch.residual_writers(model):
            scale = alpha * (a_w if w.kind == "attention" else m_w)[w.layer]
            name = next(k for k, p in params.items() if p is w.weight)
            before = original[name]
            if scale == 0:
                assert torch.equal(w.weight, before) and f"{w.name}.weight" not in c.edited
                continue
            q = writer_basis(w, bases[w.layer])
            want = expected_edit(before, w.axis, q, scale, norm_preserving)
            assert torch.allclose(w.weight.double(), want, atol=2e-6, rtol=1e-5), w.name
            if norm_preserving:
                norms = w.weight.double().movedim(w.axis, -1).norm(dim=-1)
                assert torch.allclose(norms, before.double().movedim(w.axis, -1).norm(dim=-1), rtol=1e-5)
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_norm_preserving_alpha_one_still_removes_the_direction(model_type, tokenizer):
    model = build_model(model_type)
    d = unit(arch.d_model(model), 3)
    with cut(model, d, embeddings=True, norm_preserving=True):
        after = last_token_residuals(model, tokenizer, PROMPTS)
    assert ((after @ d).abs() / after.norm(dim=-1)).max() < 1e-5


@pytest.mark.parametrize("model_type", ["llama", "gemma3_text", "gpt2"])
def test_subspace_cut_removes_every_basis_vector_and_undoes_exactly(model_type, tokenizer):
    model = build_model(model_type)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    q = torch.stack([unit(arch.d_model(model), s) for s in range(3)])  # not orthonormal: QR'd inside
    basis = layer_bases(q, arch.d_model(model), arch.num_layers(model))[0]
    assert torch.allclose(basis @ basis.T, torch.eye(3), atol=1e-6)
    with cut(model, q, embeddings=True):
        after = last_token_residuals(model, tokenizer, PROMPTS)
    assert ((after @ basis.T).abs() / after.norm(dim=-1, keepdim=True)).max() < 1e-5
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_reapply_after_undo_gives_the_same_bits():
    model = build_model("llama", dtype=torch.bfloat16)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    c = cut(
        model, per_layer_basis(model, k=2), attention=LayerKernel(peak=2.0, width=3.0), norm_preserving=True
    )
    first = {k: v.clone() for k, v in model.state_dict().items()}
    c.undo()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    c.apply()
    assert all(torch.equal(v, first[k]) for k, v in model.state_dict().items())
    c.undo()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_direction_variants_follow_their_formulas(tokenizer, prompt_sets):
    model = build_model("qwen2")
    direction = measure(model, tokenizer, *prompt_sets)
    layers = direction.layer_directions().double()
    assert torch.allclose(direction_at(direction, 2.0), layers[2].float())
    mid = 0.75 * layers[1] + 0.25 * layers[2]
    assert torch.allclose(direction_at(direction, 1.25).double(), mid / mid.norm(), atol=1e-6)
    assert torch.allclose(direction_at(direction, 3.0), layers[3].float())  # the last layer
    m = direction.harmless_means.double()
    projected = directions_per_layer(direction, projected=True)[:, 0].double()
    assert projected.shape == layers.shape
    assert ((projected * m).sum(-1).abs() / m.norm(dim=-1)).max() < 1e-6
    want = layers[1] - (layers[1] @ m[1]) / (m[1] @ m[1]) * m[1]
    assert torch.allclose(projected[1], want / want.norm(), atol=1e-6)
    with pytest.raises(VaubanError, match="out of range"):
        direction_at(direction, 3.5)


def test_per_layer_cut_uses_each_layers_own_direction():
    model = build_model("llama")
    bases = per_layer_basis(model)
    with cut(model, bases, layers=[2]):
        w = arch.residual_writers(model, [2])[0].weight
        assert (bases[2, 0] @ w).abs().max() < 1e-6
        assert (bases[1, 0] @ w).abs().max() > 1e-3
    with pytest.raises(VaubanError, match="layers"):
        cut(model, bases[:2])
    with pytest.raises(VaubanError, match="one per layer"):
        cut(model, bases[0, 0], mlp=[1.0, 1.0])


def test_measure_subspace_starts_with_the_direction(tokenizer, prompt_sets):
    model = build_model("llama")
    direction = measure(model, tokenizer, *prompt_sets)
    sub = measure_subspace(model, tokenizer, *prompt_sets, k=3)
    assert sub.k == 3 and sub.layer_index == direction.layer_index
    assert torch.allclose(sub.basis @ sub.basis.T, torch.eye(3), atol=1e-5)
    assert torch.allclose(sub.basis[0], direction.direction, atol=1e-6)
    assert sub.summary().startswith("SubspaceResult: k=3")
    with pytest.raises(VaubanError, match="k must be"):
        measure_subspace(model, tokenizer, *prompt_sets, k=0)


def test_subspace_steering_removes_the_subspace_after_every_layer(tokenizer):
    model = build_model("llama")
    q = torch.stack([unit(arch.d_model(model), s) for s in (5, 6)])
    plain = last_token_residuals(model, tokenizer, PROMPTS)
    with Steering(model, q, 1.0):
        steered = last_token_residuals(model, tokenizer, PROMPTS)
    with Steering(model, q[:1], 1.0):
        one = last_token_residuals(model, tokenizer, PROMPTS)
    basis = layer_bases(q, arch.d_model(model), 1)[0]
    assert ((plain @ basis.T).abs() / plain.norm(dim=-1, keepdim=True)).max() > 1e-3
    assert ((steered @ basis.T).abs() / steered.norm(dim=-1, keepdim=True)).max() < 1e-5
    assert ((one @ basis[1]).abs() / one.norm(dim=-1)).max() > 1e-3  # k=1 keeps the second vector
