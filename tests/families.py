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
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

TEMPLATES = Path(__file__).parent / "templates"
VOCAB = 320

_BASE = {"vocab_size": VOCAB, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512}
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
    ``"opened"`` (the generation prompt opens the think block), ``"harmony"`` (GPT-OSS).
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
HARMONY = ("<|endoftext|>", "<|start|>", "<|message|>", "<|channel|>", "<|constrain|>", "<|end|>",
           "<|return|>", "<|call|>")

FAMILIES: tuple[Family, ...] = (
    Family("Llama", "llama", _BASE, "llama3",
           ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"), "<|eot_id|>",
           "<|begin_of_text|>", released="Llama-3.2-3B-Instruct"),
    Family("Mistral", "mistral", _BASE, NEMO, MISTRAL, "</s>", "<s>", system="own",
           released="Mistral-Nemo-Instruct-2407"),
    Family("Qwen 2", "qwen2", _BASE, QWEN25, CHATML, "<|im_end|>", released="Qwen2.5-7B-Instruct",
           default_system="You are Qwen, created by Alibaba Cloud."),
    Family("Qwen 3", "qwen3", {**_BASE, "head_dim": 16}, QWEN3, CHATML, "<|im_end|>", added=THINK,
           thinking="toggle", released="Qwen3-0.6B"),
    Family("Phi-3", "phi3", _BASE, PHI35, PHI3, "<|end|>", released="Phi-3.5-mini-instruct"),
    Family("Granite", "granite", _BASE, GRANITE33,
           ("<|end_of_text|>", "<|start_of_role|>", "<|end_of_role|>"), "<|end_of_text|>",
           added=THINK, thinking="off-by-default", released="granite-3.3-2b-instruct",
           default_system="You are Granite, developed by IBM."),
    Family("SmolLM3", "smollm3", _BASE, SMOLLM3, CHATML, "<|im_end|>", added=THINK, thinking="toggle",
           released="SmolLM3-3B", default_system="You are a helpful AI assistant named SmolLM"),
    Family("Cohere", "cohere", _BASE, "cohere", ("<BOS_TOKEN>", "<|START_OF_TURN_TOKEN|>",
           "<|END_OF_TURN_TOKEN|>", "<|SYSTEM_TOKEN|>", "<|USER_TOKEN|>", "<|CHATBOT_TOKEN|>", "<PAD>"),
           "<|END_OF_TURN_TOKEN|>", "<BOS_TOKEN>", released="c4ai-command-r-v01"),
    Family("Gemma", "gemma", {**_BASE, "head_dim": 16}, "gemma", GEMMA, "<end_of_turn>", "<bos>",
           system="fold", released="gemma-1.1-2b-it"),
    Family("Gemma 2", "gemma2", {**_BASE, "head_dim": 16, "sliding_window": 64}, "gemma", GEMMA,
           "<end_of_turn>", "<bos>", system="fold", released="gemma-2-2b-it"),
    Family("Gemma 3", "gemma3_text", {**_BASE, "head_dim": 16, "sliding_window": 64}, "gemma3", GEMMA,
           "<end_of_turn>", "<bos>", system="own", released="gemma-3-1b-it"),
    Family("Gemma 3 (multimodal)", "gemma3", {
        "text_config": {**_BASE, "head_dim": 16, "sliding_window": 64},
        "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                          "num_attention_heads": 2, "image_size": 28, "patch_size": 14},
        "mm_tokens_per_image": 4, "image_token_index": 300, "boi_token_index": 301, "eoi_token_index": 302},
        "gemma3", GEMMA, "<end_of_turn>", "<bos>", system="own", released="gemma-3-4b-it"),
    Family("OLMo", "olmo", _BASE, "tulu", ("<|endoftext|>", "<|padding|>"), "<|endoftext|>", "<|endoftext|>",
           released="OLMo-7B-0724-Instruct"),
    Family("OLMo 2", "olmo2", _BASE, "tulu", ("<|endoftext|>", "<|pad|>"), "<|endoftext|>", "<|endoftext|>",
           released="OLMo-2-1124-7B-Instruct"),
    Family("OLMo 3", "olmo3", {**_BASE, "sliding_window": 64}, "olmo3_think", CHATML, "<|im_end|>",
           added=THINK, thinking="opened", released="Olmo-3-7B-Think"),
    Family("Mixtral", "mixtral", {**_BASE, "num_local_experts": 4, "num_experts_per_tok": 2}, "mixtral",
           ("<s>", "</s>"), "</s>", "<s>", system="fold", released="Mixtral-8x7B-Instruct-v0.1"),
    Family("Qwen 2 MoE", "qwen2_moe", {**_BASE, **_MOE, "shared_expert_intermediate_size": 48}, "qwen2_moe",
           CHATML, "<|im_end|>", released="Qwen1.5-MoE-A2.7B-Chat",
           default_system="You are a helpful assistant."),
    Family("Qwen 3 MoE", "qwen3_moe", {**_BASE, **_MOE, "head_dim": 16}, QWEN3, CHATML, "<|im_end|>",
           added=THINK, thinking="toggle", released="Qwen3-30B-A3B"),
    Family("OLMoE", "olmoe", {**_BASE, "num_experts": 4, "num_experts_per_tok": 2}, "tulu",
           ("<|endoftext|>", "<|padding|>"), "<|endoftext|>", "<|endoftext|>",
           released="OLMoE-1B-7B-0924-Instruct"),
    Family("PhiMoE", "phimoe", {**_BASE, "num_local_experts": 4, "num_experts_per_tok": 2}, PHI35, PHI3,
           "<|end|>", released="Phi-3.5-MoE-instruct"),
    Family("GPT-OSS", "gpt_oss", {**_BASE, "num_local_experts": 4, "num_experts_per_tok": 2, "head_dim": 16,
           "sliding_window": 64}, GPT_OSS, HARMONY, "<|return|>", thinking="harmony", released="gpt-oss-20b"),
    # known to arch.py, not in README's list yet
    Family("Ministral", "ministral", {**_BASE, "head_dim": 16}, NEMO, MISTRAL, "</s>", "<s>", system="own",
           released="Ministral-8B-Instruct-2410"),
    Family("GPT-2", "gpt2",
           {"vocab_size": VOCAB, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 512}, None,
           ("<|endoftext|>",), "<|endoftext|>", "<|endoftext|>", system="none", released="gpt2"),
    Family("Phi", "phi", _BASE, None, ("<|endoftext|>",), "<|endoftext|>", "<|endoftext|>", system="none",
           released="phi-2"),
    Family("GPT-NeoX", "gpt_neox", _BASE, None, ("<|endoftext|>", "<|padding|>"), "<|endoftext|>",
           "<|endoftext|>", system="none", released="pythia-160m"),
)
BY_NAME = {f.name: f for f in FAMILIES}
THINKING = tuple(f for f in FAMILIES if f.thinking)


