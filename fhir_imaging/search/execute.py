"""Running a typed search against a store: plan → SQL text + parameters → the store executes → rows.

The store only executes what is compiled here (``store.query(sql, params)``); this module decides which statements
to run for one page: the page itself, the total when asked for, and the _include / _revinclude rounds.

On SQLite it also decides which filters are *broad* (planner.py): ``r.rid IN (…)`` lists every match before the
page takes its first ``count + 1``, so its cost grows with the matches however small the page, while ``EXISTS``
checked along the resources in rid order stops after ``count + 1`` matches but walks ~1/selectivity rows per match.
A probe counting the filter's index rows up to the dialect's ``broad_rows`` (storage/dialect.py) tells them apart:
reaching it, ``EXISTS`` is cheaper (the measurements behind the threshold: bench/README.md, "Figures behind design
choices"). PostgreSQL's planner weighs IN against EXISTS itself from its own statistics: no probe there.

The count says how many resources match, not where they are: when every filter of a page is broad, nothing narrow
drives the query and SQLite walks ``resource`` in rid order; if the matches sit at the far end (recent studies
when the data came in date order — ``started=ge`` last year), the walk would cross every older row first. So such
a page first walks at most ``WALK_ROWS`` rows: when the window holds ``count + 1`` matches they are the page (no
match can come before them); otherwise the page is listed with ``IN`` after all. The worst case costs one bounded
walk of ``WALK_ROWS`` rows more than ``IN`` alone.

A ``_sort`` needs each match's sort key, a correlated look-up per match: over 100,000 matches that is most of a
second for 25 rows. So a forward sorted page first looks inside a window of the sort parameter's index:
the ``WALK_ROWS`` values next in sort order after the page's keyset position (then ``WINDOW_GROWTH`` times as
many). A resource's sort key is the greatest (descending) or least of its values, so a resource with no value
inside the window sorts after every resource with one: when the window holds ``count + 1`` matches (broad filters
checked with ``EXISTS``, the others listed with ``IN``), they are the page. Otherwise — matches sparse among the
next values, the values exhausted (resources without one sort last), a backward page — the page lists every match
as before. A narrow search pays for one window it did not need: a look-up of the window's edge and a page over its
few matches. PostgreSQL, which probes no filter, checks every filter with ``IN`` inside the window (its planner
chooses how); without the window it ranked the key of every match too: 136–440 ms at 100,000 studies for
``_sort=-started`` alone or with one broad filter, 4.5–19 ms with it (bench/README.md, "Sorted pages on
PostgreSQL").

Two refinements of the window (docs/search.md, "Sorted pages"): filters on the sort parameter itself, when it gives
a resource one value, a point in time, bound the window (``sort_bounds``: it holds the next values that meet them);
and when one value fills the window of a single sort key, its ties are walked in rid order (``tie_page``), over at
most ``WALK_ROWS * WINDOW_GROWTH`` resources, before the page falls back to listing every match.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from fhir_imaging.config import Settings
from fhir_imaging.search.estimate import estimate_total
from fhir_imaging.search.ids import resolve_ids
from fhir_imaging.search.paging import decode_cursor, encode_cursor
from fhir_imaging.search.planner import RESOURCE_COLUMNS, Planner, combine_ranges, sort_bounds
from fhir_imaging.search.query import Filter, SearchRequest, id_clause
from fhir_imaging.search.sql import Column, Select, render
from fhir_imaging.storage.bodies import unpack
from fhir_imaging.storage.dialect import Dialect

MAX_INCLUDE_ROUNDS = 4
MAX_INCLUDE = Settings().max_include  # most included resources on one page (the max_include setting)
WALK_ROWS = 1000  # most resource rows a page of broad filters walks before it lists the matches instead
WINDOW_GROWTH = 8  # a sorted page of broad filters tries a window of WALK_ROWS sort values, then one this much wider


class Queryable(Protocol):
    dialect: Dialect  # what the statements are compiled for

    def query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]: ...


@dataclass(frozen=True, slots=True)
class Hit:
    """A resource a search found: its current version."""

    rid: int
    resource_type: str
    id: str
    version: int
    last_updated: str
    body: bytes

    @classmethod
    def of(cls, row: tuple[Any, ...]) -> Hit:
        """From a row whose first columns are the planner's ``RESOURCE_COLUMNS``."""
        return cls(row[0], row[1], row[2], row[3], row[4], unpack(row[5]))


