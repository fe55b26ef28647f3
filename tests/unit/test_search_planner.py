"""The planner's range and sort-window decisions (search/planner.py): which date filters become one range, which
filters may bound a sort window, and the SQL they make. Results are checked against the oracle in
tests/search/test_differential.py; here, the plans."""

from __future__ import annotations

import pytest

from fhir_imaging.fhir.cardinality import single_point
from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.search.planner import Planner, combine_ranges, sort_bounds
from fhir_imaging.search.query import Clause, parse_search
from fhir_imaging.search.sql import render
from fhir_imaging.search.types.date import DateRange, DateValue
from fhir_imaging.storage.dialect import SQLITE

REGISTRY = load_registry()


def _filters(resource_type: str, query: list[tuple[str, str]]) -> tuple[object, ...]:
    return parse_search(REGISTRY, (resource_type,), query).filters


@pytest.mark.parametrize(
    ("resource_type", "expression", "single"),
    [
        ("ImagingStudy", "ImagingStudy.started", True),  # dateTime, 0..1
        ("Patient", "Patient.birthDate", True),  # date, 0..1
        ("ImagingStudy", "Resource.meta.lastUpdated", True),  # instant, through Meta
        ("Encounter", "Encounter.period", False),  # a Period: its end may precede its start
        ("Encounter", "Encounter.location.period", False),  # location repeats
        ("ImagingStudy", "ImagingStudy.series.started", False),  # series repeats
        ("Patient", "(Patient.deceased as dateTime)", False),  # not a plain path
        ("Observation", "Observation.effective", False),  # a choice
        ("Patient", "Patient.birthDate | Patient.deceased", False),
        ("Patient", None, False),
    ],
)
def test_single_point_comes_from_the_definitions(resource_type: str, expression: str | None, single: bool) -> None:
    assert single_point(resource_type, expression) is single


def test_a_lower_and_an_upper_bound_of_a_single_point_become_one_range() -> None:
    filters = _filters("ImagingStudy", [("started", "ge2024-01-01"), ("status", "available"), ("started", "lt2025")])
    combined = combine_ranges(filters)  # type: ignore[arg-type]
    assert len(combined) == 2
    first = combined[0]
    assert isinstance(first, Clause) and first.code == "started"
    (value,) = first.values
    assert isinstance(value, DateRange)
    assert (value.lower.prefix, value.upper.prefix) == ("ge", "lt")
    assert combined[1] == filters[1]


def test_the_upper_bound_may_come_first() -> None:
    filters = _filters("ImagingStudy", [("started", "le2025"), ("started", "gt2024")])
    (combined,) = combine_ranges(filters)  # type: ignore[arg-type]
    assert isinstance(combined, Clause)
    (value,) = combined.values
    assert isinstance(value, DateRange) and (value.lower.prefix, value.upper.prefix) == ("gt", "le")


@pytest.mark.parametrize(
    ("resource_type", "query"),
    [
        ("Encounter", [("date", "ge2024"), ("date", "lt2025")]),  # a Period: not a point
        ("ImagingStudy", [("started", "ge2024"), ("started", "ge2025")]),  # two lower bounds
        ("ImagingStudy", [("started", "ge2024,ge2023"), ("started", "lt2025")]),  # an OR of values
        ("ImagingStudy", [("started", "eq2024"), ("started", "lt2025")]),  # eq is not a bound
        ("ImagingStudy", [("started", "ap2024"), ("started", "lt2025")]),
        ("ImagingStudy", [("started", "ge2024"), ("started:missing", "false")]),
        ("ImagingStudy", [("started", "ge2024"), ("_lastUpdated", "lt2025")]),  # two parameters
        ("ImagingStudy", [("started", "ge2024")]),
    ],
)
def test_other_filters_stay_as_they_are(resource_type: str, query: list[tuple[str, str]]) -> None:
    filters = _filters(resource_type, query)
    assert combine_ranges(filters) == filters  # type: ignore[arg-type]


def test_three_bounds_make_one_range_and_a_filter() -> None:
    filters = _filters("ImagingStudy", [("started", "ge2020"), ("started", "lt2025"), ("started", "gt2021")])
    combined = combine_ranges(filters)  # type: ignore[arg-type]
    assert len(combined) == 2 and combined[1] == filters[2]


def test_a_range_is_two_index_ranges_of_disjoint_rows() -> None:
    (combined,) = combine_ranges(_filters("ImagingStudy", [("started", "ge2024"), ("started", "lt2025")]))  # type: ignore[arg-type]
    assert isinstance(combined, Clause)
    text, params = render(Planner(("",), SQLITE).clause(combined, ("ImagingStudy",)), SQLITE)
    assert text.count("SELECT") == 2 and " UNION ALL " in text
    lower = DateValue("ge", 1704067200000000, 1735689599999999)
    start, end = lower.lo, 1735689600000000 - 1
    inside = text.split(" UNION ALL ")[0]
    assert "lo >= ?" in inside and "lo <= ?" in inside and start in params and end in params
    before = text.split(" UNION ALL ")[1]
    assert "lo < ?" in before and "hi > ?" in before


def test_sort_bounds_are_the_single_point_filters_on_the_sort_parameter() -> None:
    request = parse_search(
        REGISTRY,
        ("ImagingStudy",),
        [("started", "ge2024"), ("started", "lt2025"), ("status", "available"), ("_sort", "-started")],
    )
    assert sort_bounds(request.filters, request.sort[0]) == request.filters[:2]
    by_status = parse_search(REGISTRY, ("ImagingStudy",), [("started", "ge2024"), ("_sort", "status")])
    assert sort_bounds(by_status.filters, by_status.sort[0]) == ()  # status is a token: no bounds
    periods = parse_search(REGISTRY, ("Encounter",), [("date", "ge2024"), ("_sort", "date")])
    assert sort_bounds(periods.filters, periods.sort[0]) == ()  # several values possible


def test_a_tie_page_walks_rids_and_checks_the_key() -> None:
    request = parse_search(REGISTRY, ("ImagingStudy",), [("_sort", "status"), ("_count", "25")])
    text, params = render(Planner(("",), SQLITE).tie_page(request, "available", 42), SQLITE)
    assert text.endswith("ORDER BY r.rid LIMIT 26")
    assert "r.rid > ?" in text and 42 in params and "available" in params
