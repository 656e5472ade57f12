"""Steer at run time: remove the direction from the residual stream during the forward pass.

:class:`Steering` is a context manager that hooks every decoder layer and replaces its output
``h`` by ``h - α (h·d) d`` at every position, during prefill and every decode step (the KV
cache then holds steered keys and values). The embeddings entering the first layer are steered
too, so with ``α = 1`` on every layer the stream *between* layers has no component along ``d``,
as in a model cut with ``embeddings=True``. The two are close but not identical: inside a block
the MLP still reads what attention wrote along ``d`` (a cut removes it at the write), and the
hook only clears it at the block's output. The hooks are removed on exit, even on error, so it
also wraps a user's own ``model.generate`` calls.

The direction may also be a k-dimensional subspace with orthonormal basis ``Q`` (a
:class:`~vauban.direction.results.SubspaceResult` or a ``(k, d)`` tensor): ``h - α Q Qᵀ h``; or one
direction (or subspace) per layer, a ``(layers, k, d)`` tensor, as :func:`vauban.edit.cutting.cut` takes.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..core.errors import VaubanError, check_alpha, check_layer
from ..direction.results import DirectionResult, SubspaceResult
from ..edit.cutting import Direction, layer_bases
from ..judge import Judge, get_judge, run_judge
from ..model import arch
from ..runtime.generating import check_max_tokens, generate, mark_graph_safe
from ..text.formatting import Formatting, formatting_for
from ..text.prompts import load_prompts
from ..text.reasoning import split_reasoning


@dataclass(frozen=True)
class SteerResult:
    """A steered greedy generation.

    ``projections_before[t][l]`` is the projection of the residual after layer ``l`` onto the
    direction at the position that produced token ``t``, before the steering hook removed
    ``alpha`` × it; ``projections_after`` is the same after removal.
    """

    prompt: str
    text: str
    alpha: float
    layer_index: int
    projections_before: tuple[tuple[float, ...], ...] = field(repr=False)
    projections_after: tuple[tuple[float, ...], ...] = field(repr=False)
    refused: bool = False

    @property
    def tokens(self) -> int:
        return len(self.projections_before)

    def mean_projection(self, after: bool = False) -> float:
        """Mean projection over generated tokens at ``layer_index``."""
        rows = self.projections_after if after else self.projections_before
        return sum(r[self.layer_index] for r in rows) / max(1, len(rows))

    def summary(self) -> str:
        return (
            f"SteerResult: alpha={self.alpha:.2f}, tokens={self.tokens}, refused={self.refused}, "
            f"projection@{self.layer_index}={self.mean_projection():+.4f} → "
            f"{self.mean_projection(after=True):+.4f}"
        )


class Steering:
    """Hooks that ablate ``alpha`` × the direction after each of ``layers`` (default: all).

    With ``record=True`` every forward call appends, for the last position of the first row,
    the projection after each layer before and after removal (``before`` / ``after``: lists of
    per-layer lists): one entry per generated token (the stop token included) when generating
    one prompt, since each token comes from one forward call.
    """

    def __init__(
        self,
        model: nn.Module,
        direction: Direction,
        alpha: float = 1.0,
        *,
        layers: Sequence[int] | None = None,
        record: bool = False,
    ) -> None:
        self.model = model
        self.alpha = check_alpha(alpha)
        self.blocks = arch.decoder_layers(model)
        n = len(self.blocks)
        self.layers = list(range(n)) if layers is None else [check_layer(i, n) for i in layers]
        if not self.layers or not all(0 <= i < len(self.blocks) for i in self.layers):
            raise VaubanError(f"layers must be within 0..{len(self.blocks) - 1}, got {layers}")
        weight = next(model.parameters())
        bases = layer_bases(direction, arch.d_model(model), len(self.blocks)).to(weight.device)
        self.vectors = bases[:, 0]  # what ``record`` projects on, per layer
        # the hook runs on every layer at every decode step: keep it to two kernels in the
        # model's dtype for one direction (matmul accumulates in float32; addcmul computes in
        # float32), three for a subspace
        self._bases_model = bases.to(weight.dtype)
        self.record = record
        self.before: list[list[float]] = []
        self.after: list[list[float]] = []
        self._handles: list[Any] = []
        self._step_before: dict[int, float] = {}
        self._step_after: dict[int, float] = {}

    def _hook(self, layer: int) -> Any:
        def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
            hidden = arch.layer_hidden(output)
            steered = self._remove(hidden, layer) if self.alpha != 0.0 else None
            if self.record:
                last = hidden[0, -1].float() @ self.vectors[layer]
                self._step_before[layer] = float(last)
                after = steered[0, -1].float() @ self.vectors[layer] if steered is not None else last
                self._step_after[layer] = float(after)
                if layer == max(self.layers):
                    self._flush()
            return None if steered is None else arch.with_hidden(output, steered)

        return hook

    def _steer_input(self, _module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Pre-hook on the first steered layer when it is layer 0: steer the embeddings."""
        if self.alpha == 0.0:
            return None
        if args:
            return (self._remove(args[0], 0), *args[1:]), kwargs
        kwargs = dict(kwargs, hidden_states=self._remove(kwargs["hidden_states"], 0))
        return args, kwargs

    def _remove(self, hidden: torch.Tensor, layer: int) -> torch.Tensor:
        """``hidden - α Q Qᵀ hidden`` (``hidden - α (hidden·d) d`` for one direction)."""
        q = self._bases_model[layer]
        if q.shape[0] == 1:
            return torch.addcmul(hidden, hidden @ q.T, q[0], value=-self.alpha)
        return torch.add(hidden, (hidden @ q.T) @ q, alpha=-self.alpha)

    def _flush(self) -> None:
        n = len(self.blocks)
        self.before.append([self._step_before.get(i, float("nan")) for i in range(n)])
        self.after.append([self._step_after.get(i, float("nan")) for i in range(n)])
        self._step_before.clear()
        self._step_after.clear()

    def __enter__(self) -> Steering:
        # prepend: hooks installed earlier (transformers' own output recorders, a user's probes)
        # must see the steered stream, whatever order they were registered in
        # without ``record`` the hooks are pure tensor work: a replayed CUDA graph stands in for
        # them, so steered generation keeps the fast loop's graph
        mark = (lambda h: h) if self.record else mark_graph_safe
        self._handles = [
            self.blocks[i].register_forward_hook(mark(self._hook(i)), prepend=True) for i in self.layers
        ]
        if 0 in self.layers:
            steer_input = functools.partial(Steering._steer_input, self)
            self._handles.append(
                self.blocks[0].register_forward_pre_hook(mark(steer_input), with_kwargs=True, prepend=True)
            )
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def steer_generate(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    direction: Direction,
    alpha: float = 1.0,
    *,
    max_tokens: int = 100,
    layers: Sequence[int] | None = None,
    batch_size: int | None = None,
    formatting: Formatting | None = None,
) -> list[str]:
    """Greedy answers to many prompts under steering (formatted with ``formatting`` over the
    direction's own)."""
    with Steering(model, direction, alpha, layers=layers):
        return generate(
            model,
            tokenizer,
            prompts,
            max_tokens=max_tokens,
            batch_size=batch_size,
            formatting=formatting_for(direction, formatting),
            prompt_set="steer",
        )


