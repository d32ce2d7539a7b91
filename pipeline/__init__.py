"""ctscore pipeline: discovery, loading, resampling, orchestration, outputs and the CLI."""

__version__ = "0.7.0"  # results changed (half-open zhang900 slabs, ZONE_WITHOUT_LUNG, ZONE_SMALL): scored again on resume
