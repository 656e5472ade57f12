"""Replicas: prompts split over copies of one model give the one model's answers and residuals."""

from __future__ import annotations

import torch

from conftest import HARMFUL, HARMLESS
from vauban import cut
from vauban.runtime.activations import last_token_residuals
from vauban.runtime.generating import generate
from vauban.runtime.replicas import Replicas, replicate


def test_replica_is_an_independent_copy_with_shared_ties(tiny):
    model = tiny("llama")
    model.lm_head.weight = model.model.embed_tokens.weight  # a tied pair must stay one tensor
    copy = replicate(model, "cpu")
    assert copy.lm_head.weight is copy.model.embed_tokens.weight
    assert copy.lm_head.weight is not model.lm_head.weight
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), copy.state_dict().values(), strict=True)
    )
    with cut(copy, torch.randn(64)):  # cutting the copy leaves the original alone
        mine, theirs = copy.model.layers[0].mlp.down_proj.weight, model.model.layers[0].mlp.down_proj.weight
        assert not torch.equal(mine, theirs)


def test_replicas_give_the_single_models_results_in_input_order(tiny, tokenizer):
    model = tiny("llama")
    prompts = HARMFUL[:5] + HARMLESS[:4]
    replicas = Replicas([model, replicate(model, "cpu"), replicate(model, "cpu")])
    assert replicas.generate(tokenizer, prompts, max_tokens=6) == generate(
        model, tokenizer, prompts, max_tokens=6, show_progress=False
    )
    together = replicas.last_token_residuals(tokenizer, prompts)
    alone = last_token_residuals(model, tokenizer, prompts, show_progress=False)
    assert together.shape == alone.shape
    assert torch.allclose(together, alone, atol=1e-5, rtol=1e-5)  # other batch shapes: rounding only
