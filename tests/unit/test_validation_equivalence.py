"""The validator with its fast clean-resource pass reports exactly the issues of the full walk alone.

(Both without the invariants, which come after either: ``Validator.structural_issues``.)

``fhir_imaging/validation/fast.py`` may only answer "no issue" where the full walk (``Validator.locate``) finds none,
so every input must come out the same: the same ``Issue`` list (severity, code, diagnostics, expression), in the
same order. Inputs: the 710 official R4 examples, a generated imaging corpus, every mutation
of ``test_validation_mutations.py`` and hand-made corners (null items in primitive arrays, references, bindings,
primitive edge values).
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from fhir_imaging.validation import Validator
from fhir_imaging.validation.primitives import compile_tests
from tests.conftest import SHARED
from tests.unit import test_validation_mutations as mutations

generate_corpus = pytest.importorskip("bench.generate").generate_corpus
EXAMPLES = SHARED / "fhir-r4" / "examples"


@pytest.fixture(scope="module")
def validators() -> Validator:
    return Validator.load()


def _differences(validator: Validator, resources: list[Any]) -> list[Any]:
    out = []
    for n, resource in enumerate(resources):
        expected = validator.locate(resource)
        if validator.structural_issues(resource) != expected:
            out.append((n, expected, validator.structural_issues(resource)))
    return out


def test_official_examples_give_the_same_issues(validators: Validator) -> None:
    resources = [orjson.loads(p.read_bytes()) for p in sorted(EXAMPLES.glob("*.json"))]
    assert len(resources) == 710
    assert _differences(validators, resources) == []


def test_generated_corpus_gives_the_same_issues(validators: Validator) -> None:
    corpus = list(generate_corpus(200, seed=5))
    assert sum(r["resourceType"] == "ImagingStudy" for r in corpus) == 200
    assert _differences(validators, corpus) == []
    # The same studies broken in a few ways the fast pass must not let through.
    broken, valid = [], []
    for study in (r for r in corpus[:60] if r["resourceType"] == "ImagingStudy"):
        for changes, out in ((_BREAKS, broken), (_VALID_CHANGES, valid)):
            for change in changes:
                one = copy.deepcopy(study)
                change(one)
                out.append(one)
    assert _differences(validators, broken + valid) == []
    assert all(validators.structural_issues(r) for r in broken)
    assert not any(validators.structural_issues(r) for r in valid)


def _instance(study: dict[str, Any]) -> dict[str, Any]:
    return study["series"][-1]["instance"][-1]


_BREAKS = [
    lambda s: _instance(s).__setitem__("uid", "2.25.1 2"),
    lambda s: _instance(s).__setitem__("uid", "1" * 65),
    lambda s: _instance(s).__setitem__("number", -1),
    lambda s: _instance(s).__setitem__("number", 2**31),
    lambda s: _instance(s).__setitem__("number", True),
    lambda s: _instance(s)["sopClass"].__setitem__("system", "urn:ietf: rfc"),
    lambda s: _instance(s)["sopClass"].__setitem__("code", "a  b"),
    lambda s: _instance(s).pop("sopClass"),
    lambda s: s["series"][0].__setitem__("instance", [None]),
    lambda s: s.__setitem__("subject", {"reference": "Patientx/1"}),
    lambda s: s.__setitem__("subject", {"reference": "Observation/1"}),
    lambda s: s.__setitem__("status", "done"),
    lambda s: s.__setitem__("started", "2021-13-01"),
    lambda s: s.__setitem__("description", "tab\tand\x0bvertical tab"),
    lambda s: s.__setitem__("contained", [{"resourceType": "Patient", "gender": "x"}]),
]
_VALID_CHANGES = [
    lambda s: _instance(s).__setitem__("_uid", {"extension": [{"url": "http://x", "valueString": "y"}]}),
    lambda s: _instance(s).update(uid=None, _uid={"id": "u"}) or _instance(s).pop("uid"),
    lambda s: s.__setitem__("contained", [{"resourceType": "Patient", "gender": "other", "active": False}]),
    lambda s: s.__setitem__("subject", {"reference": "Group/1/_history/2"}),
]


@pytest.mark.parametrize("name", mutations.example_files())
def test_mutations_give_the_same_issues(validators: Validator, name: str) -> None:
    cases = mutations.all_cases(name)
    assert cases
    assert _differences(validators, [broken for _, broken, _, _ in cases]) == []


CORNERS: list[Any] = [
    None,
    [],
    {},
    {"resourceType": 3},
    {"resourceType": "Resource"},
    {"resourceType": "Patient", "name": [{"given": ["a", None], "_given": [None, {"id": "x"}]}]},
    {"resourceType": "Patient", "name": [{"given": ["a", "b"], "_given": [{"id": "x"}]}]},
    {"resourceType": "Patient", "name": [{"given": [None], "_given": [None]}]},
    {"resourceType": "Patient", "name": [{"_given": [{"id": "x"}]}]},
    {"resourceType": "Patient", "_birthDate": {"id": "a"}, "_gender": {}},
    {"resourceType": "Patient", "deceasedBoolean": True, "_deceasedBoolean": {"id": "a"}},
    {"resourceType": "Patient", "deceasedBoolean": True, "deceasedDateTime": "2020"},
    {"resourceType": "Patient", "multipleBirthInteger": 0, "gender": "male", "active": "true"},
    {"resourceType": "Patient", "managingOrganization": {"reference": "Organization/1/_history/2"}},
    {"resourceType": "Patient", "managingOrganization": {"reference": "Patient/1"}},
    {"resourceType": "Patient", "managingOrganization": {"reference": "http://x/Patient/1"}},
    {"resourceType": "Patient", "managingOrganization": {"reference": "Nope/1"}},
    {"resourceType": "Patient", "maritalStatus": {"coding": [{"code": "zz"}]}},
    {"resourceType": "Patient", "text": {"status": "nope", "div": "<div/>"}},
    {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueQuantity": {"value": 1e400}},
    {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueInteger": 2**31 - 1},
    {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueInteger": -(2**31) - 1},
    {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueQuantity": {"value": 1.5}},
    {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueString": "a\u00a0b\u2028"},
    {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Basic"}}]},
    {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Patient", "x": 1}}]},
]


def test_corners_give_the_same_issues(validators: Validator) -> None:
    assert _differences(validators, CORNERS) == []


PRIMITIVE_VALUES: list[Any] = [
    *(True, False, None, 0, 1, -1, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 1.5, -0.0, float("inf"), 1e300),
    *("", " ", "a", "a b", "a  b", " a", "a\tb", "a\nb", "a\x0bb", "a\x0cb", "a\u00a0b", "\u2028", "é", "<div/>"),
    *("2.25.1", "1" * 64, "1" * 65, "urn:oid:1.2.3", "urn:uuid:0f4d2b8e-8c3a-4c5e-9d2a-1b2c3d4e5f60", "QUJD"),
    *("2020", "2020-02-30", "2020-13", "2021-07-17T22:53:33+09:00", "2021-07-17T22:53:33", "12:00:00", "http://x/y"),
    *("0", "-0", "01", "true", [], {}, ["a"]),
]


def test_primitive_tests_agree_with_the_checks(validators: Validator) -> None:
    schema = validators.schema
    tests = compile_tests(schema.primitive_table)
    for _ in range(2):  # the second round answers from the memo sets
        for type_code, check in schema.checks.items():
            for value in PRIMITIVE_VALUES:
                assert tests[type_code].ok(value) == (check(value) is None), (type_code, value)
