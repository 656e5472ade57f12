"""vauban: find, probe, cut, export, evaluate and steer the refusal direction of chat models.

``vauban.quick`` holds the tutorial's one-liners; the names below are the low-level API they
are built from. Modules are named for the pipeline's steps (``loading``, ``measuring``,
``probing``, ``cutting``, ``exporting``, ``evaluating``, ``steering``, ``verifying``), so that no
function exported here shadows a module: ``vauban.cut`` is the function, ``vauban.cutting`` its
module.
"""

from .cutting import Cut, LayerKernel, active_cuts, cut, original_weights
from .errors import VaubanError
from .evaluating import evaluate
from .exporting import export
from .formatting import Formatting
from .loading import load_model, source_of
from .measuring import direction_at, directions_per_layer, measure, measure_subspace
from .probing import borderline, probe, projections
from .reasoning import split_reasoning
from .results import (
    AlphaSweep,
    BorderlineResult,
    Completion,
    DirectionResult,
    EvalResult,
    ProbeResult,
    SteerResult,
    SteerSweep,
    SubspaceResult,
    VerifyResult,
)
from .steering import Steering, steer, steer_generate
from .sweep import alpha_sweep, direction_similarity, steer_sweep
from .verifying import verify

load = load_model

__version__ = "0.1.0"

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
