"""Mutation tests: broken variants of the official ImagingStudy and Patient examples are rejected at the right path.

Spec: https://hl7.org/fhir/R4/json.html, https://hl7.org/fhir/R4/imagingstudy.html, https://hl7.org/fhir/R4/patient.html.

Every mutation is generated from the example's JSON (not from the validator's tables) together with the FHIRPath
location the validator must name in ``expression``. The same cases feed the second opinion with fhir.resources in
``test_validation_second_opinion.py``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from fhir_imaging.validation import Validator, status_for
from tests.conftest import SHARED

EXAMPLES = SHARED / "fhir-r4" / "examples"

PRIMITIVES = {
    "base64Binary",
    "boolean",
    "canonical",
    "code",
    "date",
    "dateTime",
    "decimal",
    "id",
    "instant",
    "integer",
    "markdown",
    "oid",
    "positiveInt",
    "string",
    "time",
    "unsignedInt",
    "uri",
    "url",
    "uuid",
}
CHOICE_KEY = re.compile(r"(value|deceased|multipleBirth)([A-Z]\w*)")
# Elements bound to a required value set, as they occur in these examples (path suffix → an invalid code).
BOUND_CODES = (
    re.compile(r"^(ImagingStudy|Patient)\.(status|gender)$"),
    re.compile(r"\.text\.status$"),
    re.compile(r"\.(identifier|name|telecom|address)\[\d+\]\.use$"),
    re.compile(r"\.telecom\[\d+\]\.system$"),
    re.compile(r"\.address\[\d+\]\.type$"),
    re.compile(r"\.link\[\d+\]\.type$"),
)
REQUIRED = {
    "ImagingStudy": ("status", "subject"),
    "ImagingStudy.series": ("uid", "modality"),
    "ImagingStudy.series.instance": ("uid", "sopClass"),
    "Extension": ("url",),
    "Narrative": ("status", "div"),
    "Patient.link": ("other", "type"),
    "Patient.communication": ("language",),
}

Case = tuple[str, dict[str, Any], str, str]  # (label, broken resource, expected issue code, expected expression)


def example_files() -> list[str]:
    return sorted(p.name for p in EXAMPLES.glob("*.json") if p.name.startswith(("ImagingStudy-", "Patient-")))


def segment(key: str) -> str:
    """The FHIRPath step of a JSON property: ``valueString`` → ``value.ofType(string)``."""
    m = CHOICE_KEY.fullmatch(key)
    if m is None:
        return key
    type_name = m.group(2)[0].lower() + m.group(2)[1:]
    return f"{m.group(1)}.ofType({type_name if type_name in PRIMITIVES else m.group(2)})"


def nodes(value: Any, path: str, kind: str, steps: list[Any], container: Any = None) -> Iterator[tuple]:
    """(container, JSON steps, value, FHIRPath, structure kind) for every node of a resource (``_x`` skipped)."""
    yield container, steps, value, path, kind
    if isinstance(value, dict):
        for k, child in value.items():
            if k.startswith("_") or k == "resourceType":
                continue
            yield from nodes(child, f"{path}.{segment(k)}", _child_kind(kind, k), [*steps, k], value)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from nodes(item, f"{path}[{i}]", kind, [*steps, i], value)


def _child_kind(kind: str, key: str) -> str:
    if key in ("extension", "modifierExtension"):
        return "Extension"
    if key == "text" and kind in ("ImagingStudy", "Patient"):
        return "Narrative"
    if key in ("series", "instance", "link", "communication") and kind in (
        "ImagingStudy",
        "ImagingStudy.series",
        "Patient",
    ):
        return f"{kind}.{key}"
    if key == "contained":
        return "contained"
    return "other"


def mutate(resource: dict[str, Any], container_path: list[Any], change: Any) -> dict[str, Any]:
    broken = copy.deepcopy(resource)
    target = broken
    for step in container_path:
        target = target[step]
    change(target)
    return broken


def cases(resource: dict[str, Any]) -> Iterator[Case]:
    """Every broken variant of ``resource`` with the issue code and location the validator must report."""
    root = resource["resourceType"]
    for container, steps, value, path, kind in nodes(resource, root, root, []):
        parent_steps = steps[:-1]

        def setter(new: Any, k: Any = steps[-1] if steps else None) -> Any:
            return lambda c: c.__setitem__(k, new)

        if isinstance(value, dict):
            yield (
                "unknown element",
                mutate(resource, steps, lambda c: c.__setitem__("colour", "red")),
                "structure",
                f"{path}.colour",
            )
            for name in REQUIRED.get(kind, ()):
                if name in value:
                    yield (
                        f"missing {name}",
                        mutate(resource, steps, lambda c, n=name: c.pop(n)),
                        "required",
                        f"{path}.{name}",
                    )
        if container is None or (kind == "contained" and isinstance(value, dict)):
            continue
        if isinstance(value, list):
            yield "empty array", mutate(resource, parent_steps, setter([])), "structure", path
            yield "array → single", mutate(resource, parent_steps, setter(value[0])), "structure", path
            continue
        if isinstance(container, dict):
            yield "single → array", mutate(resource, parent_steps, setter([value])), "structure", path
        if isinstance(value, dict):
            yield "empty object", mutate(resource, parent_steps, setter({})), "structure", path
        elif isinstance(value, bool):
            yield "wrong type", mutate(resource, parent_steps, setter(str(value).lower())), "value", path
        elif isinstance(value, (int, float)):
            yield "wrong type", mutate(resource, parent_steps, setter(str(value))), "value", path
        elif isinstance(value, str):
            yield "wrong type", mutate(resource, parent_steps, setter(12345)), "value", path
            yield "empty string", mutate(resource, parent_steps, setter("")), "value", path
            if any(p.search(path) for p in BOUND_CODES):
                yield "bad code", mutate(resource, parent_steps, setter("no-such-code")), "code-invalid", path


def choice_cases(resource: dict[str, Any]) -> Iterator[Case]:
    """Two types of one choice element: on the resource itself (Patient.deceased[x]) and in an extension."""
    root = resource["resourceType"]
    ext = {"url": "http://example.org/fhir/StructureDefinition/x", "valueString": "a", "valueBoolean": True}
    broken = copy.deepcopy(resource)
    broken.setdefault("extension", []).append(ext)
    yield "two choices", broken, "structure", f"{root}.extension[{len(broken['extension']) - 1}].value.ofType(boolean)"
    if root == "Patient":
        broken = copy.deepcopy(resource)
        broken.update({"deceasedBoolean": False, "deceasedDateTime": "2015-02-07T13:28:17-05:00"})
        yield "two choices", broken, "structure", "Patient.deceased.ofType(dateTime)"


def all_cases(name: str) -> list[Case]:
    resource = orjson.loads((EXAMPLES / name).read_bytes())
    return [*cases(resource), *choice_cases(resource)]


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator.load()


@pytest.mark.parametrize("name", example_files())
def test_every_mutation_is_rejected_at_its_path(validator: Validator, name: str) -> None:
    missed = []
    kinds = set()
    for label, broken, code, expression in all_cases(name):
        kinds.add(label)
        issues = validator.validate(broken)
        errors = [i for i in issues if i.severity == "error"]
        if not any(i.code == code and expression in i.expression for i in errors):
            missed.append((label, expression, [(i.code, i.expression) for i in errors]))
        elif status_for(issues) != (422 if code in ("required", "code-invalid") else 400):
            missed.append((label, expression, "status", status_for(issues)))
    assert not missed, missed[:5]
    assert {"unknown element", "wrong type", "empty string", "empty array", "single → array", "two choices"} <= kinds


def test_imaging_study_mutations_cover_the_required_elements(validator: Validator) -> None:
    expressions = {e for label, _, _, e in all_cases("ImagingStudy-example.json") if label.startswith("missing")}
    assert {
        "ImagingStudy.status",
        "ImagingStudy.subject",
        "ImagingStudy.series[0].uid",
        "ImagingStudy.series[0].modality",
        "ImagingStudy.series[0].instance[0].uid",
        "ImagingStudy.series[0].instance[0].sopClass",
    } <= expressions
    labels = {label for label, *_ in all_cases("ImagingStudy-example.json")}
    assert {"bad code", "array → single", "empty object"} <= labels


def test_unknown_element_message_names_its_path(validator: Validator) -> None:
    study = orjson.loads((EXAMPLES / "ImagingStudy-example-xr.json").read_bytes())
    study["series"][0]["colour"] = "red"
    study["series"][0]["instance"][1]["uid"] = 7
    issues = validator.validate(study)
    assert sorted((i.code, i.expression) for i in issues if i.severity == "error") == [
        ("structure", ("ImagingStudy.series[0].colour",)),
        ("value", ("ImagingStudy.series[0].instance[1].uid",)),
    ]
    assert any("'colour'" in i.diagnostics and "ImagingStudy.series[0]" in i.diagnostics for i in issues)
