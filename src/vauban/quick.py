"""The tutorial's one-liners, each a thin layer over the low-level modules.

Every function takes a transformers model or a model returned by ``mlx_lm.load`` (converted
once to PyTorch, where vauban computes), a tokenizer, and prompts as lists, bundled set names or
files. ``None`` for a prompt set means vauban's bundled set.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from .core.errors import VaubanError
from .direction.measuring import measure
from .direction.probing import probe
from .direction.results import DirectionResult, ProbeResult
from .edit.cutting import cut
from .evaluation.evaluating import evaluate as _evaluate
from .evaluation.results import EvalResult
from .exports.exporting import check_output_dir, cut_record, export
from .exports.formats import check_options
from .judge import Judge
from .methods import FITTED
from .methods.steering import SteerResult, steer
from .model.loading import default_device, load_model, model_label, resolve_dtype
from .model.mlx_format import is_mlx_model, mlx_model_to_torch
from .search.optimizing import optimize as _optimize
from .search.trials import OptimizeResult
from .text.formatting import Formatting
from .text.prompts import Prompts, load_prompts

__all__ = ["abliterate", "evaluate", "load", "measure_direction", "optimize", "probe_prompt", "steer_prompt"]


def load(model_path: str | os.PathLike[str] | None = None, **kwargs: Any) -> tuple[nn.Module, Any]:
    """Load ``(model, tokenizer)`` as float weights; no argument loads the embedded demo model.

    See :func:`vauban.model.loading.load` for ``device``, ``dtype``, ``revision``, ``trust_remote_code``.
    """
    return load_model(model_path, **kwargs)


def as_torch(model: Any) -> nn.Module:
    """``model`` itself, or for an ``mlx_lm`` model its PyTorch twin (converted once, cached)."""
    if isinstance(model, nn.Module):
        return model
    if is_mlx_model(model):
        cached = getattr(model, "_vauban_torch", None)
        if cached is None:
            device = default_device()
            cached = mlx_model_to_torch(model, resolve_dtype(None, device), device)
            object.__setattr__(model, "_vauban_torch", cached)
        return cached
    raise VaubanError(f"expected a transformers or mlx_lm model, got {type(model).__name__}")


def as_hf_tokenizer(tokenizer: Any) -> Any:
    """The transformers tokenizer inside ``mlx_lm``'s ``TokenizerWrapper``, else ``tokenizer``.

    The wrapper forwards attributes but not calls, and replaces ``apply_chat_template``; it has
    no public accessor for what it wraps, so its private ``_tokenizer`` is read (the one private
    mlx-lm name vauban uses, read-only). Should a release drop it, the same tokenizer is loaded
    again from the directory the wrapper came from (its ``name_or_path``).
    """
    if type(tokenizer).__name__ != "TokenizerWrapper":
        return tokenizer
    inner = getattr(tokenizer, "_tokenizer", None)
    if inner is not None:
        return inner
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer.name_or_path)


def measure_direction(
    model: Any,
    tokenizer: Any,
    harmful: Prompts | None = None,
    harmless: Prompts | None = None,
    **kwargs: Any,
) -> DirectionResult:
    """Measure the refusal direction (bundled 128 + 128 prompts unless given)."""
    return measure(
        as_torch(model),
        as_hf_tokenizer(tokenizer),
        "harmful" if harmful is None else harmful,
        "harmless" if harmless is None else harmless,
        **kwargs,
    )


def probe_prompt(
    model: Any,
    tokenizer: Any,
    prompt: str,
    direction: DirectionResult | torch.Tensor,
    formatting: Formatting | None = None,
) -> ProbeResult:
    """Per-layer projection of ``prompt``'s last-token activation onto ``direction``."""
    return probe(as_torch(model), as_hf_tokenizer(tokenizer), prompt, direction, formatting=formatting)


