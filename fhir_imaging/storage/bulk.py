"""Many prepared versions written in one transaction: the database side of ``fhir-imaging load --database``.

The caller (fhir_imaging/bulk_load.py) has validated each resource, stamped it as a first version, stored its body
(``bodies.pack``) and extracted its index rows with ``Indexer.statements`` (so whatever tables the index layout
uses, its rows go there), all in worker processes. Here, on one open transaction, the versions become what
``SqlTransaction.update`` / ``create`` would have made of them one by one:

- the current rows of the ids are read (and locked: ``Dialect.lock_current_row``) in a few statements; a resource
  that exists gets version n + 1, its body stamped again with that number (its previous body moves to its history
  row, its index rows are replaced: the UID hashes found from its stored lists), a new one version 1 and a
  ``rid`` reserved in one statement;
- then one ``executemany`` per table for every version at once: ``resource`` rows, ``resource_history`` rows (the
  transaction's ``tx``, raised to the previous version's), and the index rows of each index table (PostgreSQL:
  ``COPY``, ``copy_rows``).

A batch must not hold one id twice (the caller splits it there). The history order (``seq``) is the batch's order.

Into an empty database the caller first drops the indexes keyed by value (``defer_indexes``) and builds them at the
end (``build_deferred``): a load's rows then go to the end of each table and of its indexes keyed by rid, and each
other index is built by one sort, where inserting random keys into B-trees larger than the page cache made the
rate fall as the database grew.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from fhir_imaging.search.index import ID_HASH_TABLE, delete_statements, drop_id_hashes, with_rid
from fhir_imaging.storage.bodies import pack, unpack
from fhir_imaging.storage.dialect import Dialect

LOOKUP_IDS = 500  # ids per lookup statement (bound parameters stay far below every backend's limit)
Current = tuple[int, int, int]  # an existing resource's rid, version, and that version's tx
INSERT_RESOURCE = (
    "INSERT INTO resource (rid, type, id, version, last_updated, deleted, body) VALUES (?, ?, ?, 1, ?, 0, ?)"
)
UPDATE = "UPDATE resource SET version = ?, last_updated = ?, deleted = 0, body = ? WHERE rid = ?"
SUPERSEDE = (  # the previous version's body moves to its history row (as SqlTransaction._supersede does)
    "UPDATE resource_history SET body = (SELECT body FROM resource WHERE rid = ?) "
    "WHERE type = ? AND id = ? AND version = ?"
)
INSERT_HISTORY = (
    "INSERT INTO resource_history (rid, type, id, version, last_updated, method, body, tx) "
    "VALUES (?, ?, ?, ?, ?, ?, NULL, ?)"
)


@dataclass(frozen=True, slots=True)
class NewVersion:
    """One resource to write, prepared outside the transaction."""

    resource_type: str
    id: str
    method: str  # PUT | POST: the interaction the history records
    body: bytes  # the stored form (bodies.pack) of the resource stamped as version 1 at ``last_updated``
    last_updated: str
    index: list[tuple[str, list[tuple[Any, ...]]]]  # Indexer.statements(0, …): (INSERT, rows whose rid is 0)


def write_versions(conn: Any, dialect: Dialect, versions: Sequence[NewVersion], fresh_only: bool = False) -> None:
    """Write ``versions`` (distinct ids) on ``conn``, inside the caller's transaction; ``fresh_only``: refuse
    (``NotFresh``, before writing anything) a batch one of whose ids exists."""
    if not versions:
        return
    current = _current_rows(conn, dialect, versions)
    if current and fresh_only:
        raise NotFresh(f"{len(current)} of the ids exist")
    writer_tx = int(conn.execute(f"SELECT {dialect.writer_tx}").fetchone()[0])
    fresh = [version for version in versions if (version.resource_type, version.id) not in current]
    rids = _reserve_rids(conn, dialect, len(fresh))
    rid_of: dict[tuple[str, str], int] = dict(zip(((v.resource_type, v.id) for v in fresh), rids, strict=True))
    inserts, updates, supersede, history = [], [], [], []
    for version in versions:
        key = (version.resource_type, version.id)
        found = current.get(key)
        if found is None:
            rid = rid_of[key]
            inserts.append((rid, version.resource_type, version.id, version.last_updated, version.body))
            history.append((rid, *key, 1, version.last_updated, version.method, writer_tx))
            continue
        rid, number, previous_tx = found[0], found[1] + 1, found[2]
        rid_of[key] = rid
        body = restamped(version.body, number)
        supersede.append((rid, *key, found[1]))
        updates.append((number, version.last_updated, body, rid))
        history.append((rid, *key, number, version.last_updated, version.method, max(writer_tx, previous_tx)))
    sql = dialect.sql
    cursor = conn.cursor()
    if supersede:
        cursor.executemany(sql(SUPERSEDE), supersede)
        cursor.executemany(sql(UPDATE), updates)
        drop_id_hashes(conn, [row[3] for row in updates], dialect.placeholder)
        for statement in delete_statements(dialect.placeholder):
            cursor.executemany(statement, [(row[3],) for row in updates])
    if inserts:
        cursor.executemany(sql(INSERT_RESOURCE), inserts)
    cursor.executemany(sql(INSERT_HISTORY), history)
    for statement, rows in _index_rows(versions, rid_of).items():
        if dialect.name == "postgres":
            copy_rows(conn, statement, rows)
        else:
            cursor.executemany(statement, rows)


def restamped(stored: bytes, version: int) -> bytes:
    """A stored first-version body as version ``version``: ``meta.versionId`` replaced where ``stamped`` put it (the
    keys keep their order, so the bytes are those a write of that version makes)."""
    document = orjson.loads(unpack(stored))
    document["meta"]["versionId"] = str(version)
    return pack(orjson.dumps(document))


def _current_rows(
    conn: Any, dialect: Dialect, versions: Sequence[NewVersion]
) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(type, id) → (rid, version, tx of that version) of the ids that exist (deleted ones too), locked."""
    by_type: dict[str, list[str]] = {}
    for version in versions:
        by_type.setdefault(version.resource_type, []).append(version.id)
    found: dict[tuple[str, str], Current] = {}
    for resource_type, ids in by_type.items():
        for start in range(0, len(ids), LOOKUP_IDS):
            part = ids[start : start + LOOKUP_IDS]
            marks = ", ".join("?" for _ in part)
            statement = (
                "SELECT r.id, r.rid, r.version, (SELECT h.tx FROM resource_history h WHERE h.type = r.type "
                f"AND h.id = r.id AND h.version = r.version) FROM resource r WHERE r.type = ? AND r.id IN ({marks})"
                + dialect.lock_current_row
            )
            for resource_id, rid, number, tx in conn.execute(dialect.sql(statement), (resource_type, *part)):
                found[(resource_type, resource_id)] = (int(rid), int(number), int(tx or 0))
    return found


