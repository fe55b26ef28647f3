from __future__ import annotations

from typing import Any

import orjson
import pytest

from fhir_imaging.fhir.outcome import BadRequest
from fhir_imaging.fhir.references import literal_references
from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.fhir.transaction import (
    conditional_references,
    needs_rewrite,
    processing_order,
    read_entries,
    rewrite_references,
    scan_references,
)

KNOWN = load_registry().is_resource_type


def _bundle(*requests: tuple[str, str], resource: dict[str, Any] | None = None) -> dict[str, Any]:
    entries = []
    for method, url in requests:
        entry: dict[str, Any] = {"request": {"method": method, "url": url}}
        if method in ("POST", "PUT", "PATCH"):
            entry["resource"] = resource or {"resourceType": url.split("/")[0].split("?")[0], "id": url.split("/")[-1]}
        entries.append(entry)
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


@pytest.mark.parametrize(
    ("method", "url", "expected"),
    [
        ("GET", "Patient/1", ("Patient", "1", None, None, [])),
        ("GET", "Patient/1/_history/2", ("Patient", "1", 2, "_history", [])),
        ("GET", "ImagingStudy?patient=Patient/1&modality=CT", ("ImagingStudy", None, None, None,
                                                                [("patient", "Patient/1"), ("modality", "CT")])),
        ("DELETE", "Patient?identifier=x|1", ("Patient", None, None, None, [("identifier", "x|1")])),
        ("GET", "http://example.org/baseR4/Patient/1", ("Patient", "1", None, None, [])),
    ],
)  # fmt: skip
def test_request_urls_are_read(method: str, url: str, expected: tuple[Any, ...]) -> None:
    (entry,) = read_entries(_bundle((method, url)), KNOWN)
    assert (entry.resource_type, entry.resource_id, entry.version_id, entry.operation, entry.query) == expected


@pytest.mark.parametrize(
    "bundle",
    [
        {"entry": {}},
        {"entry": [1]},
        {"entry": [{"request": {"method": "FETCH", "url": "Patient"}}]},
        {"entry": [{"request": {"method": "GET", "url": "patient/1"}}]},
        {"entry": [{"request": {"method": "POST", "url": "Patient/1"}, "resource": {"resourceType": "Patient"}}]},
        {"entry": [{"request": {"method": "DELETE", "url": "Patient"}}]},
        {"entry": [{"request": {"method": "GET", "url": "Patient/a b"}}]},
    ],
)
def test_bad_entries_are_refused(bundle: dict[str, Any]) -> None:
    with pytest.raises(BadRequest):
        read_entries(bundle, KNOWN)


def test_processing_order_is_delete_post_put_get_and_stable() -> None:
    bundle = _bundle(("GET", "Patient/1"), ("PUT", "Patient/2"), ("POST", "Patient"), ("DELETE", "Patient/3"),
                     ("POST", "Basic"))  # fmt: skip
    bundle["entry"][2]["resource"] = {"resourceType": "Patient"}
    bundle["entry"][4]["resource"] = {"resourceType": "Basic"}
    order = [entry.index for entry in processing_order(read_entries(bundle, KNOWN))]
    assert order == [3, 2, 4, 1, 0]


def references_in(resource: dict[str, Any]) -> list[str]:
    return [reference for _, reference in literal_references(resource)]


def test_rewrite_references_and_find_conditional_ones() -> None:
    mapping = {"urn:uuid:p": "Patient/123", "urn:uuid:d": "Practitioner/dr"}
    resource = {"subject": {"reference": "urn:uuid:p"}, "performer": [{"reference": "urn:uuid:d"}, "urn:uuid:p"],
                "other": {"reference": "urn:uuid:unknown"},
                "basedOn": [{"reference": "ServiceRequest?identifier=http://x|1"}]}  # fmt: skip
    rewrite_references(resource, mapping)
    assert resource["subject"]["reference"] == "Patient/123"
    assert resource["performer"] == [{"reference": "Practitioner/dr"}, "Patient/123"]
    assert sorted(references_in(resource)) == sorted(
        ["Patient/123", "Practitioner/dr", "urn:uuid:unknown", "ServiceRequest?identifier=http://x|1"]
    )
    assert conditional_references(references_in(resource)) == {"ServiceRequest?identifier=http://x|1"}


def test_scanning_the_serialised_resource_finds_the_same_references() -> None:
    resource = {"resourceType": "ImagingStudy", "subject": {"reference": "urn:uuid:p"},
                "note": [{"text": 'a "quoted" reference'}],
                "basedOn": [{"reference": 'ServiceRequest?identifier=a\\"b'}],
                "extension": [{"url": "http://x", "valueUri": "urn:uuid:d"}]}  # fmt: skip
    data = orjson.dumps(resource)
    assert sorted(scan_references(data)) == sorted(references_in(resource))
    assert needs_rewrite(data, scan_references(data), {"urn:uuid:d": "Practitioner/1"})
    assert needs_rewrite(data, scan_references(data), {"urn:uuid:p": "Patient/1"})
    assert not needs_rewrite(data, scan_references(data), {"urn:uuid:other": "Patient/2"})
    assert not needs_rewrite(data, scan_references(data), {})
