"""The compiled index extraction gives exactly the rows the original one did (frozen in search_extract_reference.py).

For every official R4 example and for a generated imaging corpus (studies of up to ~1000 instances), the
statements ``Indexer.statements`` returns must equal the reference's, rows in the same order (composite rows aside:
the reference predates them). Also a few hand-made
resources that reach the corners: choice elements, contained resources, the fhirpathpy fallback, odd JSON values.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.search.composite import TABLE_PREFIX
from fhir_imaging.search.fhirpath import evaluate
from fhir_imaging.search.index import Indexer, extract_values
from tests.conftest import SHARED
from tests.unit import search_extract_reference as oracle

generate_corpus = pytest.importorskip("bench.generate").generate_corpus
EXAMPLES = SHARED / "fhir-r4" / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.json"))
_statements = Indexer(load_registry()).statements


def index_statements(rid: int, resource: dict[str, Any], placeholder: str = "?") -> list[Any]:
    """The statements but those of composite rows (which came later: tests/unit/test_search_composite.py)."""
    return [item for item in _statements(rid, resource, placeholder) if TABLE_PREFIX not in item[0]]


def _check(resource: dict[str, Any]) -> None:
    expected = oracle.index_statements(42, resource)
    assert index_statements(42, resource) == expected
    assert index_statements(42, resource, "%s") == oracle.index_statements(42, resource, "%s")
    for param in load_registry().searchable_params(resource["resourceType"]):
        if param.type in oracle.EXTRACT:
            assert extract_values(resource, param) == oracle.extract_values(resource, param), param.code


def test_every_r4_example_indexes_as_before() -> None:
    assert len(EXAMPLE_FILES) >= 700
    mismatched = []
    for path in EXAMPLE_FILES:
        resource = orjson.loads(path.read_bytes())
        if index_statements(7, resource) != oracle.index_statements(7, resource):
            mismatched.append(path.name)
    assert mismatched == []


def test_generated_imaging_corpus_indexes_as_before() -> None:
    corpus = list(generate_corpus(60, seed=3))
    assert any(resource["resourceType"] == "ImagingStudy" for resource in corpus)
    for resource in corpus:
        _check(resource)


ODD: list[dict[str, Any]] = [
    {
        "resourceType": "Observation",
        "id": "odd",
        "status": "final",
        "code": {"coding": [{"system": "s", "code": "c", "display": "Ünïcode Dísplay"}, "junk", {"display": ""}]},
        "valueQuantity": {"value": "12.5", "unit": "mg", "code": 5},
        "component": [
            {"code": {"text": "a"}, "valueCodeableConcept": {"text": "Ok"}},
            {"code": {"text": "b"}, "valueSampledData": {"origin": {"value": 3}}},
            {"code": {"text": "c"}, "valueQuantity": {"value": True}},
        ],
        "subject": {"reference": "Patient/p1", "identifier": {"system": "x", "value": "1", "type": {"text": "T"}}},
        "effectivePeriod": {"start": "2020", "end": "not a date"},
        "identifier": [{"type": {"coding": [{"code": "MR"}, {"system": "s"}]}}, "text", 5, None],
        "focus": [{"reference": "#contained"}, {"reference": "urn:uuid:1"}, {"type": "Group"}, None],
        "meta": {"tag": [{"code": "t"}, {"code": "t"}], "profile": ["http://p", "", 3]},
    },
    {
        "resourceType": "Patient",
        "id": "p",
        "active": "yes",
        "deceasedBoolean": True,
        "telecom": [{"system": "email", "value": "A@b"}, {"system": "phone", "value": 5}, {"system": ["email"]}],
        "name": [{"family": "Müller", "given": ["Jo", "", 3]}, "plain"],
        "address": [{"line": ["1 Rue"], "city": "Paris", "use": "home"}],
        "birthDate": "1970-13",
        "contained": [{"resourceType": "Organization", "id": "o", "name": "Org"}],
    },
    {
        "resourceType": "Bundle",
        "type": "message",
        "entry": [{"resource": {"resourceType": "MessageHeader", "id": "m"}}, {"resource": {"id": "untyped"}}],
    },
    {
        "resourceType": "Group",
        "type": "person",
        "actual": True,
        "characteristic": [
            {"code": {"text": "x"}, "valueBoolean": False, "exclude": False},
            {"code": {"text": "y"}, "valueCodeableConcept": {"coding": [{"code": "z"}]}, "exclude": True},
        ],
    },
    {
        "resourceType": "ImagingStudy",
        "status": "available",
        "subject": {"reference": "http://other/fhir/Patient/9/_history/2"},
        "series": [
            {"uid": "1", "modality": {"code": "CT"}, "instance": [{"uid": "1.1", "sopClass": {"code": "x"}}, None]},
            {"uid": "2", "modality": "CT", "instance": {"uid": "2.1"}, "performer": [{"actor": "Practitioner/1"}]},
            "not a series",
        ],
    },
]


@pytest.mark.parametrize("resource", ODD, ids=lambda resource: resource["resourceType"])
def test_odd_resources_index_as_before(resource: dict[str, Any]) -> None:
    _check(resource)


def test_evaluate_still_types_nodes() -> None:
    resource = ODD[0]
    assert [(node.type, node.value) for node in evaluate(resource, "(Observation.value as Quantity)")] == [
        ("Quantity", resource["valueQuantity"])
    ]
    assert [node.type for node in evaluate(resource, "Observation.component.value")] == [
        "CodeableConcept",
        "SampledData",
        "Quantity",
    ]
    found = evaluate(resource, "Observation.subject.where(resolve() is Patient)")
    assert [(node.type, node.path) for node in found] == [("Reference", "Reference")]


def _by_table(statements: list[tuple[str, list[Any]]]) -> dict[str, list[Any]]:
    return {sql: sorted(rows, key=repr) for sql, rows in statements}


def test_rows_prepared_before_the_write_are_the_rows_of_the_write() -> None:
    """``Indexer.prepare`` (outside the write lock) plus the parameters that read what the write stamps give the
    rows the write would have computed; content other than the prepared one is not taken."""
    from fhir_imaging.fhir.resource import stamped

    indexer = Indexer(load_registry())
    corpus = list(generate_corpus(20, seed=5))
    for resource in corpus:
        prepared = indexer.prepare("the-id", resource)
        document = stamped(resource, "the-id", 3, "2026-11-30T10:00:00.123Z")
        assert indexer.usable(prepared, "the-id", resource) is prepared
        assert _by_table(indexer.statements(9, document, "?", prepared)) == _by_table(indexer.statements(9, document))
        assert indexer.usable(prepared, "other-id", resource) is None
        assert indexer.usable(prepared, "the-id", {**resource, "language": "de"}) is None


def test_no_composite_parameter_reads_what_a_write_stamps() -> None:
    """Prepared rows include every composite's (``Indexer.rows``): none may read meta.versionId/lastUpdated."""
    from fhir_imaging.search.index import LATE_FIELDS

    registry = load_registry()
    composites = [
        param
        for name in registry.resource_types
        for param in registry.searchable_params(name)
        if param.type == "composite"
    ]
    assert composites
    for param in composites:
        assert not any(field in str(param.expression) for field in LATE_FIELDS), param.code