def steer(
    model: nn.Module,
    tokenizer: Any,
    prompt: str,
    direction: Direction,
    alpha: float = 1.0,
    *,
    max_tokens: int = 100,
    layers: Sequence[int] | None = None,
    judge: str | Judge | None = None,
    formatting: Formatting | None = None,
) -> SteerResult:
    """Generate one answer under steering, recording per-token projections; ``judge`` decides
    whether its reply is a refusal (default: markers; a thinking model's thoughts stay in
    ``text``)."""
    (text,) = load_prompts([prompt], what="prompt")
    check_max_tokens(max_tokens)
    with Steering(model, direction, alpha, layers=layers, record=True) as hooks:
        (answer,) = generate(
            model,
            tokenizer,
            [text],
            max_tokens=max_tokens,
            formatting=formatting_for(direction, formatting),
            prompt_set="steer",
        )
    if isinstance(direction, (DirectionResult, SubspaceResult)):
        layer = direction.layer_index
    else:
        layer = len(hooks.blocks) - 1
    return SteerResult(
        prompt=text,
        text=answer,
        alpha=hooks.alpha,
        layer_index=layer,
        projections_before=tuple(tuple(r) for r in hooks.before),
        projections_after=tuple(tuple(r) for r in hooks.after),
        refused=run_judge(get_judge(judge), [text], [split_reasoning(answer)[1]])[0].refusal,
    )
