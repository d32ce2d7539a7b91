"""ctscore pipeline: discovery, loading, resampling, orchestration, outputs and the CLI."""

__version__ = "0.6.0"  # results changed (airway around a tube, MOTION_SUSPECT, DEPENDENT_DENSITY): scored again on resume
