"""Broad filters (search/execute.py, planner.py): a filter whose probe reaches the threshold is checked as
``EXISTS`` per resource row, so a page in rid order stops after ``count + 1`` matches; the pages, forward and
backward, stay exactly those of the ``IN`` form.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from fhir_imaging.config import Settings
from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.search.execute import WALK_ROWS, broad_filters, run_search
from fhir_imaging.search.planner import Planner
from fhir_imaging.search.query import SearchRequest, parse_search
from fhir_imaging.search.sql import render
from fhir_imaging.storage import open_store
from fhir_imaging.storage.base import Store
from fhir_imaging.storage.dialect import SQLITE

REGISTRY = load_registry()
BASES = ("", "http://testserver/baseR4")
THRESHOLD = 10


def _study(number: int) -> dict[str, Any]:
    """30 studies: 24 available, every fifth cancelled; two of patient p0; started one month apart from 2023."""
    return {
        "resourceType": "ImagingStudy",
        "id": f"s{number:02d}",
        "status": "cancelled" if number % 5 == 4 else "available",
        "subject": {"reference": f"Patient/p{number % 15}"},
        "started": f"{2023 + number // 12}-{1 + number % 12:02d}-01T10:00:00Z",
        "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}],
    }


STUDIES = [_study(number) for number in range(30)]


@pytest.fixture
def store(database: str) -> Iterator[Store]:
    opened = open_store(Settings(database=database, sqlite_synchronous="off", pool_size=2), REGISTRY)
    for study in STUDIES:
        opened.update("ImagingStudy", str(study["id"]), study)
    yield opened
    opened.close()


def _request(query: list[tuple[str, str]]) -> SearchRequest:
    return parse_search(REGISTRY, ("ImagingStudy",), query)


@pytest.mark.parametrize(
    ("query", "broad"),
    [
        ([("status", "available")], {0}),  # 24 rows
        ([("status", "cancelled")], set()),  # 6
        ([("patient", "p0"), ("status", "available")], {1}),
        ([("started", "ge2023-01-01"), ("modality", "CT,MR")], {0, 1}),
        ([("started:missing", "false")], {0}),
        ([("status:not", "cancelled")], set()),  # negated: never
        ([("status:missing", "true")], set()),
        ([("patient.gender", "male")], set()),  # chains: never
        ([("_id", "s01,s02")], set()),
        ([("status", "available"), ("_sort", "-started")], {0}),  # inside a sort window, broad is EXISTS too
    ],
)
def test_a_filter_is_broad_when_its_probe_reaches_the_threshold(
    store: Store, query: list[tuple[str, str]], broad: set[int]
) -> None:
    planner = Planner(BASES, store.dialect)
    assert broad_filters(store, planner, _request(query), THRESHOLD) == broad
    assert broad_filters(store, planner, _request(query), None) == frozenset()


def test_a_broad_filter_is_an_exists_on_the_resource_row_and_a_narrow_one_an_in() -> None:
    request = _request([("patient", "p0"), ("status", "available")])
    text, params = render(Planner(BASES, SQLITE).page(request, None, False, frozenset({1})), SQLITE)
    assert "r.rid IN (SELECT i0.rid FROM spidx_reference i0 WHERE (i0.type = ? AND i0.param = ?" in text
    # no type on the index row: SQLite would rather walk (type, param, code…) than (rid, param)
    assert "EXISTS (SELECT i1.rid FROM spidx_token i1 WHERE (i1.rid = r.rid AND i1.param = ? AND i1.code = ?))" in text
    assert params[-2:] == ["status", "available"]
    select = Planner(BASES, SQLITE).probe(request.filters[1], request.types, 7)
    assert select is not None
    probe, _ = render(select, SQLITE)
    assert probe.startswith("SELECT count(*) FROM (SELECT i0.rid FROM spidx_token i0 WHERE")
    assert probe.endswith("LIMIT 7) b1")


def _pages(
    store: Store, query: list[tuple[str, str]], broad_rows: int | None, walk_rows: int = WALK_ROWS
) -> tuple[list[str], list[str]]:
    """The ids following ``next`` to the end, then those following ``previous`` back to the start."""
    forward: list[str] = []
    backward: list[str] = []
    cursor: str | None = None
    last = None
    for _ in range(30):
        page = run_search(store, _request([*query, ("_count", "4"), *([("_cursor", cursor)] if cursor else [])]),
                          BASES, broad_rows, walk_rows)  # fmt: skip
        forward += [hit.id for hit in page.matches]
        last, cursor = page, page.next_cursor
        if cursor is None:
            break
    cursor = last.previous_cursor if last else None
    while cursor is not None:
        page = run_search(store, _request([*query, ("_count", "4"), ("_cursor", cursor)]), BASES, broad_rows, walk_rows)
        backward = [hit.id for hit in page.matches] + backward
        cursor = page.previous_cursor
    return forward, backward


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ([("status", "available")], [s["id"] for s in STUDIES if s["status"] == "available"]),
        ([("started", "ge2024-06-01")], [s["id"] for s in STUDIES if str(s["started"]) >= "2024-06"]),
        ([("status", "available"), ("started", "lt2024-06-01"), ("modality", "CT")],
         [s["id"] for s in STUDIES if s["status"] == "available" and str(s["started"]) < "2024-06"]),
        ([("patient", "p1"), ("status", "available")], ["s01", "s16"]),
        ([("status", "available"), ("status:not", "available")], []),
    ],
)  # fmt: skip
@pytest.mark.parametrize(("broad_rows", "walk_rows"), [(1, WALK_ROWS), (THRESHOLD, WALK_ROWS), (None, WALK_ROWS),
                                                     (1, 3), (1, 6), (1, 12)])  # fmt: skip
def test_broad_filters_page_forward_and_back_like_narrow_ones(
    store: Store, query: list[tuple[str, str]], expected: list[str], broad_rows: int | None, walk_rows: int
) -> None:
    forward, backward = _pages(store, query, broad_rows, walk_rows)
    assert forward == expected
    assert backward == expected[: len(expected) - (len(expected) % 4 or 4)] if expected else backward == []


def test_a_broad_page_does_not_list_every_match_first(tmp_path: Any) -> None:
    """On SQLite, ``IN`` builds the whole list before the page's LIMIT applies (``LIST SUBQUERY``)."""
    url = f"sqlite:///{tmp_path / 'plan.db'}"
    store = open_store(Settings(database=url, sqlite_synchronous="off"), REGISTRY)
    try:
        for study in STUDIES:
            store.update("ImagingStudy", str(study["id"]), study)
    finally:
        store.close()
    request = _request([("status", "available")])
    planner = Planner(BASES, SQLITE)
    conn = sqlite3.connect(tmp_path / "plan.db")
    try:

        class Probe:
            dialect = SQLITE

            def query(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
                return conn.execute(sql, params).fetchall()

        broad = broad_filters(Probe(), planner, request, THRESHOLD)
        text, params = render(planner.page(request, None, False, broad), SQLITE)
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + text, params)]
    finally:
        conn.close()
    assert not any("LIST SUBQUERY" in step or "TEMP B-TREE" in step for step in plan), plan
    assert any("spidx_token_rid" in step for step in plan), plan


