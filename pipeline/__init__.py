"""ctscore pipeline: discovery, loading, resampling, orchestration, outputs and the CLI."""

__version__ = "0.4.0"  # results changed (series selection, QC flags): earlier results are scored again on resume
