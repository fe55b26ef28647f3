"""composite: https://hl7.org/fhir/R4/search.html#composite — ``code-value-quantity=loinc|8480-6$gt100``.

A composite parameter's expression selects elements (an ``Observation.component``, or the Observation itself for
``code-value-quantity``); each of its components (``SearchParam.parts``, resolved by the registry from the
definitions) is an expression relative to that element, searched by its own type's rules. A value is one value per
component, separated by ``$``; it matches when every component matches **within the same element**: a blood
pressure Observation whose first component has the systolic code and whose second has a value over 100 does not
match ``component-code-value-quantity=8480-6$gt100`` unless the systolic component itself is over 100.

Index layout: a component's rows live in ``spidx_composite_<type>``, one table per component type, declared from
the type's own columns (``SearchType.value_columns``) after the key columns and ``element`` (the position of the
element among those the composite's expression selects) and ``component`` (the component's position). A match is
a row of component 0 and a row of each further component with the same (rid, param, element), each meeting its
part of the value. Only elements with a value for every component are indexed (one without can match no value),
so ``:missing`` looks at component 0 alone. Composites are not sortable (search.html#sort names no order for them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from fhir_imaging.fhir.registry import SearchParam
from fhir_imaging.search import sql
from fhir_imaging.search.fhirpath import Plan, compile_plan, compile_relative
from fhir_imaging.search.types import TYPES
from fhir_imaging.search.types.base import KEY_COLUMNS, CompileContext, IndexColumn, InvalidValue, split_escaped

ELEMENT_COLUMNS = (IndexColumn("element", "INTEGER"), IndexColumn("component", "INTEGER"))
TABLE_PREFIX = "spidx_composite_"
# Indexes of the types' own tables that no composite search reads: a component takes no modifier (no token
# ``:text``), and ``_has`` / ``_revinclude`` follow the reference table, never these rows.
UNUSED_INDEXES = frozenset({"text", "reverse"})


def composite_table(kind: str) -> str:
    """The table of the composite rows of components of type ``kind``."""
    return TABLE_PREFIX + kind


COMPOSITE_TABLES: dict[str, str] = {name: composite_table(name) for name in TYPES}


def table_ddl(kind: str) -> tuple[str, ...]:
    """The DDL of ``spidx_composite_<kind>``: the key columns, ``element`` and ``component``, the type's value
    columns; the type's indexes with ``component`` after (type, param), and (rid, param, element, component), which
    joins a component's rows to component 0's and serves deletes and ``:missing``. Schema migration 8 is built from
    these declarations: a change is a new migration."""
    search_type = TYPES[kind]
    table = composite_table(kind)
    columns = ", ".join(
        f"{item.name} {item.sql_type}{'' if item.nullable else ' NOT NULL'}"
        for item in (*KEY_COLUMNS, *ELEMENT_COLUMNS, *search_type.value_columns)
    )
    indexes = [
        (suffix, ("type", "param", "component", *(name for name in names if name not in ("type", "param"))))
        for suffix, names in search_type.indexes
        if suffix not in UNUSED_INDEXES
    ]
    indexes.append(("rid", ("rid", "param", "element", "component")))
    return (
        f"CREATE TABLE {table} ({columns})",
        *(f"CREATE INDEX {table}_{suffix} ON {table} ({', '.join(names)})" for suffix, names in indexes),
    )


# -- parsing -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompositeValue:
    """One composite value: each component's value as its own type parsed it (``kinds``: those types)."""

    parts: tuple[Any, ...]
    kinds: tuple[str, ...]


def parse_composite(text: str, param: SearchParam) -> CompositeValue:
    """``a$b`` → the components' values, each parsed by its type (no modifier); InvalidValue when the number of
    components is not the parameter's or one is empty or malformed."""
    pieces = split_escaped(text, "$")
    if len(pieces) != len(param.parts):
        raise InvalidValue(
            f"'{text}' has {len(pieces)} component(s) and {param.code} takes {len(param.parts)}, separated by '$' "
            f"({'$'.join(part.type for part in param.parts)})"
        )
    values = []
    for number, (piece, part) in enumerate(zip(pieces, param.parts, strict=True), start=1):
        if not piece:
            raise InvalidValue(f"component {number} ({part.type}) of '{text}' is empty")
        try:
            values.append(TYPES[part.type].parse_value(piece, None, part))
        except InvalidValue as exc:
            raise InvalidValue(f"component {number} ({part.type}) of '{text}': {exc}") from None
    return CompositeValue(tuple(values), tuple(part.type for part in param.parts))


