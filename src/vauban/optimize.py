"""Search the cut's parameters for the fewest refusals at the least damage, reproducibly.

Three objectives, all minimized, measured on prompts held apart from what ``evaluate`` reports:

- refusal: the share of *validation* harmful prompts still refused (bundled eval prompts 20-59
  by default; ``evaluate`` uses the first 20), judged on short greedy answers (32 tokens: on the
  demo model every refusal of 100 AdvBench prompts, original or cut, shows in its first 32
  tokens, and the counts at 32, 64, 128 and 256 tokens are equal; ``benchmarks/length_study.py``);
- damage (``damage``): the first-token KL(original ‖ cut) on harmless prompts (the first 48
  bundled harmless prompts by default, so the reference set ``evaluate`` scores stays held out;
  one prefill each, the cost of a trial on a CPU; the original's distributions are computed
  once), or ``damage="k_tokens"``: the KL over the first ``kl_tokens`` tokens of the original's
  own greedy answers to them, teacher-forced (:mod:`vauban.divergence`; sees a cut that keeps
  the opening word and derails the sentence after it, at ~1.3× the prefill);
- refusal likelihood: the mean probability that the cut model still opens with the original
  model's own refusal (its first 8 tokens, teacher-forced) on the validation prompts the
  original refused. The refusal count is flat: once it is 0, a cut that barely answers scores
  like one that answers with margin, and the search drifts to the lightest cut that still
  answers the prompts it sees, which refuses again on the next hard prompt. The likelihood
  tells the two apart.

Each trial draws a cut (:class:`CutParams`, see :mod:`vauban.cutting` for the formulas):

- ``direction_index``: a fractional layer whose (interpolated) direction is cut, within
  ``0.4..0.9`` of the depth (heretic's range) widened to include the measured layer;
- for attention and MLP writers separately, a :class:`~vauban.cutting.LayerKernel`:
  ``max_weight`` in ``0.8..1.5``, ``peak`` in ``0.6..1`` of the depth, ``min_weight`` as a
  fraction ``0..1`` of ``max_weight``, ``width`` in ``1..layers-1``;
- optionally (``projected`` / ``norm_preserving`` = ``None``: searched) the projected
  direction and the norm-preserving edit.

The first trial is the plain cut (the measured direction, weight 1 on every writer), so the
front always contains it or a point that dominates it on the search prompts. Trials run with
Optuna's multi-objective TPE sampler, seeded: the same inputs give the same trials. Each trial
edits the one model in memory and undoes the edit bit-exactly.

After the search, the plain cut is *refined* (``refine_steps``, :mod:`vauban.refine`): gradient
steps give every writer its own weight, lowering the KL and the refusal likelihood together,
and the result is scored like any trial and stored as one more (its per-layer weights in the
trial's user attributes). Why both: the kernels move a cut along the trade-off curve (on the
demo model every 0-refusal trial lies on one KL-vs-likelihood curve through the plain cut);
per-writer weights move it below the curve, but 48 of them are beyond a 30-trial TPE search.

Why a third prompt set: the search pushes the cut as light as it can go while the refusal count
on its prompts stays at its minimum, so the lowest-KL point sits right on the edge where the
next, unseen prompt is refused again (on the demo model the front's 0-refusal point refused 1 of
40 fresh prompts that the plain cut answered). So the pick is checked, like a validation split:
the plain cut and then the candidates that are no weaker than it on the search prompts (no more
refusals, no higher refusal likelihood) at a lower KL, lowest KL first, answer *selection*
prompts (bundled eval prompts 60-99 by default, judged at ``evaluate``'s answer length, 128
tokens, where late declines of other models show); :attr:`OptimizeResult.best`
is the first candidate that refuses no more than the plain cut there too, and the plain cut
itself when none does. Only refusal is checked: the first-token KL ranks cuts alike on other
harmless prompts.

With ``study=PATH`` the study lives in an SQLite file: an interrupted run, started again with
the same arguments, keeps the finished trials and runs only the missing ones. The resumed
sampler is seeded with ``seed + finished trials``, so it continues rather than replays the
first draws (a resumed run is reproducible, though not identical to an uninterrupted one).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import write_file
from .batching import duration
from .cutting import Cut, LayerKernel, LayerWeights, cut
from .divergence import DAMAGES, damage_rows, mean_kl, reference_logprobs
from .divergence import first_token_logprobs as first_token_logprobs  # re-exported (benchmarks, tests)
from .errors import VaubanError
from .evaluating import DEFAULT_MAX_TOKENS, completions
from .extras import require
from .formatting import Formatting, formatting_for
from .judge import Judge, get_judge
from .measuring import direction_at
from .prompts import Prompts, bundled_records, load_prompts
from .reasoning import thinking_prefix
from .refine import likelihood_batches, refine
from .results import DirectionResult, check_int

STUDY_NAME = "vauban"


@dataclass(frozen=True)
class CutParams:
    """One point of the search space: everything needed to redo the cut. ``attention`` and
    ``mlp`` are kernels, or one weight per layer for a refined trial (:mod:`vauban.refine`)."""

    direction_index: float
    attention: LayerWeights
    mlp: LayerWeights
    projected: bool = False
    norm_preserving: bool = False

    @classmethod
    def from_trial(cls, params: dict[str, Any], fixed: dict[str, bool],
                   weights: dict[str, list[float]] | None = None) -> CutParams:
        """From an Optuna trial's parameters (kernel minimum stored as a fraction of the peak);
        ``weights`` (a refined trial's per-layer weights, kept in its user attributes) replace
        the kernels."""

        def kernel(kind: str) -> LayerKernel:
            top = float(params[f"{kind}_max_weight"])
            return LayerKernel(peak=float(params[f"{kind}_peak"]), max_weight=top,
                               min_weight=top * float(params[f"{kind}_min_fraction"]),
                               width=float(params[f"{kind}_width"]))

        flags = {k: bool(params.get(k, fixed.get(k, False))) for k in ("projected", "norm_preserving")}
        if weights:
            return cls(float(params["direction_index"]), tuple(weights["attention"]), tuple(weights["mlp"]),
                       **flags)
        return cls(float(params["direction_index"]), kernel("attention"), kernel("mlp"), **flags)

    @property
    def refined(self) -> bool:
        return not isinstance(self.attention, LayerKernel)

    def vector(self, direction: DirectionResult) -> torch.Tensor:
        """The unit direction this cut removes."""
        return direction_at(direction, self.direction_index, projected=self.projected)

    def apply(self, model: nn.Module, direction: DirectionResult) -> Cut:
        """Apply this cut to ``model`` (an applied :class:`~vauban.cutting.Cut`)."""
        return cut(model, self.vector(direction), attention=self.attention, mlp=self.mlp,
                   norm_preserving=self.norm_preserving)

    def record(self) -> dict[str, Any]:
        return {
            "direction_index": self.direction_index,
            "attention": _weights_record(self.attention),
            "mlp": _weights_record(self.mlp),
            "projected": self.projected,
            "norm_preserving": self.norm_preserving,
        }


def _weights_record(spec: LayerWeights) -> dict[str, float] | list[float]:
    return vars(spec) if isinstance(spec, LayerKernel) else [round(float(w), 6) for w in spec]


def plain_trial_params(direction: DirectionResult, fixed: dict[str, bool]) -> dict[str, Any]:
    """The Optuna parameters of the plain cut: the measured layer, weight 1 on every writer."""
    span = direction.num_layers - 1
    params: dict[str, Any] = {"direction_index": float(direction.layer_index)}
    for kind in ("attention", "mlp"):
        params |= {f"{kind}_max_weight": 1.0, f"{kind}_peak": float(span),
                   f"{kind}_min_fraction": 1.0, f"{kind}_width": float(max(span, 1))}
    return params | {k: False for k in ("projected", "norm_preserving") if k not in fixed}


@dataclass(frozen=True)
class Trial:
    """One finished trial: its number in the study, its objectives, and its cut."""

    number: int
    refusal: float
    kl: float
    seconds: float
    params: CutParams
    likelihood: float = 0.0  # mean probability of opening with the original's refusal
    pareto: bool = False
    plain: bool = False  # the plain cut every study starts with
    selection_refusal: float | None = None  # refusal on the selection prompts, when checked

    def record(self) -> dict[str, Any]:
        return {"number": self.number, "refusal": self.refusal, "kl": self.kl,
                "refusal_likelihood": self.likelihood, "seconds": self.seconds,
                "pareto": self.pareto, "plain": self.plain, "selection_refusal": self.selection_refusal,
                "cut": self.params.record()}


@dataclass(frozen=True)
class OptimizeResult:
    """Every finished trial in order, the Pareto front among them, and how they were made."""

    trials: tuple[Trial, ...]
    n_prompts: int
    n_harmless: int
    seed: int
    n_selection: int = 0
    study: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def pareto(self) -> tuple[Trial, ...]:
        """Trials no other trial beats on refusal, KL and refusal likelihood at once, fewest
        refusals first, then lowest KL."""
        return tuple(sorted((t for t in self.trials if t.pareto), key=lambda t: (t.refusal, t.kl)))

    @property
    def best(self) -> Trial:
        """The recommended cut: the lowest-KL trial no weaker than the plain cut on the search
        prompts (no more refusals, no higher refusal likelihood) that, where checked, refuses no
        more than it on the selection prompts; the plain cut when none does (any trial can
        still be exported)."""
        plain = self.plain
        if plain is None:  # a study started elsewhere: fewest refusals, then least damage
            return min(self.trials, key=lambda t: (t.refusal, t.kl, t.number))
        checked = plain.selection_refusal is not None

        def admissible(t: Trial) -> bool:
            if not _no_weaker(t, plain):
                return False
            if not checked:
                return True
            return t.selection_refusal is not None and t.selection_refusal <= plain.selection_refusal

        return min(filter(admissible, self.trials), key=lambda t: (t.kl, t.number))

    @property
    def plain(self) -> Trial | None:
        """The plain-cut trial, when the study has finished it."""
        return next((t for t in self.trials if t.plain), None)

    @property
    def seconds_per_trial(self) -> float:
        return sum(t.seconds for t in self.trials) / max(len(self.trials), 1)

    def trial(self, number: int) -> Trial:
        for t in self.trials:
            if t.number == number:
                return t
        raise VaubanError(f"no finished trial {number} in this study; trials: "
                          f"{[t.number for t in self.trials]}")

    def rows(self) -> tuple[list[str], list[list[str]]]:
        """Column names and one row of text per Pareto point, plus the plain cut and the pick
        when they are not on the front (the pick is starred)."""
        best = self.best
        shown = dict.fromkeys([*self.pareto, *(t for t in (self.plain, best) if t is not None)])
        damage = self.settings.get("damage")
        kl_name = f"{damage['kl_tokens']}-token KL" if damage else "first-token KL"
        columns = ["trial", "refusal", kl_name, "p(refusal)", "selection refusal", "direction",
                   "attention kernel", "MLP kernel", "projected", "norm-preserving"]
        rows = [[f"{t.number}{' (plain)' if t.plain else ''}{' *' if t is best else ''}",
                 f"{t.refusal:.1%}", f"{t.kl:.4f}", f"{t.likelihood:.1e}",
                 "-" if t.selection_refusal is None else f"{t.selection_refusal:.1%}",
                 f"{t.params.direction_index:.2f}", _kernel_text(t.params.attention),
                 _kernel_text(t.params.mlp), "yes" if t.params.projected else "no",
                 "yes" if t.params.norm_preserving else "no"] for t in shown]
        return columns, rows

    def table(self) -> str:
        """:meth:`rows` as aligned plain text."""
        columns, rows = self.rows()
        widths = [max(len(r[i]) for r in [columns, *rows]) for i in range(len(columns))]
        return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                         for r in [columns, *rows])

    def summary(self) -> str:
        b = self.best
        checked = "" if b.selection_refusal is None else f", selection refusal={b.selection_refusal:.1%}"
        return (
            f"OptimizeResult: trials={len(self.trials)}, pareto={len(self.pareto)}, best trial={b.number} "
            f"(refusal={b.refusal * 100:.1f}%, kl={b.kl:.4f}{checked}), "
            f"{self.seconds_per_trial:.1f} s/trial, prompts={self.n_prompts}"
        )

    def record(self) -> dict[str, Any]:
        return {
            "seed": self.seed, "study": self.study, "n_prompts": self.n_prompts,
            "n_harmless": self.n_harmless, "n_selection": self.n_selection, "settings": self.settings,
            "seconds_per_trial": self.seconds_per_trial, "best": self.best.number,
            "pareto": [t.number for t in self.pareto], "trials": [t.record() for t in self.trials],
        }

    def save_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`record` as JSON, atomically."""
        text = json.dumps(self.record(), indent=2) + "\n"
        return write_file(path, lambda tmp: tmp.write_text(text))


def _kernel_text(k: LayerWeights) -> str:
    if not isinstance(k, LayerKernel):
        return f"per layer {min(k):.2f}..{max(k):.2f}"
    return f"peak {k.peak:.1f} w {k.max_weight:.2f}→{k.min_weight:.2f} ±{k.width:.1f}"


@torch.inference_mode()
def refusal_likelihood(
    model: nn.Module, tokenizer: Any, refusals: Sequence[tuple[str, ...]], tokens: int = 8,
    batch_size: int | None = None, formatting: Formatting | None = None,
) -> float:
    """Mean probability that ``model`` opens its answer with the given refusal (its first
    ``tokens`` tokens, teacher-forced): ``refusals`` pairs each prompt with the original model's
    own refusal of it. One prefill per prompt; 0 when there are none (see
    :func:`vauban.refine.likelihood_batches`)."""
    total, count = 0.0, 0
    for rows, part in likelihood_batches(model, tokenizer, refusals, tokens, batch_size, formatting):
        total, count = total + float(part), count + rows
    return total / count if count else 0.0


def default_harmless_prompts() -> list[str]:
    """The first 48 bundled harmless prompts: enough for the KL to rank cuts (every trial
    prefills each of them, the main cost of a trial on a CPU)."""
    return load_prompts("harmless")[:48]


def default_validation_prompts() -> list[str]:
    """Bundled eval prompts 20-59: disjoint from both the measurement sets and the 20 that
    :func:`vauban.evaluating.evaluate` reports on."""
    return [r["prompt"] for r in bundled_records("eval_harmful")[20:60]]


def default_selection_prompts() -> list[str]:
    """Bundled eval prompts 60-99: disjoint from the search prompts and from what
    :func:`vauban.evaluating.evaluate` reports on."""
    return [r["prompt"] for r in bundled_records("eval_harmful")[60:100]]


def _no_weaker(t: Trial, plain: Trial) -> bool:
    return t.refusal <= plain.refusal and t.likelihood <= plain.likelihood


def candidates(result: OptimizeResult) -> list[Trial]:
    """Trials that beat the plain cut on the search prompts (no weaker, lower KL),
    lowest KL first: the order in which the pick is checked on the selection prompts."""
    plain = result.plain
    if plain is None:
        return []
    better = (t for t in result.trials if not t.plain and _no_weaker(t, plain) and t.kl < plain.kl)
    return sorted(better, key=lambda t: (t.kl, t.number))


def _suggest(trial: Any, num_layers: int, measured: int, fixed: dict[str, bool]) -> CutParams:
    span = max(num_layers - 1, 1)
    low, high = min(0.4 * span, measured), max(0.9 * span, measured)
    params: dict[str, Any] = {"direction_index": trial.suggest_float("direction_index", low, high)}
    for kind in ("attention", "mlp"):
        params[f"{kind}_max_weight"] = trial.suggest_float(f"{kind}_max_weight", 0.8, 1.5)
        params[f"{kind}_peak"] = trial.suggest_float(f"{kind}_peak", 0.6 * span, float(span))
        params[f"{kind}_min_fraction"] = trial.suggest_float(f"{kind}_min_fraction", 0.0, 1.0)
        params[f"{kind}_width"] = trial.suggest_float(f"{kind}_width", 1.0, float(span))
    for flag in ("projected", "norm_preserving"):
        if flag not in fixed:
            params[flag] = trial.suggest_categorical(flag, [False, True])
    return CutParams.from_trial(params, fixed)


def _storage(study: str | os.PathLike[str] | None) -> str | None:
    if study is None:
        return None
    path = Path(study).expanduser().absolute()
    if path.is_dir():
        raise VaubanError(f"study path {path} is a directory; give a file such as study.db")
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _load_study(optuna: Any, storage: str | None, seed: int, settings: dict[str, Any]) -> Any:
    """Create or resume the study; a resumed one must have been made with the same settings."""
    def sampler(offset: int) -> Any:
        return optuna.samplers.TPESampler(seed=seed + offset, multivariate=True, n_startup_trials=10)

    try:
        study = optuna.create_study(study_name=STUDY_NAME, storage=storage, load_if_exists=True,
                                    directions=["minimize"] * 3, sampler=sampler(0))
    except ValueError as e:  # a study with other objectives (an older vauban's)
        raise VaubanError(f"the study in {storage} cannot be resumed ({e}); use a new --study path") from None
    stored = study.user_attrs.get("settings")
    if stored is None:
        study.set_user_attr("settings", settings)
    elif stored != json.loads(json.dumps(settings)):
        changed = sorted(k for k in settings if stored.get(k) != json.loads(json.dumps(settings[k])))
        raise VaubanError(
            f"the study in {storage} was made with different settings ({', '.join(changed)}); "
            "use the same arguments to resume it, or a new --study path"
        )
    study.sampler = sampler(len(_finished(optuna, study)))
    return study


def _finished(optuna: Any, study: Any) -> list[Any]:
    return [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]


def pareto_mask(points: Sequence[Sequence[float]]) -> list[bool]:
    """Which points no other point dominates (no worse on every objective, better on one; all
    minimized). Equal points do not dominate each other."""
    def dominates(b: Sequence[float], a: Sequence[float]) -> bool:
        return all(x <= y for x, y in zip(b, a, strict=True)) and tuple(b) != tuple(a)

    return [not any(dominates(b, a) for b in points) for a in points]


def _result(optuna: Any, the_study: Any, fixed: dict[str, bool], selection: dict[str, float],
            **info: Any) -> OptimizeResult:
    """The study's trials; ``pareto`` marks the front over all three objectives (a cut that
    answers with more margin at the same KL is a better cut, not an equal one)."""
    done = _finished(optuna, the_study)
    front = pareto_mask([t.values for t in done])
    trials = tuple(
        Trial(t.number, t.values[0], t.values[1], float(t.user_attrs.get("seconds", 0.0)),
              CutParams.from_trial(t.params, fixed, t.user_attrs.get("weights")), t.values[2],
              on_front, bool(t.user_attrs.get("plain")), selection.get(str(t.number)))
        for t, on_front in zip(done, front, strict=True)
    )
    return OptimizeResult(trials, **info)


def optimize(
    model: nn.Module,
    tokenizer: Any,
    direction: DirectionResult,
    *,
    n_trials: int = 30,
    prompts: Prompts | None = None,
    harmless: Prompts | None = None,
    selection: Prompts | None = None,
    check: int = 4,
    study: str | os.PathLike[str] | None = None,
    projected: bool | None = None,
    norm_preserving: bool | None = None,
    max_tokens: int = 32,
    selection_tokens: int = DEFAULT_MAX_TOKENS,
    damage: str = "first_token",
    kl_tokens: int = 16,
    refine_steps: int = 16,
    batch_size: int | None = None,
    seed: int = 0,
    show_progress: bool = False,
    log: Callable[[str], None] | None = None,
    judge: str | Judge | None = None,
    formatting: Formatting | None = None,
    timeout: float | None = None,
) -> OptimizeResult:
    """Run the search until the study has ``n_trials`` finished trials (or, with ``timeout``,
    until no new trial starts after that many seconds of search; the running one finishes, and
    a new study always gets its plain cut), then check the pick on the selection prompts; the
    model ends unchanged.

    ``prompts`` (search refusal), ``harmless`` (search KL) and ``selection`` (the check) default
    to disjoint bundled sets. ``check``: at most this many candidates answer the selection
    prompts (``selection_tokens`` tokens each), lowest search KL first, stopping at the first
    that refuses no more than the plain cut; ``0`` skips the check. ``refine_steps``: after the
    search, refine the plain cut's per-layer weights by this many gradient steps
    (:mod:`vauban.refine`) and score the result as one more trial; ``0`` skips it. ``projected`` /
    ``norm_preserving``: fix that cut variant on or off, or ``None`` to search it. ``judge`` counts
    the refusals of the search and of the check (a spec, a :class:`vauban.judge.Judge`, or
    ``None`` for the markers; recorded in the study's settings). Each trial and each check prints
    one line with ``show_progress`` or through ``log``. ``formatting``: how prompts are
    formatted, over the direction's own (:mod:`vauban.formatting`); thinking models are judged on
    their replies, and their refusals are teacher-forced after their thoughts.
    """
    optuna = require("optuna", "optimize", "optimize")
    for name, value, low in (("n_trials", n_trials, 1), ("check", check, 0), ("max_tokens", max_tokens, 1),
                             ("selection_tokens", selection_tokens, 1), ("refine_steps", refine_steps, 0),
                             ("kl_tokens", kl_tokens, 1)):
        check_int(name, value, low)
    if damage not in DAMAGES:
        raise VaubanError(f"damage must be one of {', '.join(DAMAGES)}, got {damage!r}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not timeout > 0):
        raise VaubanError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if direction.harmful_means is None:
        raise VaubanError("optimize needs a DirectionResult with per-layer means; measure it again")
    judge = get_judge(judge)
    harmful = default_validation_prompts() if prompts is None else load_prompts(prompts)
    neutral = (default_harmless_prompts() if harmless is None
               else load_prompts(harmless, what="harmless prompts"))
    checking = default_selection_prompts() if selection is None else load_prompts(selection)
    shared = len(set(harmful) & set(checking))
    if check and shared:
        warnings.warn(f"{shared} selection prompts are also search prompts: the check of the pick is "
                      "only as good as the prompts it has not seen; give disjoint sets", stacklevel=2)
    fixed = {k: bool(v) for k, v in (("projected", projected), ("norm_preserving", norm_preserving))
             if v is not None}
    settings = {"direction_layer": direction.layer_index, "num_layers": direction.num_layers,
                "model": direction.model_path, "fixed": fixed, "prompts": len(harmful),
                "harmless": len(neutral), "max_tokens": max_tokens, "judge": judge.spec,
                "objectives": ["refusal", "kl", "refusal_likelihood"]}
    if damage != "first_token":  # absent for first-token KL, so studies made before this option resume
        settings["damage"] = {"kind": damage, "kl_tokens": kl_tokens}
    fmt = formatting_for(direction, formatting)
    if fmt is not None and fmt != Formatting(thinking_tokens=fmt.thinking_tokens):
        settings["formatting"] = fmt.record()  # recorded only when it says more than the defaults
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = _storage(study)
    the_study = _load_study(optuna, storage, seed, settings)
    plain = plain_trial_params(direction, fixed)
    pending = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.WAITING)
    if not the_study.get_trials(deepcopy=False, states=pending):
        the_study.enqueue_trial(plain)
    todo = n_trials - len(_finished(optuna, the_study))
    say = log if log is not None else (lambda line: print(line, flush=True)) if show_progress else None
    # the plain cut is refined once per study; a norm-preserving one cannot be (see vauban.refine)
    refining = (refine_steps > 0 and not fixed.get("norm_preserving")
                and not any(t.user_attrs.get("weights") for t in _finished(optuna, the_study)))
    base = refused = rows = None
    if todo > 0 or refining:
        rows = damage_rows(model, tokenizer, neutral, damage, kl_tokens, batch_size, fmt)
        base = reference_logprobs(model, tokenizer, rows, batch_size)
        originals = completions(model, tokenizer, harmful, max_tokens=max_tokens, batch_size=batch_size,
                                judge=judge, formatting=fmt, prompt_set="validation")
        refused = [(c.prompt, c.text, thinking_prefix(tokenizer, c.thinking or "", fmt))
                   for c in originals if c.refused]
    info = {"n_prompts": len(harmful), "n_harmless": len(neutral), "seed": seed, "study": storage,
            "settings": settings, "n_selection": len(checking) if check else 0}
    started = time.perf_counter()
    done = 0

    def scores(params: CutParams) -> tuple[float, float, float]:
        """The three objectives of one cut: refusal, KL, refusal likelihood."""
        with params.apply(model, direction):
            answers = completions(model, tokenizer, harmful, max_tokens=max_tokens, batch_size=batch_size,
                                  judge=judge, formatting=fmt, prompt_set="validation")
            kl = mean_kl(model, tokenizer, rows, base, batch_size)
            likelihood = refusal_likelihood(model, tokenizer, refused, batch_size=batch_size, formatting=fmt)
        return sum(c.refused for c in answers) / len(answers), kl, likelihood

    def objective(trial: Any) -> tuple[float, float, float]:
        nonlocal done
        t0 = time.perf_counter()
        values = scores(_suggest(trial, direction.num_layers, direction.layer_index, fixed))
        trial.set_user_attr("seconds", time.perf_counter() - t0)
        trial.set_user_attr("plain", trial.params == plain)
        done += 1
        return values

    def report(study_: Any, trial: Any) -> None:
        if say is None or trial.values is None:
            return
        finished = _finished(optuna, study_)
        best = _result(optuna, study_, fixed, {}, **info).best  # the pick, before any check
        eta = (time.perf_counter() - started) / done * (todo - done)
        say(f"trial {len(finished)}/{n_trials} (#{trial.number}): refusal {trial.values[0] * 100:5.1f}%  "
            f"kl {trial.values[1]:.4f}  p(refusal) {trial.values[2]:.1e}  "
            f"({trial.user_attrs['seconds']:.1f} s) | best: trial "
            f"{best.number} refusal {best.refusal * 100:.1f}% kl {best.kl:.4f} | "
            f"ETA {duration(eta)}")

    if todo > 0 and not _finished(optuna, the_study):  # the plain cut runs whatever the timeout
        the_study.optimize(objective, n_trials=1, callbacks=[report])
    left = None if timeout is None else timeout - (time.perf_counter() - started)
    if todo > done and (left is None or left > 0):
        the_study.optimize(objective, n_trials=todo - done, timeout=left, callbacks=[report])
    if refine_steps and fixed.get("norm_preserving") and say is not None:
        say("no refinement: a norm-preserving cut rescales each written vector, which refine cannot express")
    if refining:
        _add_refined(optuna, the_study, plain, lambda: refine(
            model, tokenizer, CutParams.from_trial(plain, fixed).vector(direction), rows, base, refused,
            steps=refine_steps, batch_size=batch_size, log=say, formatting=fmt), scores, fixed, say)
    checked = _stored_checks(the_study, checking, selection_tokens) if check else {}
    result = _result(optuna, the_study, fixed, checked, **info)
    if not check or result.plain is None:
        return result

    def selection_refusal(t: Trial) -> float:
        key = str(t.number)
        if key not in checked:
            t0 = time.perf_counter()
            with t.params.apply(model, direction):
                answers = completions(model, tokenizer, checking, max_tokens=selection_tokens,
                                      batch_size=batch_size, judge=judge, formatting=fmt,
                                      prompt_set="selection")
            checked[key] = sum(c.refused for c in answers) / len(answers)
            _store_checks(the_study, checking, selection_tokens, checked)
            if say is not None:
                say(f"check trial {t.number} on {len(checking)} selection prompts: refusal "
                    f"{checked[key]:.1%} ({time.perf_counter() - t0:.1f} s)")
        return checked[key]

    limit = selection_refusal(result.plain)
    for t in candidates(result)[:check]:
        if selection_refusal(t) <= limit:
            break
    result = _result(optuna, the_study, fixed, checked, **info)
    if say is not None:
        say(f"pick: trial {result.best.number} (selection refusal {result.best.selection_refusal:.1%}, "
            f"plain cut {limit:.1%})")
    return result


def _add_refined(optuna: Any, the_study: Any, plain: dict[str, Any], run: Callable[[], Any],
                 scores: Callable[[CutParams], tuple[float, float, float]], fixed: dict[str, bool],
                 say: Callable[[str], None] | None) -> None:
    """Refine the plain cut's per-layer weights, score them as a weight edit, and store the
    result as one more trial: the plain cut's parameters plus the weights in its user attributes
    (so a resumed study does not refine again). A study continued afterwards (more ``n_trials``)
    lets TPE read it as a second sample of the plain cut's parameters: a small bias towards the
    plain cut, which the search starts from anyway."""
    t0 = time.perf_counter()
    refined = run()
    weights = {"attention": list(refined.attention), "mlp": list(refined.mlp)}
    values = scores(CutParams.from_trial(plain, fixed, weights))
    seconds = time.perf_counter() - t0
    template = next(t for t in _finished(optuna, the_study) if t.user_attrs.get("plain"))
    the_study.add_trial(optuna.trial.create_trial(
        params=template.params, distributions=template.distributions, values=list(values),
        user_attrs={"seconds": seconds, "plain": False, "weights": weights}))
    if say is not None:
        say(f"refined trial: refusal {values[0] * 100:5.1f}%  kl {values[1]:.4f}  "
            f"p(refusal) {values[2]:.1e}  ({seconds:.1f} s)")


def _checks_key(prompts: Sequence[str], max_tokens: int) -> str:
    return hashlib.sha256(json.dumps([list(prompts), max_tokens]).encode()).hexdigest()[:16]


def _stored_checks(the_study: Any, prompts: Sequence[str], max_tokens: int) -> dict[str, float]:
    """Selection refusals already measured in this study with these prompts and answer length."""
    stored = the_study.user_attrs.get("selection") or {}
    return dict(stored.get("refusal", {})) if stored.get("key") == _checks_key(prompts, max_tokens) else {}


def _store_checks(the_study: Any, prompts: Sequence[str], max_tokens: int, checked: dict[str, float]) -> None:
    the_study.set_user_attr("selection", {"key": _checks_key(prompts, max_tokens), "refusal": checked})


def export_trial(
    model: nn.Module,
    tokenizer: Any,
    direction: DirectionResult,
    result: OptimizeResult,
    number: int,
    output_dir: str | os.PathLike[str],
    *,
    source: str | None = None,
    overwrite: bool = False,
    **options: Any,
) -> Path:
    """Export trial ``number``'s cut like ``abliterate`` does; the model ends unchanged.
    ``options`` (``format``, ``quant``, ``dtype``) go to :func:`vauban.export`."""
    from .exporting import cut_record, export

    chosen = result.trial(number)
    with chosen.params.apply(model, direction) as applied:
        record = cut_record(source or direction.model_path, applied, direction)
        record["optimization"] = {"trial": chosen.record(), "seed": result.seed, "study": result.study,
                                  "pareto": [t.record() for t in result.pareto]}
        return export(model, tokenizer, output_dir, direction=direction, record=record, overwrite=overwrite,
                      **options)
