"""Replay the analyses of the three source studies (liao2021, zhang2020, li2020) on a cohort.

Entry point: :func:`scoring.stats.api.run_stats`. The clinical and laboratory schema is in
``docs/clinical_schema.md``; ``scoring.stats.simulate`` writes a cohort with known effects.
"""
