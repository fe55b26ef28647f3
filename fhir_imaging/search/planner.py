"""Typed search → SQL tree: filters, sort keys, keyset paging, counts, _include / _revinclude.

Every filter becomes a condition on the ``resource`` row (alias ``r``): ``r.rid IN (rows of an index table that
match)``, so each parameter is one indexed lookup and AND-ed parameters intersect. A *broad* filter (one that
matches much of its type: the caller says which, see execute.py) becomes ``EXISTS (its index rows of r.rid)``
instead, checked row by row: a page in rid order then stops after ``count + 1`` matches rather than first
listing every match. Chains join the reference index to the target's ``resource`` row; ``_has`` goes the other
way. ``AnyOf`` (filters the server adds for granular scopes) is ``(group 1) OR (group 2) …``, each group its
filters AND-ed. Paging is keyset paging over (sort keys…, rid): a page asks for the rows after (or before) the
last (first) row of the page before, never an OFFSET.
Spec: https://hl7.org/fhir/R4/search.html
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from fhir_imaging.search import sql
from fhir_imaging.search.composite import compile_composite
from fhir_imaging.search.index import ID_HASH_TABLE, ID_TABLE
from fhir_imaging.search.query import (
    Alternative,
    AnyOf,
    Chain,
    Clause,
    Compartment,
    Filter,
    Has,
    Include,
    SearchRequest,
    SortKey,
)
from fhir_imaging.search.types import TABLES, TYPES
from fhir_imaging.search.types.base import CompileContext
from fhir_imaging.search.types.date import (
    EITHER_PREFIXES,
    LOWER_PREFIXES,
    UPPER_PREFIXES,
    DateRange,
    DateValue,
    either_parts,
    range_parts,
)
from fhir_imaging.search.types.token import TokenValue, compile_id_token
from fhir_imaging.storage.dialect import Dialect

RESOURCE_COLUMNS = ("rid", "type", "id", "version", "last_updated", "body")
REFERENCE_TABLE = TABLES["reference"]
# Sort keys of resources without a value: beyond every stored value, so that they sort last either way.
MISSING_HIGH = {"date": 2**63 - 1, "number": 1.7e308, "quantity": 1.7e308}
MISSING_LOW = {"date": -(2**63), "number": -1.7e308, "quantity": -1.7e308}


@dataclass
class Planner:
    bases: tuple[str, ...]  # '' and this server's absolute base URLs: references that point here
    dialect: Dialect
    _aliases: itertools.count[int] = field(default_factory=itertools.count)

    def alias(self, stem: str) -> str:
        return f"{stem}{next(self._aliases)}"

    # -- filters -----------------------------------------------------------------------------------------------

    def where(
        self, filters: tuple[Filter, ...], types: tuple[str, ...], alias: str, broad: frozenset[int] = frozenset()
    ) -> sql.Expr:
        """The condition on the resource row ``alias``: current, of ``types``, matching every filter (those at the
        positions in ``broad`` as ``EXISTS``)."""
        matches = [self.filter(item, types, alias, number in broad) for number, item in enumerate(filters)]
        # When a list of rids drives the query, the type is checked on each row found, not looked up in the
        # (type, rid) index: without statistics SQLite would otherwise scan that index and sort the page.
        rid = sql.Column(alias, "rid")
        driven = any(isinstance(m, sql.InSelect) and m.item == rid and not m.negated for m in matches)
        by_id = any(isinstance(item, Clause) and _by_id(item) for item in filters)
        kind: sql.Expr = sql.Column(alias, "type")
        if driven and not by_id:  # (``_id`` needs the (type, id) index)
            kind = sql.NoIndex(kind)
        conditions: list[sql.Expr] = [sql.eq(sql.Column(alias, "deleted"), 0)]
        conditions.append(sql.eq(kind, types[0]) if len(types) == 1 else sql.InValues(kind, types))
        return sql.and_(*conditions, *matches)

    def filter(self, item: Filter, types: tuple[str, ...], alias: str, broad: bool = False) -> sql.Expr:
        """``alias.rid IN (the filter's index rows)``; ``broad``: ``EXISTS (those of alias.rid)``, which the database
        checks per resource row instead of listing them all first (only where ``may_be_broad``)."""
        if isinstance(item, Has):
            return self.has(item, types, alias)
        if isinstance(item, AnyOf):
            return self.any_of(item, types, alias, broad)
        if isinstance(item, Chain):
            return sql.InSelect(sql.Column(alias, "rid"), self.chain(item, types))
        if isinstance(item, Clause) and _by_id(item):
            return self.ids(item, alias)
        if broad and may_be_broad(item):
            assert isinstance(item, (Clause, Compartment))
            return sql.Exists(self.rows(item, types, alias))
        return sql.InSelect(sql.Column(alias, "rid"), self.rows(item, types), negated=_negated(item))

    def any_of(self, item: AnyOf, types: tuple[str, ...], alias: str, broad: bool = False) -> sql.Expr:
        """``(alternative 1) OR (alternative 2) …``: each alternative is its filters AND-ed, compiled for the types
        it shares with the search (plus ``alias.type IN (those)`` when that is not all of them); ``broad``: its
        filters as ``EXISTS`` where they can be."""
        branches = [self.alternative(branch, types, alias, broad) for branch in item.alternatives]
        if sql.TRUE in branches:
            return sql.TRUE
        kept = [branch for branch in branches if branch != sql.FALSE]
        return sql.or_(*kept) if kept else sql.FALSE

    def alternative(self, branch: Alternative, types: tuple[str, ...], alias: str, broad: bool) -> sql.Expr:
        within = tuple(name for name in types if name in branch.types)
        if not within:
            return sql.FALSE
        kind = [] if within == types else [self._type_condition(sql.Column(alias, "type"), within)]
        return sql.and_(*kind, *(self.filter(item, within, alias, broad) for item in branch.filters))

    def probe(self, item: Filter, types: tuple[str, ...], limit: int) -> sql.Select | None:
        """How many index rows match ``item``, counting no further than ``limit`` (None: ``item`` is never broad)."""
        if not isinstance(item, (Clause, Compartment)) or not may_be_broad(item):
            return None
        rows = replace(self.rows(item, types), limit=limit)
        return sql.Select(((sql.Func("count", (sql.Star(),)), None),), ((rows, self.alias("b")),))

    def rows(self, item: Clause | Compartment, types: tuple[str, ...], outer: str | None = None) -> sql.Select:
        """The index rows (first column: their rid) that make a resource of ``types`` match ``item``; with
        ``outer``, only those of the resource row of that alias (correlated, for ``EXISTS``)."""
        if isinstance(item, Clause):
            return self.clause(item, types, outer)
        return self.compartment(item, types, outer)

    def _type_condition(self, column: sql.Expr, types: tuple[str, ...]) -> sql.Expr:
        return sql.eq(column, types[0]) if len(types) == 1 else sql.InValues(column, types)

    def _owner(self, index: str, types: tuple[str, ...], outer: str | None) -> sql.Expr:
        """Index rows of resources of ``types``, or (``outer``) of that resource row only. An index row has its
        resource's type, so the latter leaves the type out: no index led by it then competes with ``(rid, param)``
        (SQLite's statistics average over every value, and would favour ``(type, param, code…)``)."""
        if outer is None:
            return self._type_condition(sql.Column(index, "type"), types)
        return sql.eq(sql.Column(index, "rid"), sql.Column(outer, "rid"))

    def ids(self, clause: Clause, alias: str) -> sql.Expr:
        ids = tuple(value.code for value in clause.values if isinstance(value, TokenValue) and value.code)
        condition = sql.InValues(sql.Column(alias, "id"), ids)
        return sql.Not(condition) if clause.modifier == "not" else condition

    def clause(self, clause: Clause, types: tuple[str, ...], outer: str | None = None) -> sql.Select:
        if len(clause.values) == 1 and isinstance(clause.values[0], DateRange):
            date_range = clause.values[0]
            return self.disjoint(clause, types, outer, lambda alias: range_parts(date_range, alias))
        if len(clause.values) == 1 and isinstance(clause.values[0], DateValue) and clause.missing is None:
            date = clause.values[0]
            if date.prefix in EITHER_PREFIXES and self.dialect.date_or_as_union:
                return self.disjoint(clause, types, outer, lambda alias: either_parts(date, alias))
        if clause.kind == "composite" and clause.missing is None:
            aliases = tuple(self.alias("i") for _ in clause.values[0].kinds)
            owner = self._owner(aliases[0], types, outer)
            return compile_composite(clause.key, clause.values, aliases, owner, self.bases)
        index = self.alias("i")
        if clause.missing is None and clause.table == ID_TABLE:
            # the hashes' rows (no type or param column: the hash covers the parameter, the resolved rids the type)
            values = sql.or_(*(compile_id_token(value, index) for value in clause.values))
            mine = [] if outer is None else [self._owner(index, types, outer)]
            return sql.Select(((sql.Column(index, "rid"), None),), ((ID_HASH_TABLE, index),), sql.and_(*mine, values))
        match = [self._owner(index, types, outer), sql.eq(sql.Column(index, "param"), clause.key)]
        if clause.missing is None:
            kind = TYPES[clause.kind] if clause.table == TYPES[clause.kind].table else TYPES["token"]
            context = CompileContext(index, self.bases)
            match.append(sql.or_(*(kind.compile(value, clause.modifier, context) for value in clause.values)))
        return sql.Select(((sql.Column(index, "rid"), None),), ((clause.table, index),), sql.and_(*match))

    def disjoint(
        self,
        clause: Clause,
        types: tuple[str, ...],
        outer: str | None,
        parts_of: Callable[[str], tuple[sql.Expr, sql.Expr]],
    ) -> sql.Select:
        """The index rows of a date clause whose condition is the OR of two disjoint ones, each a range of one index
        (``parts_of(alias)``): a combined range (``combine_ranges``, ``range_parts``: the rows inside it, then those
        that begin before it and reach into it) or a ``ge``/``le`` (``either_parts``): two selects (``UNION ALL``),
        each read from its own index range."""
        parts = []
        for number in range(2):
            index = self.alias("i")
            owner = [self._owner(index, types, outer), sql.eq(sql.Column(index, "param"), clause.key)]
            condition = parts_of(index)[number]
            parts.append(
                sql.Select(((sql.Column(index, "rid"), None),), ((clause.table, index),), sql.and_(*owner, condition))
            )
        return replace(parts[0], union_all=(parts[1],))

    def chain(self, chain: Chain, types: tuple[str, ...]) -> sql.Select:
        ref, target = self.alias("c"), self.alias("t")
        return sql.Select(
            ((sql.Column(ref, "rid"), None),),
            ((REFERENCE_TABLE, ref), ("resource", target)),
            sql.and_(
                self._type_condition(sql.Column(ref, "type"), types),
                sql.eq(sql.Column(ref, "param"), chain.code),
                sql.InValues(sql.Column(ref, "base"), self.bases),
                sql.eq(sql.Column(target, "type"), sql.Column(ref, "target_type")),
                sql.eq(sql.Column(target, "id"), sql.Column(ref, "target_id")),
                self.where((chain.inner,), chain.target_types, target),
            ),
        )

    def has(self, has: Has, types: tuple[str, ...], alias: str) -> sql.Expr:
        ref, source = self.alias("h"), self.alias("s")
        sources = sql.Select(
            ((sql.Column(source, "rid"), None),),
            (("resource", source),),
            self.where((has.inner,), (has.source,), source),
        )
        if len(types) == 1:
            target: sql.Expr = sql.Column(ref, "target_id")
            outer: sql.Expr = sql.Column(alias, "id")
        else:
            target = sql.Concat((sql.Column(ref, "target_type"), sql.Param("/"), sql.Column(ref, "target_id")))
            outer = sql.Concat((sql.Column(alias, "type"), sql.Param("/"), sql.Column(alias, "id")))
        select = sql.Select(
            ((target, None),),
            ((REFERENCE_TABLE, ref),),
            sql.and_(
                sql.eq(sql.Column(ref, "type"), has.source),
                sql.eq(sql.Column(ref, "param"), has.code),
                self._type_condition(sql.Column(ref, "target_type"), types),
                sql.InValues(sql.Column(ref, "base"), self.bases),
                sql.InSelect(sql.Column(ref, "rid"), sources),
            ),
        )
        return sql.InSelect(outer, select)

    def compartment(self, compartment: Compartment, types: tuple[str, ...], outer: str | None = None) -> sql.Select:
        index = self.alias("p")
        return sql.Select(
            ((sql.Column(index, "rid"), None),),
            ((REFERENCE_TABLE, index),),
            sql.and_(
                self._owner(index, types, outer),
                sql.InValues(sql.Column(index, "param"), compartment.codes),
                sql.eq(sql.Column(index, "target_id"), compartment.patient_id),
                sql.eq(sql.Column(index, "target_type"), "Patient"),
                sql.InValues(sql.Column(index, "base"), self.bases),
            ),
        )

    # -- sorting and paging ------------------------------------------------------------------------------------

    def sort_expression(self, key: SortKey, alias: str) -> sql.Expr:
        """The value a resource sorts by for ``key``; missing values sort last in either direction."""
        if key.kind == "_id":
            return sql.Column(alias, "id")
        if key.kind == "_lastUpdated":
            return sql.Column(alias, "last_updated")
        kind = TYPES[key.kind]
        index = self.alias("k")
        value = kind.sort_key(index, key.descending)
        if key_table(key) == ID_TABLE:  # one row per resource and parameter: its least and greatest value
            value = sql.Column(index, "hi" if key.descending else "lo")
        select = sql.Select(
            ((value, None),),
            ((key_table(key), index),),
            sql.and_(
                sql.eq(sql.Column(index, "rid"), sql.Column(alias, "rid")), sql.eq(sql.Column(index, "param"), key.code)
            ),
        )
        if key.kind in MISSING_HIGH:
            missing: Any = MISSING_LOW[key.kind] if key.descending else MISSING_HIGH[key.kind]
        else:
            missing = "" if key.descending else self.dialect.greatest_text
        return sql.Func("coalesce", (sql.Scalar(select), sql.Param(missing)))

    def _bounded(self, index: str, bounds: tuple[Clause, ...]) -> list[sql.Expr]:
        """The conditions of ``bounds`` (filters on the sort parameter, see ``sort_bounds``) on the index row
        ``index``."""
        context = CompileContext(index, self.bases)
        return [
            sql.or_(*(TYPES[item.kind].compile(value, item.modifier, context) for value in item.values))
            for item in bounds
        ]

    def sort_window_edge(
        self, key: SortKey, types: tuple[str, ...], after: Any, size: int, bounds: tuple[Clause, ...] = ()
    ) -> sql.Select | None:
        """(how many, the first value, the last value) of the first ``size`` index values of ``key`` in its sort
        direction, from the keyset value ``after`` on (None: from the start), among the rows that meet ``bounds``;
        None when ``key`` cannot be windowed (see ``sort_window``)."""
        column = window_column(key)
        if column is None:
            return None
        index = self.alias("t")
        value = sql.Column(index, column)
        conditions = [
            self._type_condition(sql.Column(index, "type"), types),
            sql.eq(sql.Column(index, "param"), key.code),
            *self._bounded(index, bounds),
        ]
        if after is not None:
            conditions.append(sql.Compare(value, "<=" if key.descending else ">=", sql.Param(after)))
        table = key_table(key)
        rows = sql.Select(((value, "v"),), ((table, index),), sql.and_(*conditions), ((value, key.descending),), size)
        window = self.alias("u")
        first = sql.Func("max" if key.descending else "min", (sql.Column(window, "v"),))
        edge = sql.Func("min" if key.descending else "max", (sql.Column(window, "v"),))
        return sql.Select(((sql.Func("count", (sql.Star(),)), None), (first, None), (edge, None)), ((rows, window),))

    def sort_window(
        self, key: SortKey, types: tuple[str, ...], after: Any, edge: Any, bounds: tuple[Clause, ...] = ()
    ) -> sql.Expr:
        """The resources with an index value of ``key`` between the keyset value ``after`` (None: the start) and
        ``edge``, both included (and meeting ``bounds``). When the sort key of a resource is the greatest
        (descending) or least of its values, every resource outside holds a key beyond ``edge``, so it sorts after
        every resource inside: a page found inside the window is the page (execute.py). With ``bounds`` — filters on
        the sort parameter, whose resources have one value each (``sort_bounds``) — every match's one value meets
        them, so a match outside the window still holds a key beyond ``edge``."""
        column = window_column(key)
        assert column is not None
        index = self.alias("t")
        value = sql.Column(index, column)
        conditions = [
            self._type_condition(sql.Column(index, "type"), types),
            sql.eq(sql.Column(index, "param"), key.code),
            sql.Compare(value, ">=" if key.descending else "<=", sql.Param(edge)),
            *self._bounded(index, bounds),
        ]
        if after is not None:
            conditions.append(sql.Compare(value, "<=" if key.descending else ">=", sql.Param(after)))
        rows = sql.Select(((sql.Column(index, "rid"), None),), ((key_table(key), index),), sql.and_(*conditions))
        return sql.InSelect(sql.Column("r", "rid"), rows)

    def page(
        self,
        request: SearchRequest,
        after: tuple[list[Any], int] | None,
        backward: bool,
        broad: frozenset[int] = frozenset(),
        bound: int | None = None,
        window: sql.Expr | None = None,
    ) -> sql.Select:
        """One page: the first ``count + 1`` rows after (or, ``backward``, before) the keyset position ``after``.

        Columns: the resource columns, then the sort keys (the cursor of the next page is built from them).
        ``broad``: the positions of the filters to check as ``EXISTS`` (see ``filter``). ``bound`` (pages in rid
        order only): no row beyond this rid in the direction of travel (see ``walk``). ``window`` (sorted pages
        only): a further condition that keeps to the resources of a ``sort_window``.
        """
        where = sql.and_(self.where(request.filters, request.types, "r", broad), window)
        keys = [(self.sort_expression(key, "r"), key.descending) for key in request.sort]
        columns: list[tuple[sql.Expr, str]] = [(sql.Column("r", name), name) for name in RESOURCE_COLUMNS]
        columns += [(expression, f"k{number}") for number, (expression, _) in enumerate(keys)]
        order = [(sql.Column("", f"k{number}"), descending) for number, (_, descending) in enumerate(keys)]
        order.append((sql.Column("", "rid"), False))
        if backward:
            order = [(expression, not descending) for expression, descending in order]
        limit = request.count + 1
        if not keys:
            conditions = [where]
            if after is not None:
                conditions.append(sql.Compare(sql.Column("r", "rid"), "<" if backward else ">", sql.Param(after[1])))
            if bound is not None:
                conditions.append(sql.Compare(sql.Column("r", "rid"), ">=" if backward else "<=", sql.Param(bound)))
            return sql.Select(
                tuple(columns),
                (("resource", "r"),),
                sql.and_(*conditions),
                ((sql.Column("r", "rid"), backward),),
                limit,
            )
        # The matches are ranked on (rid, sort keys) alone, and only the page's rows are joined to their bodies:
        # ranking whole rows made the database read the body of every match (22 kB a study) to sort them.
        names = [f"k{n}" for n in range(len(keys))]
        inner = sql.Select(
            ((sql.Column("r", "rid"), "rid"), *columns[len(RESOURCE_COLUMNS) :]), (("resource", "r"),), where
        )
        position = None
        if after is not None:
            values = [*after[0], after[1]]
            position = _keyset(order, values)

        def ordered(alias: str) -> tuple[tuple[sql.Expr, bool], ...]:
            return tuple(
                (sql.Column(alias, expression.name), descending)
                for expression, descending in order
                if isinstance(expression, sql.Column)
            )

        ranked = sql.Select(
            tuple((sql.Column("q", name), name) for name in ["rid", *names]),
            ((inner, "q"),),
            position,
            ordered("q"),
            limit,
        )
        star = (
            *((sql.Column("d", name), None) for name in RESOURCE_COLUMNS),
            *((sql.Column("p", n), None) for n in names),
        )
        joined = sql.eq(sql.Column("d", "rid"), sql.Column("p", "rid"))
        return sql.Select(star, ((ranked, "p"), ("resource", "d")), joined, ordered("p"))

    def tie_page(
        self,
        request: SearchRequest,
        value: Any,
        after: int | None,
        broad: frozenset[int] = frozenset(),
        bound: int | None = None,
    ) -> sql.Select:
        """The first ``count + 1`` matches whose (one) sort key is ``value``, in rid order after rid ``after`` (and
        up to rid ``bound``): a page inside one value's ties, which the order of a single sort key ranks by rid. The
        resources are walked in rid order and each one's key is looked up, so a value shared by many resources
        (``_sort=status``: five values) costs a walk to ``count + 1`` of them, not the key of every match. Columns
        as ``page``."""
        (key,) = request.sort
        rid = sql.Column("r", "rid")
        conditions = [
            self.where(request.filters, request.types, "r", broad),
            sql.eq(self.sort_expression(key, "r"), value),
        ]
        if after is not None:
            conditions.append(sql.Compare(rid, ">", sql.Param(after)))
        if bound is not None:
            conditions.append(sql.Compare(rid, "<=", sql.Param(bound)))
        columns = (*((sql.Column("r", name), name) for name in RESOURCE_COLUMNS), (sql.Param(value), "k0"))
        return sql.Select(columns, (("resource", "r"),), sql.and_(*conditions), ((rid, False),), request.count + 1)

    def walk(self, types: tuple[str, ...], after: int | None, backward: bool, size: int) -> sql.Select:
        """(how many, the last rid) of the next ``size`` resources of ``types`` in rid order after (``backward``:
        before) rid ``after``, deleted ones included: how far a page walking rows one by one may go."""
        w = self.alias("w")
        rid = sql.Column(w, "rid")
        conditions = [self._type_condition(sql.Column(w, "type"), types)]
        if after is not None:
            conditions.append(sql.Compare(rid, "<" if backward else ">", sql.Param(after)))
        rows = sql.Select(((rid, "rid"),), (("resource", w),), sql.and_(*conditions), ((rid, backward),), size)
        window = self.alias("v")
        last = sql.Func("min" if backward else "max", (sql.Column(window, "rid"),))
        return sql.Select(((sql.Func("count", (sql.Star(),)), None), (last, None)), ((rows, window),))

    def count(self, request: SearchRequest) -> sql.Select:
        return sql.Select(
            ((sql.Func("count", (sql.Star(),)), None),),
            (("resource", "r"),),
            self.where(request.filters, request.types, "r"),
        )

    # -- _include / _revinclude --------------------------------------------------------------------------------

    def included(self, include: Include, rids: list[int]) -> sql.Select:
        """Resources the page's resources (``rids``) point at through ``include``."""
        ref, target = self.alias("n"), self.alias("t")
        conditions = [
            sql.InValues(sql.Column(ref, "rid"), tuple(rids)),
            sql.InValues(sql.Column(ref, "base"), self.bases),
            sql.eq(sql.Column(target, "type"), sql.Column(ref, "target_type")),
            sql.eq(sql.Column(target, "id"), sql.Column(ref, "target_id")),
            sql.eq(sql.Column(target, "deleted"), 0),
        ]
        conditions += _through(include, ref)
        if include.target is not None:
            conditions.append(sql.eq(sql.Column(ref, "target_type"), include.target))
        columns = tuple((sql.Column(target, name), None) for name in RESOURCE_COLUMNS)
        return sql.Select(columns, ((REFERENCE_TABLE, ref), ("resource", target)), sql.and_(*conditions), distinct=True)

    def revincluded(self, include: Include, targets: list[tuple[str, str]]) -> sql.Select:
        """Resources that point at the page's resources (``targets``: (type, id)) through ``include``."""
        ref, source = self.alias("v"), self.alias("s")
        by_type: dict[str, list[str]] = {}
        for kind, identity in targets:
            by_type.setdefault(kind, []).append(identity)
        pointing = sql.or_(
            *(
                sql.and_(
                    sql.eq(sql.Column(ref, "target_type"), kind), sql.InValues(sql.Column(ref, "target_id"), tuple(ids))
                )
                for kind, ids in by_type.items()
            )
        )
        conditions = [
            pointing,
            sql.InValues(sql.Column(ref, "base"), self.bases),
            sql.eq(sql.Column(source, "rid"), sql.Column(ref, "rid")),
            sql.eq(sql.Column(source, "deleted"), 0),
            *_through(include, ref),
        ]
        columns = tuple((sql.Column(source, name), None) for name in RESOURCE_COLUMNS)
        return sql.Select(columns, ((REFERENCE_TABLE, ref), ("resource", source)), sql.and_(*conditions), distinct=True)


def _through(include: Include, ref: str) -> list[sql.Expr]:
    """The reference index rows an _include / _revinclude follows: of its source type and parameter (``*``: any)."""
    conditions = []
    if include.source != "*":
        conditions.append(sql.eq(sql.Column(ref, "type"), include.source))
    if include.code is not None:
        conditions.append(sql.eq(sql.Column(ref, "param"), include.code))
    return conditions


def combine_ranges(filters: tuple[Filter, ...]) -> tuple[Filter, ...]:
    """``filters`` with each pair of a lower and an upper bound on the same date parameter (``started=ge2024&
    started=lt2025``, one value each, no modifier) made one filter of one range, in the place of the first, when the
    parameter gives a resource at most one value, a point in time (``Clause.single``): then both bounds are met by
    the same index row, and one look-up of the rows between the bounds replaces two, each of every row beyond one
    bound. Other parameters keep their two filters (a resource may meet each bound with another value)."""

    def bound(item: Filter | None, prefixes: frozenset[str]) -> Clause | None:
        if not isinstance(item, Clause) or not item.single or item.modifier is not None or item.missing is not None:
            return None
        if len(item.values) != 1 or not isinstance(item.values[0], DateValue):
            return None
        return item if item.values[0].prefix in prefixes else None

    kept: list[Filter | None] = list(filters)
    for number, item in enumerate(kept):
        first = bound(item, LOWER_PREFIXES) or bound(item, UPPER_PREFIXES)
        if first is None:
            continue
        wanted = UPPER_PREFIXES if first.values[0].prefix in LOWER_PREFIXES else LOWER_PREFIXES
        for other in range(number + 1, len(kept)):
            second = bound(kept[other], wanted)
            if second is not None and (second.key, second.table) == (first.key, first.table):
                lower, upper = (first, second) if wanted is UPPER_PREFIXES else (second, first)
                kept[number] = replace(first, values=(DateRange(lower.values[0], upper.values[0]),))
                kept[other] = None
                break
    return tuple(item for item in kept if item is not None)


def sort_bounds(filters: tuple[Filter, ...], key: SortKey) -> tuple[Clause, ...]:
    """The filters on the parameter of the sort key ``key`` whose resources have one value each, a point in time
    (``Clause.single``): that value is then both the sort key and what the filter checks, so the sort window may
    keep to the index rows that meet them (``sort_window``)."""
    if key.kind not in TYPES:
        return ()
    table = TYPES[key.kind].table
    return tuple(
        item
        for item in filters
        if isinstance(item, Clause)
        and item.single
        and item.code == key.code
        and item.key == key.code
        and item.table == table
        and item.modifier is None
        and item.missing is None
    )


def may_be_broad(item: Filter) -> bool:
    """Whether ``item`` can be checked as ``EXISTS`` when broad. Not ``_has`` (it matches ids, not rids), nor
    ``_id`` (no index table), nor a chain (both its probe and its ``EXISTS`` list the targets' matches first:
    measured slower, not faster), nor a negated filter: the broader its rows, the fewer resources match it, and
    a row-by-row check would walk far to fill a page. Nor ``AnyOf``: an OR of whole filters, not one index lookup."""
    if isinstance(item, (Has, Chain, AnyOf)):
        return False
    return not (isinstance(item, Clause) and (_by_id(item) or _negated(item)))


def _negated(item: Filter) -> bool:
    """``:not`` and ``:missing=true`` match the resources *without* such index rows (``NOT IN``)."""
    return isinstance(item, Clause) and (item.modifier == "not" or item.missing is True)


def key_table(key: SortKey) -> str:
    """The index table of a sort key's parameter."""
    return key.table or TYPES[key.kind].table


def _by_id(clause: Clause) -> bool:
    """``_id`` (or ``_id:not``) compares the resource row's own id: no index table."""
    return clause.code == "_id" and clause.missing is None and clause.modifier in (None, "not")


def _keyset(order: list[tuple[sql.Column, bool]], values: list[Any]) -> sql.Expr:
    """Rows after ``values`` in ``order``: (k0 > v0) OR (k0 = v0 AND k1 > v1) OR … (``<`` for descending keys)."""
    alternatives = []
    for position, (column, descending) in enumerate(order):
        here = sql.Column("q", column.name)
        equal = [sql.eq(sql.Column("q", order[i][0].name), values[i]) for i in range(position)]
        alternatives.append(
            sql.and_(*equal, sql.Compare(here, "<" if descending else ">", sql.Param(values[position])))
        )
    return sql.or_(*alternatives)


def window_column(key: SortKey) -> str | None:
    """The index column whose greatest (descending) or least value is the sort key of ``key``, when it is one
    column's ``max`` / ``min`` (every parameter type's is); None for ``_id``, ``_lastUpdated`` and id/oid
    parameters (``ID_TABLE`` has no index in value order: their sorted pages list every match)."""
    if key.kind not in TYPES or key.table == ID_TABLE:
        return None
    expression = TYPES[key.kind].sort_key("k", key.descending)
    if (
        isinstance(expression, sql.Func)
        and expression.name == ("max" if key.descending else "min")
        and len(expression.args) == 1
        and isinstance(expression.args[0], sql.Column)
    ):
        return expression.args[0].name
    return None
