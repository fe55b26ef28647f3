"""Index extraction: a resource → its rows in the ``spidx_*`` tables, from the registry's expressions.

An ``Indexer`` is built from the registry the server runs on; the store calls it inside each write's transaction and
in ``reindex``. ``extract_values`` is also what search/match.py evaluates, so the SQL side and the oracle see the
same values.
Spec: https://hl7.org/fhir/R4/searchparameter.html (expression), https://hl7.org/fhir/R4/search.html
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from hashlib import blake2b
from typing import Any

import orjson

from fhir_imaging.fhir.registry import Registry, SearchParam
from fhir_imaging.fhir.resource import stamped
from fhir_imaging.search.composite import COMPOSITE_TABLES, ELEMENT_COLUMNS, composite_table, index_rows
from fhir_imaging.search.fhirpath import compile_plan
from fhir_imaging.search.idlist import pack_codes, unpack_codes
from fhir_imaging.search.types import TABLES, TYPES
from fhir_imaging.search.types.base import KEY_COLUMNS, Row, column_names

INDEX_PREFIX = column_names(KEY_COLUMNS)  # every index row starts with these
ID_TABLE = "spidx_token_id"
"""Token values of FHIR type ``id`` or ``oid`` (ImagingStudy's series and instance UIDs: a hundred a study): no system,
no text, one code each, and about 60 characters. Two small tables without a rowid hold them (storage/schema.py,
migrations 9 and 11):

- ``spidx_token_id`` (rid, type, param, lo, hi, codes): one row per resource and parameter, its least and greatest
  value (``:missing``, ``_sort``) and the sorted list of its values, compressed (search/idlist.py);
- ``ID_HASH_TABLE`` (h, rid): the search index, each value as a 64-bit hash (``id_hash``), with its resources.

A hash names candidates only: a search finds the resources whose rows carry the value's hash, then keeps those
whose list holds the value under the parameter (search/ids.py ``resolve_ids``), so a collision never returns a
wrong resource. A resource's deletes and updates compute the hashes to remove from its lists (``id_hashes``)."""
ID_HASH_TABLE = "spidx_token_id_hash"
ID_RID_TABLE = "spidx_token_id_rid"  # migration 9's list of a resource's hashes, dropped by migration 11
ID_KINDS = frozenset({"id", "oid"})


def id_hash(param: str, code: str) -> int:
    """The 64-bit (signed) key of an id/oid value of a parameter in ``ID_HASH_TABLE``: 32 bits hashed from the value
    without its last dot-separated component, then 32 bits hashed from the whole value. The values of one resource
    mostly extend one another (a DICOM instance UID is typically its series' UID or root and a number), so they
    share the high bits and land together in the index: a write changes a few of its pages, not one a value (a
    hash of the whole value alone spread a study's hundred UIDs over a hundred pages: twice the WAL a create)."""
    low = blake2b(f"{param}\x00{code}".encode(), digest_size=4).digest()
    return int.from_bytes(_head_hash(param, code.rpartition(".")[0]) + low, "big", signed=True)


def id_hashes(lists: Iterable[tuple[str, bytes | memoryview]]) -> list[int]:
    """The distinct hashes of the values in (parameter, stored list) pairs: a resource's rows in ``ID_HASH_TABLE``."""
    return list(dict.fromkeys(id_hash(param, code) for param, packed in lists for code in unpack_codes(packed)))


@lru_cache(maxsize=4096)
def _head_hash(param: str, head: str) -> bytes:
    """The high half of ``id_hash`` (a series' instances share it: hashed once)."""
    return blake2b(f"{param}\x00{head}".encode(), digest_size=4).digest()


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
        values = ", ".join(placeholder for _ in range(6))
        return f"INSERT INTO {ID_TABLE} (rid, type, param, lo, hi, codes) VALUES ({values})"
    if table == ID_HASH_TABLE:  # a 64-bit collision inside one resource: one row is enough
        return f"INSERT INTO {table} (h, rid) VALUES ({placeholder}, {placeholder}) ON CONFLICT DO NOTHING"
    if table in COMPOSITE_TABLES.values():
        kind = next(kind for name, kind in TYPES.items() if COMPOSITE_TABLES[name] == table)
        names = (*INDEX_PREFIX, *column_names(ELEMENT_COLUMNS), *column_names(kind.value_columns))
    else:
        kind = next(kind for kind in TYPES.values() if kind.table == table)
        names = (*INDEX_PREFIX, *column_names(kind.value_columns))
    return f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join(placeholder for _ in names)})"


