from __future__ import annotations

import pytest

from fhir_imaging.fhir.registry import expression_for_base, load_registry, split_union


def test_every_r4_resource_type_is_known() -> None:
    registry = load_registry()
    assert len(registry.resource_types) == 146
    assert {"ImagingStudy", "Patient", "DiagnosticReport", "Endpoint", "Bundle"} <= registry.resource_types
    assert "DomainResource" not in registry.resource_types


def test_imaging_study_parameters_come_from_the_definitions() -> None:
    params = load_registry().params_for("ImagingStudy")
    expected = {
        "basedon", "bodysite", "dicom-class", "encounter", "endpoint", "identifier", "instance", "interpreter",
        "modality", "patient", "performer", "reason", "referrer", "series", "started", "status", "subject",
        "_id", "_lastUpdated", "_tag", "_profile", "_security", "_source",
    }  # fmt: skip
    assert expected <= set(params)
    assert params["patient"].expression == "ImagingStudy.subject.where(resolve() is Patient)"
    assert params["patient"].targets == ("Patient", "Group")
    assert params["started"].type == "date"


def test_modality_addition_covers_study_and_series() -> None:
    modality = load_registry().params_for("ImagingStudy")["modality"]
    assert modality.expression == "ImagingStudy.modality | ImagingStudy.series.modality"


def test_patient_compartment() -> None:
    assert load_registry().patient_compartment["ImagingStudy"] == ("patient",)


@pytest.mark.parametrize(
    ("expression", "parts"),
    [
        ("A.b | B.c", ["A.b", "B.c"]),
        ("(A.b as X) | B.c.where(d = 'x|y')", ["(A.b as X)", "B.c.where(d = 'x|y')"]),
        ("A.b.where(c | d)", ["A.b.where(c | d)"]),
    ],
)
def test_split_union(expression: str, parts: list[str]) -> None:
    assert split_union(expression) == parts


def test_expression_for_base_keeps_only_that_base() -> None:
    assert expression_for_base("Patient.name | Practitioner.name", "Practitioner") == "Practitioner.name"
    assert expression_for_base("Resource.id", "Patient") == "Resource.id"
    assert expression_for_base(None, "Patient") is None


def test_the_searchable_types_are_the_types_the_search_engine_implements() -> None:
    from fhir_imaging.fhir.registry import SEARCHABLE_TYPES
    from fhir_imaging.search.types import TYPES

    assert set(TYPES) == SEARCHABLE_TYPES
