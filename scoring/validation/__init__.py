"""Validation of ctscore's scores against radiologists' scores (``ctscore validate``).

Modules: ``systems`` (the scoring systems, units and ranges), ``schema`` (reading and checking the
reference), ``predictions`` (ctscore's scores from a pipeline output), ``metrics`` (agreement
statistics), ``compare`` (reader vs reader, ctscore vs readers and consensus), ``figures`` and
``report`` (PNGs, HTML), ``phantom`` (an example reference from the phantom's ground truth),
``api`` (:func:`scoring.validation.api.run_validation`).
"""
