"""``_total=estimate``: a total that does not cost a full count of a large result set.

Spec: https://hl7.org/fhir/R4/search.html#total ("estimate: a rough estimate of the number of matching resources is
sufficient").

The matches are counted in rid order, each filter checked per resource row (``EXISTS``), up to ``EXACT_UP_TO`` + 1:
fewer, and that count is the exact total. Beyond it, the total is estimated:

- PostgreSQL: its planner's row estimate for the matching rows (``EXPLAIN``, from the table statistics), never less
  than the matches already counted;
- SQLite (no row estimates): the share of the resources of the searched types that lie up to the rid of the last
  match counted, extrapolated to all of them: ``counted × resources / resources up to that rid`` (two counts on the
  (type, rid) index; exact when the matches are spread evenly over the rids).

Either way the work is bounded by the ``EXACT_UP_TO`` matches walked plus index-only counts, not by the number of
matches.
"""

from __future__ import annotations

from typing import Any

import orjson

from fhir_imaging.search import sql
from fhir_imaging.search.planner import Planner
from fhir_imaging.search.query import SearchRequest

EXACT_UP_TO = 1000  # at most this many matches are counted exactly


def _run(store: Any, select: sql.Select) -> list[tuple[Any, ...]]:
    text, params = sql.render(select, store.dialect)
    rows: list[tuple[Any, ...]] = store.query(text, params)
    return rows


def estimate_total(store: Any, planner: Planner, request: SearchRequest, exact_up_to: int = EXACT_UP_TO) -> int:
    """The number of matches of ``request``: exact up to ``exact_up_to``, estimated beyond (see the docstring)."""
    broad = frozenset(range(len(request.filters)))  # EXISTS per row: stops after the first matches
    rid = sql.Column("r", "rid")
    first = sql.Select(
        ((rid, "rid"),),
        (("resource", "r"),),
        planner.where(request.filters, request.types, "r", broad),
        ((rid, False),),
        exact_up_to + 1,
    )
    window = planner.alias("w")
    count_and_last = sql.Select(
        ((sql.Func("count", (sql.Star(),)), None), (sql.Func("max", (sql.Column(window, "rid"),)), None)),
        ((first, window),),
    )
    counted, last = _run(store, count_and_last)[0]
    counted = int(counted)
    if counted <= exact_up_to:
        return counted
    if store.dialect.name == "postgres":
        matching = sql.Select(((rid, None),), (("resource", "r"),), planner.where(request.filters, request.types, "r"))
        text, params = sql.render(matching, store.dialect)
        plan = store.query("EXPLAIN (FORMAT JSON) " + text, params)[0][0]
        plan = orjson.loads(plan) if isinstance(plan, (str, bytes)) else plan  # json, parsed by the driver
        return max(counted, int(plan[0]["Plan"]["Plan Rows"]))
    live = planner.where((), request.types, "r")
    total = sql.Select(((sql.Func("count", (sql.Star(),)), None),), (("resource", "r"),), live)
    upto = sql.Select(
        ((sql.Func("count", (sql.Star(),)), None),),
        (("resource", "r"),),
        sql.and_(live, sql.Compare(rid, "<=", sql.Param(last))),
    )
    resources, before = int(_run(store, total)[0][0]), int(_run(store, upto)[0][0])
    return max(counted, round(counted * resources / max(before, 1)))
