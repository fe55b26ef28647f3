"""A frozen copy of the validator as it was before the fast clean-resource pass (the reference).

``tests/unit/test_validation_equivalence.py`` checks that ``fhir_imaging.validation.Validator.validate`` returns
exactly the issues this copy returns. ``validator.py``, ``schema.py`` and ``primitives.py`` are verbatim copies of
``fhir_imaging/validation/`` at that time, only their imports point here; the package data is read from
``fhir_imaging/validation/data``. No tests here.
"""
