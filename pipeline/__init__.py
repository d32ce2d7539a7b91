"""ctscore pipeline: discovery, loading, resampling, orchestration, outputs and the CLI."""

__version__ = "0.1.0"
