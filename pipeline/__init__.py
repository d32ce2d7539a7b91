"""ctscore pipeline: discovery, loading, resampling, orchestration, outputs and the CLI."""

__version__ = "0.5.0"  # results changed (lesion_max_hu, study_date, QC flags): earlier results are scored again on resume