def test_a_page_driven_by_a_list_of_rids_is_not_sorted_without_statistics(tmp_path: Any) -> None:
    """Without ANALYZE statistics SQLite scanned the (type, rid) index and sorted the page (bodies included): 32 ms
    instead of 2 ms for 4,000 matches at 100,000 studies. The type is checked on the rows the list finds."""
    database = f"sqlite:///{tmp_path / 'plain.db'}"
    opened = open_store(Settings(database=database, sqlite_synchronous="off"), REGISTRY)
    try:
        for study in STUDIES:
            opened.update("ImagingStudy", str(study["id"]), study)
        request = _request([("status", "cancelled"), ("_count", "4")])
        text, params = render(Planner(BASES, SQLITE).page(request, None, False), SQLITE)
        assert "+r.type = ?" in text
        plan = " ".join(str(row[3]) for row in opened.query("EXPLAIN QUERY PLAN " + text, params))
        assert "TEMP B-TREE" not in plan and "PRIMARY KEY" in plan, plan
        by_id = render(
            Planner(BASES, SQLITE).page(_request([("_id", "s01"), ("status", "cancelled")]), None, False), SQLITE
        )[0]
        assert "+r.type" not in by_id  # _id is looked up in the (type, id) index
    finally:
        opened.close()


@pytest.mark.parametrize("walk_rows", [2, 3, 7, WALK_ROWS])
@pytest.mark.parametrize(
    "query",
    [
        [("_sort", "-started")],
        [("status", "available"), ("_sort", "started")],
        [("patient", "p1"), ("_sort", "-started")],
        [("_sort", "status,-started")],
        [("modality", "CT"), ("_sort", "-_lastUpdated")],
    ],
)
def test_sorted_pages_found_in_a_sort_window_are_the_sorted_pages(
    store: Store, query: list[tuple[str, str]], walk_rows: int
) -> None:
    """A window of ``walk_rows`` sort values (then 8 times as many) gives the pages listing every match gives: a
    window larger than the index is never used."""
    listed = _pages(store, query, 1, 10**6)
    assert listed[0], query
    assert _pages(store, query, 1, walk_rows) == listed
    assert _pages(store, query, THRESHOLD, walk_rows) == listed
    assert _pages(store, query, None, walk_rows) == listed  # the dialect's own: PostgreSQL's windows without probes


