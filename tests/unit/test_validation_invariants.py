"""The invariants (``constraint`` elements) of the R4 definitions: table, mutations, equivalences, bounds.

Spec: https://hl7.org/fhir/R4/conformance-rules.html#constraints, https://hl7.org/fhir/R4/validation.html.

- Every constraint of the definitions is evaluated (compiled Python or fhirpathpy) or listed as not evaluable with
  the reason; the shipped data is what ``tools/derive_invariants.py`` derives.
- One mutation per class of invariant (ele-1 on complex and primitive elements, ext-1, per-1, ref-1, dom-2…dom-6,
  qty-3, sqty-1, rng-2, pat-1, cpt-2, att-1, the Bundle rules, a backbone rule, an element rule, a rule shared by
  key, a fhirpathpy rule, ``resolve()``): the issue names the key, its text and the element.
- The compiled checks agree with fhirpathpy wherever fhirpathpy can evaluate the expression, and the clean pass
  agrees with the walk that locates issues, on every official example and every mutation.
"""

from __future__ import annotations

import copy
import importlib.util
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_imaging.fhir.fhirpath_budget import FhirPathLimits
from fhir_imaging.fhir.outcome import Issue
from fhir_imaging.validation import Validator, invariants, status_for
from fhir_imaging.validation.compiled import Scope, compare_moments
from fhir_imaging.validation.invariants import Constraint, Invariants
from fhir_imaging.validation.schema import PRIMITIVE, RESOURCE, Structure
from tests.conftest import SHARED

REPO = Path(__file__).parents[2]
EXAMPLES = SHARED / "fhir-r4" / "examples"
NOT_EVALUABLE = {"txt-1", "txt-2", "mqty-1"}  # htmlChecks() twice; MoneyQuantity, a profile no element uses


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator.load()


def example(name: str) -> dict[str, Any]:
    return orjson.loads((EXAMPLES / name).read_bytes())  # type: ignore[no-any-return]


# -- the table -------------------------------------------------------------------------------------------------------


def test_every_error_invariant_is_evaluated_or_listed_with_its_reason(validator: Validator) -> None:
    table = validator.invariants
    methods = table.methods()
    errors = [c for c in table.constraints.values() if c.severity == "error"]
    assert len(table.constraints) == 241 and len(errors) == 207
    not_evaluated = set()
    for constraint in table.constraints.values():
        how = methods[constraint.id]
        if how.startswith("not evaluated: "):
            assert len(how) > len("not evaluated: ") + 20, constraint.id  # a reason, in words
            not_evaluated.add(constraint.id)
        else:
            assert how in ("python", "fhirpath"), (constraint.id, how)
    assert not_evaluated == NOT_EVALUABLE


