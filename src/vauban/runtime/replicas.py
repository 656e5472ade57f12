"""Data parallelism over the GPUs of one host: one copy of the model per GPU, prompts split.

When a model fits on one card, a second card doubles the work done per second only if it holds
its own copy: layer splitting (``device="auto"``) runs the layers one card after the other, so
one card always waits. :class:`Replicas` copies the model onto each device (parameters and
buffers copied straight to the target device, shared tensors stay shared) and splits every call's
prompts between the copies, dealt out in order of length so that every copy gets a similar mix,
one thread per copy. Each thread makes its copy's device current, so CUDA graphs and streams are
made on the right card; the threads live as long as the replicas, so the CUDA libraries'
per-thread state (cuBLAS workspaces, cuDNN attention plans) is built once. Results come back in
input order; answers can differ from one model's where the split changes a batch's padding
(other matrix shapes round differently in bf16), as they can between any two batchings.

A cut or steering hook applies to the model it is given: cut every copy (``replicas.models``)
when the copies must all be cut.
"""

from __future__ import annotations

import contextlib
import copy
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch
from torch import nn

from ..core.errors import VaubanError
from ..model import arch
from .activations import last_token_residuals, model_device
from .generating import generate

T = TypeVar("T")


def replicate(model: nn.Module, device: torch.device | str) -> nn.Module:
    """A copy of ``model`` on ``device``, made without a second copy on the model's own device."""
    device = torch.device(device)
    memo: dict[int, Any] = {}
    for tensor in (*model.parameters(), *model.buffers()):
        if id(tensor) not in memo:
            moved = tensor.detach().to(device, copy=True)
            memo[id(tensor)] = (
                nn.Parameter(moved, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else moved
            )
    return copy.deepcopy(model, memo)


class Replicas:
    """Copies of one model on several devices; calls split their prompts between the copies."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        if not models:
            raise VaubanError("Replicas needs at least one model")
        self.models = list(models)
        # one long-lived thread per copy: CUDA libraries keep per-thread state (cuBLAS
        # workspaces, cuDNN attention plans), which fresh threads on every call would rebuild
        self._threads = [ThreadPoolExecutor(max_workers=1) for _ in self.models]
        weakref.finalize(self, _shutdown, self._threads)

    @classmethod
    def of(cls, model: nn.Module, devices: Sequence[torch.device | str] | None = None) -> Replicas:
        """``model`` plus a copy on each other device (default: every visible CUDA device)."""
        home = model_device(model)
        if devices is None:
            devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        others = [torch.device(d) for d in devices if torch.device(d) != home]
        return cls([model, *(replicate(model, d) for d in others)])

    def _split(self, prompts: Sequence[str]) -> list[list[int]]:
        """Prompt indices per copy, dealt out longest first (by characters: tokenizing twice
        would cost more than the balance gains) so each copy gets a similar share."""
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        return [order[k :: len(self.models)] for k in range(len(self.models))]

    def _map(
        self, prompts: Sequence[str], work: Callable[[nn.Module, list[int]], T]
    ) -> list[tuple[list[int], T]]:
        """``work(copy, indices)`` for each copy's share of ``prompts``, one thread per copy."""
        shares = self._split(prompts)

        def run(k: int) -> T:
            model = self.models[k]
            device = model_device(model)
            with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
                return work(model, shares[k])

        busy = [k for k in range(len(self.models)) if shares[k]]
        futures = [self._threads[k].submit(run, k) for k in busy]
        return [(shares[k], future.result()) for k, future in zip(busy, futures, strict=True)]

    def generate(self, tokenizer: Any, prompts: Sequence[str], **kwargs: Any) -> list[str]:
        """:func:`vauban.runtime.generating.generate` over all copies: greedy answers in input order."""
        answers = [""] * len(prompts)
        for indices, part in self._map(
            prompts,
            lambda m, idx: generate(m, tokenizer, [prompts[i] for i in idx], show_progress=False, **kwargs),
        ):
            for i, text in zip(indices, part, strict=True):
                answers[i] = text
        return answers

    def last_token_residuals(self, tokenizer: Any, prompts: Sequence[str], **kwargs: Any) -> torch.Tensor:
        """:func:`vauban.runtime.activations.last_token_residuals` over all copies, in input order (each
        thread writes its rows into the result itself, so the host copies run in parallel too)."""
        model = self.models[0]
        layers = kwargs.get("layers")
        width = arch.num_layers(model) if layers is None else len(layers)
        out = torch.empty(len(prompts), width, arch.d_model(model))

        def work(m: nn.Module, idx: list[int]) -> None:
            share = [prompts[i] for i in idx]
            out[idx] = last_token_residuals(m, tokenizer, share, show_progress=False, **kwargs)

        self._map(prompts, work)
        return out


def _shutdown(threads: list[ThreadPoolExecutor]) -> None:
    for pool in threads:
        pool.shutdown(wait=False)
