"""A second opinion: fhir.resources (R4B pydantic models) on the same valid and broken ImagingStudy inputs.

Spec: https://hl7.org/fhir/R4/imagingstudy.html (R4B's ImagingStudy is the same as R4's) and
https://hl7.org/fhir/R4/json.html. fhir.resources is a test-only dependency (``pip install 'fhir.resources>=8'``).

Every disagreement is explained below; the test fails on any other one, and whenever fhir.resources rejects
something we accept.
"""

from __future__ import annotations

import re

import orjson
import pytest

from fhir_imaging.validation import Validator
from tests.unit.test_validation_mutations import EXAMPLES, all_cases

pytest.importorskip("fhir.resources", reason="fhir.resources (test-only) is not installed")

from fhir.resources.R4B.imagingstudy import ImagingStudy
from pydantic import ValidationError

NUMERIC = re.compile(r"\.(numberOfSeries|numberOfInstances|number)$")
LENIENT_STRINGS = re.compile(r"\.(system|div)$|\.note\[\d+\]\.text$")  # uri, xhtml, markdown

# (mutation, path predicate) → why we reject what fhir.resources accepts.
EXPLAINED = [
    ("bad code", lambda p: True, "fhir.resources does not check required bindings (code values)"),
    ("empty array", lambda p: True, "fhir.resources accepts empty arrays; FHIR JSON forbids them (json.html)"),
    (
        "empty object",
        lambda p: True,
        "fhir.resources accepts {} for a datatype without required children; FHIR JSON forbids empty objects "
        "(ele-1: every element has a value or children)",
    ),
    (
        "empty string",
        LENIENT_STRINGS.search,
        "fhir.resources accepts '' for uri (the spec's regex \\S* matches ''), markdown and xhtml; FHIR JSON "
        "forbids empty strings",
    ),
    (
        "wrong type",
        NUMERIC.search,
        "pydantic's lax mode turns the string '3' into the integer 3; FHIR JSON requires a JSON number",
    ),
    (
        "wrong type",
        lambda p: p.endswith(".started"),
        "pydantic parses the number 12345 as a Unix timestamp for dateTime; FHIR JSON requires a string",
    ),
]


def ours_reject(validator: Validator, resource: dict) -> bool:
    return any(i.severity == "error" for i in validator.validate(resource))


def theirs_reject(resource: dict) -> bool:
    try:
        ImagingStudy.model_validate(resource)
    except ValidationError:
        return True
    return False


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator.load()


@pytest.mark.parametrize("name", ["ImagingStudy-example.json", "ImagingStudy-example-xr.json"])
def test_both_accept_the_official_examples(validator: Validator, name: str) -> None:
    resource = orjson.loads((EXAMPLES / name).read_bytes())
    assert not ours_reject(validator, resource)
    assert not theirs_reject(resource)


@pytest.mark.parametrize("name", ["ImagingStudy-example.json", "ImagingStudy-example-xr.json"])
def test_disagreements_on_broken_studies_are_explained(validator: Validator, name: str) -> None:
    unexplained, used = [], set()
    agreed = 0
    for label, broken, _, path in all_cases(name):
        ours, theirs = ours_reject(validator, broken), theirs_reject(broken)
        if ours == theirs:
            agreed += 1
            continue
        reason = next((why for kind, applies, why in EXPLAINED if kind == label and applies(path)), None)
        if not ours or reason is None:
            unexplained.append((label, path, f"ours={ours}", f"theirs={theirs}"))
        else:
            used.add(reason)
    assert not unexplained, unexplained
    assert agreed > len(used)  # most broken inputs are rejected by both
