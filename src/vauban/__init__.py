"""vauban: find, probe, cut, export, evaluate and steer the refusal direction of chat models."""

from .cut import Cut, active_cuts, cut, original_weights
from .errors import VaubanError
from .export import export
from .load import load_model, source_of

load = load_model
from .measure import measure
from .probe import probe, projections
from .results import DirectionResult, ProbeResult

__version__ = "0.1.0"

__all__ = [
    "Cut",
    "DirectionResult",
    "ProbeResult",
    "VaubanError",
    "active_cuts",
    "cut",
    "export",
    "load",
    "measure",
    "original_weights",
    "probe",
    "projections",
    "source_of",
]
