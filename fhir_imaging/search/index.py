"""Index extraction: a resource → its rows in the ``spidx_*`` tables, from the registry's expressions.

An ``Indexer`` is built from the registry the server runs on; the store calls it inside each write's transaction and
in ``reindex``. ``extract_values`` is also what search/match.py evaluates, so the SQL side and the oracle see the
same values.
Spec: https://hl7.org/fhir/R4/searchparameter.html (expression), https://hl7.org/fhir/R4/search.html
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from fhir_imaging.fhir.registry import Registry, SearchParam
from fhir_imaging.search.composite import COMPOSITE_TABLES, ELEMENT_COLUMNS, composite_table, index_rows
from fhir_imaging.search.fhirpath import compile_plan
from fhir_imaging.search.types import TABLES, TYPES
from fhir_imaging.search.types.base import KEY_COLUMNS, Row, column_names

INDEX_PREFIX = column_names(KEY_COLUMNS)  # every index row starts with these
ID_TABLE = "spidx_token_id"
"""Token values of FHIR type ``id`` or ``oid`` (ImagingStudy's series and instance UIDs: a hundred a study): no system,
no text, one code each. Their own table holds them compactly (storage/schema.py, migration 7): rows (rid, type,
param, code) keyed by the resource (rid, param, code), appended as rids grow, and one index (type, param, code, rid)
for searches, which compile with ``compile_id_token`` (search/types/token.py)."""
ID_KINDS = frozenset({"id", "oid"})


Extract = Callable[[dict[str, Any]], list[Row]]


@cache
def compile_extractor(expression: str, resource_type: str, param_type: str) -> Extract:
    """resource → its index rows for one parameter (deduplicated, in order), compiled once per expression."""
    plan, _ = compile_plan(expression, resource_type)
    kind = TYPES[param_type]
    run = plan.run
    if plan.kind is not None:  # every value has one type: no Node built
        rows_of = kind.extractor(plan.kind)

        def extract(resource: dict[str, Any]) -> list[Row]:
            rows = rows_of(run([resource]))
            return list(dict.fromkeys(rows)) if len(rows) > 1 else rows

        return extract

    extractor = kind.extractor

    def extract_nodes(resource: dict[str, Any]) -> list[Row]:
        rows: list[Row] = []
        for node in run([resource]):
            rows += extractor(node.type)([node.value])
        return list(dict.fromkeys(rows)) if len(rows) > 1 else rows

    return extract_nodes


@cache
def holds_ids(expression: str, resource_type: str, param_type: str) -> bool:
    """Whether a parameter's rows go to ``ID_TABLE``: a token parameter whose expression yields values of FHIR type
    ``id`` or ``oid`` only (every row then is ('', value, None))."""
    if param_type != "token":
        return False
    plan, _ = compile_plan(expression, resource_type)
    return plan.kind in ID_KINDS


def param_table(param: SearchParam) -> str:
    """The index table that holds ``param``'s rows (a composite: its first component's, see search/composite.py)."""
    if param.type == "composite":
        return composite_table(param.parts[0].type)
    if param.expression is not None and holds_ids(param.expression, param.base, param.type):
        return ID_TABLE
    return TYPES[param.type].table


def extract_values(resource: dict[str, Any], param: SearchParam) -> list[Row]:
    """Every index row ``param`` gives for ``resource`` (deduplicated, in order)."""
    assert param.expression is not None
    return compile_extractor(param.expression, resource["resourceType"], param.type)(resource)


@cache
def insert_sql(table: str, placeholder: str = "?") -> str:
    if table == ID_TABLE:
        return f"INSERT INTO {ID_TABLE} (rid, type, param, code) VALUES ({', '.join(placeholder for _ in range(4))})"
    if table in COMPOSITE_TABLES.values():
        kind = next(kind for name, kind in TYPES.items() if COMPOSITE_TABLES[name] == table)
        names = (*INDEX_PREFIX, *column_names(ELEMENT_COLUMNS), *column_names(kind.value_columns))
    else:
        kind = next(kind for kind in TYPES.values() if kind.table == table)
        names = (*INDEX_PREFIX, *column_names(kind.value_columns))
    return f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join(placeholder for _ in names)})"


class Indexer:
    """A resource → its index rows, for the searchable parameters of one registry (extractors compiled once per
    resource type)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._extractors: dict[str, tuple[tuple[str, Extract, bool], ...]] = {}
        self._composites: dict[str, tuple[SearchParam, ...]] = {}

    def extractors(self, resource_type: str) -> tuple[tuple[str, Extract, bool], ...]:
        """(code, extractor, whether its rows go to ``ID_TABLE``) for every searchable parameter of a type."""
        found = self._extractors.get(resource_type)
        if found is None:
            found = self._extractors[resource_type] = tuple(
                (
                    param.code,
                    compile_extractor(param.expression or "", resource_type, param.type),
                    param_table(param) == ID_TABLE,
                )
                for param in self.registry.searchable_params(resource_type)
                if param.type != "composite"
            )
        return found

    def composites(self, resource_type: str) -> tuple[SearchParam, ...]:
        """The searchable composite parameters of a type (their rows: search/composite.py)."""
        found = self._composites.get(resource_type)
        if found is None:
            params = self.registry.searchable_params(resource_type)
            found = self._composites[resource_type] = tuple(param for param in params if param.type == "composite")
        return found

    def statements(
        self, rid: int, resource: dict[str, Any], placeholder: str = "?"
    ) -> list[tuple[str, list[tuple[Any, ...]]]]:
        """(INSERT statement, rows) per table for one resource: what the store runs with ``executemany``."""
        resource_type = resource["resourceType"]
        by_table: dict[str, list[tuple[Any, ...]]] = {}
        tables = TABLES
        for code, extract, ids in self.extractors(resource_type):
            rows = extract(resource)
            if not rows:
                continue
            head = (rid, resource_type, code)
            if ids:  # every row is ('', value, None): the value alone
                out = by_table.get(ID_TABLE)
                if out is None:
                    out = by_table[ID_TABLE] = []
                out += [(*head, columns[1]) for _, _, columns in rows]
                continue
            for kind, sub, columns in rows:
                table = tables[kind]
                out = by_table.get(table)
                if out is None:
                    out = by_table[table] = []
                out.append((*head, *columns) if not sub else (rid, resource_type, f"{code}:{sub}", *columns))
        for param in self.composites(resource_type):
            for table, composite_rows in index_rows(rid, resource_type, param, resource).items():
                by_table.setdefault(table, []).extend(composite_rows)
        return [(insert_sql(table, placeholder), rows) for table, rows in by_table.items()]


def delete_statements(placeholder: str = "?", composites: bool = True) -> list[str]:
    """One DELETE per index table, removing a resource's rows (bind its rid); ``composites``: the composite tables
    too (a resource of a type without composite parameters has no rows there: a statement a table saved per write)."""
    tables = INDEX_TABLES if composites else PLAIN_TABLES
    return [f"DELETE FROM {table} WHERE rid = {placeholder}" for table in tables]


INDEX_TABLES: tuple[str, ...] = (*TABLES.values(), ID_TABLE, *COMPOSITE_TABLES.values())
PLAIN_TABLES: tuple[str, ...] = (*TABLES.values(), ID_TABLE)  # every index table but the composite ones
