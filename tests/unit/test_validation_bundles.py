"""Bundle rules stated in prose (bundles.py): absolute fullUrls that agree with the resource, documents that resolve
their references. Every case also checks that the fast pass agrees with the walk.

Spec: https://hl7.org/fhir/R4/bundle.html#bundle-unique, https://hl7.org/fhir/R4/bundle.html#references,
https://hl7.org/fhir/R4/documents.html.
"""

from __future__ import annotations

from typing import Any

import pytest

from fhir_imaging.fhir.references import is_absolute
from fhir_imaging.validation import Validator

BASE = "http://example.org/fhir"
PATIENT = {"resourceType": "Patient", "id": "p1"}


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator.load()


def _issues(validator: Validator, bundle: dict[str, Any]) -> list[tuple[str, str, tuple[str, ...]]]:
    issues = validator.validate(bundle)
    assert validator._fast.clean(bundle) == (not validator.locate(bundle))
    return [(i.severity, i.code, i.expression) for i in issues if i.code != "invariant"]  # those: their own tests


def _collection(*entries: dict[str, Any], kind: str = "collection") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def _document(*entries: dict[str, Any]) -> dict[str, Any]:
    composition = {
        "resourceType": "Composition",
        "id": "c1",
        "status": "final",
        "type": {"text": "note"},
        "date": "2024-01-01",
        "author": [{"reference": "Practitioner/dr"}],
        "title": "Note",
        "subject": {"reference": "Patient/p1"},
    }
    bundle = _collection({"fullUrl": f"{BASE}/Composition/c1", "resource": composition}, *entries, kind="document")
    bundle["identifier"] = {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"}
    bundle["timestamp"] = "2024-01-01T00:00:00Z"
    return bundle


@pytest.mark.parametrize(
    ("url", "absolute"),
    [
        ("http://x/Patient/1", True),
        ("urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0", True),
        ("urn:oid:1.2.3", True),
        ("Patient/1", False),
        ("/Patient/1", False),
        ("1http://x", False),
        (":x", False),
        ("ht tp://x", False),
    ],
)
def test_is_absolute(url: str, absolute: bool) -> None:
    assert is_absolute(url) is absolute


def test_relative_full_url_is_an_error(validator: Validator) -> None:
    bundle = _collection({"fullUrl": "Patient/p1", "resource": PATIENT})
    assert _issues(validator, bundle) == [("error", "invalid", ("Bundle.entry[0].fullUrl",))]


def test_full_url_that_disagrees_with_the_resource_is_a_warning(validator: Validator) -> None:
    bundle = _collection({"fullUrl": f"{BASE}/Patient/p2", "resource": PATIENT})
    assert _issues(validator, bundle) == [("warning", "invalid", ("Bundle.entry[0].fullUrl",))]
    bundle = _collection({"fullUrl": f"{BASE}/Observation/p1", "resource": PATIENT})
    assert _issues(validator, bundle) == [("warning", "invalid", ("Bundle.entry[0].fullUrl",))]


@pytest.mark.parametrize(
    "full_url", [f"{BASE}/Patient/p1", "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0", "http://x/some/thing"]
)
def test_sound_full_urls(validator: Validator, full_url: str) -> None:
    assert _issues(validator, _collection({"fullUrl": full_url, "resource": PATIENT})) == []


def test_a_document_resolves_its_references(validator: Validator) -> None:
    practitioner = {"resourceType": "Practitioner", "id": "dr"}
    whole = _document(
        {"fullUrl": f"{BASE}/Patient/p1", "resource": PATIENT},
        {"fullUrl": "urn:uuid:9d2a3e41-8b3c-4a8e-9d0e-5b1a2c3d4e5f", "resource": practitioner},
    )
    assert _issues(validator, whole) == []
    missing = _document({"fullUrl": f"{BASE}/Patient/p1", "resource": PATIENT})
    assert _issues(validator, missing) == [("error", "not-found", ("Bundle.entry[0].resource",))]


def test_a_collection_need_not_resolve_its_references(validator: Validator) -> None:
    bundle = _collection(
        {
            "fullUrl": f"{BASE}/Observation/o1",
            "resource": {**PATIENT, "generalPractitioner": [{"reference": "Practitioner/elsewhere"}]},
        }
    )
    assert [i for i in _issues(validator, bundle) if i[0] == "error"] == []
