"""Every family in README's supported list: a tiny random model from its real transformers config
class, and a tokenizer carrying its chat template (``tests/templates/``: the released template
where it can be redistributed, a format-equivalent one where not, see NOTICE.md there) and the
special tokens that template uses, so stop tokens, system prompts and thinking behave as in the
released models."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoConfig, PreTrainedTokenizerFast

from vauban.model.loading import model_class

TEMPLATES = Path(__file__).parent / "templates"
VOCAB = 320

_BASE = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
}
_MOE = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32}
CHATML = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
THINK = ("<think>", "</think>")


@dataclass(frozen=True)
class Family:
    """One row of README's table: how to build it and what its chat format does.

    ``system``: ``"role"`` (a system turn), ``"fold"`` (the template rejects a system role:
    vauban folds it into the user turn), ``"own"`` (the template folds it itself), ``"none"``
    (no template: a base model). ``thinking``: ``None``, ``"toggle"`` (hybrid: on by default,
    ``enable_thinking``/``thinking`` switches it), ``"off-by-default"`` (Granite 3.3),
    ``"opened"`` (the generation prompt opens the think block), ``"harmony"`` (GPT-OSS),
    ``"off-toggle"`` (off by default, ``thinking``/``enable_thinking`` opens the block: DeepSeek V3.1),
    ``"seed"`` (Seed-OSS: ``<seed:think>`` blocks, ``thinking_budget=0`` skips them).
    ``template``: a file stem in ``tests/templates/``, a released template where one can be
    redistributed (NOTICE.md there), vauban's own rendering of the same format where not.
    """

    name: str
    model_type: str
    config: dict[str, Any]
    template: str | None
    specials: tuple[str, ...]
    eos: str
    bos: str | None = None
    added: tuple[str, ...] = ()  # non-special added tokens (<think> in Qwen3's vocabulary)
    system: str = "role"
    thinking: str | None = None
    released: str = ""  # the released model whose chat format is tested
    default_system: str = ""  # what the template says when given no system prompt; a given one replaces it
    extra: dict[str, Any] = field(default_factory=dict)


# Released templates, byte-identical copies (source, licence and sha256 in tests/templates/NOTICE.md);
# the other names are vauban's own format-equivalent templates (NOTICE.md says why).
QWEN25, QWEN3 = "Qwen-Qwen2.5-7B-Instruct", "Qwen-Qwen3-0.6B"
NEMO, PHI35 = "mistralai-Mistral-Nemo-Instruct-2407", "microsoft-Phi-3.5-mini-instruct"
GRANITE33, SMOLLM3 = "ibm-granite-granite-3.3-2B-Instruct", "HuggingFaceTB-SmolLM3-3B"
GPT_OSS = "openai-gpt-oss-120b"
GEMMA = ("<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>")
PHI3 = ("<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
MISTRAL = ("<s>", "</s>", "[INST]", "[/INST]")
HARMONY = (
    "<|endoftext|>",
    "<|start|>",
    "<|message|>",
    "<|channel|>",
    "<|constrain|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
)

FAMILIES: tuple[Family, ...] = (
    Family(
        "Llama",
        "llama",
        _BASE,
        "llama3",
        ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        "<|eot_id|>",
        "<|begin_of_text|>",
        released="Llama-3.2-3B-Instruct",
    ),
    Family(
        "Mistral",
        "mistral",
        _BASE,
        NEMO,
        MISTRAL,
        "</s>",
        "<s>",
        system="own",
        released="Mistral-Nemo-Instruct-2407",
    ),
    Family(
        "Qwen 2",
        "qwen2",
        _BASE,
        QWEN25,
        CHATML,
        "<|im_end|>",
        released="Qwen2.5-7B-Instruct",
        default_system="You are Qwen, created by Alibaba Cloud.",
    ),
    Family(
        "Qwen 3",
        "qwen3",
        {**_BASE, "head_dim": 16},
        QWEN3,
        CHATML,
        "<|im_end|>",
        added=THINK,
        thinking="toggle",
        released="Qwen3-0.6B",
    ),
    Family("Phi-3", "phi3", _BASE, PHI35, PHI3, "<|end|>", released="Phi-3.5-mini-instruct"),
    Family(
        "Granite",
        "granite",
        _BASE,
        GRANITE33,
        ("<|end_of_text|>", "<|start_of_role|>", "<|end_of_role|>"),
        "<|end_of_text|>",
        added=THINK,
        thinking="off-by-default",
        released="granite-3.3-2b-instruct",
        default_system="You are Granite, developed by IBM.",
    ),
    Family(
        "SmolLM3",
        "smollm3",
        _BASE,
        SMOLLM3,
        CHATML,
        "<|im_end|>",
        added=THINK,
        thinking="toggle",
        released="SmolLM3-3B",
        default_system="You are a helpful AI assistant named SmolLM",
    ),
    Family(
        "Cohere",
        "cohere",
        _BASE,
        "cohere",
        (
            "<BOS_TOKEN>",
            "<|START_OF_TURN_TOKEN|>",
            "<|END_OF_TURN_TOKEN|>",
            "<|SYSTEM_TOKEN|>",
            "<|USER_TOKEN|>",
            "<|CHATBOT_TOKEN|>",
            "<PAD>",
        ),
        "<|END_OF_TURN_TOKEN|>",
        "<BOS_TOKEN>",
        released="c4ai-command-r-v01",
    ),
    Family(
        "Gemma",
        "gemma",
        {**_BASE, "head_dim": 16},
        "gemma",
        GEMMA,
        "<end_of_turn>",
        "<bos>",
        system="fold",
        released="gemma-1.1-2b-it",
    ),
    Family(
        "Gemma 2",
        "gemma2",
        {**_BASE, "head_dim": 16, "sliding_window": 64},
        "gemma",
        GEMMA,
        "<end_of_turn>",
        "<bos>",
        system="fold",
        released="gemma-2-2b-it",
    ),
    Family(
        "Gemma 3",
        "gemma3_text",
        {**_BASE, "head_dim": 16, "sliding_window": 64},
        "gemma3",
        GEMMA,
        "<end_of_turn>",
        "<bos>",
        system="own",
        released="gemma-3-1b-it",
    ),
    Family(
        "Gemma 3 (multimodal)",
        "gemma3",
        {
            "text_config": {**_BASE, "head_dim": 16, "sliding_window": 64},
            "vision_config": {
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "image_size": 28,
                "patch_size": 14,
            },
            "mm_tokens_per_image": 4,
            "image_token_index": 300,
            "boi_token_index": 301,
            "eoi_token_index": 302,
        },
        "gemma3",
        GEMMA,
        "<end_of_turn>",
        "<bos>",
        system="own",
        released="gemma-3-4b-it",
    ),
    Family(
        "OLMo",
        "olmo",
        _BASE,
        "tulu",
        ("<|endoftext|>", "<|padding|>"),
        "<|endoftext|>",
        "<|endoftext|>",
        released="OLMo-7B-0724-Instruct",
    ),
    Family(
        "OLMo 2",
        "olmo2",
        _BASE,
        "tulu",
        ("<|endoftext|>", "<|pad|>"),
        "<|endoftext|>",
        "<|endoftext|>",
        released="OLMo-2-1124-7B-Instruct",
    ),
    Family(
        "OLMo 3",
        "olmo3",
        {**_BASE, "sliding_window": 64},
        "olmo3_think",
        CHATML,
        "<|im_end|>",
        added=THINK,
        thinking="opened",
        released="Olmo-3-7B-Think",
    ),
    Family(
        "Mixtral",
        "mixtral",
        {**_BASE, "num_local_experts": 4, "num_experts_per_tok": 2},
        "mixtral",
        ("<s>", "</s>"),
        "</s>",
        "<s>",
        system="fold",
        released="Mixtral-8x7B-Instruct-v0.1",
    ),
    Family(
        "Qwen 2 MoE",
        "qwen2_moe",
        {**_BASE, **_MOE, "shared_expert_intermediate_size": 48},
        "qwen2_moe",
        CHATML,
        "<|im_end|>",
        released="Qwen1.5-MoE-A2.7B-Chat",
        default_system="You are a helpful assistant.",
    ),
    Family(
        "Qwen 3 MoE",
        "qwen3_moe",
        {**_BASE, **_MOE, "head_dim": 16},
        QWEN3,
        CHATML,
        "<|im_end|>",
        added=THINK,
        thinking="toggle",
        released="Qwen3-30B-A3B",
    ),
    Family(
        "OLMoE",
        "olmoe",
        {**_BASE, "num_experts": 4, "num_experts_per_tok": 2},
        "tulu",
        ("<|endoftext|>", "<|padding|>"),
        "<|endoftext|>",
        "<|endoftext|>",
        released="OLMoE-1B-7B-0924-Instruct",
    ),
    Family(
        "PhiMoE",
        "phimoe",
        {**_BASE, "num_local_experts": 4, "num_experts_per_tok": 2},
        PHI35,
        PHI3,
        "<|end|>",
        released="Phi-3.5-MoE-instruct",
    ),
    Family(
        "GPT-OSS",
        "gpt_oss",
        {**_BASE, "num_local_experts": 4, "num_experts_per_tok": 2, "head_dim": 16, "sliding_window": 64},
        GPT_OSS,
        HARMONY,
        "<|return|>",
        thinking="harmony",
        released="gpt-oss-20b",
    ),
    # known to arch.py, not in README's list yet
    Family(
        "Ministral",
        "ministral",
        {**_BASE, "head_dim": 16},
        NEMO,
        MISTRAL,
        "</s>",
        "<s>",
        system="own",
        released="Ministral-8B-Instruct-2410",
    ),
    Family(
        "GPT-2",
        "gpt2",
        {"vocab_size": VOCAB, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 512},
        None,
        ("<|endoftext|>",),
        "<|endoftext|>",
        "<|endoftext|>",
        system="none",
        released="gpt2",
    ),
    Family(
        "Phi",
        "phi",
        _BASE,
        None,
        ("<|endoftext|>",),
        "<|endoftext|>",
        "<|endoftext|>",
        system="none",
        released="phi-2",
    ),
    Family(
        "GPT-NeoX",
        "gpt_neox",
        _BASE,
        None,
        ("<|endoftext|>", "<|padding|>"),
        "<|endoftext|>",
        "<|endoftext|>",
        system="none",
        released="pythia-160m",
    ),
)
# Issue 27: hybrids (state-space / linear-attention token mixers), MLA and large MoE. Configs are the
# real ones shrunk; every layer type of the family is present (``layer_types``), so each kind of
# writer is cut. Templates: released where redistributable (NOTICE.md), ``chatml`` stands in
# (vauban's own plain ChatML) where the released one is not, and the docs say so.
_LIN = {
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 4,
    "linear_key_head_dim": 16,
    "linear_value_head_dim": 16,
    "linear_conv_kernel_dim": 4,
}
_TWO = {"layer_types": ["linear_attention", "full_attention"]}
_MAMBA = {
    "mamba_n_heads": 4,
    "mamba_d_head": 32,
    "mamba_n_groups": 1,
    "mamba_d_state": 16,
    "mamba_d_conv": 4,
    "mamba_expand": 2,
    "mamba_chunk_size": 16,
}
_MLA = {
    "kv_lora_rank": 16,
    "qk_rope_head_dim": 8,
    "qk_nope_head_dim": 8,
    "v_head_dim": 16,
    "num_key_value_heads": 4,
}
_SHARED_MOE = {
    "moe_intermediate_size": 32,
    "n_routed_experts": 4,
    "num_experts_per_tok": 2,
    "n_shared_experts": 1,
    "first_k_dense_replace": 1,
    "n_group": 1,
    "topk_group": 1,
}
QWEN35, DSV31, GLM46 = "Qwen3.5-4B", "deepseek-ai-DeepSeek-V3.1", "GLM-4.6"
MINIMAX_M2, SEED_OSS, APERTUS = "MiniMax-M2", "ByteDance-Seed-OSS", "Apertus-8B-Instruct"
GRANITE4, MISTRAL_SMALL = "ibm-granite-granite-4.0", "Mistral-Small-3.2-24B-Instruct-2506"
DEEPSEEK = ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>")
GLM = ("<|endoftext|>", "[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>")
APERTUS_SPECIALS = (
    "<s>",
    "</s>",
    "<|system_start|>",
    "<|system_end|>",
    "<|developer_start|>",
    "<|developer_end|>",
    "<|user_start|>",
    "<|user_end|>",
    "<|assistant_start|>",
    "<|assistant_end|>",
    "<pad>",
)
GRANITE4_SPECIALS = ("<|end_of_text|>", "<|start_of_role|>", "<|end_of_role|>", "<|pad|>")
CHATML_ONLY = "chatml"
_NEMOTRON_H = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "intermediate_size": 96,
    "max_position_embeddings": 512,
    "layers_block_type": ["mamba", "moe", "attention", "mlp"],
    "mamba_num_heads": 4,
    "mamba_head_dim": 32,
    "n_groups": 1,
    "ssm_state_size": 16,
    "chunk_size": 16,
    "n_routed_experts": 4,
    "num_experts_per_tok": 2,
    "moe_intermediate_size": 32,
    "moe_shared_expert_intermediate_size": 48,
}

NEW_FAMILIES: tuple[Family, ...] = (
    Family(
        "Qwen3-Next",
        "qwen3_next",
        {**_BASE, **_MOE, **_LIN, **_TWO, "head_dim": 16, "shared_expert_intermediate_size": 48},
        QWEN3,
        CHATML,
        "<|im_end|>",
        added=THINK,
        thinking="toggle",
        released="Qwen3-Next-80B-A3B (Qwen3's format)",
    ),
    Family(
        "Qwen 3.5",
        "qwen3_5_text",
        {**_BASE, **_LIN, **_TWO, "head_dim": 16},
        QWEN35,
        CHATML,
        "<|im_end|>",
        added=THINK,
        thinking="toggle",
        released="Qwen3.5-4B",
    ),
    Family(
        "Qwen 3.5 MoE",
        "qwen3_5_moe_text",
        {**_BASE, **_MOE, **_LIN, **_TWO, "head_dim": 16, "shared_expert_intermediate_size": 48},
        QWEN35,
        CHATML,
        "<|im_end|>",
        added=THINK,
        thinking="toggle",
        released="Qwen3.5-35B-A3B (Qwen3.5-4B's template)",
    ),
    Family(
        "LFM2",
        "lfm2",
        {**_BASE, "layer_types": ["conv", "full_attention"], "block_auto_adjust_ff_dim": False},
        CHATML_ONLY,
        CHATML,
        "<|im_end|>",
        released="LFM2-1.2B (ChatML stands in)",
    ),
    Family(
        "LFM2 MoE",
        "lfm2_moe",
        {**_BASE, **_MOE, "num_dense_layers": 1, "layer_types": ["conv", "full_attention"]},
        CHATML_ONLY,
        CHATML,
        "<|im_end|>",
        released="LFM2-8B-A1B (ChatML stands in)",
    ),
    Family(
        "Granite 4 (hybrid)",
        "granitemoehybrid",
        {
            **_BASE,
            **_MAMBA,
            "num_local_experts": 4,
            "num_experts_per_tok": 2,
            "shared_intermediate_size": 48,
            "layer_types": ["mamba", "attention"],
        },
        GRANITE4,
        GRANITE4_SPECIALS,
        "<|end_of_text|>",
        released="granite-4.0-h-tiny",
        default_system="You are a helpful assistant. Please ensure responses are professional",
    ),
    Family(
        "Nemotron-H",
        "nemotron_h",
        _NEMOTRON_H,
        QWEN3,
        CHATML,
        "<|im_end|>",
        added=THINK,
        thinking="toggle",
        released="Nemotron-3-Nano-30B-A3B (Qwen3's template stands in)",
    ),
    Family(
        "Falcon-H1",
        "falcon_h1",
        {
            **_BASE,
            "head_dim": 16,
            "mamba_d_ssm": 64,
            "mamba_n_heads": 4,
            "mamba_d_head": 16,
            "mamba_n_groups": 1,
            "mamba_d_state": 16,
            "mamba_chunk_size": 16,
        },
        CHATML_ONLY,
        CHATML,
        "<|im_end|>",
        released="Falcon-H1-1.5B-Instruct (ChatML stands in)",
    ),
    Family(
        "Jamba",
        "jamba",
        {
            **_BASE,
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "expert_layer_period": 2,
            "expert_layer_offset": 1,
            "attn_layer_period": 2,
            "attn_layer_offset": 1,
            "mamba_d_state": 8,
            "mamba_dt_rank": 8,
        },
        CHATML_ONLY,
        CHATML,
        "<|im_end|>",
        released="AI21-Jamba-Mini-1.7 (ChatML stands in)",
    ),
    Family(
        "Kimi Linear",
        "kimi_linear",
        {
            **_BASE,
            **_MLA,
            **_TWO,
            "moe_intermediate_size": 32,
            "num_experts": 4,
            "num_experts_per_token": 2,
            "num_shared_experts": 1,
            "q_lora_rank": None,
            "qk_head_dim": 16,
            "head_dim": 16,
            "linear_head_dim": 16,
            "linear_num_heads": 4,
            "mlp_layer_types": ["dense", "sparse"],
        },
        CHATML_ONLY,
        CHATML,
        "<|im_end|>",
        released="Kimi-Linear-48B-A3B-Instruct (ChatML stands in)",
    ),
    Family(
        "OLMo Hybrid",
        "olmo_hybrid",
        {
            **_BASE,
            **_TWO,
            "linear_num_key_heads": 2,
            "linear_num_value_heads": 2,
            "linear_key_head_dim": 16,
            "linear_value_head_dim": 32,
        },
        CHATML_ONLY,
        CHATML,
        "<|im_end|>",
        released="Olmo-Hybrid-7B (ChatML stands in)",
    ),
    Family(
        "DeepSeek V3",
        "deepseek_v3",
        {**_BASE, **_MLA, **_SHARED_MOE, "q_lora_rank": 24},
        DSV31,
        DEEPSEEK,
        "<｜end▁of▁sentence｜>",
        "<｜begin▁of▁sentence｜>",
        added=THINK,
        thinking="off-toggle",
        released="DeepSeek-V3.1",
    ),
    Family(
        "GLM-4.5/4.6",
        "glm4_moe",
        {**_BASE, **_SHARED_MOE, "head_dim": 16},
        GLM46,
        GLM,
        "<|user|>",
        added=THINK,
        thinking="toggle",
        released="GLM-4.6",
    ),
    Family(
        "MiniMax-M2",
        "minimax_m2",
        {**_BASE, "head_dim": 16, "num_local_experts": 4, "num_experts_per_tok": 2},
        MINIMAX_M2,
        ("]~!b[", "]~b]", "[e~["),
        "[e~[",
        "]~!b[",
        added=THINK,
        thinking="opened",
        released="MiniMax-M2",
        default_system="You are a helpful assistant.",
    ),
    Family(
        "ERNIE 4.5 MoE",
        "ernie4_5_moe",
        {
            **_BASE,
            "moe_num_experts": 4,
            "moe_k": 2,
            "moe_intermediate_size": 32,
            "moe_num_shared_experts": 1,
            "moe_layer_start_index": 1,
            "moe_layer_interval": 1,
        },
        CHATML_ONLY,
        CHATML,
        "<|im_end|>",
        released="ERNIE-4.5-21B-A3B (ChatML stands in)",
    ),
    Family(
        "Hunyuan MoE",
        "hunyuan_v1_moe",
        {
            **_BASE,
            "head_dim": 16,
            "num_experts": 4,
            "moe_topk": 2,
            "num_shared_expert": 1,
            "moe_intermediate_size": 32,
        },
        CHATML_ONLY,
        CHATML,
        "<|im_end|>",
        released="Hunyuan-A13B-Instruct (ChatML stands in)",
    ),
    Family(
        "Seed-OSS",
        "seed_oss",
        {**_BASE, "head_dim": 16},
        SEED_OSS,
        ("<seed:bos>", "<seed:eos>", "<seed:pad>"),
        "<seed:eos>",
        "<seed:bos>",
        added=("<seed:think>", "</seed:think>"),
        thinking="seed",
        released="Seed-OSS-36B-Instruct",
    ),
    Family(
        "Apertus",
        "apertus",
        _BASE,
        APERTUS,
        APERTUS_SPECIALS,
        "<|assistant_end|>",
        "<s>",
        released="Apertus-8B-Instruct",
        default_system="You are Apertus, a helpful assistant",
    ),
    Family(
        "EXAONE 4",
        "exaone4",
        {**_BASE, "head_dim": 16, "sliding_window": 64},
        CHATML_ONLY,
        CHATML,
        "<|im_end|>",
        released="EXAONE-4.0-1.2B (ChatML stands in)",
    ),
    Family(
        "Llama 4 (text)",
        "llama4_text",
        {
            **_BASE,
            "head_dim": 16,
            "num_local_experts": 4,
            "num_experts_per_tok": 1,
            "intermediate_size_mlp": 96,
            "intermediate_size": 32,
            "interleave_moe_layer_step": 2,
            "no_rope_layers": [1, 1],
            "attention_chunk_size": 64,
        },
        "llama3",
        ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        "<|eot_id|>",
        "<|begin_of_text|>",
        released="Llama-4-Scout-17B-16E-Instruct (the Llama 3 format stands in)",
    ),
)
# Vision-language: a tiny vision tower, the image token ids those of the tokenizer (256 bytes, then
# the specials in order); ``extra["image_token"]`` is what the image processor's patches replace.
_VIT = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2}
MISTRAL3_SPECIALS = (
    "<s>",
    "</s>",
    "[INST]",
    "[/INST]",
    "[SYSTEM_PROMPT]",
    "[/SYSTEM_PROMPT]",
    "[IMG]",
    "[IMG_BREAK]",
    "[IMG_END]",
    "<pad>",
)
QWEN_VL = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
_QWEN_VL_TEXT = {
    **_BASE,
    "head_dim": 16,
    "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e4},
}
_QWEN_VL = {
    "vision_config": {
        **_VIT,
        "depth": 2,
        "num_heads": 2,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": 64,
        "deepstack_visual_indexes": [0],
        "num_position_embeddings": 16,
    },
    "image_token_id": 261,
    "video_token_id": 262,
    "vision_start_token_id": 259,
    "vision_end_token_id": 260,
}
VISION_FAMILIES: tuple[Family, ...] = (
    Family(
        "Mistral 3 (vision)",
        "mistral3",
        {
            "text_config": {**_BASE, "head_dim": 16, "model_type": "mistral"},
            "vision_config": {
                **_VIT,
                "num_hidden_layers": 1,
                "image_size": 56,
                "patch_size": 14,
                "head_dim": 16,
            },
            "image_token_index": 262,
            "spatial_merge_size": 2,
        },
        MISTRAL_SMALL,
        MISTRAL3_SPECIALS,
        "</s>",
        "<s>",
        released="Mistral-Small-3.2-24B-Instruct-2506",
        default_system="You are Mistral Small 3",
        extra={"image_token": "[IMG]"},
    ),
    Family(
        "Qwen3-VL",
        "qwen3_vl",
        {"text_config": _QWEN_VL_TEXT, **_QWEN_VL},
        CHATML_ONLY,
        QWEN_VL,
        "<|im_end|>",
        released="Qwen3-VL-2B-Instruct (ChatML stands in)",
        extra={"image_token": "<|image_pad|>"},
    ),
    Family(
        "Qwen3-VL MoE",
        "qwen3_vl_moe",
        {"text_config": {**_QWEN_VL_TEXT, **_MOE}, **_QWEN_VL},
        CHATML_ONLY,
        QWEN_VL,
        "<|im_end|>",
        released="Qwen3-VL-30B-A3B-Instruct (ChatML stands in)",
        extra={"image_token": "<|image_pad|>"},
    ),
)
_MOE_OUT = ("mlp.experts.down_proj", "mlp.shared_experts.down_proj")
# The writers each new family must resolve (paths inside a decoder layer): every token mixer's
# output projection, not only attention's, and every kind of feed-forward block.
WRITERS: dict[str, tuple[str, ...]] = {
    "Qwen3-Next": (
        "linear_attn.out_proj",
        "self_attn.o_proj",
        "mlp.experts.down_proj",
        "mlp.shared_expert.down_proj",
    ),
    "Qwen 3.5": ("linear_attn.out_proj", "self_attn.o_proj", "mlp.down_proj"),
    "Qwen 3.5 MoE": (
        "linear_attn.out_proj",
        "self_attn.o_proj",
        "mlp.experts.down_proj",
        "mlp.shared_expert.down_proj",
    ),
    "LFM2": ("conv.out_proj", "self_attn.out_proj", "feed_forward.w2"),
    "LFM2 MoE": ("conv.out_proj", "self_attn.out_proj", "feed_forward.w2", "feed_forward.experts.down_proj"),
    "Granite 4 (hybrid)": (
        "mamba.out_proj",
        "self_attn.o_proj",
        "block_sparse_moe.experts.down_proj",
        "shared_mlp.output_linear",
    ),
    "Nemotron-H": (
        "mixer.out_proj",
        "mixer.o_proj",
        "mixer.down_proj",
        "mixer.experts.down_proj",
        "mixer.shared_experts.down_proj",
    ),
    "Falcon-H1": ("mamba.out_proj", "self_attn.o_proj", "feed_forward.down_proj"),
    "Jamba": (
        "mamba.out_proj",
        "self_attn.o_proj",
        "feed_forward.down_proj",
        "feed_forward.experts.down_proj",
    ),
    "Kimi Linear": ("self_attn.o_proj", "mlp.down_proj", *_MOE_OUT),
    "OLMo Hybrid": ("linear_attn.o_proj", "self_attn.o_proj", "mlp.down_proj"),
    "DeepSeek V3": ("self_attn.o_proj", "mlp.down_proj", *_MOE_OUT),
    "GLM-4.5/4.6": ("self_attn.o_proj", "mlp.down_proj", *_MOE_OUT),
    "MiniMax-M2": ("self_attn.o_proj", "mlp.experts.down_proj"),
    "ERNIE 4.5 MoE": ("self_attn.o_proj", "mlp.down_proj", *_MOE_OUT),
    "Hunyuan MoE": ("self_attn.o_proj", "mlp.experts.down_proj", "mlp.shared_mlp.down_proj"),
    "Llama 4 (text)": (
        "self_attn.o_proj",
        "feed_forward.down_proj",
        "feed_forward.experts.down_proj",
        "feed_forward.shared_expert.down_proj",
    ),
}
FAMILIES = FAMILIES + NEW_FAMILIES + VISION_FAMILIES
BY_NAME = {f.name: f for f in FAMILIES}
THINKING = tuple(f for f in FAMILIES if f.thinking)


def template_text(family: Family) -> str | None:
    return None if family.template is None else (TEMPLATES / f"{family.template}.jinja").read_text()


def tokenizer_for(family: Family, merges: tuple[tuple[str, str], ...] = ()) -> PreTrainedTokenizerFast:
    """Byte-level tokenizer (one token per byte) plus the family's special and added tokens;
    ``merges`` adds BPE merges and their tokens after them (a GGUF vocabulary needs one)."""
    vocab = {ch: i for i, ch in enumerate(pre_tokenizers.ByteLevel.alphabet())}
    for token in (*family.specials, *family.added, *("".join(m) for m in merges)):
        vocab[token] = len(vocab)
    assert len(vocab) <= VOCAB
    backend = Tokenizer(models.BPE(vocab=vocab, merges=list(merges)))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in family.specials])
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in family.added])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=family.eos,
        bos_token=family.bos,
        pad_token=family.specials[-1] if family.specials[-1] not in (family.eos,) else family.specials[0],
    )
    template = template_text(family)
    if template is not None:
        tokenizer.chat_template = template
    return tokenizer


def model_for(family: Family, tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> torch.nn.Module:
    """A tiny random model; norm gains randomized so post-norm handling is really tested."""
    torch.manual_seed(seed)
    ids = {
        "eos_token_id": tokenizer.convert_tokens_to_ids(family.eos),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id if tokenizer.bos_token_id is not None else 0,
    }
    config = AutoConfig.for_model(family.model_type, **family.config, **ids)
    model = model_class(config).from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or "ln_" in name:
                param.add_(torch.randn_like(param) * 0.3)
            elif param.dim() >= 2:
                param.normal_(0, 0.08)
    model.generation_config.eos_token_id = ids["eos_token_id"]
    return model.eval()
