"""vauban: find, probe, cut, export, evaluate and steer the refusal direction of chat models.

``vauban.quick`` holds the tutorial's one-liners; the names below are the low-level API they
are built from (module names follow the pipeline: load, measure, probe, cut, export, evaluate,
steer, sweep).
"""

from .cut import Cut, LayerKernel, active_cuts, cut, original_weights
from .errors import VaubanError
from .evaluate import evaluate
from .export import export
from .load import load_model, source_of
from .measure import direction_at, directions_per_layer, measure, measure_subspace
from .probe import borderline, probe, projections
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
from .steer import Steering, steer, steer_generate
from .sweep import alpha_sweep, direction_similarity, steer_sweep
from .verify import verify

load = load_model

__version__ = "0.1.0"

__all__ = [
    "AlphaSweep",
    "BorderlineResult",
    "Completion",
    "Cut",
    "DirectionResult",
    "EvalResult",
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
    "steer",
    "steer_generate",
    "steer_sweep",
    "verify",
]