@dataclass
class SearchResult:
    matches: list[Hit]
    included: list[Hit] = field(default_factory=list)
    included_capped: bool = False  # _include / _revinclude found more than ``max_include``: the rest is left out
    total: int | None = None
    next_cursor: str | None = None
    previous_cursor: str | None = None


def _run(store: Queryable, select: Select) -> list[tuple[Any, ...]]:
    text, params = render(select, store.dialect)
    return store.query(text, params)


def broad_filters(store: Queryable, planner: Planner, request: SearchRequest, threshold: int | None) -> frozenset[int]:
    """The positions of the filters that match at least ``threshold`` index rows (none when ``threshold`` is None)."""
    if threshold is None:
        return frozenset()
    broad: set[int] = set()
    for number, item in enumerate(request.filters):
        probe = planner.probe(item, request.types, threshold)
        if probe is not None and _run(store, probe)[0][0] >= threshold:
            broad.add(number)
    return frozenset(broad)


def _sorted_page(
    store: Queryable,
    planner: Planner,
    request: SearchRequest,
    after: tuple[list[Any], int] | None,
    backward: bool,
    threshold: int | None,
    walk_rows: int,
) -> list[tuple[Any, ...]]:
    """A page in ``_sort`` order; going forward, first within a window of the sort index (see the module
    docstring)."""
    if not backward:
        key = request.sort[0]
        value = after[0][0] if after else None
        broad = broad_filters(store, planner, request, threshold)
        bounds = sort_bounds(request.filters, key)
        # A narrow bound has few matches to rank, and its window would read the whole index looking for more.
        narrow = any(number not in broad and item in bounds for number, item in enumerate(request.filters))
        for size in () if narrow else (walk_rows, walk_rows * WINDOW_GROWTH):
            edge = planner.sort_window_edge(key, request.types, value, size, bounds)
            if edge is None:
                break
            found, first, last = _run(store, edge)[0]
            if found == size and first == last and len(request.sort) == 1:
                # One value fills the window: its ties, ranked by rid, may be any number. Walk them in rid order,
                # at most as many resources as the wider window holds values (other filters may keep few of them).
                tie_after = after[1] if after is not None and value == first else None
                most = walk_rows * WINDOW_GROWTH
                walked, bound = _run(store, planner.walk(request.types, tie_after, False, most))[0]
                tie = planner.tie_page(request, first, tie_after, broad, bound if walked >= most else None)
                rows = _run(store, tie)
                if len(rows) > request.count:
                    return rows
                break
            if found < size or first == last:  # every value is inside (those without one lie beyond), or one value
                break  # fills the window of several sort keys: the ties' order needs the next keys of them all
            # From the first value on: none before it meets the bounds (with none, it is the keyset value's).
            window = planner.sort_window(key, request.types, first, last, bounds)
            rows = _run(store, planner.page(request, after, False, broad, window=window))
            if len(rows) > request.count:
                return rows
            if len(rows) * WINDOW_GROWTH <= request.count:  # too sparse for the wider window to fill the page
                break
    return _run(store, planner.page(request, after, backward))


def _page(
    store: Queryable,
    planner: Planner,
    request: SearchRequest,
    after: tuple[list[Any], int] | None,
    backward: bool,
    broad: frozenset[int],
    walk_rows: int,
) -> list[tuple[Any, ...]]:
    """The page's rows; when every filter is broad, first within a walk of ``walk_rows`` resources (see above)."""
    if broad and len(broad) == len(request.filters):
        walked, bound = _run(store, planner.walk(request.types, after[1] if after else None, backward, walk_rows))[0]
        if walked >= walk_rows:  # more rows lie beyond: bound the walk, and fall back if the window is too sparse
            rows = _run(store, planner.page(request, after, backward, broad, bound))
            if len(rows) > request.count:
                return rows
            broad = frozenset()
    return _run(store, planner.page(request, after, backward, broad))


