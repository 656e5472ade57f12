"""The only place that knows model families.

Abliteration edits the matrices that *write into* the residual stream (attention output and MLP
down projections), so the rest of vauban needs to know, per family: which module runs the
embeddings + decoder layers + final norm without the LM head, where the decoder layers are, which
parameters write into the residual stream and along which axis, which norms sit between a writer
and the residual add (Gemma 2/3 and OLMo 2 "post-norms"), and which embeddings add into the stream.
A small table beats ``if "llama" in name`` checks scattered over the code base.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from ..core.errors import VaubanError

if TYPE_CHECKING:
    from transformers import GenerationMixin, PreTrainedModel


def hf(model: nn.Module) -> PreTrainedModel:
    """``model`` as the transformers model it is, for the type checker: ``nn.Module`` types every
    attribute it does not declare (``config``, ``generate``...) as ``Tensor | Module``. vauban's
    models are transformers models (:mod:`vauban.model.loading`); nothing is checked at run time."""
    return cast("PreTrainedModel", model)


def generator(model: nn.Module) -> GenerationMixin:
    """``model`` as a transformers model that generates (see :func:`hf`)."""
    return cast("GenerationMixin", model)


@dataclass(frozen=True)
class Writer:
    """A parameter that adds into the residual stream, relative to a decoder layer.

    ``path`` names a module with ``.weight`` (and maybe ``.bias``), or a bare parameter such as a
    fused MoE expert tensor. ``axis`` is the weight's residual (output) axis: ``-2`` for
    ``nn.Linear`` and ``(experts, out, in)`` tensors, ``-1`` for GPT-2's ``Conv1D`` and
    ``(experts, in, out)`` tensors. ``post_norm`` is the norm applied to this writer's output
    before the residual add, if any; ``norm_optional``: that norm exists in some layers only
    (OLMo-Hybrid: its attention layers are post-norm, its linear-attention layers pre-norm), a
    layer without it writes unnormalized.
    """

    path: str
    axis: int = -2
    post_norm: str | None = None
    bias: str | None = None
    norm_optional: bool = False


@dataclass(frozen=True)
class Family:
    """Where things are in one family of architectures (paths are dotted attribute names).

    ``attn_out`` holds the token mixers' writers (attention, and the state-space or
    linear-attention output projections of hybrids), ``mlp_out`` the feed-forward ones. Each layer
    must hold one of each, unless ``mixed``: a layer is one block of either kind (Nemotron-H).
    """

    name: str
    model_types: tuple[str, ...]
    attn_out: tuple[Writer, ...]
    mlp_out: tuple[Writer, ...]
    decoder: str = "model"
    layers: str = "layers"
    embeddings: tuple[str, ...] = ("embed_tokens",)
    mixed: bool = False


_LINEAR_ATTN = (Writer("self_attn.o_proj"),)
_LINEAR_MLP = (Writer("mlp.down_proj"),)
# A MoE layer may hold routed experts, a shared expert, or (in dense layers of a sparse model) a
# plain MLP: every path that exists in a layer is edited, at least one per group must exist.
# Fused expert tensors (experts, out, in) are cut expert by expert (vauban.edit.cutting.pieces).
# Routers (``mlp.gate``, Qwen2-MoE's ``shared_expert_gate``) are left untouched, like every
# other matrix that *reads* the residual stream (q/k/v, up/gate projections): the cut removes
# the direction where it is written, so what a router reads no longer carries it, and editing
# the router as well would only change how it weighs the component that the cut already took
# out (none, with ``embeddings=True``). Routing still changes, since the stream it reads changed.
_MOE_MLP = (
    Writer("mlp.down_proj"),
    Writer("mlp.experts.down_proj"),
    Writer("mlp.shared_expert.down_proj"),
    Writer("mlp.shared_experts.down_proj"),
    Writer("mlp.shared_mlp.down_proj"),  # Hunyuan
)
# Hybrids: a layer's token mixer is attention or a state-space / linear-attention block, whose
# output projection writes into the residual stream like o_proj (Qwen3-Next's Gated DeltaNet,
# Kimi's KDA, Mamba 1/2, LFM2's short convolution); scalar multipliers on a block's output
# (Granite's residual_multiplier, Falcon-H1's ssm/attention out multipliers) keep it linear.
_QWEN3_NEXT_ATTN = (Writer("self_attn.o_proj"), Writer("linear_attn.out_proj"))
_MAMBA_ATTN = (Writer("self_attn.o_proj"), Writer("mamba.out_proj"))
_LLAMA4_MLP = (
    Writer("feed_forward.down_proj"),
    Writer("feed_forward.experts.down_proj", axis=-1),
    Writer("feed_forward.shared_expert.down_proj"),
)

FAMILIES: tuple[Family, ...] = (
    Family(
        "llama",
        (
            "llama",
            "mistral",
            "qwen2",
            "qwen3",
            "phi3",
            "granite",
            "smollm3",
            "cohere",
            "gemma",
            "olmo",
            "ministral",
        ),
        _LINEAR_ATTN,
        _LINEAR_MLP,
    ),
    # Gemma 2/3 and OLMo 2/3 normalize each block's output *before* adding it to the residual, so
    # a writer is orthogonalized against the direction as seen through that norm's gain.
    Family(
        "gemma2",
        ("gemma2", "gemma3_text"),
        (Writer("self_attn.o_proj", post_norm="post_attention_layernorm"),),
        (Writer("mlp.down_proj", post_norm="post_feedforward_layernorm"),),
    ),
    Family(
        "gemma3",
        ("gemma3",),
        (Writer("self_attn.o_proj", post_norm="post_attention_layernorm"),),
        (Writer("mlp.down_proj", post_norm="post_feedforward_layernorm"),),
        decoder="model.language_model",
    ),
    Family(
        "olmo2",
        ("olmo2", "olmo3"),
        (Writer("self_attn.o_proj", post_norm="post_attention_layernorm"),),
        (Writer("mlp.down_proj", post_norm="post_feedforward_layernorm"),),
    ),
    # Exaone 4 is post-norm like OLMo 2; Seed-OSS and Apertus are Llama-shaped.
    Family(
        "exaone4",
        ("exaone4",),
        (Writer("self_attn.o_proj", post_norm="post_attention_layernorm"),),
        (Writer("mlp.down_proj", post_norm="post_feedforward_layernorm"),),
    ),
    Family("llama_like", ("seed_oss", "apertus"), _LINEAR_ATTN, _LINEAR_MLP),
    # DeepSeek V3 / Kimi K2 and Kimi Linear's MLA attention ends in o_proj like any other.
    Family(
        "moe",
        (
            "mixtral",
            "qwen2_moe",
            "qwen3_moe",
            "olmoe",
            "phimoe",
            "deepseek_v3",
            "glm4_moe",
            "minimax_m2",
            "ernie4_5_moe",
            "hunyuan_v1_moe",
            "kimi_linear",
        ),
        _LINEAR_ATTN,
        _MOE_MLP,
    ),
    # MiniMax-Text-01 ("minimax") is refused (REFUSED below); MiniMax-M2 ("minimax_m2") adds its
    # blocks to the stream itself and is an ordinary MoE.
    # Qwen 3.5's multimodal checkpoints ("qwen3_5") load through AutoModelForCausalLM as their
    # language model, whose config is "qwen3_5_text".
    Family("qwen3_next", ("qwen3_next", "qwen3_5_text", "qwen3_5_moe_text"), _QWEN3_NEXT_ATTN, _MOE_MLP),
    Family(
        "lfm2",
        ("lfm2", "lfm2_moe"),
        (Writer("self_attn.out_proj"), Writer("conv.out_proj")),
        (Writer("feed_forward.w2"), Writer("feed_forward.experts.down_proj")),
    ),
    Family(
        "granitemoehybrid",
        ("granitemoehybrid",),
        _MAMBA_ATTN,
        (Writer("block_sparse_moe.experts.down_proj"), Writer("shared_mlp.output_linear")),
    ),
    Family("falcon_h1", ("falcon_h1",), _MAMBA_ATTN, (Writer("feed_forward.down_proj"),)),
    Family(
        "jamba",
        ("jamba",),
        _MAMBA_ATTN,
        (Writer("feed_forward.down_proj"), Writer("feed_forward.experts.down_proj")),
    ),
    # One block per layer: Mamba 2, attention, MLP or MoE, each called "mixer".
    Family(
        "nemotron_h",
        ("nemotron_h",),
        (Writer("mixer.o_proj"), Writer("mixer.out_proj")),
        (
            Writer("mixer.down_proj"),
            Writer("mixer.experts.down_proj"),
            Writer("mixer.shared_experts.down_proj"),
        ),
        embeddings=("embeddings",),
        mixed=True,
    ),
    # Attention layers post-norm (OLMo 2), Gated DeltaNet layers pre-norm.
    Family(
        "olmo_hybrid",
        ("olmo_hybrid",),
        (Writer("self_attn.o_proj", post_norm="post_attention_layernorm"), Writer("linear_attn.o_proj")),
        (Writer("mlp.down_proj", post_norm="post_feedforward_layernorm", norm_optional=True),),
    ),
    # Llama 4's routed experts are stored (experts, in, out); its dense layers have feed_forward.down_proj.
    Family("llama4_text", ("llama4_text",), _LINEAR_ATTN, _LLAMA4_MLP),
    # Vision-language models: the language model is cut; the vision tower and its projector, which
    # write the image tokens' embeddings, are left as they are (like the token embeddings
    # without ``embeddings=True``).
    Family(
        "vision_language",
        ("mistral3", "qwen3_vl", "qwen3_vl_moe"),
        _LINEAR_ATTN,
        _MOE_MLP,
        decoder="model.language_model",
    ),
    Family(
        "gpt_oss",
        ("gpt_oss",),
        _LINEAR_ATTN,
        (Writer("mlp.experts.down_proj", axis=-1, bias="mlp.experts.down_proj_bias"),),
    ),
    Family(
        "gpt2",
        ("gpt2",),
        (Writer("attn.c_proj", axis=-1),),
        (Writer("mlp.c_proj", axis=-1),),
        decoder="transformer",
        layers="h",
        embeddings=("wte", "wpe"),
    ),
    Family(
        "phi",
        ("phi",),
        (Writer("self_attn.dense"),),
        (Writer("mlp.fc2"),),
    ),
    Family(
        "gpt_neox",
        ("gpt_neox",),
        (Writer("attention.dense"),),
        (Writer("mlp.dense_4h_to_h"),),
        decoder="gpt_neox",
        embeddings=("embed_in",),
    ),
)

_BY_MODEL_TYPE = {t: f for f in FAMILIES for t in f.model_types}

# Families a weight edit cannot cut exactly, and why (the error names the reason).
REFUSED = {
    "minimax": "its layers add to the normalized stream (h = norm(x)·α + attn(norm(x))·β), so the "
    "norm's gain writes the direction back at every layer (10 % left after a full cut)",
    "gemma3n": "its AltUp keeps four residual streams mixed with input-dependent coefficients, so the "
    "direction comes back from the streams no writer adds to",
    "gemma3n_text": "its AltUp keeps four residual streams mixed with input-dependent coefficients, so "
    "the direction comes back from the streams no writer adds to",
}


@dataclass(frozen=True)
class ResidualWriter:
    """One resolved residual-writing parameter of a loaded model."""

    name: str
    layer: int
    weight: nn.Parameter
    bias: nn.Parameter | None
    axis: int
    post_norm: nn.Module | None
    kind: str = "attention"  # or "mlp": which part of the block writes it


def model_type(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return str(getattr(config, "model_type", type(model).__name__))


def family(model: nn.Module) -> Family:
    """The family entry for ``model``, or a clear error naming the unsupported type."""
    return family_of(model_type(model), type(model).__name__)


def family_of(kind: str, what: str = "config") -> Family:
    """The family entry for a ``model_type`` string (``what`` names its source in the error)."""
    try:
        return _BY_MODEL_TYPE[kind]
    except KeyError:
        if kind in REFUSED:
            raise VaubanError(
                f"unsupported architecture {kind!r} ({what}): vauban cannot cut it exactly: {REFUSED[kind]}"
            ) from None
        known = ", ".join(sorted(_BY_MODEL_TYPE))
        raise VaubanError(
            f"unsupported architecture {kind!r} ({what}); vauban knows: {known}. "
            "Add a Family entry in vauban/model/arch.py for it."
        ) from None


def _get(root: nn.Module, path: str) -> nn.Module | nn.Parameter | None:
    obj: object = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj  # type: ignore[return-value]


def decoder(model: nn.Module) -> nn.Module:
    """The module that maps token ids to the final hidden state, skipping the LM head."""
    module = _get(model, family(model).decoder)
    if not isinstance(module, nn.Module):
        raise VaubanError(f"{type(model).__name__} has no {family(model).decoder!r} submodule")
    return module


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    layers = _get(decoder(model), family(model).layers)
    if not isinstance(layers, nn.ModuleList):
        raise VaubanError(f"{type(model).__name__}: decoder layers not found")
    return layers


def num_layers(model: nn.Module) -> int:
    return len(decoder_layers(model))


def d_model(model: nn.Module) -> int:
    return int(embeddings(model)[0].weight.shape[-1])


def embeddings(model: nn.Module) -> list[nn.Embedding]:
    """Embedding tables that add into the residual stream (token, and absolute positions)."""
    found = [_get(decoder(model), p) for p in family(model).embeddings]
    return [e for e in found if isinstance(e, nn.Embedding)]


def lm_head_is_tied(model: nn.Module) -> bool:
    """Whether the output projection shares its storage with the token embedding."""
    head = hf(model).get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        return False
    return head.weight.data_ptr() == embeddings(model)[0].weight.data_ptr()


def _resolve(layer: nn.Module, writer: Writer, index: int, prefix: str, kind: str) -> ResidualWriter | None:
    target = _get(layer, writer.path)
    if target is None:
        return None
    if isinstance(target, nn.Parameter):
        weight, bias = target, _get(layer, writer.bias) if writer.bias else None
    elif isinstance(param := getattr(target, "weight", None), nn.Parameter):
        weight, bias = param, getattr(target, "bias", None)
    else:
        return None
    norm = _get(layer, writer.post_norm) if writer.post_norm else None
    return ResidualWriter(
        name=f"{prefix}.{index}.{writer.path}",
        layer=index,
        weight=weight,
        bias=bias if isinstance(bias, nn.Parameter) else None,
        axis=writer.axis,
        post_norm=norm if isinstance(norm, nn.Module) else None,
        kind=kind,
    )


def residual_writers(model: nn.Module, layers: list[int] | None = None) -> list[ResidualWriter]:
    """Every parameter that writes into the residual stream in the chosen decoder layers."""
    fam = family(model)
    all_layers = decoder_layers(model)
    chosen = range(len(all_layers)) if layers is None else layers
    prefix = f"{fam.decoder}.{fam.layers}"
    out: list[ResidualWriter] = []
    for i in chosen:
        if not 0 <= i < len(all_layers):
            raise VaubanError(f"layer {i} out of range: the model has {len(all_layers)} layers")
        in_layer: list[ResidualWriter] = []
        for kind, group in (("attention", fam.attn_out), ("mlp", fam.mlp_out)):
            found = [w for w in (_resolve(all_layers[i], g, i, prefix, kind) for g in group) if w]
            if not found and not fam.mixed:
                raise VaubanError(
                    f"layer {i} of {model_type(model)!r}: no {kind} output projection at "
                    f"{[g.path for g in group]}; the arch.py entry does not match this model"
                )
            in_layer.extend(found)
        if not in_layer:
            paths = [g.path for g in (*fam.attn_out, *fam.mlp_out)]
            raise VaubanError(
                f"layer {i} of {model_type(model)!r}: no output projection at {paths}; "
                "the arch.py entry does not match this model"
            )
        out.extend(in_layer)
    return out


def explain(model: nn.Module) -> tuple[str, list[tuple[int, str, str]]]:
    """What a cut of ``model`` will edit: a line naming the detected family (its ``model_type``,
    table entry, decoder layers and embeddings), and per decoder layer ``(layer, token-mixer
    writers, feed-forward writers)`` as paths inside the layer (a post-norm named after its writer)."""
    fam = family(model)
    found: dict[int, dict[str, list[str]]] = {}
    for w in residual_writers(model):
        path = w.name.split(f".{w.layer}.", 1)[1]
        norm = next((g.post_norm for g in (*fam.attn_out, *fam.mlp_out) if g.path == path), None)
        path += f" (through {norm})" if w.post_norm is not None else ""
        found.setdefault(w.layer, {"attention": [], "mlp": []})[w.kind].append(path)
    head = (
        f"model_type {model_type(model)!r} → family {fam.name!r}: {len(found)} layers at "
        f"{fam.decoder}.{fam.layers}, embeddings {', '.join(fam.embeddings)}"
    )
    return head, [
        (i, ", ".join(k["attention"]) or "-", ", ".join(k["mlp"]) or "-") for i, k in sorted(found.items())
    ]


def norm_gain(norm: nn.Module, d: int, device: torch.device) -> torch.Tensor:
    """The per-channel gain an RMS-style norm applies, up to a positive scale.

    RMSNorm(x) = x / rms(x) * g, so feeding a vector of ones (rms = 1) returns g itself, whatever
    the family's convention for storing it (Gemma stores ``g - 1``). That keeps the post-norm
    correction free of per-family formulas.
    """
    weight = next(norm.parameters(), None)
    dtype = weight.dtype if weight is not None else torch.float32
    with torch.no_grad():
        return norm(torch.ones(1, d, device=device, dtype=dtype)).float().reshape(d)


def layer_hidden(output: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The residual stream in a decoder layer's output (a tensor, or a tuple's first item)."""
    return output[0] if isinstance(output, tuple) else output


def with_hidden(output: torch.Tensor | tuple[torch.Tensor, ...], hidden: torch.Tensor) -> Any:
    """A decoder layer's output with its residual stream replaced, in the same shape of result."""
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def writer_module(model: nn.Module, writer: ResidualWriter) -> nn.Module:
    """The module whose output is what ``writer`` adds: the writer itself (a linear layer), or
    for a bare parameter (fused MoE experts) its owner, whose output is linear in it."""
    try:
        return model.get_submodule(writer.name)
    except AttributeError:
        return model.get_submodule(writer.name.rsplit(".", 1)[0])
