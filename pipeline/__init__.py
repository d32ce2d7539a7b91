"""ctscore pipeline: discovery, loading, resampling, orchestration, outputs and the CLI."""

__version__ = "0.3.0"  # results changed (lobar scores with lobe maps, QC flags): earlier results are scored again on resume
