"""All 710 official R4 examples validate without error; the shipped data is what the derive script produces.

Spec: https://hl7.org/fhir/R4/downloads.html (examples) and https://hl7.org/fhir/R4/validation.html.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import orjson
import pytest

from fhir_imaging.validation import Validator
from tests.conftest import SHARED

REPO = Path(__file__).parents[2]
EXAMPLES = SHARED / "fhir-r4" / "examples"

# HL7's own examples with genuine defects against the R4 definitions: file → the exact errors expected.
KNOWN_DEFECTS = {
    # The FHIR core package's ImplementationGuide has neither `name` nor `status`, both 1..1 in R4.
    "ig-r4.json": [("required", ("ImplementationGuide.name",)), ("required", ("ImplementationGuide.status",))],
    # Its nested `display` items have no `linkId` (Questionnaire.item.linkId is 1..1, also through contentReference);
    # and it uses questionnaire-allowedResource, an extension in FHIR's namespace that R4 does not define.
    "Questionnaire-qs1.json": "required Questionnaire.item[*].linkId",
}
UNDEFINED_EXTENSION = "questionnaire-allowedResource"


def example_names() -> list[str]:
    names = sorted(p.name for p in EXAMPLES.glob("*.json"))
    assert len(names) == 710, f"the R4 examples are missing from {EXAMPLES}"
    return names


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator.load()


def test_there_are_710_examples() -> None:
    assert len(example_names()) == 710


@pytest.mark.parametrize("name", example_names())
def test_official_example_is_valid(validator: Validator, name: str) -> None:
    issues = validator.validate(orjson.loads((EXAMPLES / name).read_bytes()))
    undefined = [i for i in issues if i.code == "extension" and UNDEFINED_EXTENSION in i.diagnostics]
    issues = [i for i in issues if i not in undefined]
    found = [(i.code, i.expression) for i in issues if i.severity in ("error", "fatal")]
    expected = KNOWN_DEFECTS.get(name, [])
    if isinstance(expected, str):
        assert len(undefined) == 5
        assert found and all(
            code == "required" and expr[0].startswith("Questionnaire.item[") and expr[0].endswith("].linkId")
            for code, expr in found
        ), found
    else:
        assert not undefined
        assert sorted(found) == expected, [i.diagnostics for i in issues]


def test_load_is_fast() -> None:
    """About 25 ms here; the best of three, so that a moment of load on a busy machine does not decide."""
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        Validator.load()
        timings.append(time.perf_counter() - start)
    assert min(timings) < 0.3


def test_shipped_data_equals_derived_data(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("derive_validation", REPO / "tools" / "derive_validation.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    derived = module.derive(SHARED / "fhir-r4")
    shipped = REPO / "fhir_imaging" / "validation" / "data"
    assert sorted(derived) == sorted(p.name for p in shipped.glob("*.json"))
    for name, data in derived.items():
        assert (shipped / name).read_bytes() == data, f"{name} is stale: run python tools/derive_validation.py"