# -- extraction ----------------------------------------------------------------------------------------------------

# Per element (in the order the composite's expression gives them), per component: the value columns of its rows.
Elements = list[tuple[list[tuple[Any, ...]], ...]]
Component = tuple[Plan, str, str]  # (plan, what it runs on: element | resource | pair, component type)


@cache
def element_extractor(param: SearchParam) -> Callable[[dict[str, Any]], Elements]:
    """resource → its composite elements for ``param`` (a composite of resource type ``param.base``), each with the
    value columns of every component (deduplicated, in order); elements lacking a component are left out."""
    assert param.expression is not None
    plan, _ = compile_plan(param.expression, param.base)
    by_context: dict[tuple[str, str], tuple[Component, ...]] = {}

    def components(kind: str, path: str) -> tuple[Component, ...]:
        found = by_context.get((kind, path))
        if found is None:
            found = by_context[(kind, path)] = tuple(
                (*compile_relative(part.expression or "", param.base, kind, path), part.type) for part in param.parts
            )
        return found

    def extract(resource: dict[str, Any]) -> Elements:
        out: Elements = []
        for node in plan.nodes([resource]):
            groups = []
            for component, source, kind in components(node.type, node.path):
                inputs = [node.value] if source == "element" else [resource] if source == "resource" else []
                if source == "pair":
                    inputs = [(node.value, resource)]
                columns = _columns(component, inputs, kind)
                if not columns:
                    break
                groups.append(columns)
            else:
                out.append(tuple(groups))
        return out

    return extract


def _columns(plan: Plan, inputs: list[Any], kind: str) -> list[tuple[Any, ...]]:
    """The value columns of the ``kind`` rows of what ``plan`` finds in ``inputs`` (derived rows — an identifier's
    type, a reference's identifier — are not part of a composite)."""
    search_type = TYPES[kind]
    found = plan.run(inputs)
    if plan.kind is not None:
        rows = search_type.extractor(plan.kind)(found)
    else:
        rows = [row for node in found for row in search_type.extractor(node.type)([node.value])]
    return list(dict.fromkeys(columns for table_kind, sub, columns in rows if table_kind == kind and not sub))


def index_rows(rid: int, resource_type: str, param: SearchParam, resource: dict[str, Any]) -> dict[str, list[Any]]:
    """The composite rows of ``param`` for one resource, by table: (rid, type, param, element, component, values…)."""
    by_table: dict[str, list[Any]] = {}
    kinds = [part.type for part in param.parts]
    for element, groups in enumerate(element_extractor(param)(resource)):
        for component, columns in enumerate(groups):
            rows = by_table.setdefault(COMPOSITE_TABLES[kinds[component]], [])
            rows += [(rid, resource_type, param.code, element, component, *values) for values in columns]
    return by_table


# -- compilation ---------------------------------------------------------------------------------------------------


def compile_composite(
    key: str, values: tuple[CompositeValue, ...], aliases: tuple[str, ...], owner: sql.Expr, bases: tuple[str, ...]
) -> sql.Select:
    """The rows (first column: rid) of the resources with an element matching one of ``values``: component 0's row
    (alias ``aliases[0]``, owned as ``owner`` says: of the searched types, or of one resource row) joined to each
    further component's row of the same element, every one meeting its part of the same value."""
    kinds = values[0].kinds
    first = aliases[0]
    conditions: list[sql.Expr] = [
        owner,
        sql.eq(sql.Column(first, "param"), key),
        sql.eq(sql.Column(first, "component"), 0),
    ]
    for number, alias in enumerate(aliases[1:], start=1):
        conditions += [
            sql.eq(sql.Column(alias, "rid"), sql.Column(first, "rid")),
            sql.eq(sql.Column(alias, "param"), key),
            sql.eq(sql.Column(alias, "element"), sql.Column(first, "element")),
            sql.eq(sql.Column(alias, "component"), number),
        ]
    matches = [
        sql.and_(
            *(
                TYPES[kind].compile(part, None, CompileContext(alias, bases))
                for kind, part, alias in zip(kinds, value.parts, aliases, strict=True)
            )
        )
        for value in values
    ]
    conditions.append(sql.or_(*matches))
    sources = tuple((COMPOSITE_TABLES[kind], alias) for kind, alias in zip(kinds, aliases, strict=True))
    return sql.Select(((sql.Column(first, "rid"), None),), sources, sql.and_(*conditions))