def test_shipped_invariants_equal_derived_data() -> None:
    spec = importlib.util.spec_from_file_location("derive_invariants", REPO / "tools" / "derive_invariants.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    derived = module.derive(SHARED / "fhir-r4")
    shipped = REPO / "fhir_imaging" / "validation" / "data" / "invariants"
    assert sorted(derived) == sorted(p.name for p in shipped.glob("*.json"))
    for name, data in derived.items():
        assert (shipped / name).read_bytes() == data, f"{name} is stale: run python tools/derive_invariants.py"


def _reachable(validator: Validator, type_name: str) -> list[tuple[Constraint, Structure | None, str]]:
    """Every (constraint, structure, type path) a resource of ``type_name`` can meet, contained resources aside."""
    table, schema = validator.invariants, validator.schema
    root = schema.resource(type_name)
    assert root is not None
    found, seen, pending = [], set(), [root]
    while pending:
        struct = pending.pop()
        if id(struct) in seen:
            continue
        seen.add(id(struct))
        found += [(c, struct, struct.name) for c in table._structures.get(struct.name, ())]
        for prop in struct.props.values():
            inner = schema.resolve(prop) if prop.kind not in (PRIMITIVE, RESOURCE) else None
            element = table._elements.get(f"{struct.name}.{prop.choice or prop.key}", ())
            found += [(c, inner, prop.type_code) for c in element]
            if inner is not None:
                pending.append(inner)
    return found


@pytest.mark.parametrize("type_name", ["ImagingStudy", "Patient", "Endpoint", "Practitioner"])
def test_the_imaging_types_need_no_fhirpathpy(validator: Validator, type_name: str) -> None:
    reachable = _reachable(validator, type_name)
    assert {c.key for c, _, _ in reachable} >= {"dom-3", "ext-1", "per-1", "ref-1"}
    slow = {c.key for c, struct, path in reachable if validator.invariants.checker(c, struct, path)[1] != "python"}
    assert slow == set()


# -- mutations -------------------------------------------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _contained_patient(**more: Any) -> Mutation:
    def mutate(r: dict[str, Any]) -> None:
        r["contained"] = [{"resourceType": "Patient", "id": "p1", **more}]
        r["subject"] = {"reference": "#p1"}

    return mutate


def _set(path: list[Any], value: Any) -> Mutation:
    def mutate(r: dict[str, Any]) -> None:
        target = r
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return mutate


def _all(*steps: Mutation) -> Mutation:
    def mutate(r: dict[str, Any]) -> None:
        for step in steps:
            step(r)

    return mutate


def _delete(path: list[Any]) -> Mutation:
    def mutate(r: dict[str, Any]) -> None:
        target = r
        for step in path[:-1]:
            target = target[step]
        del target[path[-1]]

    return mutate


ORGANIZATION = {"resourceType": "Organization", "name": "Radiology"}
BUNDLE = {"resourceType": "Bundle", "type": "collection"}
PATIENT_ENTRY = {"resource": {"resourceType": "Patient", "id": "p1"}}
PARAMETERS = {"resourceType": "Parameters"}
CARE_TEAM = {"resourceType": "CareTeam"}
SERVICE_REQUEST = {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "subject": {"display": "x"}}

# (label, base resource: example file or dict, mutation, key, expression)
CASES: list[tuple[str, str | dict[str, Any], Mutation, str, str]] = [
    (
        "ele-1 on a complex element with only an id",
        "ImagingStudy-example.json",
        _set(["series", 0, "instance", 0, "sopClass"], {"id": "c1"}),
        "ele-1",
        "ImagingStudy.series[0].instance[0].sopClass",
    ),
    (
        "ele-1 on a primitive with neither value nor extension",
        "ImagingStudy-example.json",
        _all(_delete(["started"]), _set(["_started"], {"id": "s1"})),
        "ele-1",
        "ImagingStudy.started",
    ),
    (
        "ele-1 on an item of a primitive array",
        "Patient-example.json",
        _all(_set(["name", 0, "given"], ["Peter", None]), _set(["name", 0, "_given"], [None, {"id": "g"}])),
        "ele-1",
        "Patient.name[0].given[1]",
    ),
    (
        "ext-1: a value and extensions",
        "ImagingStudy-example.json",
        _set(
            ["extension"],
            [{"url": "http://example.org/a", "valueString": "a", "extension": [{"url": "b", "valueCode": "b"}]}],
        ),
        "ext-1",
        "ImagingStudy.extension[0]",
    ),
    (
        "ext-1: neither a value nor extensions",
        "ImagingStudy-example.json",
        _set(["series", 0, "modifierExtension"], [{"url": "http://example.org/a"}]),
        "ext-1",
        "ImagingStudy.series[0].modifierExtension[0]",
    ),
    (
        "per-1: a period that ends before it starts",
        "ImagingStudy-example.json",
        _set(["identifier", 0, "period"], {"start": "2020-02-01", "end": "2020-01-31T23:00:00Z"}),
        "per-1",
        "ImagingStudy.identifier[0].period",
    ),
    (
        "ref-1: a local reference without its contained resource",
        "ImagingStudy-example.json",
        _set(["subject"], {"reference": "#nowhere"}),
        "ref-1",
        "ImagingStudy.subject",
    ),
    (
        "dom-2: a contained resource that contains one",
        "ImagingStudy-example.json",
        _contained_patient(contained=[{"resourceType": "Patient", "id": "p2"}]),
        "dom-2",
        "ImagingStudy",
    ),
    (
        "dom-3: a contained resource nothing refers to",
        "ImagingStudy-example.json",
        _set(["contained"], [{"resourceType": "Patient", "id": "p1"}]),
        "dom-3",
        "ImagingStudy",
    ),
    (
        "dom-4: a contained resource with a versionId",
        "ImagingStudy-example.json",
        _contained_patient(meta={"versionId": "2"}),
        "dom-4",
        "ImagingStudy",
    ),
    (
        "dom-5: a contained resource with a security label",
        "ImagingStudy-example.json",
        _contained_patient(meta={"security": [{"code": "R"}]}),
        "dom-5",
        "ImagingStudy",
    ),
    (
        "pat-1: a contact with no details",
        "Patient-example.json",
        _set(["contact", 0], {"gender": "female"}),
        "pat-1",
        "Patient.contact[0]",
    ),
    (
        "cpt-2: a telecom value without a system",
        "Patient-example.json",
        _delete(["telecom", 1, "system"]),
        "cpt-2",
        "Patient.telecom[1]",
    ),
    (
        "att-1: attachment data without a content type",
        "Patient-example.json",
        _set(["photo"], [{"data": "aGVsbG8="}]),
        "att-1",
        "Patient.photo[0]",
    ),
    (
        "qty-3: a unit code without its system",
        "Observation-example.json",
        _delete(["valueQuantity", "system"]),
        "qty-3",
        "Observation.value.ofType(Quantity)",
    ),
    (
        "sqty-1: a comparator on a SimpleQuantity",
        "Observation-example.json",
        _set(["referenceRange"], [{"low": {"value": 1, "comparator": "<"}}]),
        "sqty-1",
        "Observation.referenceRange[0].low",
    ),
    (
        "rng-2: a range whose low is above its high",
        "Observation-example.json",
        _all(
            _delete(["valueQuantity"]),
            _set(["valueRange"], {"low": {"value": 5, "unit": "mg"}, "high": {"value": 1, "unit": "mg"}}),
        ),
        "rng-2",
        "Observation.value.ofType(Range)",
    ),
    (
        "obs-6: a value and a data absent reason (compiled subset)",
        "Observation-example.json",
        _set(["dataAbsentReason"], {"text": "unknown"}),
        "obs-6",
        "Observation",
    ),
    (
        "obs-3: a reference range with neither low, high nor text (a backbone element)",
        "Observation-example.json",
        _set(["referenceRange"], [{"type": {"text": "normal"}}]),
        "obs-3",
        "Observation.referenceRange[0]",
    ),
    (
        "ras-2: a probability over 100 (fhirpathpy)",
        "RiskAssessment-prognosis.json",
        _set(["prediction", 0, "probabilityDecimal"], 150),
        "ras-2",
        "RiskAssessment.prediction[0]",
    ),
    (
        "org-2: an organization's home address (a constraint on an element)",
        ORGANIZATION,
        _set(["address"], [{"use": "home", "city": "Leeds"}]),
        "org-2",
        "Organization.address[0]",
    ),
    ("bdl-1: a total on a collection", BUNDLE, _set(["total"], 1), "bdl-1", "Bundle"),
    (
        "bdl-3: a transaction entry without a request",
        BUNDLE,
        _all(_set(["type"], "transaction"), _set(["entry"], [PATIENT_ENTRY])),
        "bdl-3",
        "Bundle",
    ),
    (
        "bdl-7: two entries with one fullUrl",
        BUNDLE,
        _set(["entry"], [{"fullUrl": "urn:uuid:1", **PATIENT_ENTRY}, {"fullUrl": "urn:uuid:1", **PATIENT_ENTRY}]),
        "bdl-7",
        "Bundle",
    ),
    (
        "bdl-5: an empty entry",
        BUNDLE,
        _set(["entry"], [{"fullUrl": "urn:uuid:1"}]),
        "bdl-5",
        "Bundle.entry[0]",
    ),
    (
        "inv-1 of Parameters (a key three types use)",
        PARAMETERS,
        _set(["parameter"], [{"name": "a", "valueString": "x", "part": [{"name": "b", "valueString": "y"}]}]),
        "inv-1",
        "Parameters.parameter[0]",
    ),
    (
        "ctm-1: onBehalfOf for a member who is not a practitioner (resolve())",
        CARE_TEAM,
        _set(["participant"], [{"member": {"reference": "Patient/p"}, "onBehalfOf": {"reference": "Organization/o"}}]),
        "ctm-1",
        "CareTeam.participant[0]",
    ),
    (
        "tim-1: a duration without its unit (a datatype's backbone element)",
        SERVICE_REQUEST,
        _set(["occurrenceTiming"], {"repeat": {"duration": 1}}),
        "tim-1",
        "ServiceRequest.occurrence.ofType(Timing).repeat",
    ),
]


def broken(case: tuple[str, str | dict[str, Any], Mutation, str, str]) -> dict[str, Any]:
    _, base, mutate, _, _ = case
    resource = example(base) if isinstance(base, str) else copy.deepcopy(base)
    mutate(resource)
    return resource


def _invariant_errors(issues: list[Issue]) -> set[tuple[str, tuple[str, ...]]]:
    return {
        (i.diagnostics.split("constraint ", 1)[1].split(" ", 1)[0], i.expression)
        for i in issues
        if i.severity == "error" and i.code == "invariant"
    }


def test_the_bases_of_the_mutations_are_valid(validator: Validator) -> None:
    for base in {case[1] if isinstance(case[1], str) else orjson.dumps(case[1]).decode() for case in CASES}:
        resource = example(base) if base.endswith(".json") else orjson.loads(base)
        assert not [i for i in validator.validate(resource) if i.severity == "error"], base


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_a_broken_invariant_is_an_error_naming_key_text_and_element(
    validator: Validator, case: tuple[str, str | dict[str, Any], Mutation, str, str]
) -> None:
    label, _, _, key, expression = case
    issues = validator.validate(broken(case))
    assert (key, (expression,)) in _invariant_errors(issues), [i.diagnostics for i in issues]
    assert all(i.code == "invariant" for i in issues if i.severity == "error"), label
    constraint = next(c for c in validator.invariants.constraints.values() if c.key == key)
    mine = next(i for i in issues if i.expression == (expression,) and f"constraint {key} " in i.diagnostics)
    assert constraint.human in mine.diagnostics or key == "inv-1"
    assert status_for(issues) == 422


def test_a_resource_without_narrative_gets_the_dom_6_warning_only(validator: Validator) -> None:
    study = example("ImagingStudy-example.json")
    del study["text"]
    issues = validator.validate(study)
    assert [(i.severity, i.code, i.expression) for i in issues] == [("warning", "invariant", ("ImagingStudy",))]
    assert "dom-6" in issues[0].diagnostics and "best practice" in issues[0].diagnostics


def test_invariants_of_contained_resources_are_located_inside_them(validator: Validator) -> None:
    study = example("ImagingStudy-example.json")
    _contained_patient(contact=[{"gender": "female"}])(study)
    assert _invariant_errors(validator.validate(study)) == {("pat-1", ("ImagingStudy.contained[0].contact[0]",))}


def test_local_references_in_contained_resources_resolve_in_the_container(validator: Validator) -> None:
    study = example("ImagingStudy-example.json")
    study["contained"] = [
        {"resourceType": "Patient", "id": "p1", "generalPractitioner": [{"reference": "#o1"}]},
        {"resourceType": "Organization", "id": "o1", "name": "x"},
    ]
    study["subject"] = {"reference": "#p1"}
    assert _invariant_errors(validator.validate(study)) == set()
    study["contained"][0]["generalPractitioner"] = [{"reference": "#o2"}]
    assert ("ref-1", ("ImagingStudy.contained[0].generalPractitioner[0]",)) in _invariant_errors(
        validator.validate(study)
    )


def test_no_invariant_runs_on_a_resource_of_the_wrong_shape(validator: Validator) -> None:
    study = example("ImagingStudy-example.json")
    study["subject"] = {"reference": "#nowhere"}
    study["numberOfSeries"] = "two"
    issues = validator.validate(study)
    assert {i.code for i in issues} == {"value"} and status_for(issues) == 400


# -- dates ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "order"),
    [
        ("2020-01-01", "2020-01-02", -1),
        ("2020-02", "2020-01-31", 1),
        ("2020", "2020-01-05", None),  # equal as far as the year goes: unknown
        ("2020-01-01T10:00:00Z", "2020-01-01T11:00:00+02:00", 1),
        ("2020-01-01T10:00:00.5Z", "2020-01-01T10:00:00.50Z", 0),
        ("2020-01-01T23:30:00-01:00", "2020-01-02T00:15:00Z", 1),
        ("2020-01-01T10:00:00Z", "2020-01-02", -1),
    ],
)
def test_date_comparison_follows_fhirpath(a: str, b: str, order: int | None) -> None:
    assert compare_moments(a, b) == order


