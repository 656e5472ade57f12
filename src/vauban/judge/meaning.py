"""Features that say whether an answer addresses its request, for the learned judge (issue 24).

The whole backbone (every layer and its output head) reads each (prompt, answer) pair twice:
once after the prompt, as the probe does, and once after a neutral, empty user turn. The
pointwise mutual information of the first :data:`PMI_TOKENS` answer tokens,
``log p(token | prompt, earlier tokens) - log p(token | neutral, earlier tokens)``, is high when
the answer follows from the request and near zero for an answer that would fit any request (an
evasion, a decline followed by platitudes). :data:`PMI_NAMES` are its summaries. The first pass
also yields the probe's pooled hidden states (:meth:`Reader.features`'s three blocks) and a
fourth block, the mean over the answer's last :data:`TAIL_TOKENS` tokens (where a late refusal
declines). CPU float32, deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .learned import BATCH, Reader, backbone_source, encode

PMI_TOKENS, PMI_PROMPT_TOKENS, WINDOW = 32, 64, 8
NEUTRAL = ""  # the neutral user turn: empty, in the same chat template
PMI_NAMES = ("pmi_mean", "pmi_min_window", "pmi_first", "pmi_last", "logp_prompt", "logp_neutral")


def pmi_stats(with_prompt: np.ndarray, neutral: np.ndarray) -> np.ndarray:
    """The :data:`PMI_NAMES` numbers of one answer from its tokens' log-probabilities after the
    prompt and after the neutral turn (zeros for an empty answer)."""
    if not len(with_prompt):
        return np.zeros(len(PMI_NAMES), dtype=np.float32)
    d = with_prompt - neutral
    w = min(WINDOW, len(d))
    windows = np.convolve(d, np.ones(w) / w, mode="valid")
    stats = (d.mean(), windows.min(), d[:w].mean(), d[-w:].mean(), with_prompt.mean(), neutral.mean())
    return np.array(stats, dtype=np.float32)


def padded(seqs: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask of token sequences."""
    longest = max(len(s) for s in seqs)
    ids = torch.zeros((len(seqs), longest), dtype=torch.long)
    mask = torch.zeros((len(seqs), longest), dtype=torch.long)
    for r, seq in enumerate(seqs):
        ids[r, : len(seq)], mask[r, : len(seq)] = torch.tensor(seq), 1
    return ids, mask


class MeaningReader:
    """The probe's reader (hidden states up to its layers, four blocks) and the whole backbone
    over the prompt and the answer's first :data:`PMI_TOKENS` tokens (PMI numbers)."""

    def __init__(self, reader: Reader, model: Any, tokenizer: Any) -> None:
        self.reader, self.model, self.tokenizer = reader, model.eval(), tokenizer

    @classmethod
    def load(cls, backbone: str, layers: Sequence[int], device: str = "cpu") -> MeaningReader:
        """Both in float32 on ``device`` (the whole backbone is a second copy: the reader's stops early)."""
        from ..model.loading import load_model

        model, tokenizer = load_model(backbone_source(backbone), device=device, dtype=torch.float32)
        return cls(Reader.load(backbone, layers, device), model, tokenizer)

    def encode(self, prompt: str, answer: str) -> tuple[list[int], int]:
        """Ids of the chat with an empty system turn (no default system prompt: fewer tokens to
        read), the prompt's first :data:`PMI_PROMPT_TOKENS` tokens and the answer's first
        :data:`PMI_TOKENS`, and where the answer starts."""
        return encode(self.tokenizer, prompt, answer, PMI_TOKENS, "", PMI_PROMPT_TOKENS)

    def last_states(self, seqs: Sequence[list[int]]) -> torch.Tensor:
        """The last, normed hidden states of right-padded sequences."""
        ids, mask = padded(seqs)
        device = self.model.device
        out = self.model.model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
        return out.last_hidden_state

    def logprobs(self, last: torch.Tensor, seq: list[int], begin: int) -> np.ndarray:
        """Log-probabilities of the answer tokens ``seq[begin:]`` (at most :data:`PMI_TOKENS`)."""
        count = min(PMI_TOKENS, len(seq) - begin)
        if count <= 0:
            return np.zeros(0)
        logits = self.model.lm_head(last[begin - 1 : begin - 1 + count]).float()
        target = torch.tensor(seq[begin : begin + count], device=logits.device)
        picked = torch.log_softmax(logits, -1).gather(1, target[:, None])[:, 0]
        return picked.double().cpu().numpy()

    @torch.inference_mode()
    def pmi(self, prompts: Sequence[str], answers: Sequence[str]) -> np.ndarray:
        """Shape ``(pairs, len(PMI_NAMES))``: the PMI numbers of each pair."""
        chats = [self.encode(p, a) for p, a in zip(prompts, answers, strict=True)]
        neutral = [self.encode(NEUTRAL, a) for a in answers]
        order = sorted(range(len(chats)), key=lambda i: len(chats[i][0]))
        out = np.zeros((len(chats), len(PMI_NAMES)), dtype=np.float32)
        for start in range(0, len(order), BATCH):
            rows = order[start : start + BATCH]
            last = self.last_states([chats[i][0] for i in rows])
            last_neutral = self.last_states([neutral[i][0] for i in rows])
            for r, i in enumerate(rows):
                lp = self.logprobs(last[r], *chats[i])
                out[i] = pmi_stats(lp, self.logprobs(last_neutral[r], *neutral[i])[: len(lp)])
        return out

    def features(self, prompts: Sequence[str], answers: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The reader's four blocks ``(pairs, layers, 4 * hidden)`` and :meth:`pmi`."""
        return self.reader.features(prompts, answers, tail=True), self.pmi(prompts, answers)