@pytest.mark.parametrize("query", [[("_sort", "-started")], [("modality", "CT"), ("_sort", "-started")]])
def test_a_sorted_page_comes_from_a_sort_window_without_probes_too(store: Store, query: list[tuple[str, str]]) -> None:
    """PostgreSQL probes no filter (``broad_rows`` None), and its forward sorted pages look inside a window of the
    sort index too: ranking the key of every match took 136–440 ms at 100,000 studies there (bench/README.md)."""
    recording = _Recording(store)
    page = run_search(recording, _request([*query, ("_count", "4")]), BASES, None, 6)  # type: ignore[arg-type]
    assert [hit.id for hit in page.matches] == _pages(store, query, 1, 10**6)[0][:4]
    assert "FROM spidx_date t" in recording.statements[-1], recording.statements[-1]


class _Recording:
    """A store that records the statements a search runs."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.dialect = store.dialect
        self.statements: list[str] = []

    def query(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        self.statements.append(sql)
        return self.store.query(sql, params)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # One value (available) fills a window of 4: its ties are walked in rid order.
        ([("_sort", "status")], sorted(s["id"] for s in STUDIES if s["status"] == "available")
         + sorted(s["id"] for s in STUDIES if s["status"] == "cancelled")),
        # A range on the sort parameter bounds the window: the newest values inside it, not the newest of all.
        ([("started", "ge2023-03-01"), ("started", "lt2024-01-01"), ("_sort", "-started")],
         [s["id"] for s in sorted(STUDIES, key=lambda s: str(s["started"]), reverse=True)
          if "2023-03" <= str(s["started"]) < "2024-01"]),
    ],
)  # fmt: skip
def test_sorted_pages_walk_ties_and_bounded_windows_like_the_full_sort(
    store: Store, query: list[tuple[str, str]], expected: list[str]
) -> None:
    for broad_rows, walk_rows in ((1, 4), (THRESHOLD, 4), (None, WALK_ROWS), (None, 4), (1, WALK_ROWS)):
        forward, _ = _pages(store, query, broad_rows, walk_rows)
        assert forward == expected, (broad_rows, walk_rows)
    if store.dialect is not SQLITE:
        return
    recording = _Recording(store)
    page = run_search(recording, _request([*query, ("_count", "4")]), BASES, 1, 6)  # type: ignore[arg-type]
    assert [hit.id for hit in page.matches] == expected[:4]
    # The page came from the tie walk (rid order) or the bounded window (the sort index's rows, alias t), not from
    # ranking the keys of every match.
    last = recording.statements[-1]
    assert "ORDER BY r.rid LIMIT 5" in last or "FROM spidx_date t" in last, last


INSIDE = "spidx_date_lo (type=? AND param=? AND lo>? AND lo<?)"  # the rows inside the value: a two-sided range


@pytest.mark.parametrize(
    ("value", "ranges"),
    [
        # ge: the rows that end after the value (hi index), then those inside it (lo index, two-sided)
        ("ge2025-02-01", ["spidx_date_hi (type=? AND param=? AND hi>?)", INSIDE]),
        # le: the rows that begin before it, then those inside it (both the lo index)
        ("le2023-02-01", ["spidx_date_lo (type=? AND param=? AND lo<?)", INSIDE]),
    ],
)  # fmt: skip
def test_ge_and_le_read_index_ranges_not_every_row_of_the_parameter(
    tmp_path: Any, value: str, ranges: list[str]
) -> None:
    """``ge`` is "ends after the value, or inside it" (``le`` alike): written as one OR, SQLite could use no range
    and read every ``started`` row — at 1,000,000 studies a ``started=ge`` matching a few cost 78 ms at p95."""
    database = f"sqlite:///{tmp_path / 'plan.db'}"
    opened = open_store(Settings(database=database, sqlite_synchronous="off"), REGISTRY)
    try:
        for study in STUDIES:
            opened.update("ImagingStudy", str(study["id"]), study)
        planner = Planner(BASES, SQLITE)
        request = _request([("started", value)])
        for select in (planner.page(request, None, False), planner.probe(request.filters[0], ("ImagingStudy",), 5)):
            assert select is not None
            text, params = render(select, SQLITE)
            plan = [str(row[3]) for row in opened.query("EXPLAIN QUERY PLAN " + text, params)]
            steps = [step for step in plan if "spidx_date" in step]
            assert [step.split("COVERING INDEX ")[-1] for step in steps] == ranges, plan
    finally:
        opened.close()
