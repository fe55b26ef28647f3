"""Core extensions (URLs under http://hl7.org/fhir/StructureDefinition/) used as R4 defines them (extensions.py);
every case also checks the fast pass: it never says "clean" where the walk finds an issue (it leaves every core
extension to the walk).

Spec: https://hl7.org/fhir/R4/extensibility.html, https://hl7.org/fhir/R4/defining-extensions.html#context.
"""

from __future__ import annotations

from typing import Any

import pytest

from fhir_imaging.validation import Validator, status_for

CORE = "http://hl7.org/fhir/StructureDefinition/"
BIRTH_PLACE = {"url": CORE + "patient-birthPlace", "valueAddress": {"city": "Lyon"}}
OWN_PREFIX = {"url": CORE + "humanname-own-prefix", "valueString": "van"}
ABSENT = {"url": CORE + "data-absent-reason", "valueCode": "unknown"}


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator.load()


def _errors(validator: Validator, resource: dict[str, Any]) -> list[tuple[str, tuple[str, ...]]]:
    issues = validator.validate(resource)
    assert not validator._fast.clean(resource) or not validator.locate(resource)
    return [(i.code, i.expression) for i in issues if i.severity == "error" and i.code != "invariant"]


def _patient(**elements: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", **elements}


VALID = [
    ("resource context", _patient(extension=[BIRTH_PLACE])),
    ("primitive element path", _patient(name=[{"family": "Beethoven", "_family": {"extension": [OWN_PREFIX]}}])),
    ("Element context on a primitive", _patient(_birthDate={"extension": [ABSENT]})),
    ("Element context on a datatype", _patient(name=[{"extension": [ABSENT]}])),
    ("someone else's extension", _patient(extension=[{"url": "http://example.org/x", "valueBoolean": True}])),
    (
        "modifier extension",
        {
            "resourceType": "NutritionOrder",
            "status": "active",
            "intent": "order",
            "patient": {"reference": "Patient/1"},
            "dateTime": "2024-01-01",
            "modifierExtension": [{"url": CORE + "request-doNotPerform", "valueBoolean": True}],
        },
    ),
]


@pytest.mark.parametrize("resource", [case[1] for case in VALID], ids=[case[0] for case in VALID])
def test_core_extensions_used_as_defined(validator: Validator, resource: dict[str, Any]) -> None:
    assert _errors(validator, resource) == []


INVALID = [
    (
        "unknown URL in FHIR's namespace",
        _patient(extension=[{"url": CORE + "patient-favouriteColour", "valueString": "blue"}]),
        [("extension", ("Patient.extension[0].url",))],
    ),
    (
        "value type not allowed",
        _patient(extension=[{"url": CORE + "patient-birthPlace", "valueString": "Lyon"}]),
        [("extension", ("Patient.extension[0].valueString",))],
    ),
    (
        "context not allowed",
        {"resourceType": "Organization", "extension": [BIRTH_PLACE]},
        [("extension", ("Organization.extension[0].url",))],
    ),
    (
        "primitive context not allowed",
        _patient(name=[{"given": ["Ludwig"], "_given": [{"extension": [OWN_PREFIX]}]}]),
        [("extension", ("Patient.name[0].given[0].extension[0].url",))],
    ),
    (
        "not a modifier",
        _patient(modifierExtension=[BIRTH_PLACE]),
        [("extension", ("Patient.modifierExtension[0].url",))],
    ),
]


@pytest.mark.parametrize(("resource", "expected"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
def test_core_extensions_misused_are_errors(
    validator: Validator, resource: dict[str, Any], expected: list[tuple[str, tuple[str, ...]]]
) -> None:
    assert _errors(validator, resource) == expected
    assert status_for(validator.validate(resource)) == 422
