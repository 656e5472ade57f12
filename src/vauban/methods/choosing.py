"""The default cut: every candidate (layer × edit method × settings) scored on held-back prompts,
the one chosen by :func:`.default.choose_by_damage`.

Candidates (:func:`candidate_settings`): the plain cut at each layer ``measure`` scored by effect
(their scores are reused, not measured again); at the layers whose plain score is within the
tolerance of the best, and at the layer ``measure`` chose, the harmless-preserving edit for each
λ of :data:`KEEPS`; at ``measure``'s layer the projected and the norm-preserving cut; the subspaces of
:data:`SUBSPACE_KS` directions at ``measure``'s layer (``k`` chosen by effect, like the rest), each
cut plainly and by the harmless-preserving edit over it at each λ of :data:`KEEPS`.
Each is applied, scored (refusal likelihood on the held-back harmful prompts the original refuses,
first-token KL on the held-back harmless ones) and undone. The preserving edits fit on the writer
inputs of :func:`preserving_inputs` (the run's harmful prompts and the bundled category prompts).
Not candidates: ``learned`` and ``learned_preserving``, whose direction is fitted by gradient on the
very two quantities this score reads, and games it (docs/methods.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any

from torch import nn

from ..edit.cutting import Cut
from .default import TOLERANCE, Candidate, choose_by_damage
from .protocol import Inputs

KEEPS = (0.3, 1.0, 3.0)  # λ of the harmless-preserving edit tried at each candidate layer
SUBSPACE_KS = (2, 3)
LEARN_STEPS = 4  # the learned direction's Adam steps (each: a backward pass per fit prompt)


def preserving_inputs(inputs: Inputs, held_out: Sequence[str] = ()) -> Inputs:
    """The prompt sets ``auto``'s preserving edits capture their writer inputs on: the run's harmful
    prompts plus the bundled category measuring prompts that are neither among them nor ``held_out``
    (the prompts candidates are scored on; the category set shares some with the bundled harmful
    prompts), the same 1,024 rows a writer drawn from more kinds of request; the harmless ones as
    given. Fitted so, every harmless-preserving candidate of the demo removed more of the refusal
    on held-back prompts at a somewhat higher KL, and the rule, fixed before the run, chose one
    (docs/methods.md)."""
    from ..direction.categories import category_prompts

    skip = {*inputs.harmful, *held_out}
    extra = [p for group in category_prompts("measure").values() for p in group if p not in skip]
    return Inputs([*inputs.harmful, *extra], inputs.harmless, inputs.formatting, inputs.batch_size)


def candidate_settings(direction: Any) -> list[dict[str, Any]]:
    """Every candidate's settings beyond the plain cuts ``measure`` already scored (module docstring)."""
    best = min(e.refusal for e in direction.effects)
    layers = sorted(
        {e.layer for e in direction.effects if e.refusal <= best + TOLERANCE} | {direction.layer_index}
    )
    out: list[dict[str, Any]] = [
        {"method": "harmless_preserving", "layer": layer, "keep": keep} for layer in layers for keep in KEEPS
    ]
    out += [{"method": m, "layer": direction.layer_index} for m in ("projected", "norm_preserving")]
    out += [{"method": "subspace", "k": k} for k in SUBSPACE_KS]
    out += [
        {"method": "harmless_preserving", "layer": direction.layer_index, "keep": keep, "subspace": k}
        for k in SUBSPACE_KS
        for keep in KEEPS
    ]
    return out


def build(
    model: nn.Module,
    tokenizer: Any,
    direction: Any,
    settings: dict[str, Any],
    inputs: Inputs,
    captured: Any = None,
    learned: MutableMapping[tuple[Any, ...], Any] | None = None,
) -> Cut:
    """The applied cut of one candidate's ``settings`` (``method``, ``layer`` and the method's own);
    ``captured`` (the preserving edits' writer inputs) and ``learned`` (learned directions by
    ``(layer, steps)`` and measured subspaces by ``("subspace", layer, k)``, filled as they are
    fitted) are shared across candidates."""
    from .learned import fit_direction
    from .preserving import subspace_of
    from .registry import get_method

    s = dict(settings)
    name = s.pop("method")
    layer = s.pop("layer", None)
    at = direction if layer is None else direction.at_layer(layer)
    if name == "subspace":
        return get_method(name).make(model, tokenizer, at, inputs, subspace=s.pop("k"))
    if name in ("harmless_preserving", "learned_preserving"):
        s["captured"] = captured
    if name == "harmless_preserving" and s.get("subspace", 1) != 1 and learned is not None:
        measured: tuple[Any, ...] = ("subspace", layer, s["subspace"])
        if measured not in learned:
            learned[measured] = subspace_of(model, tokenizer, at, inputs, s["subspace"])[0]
        s["subspace"] = learned[measured]
    if name in ("learned", "learned_preserving") and learned is not None:
        key = (layer, s.get("steps", LEARN_STEPS))
        if key not in learned:
            learned[key] = fit_direction(model, tokenizer, at, inputs, steps=key[1])
        s["learned"] = learned[key]
    return get_method(name).make(model, tokenizer, at, inputs, **s)


