"""Conditional steering (CAST, Lee et al., ICLR 2025): change refusal only on prompts that match a
condition.

A **condition** (:class:`Condition`) scores each prompt and matches above a threshold. Two kinds:

- the **probe** (:mod:`vauban.methods.gating`, what ``--when`` fits): a logistic regression over
  several layers' last-token residuals, its layers, penalty and threshold chosen by
  cross-validation over the ``measure`` and ``tune`` prompts;
- the **cosine** condition (:class:`CosineCondition`, :func:`measure_condition`): at layer ``l``,
  ``c(l) = normalize(mean(M, l) - mean(U, l))`` over last-token residuals of the chat-formatted
  prompts that match (``M``) and do not (``U``); a prompt's score is the cosine between its
  residual, centred at the midpoint of the two means, and ``c(l)``. The layer and the threshold
  are chosen on *held-back* prompts (``tune``) for the best balanced accuracy. (CAST reads the
  mean over the prompt's tokens; the last token carries the chat template's summary of the
  prompt, the residual :mod:`vauban.measuring` reads too.) A harm category is not that separable
  at one layer (``benchmarks/results/control_demo.json``), hence the probe.

Neither reads the ``test`` split, so the accuracy reported there is not the one they were chosen
on.

Steering then applies to matched prompts only: ``remove`` ablates the refusal direction at
every layer (:class:`vauban.steering.Steering`), ``add`` adds ``alpha`` × the refusal
difference in means (unnormalized) after the direction's layer, at every position (activation
addition, Arditi et al. 2024, §3). The decision is made once per prompt, before generating, with
one prefill; unmatched prompts are generated with the model untouched.

A condition named ``not:NAME`` is ``NAME``'s turned round (:meth:`Condition.negated`): ``--when
not:weapons`` removes refusal from every prompt but those about weapons, which keeps the weapons
refusals at run time (``abliterate --keep weapons`` keeps them in the weights, less exactly:
``benchmarks/results/control_demo.json``).

Example sets (:func:`condition_sets`): a bundled condition of ``conditions.jsonl``
(``medical``), a harm category of the bundled category sets (that category against the others:
measure and tune from ``harmful_categories``, test from ``eval_categories``), or a ``.jsonl``
file with ``prompt``, ``matched`` (bool) and ``split`` (``measure`` / ``tune`` / ``test``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from ..core.errors import VaubanError, check_layer
from ..direction.categories import category_prompts
from ..direction.results import DirectionResult
from ..edit.cutting import Direction
from ..edit.vectors import unit_rows
from ..model import arch
from ..runtime.activations import last_token_residuals
from ..runtime.generating import generate
from ..text.formatting import Formatting, formatting_for
from ..text.prompts import bundled_records, load_prompts, read_jsonl
from ..text.reasoning import resolved
from .steering import Steering

MODES = ("remove", "add")
SPLITS = ("measure", "tune", "test")


@dataclass(frozen=True)
class ConditionSets:
    """Matched and unmatched example prompts of one condition, per split."""

    name: str
    matched: dict[str, list[str]]
    unmatched: dict[str, list[str]]

    def __post_init__(self) -> None:
        for split in ("measure", "tune"):
            if len(self.matched.get(split, [])) < 2 or len(self.unmatched.get(split, [])) < 2:
                raise VaubanError(
                    f"condition {self.name!r} needs at least 2 matched and 2 unmatched "
                    f"prompts in its {split!r} split"
                )


def condition_sets(source: str | Path) -> ConditionSets:
    """The example prompts of a condition (see the module docstring for ``source``)."""
    text = str(source)
    bundled = {r["condition"] for r in bundled_records("conditions")}
    if text in bundled:
        return _from_records(text, [r for r in bundled_records("conditions") if r["condition"] == text])
    if text.endswith(".jsonl") and Path(text).expanduser().is_file():
        return _from_records(Path(text).stem, read_jsonl(Path(text).expanduser()))
    measure, held = category_prompts("measure"), category_prompts("eval")
    if text not in measure:
        raise VaubanError(
            f"no condition {text!r}: use a bundled condition ({', '.join(sorted(bundled))}), "
            f"a category ({', '.join(measure)}) or a .jsonl file of prompt/matched/split"
        )
    sets: dict[bool, dict[str, list[str]]] = {True: {}, False: {}}
    for name, prompts in measure.items():
        cut = len(prompts) - max(1, len(prompts) // 4)
        parts = (("measure", prompts[:cut]), ("tune", prompts[cut:]), ("test", held.get(name, [])))
        for split, part in parts:
            sets[name == text].setdefault(split, []).extend(part)
    return ConditionSets(text, sets[True], sets[False])


def _from_records(name: str, records: Sequence[Any]) -> ConditionSets:
    sets: dict[bool, dict[str, list[str]]] = {True: {}, False: {}}
    for n, r in enumerate(records, start=1):
        if not isinstance(r, dict) or r.get("split") not in SPLITS or not isinstance(r.get("matched"), bool):
            raise VaubanError(
                f"condition {name!r} row {n}: expected prompt, matched (true/false) and split "
                f"({'/'.join(SPLITS)})"
            )
        sets[r["matched"]].setdefault(r["split"], []).extend(load_prompts([r["prompt"]]))
    return ConditionSets(name, sets[True], sets[False])


@runtime_checkable
class Condition(Protocol):
    """What ``--when`` needs of a condition: a score per prompt, matched above ``threshold``; its
    negation (``not:NAME``); a JSON-ready record (:class:`CosineCondition`,
    :class:`vauban.methods.gating.ProbeCondition`)."""

    name: str
    threshold: float
    formatting: Formatting | None

    def prompt_scores(
        self, model: nn.Module, tokenizer: Any, prompts: Sequence[str], *, batch_size: int | None = None
    ) -> torch.Tensor: ...

    def negated(self) -> Condition: ...

    def record(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class CosineCondition:
    """A cosine condition: direction, centre and threshold at one layer, with the balanced
    accuracy on the tune prompts it was chosen on (per layer in ``tune_accuracy``)."""

    name: str
    vector: torch.Tensor = field(repr=False)  # (d,) unit
    centre: torch.Tensor = field(repr=False)  # (d,)
    layer_index: int
    threshold: float
    tune_accuracy: tuple[float, ...] = ()
    formatting: Formatting | None = None

    def scores(self, residuals: torch.Tensor) -> torch.Tensor:
        """Cosine of ``(n, d)`` residuals at the condition's layer, centred, with the direction."""
        x = residuals.double() - self.centre.double()
        return (x @ self.vector.double()) / x.norm(dim=-1).clamp_min(1e-12)

    def prompt_scores(
        self, model: nn.Module, tokenizer: Any, prompts: Sequence[str], *, batch_size: int | None = None
    ) -> torch.Tensor:
        """Each prompt's score (one prefill up to the condition's layer)."""
        acts = last_token_residuals(
            model,
            tokenizer,
            list(prompts),
            layers=[self.layer_index],
            batch_size=batch_size,
            formatting=self.formatting,
            desc="condition",
        )
        return self.scores(acts[:, 0])

    def negated(self) -> CosineCondition:
        """The condition that matches exactly the prompts this one does not (``not:NAME``): the
        same layer and centre, direction and threshold turned round (ties excepted)."""
        name, vector = f"not:{self.name}", -self.vector
        return dataclasses.replace(self, name=name, vector=vector, threshold=-self.threshold)

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "cosine",
            "layer": self.layer_index,
            "threshold": round(self.threshold, 6),
            "tune_balanced_accuracy": round(self.tune_accuracy[self.layer_index], 4)
            if self.tune_accuracy
            else None,
        }


