"""ctscore pipeline: discovery, loading, resampling, orchestration, outputs and the CLI."""

__version__ = "0.2.0"  # scoring rules changed: results of 0.1.0 are scored again on resume