def score_all(
    model: nn.Module,
    tokenizer: Any,
    direction: Any,
    inputs: Inputs,
    held_harmful: Sequence[str],
    held_harmless: Sequence[str],
    log: Callable[[str], None] | None = None,
    known: MutableMapping[str, Candidate] | None = None,
    shared: dict[str, Any] | None = None,
    settings: Sequence[dict[str, Any]] | None = None,
) -> list[Candidate]:
    """Every candidate with its held-back refusal score and first-token KL; the model ends unchanged.
    ``known`` (name → candidate) is read before scoring one and written after, so a long search
    can persist it and resume where it was stopped; ``shared`` receives the writer inputs
    (``captured``, on :func:`preserving_inputs`) and learned directions (``learned``) the candidates
    were built from;
    ``settings``: the candidates beyond the plain cuts (default :func:`candidate_settings`)."""
    from ..direction.selecting import original_refusals
    from ..runtime.scoring import first_token_logprobs, kl_divergence, refusal_likelihood
    from .preserving import capture

    fmt = inputs.formatting
    refusals = original_refusals(model, tokenizer, list(held_harmful), formatting=fmt)
    base = first_token_logprobs(model, tokenizer, list(held_harmless), None, fmt)
    captured = capture(model, tokenizer, preserving_inputs(inputs, held_harmful))
    learned = shared.setdefault("learned", {}) if shared is not None else {}
    if shared is not None:
        shared["captured"] = captured
    scored = [
        Candidate(f"plain@{e.layer}", e.refusal, e.kl, {"method": "plain", "layer": e.layer})
        for e in direction.effects
    ]
    for one in candidate_settings(direction) if settings is None else settings:
        name = "@".join(str(v) for v in one.values())
        if known is not None and name in known:
            scored.append(known[name])
            continue
        start = time.perf_counter()
        with build(model, tokenizer, direction, one, inputs, captured, learned):
            kl = kl_divergence(base, first_token_logprobs(model, tokenizer, list(held_harmless), None, fmt))
            score = refusal_likelihood(model, tokenizer, refusals, 8, None, fmt)
        scored.append(Candidate(name, score, kl, one))
        if known is not None:
            known[name] = scored[-1]
        if log is not None:
            log(f"{name}: refusal score {score:.4f}, KL {kl:.4f} ({time.perf_counter() - start:.0f} s)")
    return scored


def default_cut(
    model: nn.Module,
    tokenizer: Any,
    direction: Any,
    harmful: Sequence[str],
    harmless: Sequence[str],
    log: Callable[[str], None] | None = None,
) -> tuple[Cut, Candidate]:
    """The default cut, applied, and its candidate: ``direction`` measured by effect (``measure``'s
    default, so its held-back prompts are the last quarter of ``harmful`` and ``harmless``, at most
    24); the edits fitted on the rest (the preserving ones with the bundled category prompts,
    :func:`preserving_inputs`)."""
    from ..direction.selecting import split
    from ..edit.cutting import cut

    if not direction.effects:  # chosen by geometry (no refusals to measure effects on): the plain cut
        return cut(model, direction), Candidate("plain", float("nan"), float("nan"), {"method": "plain"})
    fit_harmful, held_harmful = split(harmful)
    fit_harmless, held_harmless = split(harmless)
    inputs = Inputs(fit_harmful, fit_harmless, formatting=direction.formatting)
    shared: dict[str, Any] = {}
    scored = score_all(model, tokenizer, direction, inputs, held_harmful, held_harmless, log, shared=shared)
    chosen = choose_by_damage(scored)
    built = build(model, tokenizer, direction, chosen.settings, inputs, shared["captured"], shared["learned"])
    return built, chosen