LATE_FIELDS = ("lastUpdated", "versionId")  # what a write stamps inside its transaction (fhir/resource.py stamped)
PREPARED_STAMP = "1970-01-01T00:00:00Z"


@dataclass(frozen=True, slots=True)
class Prepared:
    """A resource's index rows computed before its write transaction (``Indexer.prepare``), rid 0 in each: every
    parameter's but those that read what the write stamps (``LATE_FIELDS``), which the write computes itself. A
    write uses them only for the same id and the same content (``source``, the resource as prepared)."""

    resource_id: str
    source: bytes
    by_table: dict[str, list[tuple[Any, ...]]]


class Indexer:
    """A resource → its index rows, for the searchable parameters of one registry (extractors compiled once per
    resource type)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._extractors: dict[str, tuple[tuple[str, Extract, bool, bool], ...]] = {}
        self._composites: dict[str, tuple[SearchParam, ...]] = {}

    def extractors(self, resource_type: str) -> tuple[tuple[str, Extract, bool, bool], ...]:
        """(code, extractor, whether its rows go to ``ID_TABLE``, whether it reads ``LATE_FIELDS``) for every
        searchable parameter of a type."""
        found = self._extractors.get(resource_type)
        if found is None:
            found = self._extractors[resource_type] = tuple(
                (
                    param.code,
                    compile_extractor(param.expression or "", resource_type, param.type),
                    param_table(param) == ID_TABLE,
                    any(name in (param.expression or "") for name in LATE_FIELDS),
                )
                for param in self.registry.searchable_params(resource_type)
                if param.type != "composite"
            )
        return found

    def has_ids(self, resource_type: str) -> bool:
        """Whether a type has parameters whose rows go to ``ID_TABLE`` (only then has an update or delete hashes to
        remove: ``drop_id_hashes``)."""
        return any(ids for _, _, ids, _ in self.extractors(resource_type))

    def composites(self, resource_type: str) -> tuple[SearchParam, ...]:
        """The searchable composite parameters of a type (their rows: search/composite.py)."""
        found = self._composites.get(resource_type)
        if found is None:
            params = self.registry.searchable_params(resource_type)
            found = self._composites[resource_type] = tuple(param for param in params if param.type == "composite")
        return found

    def statements(
        self, rid: int, resource: dict[str, Any], placeholder: str = "?", prepared: Prepared | None = None
    ) -> list[tuple[str, list[tuple[Any, ...]]]]:
        """(INSERT statement, rows) per table for one resource: what the store runs with ``executemany``. With
        ``prepared`` (made for this resource's content and id: the caller checks, ``usable``), only the parameters
        that read ``LATE_FIELDS`` are extracted here."""
        if prepared is None:
            by_table = self.rows(rid, resource, None)
        else:
            by_table = {table: with_rid(table, rows, rid) for table, rows in prepared.by_table.items()}
            for table, rows in self.rows(rid, resource, True).items():
                by_table.setdefault(table, []).extend(rows)
        return [(insert_sql(table, placeholder), rows) for table, rows in by_table.items()]

    def prepare(self, resource_id: str, resource: dict[str, Any]) -> Prepared:
        """The rows of ``resource`` as it will be written with ``resource_id``, computed ahead of its write (outside
        the database's write lock: extraction is most of a write's own work)."""
        document = stamped(resource, resource_id, 1, PREPARED_STAMP)
        return Prepared(resource_id, orjson.dumps(resource), self.rows(0, document, False))

    @staticmethod
    def usable(prepared: Prepared | None, resource_id: str, resource: dict[str, Any]) -> Prepared | None:
        """``prepared`` when it was made for this id and content, else None."""
        if prepared is None or prepared.resource_id != resource_id or orjson.dumps(resource) != prepared.source:
            return None
        return prepared

    def rows(self, rid: int, resource: dict[str, Any], late: bool | None) -> dict[str, list[tuple[Any, ...]]]:
        """Rows per table of the parameters that read ``LATE_FIELDS`` (``late`` True), of the others (False), or of
        every one (None)."""
        resource_type = resource["resourceType"]
        by_table: dict[str, list[tuple[Any, ...]]] = {}
        tables = TABLES
        seen: set[int] = set()
        for code, extract, ids, reads_late in self.extractors(resource_type):
            if late is not None and reads_late != late:
                continue
            rows = extract(resource)
            if not rows:
                continue
            head = (rid, resource_type, code)
            if ids:  # every row is ('', value, None): the value alone
                codes = [columns[1] for _, _, columns in rows]
                by_table.setdefault(ID_TABLE, []).append((*head, min(codes), max(codes), pack_codes(codes)))
                hashes = []
                for value in codes:  # a collision inside the resource (any parameter): its row once
                    h = id_hash(code, value)
                    if h not in seen:
                        seen.add(h)
                        hashes.append(h)
                by_table.setdefault(ID_HASH_TABLE, []).extend([(h, rid) for h in hashes])
                continue
            for kind, sub, columns in rows:
                table = tables[kind]
                out = by_table.get(table)
                if out is None:
                    out = by_table[table] = []
                out.append((*head, *columns) if not sub else (rid, resource_type, f"{code}:{sub}", *columns))
        if late is not True:  # no composite parameter reads what a write stamps (test_search_extract_equivalence)
            for param in self.composites(resource_type):
                for table, composite_rows in index_rows(rid, resource_type, param, resource).items():
                    by_table.setdefault(table, []).extend(composite_rows)
        return by_table


def with_rid(table: str, rows: list[tuple[Any, ...]], rid: int) -> list[tuple[Any, ...]]:
    """Rows made with rid 0 (prepared, or for a bulk write) with the resource's rid (``ID_HASH_TABLE``'s second)."""
    if table == ID_HASH_TABLE:
        return [(row[0], rid) for row in rows]
    return [(rid, *row[1:]) for row in rows]


def delete_statements(placeholder: str = "?", composites: bool = True) -> list[str]:
    """One DELETE per index table but ``ID_HASH_TABLE`` (``drop_id_hashes`` first), removing a resource's rows
    (bind its rid); ``composites``: the composite tables too (a resource of a type without composite parameters has
    no rows there: a statement a table saved per write)."""
    tables = INDEX_TABLES if composites else PLAIN_TABLES
    return [f"DELETE FROM {table} WHERE rid = {placeholder}" for table in tables if table != ID_HASH_TABLE]


HASHES_A_DELETE = 500  # hashes bound in one DELETE (far below every backend's limit on parameters)


def drop_id_hashes(conn: Any, rids: Sequence[int], placeholder: str = "?") -> None:
    """Remove the rows of ``rids`` from ``ID_HASH_TABLE`` (keyed by hash), their hashes computed from their lists in
    ``ID_TABLE``: before those rows go. ``conn`` is a DB-API connection of either backend."""
    select = f"SELECT param, codes FROM {ID_TABLE} WHERE rid = {placeholder}"
    for rid in rids:
        hashes = id_hashes((param, codes) for param, codes in conn.execute(select, (rid,)).fetchall() if codes)
        for start in range(0, len(hashes), HASHES_A_DELETE):
            chunk = hashes[start : start + HASHES_A_DELETE]
            marks = ", ".join(placeholder for _ in chunk)
            conn.execute(f"DELETE FROM {ID_HASH_TABLE} WHERE rid = {placeholder} AND h IN ({marks})", (rid, *chunk))


INDEX_TABLES: tuple[str, ...] = (ID_HASH_TABLE, *TABLES.values(), ID_TABLE, *COMPOSITE_TABLES.values())
PLAIN_TABLES: tuple[str, ...] = (ID_HASH_TABLE, *TABLES.values(), ID_TABLE)  # all but the composite ones
