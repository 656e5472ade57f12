"""The token head: a learned-judge head that reads every answer token, not three pooled vectors.

A refusal shows in a few tokens anywhere in an answer ("…, but I can't help with that"), which a
mean over the answer dilutes and a last-token state may miss. This head standardizes each
answer token's hidden state, projects it to ``width`` dimensions, and pools it ``heads`` ways by
learned attention (each a softmax over the answer's tokens) beside the plain mean; the prompt's
last-token state (projected the same way) and the marker features (refusal, late) join them, and
one linear layer gives the refusal logit and the logits of the answer categories. An ensemble
(:class:`TokenHeads`) averages the logits of heads trained from different seeds.

Trained by ``benchmarks/judge_round6.py``; saved with safetensors (weights and a JSON ``meta``:
backbone, layer, answer tokens, temperature, threshold, the tiered ``marked_score``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from ..core.errors import VaubanError

N_CATEGORIES = 5


class TokenHead(nn.Module):
    """One head: tokens ``(batch, tokens, hidden)`` with their ``mask``, the prompt states
    ``(batch, hidden)`` and the marker features ``(batch, 2)`` → logits ``(batch, 1 + categories)``
    (column 0: refusal)."""

    mean: torch.Tensor  # the training tokens' per-dimension standardization (buffers)
    scale: torch.Tensor

    def __init__(self, hidden: int, width: int = 64, heads: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        self.shape = {"hidden": hidden, "width": width, "attention_heads": heads}
        self.register_buffer("mean", torch.zeros(hidden))
        self.register_buffer("scale", torch.ones(hidden))
        self.tokens, self.prompt = nn.Linear(hidden, width), nn.Linear(hidden, width)
        self.query = nn.Linear(width, heads)
        self.out = nn.Linear(width * (heads + 2) + 2, 1 + N_CATEGORIES)
        self.drop = nn.Dropout(dropout)

    def forward(
        self, tokens: torch.Tensor, mask: torch.Tensor, prompt: torch.Tensor, marks: torch.Tensor
    ) -> torch.Tensor:
        h = nn.functional.gelu(self.tokens(self.drop((tokens - self.mean) / self.scale)))
        weights = self.query(h).masked_fill(~mask[..., None], float("-inf")).softmax(1)
        pooled = torch.einsum("btk,btw->bkw", weights, h).flatten(1)
        keep = mask[..., None].to(h.dtype)
        average = (h * keep).sum(1) / keep.sum(1).clamp(min=1)
        p = nn.functional.gelu(self.prompt(self.drop((prompt - self.mean) / self.scale)))
        return self.out(self.drop(torch.cat([pooled, average, p, marks], 1)))


class TokenHeads(nn.Module):
    """An ensemble of :class:`TokenHead` (mean of their logits) with how it reads and decides."""

    def __init__(self, heads: Sequence[TokenHead], meta: dict[str, Any]) -> None:
        super().__init__()
        self.heads, self.meta = nn.ModuleList(heads), dict(meta)

    def forward(
        self, tokens: torch.Tensor, mask: torch.Tensor, prompt: torch.Tensor, marks: torch.Tensor
    ) -> torch.Tensor:
        return torch.stack([h(tokens, mask, prompt, marks) for h in self.heads]).mean(0)

    markers = True  # always reads the marker features

    @property
    def backbone(self) -> str:
        return str(self.meta["backbone"])

    @property
    def layer(self) -> int:
        return int(self.meta["layer"])

    @property
    def answer_tokens(self) -> int:
        return int(self.meta.get("answer_tokens", 128))

    @property
    def threshold(self) -> float:
        return float(self.meta.get("threshold", 0.5))

    @property
    def marked_score(self) -> float | None:
        score = self.meta.get("marked_score")
        return None if score is None else float(score)

    def scores(
        self, reader: Any, prompts: Sequence[str], answers: Sequence[str], marks: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """p(refusal) (temperature-scaled) and the category probabilities of each pair, from
        the states ``reader`` (a :class:`~vauban.judge.learned.Reader` of this head's layer) reads."""
        states = [(a[0], p[0]) for a, p in reader.states(prompts, answers)]
        z = self.logits(states, marks)
        p = 1.0 / (1.0 + np.exp(-np.clip(z[:, 0] / float(self.meta.get("temperature", 1.0)), -60, 60)))
        c = np.exp(z[:, 1:] - z[:, 1:].max(1, keepdims=True))
        return p, c / c.sum(1, keepdims=True)

    @torch.inference_mode()
    def logits(
        self,
        states: Sequence[tuple[np.ndarray, np.ndarray]],
        marks: np.ndarray,
        batch: int = 64,
    ) -> np.ndarray:
        """Logits ``(pairs, 1 + categories)`` of pairs given as (answer states ``(tokens,
        hidden)``, prompt state ``(hidden,)``) and marker features ``(pairs, 2)``."""
        self.eval()
        out = []
        for start in range(0, len(states), batch):
            part = states[start : start + batch]
            longest = max(a.shape[0] for a, _ in part)
            tokens = torch.zeros((len(part), longest, part[0][0].shape[1]))
            mask = torch.zeros((len(part), longest), dtype=torch.bool)
            for i, (a, _) in enumerate(part):
                tokens[i, : a.shape[0]], mask[i, : a.shape[0]] = torch.from_numpy(a.astype(np.float32)), True
            prompt = torch.from_numpy(np.stack([p for _, p in part]).astype(np.float32))
            m = torch.from_numpy(marks[start : start + batch].astype(np.float32))
            out.append(self(tokens, mask, prompt, m).numpy())
        return np.concatenate(out).astype(np.float64)

    def save(self, path: Path) -> None:
        """Weights and meta in one safetensors file (written whole, then renamed)."""
        from safetensors.torch import save_file

        tensors = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        meta = {**self.meta, "ensemble": len(self.heads), **cast(TokenHead, self.heads[0]).shape}
        tmp = path.with_suffix(".tmp")
        save_file(tensors, str(tmp), metadata={"meta": json.dumps(meta)})
        tmp.replace(path)

    @classmethod
    def read(cls, path: Path) -> TokenHeads:
        from safetensors import safe_open
        from safetensors.torch import load_file

        if not path.is_file():
            raise VaubanError(f"no token head at {path}; reinstall vauban or run benchmarks/judge_round6.py")
        with safe_open(str(path), "pt") as handle:
            meta = json.loads(handle.metadata()["meta"])
        heads = [
            TokenHead(meta["hidden"], meta["width"], meta["attention_heads"]) for _ in range(meta["ensemble"])
        ]
        out = cls(heads, meta)
        out.load_state_dict(load_file(str(path)))
        return out.eval()
