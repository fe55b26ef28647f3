"""Third-party invalid/valid cases (google/fhir primitives, choice types, HL7 validator suite) and focused rules.

Spec: https://hl7.org/fhir/R4/datatypes.html, https://hl7.org/fhir/R4/json.html, https://hl7.org/fhir/R4/http.html.
Sources and expected outcomes of the shared cases: ``shared/data/invalid/SOURCES.md``.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from fhir_imaging.fhir.outcome import Issue
from fhir_imaging.validation import Validator, has_errors, status_for
from tests.conftest import SHARED

INVALID = SHARED / "data" / "invalid"
PRIMITIVES = INVALID / "google-fhir-primitives"

# google/fhir file stem → R4 type code.
TYPE_OF = {
    "base64_binary": "base64Binary",
    "date_time": "dateTime",
    "positive_int": "positiveInt",
    "unsigned_int": "unsignedInt",
    "reference": "Reference",
}


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator.load()


def errors(issues: list[Issue]) -> list[tuple[str, tuple[str, ...]]]:
    return [(i.code, i.expression) for i in issues if i.severity in ("error", "fatal")]


def primitive_lines(kind: str) -> list[tuple[str, str, bytes]]:
    out = []
    for path in sorted(PRIMITIVES.glob(f"*.{kind}.ndjson")):
        stem = path.name.split(".")[0]
        for n, line in enumerate(path.read_bytes().splitlines()):
            if line.strip():
                out.append((TYPE_OF.get(stem, stem), f"{path.name}:{n + 1}", line))
    return out


def embedded(type_code: str, value: Any) -> dict[str, Any]:
    """A Basic resource carrying ``value`` where a ``type_code`` belongs (Narrative.div, subject, an extension)."""
    basic: dict[str, Any] = {"resourceType": "Basic", "code": {"text": "test"}}
    if type_code == "xhtml":
        basic["text"] = {"status": "generated", "div": value}
    elif type_code == "Reference":
        basic["subject"] = value
    else:
        key = "value" + type_code[0].upper() + type_code[1:]
        basic["extension"] = [{"url": "http://example.org/fhir/StructureDefinition/x", key: value}]
    return basic


@pytest.mark.parametrize(("type_code", "where", "line"), primitive_lines("invalid"), ids=lambda x: str(x))
def test_google_invalid_primitives_are_rejected(validator: Validator, type_code: str, where: str, line: bytes) -> None:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return  # `+1`, `t`, `f`: not JSON at all, so the request is a 400 before validation (the API's parser)
    assert has_errors(validator.validate_value(type_code, value)), where
    issues = validator.validate(embedded(type_code, value))
    assert has_errors(issues), where
    assert status_for(issues) == 400


@pytest.mark.parametrize(("type_code", "where", "line"), primitive_lines("valid"), ids=lambda x: str(x))
def test_google_valid_primitives_are_accepted(validator: Validator, type_code: str, where: str, line: bytes) -> None:
    value = orjson.loads(line)
    if value is None:
        # google/fhir parses `null` as "no value". FHIR JSON allows `null` only inside a primitive array aligned
        # with its `_x` array (json.html#primitive); that use is tested in test_null_in_primitive_arrays.
        return
    if type_code == "xhtml" and (value == "" or "xmlns" not in value):
        # Disagreement, on purpose: google/fhir parses an empty xhtml and a div outside the XHTML namespace; FHIR
        # JSON forbids empty strings and Narrative.div must be a <div> in the XHTML namespace (narrative.html#xhtml,
        # txt-1; HL7's validator refuses "<div>text</div>" too), so we reject them.
        assert has_errors(validator.validate(embedded(type_code, value)))
        return
    assert not has_errors(validator.validate_value(type_code, value)), where
    # Invariants left aside: the Basic made to hold the value has no contained resource for `#p1` to name (ref-1).
    issues = [issue for issue in validator.validate(embedded(type_code, value)) if issue.code != "invariant"]
    assert not has_errors(issues), where


def test_reference_files_are_reference_datatypes(validator: Validator) -> None:
    """reference.*.ndjson hold Reference objects, not primitives: unknown properties must be rejected."""
    for _, where, line in primitive_lines("invalid"):
        if where.startswith("reference."):
            codes = {code for code, _ in errors(validator.validate_value("Reference", orjson.loads(line)))}
            assert codes == {"structure"}, where


def test_multiple_choice_values_are_rejected(validator: Validator) -> None:
    resource = orjson.loads(
        (INVALID / "google-fhir-jsonformat" / "observation_invalid_multiple_choicex_provided.json").read_bytes()
    )
    issues = validator.validate(resource)
    # The file is a minimal parser test: it also lacks the required Observation.status and Observation.code.
    assert sorted(errors(issues)) == [
        ("required", ("Observation.code",)),
        ("required", ("Observation.status",)),
        ("structure", ("Observation.value.ofType(Quantity)", "Observation.value.ofType(string)")),
    ]
    assert status_for(issues) == 400


def test_hl7_group_choice_bad3(validator: Validator) -> None:
    """Java reports 2 errors, both on Group.characteristic[0].value[x] (JSON type, then boolean lexical form): we
    report that fault once. The case was written for R5, so R4 adds two more: ``Group.membership`` is an R5 element
    (unknown in R4) and R4's required ``Group.actual`` is missing."""
    resource = orjson.loads((INVALID / "fhir-test-cases" / "group-choice-bad3.json").read_bytes())
    issues = validator.validate(resource)
    assert sorted(errors(issues)) == [
        ("required", ("Group.actual",)),
        ("structure", ("Group.membership",)),
        ("value", ("Group.characteristic[0].value.ofType(boolean)",)),
    ]
    assert status_for(issues) == 400