# -- equivalences ----------------------------------------------------------------------------------------------------


class _Recorder(Invariants):
    """Records every evaluation the locating walk makes: (constraint, focus, scope, structure, type path)."""

    def __init__(self, base: Invariants) -> None:
        self.__dict__.update(base.__dict__)
        self.records: list[tuple[Constraint, Any, Scope, Structure | None, str]] = []

    def _report(
        self, constraint: Constraint, focus: Any, scope: Scope, struct: Any, type_path: str, *rest: Any
    ) -> None:
        self.records.append((constraint, focus, scope, struct, type_path))


@pytest.fixture(scope="module")
def inputs(validator: Validator) -> list[dict[str, Any]]:
    """The mutations first, then every official example of a sound FHIR JSON shape."""
    resources = [broken(case) for case in CASES]
    resources += [orjson.loads(p.read_bytes()) for p in sorted(EXAMPLES.glob("*.json"))]
    return [r for r in resources if not [i for i in validator.structural_issues(r) if i.code in ("structure", "value")]]


# fhirpathpy answers these differently from FHIRPath on some inputs (the compiled Python follows the specification):
# que-7 — `answer is Boolean` is false for answerBoolean (fhirpathpy does not type the choice element);
# per-1 — fhirpathpy compares the dates as text (2020-02-01 against 2020-01-31T23:00:00Z);
# dom-3 — the compiled check also takes any string equal to '#id' for a canonical/uri/url naming the contained.
FHIRPATHPY_DIFFERS = {"que-7", "per-1", "dom-3"}
PER_CHECK = 60


