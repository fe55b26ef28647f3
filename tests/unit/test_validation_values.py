"""Rules the datatypes' regexes cannot state (values.py, narrative.py): resource ids, days of the calendar, string
length, Attachment size and hash, narrative XHTML. Every case also checks that the fast pass agrees with the walk.

Spec: https://hl7.org/fhir/R4/datatypes.html, https://hl7.org/fhir/R4/resource.html#id,
https://hl7.org/fhir/R4/narrative.html#xhtml.
"""

from __future__ import annotations

import base64
import copy
import hashlib
from typing import Any

import pytest

from fhir_imaging.validation import Validator, status_for
from fhir_imaging.validation.narrative import html_checks
from fhir_imaging.validation.values import MAX_STRING_LENGTH

DECEASED = ("Patient.deceased.ofType(dateTime)",)
XHTML = 'xmlns="http://www.w3.org/1999/xhtml"'
DATA = base64.b64encode(b"hello").decode()
SHA1 = base64.b64encode(hashlib.sha1(b"hello").digest()).decode()
PATIENT: dict[str, Any] = {"resourceType": "Patient", "id": "p1", "birthDate": "2024-02-29"}


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator.load()


def _errors(validator: Validator, resource: dict[str, Any]) -> list[tuple[str, tuple[str, ...]]]:
    issues = validator.validate(resource)
    assert validator._fast.clean(resource) == (not validator.locate(resource))  # the fast pass agrees
    return [(i.code, i.expression) for i in issues if i.severity == "error" and i.code != "invariant"]


def _patient(**changes: Any) -> dict[str, Any]:
    patient = copy.deepcopy(PATIENT)
    patient.update(changes)
    return patient


