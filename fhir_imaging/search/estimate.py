"""``_total=estimate``: a total that does not cost a full count of a large result set.

Spec: https://hl7.org/fhir/R4/search.html#total ("estimate: a rough estimate of the number of matching resources is
sufficient").

- PostgreSQL: its planner's estimate of the matching rows (``EXPLAIN``, from the table statistics; no row is read).
  Up to ``EXACT_UP_TO`` estimated rows the matches are counted instead, so a small total is exact; beyond, the
  estimate is the answer (PostgreSQL's ``count(*)`` visits every matching row).
- SQLite has no row estimates, and its count is driven by the indexes: the total is counted. (An extrapolation from
  the first matches in rid order was measured no faster at 20,000 studies — 120 ms against 68 ms for
  ``modality=CT`` — and a walk in rid order costs the whole table when matches are rare.)
"""

from __future__ import annotations

from typing import Any

import orjson

from fhir_imaging.search import sql
from fhir_imaging.search.planner import Planner
from fhir_imaging.search.query import SearchRequest

EXACT_UP_TO = 10_000  # PostgreSQL: up to this many estimated matches, the total is counted


def _run(store: Any, select: sql.Select) -> list[tuple[Any, ...]]:
    text, params = sql.render(select, store.dialect)
    rows: list[tuple[Any, ...]] = store.query(text, params)
    return rows


def planner_rows(store: Any, planner: Planner, request: SearchRequest) -> int:
    """PostgreSQL's estimate of how many resources match ``request`` (``EXPLAIN``: nothing is executed)."""
    rid = sql.Column("r", "rid")
    matching = sql.Select(((rid, None),), (("resource", "r"),), planner.where(request.filters, request.types, "r"))
    text, params = sql.render(matching, store.dialect)
    plan = store.query("EXPLAIN (FORMAT JSON) " + text, params)[0][0]
    plan = orjson.loads(plan) if isinstance(plan, (str, bytes)) else plan  # json, parsed by the driver or not
    return int(plan[0]["Plan"]["Plan Rows"])


def estimate_total(store: Any, planner: Planner, request: SearchRequest, exact_up_to: int = EXACT_UP_TO) -> int:
    """The number of matches of ``request``: PostgreSQL's estimate when it is over ``exact_up_to``, else counted."""
    if store.dialect.name == "postgres":
        estimated = planner_rows(store, planner, request)
        if estimated > exact_up_to:
            return estimated
    return int(_run(store, planner.count(request))[0][0])