def balanced_accuracy(matched: torch.Tensor, unmatched: torch.Tensor, threshold: float) -> float:
    """Mean of the matched prompts' hit rate and the unmatched prompts' rejection rate."""
    hits, rejections = (matched > threshold).double().mean(), (unmatched <= threshold).double().mean()
    return (float(hits) + float(rejections)) / 2


def best_threshold(matched: torch.Tensor, unmatched: torch.Tensor) -> tuple[float, float]:
    """``(threshold, balanced accuracy)``: the midpoint between neighbouring scores that separates
    the two sets best (ties: the widest gap)."""
    values = torch.cat([matched, unmatched]).double().sort().values
    cuts = torch.cat([values[:1] - 1e-6, (values[1:] + values[:-1]) / 2, values[-1:] + 1e-6])
    edge = torch.zeros(1, dtype=values.dtype)
    gaps = torch.cat([edge, values[1:] - values[:-1], edge])
    scored = [
        (balanced_accuracy(matched, unmatched, float(t)), float(g), float(t))
        for t, g in zip(cuts, gaps, strict=True)
    ]
    accuracy, _, threshold = max(scored)
    return threshold, accuracy


def measure_condition(
    model: nn.Module,
    tokenizer: Any,
    sets: ConditionSets,
    *,
    layers: Sequence[int] | None = None,
    batch_size: int | None = None,
    formatting: Formatting | None = None,
    show_progress: bool | None = None,
) -> CosineCondition:
    """The cosine condition of ``sets``: a direction per layer from the ``measure`` prompts; the layer
    (among ``layers``, default all) and threshold with the best balanced accuracy on ``tune``."""
    fmt = resolved(formatting, tokenizer)
    n = arch.num_layers(model)
    wanted = list(range(n)) if layers is None else [check_layer(i, n) for i in layers]

    def acts(prompts: list[str], desc: str) -> torch.Tensor:
        return last_token_residuals(
            model,
            tokenizer,
            prompts,
            layers=wanted,
            batch_size=batch_size,
            formatting=fmt,
            show_progress=show_progress,
            desc=desc,
        )

    m, u = acts(sets.matched["measure"], "matched"), acts(sets.unmatched["measure"], "unmatched")
    tm, tu = acts(sets.matched["tune"], "tune matched"), acts(sets.unmatched["tune"], "tune unmatched")
    return cosine_from_residuals(sets.name, (m, u), (tm, tu), wanted, n, fmt)