INVALID = [
    ("resource id", _patient(id="p_1"), ("value", ("Patient.id",))),
    ("resource id too long", _patient(id="a" * 65), ("value", ("Patient.id",))),
    (
        "contained id",
        _patient(contained=[{"resourceType": "Organization", "id": "org_1"}]),
        ("value", ("Patient.contained[0].id",)),
    ),
    (
        "bundled id",
        {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": _patient(id="a b")}]},
        ("value", ("Bundle.entry[0].resource.id",)),
    ),
    ("30 February", _patient(birthDate="2023-02-30"), ("value", ("Patient.birthDate",))),
    ("29 February of a common year", _patient(birthDate="2023-02-29"), ("value", ("Patient.birthDate",))),
    ("31 April in a dateTime", _patient(deceasedDateTime="2023-04-31T10:00:00Z"), ("value", DECEASED)),
    ("hour 24", _patient(deceasedDateTime="2023-04-30T24:00:00Z"), ("value", DECEASED)),
    ("minute 60", _patient(deceasedDateTime="2023-04-30T10:60:00Z"), ("value", DECEASED)),
    (
        "instant that does not exist",
        _patient(meta={"lastUpdated": "2023-06-31T10:00:00Z"}),
        ("value", ("Patient.meta.lastUpdated",)),
    ),
    ("string over 1MB", _patient(name=[{"text": "x" * (MAX_STRING_LENGTH + 1)}]), ("value", ("Patient.name[0].text",))),
    (
        "integer over 32 bits",
        _patient(multipleBirthInteger=2**31),
        ("value", ("Patient.multipleBirth.ofType(integer)",)),
    ),
    (
        "attachment size",
        _patient(photo=[{"contentType": "text/plain", "data": DATA, "size": 6}]),
        ("invalid", ("Patient.photo[0].size",)),
    ),
    (
        "narrative script",
        _patient(text={"status": "generated", "div": f"<div {XHTML}><script>alert(1)</script></div>"}),
        ("value", ("Patient.text.div",)),
    ),
    (
        "narrative outside the XHTML namespace",
        _patient(text={"status": "generated", "div": "<div>text</div>"}),
        ("value", ("Patient.text.div",)),
    ),
    (
        "narrative not well-formed",
        _patient(text={"status": "generated", "div": f"<div {XHTML}><p>text</div>"}),
        ("value", ("Patient.text.div",)),
    ),
]


@pytest.mark.parametrize(("resource", "expected"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
def test_invalid_values_are_errors_naming_the_element(
    validator: Validator, resource: dict[str, Any], expected: tuple[str, tuple[str, ...]]
) -> None:
    assert _errors(validator, resource) == [expected]


VALID = [
    ("29 February of a leap year", _patient(birthDate="2024-02-29")),
    ("year and month only", _patient(birthDate="2023-02")),
    ("leap second", _patient(deceasedDateTime="2016-12-31T23:59:60Z")),
    ("1MB string", _patient(name=[{"text": "x" * MAX_STRING_LENGTH}])),
    (
        "attachment size and hash",
        _patient(photo=[{"contentType": "text/plain", "data": DATA, "size": 5, "hash": SHA1}]),
    ),
    ("size without data", _patient(photo=[{"contentType": "text/plain", "url": "http://x/y", "size": 6}])),
    ("narrative with an HTML entity", _patient(text={"status": "generated", "div": f"<div {XHTML}>a&nbsp;b</div>"})),
    ("element id with any characters", _patient(name=[{"id": "name_1", "family": "X"}])),
]


@pytest.mark.parametrize("resource", [case[1] for case in VALID], ids=[case[0] for case in VALID])
def test_valid_values_are_accepted(validator: Validator, resource: dict[str, Any]) -> None:
    assert _errors(validator, resource) == []


def test_a_wrong_attachment_hash_is_a_warning(validator: Validator) -> None:
    """HL7's own DiagnosticReport-example-pgx carries a digest of other data: a warning, not an error."""
    patient = _patient(
        photo=[{"contentType": "text/plain", "data": DATA, "hash": base64.b64encode(b"x" * 20).decode()}]
    )
    issues = validator.validate(patient)
    assert [(i.severity, i.expression) for i in issues if i.code != "invariant"] == [
        ("warning", ("Patient.photo[0].hash",))
    ]
    assert not validator._fast.clean(patient)


def test_an_invalid_resource_id_is_a_400(validator: Validator) -> None:
    assert status_for(validator.validate(_patient(id="p_1"))) == 400


@pytest.mark.parametrize(
    ("div", "problem"),
    [
        (f"<div {XHTML}><script>x</script></div>", "<script> is not allowed"),
        (f"<div {XHTML}><form><input/></form></div>", "<form> is not allowed"),
        (f"<div {XHTML}><iframe src='x'/></div>", "<iframe> is not allowed"),
        (f'<div {XHTML}><p onclick="x()">t</p></div>', "'onclick' is not allowed"),
        (f'<div {XHTML}><a href=" JavaScript:alert(1)">t</a></div>', "must not hold a script"),
        (f"<div {XHTML}>&bogus;</div>", "&bogus; is not known"),
        (f'<!DOCTYPE d [<!ENTITY x "xx">]><div {XHTML}>&x;</div>', "document type declaration"),
        (f"<p {XHTML}>t</p>", "must be a div"),
        (f'<div {XHTML}><svg xmlns="http://www.w3.org/2000/svg"/></div>', "not in the XHTML namespace"),
        (f"<div {XHTML}>t", "not well-formed"),
        ("plain text", "not well-formed"),
    ],
)
def test_html_checks_refuse(div: str, problem: str) -> None:
    problems = html_checks(div)
    assert problems and any(problem in p for p in problems), problems


@pytest.mark.parametrize(
    "div",
    [
        f"<div {XHTML}><p>CT <b>chest</b></p></div>",
        f'<div {XHTML} xml:lang="en" lang="en"><table border="1"><tr><td colspan="2">x</td></tr></table></div>',
        f'<div {XHTML}><a href="#x" name="y">t</a><img src="#pic" alt="a" width="5"/></div>',
        f"<div {XHTML}>a &amp; b &lt; c&#160;&nbsp;&copy;</div>",
        f"<div {XHTML}>\n</div>",  # txt-2 is not enforced: HL7's own examples have empty narratives
    ],
)
def test_html_checks_accept(div: str) -> None:
    assert html_checks(div) == []


def test_html_checks_stop_after_a_bounded_number_of_problems() -> None:
    assert len(html_checks(f"<div {XHTML}>" + "<script/>" * 1000 + "</div>")) == 10
