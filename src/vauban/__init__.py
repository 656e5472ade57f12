"""vauban: find, probe, cut, export, evaluate and steer the refusal direction of chat models.

``vauban.quick`` holds the tutorial's one-liners; the names below are the low-level API they
are built from. Modules are named for the pipeline's steps (``loading``, ``measuring``,
``probing``, ``cutting``, ``exporting``, ``evaluating``, ``steering``, ``verifying``), so that no
function exported here shadows a module: ``vauban.cut`` is the function, ``vauban.edit.cutting`` its
module.

The names are imported on first use (PEP 562 ``__getattr__``): ``import vauban`` costs no torch
or transformers import, so ``vauban --help`` and usage errors answer at once. Each name below
says which module defines it; ``from vauban import cut`` and ``vauban.cut`` work as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> (module, attribute in it)
_EXPORTS: dict[str, tuple[str, str]] = {
    **{name: ("cutting", name) for name in ("Cut", "LayerKernel", "active_cuts", "cut", "original_weights")},
    "VaubanError": ("errors", "VaubanError"),
    "evaluate": ("evaluating", "evaluate"),
    "export": ("exporting", "export"),
    "Formatting": ("formatting", "Formatting"),
    "load": ("loading", "load_model"),
    "load_model": ("loading", "load_model"),
    "source_of": ("loading", "source_of"),
    **{name: ("measuring", name) for name in ("direction_at", "directions_per_layer", "measure",
                                               "measure_subspace")},
    **{name: ("probing", name) for name in ("borderline", "probe", "projections")},
    **{name: ("results", name) for name in ("AlphaSweep", "BorderlineResult", "Completion",
                                             "DirectionResult", "EvalResult", "ProbeResult",
                                             "SteerResult", "SteerSweep", "SubspaceResult",
                                             "VerifyResult")},
    **{name: ("steering", name) for name in ("Steering", "steer", "steer_generate")},
    **{name: ("sweep", name) for name in ("alpha_sweep", "direction_similarity", "steer_sweep")},
    "verify": ("verifying", "verify"),
    "split_reasoning": ("reasoning", "split_reasoning"),
}

__all__ = [
    "AlphaSweep",
    "BorderlineResult",
    "Completion",
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
    "cut",
    "direction_at",
    "direction_similarity",
    "directions_per_layer",
    "evaluate",
    "export",
    "load",
    "measure",
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
    from .edit.cutting import Cut, LayerKernel, active_cuts, cut, original_weights
    from .core.errors import VaubanError
    from .evaluation.evaluating import evaluate
    from .exports.exporting import export
    from .text.formatting import Formatting
    from .model.loading import load_model, source_of  # noqa: F401  (load_model: the name before load)
    from .model.loading import load_model as load
    from .direction.measuring import direction_at, directions_per_layer, measure, measure_subspace
    from .direction.probing import borderline, probe, projections
    from .text.reasoning import split_reasoning
    from .evaluation.sweeping import AlphaSweep, SteerSweep
    from .direction.results import BorderlineResult, DirectionResult, ProbeResult, SubspaceResult
    from .evaluation.results import Completion, EvalResult
    from .methods.steering import SteerResult
    from .exports.verifying import VerifyResult
    from .methods.steering import Steering, steer, steer_generate
    from .evaluation.sweeping import alpha_sweep, direction_similarity, steer_sweep
    from .exports.verifying import verify
