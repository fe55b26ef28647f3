"""Parsing search values and parameters (search/query.py, search/types/*): tables of text → typed value."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_imaging.fhir.outcome import BadRequest
from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.search import sql
from fhir_imaging.search.query import Chain, Clause, Has, parse_search
from fhir_imaging.search.types.base import InvalidValue, split_escaped, unescape
from fhir_imaging.search.types.date import parse_date_value, parse_interval
from fhir_imaging.search.types.number import parse_number
from fhir_imaging.search.types.reference import ReferenceValue, parse_reference
from fhir_imaging.search.types.token import TokenValue, parse_token
from fhir_imaging.storage.dialect import POSTGRES, SQLITE

REGISTRY = load_registry()
US = 1_000_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CT", TokenValue(None, "CT")),
        (
            "http://dicom.nema.org/resources/ontology/DCM|CT",
            TokenValue("http://dicom.nema.org/resources/ontology/DCM", "CT"),
        ),
        ("|CT", TokenValue("", "CT")),
        ("urn:sys|", TokenValue("urn:sys", None)),
        (r"a\|b", TokenValue(None, "a|b")),
        (r"s|a\,b", TokenValue("s", "a,b")),
    ],
)
def test_parse_token(text: str, expected: TokenValue) -> None:
    assert parse_token(text) == expected


@pytest.mark.parametrize(
    ("text", "start", "end_exclusive"),
    [
        ("2024", "2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z"),
        ("2024-02", "2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z"),
        ("2024-12", "2024-12-01T00:00:00Z", "2025-01-01T00:00:00Z"),
        ("2024-06-15", "2024-06-15T00:00:00Z", "2024-06-16T00:00:00Z"),
        ("2024-06-15T10:30Z", "2024-06-15T10:30:00Z", "2024-06-15T10:31:00Z"),
        ("2024-06-15T10:30:15Z", "2024-06-15T10:30:15Z", "2024-06-15T10:30:16Z"),
        ("2024-06-15T10:30:15.5Z", "2024-06-15T10:30:15.5Z", "2024-06-15T10:30:15.6Z"),
        ("2024-06-15T10:30:15.123Z", "2024-06-15T10:30:15.123Z", "2024-06-15T10:30:15.124Z"),
        ("2024-06-15T12:30:15+02:00", "2024-06-15T10:30:15Z", "2024-06-15T10:30:16Z"),
        ("2024-06-15T10:30:15", "2024-06-15T10:30:15Z", "2024-06-15T10:30:16Z"),  # no zone: UTC
    ],
)
def test_date_interval_is_set_by_precision(text: str, start: str, end_exclusive: str) -> None:
    lo, hi = parse_interval(text)
    assert lo == parse_interval(start)[0]
    assert hi == parse_interval(end_exclusive)[0] - 1


@pytest.mark.parametrize(
    ("text", "prefix"), [("2024", "eq"), ("ge2024", "ge"), ("sa2024-01", "sa"), ("ap2024", "ap"), ("ne2024", "ne")]
)
def test_date_prefixes(text: str, prefix: str) -> None:
    assert parse_date_value(text).prefix == prefix


@pytest.mark.parametrize("text", ["garbage", "2024-13", "2024-02-30", "24", "xx2024", "2024-01-01T25:00Z", ""])
def test_bad_dates(text: str) -> None:
    with pytest.raises(InvalidValue):
        parse_date_value(text)


@pytest.mark.parametrize(
    ("text", "lo", "hi"),
    [("100", 99.5, 100.5), ("100.00", 99.995, 100.005), ("1e2", 50, 150), ("0.1", 0.05, 0.15), ("-3", -3.5, -2.5)],
)
def test_number_precision_range(text: str, lo: float, hi: float) -> None:
    value = parse_number(text, "eq")
    assert value.lo == pytest.approx(lo) and value.hi == pytest.approx(hi)


@pytest.mark.parametrize(
    ("text", "targets", "expected"),
    [
        ("Patient/123", ("Patient",), ReferenceValue(("Patient",), "123", None, "Patient/123")),
        ("123", ("Patient", "Group"), ReferenceValue(("Patient", "Group"), "123", None, "123")),
        ("Patient/123/_history/2", (), ReferenceValue(("Patient",), "123", None, "Patient/123")),
        (
            "http://x.org/fhir/Patient/1",
            (),
            ReferenceValue(("Patient",), "1", "http://x.org/fhir", "http://x.org/fhir/Patient/1"),
        ),
        ("urn:uuid:abc", (), ReferenceValue((), None, "?", "urn:uuid:abc")),
    ],
)
def test_parse_reference(text: str, targets: tuple[str, ...], expected: ReferenceValue) -> None:
    assert parse_reference(text, targets) == expected


def test_escaping() -> None:
    assert split_escaped(r"a\,b,c", ",") == [r"a\,b", "c"]
    assert unescape(r"a\,b\|c\$d\\e") == r"a,b|c$d\e"


def _parse(query: list[tuple[str, str]], resource_type: str = "ImagingStudy", **options: Any) -> Any:
    return parse_search(REGISTRY, (resource_type,), query, **options)


def test_comma_is_or_and_repeat_is_and() -> None:
    search = _parse([("status", "registered,cancelled"), ("modality", "CT"), ("modality", "MR")])
    assert [len(item.values) for item in search.filters] == [2, 1, 1]
    assert all(isinstance(item, Clause) for item in search.filters)


def test_chain_and_has_parse() -> None:
    (chain,) = _parse([("subject:Patient.name", "peter")]).filters
    assert isinstance(chain, Chain) and chain.target_types == ("Patient",)
    (has,) = _parse([("_has:ImagingStudy:patient:modality", "CT")], "Patient").filters
    assert isinstance(has, Has) and has.source == "ImagingStudy" and isinstance(has.inner, Clause)


def test_unknown_parameters_lenient_and_strict() -> None:
    search = _parse([("foo", "1"), ("status", "available")])
    assert search.unknown == ("foo",) and search.performed == (("status", "available"),)
    with pytest.raises(BadRequest) as caught:
        _parse([("foo", "1")], strict=True)
    assert caught.value.issues[0].expression == ("foo",)


def test_count_and_sort() -> None:
    search = _parse([("_count", "5000"), ("_sort", "-started,_id")], max_count=1000)
    assert search.count == 1000
    assert [(key.code, key.descending) for key in search.sort] == [("started", True), ("_id", False)]


def test_rendered_sql_binds_every_value() -> None:
    select = sql.Select(
        ((sql.Column("r", "rid"), None),),
        (("resource", "r"),),
        sql.and_(sql.eq(sql.Column("r", "id"), "x' OR 1=1"), sql.InValues(sql.Column("r", "type"), ("A", "B"))),
    )
    text, params = sql.render(select, SQLITE)
    assert text == "SELECT r.rid FROM resource r WHERE (r.id = ? AND r.type IN (?, ?))"
    assert params == ["x' OR 1=1", "A", "B"]
    assert sql.render(select, POSTGRES)[0].count("%s") == 3
