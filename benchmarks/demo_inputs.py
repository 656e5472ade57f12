"""What the demo-model benchmarks start from: the shared data folder, the seeded AdvBench sample
they report on, and the refusal direction (``--direction FILE``, or measured and kept for the
next run's ``--direction``)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SHARED = next(
    (p / "shared" / "data" for p in HERE.parents if (p / "shared" / "data").is_dir()),
    HERE.parents[1] / "shared" / "data",
)  # ../shared/data beside the checkout
ADVBENCH = SHARED / "advbench_harmful_behaviors.csv"
MEASURED = Path("/tmp/vauban_demo_direction.safetensors")  # pass it as --direction next time
DIRECTION_HELP = "a saved direction (default: measure it, ~1 min)"


def advbench_sample(n: int = 100, seed: int = 0, path: str | Path = ADVBENCH) -> list[str]:
    """``n`` AdvBench goals, ``random.Random(seed).sample`` (all of them when there are fewer)."""
    from vauban.text.prompts import load_prompts

    goals = load_prompts(str(path))
    return random.Random(seed).sample(goals, min(n, len(goals)))


def load_or_measure(model: Any, tokenizer: Any, path: str | None) -> Any:
    """The :class:`vauban.DirectionResult` saved at ``path``, or (no path) measured with
    ``vauban.measure``'s defaults and saved to :data:`MEASURED`."""
    from vauban import DirectionResult, measure

    if path:
        return DirectionResult.load(path)
    measured = measure(model, tokenizer)
    measured.save(MEASURED)
    return measured
