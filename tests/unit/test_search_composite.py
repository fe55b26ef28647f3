"""Composite search parameters (search/composite.py): parsing, extraction per element, SQL compilation.

Spec: https://hl7.org/fhir/R4/search.html#composite
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from fhir_imaging.fhir.outcome import BadRequest
from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.search import sql
from fhir_imaging.search.composite import COMPOSITE_TABLES, CompositeValue, element_extractor, parse_composite
from fhir_imaging.search.index import Indexer, compile_extractor, delete_statements
from fhir_imaging.search.planner import Planner
from fhir_imaging.search.query import Clause, parse_search
from fhir_imaging.search.types.base import InvalidValue
from fhir_imaging.search.types.date import DateValue
from fhir_imaging.search.types.number import NumberValue
from fhir_imaging.search.types.quantity import QuantityValue
from fhir_imaging.search.types.reference import ReferenceValue
from fhir_imaging.search.types.string import StringValue
from fhir_imaging.search.types.token import TokenValue
from fhir_imaging.storage.dialect import SQLITE
from tests.conftest import SHARED

REGISTRY = load_registry()
OBSERVATION = REGISTRY.params_for("Observation")
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def param(resource_type: str, code: str) -> Any:
    return REGISTRY.params_for(resource_type)[code]


@pytest.mark.parametrize(
    ("resource_type", "code", "text", "parts"),
    [
        (
            "Observation",
            "code-value-quantity",
            "http://loinc.org|8480-6$gt100|http://unitsofmeasure.org|mm[Hg]",
            (TokenValue(LOINC, "8480-6"), QuantityValue(NumberValue("gt", 100.0, 99.5, 100.5), UCUM, "mm[Hg]")),
        ),
        (
            "Observation",
            "component-code-value-quantity",
            "8480-6$le5.4||mg",
            (TokenValue(None, "8480-6"), QuantityValue(NumberValue("le", 5.4, 5.35, 5.45), None, "mg")),
        ),
        ("Observation", "code-value-string", "|x$Ab\\$c", (TokenValue("", "x"), StringValue("Ab$c", "ab$c"))),
        ("Observation", "code-value-concept", "a$urn:s|", (TokenValue(None, "a"), TokenValue("urn:s", None))),
        ("DocumentReference", "relationship", "DocumentReference/1$replaces", None),
        ("MolecularSequence", "chromosome-window-coordinate", "1$gt10$lt20", None),
    ],
)
def test_a_value_is_one_value_per_component_each_parsed_by_its_type(
    resource_type: str, code: str, text: str, parts: tuple[Any, ...] | None
) -> None:
    composite = param(resource_type, code)
    value = parse_composite(text, composite)
    assert value.kinds == tuple(part.type for part in composite.parts)
    if parts is not None:
        assert value.parts == parts


def test_a_date_component_takes_its_prefixes() -> None:
    value = parse_composite("8480-6$ge2024-06", param("Observation", "code-value-date"))
    assert isinstance(value.parts[1], DateValue) and value.parts[1].prefix == "ge"


def test_a_reference_component_is_parsed_as_a_reference() -> None:
    value = parse_composite("DocumentReference/1$replaces", param("DocumentReference", "relationship"))
    assert value.kinds == ("reference", "token")  # the order of the definition's components
    assert isinstance(value.parts[0], ReferenceValue) and value.parts[0].id == "1"
    assert value.parts[1] == TokenValue(None, "replaces")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("8480-6", "has 1 component(s) and code-value-quantity takes 2"),
        ("8480-6$1$2", "has 3 component(s)"),
        ("$100", "component 1 (token)"),
        ("8480-6$", "component 2 (quantity)"),
        ("8480-6$abc", "component 2 (quantity) of '8480-6$abc'"),
        ("8480-6$xx100", "component 2 (quantity)"),
        ("|$100", "component 1 (token)"),
    ],
)
def test_malformed_values_say_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(InvalidValue, match=why.replace("(", r"\(").replace(")", r"\)").replace("$", r"\$")):
        parse_composite(text, param("Observation", "code-value-quantity"))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("code-value-quantity", "8480-6"),
        ("code-value-quantity", "8480-6$gt100,8480-6"),
        ("code-value-quantity:exact", "8480-6$100"),
        ("code-value-quantity:not", "8480-6$100"),
        ("code-value-quantity:missing", "maybe"),
    ],
)
def test_the_parser_answers_400_naming_the_parameter(name: str, value: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_search(REGISTRY, ("Observation",), [(name, value)])
    assert caught.value.issues[0].expression == (name,)


def test_comma_is_or_between_whole_values_and_missing_is_accepted() -> None:
    request = parse_search(
        REGISTRY, ("Observation",), [("code-value-quantity", "a$1,b$2"), ("code-value-quantity:missing", "true")]
    )
    first, second = request.filters
    assert isinstance(first, Clause) and len(first.values) == 2
    assert all(isinstance(value, CompositeValue) for value in first.values)
    assert isinstance(second, Clause) and second.missing is True and second.table == "spidx_composite_token"


def test_composites_are_not_sortable() -> None:
    with pytest.raises(BadRequest, match="composite"):
        parse_search(REGISTRY, ("Observation",), [("_sort", "code-value-quantity")])


# -- extraction -----------------------------------------------------------------------------------------------------


def component(code: str, value: float, unit: str = "mm[Hg]") -> dict[str, Any]:
    return {
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "valueQuantity": {"value": value, "unit": "mmHg", "system": UCUM, "code": unit},
    }


BLOOD_PRESSURE = {
    "resourceType": "Observation",
    "id": "bp",
    "status": "final",
    "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
    "component": [component("8480-6", 120), component("8462-4", 80), {"code": {"text": "no value"}}],
}


def test_each_component_element_keeps_its_own_values() -> None:
    elements = element_extractor(param("Observation", "component-code-value-quantity"))(BLOOD_PRESSURE)
    assert elements == [
        ([(LOINC, "8480-6", None)], [(UCUM, "mm[Hg]", "mmHg", 120.0, 120.0)]),
        ([(LOINC, "8462-4", None)], [(UCUM, "mm[Hg]", "mmHg", 80.0, 80.0)]),
    ]  # the third component has no value: no element


def test_the_resource_itself_is_the_element_of_code_value_quantity() -> None:
    observation = {**BLOOD_PRESSURE, "valueQuantity": {"value": 5, "unit": "mg"}}
    elements = element_extractor(param("Observation", "code-value-quantity"))(observation)
    assert elements == [([(LOINC, "85354-9", None)], [(None, None, "mg", 5.0, 5.0)])]
    combo = element_extractor(param("Observation", "combo-code-value-quantity"))(observation)
    assert len(combo) == 3  # the Observation, then its two components with a value


def test_a_resource_variable_component_reads_the_resource() -> None:
    sequence = {
        "resourceType": "MolecularSequence",
        "coordinateSystem": 0,
        "referenceSeq": {"chromosome": {"coding": [{"code": "1"}]}},
        "variant": [{"start": 10, "end": 12}, {"start": 30}],
    }
    elements = element_extractor(param("MolecularSequence", "chromosome-variant-coordinate"))(sequence)
    assert [element[1] for element in elements] == [[(10.0, 10.0)]]  # the second variant has no end


def test_index_rows_carry_the_element_and_component_positions() -> None:
    statements = dict(Indexer(REGISTRY).statements(7, BLOOD_PRESSURE))
    rows = [
        row
        for statement, rows in statements.items()
        if "spidx_composite_quantity" in statement
        for row in rows
        if row[2] == "component-code-value-quantity"
    ]
    assert rows == [
        (7, "Observation", "component-code-value-quantity", 0, 1, UCUM, "mm[Hg]", "mmHg", 120.0, 120.0),
        (7, "Observation", "component-code-value-quantity", 1, 1, UCUM, "mm[Hg]", "mmHg", 80.0, 80.0),
    ]


EXAMPLES = sorted((SHARED / "fhir-r4" / "examples").glob("*.json"))


def test_on_every_r4_example_each_element_holds_values_its_component_paths_find() -> None:
    """Every composite of every R4 example extracts without error, and each element's component values are among
    those the absolute path (composite expression . component expression) finds in the whole resource."""
    seen = set()
    for path in EXAMPLES:
        resource = orjson.loads(path.read_bytes())
        for composite in REGISTRY.searchable_params(resource["resourceType"]):
            if composite.type != "composite":
                continue
            elements = element_extractor(composite)(resource)
            if elements:
                seen.add(composite.code)
            for number, part in enumerate(composite.parts):
                assert composite.expression is not None and part.expression is not None
                if part.expression.startswith("%resource."):
                    absolute = resource["resourceType"] + part.expression[len("%resource") :]
                else:
                    absolute = " | ".join(
                        f"{head}.{tail.strip()}"
                        for head in composite.expression.split(" | ")
                        for tail in part.expression.split(" | ")
                    )
                rows = compile_extractor(absolute, resource["resourceType"], part.type)(resource)
                found = {columns for kind, sub, columns in rows if kind == part.type and not sub}
                for element in elements:
                    assert set(element[number]) <= found, (path.name, composite.code)
    assert {"component-code-value-quantity", "code-value-quantity", "combo-code-value-concept"} <= seen
    assert {"characteristic-value", "context-type-value", "context-type-quantity"} <= seen


# -- compilation -----------------------------------------------------------------------------------------------------


def test_both_components_are_compared_on_rows_of_the_same_element() -> None:
    request = parse_search(REGISTRY, ("Observation",), [("component-code-value-quantity", "8480-6$gt100")])
    text, params = sql.render(Planner(("",), SQLITE).page(request, None, False), SQLITE)
    assert "spidx_composite_token i0, spidx_composite_quantity i1" in text
    assert "i1.rid = i0.rid" in text and "i1.element = i0.element" in text
    assert "i0.component = ?" in text and "i1.component = ?" in text
    assert "8480-6" in params and 100.0 in params


def test_only_types_with_composites_delete_composite_rows() -> None:
    indexer = Indexer(REGISTRY)
    assert indexer.composites("ImagingStudy") == () and indexer.composites("Patient") == ()
    assert len(indexer.composites("Observation")) == 8
    plain, every = delete_statements("?", False), delete_statements("?", True)
    assert not any("spidx_composite_" in statement for statement in plain)
    assert {statement for statement in every if "spidx_composite_" in statement} == {
        f"DELETE FROM {table} WHERE rid = ?" for table in COMPOSITE_TABLES.values()
    }
    assert set(plain) < set(every)


def test_a_new_composite_in_the_definitions_works_without_code() -> None:
    """A composite added as data (our additions' format), one component outside the compiled FHIRPath subset
    (fhirpathpy evaluates it on the element, typed by its path): parsed, extracted per element, matched."""
    from fhir_imaging.fhir.registry import _read, build_registry
    from fhir_imaging.search.match import Corpus, search

    addition = {
        "url": "urn:example:Observation-component-code-high-value",
        "code": "component-code-high-value",
        "base": ["Observation"],
        "type": "composite",
        "expression": "Observation.component",
        "component": [
            {"definition": "http://hl7.org/fhir/SearchParameter/Observation-component-code", "expression": "code"},
            {
                "definition": "http://hl7.org/fhir/SearchParameter/Observation-component-value-quantity",
                "expression": "value.ofType(Quantity).where(value > 100)",
            },
        ],
    }
    registry = build_registry(
        _read("resource-types.json"),
        _read("search-parameters.json"),
        [*_read("search-parameters-extra.json"), addition],
        _read("compartment-patient.json"),
    )
    composite = registry.params_for("Observation")["component-code-high-value"]
    assert composite.searchable
    elements = element_extractor(composite)(BLOOD_PRESSURE)
    assert elements == [([(LOINC, "8480-6", None)], [(UCUM, "mm[Hg]", "mmHg", 120.0, 120.0)])]  # 80 is not > 100
    request = parse_search(registry, ("Observation",), [("component-code-high-value", "8480-6$ge0")])
    assert [resource["id"] for resource in search(Corpus(registry, [BLOOD_PRESSURE]), request)] == ["bp"]
    request = parse_search(registry, ("Observation",), [("component-code-high-value", "8462-4$ge0")])
    assert search(Corpus(registry, [BLOOD_PRESSURE]), request) == []
    statements = dict(Indexer(registry).statements(3, BLOOD_PRESSURE))
    rows = [row for rows in statements.values() for row in rows if row[2] == "component-code-high-value"]
    assert len(rows) == 2  # one element, two components