def abliterate(
    model: Any,
    tokenizer: Any,
    model_path: str | os.PathLike[str] | None = None,
    output_dir: str | os.PathLike[str] = "abliterated",
    alpha: float = 1.0,
    harmful: Prompts | None = None,
    harmless: Prompts | None = None,
    *,
    direction: DirectionResult | None = None,
    layers: list[int] | None = None,
    embeddings: bool = False,
    overwrite: bool = False,
    format: str = "safetensors",
    quant: str | None = None,
    dtype: str | torch.dtype | None = None,
    formatting: Formatting | None = None,
    method: str = "plain",
    method_options: dict[str, Any] | None = None,
) -> DirectionResult:
    """Measure the direction (unless given), cut it from every layer, export to ``output_dir``
    in ``format`` (``safetensors``, ``gguf``, ``lora``, ``mlx``; ``quant`` and ``dtype``: see
    :func:`vauban.export`).

    The in-memory ``model`` is left exactly as it was: the cut is applied for the export and
    then undone bit for bit, so ``model`` stays the original for evaluation and steering.
    ``model_path`` only labels the export (the model remembers where it was loaded from).
    ``formatting`` (:mod:`vauban.text.formatting`) formats the measurement's prompts; the export's
    ``vauban.json`` records it. ``method="auto"``: the cut chosen by damage at a refusal level
    among layers, edit methods and settings (:mod:`vauban.methods.choosing`, ``docs/methods.md``;
    ``alpha``, ``layers`` and ``embeddings`` are then the chosen candidate's). ``method`` one of
    :data:`FITTED`: that edit method (:mod:`vauban.methods`) fitted on ``harmful`` and
    ``harmless`` with ``method_options`` (e.g. ``{"keep": 0.3, "strength": 1.2}``), as
    ``vauban abliterate --method NAME --method-option KEY=VALUE``.
    """
    torch_model, tokenizer = as_torch(model), as_hf_tokenizer(tokenizer)
    if method not in ("plain", "auto", *FITTED):
        raise VaubanError(f"method must be one of plain, auto, {', '.join(FITTED)}; got {method!r}")
    if method_options and method not in FITTED:
        raise VaubanError(f"method_options sets a fitted method's settings; method={method!r} takes none")
    out = check_output_dir(output_dir, overwrite)
    check_options(format, quant)
    if direction is None:
        direction = measure_direction(torch_model, tokenizer, harmful, harmless, formatting=formatting)
    source = str(model_path) if model_path is not None else model_label(torch_model)
    if method != "plain":  # auto and the fitted methods fit on the prompt sets
        from .methods.choosing import default_cut
        from .methods.protocol import Inputs
        from .methods.registry import get_method

        sets = Inputs(load_prompts(harmful or "harmful"), load_prompts(harmless or "harmless"), formatting)
        if method == "auto":
            applied, _ = default_cut(torch_model, tokenizer, direction, sets.harmful, sets.harmless)
        else:
            applied = get_method(method).make(
                torch_model, tokenizer, direction, sets, **(method_options or {})
            )
    else:
        applied = cut(torch_model, direction, alpha=alpha, layers=layers, embeddings=embeddings)
    with applied:
        record = cut_record(source, applied, direction)
        export(
            torch_model,
            tokenizer,
            out,
            direction=direction,
            record=record,
            overwrite=overwrite,
            format=format,
            quant=quant,
            dtype=dtype,
        )
    return direction


def evaluate(
    original: Any, modified: Any, tokenizer: Any, prompts: Prompts | None = None, **kwargs: Any
) -> EvalResult:
    """Refusal rate, perplexity and KL of ``original`` vs ``modified`` (20 bundled prompts).

    ``original`` and ``modified`` may be the same model object with a reversible cut applied;
    see :func:`vauban.evaluation.evaluating.evaluate` for ``reference``, ``max_tokens``, ``batch_size`` and
    ``judge`` (which judge counts the refusals: ``"markers"``, ``"chat:demo"``, ...).
    """
    return _evaluate(as_torch(original), as_torch(modified), as_hf_tokenizer(tokenizer), prompts, **kwargs)


def steer_prompt(
    model: Any,
    tokenizer: Any,
    prompt: str,
    direction: DirectionResult | torch.Tensor,
    alpha: float = 1.0,
    max_tokens: int = 100,
    judge: str | Judge | None = None,
    formatting: Formatting | None = None,
) -> SteerResult:
    """Generate an answer to ``prompt`` while removing ``alpha`` × the direction at every layer;
    ``judge`` decides ``refused`` (default: markers, see :mod:`vauban.judge`)."""
    return steer(
        as_torch(model),
        as_hf_tokenizer(tokenizer),
        prompt,
        direction,
        alpha,
        max_tokens=max_tokens,
        judge=judge,
        formatting=formatting,
    )


def optimize(
    model: Any,
    tokenizer: Any,
    direction: DirectionResult | None = None,
    n_trials: int = 30,
    study: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> OptimizeResult:
    """Search cut variants for the fewest refusals at the lowest KL (measures the direction
    unless given), then refine the plain cut's per-writer weights; the model ends unchanged.
    ``study=PATH`` keeps the study on disk so a rerun resumes it. Export a Pareto point with
    :func:`vauban.search.optimizing.export_trial`; see :func:`vauban.search.optimizing.optimize` for the other
    options (``judge=`` among them)."""
    torch_model, tokenizer = as_torch(model), as_hf_tokenizer(tokenizer)
    if direction is None:
        direction = measure_direction(torch_model, tokenizer)
    return _optimize(torch_model, tokenizer, direction, n_trials=n_trials, study=study, **kwargs)
