"""SMART scopes read into grants (pure)."""

from __future__ import annotations

import pytest

from fhir_imaging.auth.scopes import Access, Grant, parse_scope, parse_scopes


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("patient/ImagingStudy.rs", Grant("patient", "ImagingStudy", frozenset("rs"))),
        ("user/*.cruds", Grant("user", "*", frozenset("cruds"))),
        ("system/*.rs", Grant("system", "*", frozenset("rs"))),
        ("system/Patient.c", Grant("system", "Patient", frozenset("c"))),
        ("patient/*.read", Grant("patient", "*", frozenset("rs"))),
        ("user/*.write", Grant("user", "*", frozenset("cud"))),
        ("user/*.*", Grant("user", "*", frozenset("cruds"))),
        ("system/Observation.*", Grant("system", "Observation", frozenset("cruds"))),
        (
            "patient/Observation.rs?category=laboratory",
            Grant("patient", "Observation", frozenset("rs"), "category=laboratory"),
        ),
        ("openid", None),
        ("fhirUser", None),
        ("launch/patient", None),
        ("user/*.sr", None),  # v2 letters out of order
        ("user/*.rr", None),
        ("user/*.x", None),
        ("user/*.", None),
        ("admin/*.read", None),
        ("user/Im-aging.rs", None),
        ("*.*", None),
    ],
)
def test_scopes_read_into_grants(scope: str, expected: Grant | None) -> None:
    assert parse_scope(scope) == expected


def test_access_allows_by_interaction_and_type() -> None:
    access = Access(parse_scopes("openid system/ImagingStudy.rs user/Patient.cud"))
    assert access.allows("r", "ImagingStudy") and access.allows("s", "ImagingStudy")
    assert not access.allows("c", "ImagingStudy") and not access.allows("r", "Patient")
    assert access.allows("c", "Patient") and access.allows("d", "Patient")
    assert not access.allows("r", "*")  # a grant on one type is not a grant on every type
    assert Access(parse_scopes("system/*.rs")).allows("r", "*")


def test_patient_grants_need_a_patient_and_confine_to_it() -> None:
    assert not Access(parse_scopes("patient/*.cruds")).allows("r", "ImagingStudy")  # no patient in context
    confined = Access(parse_scopes("patient/*.rs user/Practitioner.rs"), patient="p1")
    assert confined.allows("r", "ImagingStudy") and confined.confined_to("r", "ImagingStudy") == "p1"
    assert confined.allows("r", "Practitioner") and confined.confined_to("r", "Practitioner") is None
    assert not confined.allows("c", "ImagingStudy")


def test_granular_grants_do_not_widen_access_until_enforced() -> None:
    assert not Access(parse_scopes("user/Observation.rs?category=laboratory")).allows("r", "Observation")