LIST = {"resourceType": "List", "status": "current", "mode": "working"}
# Cases the HL7 manifest names without shipping their files (SOURCES.md): rebuilt minimally from its descriptions.
SUITE = [
    ("list-unknown-prop", {**LIST, "@other": 1}, [("structure", ("List.@other",))], 400),
    ("list-wrong-code", {**LIST, "status": "current1"}, [("code-invalid", ("List.status",))], 422),
    ("list-empty2", {**LIST, "entry": []}, [("structure", ("List.entry",))], 400),
    (
        "synthea",
        {"resourceType": "Encounter", "status": "completed", "class": {"code": "AMB"}, "reasonCode": {"text": "x"}},
        [("code-invalid", ("Encounter.status",)), ("structure", ("Encounter.reasonCode",))],
        400,
    ),
]


@pytest.mark.parametrize(("name", "resource", "expected", "status"), SUITE, ids=[c[0] for c in SUITE])
def test_hl7_validator_suite_cases(
    validator: Validator, name: str, resource: dict[str, Any], expected: list[Any], status: int
) -> None:
    issues = validator.validate(resource)
    assert sorted(errors(issues)) == sorted(expected)
    assert status_for(issues) == status


def test_trailing_dot_decimal_is_not_json() -> None:
    """observation-with-trailing-dot: '925.' is not a JSON number, so the parser (400) rejects it first."""
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(b'{"resourceType": "Observation", "valueQuantity": {"value": 925.}}')


STUDY = {"resourceType": "ImagingStudy", "status": "available", "subject": {"reference": "Patient/p1"}}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"_status": {"extension": [{"url": "http://x", "valueString": "a"}]}}, []),
        ({"_status": {"colour": 1}}, [("structure", ("ImagingStudy.status.colour",))]),
        ({"_status": [{"id": "a"}]}, [("structure", ("ImagingStudy.status",))]),
        ({"_subject": {"id": "a"}}, [("structure", ("ImagingStudy._subject",))]),
        ({"status": None}, [("structure", ("ImagingStudy.status",))]),
        ({"status": "unknown", "numberOfSeries": -1}, [("value", ("ImagingStudy.numberOfSeries",))]),
        ({"numberOfSeries": 2**31}, [("value", ("ImagingStudy.numberOfSeries",))]),
        ({"numberOfSeries": 1.0}, [("value", ("ImagingStudy.numberOfSeries",))]),
        ({"started": "2017-01-01T11:01:20"}, [("value", ("ImagingStudy.started",))]),
        ({"started": "2017-01-01"}, []),
        ({"id": ""}, [("value", ("ImagingStudy.id",))]),
        ({"subject": {"reference": "Patient/p1", "display": " "}}, []),
    ],
)
def test_rules_on_an_imaging_study(validator: Validator, change: dict[str, Any], expected: list[Any]) -> None:
    assert errors(validator.validate({**STUDY, **change})) == expected