def cosine_from_residuals(
    name: str,
    measure: tuple[torch.Tensor, torch.Tensor],
    tune: tuple[torch.Tensor, torch.Tensor],
    layers: Sequence[int],
    num_layers: int,
    formatting: Formatting | None = None,
) -> CosineCondition:
    """The cosine condition of matched / unmatched ``(n, len(layers), d)`` residuals: directions
    from ``measure``, the layer and threshold with the best balanced accuracy on ``tune``."""
    (m, u), (tm, tu) = (x.double() for x in measure), (x.double() for x in tune)
    vectors, centres = unit_rows(m.mean(0) - u.mean(0)), (m.mean(0) + u.mean(0)) / 2
    accuracy, thresholds = [], []
    for j in range(len(layers)):
        probe = CosineCondition(name, vectors[j], centres[j], layers[j], 0.0)
        threshold, acc = best_threshold(probe.scores(tm[:, j]), probe.scores(tu[:, j]))
        accuracy.append(acc)
        thresholds.append(threshold)
    best = max(range(len(layers)), key=lambda j: (accuracy[j], -j))
    per_layer = [float("nan")] * num_layers
    for j, layer in enumerate(layers):
        per_layer[layer] = accuracy[j]
    return CosineCondition(
        name,
        vectors[best].float(),
        centres[best].float(),
        layers[best],
        thresholds[best],
        tuple(per_layer),
        formatting,
    )


def condition_scores(
    model: nn.Module,
    tokenizer: Any,
    condition: Condition,
    prompts: Sequence[str],
    *,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Each prompt's score on the condition (one prefill; compare with ``condition.threshold``)."""
    return condition.prompt_scores(model, tokenizer, prompts, batch_size=batch_size)


class Adding:
    """Hooks that add ``alpha`` × ``vector`` to the residual after ``layer``, at every position."""

    def __init__(self, model: nn.Module, vector: torch.Tensor, layer: int, alpha: float = 1.0) -> None:
        self.block = arch.decoder_layers(model)[check_layer(layer, arch.num_layers(model))]
        weight = next(model.parameters())
        self.shift = (alpha * vector.reshape(-1)).to(weight.device, weight.dtype)
        self._handle: Any = None

    def _hook(self, _module: nn.Module, _args: Any, output: Any) -> Any:
        return arch.with_hidden(output, arch.layer_hidden(output) + self.shift)

    def __enter__(self) -> Adding:
        self._handle = self.block.register_forward_hook(self._hook, prepend=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
        self._handle = None


def refusal_shift(direction: Direction) -> tuple[torch.Tensor, int]:
    """What ``add`` adds, and after which layer: the unnormalized difference in means at a
    measured direction's layer."""
    if (
        not isinstance(direction, DirectionResult)
        or direction.harmful_means is None
        or direction.harmless_means is None
    ):
        raise VaubanError(
            "adding refusal needs a measured direction (with its means); measure one or pass "
            "a direction saved by vauban measure -o"
        )
    layer = direction.layer_index
    return (direction.harmful_means[layer] - direction.harmless_means[layer]).float(), layer


@contextlib.contextmanager
def steered(model: nn.Module, direction: Direction, mode: str, alpha: float) -> Iterator[None]:
    """The model steered for matched prompts: ``remove`` or ``add`` refusal (module docstring)."""
    if mode not in MODES:
        raise VaubanError(f"unknown steering mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "remove":
        with Steering(model, direction, alpha):
            yield
        return
    shift, layer = refusal_shift(direction)
    with Adding(model, shift, layer, alpha):
        yield


def conditional_generate(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    condition: Condition,
    direction: Direction,
    *,
    mode: str = "remove",
    alpha: float = 1.0,
    max_tokens: int = 64,
    batch_size: int | None = None,
    formatting: Formatting | None = None,
) -> tuple[list[str], list[bool]]:
    """Greedy answers to ``prompts``, steered (``mode``) only where the condition matches; also
    which prompts matched."""
    texts = load_prompts(list(prompts), what="prompts")
    matched = [
        bool(s > condition.threshold)
        for s in condition_scores(model, tokenizer, condition, texts, batch_size=batch_size)
    ]
    fmt = formatting_for(direction, formatting)
    answers: list[str] = [""] * len(texts)
    for hit in (True, False):
        rows = [i for i, m in enumerate(matched) if m == hit]
        if not rows:
            continue
        with steered(model, direction, mode, alpha) if hit else contextlib.nullcontext():
            out = generate(
                model,
                tokenizer,
                [texts[i] for i in rows],
                max_tokens=max_tokens,
                batch_size=batch_size,
                formatting=fmt,
                prompt_set="steer",
            )
        for i, answer in zip(rows, out, strict=True):
            answers[i] = answer
    return answers, matched
