"""Index extraction: a resource → its rows in the ``spidx_*`` tables, from the registry's expressions.

Called by the store inside the write transaction (``index_statements``) and by ``reindex``; ``extract_values`` is
also what search/match.py evaluates, so the SQL side and the oracle see the same values.
Spec: https://hl7.org/fhir/R4/searchparameter.html (expression), https://hl7.org/fhir/R4/search.html
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Any

from fhir_imaging.fhir.registry import Registry, SearchParam, load_registry
from fhir_imaging.search.fhirpath import Node, compile_expression
from fhir_imaging.search.types import TABLES, TYPES
from fhir_imaging.search.types.base import Row

INDEX_PREFIX = ("rid", "type", "param")


def indexed_params(registry: Registry, resource_type: str) -> list[SearchParam]:
    """The parameters of a type that are indexed: a supported type and an expression."""
    return [param for param in registry.searchable_params(resource_type) if param.type in TYPES]


@cache
def _params(resource_type: str) -> tuple[SearchParam, ...]:
    return tuple(indexed_params(load_registry(), resource_type))


def extract_values(resource: dict[str, Any], param: SearchParam) -> list[Row]:
    """Every index row ``param`` gives for ``resource`` (deduplicated, in order)."""
    assert param.expression is not None
    root = resource["resourceType"]
    step, _ = compile_expression(param.expression, root)
    kind = TYPES[param.type]
    rows: dict[Row, None] = {}
    for node in step([Node(root, resource, root)]):
        for row in kind.extract(node):
            rows[row] = None
    return list(rows)


def extract_rows(
    resource: dict[str, Any], params: tuple[SearchParam, ...] | None = None
) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """(table, (param key, *value columns)) for every index row of ``resource``."""
    for param in params if params is not None else _params(resource["resourceType"]):
        for kind, sub, columns in extract_values(resource, param):
            yield TABLES[kind], (param.code if not sub else f"{param.code}:{sub}", *columns)


def insert_sql(table: str, placeholder: str = "?") -> str:
    kind = next(kind for kind in TYPES.values() if kind.table == table)
    names = (*INDEX_PREFIX, *kind.columns)
    return f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join(placeholder for _ in names)})"


def index_statements(
    rid: int, resource: dict[str, Any], placeholder: str = "?"
) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """(INSERT statement, rows) per table for one resource: what the store runs with ``executemany``."""
    resource_type = resource["resourceType"]
    by_table: dict[str, list[tuple[Any, ...]]] = {}
    for table, row in extract_rows(resource):
        by_table.setdefault(table, []).append((rid, resource_type, *row))
    return [(insert_sql(table, placeholder), rows) for table, rows in by_table.items()]


def delete_statements(placeholder: str = "?") -> list[str]:
    """One DELETE per index table, removing a resource's rows (bind its rid)."""
    return [f"DELETE FROM {table} WHERE rid = {placeholder}" for table in TABLES.values()]


INDEX_TABLES: tuple[str, ...] = tuple(TABLES.values())