def test_null_in_primitive_arrays(validator: Validator) -> None:
    ext = {"extension": [{"url": "http://x", "valueString": "a"}]}
    name = {"family": "Doe", "given": ["A", None], "_given": [None, ext]}
    assert errors(validator.validate({"resourceType": "Patient", "name": [name]})) == []
    name = {"family": "Doe", "given": ["A", None]}
    assert errors(validator.validate({"resourceType": "Patient", "name": [name]})) == [
        ("structure", ("Patient.name[0].given[1]",))
    ]
    name = {"family": "Doe", "given": ["A", None], "_given": [None, None]}
    assert ("structure", ("Patient.name[0].given[1]",)) in errors(
        validator.validate({"resourceType": "Patient", "name": [name]})
    )
    name = {"family": "Doe", "given": ["A", "B"], "_given": [None]}
    assert errors(validator.validate({"resourceType": "Patient", "name": [name]})) == [
        ("structure", ("Patient.name[0].given",))
    ]


def test_contained_and_nested_resources_are_validated_as_their_own_type(validator: Validator) -> None:
    bad_patient = {"resourceType": "Patient", "id": "p", "gender": "robot"}
    study = {**STUDY, "contained": [bad_patient, {"resourceType": "Nope"}, {"id": "x"}]}
    assert sorted(errors(validator.validate(study))) == [
        ("code-invalid", ("ImagingStudy.contained[0].gender",)),
        ("structure", ("ImagingStudy.contained[1]",)),
        ("structure", ("ImagingStudy.contained[2]",)),
    ]
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {**STUDY, "status": 1}}]}
    assert errors(validator.validate(bundle)) == [("value", ("Bundle.entry[0].resource.status",))]
    params = {
        "resourceType": "Parameters",
        "parameter": [{"name": "a", "resource": {"resourceType": "DomainResource"}}],
    }
    assert errors(validator.validate(params)) == [("structure", ("Parameters.parameter[0].resource",))]


@pytest.mark.parametrize("resource", [None, [], "ImagingStudy", {}, {"resourceType": 3}, {"status": "available"}])
def test_not_a_resource(validator: Validator, resource: Any) -> None:
    issues = validator.validate(resource)
    assert [code for code, _ in errors(issues)] == ["structure"]
    assert status_for(issues) == 400


def test_required_bindings_on_codeable_concepts_and_skipped_bindings(validator: Validator) -> None:
    # Attachment.contentType is bound (required) to mimetypes, which the definitions cannot expand: not checked.
    assert "http://hl7.org/fhir/ValueSet/mimetypes" in validator.schema.unexpandable
    media = {"resourceType": "Media", "status": "completed", "content": {"contentType": "made/up"}}
    assert errors(validator.validate(media)) == []
    # A CodeableConcept with a required binding passes when at least one coding is in the value set.
    allergy = {
        "resourceType": "AllergyIntolerance",
        "patient": {"reference": "Patient/p"},
        "clinicalStatus": {"coding": [{"system": "http://example.org", "code": "x"}]},
    }
    assert errors(validator.validate(allergy)) == [("code-invalid", ("AllergyIntolerance.clinicalStatus",))]
    allergy["clinicalStatus"]["coding"].append(
        {"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}
    )
    assert errors(validator.validate(allergy)) == []


def test_reference_target_mismatch_is_a_warning(validator: Validator) -> None:
    issues = validator.validate({**STUDY, "subject": {"reference": "Practitioner/p1"}})
    assert [(i.severity, i.code, i.expression) for i in issues if i.code != "invariant"] == [
        ("warning", "invalid", ("ImagingStudy.subject.reference",))
    ]


def test_status_for() -> None:
    rule = Issue("error", "required", "x")
    assert status_for([rule]) == 422
    assert status_for([rule, Issue("error", "structure", "x")]) == 400
    assert status_for([rule, Issue("warning", "value", "x")]) == 422