def run_search(
    store: Queryable,
    request: SearchRequest,
    bases: tuple[str, ...],
    broad_rows: int | None = None,
    walk_rows: int = WALK_ROWS,
    max_include: int = MAX_INCLUDE,
) -> SearchResult:
    """One page of ``request``, with at most ``max_include`` resources found by ``_include`` / ``_revinclude``.
    ``broad_rows``: the probe threshold (default: the dialect's ``broad_rows``); ``walk_rows``: see ``WALK_ROWS``
    (both parameters for tests)."""
    planner = Planner(bases, store.dialect)
    filters = resolve_ids(lambda select: _run(store, select), combine_ranges(request.filters))
    request = replace(request, filters=filters)
    cursor = decode_cursor(request.cursor, tuple(key.kind for key in request.sort)) if request.cursor else None
    result = SearchResult([])
    count_only = request.summary == "count" or request.count == 0  # search.html#count: _count=0 is _summary=count
    if request.total == "estimate":
        result.total = estimate_total(store, planner, request)  # exact up to EXACT_UP_TO (estimate.py)
    elif count_only or request.total == "accurate":
        result.total = int(_run(store, planner.count(request))[0][0])
    if count_only:
        return result
    after = (cursor.keys, cursor.rid) if cursor else None
    backward = bool(cursor and cursor.backward)
    threshold = broad_rows if broad_rows is not None else store.dialect.broad_rows
    if request.sort:
        rows = _sorted_page(store, planner, request, after, backward, threshold, walk_rows)
    else:
        rows = _page(
            store, planner, request, after, backward, broad_filters(store, planner, request, threshold), walk_rows
        )
    more = len(rows) > request.count
    rows = rows[: request.count]
    if backward:
        rows.reverse()
    width = len(request.sort)
    if rows:
        first, last = rows[0], rows[-1]
        if (more and not backward) or (backward and cursor is not None):
            result.next_cursor = encode_cursor(list(last[6 : 6 + width]), last[0], False)
        if (cursor is not None and not backward) or (backward and more):
            result.previous_cursor = encode_cursor(list(first[6 : 6 + width]), first[0], True)
    elif backward and cursor is not None:
        result.next_cursor = encode_cursor(cursor.keys, cursor.rid - 1, False)
    result.matches = [Hit.of(row) for row in rows]
    if result.total is None and cursor is None and not more:
        result.total = len(rows)
    if request.includes and rows:
        result.included, result.included_capped = _includes(store, planner, request, result.matches, max_include)
    return result


def matching(
    store: Queryable, resource_type: str, filters: tuple[Filter, ...], ids: Sequence[str], bases: tuple[str, ...]
) -> list[Hit]:
    """The current versions of the resources among ``ids`` (of ``resource_type``) that match every filter. The ids
    drive the statement and each filter is checked on their rows (``EXISTS`` where it can be), so the cost follows
    the number of ids, not how many resources the filters match elsewhere."""
    if not ids:
        return []
    planner = Planner(bases, store.dialect)
    checked = (id_clause(ids), *resolve_ids(lambda select: _run(store, select), filters))
    where = planner.where(checked, (resource_type,), "r", frozenset(range(1, len(checked))))
    columns = tuple((Column("r", name), None) for name in RESOURCE_COLUMNS)
    return [Hit.of(row) for row in _run(store, Select(columns, (("resource", "r"),), where))]


def _includes(
    store: Queryable, planner: Planner, request: SearchRequest, matches: list[Hit], most: int
) -> tuple[list[Hit], bool]:
    """The resources the includes find (at most ``most``), and whether some were left out. Each query asks for no
    more rows than could still be kept, plus the ones already seen (which it may return again), plus one: a full
    answer therefore always holds a row past the cap."""
    seen = {hit.rid for hit in matches}
    included: list[Hit] = []
    base = matches
    for round_number in range(MAX_INCLUDE_ROUNDS):
        specs = [spec for spec in request.includes if round_number == 0 or spec.iterate]
        if not specs or not base:
            break
        found: list[Hit] = []
        for spec in specs:
            if spec.reverse:
                select = planner.revincluded(spec, [(hit.resource_type, hit.id) for hit in base])
            else:
                select = planner.included(spec, [hit.rid for hit in base])
            room = most - len(included) - len(found)
            for row in _run(store, replace(select, limit=room + len(seen) + 1)):
                if row[0] not in seen:
                    if room == 0:
                        return included + found, True
                    room -= 1
                    seen.add(row[0])
                    found.append(Hit.of(row))
        included += found
        base = found
    return included, False
