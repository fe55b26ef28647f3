from __future__ import annotations

import pytest

from fhir_imaging.fhir.registry import build_registry, expression_for_base, load_registry, split_union


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
    from fhir_imaging.fhir.registry import COMPONENT_TYPES, SEARCHABLE_TYPES
    from fhir_imaging.search.types import TYPES

    assert set(TYPES) == COMPONENT_TYPES  # each composite component is searched by one of these
    assert COMPONENT_TYPES | {"composite"} == SEARCHABLE_TYPES  # search/composite.py


def test_every_r4_composite_is_searchable_with_its_components_resolved() -> None:
    """The components come from the definitions their urls name: the type from there, the expression from the
    composite (search.html#composite); every R4 composite resolves."""
    registry = load_registry()
    composites = [
        param
        for name in registry.resource_types
        for param in registry.params_for(name).values()
        if param.type == "composite"
    ]
    assert len(composites) >= 70
    assert all(param.searchable for param in composites)
    bp = registry.params_for("Observation")["component-code-value-quantity"]
    assert bp.expression == "Observation.component"
    assert [(part.type, part.expression) for part in bp.parts] == [
        ("token", "code"),
        ("quantity", "value.as(Quantity)"),
    ]
    assert [part.code for part in bp.parts] == ["component-code-value-quantity"] * 2


def test_a_composite_whose_component_cannot_be_resolved_is_not_searchable() -> None:
    definition = {
        "url": "urn:x:composite",
        "code": "odd",
        "base": ["Observation"],
        "type": "composite",
        "expression": "Observation",
        "component": [
            {"definition": "http://hl7.org/fhir/SearchParameter/clinical-code", "expression": "code"},
            {"definition": "urn:x:nowhere", "expression": "value"},
        ],
    }
    code = {
        "url": "http://hl7.org/fhir/SearchParameter/clinical-code",
        "code": "code",
        "base": ["Observation"],
        "type": "token",
        "expression": "Observation.code",
    }
    registry = build_registry(["Observation"], [code, definition], [], {})
    assert not registry.params_for("Observation")["odd"].searchable
    assert [param.code for param in registry.searchable_params("Observation")] == ["code"]
