"""The literal-reference patterns: one relative reference (fhir.references), and the target finder of resolve() and
the search index (search.fhirpath) built on the same type and id."""

from __future__ import annotations

import pytest

from fhir_imaging import linear_regex
from fhir_imaging.fhir.references import RELATIVE_REFERENCE, RELATIVE_REFERENCE_PATTERN, local_target
from fhir_imaging.search.fhirpath import reference_target

BASE = "https://fhir.example/r4"


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("Patient/1", ("Patient", "1")),
        ("ImagingStudy/a-b.c/_history/2", ("ImagingStudy", "a-b.c")),
        (f"{BASE}/Patient/1", ("Patient", "1")),
        ("https://elsewhere.example/Patient/1", None),
        ("Patient/1/_history/a_b", None),  # a version id is an id
        ("Patient/" + "x" * 65, None),
        ("patient/1", None),
        ("P/1", None),  # a type has two letters or more
        ("urn:uuid:0f8c", None),
        ("#contained", None),
    ],
)
def test_local_target(reference: str, expected: tuple[str, str] | None) -> None:
    assert local_target(reference, BASE) == expected


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("Patient/1", ("", "Patient", "1")),
        ("https://elsewhere.example/fhir/Patient/1/_history/3", ("https://elsewhere.example/fhir", "Patient", "1")),
        ("Patient/1/_history/a_b", ("", "Patient", "1")),  # the version is not read here
        ("Patient/" + "x" * 65, None),
        ("urn:uuid:0f8c", None),
        ("Patient", None),
    ],
)
def test_reference_target(reference: str, expected: tuple[str, str, str] | None) -> None:
    assert reference_target(reference) == expected


@pytest.mark.parametrize(
    "reference",
    ["Patient/1", "Patient/1/_history/2", "Patient/1/_history/a_b", "Patient/", "P/1", f"{BASE}/Patient/1", "Ab/é"],
)
def test_the_validators_fast_matcher_agrees_with_the_pattern(reference: str) -> None:
    fast = linear_regex.fullmatcher(RELATIVE_REFERENCE_PATTERN)
    assert fast(reference) == (RELATIVE_REFERENCE.fullmatch(reference) is not None)
