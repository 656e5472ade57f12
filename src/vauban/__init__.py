"""vauban: find, probe, cut, export, evaluate and steer the refusal direction of chat models.

``vauban.quick`` holds the tutorial's one-liners; the names below are the low-level API they
are built from. The subpackages are the pipeline's layers, bottom to top (``docs/architecture.md``):
``core``, ``model`` and ``text``, ``runtime``, ``judge`` and ``capability``, ``edit``,
``direction``, ``methods``, ``exports``, ``evaluation``, ``search``; modules are named for their
step (``measuring``, ``cutting``, ``evaluating``…), so no function exported here shadows a
module: ``vauban.cut`` is the function, ``vauban.edit.cutting`` its module.

The names are imported on first use (PEP 562 ``__getattr__``): ``import vauban`` costs no torch
or transformers import, so ``vauban --help`` and usage errors answer at once. Each name below
says which module defines it; ``from vauban import cut`` and ``vauban.cut`` work as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .core.version import __version__ as __version__

# name -> (module, attribute in it)
_EXPORTS: dict[str, tuple[str, str]] = {
    **{
        name: ("edit.cutting", name)
        for name in ("Cut", "LayerKernel", "active_cuts", "cut", "original_weights")
    },
    "VaubanError": ("core.errors", "VaubanError"),
    "evaluate": ("evaluation.evaluating", "evaluate"),
    "EvalResult": ("evaluation.results", "EvalResult"),
    **{
        name: ("evaluation.sweeping", name)
        for name in ("AlphaSweep", "SteerSweep", "alpha_sweep", "direction_similarity", "steer_sweep")
    },
    "export": ("exports.exporting", "export"),
    **{name: ("exports.verifying", name) for name in ("VerifyResult", "verify")},
    "Formatting": ("text.formatting", "Formatting"),
    "split_reasoning": ("text.reasoning", "split_reasoning"),
    "load": ("model.loading", "load_model"),
    "load_model": ("model.loading", "load_model"),
    "source_of": ("model.loading", "source_of"),
    **{name: ("direction.measuring", name) for name in ("measure", "measure_subspace")},
    **{
        name: ("direction.results", name)
        for name in (
            "BorderlineResult",
            "DirectionResult",
            "ProbeResult",
            "SubspaceResult",
            "direction_at",
            "directions_per_layer",
        )
    },
    **{name: ("direction.probing", name) for name in ("borderline", "probe", "projections")},
    "Completion": ("judge.answers", "Completion"),
    **{name: ("methods.steering", name) for name in ("SteerResult", "Steering", "steer", "steer_generate")},
    **{
        name: ("direction.categories", name)
        for name in ("CategoryDirections", "keep_vector", "measure_categories")
    },
    **{
        name: ("methods.conditional", name)
        for name in ("Condition", "condition_sets", "conditional_generate", "measure_condition")
    },
    **{name: ("evaluation.groups", name) for name in ("evaluate_groups", "language_judge")},
}

__all__ = [
    "AlphaSweep",
    "BorderlineResult",
    "CategoryDirections",
    "Completion",
    "Condition",
    "Cut",
    "DirectionResult",
    "EvalResult",
    "Formatting",
    "LayerKernel",
    "ProbeResult",
    "SteerResult",
    "SteerSweep",
    "Steering",
    "SubspaceResult",
    "VaubanError",
    "VerifyResult",
    "active_cuts",
    "alpha_sweep",
    "borderline",
    "condition_sets",
    "conditional_generate",
    "cut",
    "direction_at",
    "direction_similarity",
    "directions_per_layer",
    "evaluate",
    "evaluate_groups",
    "export",
    "keep_vector",
    "language_judge",
    "load",
    "measure",
    "measure_categories",
    "measure_condition",
    "measure_subspace",
    "original_weights",
    "probe",
    "projections",
    "source_of",
    "split_reasoning",
    "steer",
    "steer_generate",
    "steer_sweep",
    "verify",
]


def __getattr__(name: str) -> Any:
    """Import an exported name's module the first time the name is asked for."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vauban' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(f".{module}", __name__), attribute)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, imported eagerly
    from .core.errors import VaubanError
    from .direction.measuring import measure, measure_subspace
    from .direction.probing import borderline, probe, projections
    from .direction.results import (
        BorderlineResult,
        DirectionResult,
        ProbeResult,
        SubspaceResult,
        direction_at,
        directions_per_layer,
    )
    from .edit.cutting import Cut, LayerKernel, active_cuts, cut, original_weights
    from .evaluation.evaluating import evaluate
    from .evaluation.results import EvalResult
    from .evaluation.sweeping import AlphaSweep, SteerSweep, alpha_sweep, direction_similarity, steer_sweep
    from .exports.exporting import export
    from .exports.verifying import VerifyResult, verify
    from .judge.answers import Completion
    from .methods.steering import Steering, SteerResult, steer, steer_generate
    from .model.loading import load_model, source_of  # noqa: F401  (load_model: the name before load)
    from .model.loading import load_model as load
    from .text.formatting import Formatting
    from .text.reasoning import split_reasoning