def template_text(family: Family) -> str | None:
    return None if family.template is None else (TEMPLATES / f"{family.template}.jinja").read_text()


def tokenizer_for(family: Family) -> PreTrainedTokenizerFast:
    """Byte-level tokenizer (one token per byte) plus the family's special and added tokens."""
    vocab = {ch: i for i, ch in enumerate(pre_tokenizers.ByteLevel.alphabet())}
    for token in (*family.specials, *family.added):
        vocab[token] = len(vocab)
    assert len(vocab) <= VOCAB
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in family.specials])
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in family.added])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=family.eos, bos_token=family.bos,
        pad_token=family.specials[-1] if family.specials[-1] not in (family.eos,) else family.specials[0],
    )
    template = template_text(family)
    if template is not None:
        tokenizer.chat_template = template
    return tokenizer


def model_for(family: Family, tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> torch.nn.Module:
    """A tiny random model; norm gains randomized so post-norm handling is really tested."""
    torch.manual_seed(seed)
    ids = {"eos_token_id": tokenizer.convert_tokens_to_ids(family.eos),
           "pad_token_id": tokenizer.pad_token_id,
           "bos_token_id": tokenizer.bos_token_id if tokenizer.bos_token_id is not None else 0}
    config = AutoConfig.for_model(family.model_type, **family.config, **ids)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or "ln_" in name:
                param.add_(torch.randn_like(param) * 0.3)
            elif param.dim() >= 2:
                param.normal_(0, 0.08)
    model.generation_config.eos_token_id = ids["eos_token_id"]
    return model.eval()