def _reserve_rids(conn: Any, dialect: Dialect, count: int) -> list[int]:
    """``count`` new rids: PostgreSQL takes them from the column's identity sequence (other writers may be taking
    theirs meanwhile); SQLite, which has one writer at a time, continues after the largest."""
    if count == 0:
        return []
    if dialect.name == "postgres":
        rows = conn.execute(
            "SELECT nextval(pg_get_serial_sequence('resource', 'rid')) FROM generate_series(1, %s)", (count,)
        ).fetchall()
        return sorted(int(row[0]) for row in rows)
    last = int(conn.execute("SELECT coalesce(max(rid), 0) FROM resource").fetchone()[0])
    return list(range(last + 1, last + 1 + count))


def _index_rows(versions: Sequence[NewVersion], rid_of: dict[tuple[str, str], int]) -> dict[str, list[tuple[Any, ...]]]:
    """Every version's index rows with its rid, grouped by statement (one per table)."""
    grouped: dict[str, list[tuple[Any, ...]]] = {}
    for version in versions:
        rid = rid_of[(version.resource_type, version.id)]
        for statement, rows in version.index:
            out = grouped.get(statement)
            if out is None:
                out = grouped[statement] = []
            # the rid is not always the first column (the UID hashes')
            out += with_rid(insert_table(statement), rows, rid)
    return grouped


def copy_rows(conn: Any, statement: str, rows: list[tuple[Any, ...]]) -> None:
    """PostgreSQL: the rows of an ``INSERT INTO table (columns) VALUES …`` statement through ``COPY … FROM STDIN``
    (psycopg 3), several times faster than inserting them."""
    with conn.cursor().copy(copy_statement(statement)) as copy:
        for row in rows:
            copy.write_row(row)


def copy_statement(insert: str) -> str:
    """``INSERT INTO t (a, b) VALUES (…)`` → ``COPY t (a, b) FROM STDIN``."""
    head, values, _ = insert.partition(" VALUES ")
    if not values or not head.startswith("INSERT INTO "):
        raise ValueError(f"not an INSERT … VALUES statement: {insert}")
    return "COPY " + head.removeprefix("INSERT INTO ") + " FROM STDIN"


def insert_table(insert: str) -> str:
    """The table of an ``INSERT INTO t (…) VALUES (…)`` statement."""
    return copy_statement(insert).removeprefix("COPY ").partition(" ")[0]


# -- indexes built after a load into an empty database ---------------------------------------------------------------

DEFERRED_TABLE = "bulk_load_deferred"
"""The statements that rebuild what ``defer_indexes`` dropped, in order: present only while a load defers them (or
after such a load was killed: ``build_deferred`` runs them when the database is next opened)."""
LOAD_HASH_TABLE = f"{ID_HASH_TABLE}_load"


