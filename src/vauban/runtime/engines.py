"""Greedy generation through vLLM, with vauban's weight edit applied inside the running engine.

vauban's own loop (:mod:`vauban.runtime.generating`) generates with the model it edits. With
vLLM, the engine holds its own copy of the weights (on its GPUs, split by tensor parallelism);
an edit is applied there the way RL frameworks update a policy in place: the tensors the cut
changed are written to a safetensors file in shared memory (``/dev/shm``), its path is sent to
every worker (``LLM.collective_rpc``; so the workers run on this host) and its tensors given to
vLLM's in-place reload (the worker's ``reload_weights``: the model's own ``load_weights``, which
maps Hugging Face names to vLLM's layout and shards them, then the kernels' processing of the
layers that changed, e.g. the CPU backend's re-packed GEMM weights), with no restart. The
engine's prefix cache is then emptied (its KV entries came from the old weights). Undoing sends
the original tensors back: vauban's cut undoes itself bit for bit on its model, and those exact
values are loaded again, so the engine returns to the original weights.

vauban keeps its own model for everything that is not generation (the residual stream, KL,
teacher-forced scores, the cut's arithmetic). Only the edited writers travel, once per edit and
once per undo: on an 8B model with every layer cut, 32 attention and 32 MLP output projections.

:func:`attach` makes the engine the generator of one vauban model: every greedy answer of that
model (:func:`vauban.runtime.generating.generate_tokens`: ``evaluate``, ``optimize``'s trials and
check, ``sweep``, the selection's answers) comes from the engine, which is first brought in step
with the model: the parameters modified in place since the last answer (a cut applied or
undone: each in-place change moves a tensor's version counter) are sent to it. So code that
cuts the model and generates needs no change, and the engine never generates from weights that
differ from the model's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ..core.extras import require

# the edited tensors travel as a file the workers memory-map: in RAM where the host has /dev/shm
_SHARED = "/dev/shm" if os.path.isdir("/dev/shm") else None
_QUIET = ("Failed to load weights", "Following weights were not loaded")


def _partial(record: logging.LogRecord) -> bool:
    """Drop vLLM's warnings that a reload left tensors alone: a cut reloads only those it edits."""
    return not any(quiet in str(record.msg) for quiet in _QUIET)


def _reload(worker: Any, path: str) -> int:
    """Run on each vLLM worker: load the tensors of the safetensors file ``path`` (Hugging Face
    names) in place with vLLM's reload; the number of tensors loaded."""
    from safetensors import safe_open

    for name in ("layerwise", "inplace"):
        logger = logging.getLogger(f"vllm.model_executor.model_loader.reload.{name}")
        if _partial not in logger.filters:
            logger.addFilter(_partial)
    with safe_open(path, framework="pt") as f:
        weights = [(key, f.get_tensor(key)) for key in f.keys()]  # noqa: SIM118 (safe_open has no iteration)
    worker.reload_weights(weights_iterator=weights, is_checkpoint_format=True)
    return len(weights)


def _versions(model: nn.Module) -> dict[str, tuple[int, int]]:
    return {name: (p.data_ptr(), p._version) for name, p in model.named_parameters()}


_ATTACHED: weakref.WeakKeyDictionary[nn.Module, VllmEngine] = weakref.WeakKeyDictionary()


def attach(model: nn.Module, engine: VllmEngine | None) -> None:
    """``model``'s greedy answers come from ``engine`` from now on (``None``: from vauban's loop)."""
    if engine is None:
        _ATTACHED.pop(model, None)
        return
    engine.seen = _versions(model)  # the engine was made from the checkpoint the model was loaded from
    _ATTACHED[model] = engine


def engine_for(model: nn.Module) -> VllmEngine | None:
    """The engine attached to ``model``, brought in step with its weights; ``None`` when none is."""
    engine = _ATTACHED.get(model)
    if engine is not None:
        engine.sync(model)
    return engine


class VllmEngine:
    """A vLLM ``LLM`` on the checkpoint at ``model_dir`` (greedy, eager by default); ``options`` go to
    ``vllm.LLM`` (``tensor_parallel_size``, ``dtype``, ``gpu_memory_utilization``, ...)."""

    def __init__(self, model_dir: str | os.PathLike[str], **options: Any) -> None:
        vllm = require("vllm", "vllm", "--engine vllm")
        # the edit travels as a function to the workers (collective_rpc), which vLLM allows only when asked
        os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        self.vllm = vllm
        self.llm = vllm.LLM(model=str(Path(model_dir)), **({"enforce_eager": True, "seed": 0} | options))
        self.seen: dict[str, tuple[int, int]] = {}
        self.sent = 0  # tensors sent to the workers so far

    def sync(self, model: nn.Module) -> None:
        """Send the parameters of ``model`` modified since the last look (see the module docstring)."""
        now = _versions(model)
        changed = [name for name, key in now.items() if self.seen.get(name) != key]
        if changed:
            self.load(model, changed)
        self.seen = now

    def generate(
        self, token_ids: Sequence[Sequence[int]], max_tokens: int, stops: Sequence[int] = ()
    ) -> list[list[int]]:
        """Greedy continuations (token ids, the stop token included when reached) of prompts given as
        token ids (already chat-formatted, as :func:`vauban.text.prompts.encode_chat` makes them);
        ``stops``: token ids that end an answer, besides the model's own end of text."""
        params = self.vllm.SamplingParams(temperature=0.0, max_tokens=max_tokens, stop_token_ids=list(stops))
        prompts = [{"prompt_token_ids": list(ids)} for ids in token_ids]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outputs]

    def first_logprobs(self, token_ids: Sequence[Sequence[int]], top: int = 20) -> list[dict[int, float]]:
        """The engine's log-probabilities of the ``top`` likeliest first answer tokens of each prompt."""
        params = self.vllm.SamplingParams(temperature=0.0, max_tokens=1, logprobs=top)
        outputs = self.llm.generate(
            [{"prompt_token_ids": list(ids)} for ids in token_ids], params, use_tqdm=False
        )
        return [{k: v.logprob for k, v in o.outputs[0].logprobs[0].items()} for o in outputs]

    def load(self, model: nn.Module, names: Sequence[str]) -> None:
        """Send ``model``'s current values of the parameters ``names`` to every worker."""
        from safetensors.torch import save_file

        params = dict(model.named_parameters())
        with tempfile.TemporaryDirectory(prefix="vauban-edit-", dir=_SHARED) as folder:
            path = os.path.join(folder, "edit.safetensors")
            save_file({name: params[name].detach().cpu().contiguous() for name in names}, path)
            self.llm.collective_rpc(_reload, args=(path,))
        self.llm.reset_prefix_cache()  # cached KV entries were computed with the old weights
        self.sent += len(names)

    def close(self) -> None:
        """Stop the engine's processes now (else they stop when the interpreter exits)."""
        self.llm.llm_engine.engine_core.shutdown()

    @contextlib.contextmanager
    def edited(self, model: nn.Module, applied: Any) -> Iterator[None]:
        """Inside the block the engine generates with ``applied``'s edit (a cut already applied to
        ``model``, e.g. ``vauban.cut(...)``); on exit the cut is undone on ``model`` and the
        original tensors go back to the engine."""
        names = list(applied.edited)
        self.load(model, names)
        try:
            yield
        finally:
            applied.undo()
            self.load(model, names)
            self.seen = _versions(model)