def test_compiled_checks_agree_with_fhirpathpy(validator: Validator, inputs: list[dict[str, Any]]) -> None:
    """Every evaluation of a compiled check on the mutations, and up to ``PER_CHECK`` on the examples (fhirpathpy
    takes about a millisecond for each)."""
    recorder = _Recorder(validator.invariants)
    for resource in inputs:
        struct = validator.schema.resource(resource["resourceType"])
        assert struct is not None
        recorder._walk(resource, struct, struct.name, Scope(resource, resource), [])
    compared, differences = 0, []
    per_check: dict[str, int] = {}
    for constraint, focus, scope, struct, type_path in recorder.records:
        check, how = recorder.checker(constraint, struct, type_path)
        if how != "python" or constraint.key in FHIRPATHPY_DIFFERS:
            continue
        per_check[constraint.id] = per_check.get(constraint.id, 0) + 1
        if per_check[constraint.id] > PER_CHECK:
            continue
        try:
            expected = invariants._fhirpath(constraint.expression, type_path)(focus, scope)
        except Exception:  # fhirpathpy cannot evaluate it on this input (rng-2 compares Quantity objects)
            continue
        compared += 1
        if check(focus, scope) != expected and not (expected is None and check(focus, scope) is True):
            differences.append((constraint.id, type_path, str(focus)[:200], check(focus, scope), expected))
    assert compared > 1000 and len(per_check) > 100
    assert differences == []