def first_column(definition: str) -> str | None:
    """The first key column of a ``CREATE INDEX … ON table [USING method] (column, …)`` statement (SQLite's
    ``sqlite_master.sql`` or PostgreSQL's ``pg_indexes.indexdef``), lower-cased; None when there is none. String
    operations, not a regular expression (only the modules listed in tests/security/test_linear_regex.py use the
    backtracking engine)."""
    words = " ".join(definition.split())
    on = words.upper().find(" ON ")
    opening = words.find("(", on) if on >= 0 else -1
    if opening < 0:
        return None
    rest = words[opening + 1 :].lstrip()
    end = 0
    while end < len(rest) and (rest[end].isalnum() or rest[end] == "_"):
        end += 1
    return rest[:end].lower() or None


class NotFresh(Exception):
    """A batch written with ``fresh_only`` names an id that exists (``write_versions``): nothing of it was written."""


def defer_indexes(conn: Any, dialect: Dialect) -> bool:
    """When the database holds no resource: drop the index tables' indexes keyed by value (each row of a load would
    be inserted at a random place in them; a write of a resource's rows goes to the end of those keyed by rid, which
    stay), and on SQLite turn ``ID_HASH_TABLE`` (keyed by hash, without a rowid) into a table the rows are appended
    to; the statements that build them again, from the rows loaded, are kept in ``DEFERRED_TABLE``, in the same
    transaction. Whether it did. Searches stay right meanwhile (they read the tables whole)."""
    if conn.execute("SELECT 1 FROM resource LIMIT 1").fetchone() is not None:
        return False
    if conn.execute(dialect.sql(dialect.table_exists), (DEFERRED_TABLE,)).fetchone() is not None:
        return True
    drops, builds = _deferrable(conn, dialect)
    conn.execute(f"CREATE TABLE {DEFERRED_TABLE} (step INTEGER NOT NULL, statement TEXT NOT NULL)")
    cursor = conn.cursor()
    cursor.executemany(
        dialect.sql(f"INSERT INTO {DEFERRED_TABLE} (step, statement) VALUES (?, ?)"), list(enumerate(builds))
    )
    for statement in drops:
        conn.execute(statement)
    return True


def build_deferred(conn: Any, dialect: Dialect) -> bool:
    """Build what ``defer_indexes`` dropped (each index by one sort of its rows), inside the caller's transaction;
    whether there was anything to build."""
    if conn.execute(dialect.sql(dialect.table_exists), (DEFERRED_TABLE,)).fetchone() is None:
        return False
    for (statement,) in conn.execute(f"SELECT statement FROM {DEFERRED_TABLE} ORDER BY step").fetchall():
        conn.execute(statement)
    conn.execute(f"DROP TABLE {DEFERRED_TABLE}")
    return True


def _deferrable(conn: Any, dialect: Dialect) -> tuple[list[str], list[str]]:
    """The statements that drop the deferred indexes, and those that build them again."""
    drops: list[str] = []
    builds: list[str] = []
    if dialect.name == "postgres":
        indexes = conn.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = current_schema() "
            "AND i.tablename LIKE 'spidx%' AND NOT EXISTS (SELECT 1 FROM pg_constraint c "
            "WHERE c.conname = i.indexname AND c.connamespace = (SELECT oid FROM pg_namespace "
            "WHERE nspname = current_schema())) ORDER BY i.indexname"
        ).fetchall()
        keys = conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass "
            "AND contype = 'p'",
            (ID_HASH_TABLE,),
        ).fetchall()
        for name, definition in keys:
            drops.append(f"ALTER TABLE {ID_HASH_TABLE} DROP CONSTRAINT {name}")
            builds.append(f"ALTER TABLE {ID_HASH_TABLE} ADD CONSTRAINT {name} {definition}")
    else:
        indexes = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
            "AND tbl_name LIKE 'spidx%' ORDER BY name"
        ).fetchall()
        create = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (ID_HASH_TABLE,))
        drops += [
            f"DROP TABLE {ID_HASH_TABLE}",
            f"CREATE TABLE {ID_HASH_TABLE} (h INTEGER NOT NULL, rid INTEGER NOT NULL)",
        ]
        builds += [
            f"ALTER TABLE {ID_HASH_TABLE} RENAME TO {LOAD_HASH_TABLE}",
            str(create.fetchone()[0]),
            f"INSERT INTO {ID_HASH_TABLE} (h, rid) SELECT h, rid FROM {LOAD_HASH_TABLE} ORDER BY h, rid",
            f"DROP TABLE {LOAD_HASH_TABLE}",
        ]
    for name, definition in indexes:
        if first_column(str(definition)) == "rid":
            continue  # a resource's rows: appended to by a load, read by its updates
        drops.append(f"DROP INDEX {name}")
        builds.append(str(definition))
    return drops, builds
