"""lm-evaluation-harness tasks on the in-memory model (extra: ``pip install 'vauban[lm-eval]'``).

The harness's ``HFLM`` wraps the model object itself (no reload, no copy), so the same tasks run
on the original and on the cut model that ``evaluate`` holds in memory (one object, with the cut
undone for the original's side). ``tasks`` are the harness's task names (``mmlu``, ``gsm8k``,
``arc_easy``, ``hellaswag`` ...), which download their datasets from the Hugging Face Hub on first
use; ``include_path`` adds a folder of the user's own task YAML files (a task over a local data
file works offline). ``limit`` keeps the first N documents of each task. The scores are the
harness's own (``acc``, ``exact_match`` ... with its filters), one :class:`CapabilityScore` per task
and metric, named ``task/metric``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..core.errors import VaubanError
from . import CapabilityScore, check_limit


def _harness() -> Any:
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise VaubanError("lm-eval tasks need lm-evaluation-harness: pip install 'vauban[lm-eval]'") from None
    return lm_eval, HFLM, TaskManager


@dataclass(frozen=True)
class Harness:
    """lm-evaluation-harness ``tasks`` on the first ``limit`` documents of each."""

    tasks: tuple[str, ...]
    limit: int | None = None
    include_path: str | Path | None = None
    num_fewshot: int | None = None
    name: str = "lm-eval"

    def __post_init__(self) -> None:
        check_limit(self.limit)
        if not self.tasks or not all(isinstance(t, str) and t.strip() for t in self.tasks):
            raise VaubanError(f"tasks must be non-empty task names, got {self.tasks!r}")

    def run(
        self, model: nn.Module, tokenizer: Any, *, batch_size: int | None = None
    ) -> list[CapabilityScore]:
        """One score per task and metric (the harness's standard errors left out)."""
        lm_eval, hflm, task_manager = _harness()
        t0 = time.perf_counter()
        device = str(next(model.parameters()).device)
        lm = hflm(pretrained=model, tokenizer=tokenizer, batch_size=batch_size or 8, device=device)
        manager = task_manager(include_path=str(self.include_path) if self.include_path else None)
        try:
            out = lm_eval.simple_evaluate(
                model=lm,
                tasks=list(self.tasks),
                limit=self.limit,
                num_fewshot=self.num_fewshot,
                task_manager=manager,
                log_samples=False,
                verbosity="ERROR",
            )
        except KeyError as err:
            raise VaubanError(f"lm-eval does not know the task {err}; see `lm-eval ls tasks`") from None
        seconds = round(time.perf_counter() - t0, 1)
        samples = out.get("n-samples", {})
        scores = []
        for task, metrics in out["results"].items():
            n = int(samples.get(task, {}).get("effective", 0))
            for key, value in metrics.items():
                if "_stderr" in key or key == "alias" or not isinstance(value, (int, float)):
                    continue
                metric = key.replace(",none", "")
                scores.append(CapabilityScore(f"{task}/{metric}", metric, float(value), n, seconds))
        return scores