def test_clean_pass_agrees_with_the_locating_walk(validator: Validator, inputs: list[dict[str, Any]]) -> None:
    table = validator.invariants
    for resource in inputs:
        struct = validator.schema.resource(resource["resourceType"])
        assert struct is not None
        scope = Scope(resource, resource)
        issues: list[Issue] = []
        table._walk(resource, struct, struct.name, scope, issues, own=False)
        assert table._children_pass(struct)(resource, None, scope) == (issues == []), resource.get("id")


# -- bounds ----------------------------------------------------------------------------------------------------------


def test_an_invariant_past_its_bounds_is_an_error_not_a_crash(
    validator: Validator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Questionnaire of thousands of items: its fhirpathpy constraints (que-1, que-2…) go past a 0.2 s budget; the
    resource is refused with one ``too-costly`` error naming the constraint and element where the bound was met."""
    monkeypatch.setattr(invariants, "LIMITS", FhirPathLimits(max_length=10_000, max_items=1_000_000, timeout=0.2))
    items = [{"linkId": str(n), "type": "display", "text": "x"} for n in range(3000)]
    questionnaire = {"resourceType": "Questionnaire", "status": "draft", "item": items}
    started = time.perf_counter()
    issues = [i for i in validator.validate(questionnaire) if i.severity == "error"]
    assert time.perf_counter() - started < 30
    assert [i.code for i in issues] == ["too-costly"]
    assert issues[0].expression[0].startswith("Questionnaire") and "constraint que-" in issues[0].diagnostics
    assert status_for(issues) == 422


def test_many_local_references_to_many_contained_resources_stay_linear(validator: Validator) -> None:
    """ref-1 looks each ``#id`` up in a set of the root's contained ids, built once per root (not a scan per
    reference: 20,000 × 20,000 comparisons would take minutes)."""
    count = 20_000
    patients = [
        {"resourceType": "Patient", "id": f"p{n}", "link": [{"other": {"reference": f"#p{n - 1}"}, "type": "seealso"}]}
        for n in range(1, count)
    ]
    group = {
        "resourceType": "Group",
        "type": "person",
        "actual": True,
        "contained": [{"resourceType": "Patient", "id": "p0"}, *patients],
        "member": [{"entity": {"reference": f"#p{n}"}} for n in range(count)],
    }
    started = time.perf_counter()
    assert [i for i in validator.validate(group) if i.severity == "error"] == []
    assert time.perf_counter() - started < 20


@pytest.mark.parametrize(
    ("change", "where", "key"),
    [
        (lambda instance: instance.update(sopClass={"id": "x"}), "instance[2].sopClass", "ele-1"),
        (lambda instance: instance["sopClass"].update(extension=[{"url": "u"}]), "sopClass.extension[0]", "ext-1"),
        (lambda instance: instance.update(extension=[{"url": "u"}]), "instance[2].extension[0]", "ext-1"),
        (lambda instance: instance.update(_title={"id": "x"}, title=None), "instance[2]", "ele-1"),
    ],
)
def test_the_array_fast_path_reports_what_the_element_pass_would(
    validator: Validator, change: Callable[[dict[str, Any]], None], where: str, key: str
) -> None:
    """Arrays of structures without constraints of their own (ImagingStudy.series.instance) are checked by one loop
    (invariants.py ``_each``): a broken leaf, extension or primitive extension in any instance is still found."""
    study = example("ImagingStudy-example-xr.json")
    series = study["series"][0]
    series["instance"] = [dict(copy.deepcopy(series["instance"][0]), uid=f"1.2.{n}") for n in range(4)]
    assert validator.invariants.issues(study) == []
    change(series["instance"][2])
    series["instance"][2] = {name: value for name, value in series["instance"][2].items() if value is not None}
    issues = [issue for issue in validator.validate(study) if issue.severity == "error"]
    assert issues and all(issue.code == "invariant" for issue in issues), issues
    assert any(where in issue.diagnostics and key in issue.diagnostics for issue in issues), issues
