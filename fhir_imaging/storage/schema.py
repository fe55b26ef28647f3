"""The database schema, as versioned migrations (oldest first).

``resource`` holds the current version of every resource (``rid`` is the surrogate key index tables refer to);
``resource_history`` holds every version, ``(tx, seq)`` ordering the server-wide history (storage/history.py). The
body of a current version is stored once, in ``resource``: its history row holds NULL until a newer version
supersedes it (storage/sqlstore.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson

from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.search.composite import index_rows
from fhir_imaging.search.composite import table_ddl as composite_table_ddl
from fhir_imaging.search.idlist import pack_codes
from fhir_imaging.search.index import (
    ID_HASH_TABLE,
    ID_RID_TABLE,
    ID_TABLE,
    Indexer,
    extract_values,
    id_hash,
    insert_sql,
    param_table,
)
from fhir_imaging.search.types import TYPES
from fhir_imaging.search.types.base import KEY_COLUMNS, SearchType
from fhir_imaging.storage.bodies import unpack
from fhir_imaging.storage.dialect import POSTGRES, SQLITE, Dialect


def index_table(kind: SearchType) -> tuple[str, ...]:
    """The DDL of a parameter type's index table, as its search type declares it: every row the resource's rid and
    type and the parameter code (``KEY_COLUMNS``), then the type's value columns; its indexes, then
    ``<table>_rid`` (rid, param), a resource's rows (for deletes and ``EXISTS``).

    Migration 2 is built from these declarations: they describe the tables as that migration made them, and must
    not change. A new column or index is a new migration (as migration 3 made ``spidx_token_text`` partial).
    """
    columns = ", ".join(
        f"{column.name} {column.sql_type}{'' if column.nullable else ' NOT NULL'}"
        for column in (*KEY_COLUMNS, *kind.value_columns)
    )
    indexes = (*kind.indexes, ("rid", ("rid", "param")))
    return (
        f"CREATE TABLE {kind.table} ({columns})",
        *(f"CREATE INDEX {kind.table}_{suffix} ON {kind.table} ({', '.join(names)})" for suffix, names in indexes),
    )


def id_token_migration(conn: Any) -> tuple[str, ...]:
    """Migration 6: the token rows of ``id``/``oid`` values (search/index.py ``ID_TABLE``) move to their own compact
    table: keyed by (rid, param, code) without a rowid, so a write appends them, with one index for searches,
    instead of a rowid table and four indexes. Which parameters: those of the shipped registry the rule selects
    (``param_table``); a server run on other definitions rebuilds its rows with ``reindex``. Built when it is applied
    to ``conn`` (``statements``): the rule compiles every token parameter's expression, so a database with no token
    rows to move (a new one) skips it."""
    table = (
        f"CREATE TABLE {ID_TABLE} (rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL, code TEXT NOT NULL, "
        "PRIMARY KEY (rid, param, code)) WITHOUT ROWID"
    )
    index = f"CREATE INDEX {ID_TABLE}_code ON {ID_TABLE} (type, param, code, rid)"
    if conn.execute("SELECT 1 FROM spidx_token LIMIT 1").fetchone() is None:
        return table, index
    registry = load_registry()
    pairs = sorted(
        (resource_type, param.code)
        for resource_type in registry.resource_types
        for param in registry.searchable_params(resource_type)
        if param_table(param) == ID_TABLE
    )
    moved = " OR ".join(f"(type = '{resource_type}' AND param = '{code}')" for resource_type, code in pairs)
    return (
        table,
        f"INSERT INTO {ID_TABLE} (rid, type, param, code) SELECT rid, type, param, code FROM spidx_token "
        f"WHERE ({moved}) AND code IS NOT NULL ORDER BY rid, param, code ON CONFLICT DO NOTHING",
        f"DELETE FROM spidx_token WHERE {moved}",
        index,
    )


FILL_BATCH = 500  # resources read at a time by the composite migration


def composite_migration(conn: Any) -> tuple[str, ...]:
    """Migration 8: the composite index tables (search/composite.py ``table_ddl``), one per component type, and the
    rows of the resources already stored, so that no ``reindex`` is needed: only current resources of the types
    that have composite parameters in the shipped registry are read (Observation, DocumentReference, Group…: few
    in an imaging database), each one's composite rows computed as a write would. Applied to ``conn``, it makes the
    tables and fills them itself, in the migration's transaction, and returns their indexes (built after the rows:
    the faster order); without ``conn``, every statement (the schema as this migration leaves an empty database)."""
    tables = [composite_table_ddl(kind) for kind in TYPES]
    creates = tuple(ddl[0] for ddl in tables)
    indexes = tuple(statement for ddl in tables for statement in ddl[1:])
    if conn is None:
        return (*creates, *indexes)
    dialect = SQLITE if isinstance(conn, sqlite3.Connection) else POSTGRES
    for statement in creates:
        conn.execute(dialect.ddl(statement))
    _fill_composites(conn, dialect)
    return indexes


def _fill_composites(conn: Any, dialect: Dialect) -> None:
    registry = load_registry()
    indexer = Indexer(registry)
    types = sorted(name for name in registry.resource_types if indexer.composites(name))
    marks = ", ".join("?" for _ in types)
    select = dialect.sql(
        f"SELECT rid, body FROM resource WHERE deleted = 0 AND type IN ({marks}) AND rid > ? ORDER BY rid LIMIT ?"
    )
    last = 0
    while batch := conn.execute(select, (*types, last, FILL_BATCH)).fetchall():
        by_table: dict[str, list[Any]] = {}
        for rid, body in batch:
            resource = orjson.loads(unpack(body))
            for param in indexer.composites(resource["resourceType"]):
                for table, rows in index_rows(rid, resource["resourceType"], param, resource).items():
                    by_table.setdefault(table, []).extend(rows)
        for table, rows in by_table.items():
            conn.cursor().executemany(insert_sql(table, dialect.placeholder), rows)
        last = batch[-1][0]


HASH_ROWS_A_STATEMENT = 500
RIDS_A_STEP = 5000


def id_hash_migration(conn: Any) -> Iterator[str]:
    """Migration 9: id/oid values as 64-bit hashes (search/index.py ``ID_TABLE``): the table of migration 7, which
    held each value's text twice (its rows and its index, two thirds of a study's bytes), becomes one row per
    resource and parameter (its least and greatest value, for ``:missing`` and ``_sort``), and the values'
    hashes go to ``ID_HASH_TABLE`` (the search index) and ``ID_RID_TABLE`` (a resource's hashes). The hashes are
    computed here from the rows being replaced, ``RIDS_A_STEP`` resources at a time (memory stays flat however
    large the database), and written as literal integers (the statements run on either backend)."""
    old = f"{ID_TABLE}_v7"
    yield f"DROP INDEX {ID_TABLE}_code"
    yield f"ALTER TABLE {ID_TABLE} RENAME TO {old}"
    yield (
        f"CREATE TABLE {ID_TABLE} (rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL, lo TEXT NOT NULL, "
        "hi TEXT NOT NULL, PRIMARY KEY (rid, param)) WITHOUT ROWID"
    )
    yield f"CREATE TABLE {ID_HASH_TABLE} (h INTEGER NOT NULL, rid INTEGER NOT NULL, PRIMARY KEY (h, rid)) WITHOUT ROWID"
    yield f"CREATE TABLE {ID_RID_TABLE} (rid INTEGER NOT NULL, h INTEGER NOT NULL, PRIMARY KEY (rid, h)) WITHOUT ROWID"
    yield (
        f"INSERT INTO {ID_TABLE} (rid, type, param, lo, hi) SELECT rid, min(type), param, min(code), max(code) "
        f"FROM {old} GROUP BY rid, param"
    )
    last = 0 if conn is None else int(conn.execute(f"SELECT coalesce(max(rid), 0) FROM {old}").fetchone()[0])
    for low in range(0, last, RIDS_A_STEP):
        select = f"SELECT rid, param, code FROM {old} WHERE rid > {low} AND rid <= {low + RIDS_A_STEP}"
        pairs = sorted({(rid, id_hash(param, code)) for rid, param, code in conn.execute(select).fetchall()})
        for start in range(0, len(pairs), HASH_ROWS_A_STATEMENT):
            chunk = pairs[start : start + HASH_ROWS_A_STATEMENT]
            yield f"INSERT INTO {ID_RID_TABLE} (rid, h) VALUES {', '.join(f'({rid}, {h})' for rid, h in chunk)}"
            yield f"INSERT INTO {ID_HASH_TABLE} (h, rid) VALUES {', '.join(f'({h}, {rid})' for rid, h in chunk)}"
    yield f"DROP TABLE {old}"


def body_storage_migration(conn: Any) -> tuple[str, ...]:
    """Migration 10, PostgreSQL only: bodies stay in their row up to a page, and are never compressed again. Bodies
    are LZ4-compressed already (storage/bodies.py); by default PostgreSQL would try to compress one again (pglz,
    in vain) and move it out of line to the TOAST table once its row passes 2 kB — a third of the studies of the
    benchmark's corpus, each of whose reads by id then takes a TOAST index lookup and a chunk per 2 kB more. With
    ``toast_tuple_target`` at its largest (8160 bytes) a row that fits a page keeps its body; ``STORAGE EXTERNAL``
    stores a larger body out of line as it is. Rows written before keep their layout until they are written again
    (``VACUUM FULL`` does not bring TOASTed values back). SQLite has no such thing: nothing to do."""
    if conn is None or isinstance(conn, sqlite3.Connection):
        return ()
    return (
        "ALTER TABLE resource SET (toast_tuple_target = 8160)",
        "ALTER TABLE resource ALTER COLUMN body SET STORAGE EXTERNAL",
        "ALTER TABLE resource_history ALTER COLUMN body SET STORAGE EXTERNAL",
    )


LIST_RIDS_A_STEP = 500  # rids read at a time by migration 11 (a few hundred bodies)


def id_list_migration(conn: Any) -> tuple[str, ...]:
    """Migration 11: each resource's id/oid values of a parameter, sorted and compressed (search/idlist.py), in its
    row of ``ID_TABLE`` (column ``codes``); searches confirm a hash's candidates against them instead of parsing
    bodies, and deletes compute the hashes to remove from them, so migration 9's list of a resource's hashes
    (``ID_RID_TABLE``) goes. The lists are computed from the stored bodies, ``LIST_RIDS_A_STEP`` rids at a time,
    with the shipped registry's expressions; a row of a parameter it does not index as ids (a server run on other
    definitions: ``reindex`` rebuilds those) is dropped with its hashes, and so is any hash its lists do not give."""
    column = f"ALTER TABLE {ID_TABLE} ADD COLUMN codes BLOB"
    if conn is None:
        return column, f"DROP TABLE {ID_RID_TABLE}"
    dialect = SQLITE if isinstance(conn, sqlite3.Connection) else POSTGRES
    conn.execute(dialect.ddl(column))
    _fill_id_lists(conn, dialect)
    return (f"DROP TABLE {ID_RID_TABLE}",)


def _fill_id_lists(conn: Any, dialect: Dialect) -> None:
    registry = load_registry()
    rows = dialect.sql(
        f"SELECT t.rid, t.type, t.param, r.body FROM {ID_TABLE} t JOIN resource r ON r.rid = t.rid "
        "WHERE t.rid > ? AND t.rid <= ? ORDER BY t.rid"
    )
    stored = dialect.sql(f"SELECT rid, h FROM {ID_RID_TABLE} WHERE rid > ? AND rid <= ?")
    update = dialect.sql(f"UPDATE {ID_TABLE} SET codes = ? WHERE rid = ? AND param = ?")
    drop_row = dialect.sql(f"DELETE FROM {ID_TABLE} WHERE rid = ? AND param = ?")
    drop_hash = dialect.sql(f"DELETE FROM {ID_HASH_TABLE} WHERE h = ? AND rid = ?")
    largest = (
        f"SELECT coalesce(max(m), 0) FROM (SELECT max(rid) AS m FROM {ID_TABLE} "
        f"UNION ALL SELECT max(rid) FROM {ID_RID_TABLE}) u"
    )
    for low in range(0, int(conn.execute(largest).fetchone()[0]), LIST_RIDS_A_STEP):
        bounds = (low, low + LIST_RIDS_A_STEP)
        lists: list[tuple[bytes, int, str]] = []
        dropped: list[tuple[int, str]] = []
        kept: set[tuple[int, int]] = set()
        documents: dict[int, dict[str, Any]] = {}
        for rid, resource_type, code, body in conn.execute(rows, bounds).fetchall():
            param = registry.params_for(resource_type).get(code)
            if param is None or param.expression is None or param_table(param) != ID_TABLE:
                dropped.append((rid, code))
                continue
            if rid not in documents:
                documents[rid] = orjson.loads(unpack(body))
            values = [columns[1] for _, _, columns in extract_values(documents[rid], param)]
            lists.append((pack_codes(values), rid, code))
            kept.update((rid, id_hash(code, value)) for value in values)
        stale = [(h, rid) for rid, h in conn.execute(stored, bounds).fetchall() if (rid, h) not in kept]
        cursor = conn.cursor()
        for statement, params in ((update, lists), (drop_row, dropped), (drop_hash, stale)):
            if params:
                cursor.executemany(statement, params)


Migration = tuple[str, ...] | Callable[[Any], Iterable[str]]


def statements(migration: Migration, conn: Any = None) -> Iterable[str]:
    """A migration's statements; one built when it is applied is built for ``conn``, the database it is applied to
    (inside the transaction that applies it), and may be produced one by one: each runs before the next is made."""
    return migration(conn) if callable(migration) else migration


MIGRATIONS: tuple[Migration, ...] = (
    (
        """CREATE TABLE resource (
            rid INTEGER PRIMARY KEY,
            type TEXT NOT NULL,
            id TEXT NOT NULL,
            version INTEGER NOT NULL,
            last_updated TEXT NOT NULL,
            deleted INTEGER NOT NULL DEFAULT 0,
            body BLOB,
            UNIQUE (type, id)
        )""",
        """CREATE TABLE resource_history (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            rid INTEGER NOT NULL,
            type TEXT NOT NULL,
            id TEXT NOT NULL,
            version INTEGER NOT NULL,
            last_updated TEXT NOT NULL,
            method TEXT NOT NULL,
            body BLOB,
            UNIQUE (type, id, version)
        )""",
        "CREATE INDEX resource_history_by_type ON resource_history (type, seq)",
        "CREATE INDEX resource_by_type_updated ON resource (type, last_updated)",
    ),
    # 2: search indexes, one table per parameter type (fhir_imaging/search/index.py fills them at write time).
    (
        *(statement for kind in TYPES.values() for statement in index_table(kind)),
        "CREATE INDEX resource_by_type_id ON resource (type, rid)",
    ),
    # 3: most token rows (instance UIDs, codes without display) have no text: index only those that do.
    (
        "DROP INDEX spidx_token_text",
        "CREATE INDEX spidx_token_text ON spidx_token (type, param, text, rid) WHERE text IS NOT NULL",
    ),
    # 4: the built-in token endpoint (auth/backend.py): the key this server signs access tokens with, made on first
    # use and shared by every process on the database, and the client assertions spent (jti), kept until they expire.
    (
        "CREATE TABLE auth_key (name TEXT PRIMARY KEY, pem TEXT NOT NULL, created TEXT NOT NULL)",
        "CREATE TABLE auth_assertion (client_id TEXT NOT NULL, jti TEXT NOT NULL, expires REAL NOT NULL, "
        "PRIMARY KEY (client_id, jti))",
        "CREATE INDEX auth_assertion_expires ON auth_assertion (expires)",
    ),
    # 5: Bulk Data export jobs (export/jobs.py): any server process answers a job's status; one runs it, holding a
    # lease that another takes over when it lapses.
    (
        """CREATE TABLE export_job (
            id TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            request TEXT NOT NULL,
            owner TEXT NOT NULL,
            base TEXT NOT NULL,
            request_url TEXT NOT NULL,
            transaction_time TEXT NOT NULL,
            snapshot_seq INTEGER NOT NULL,
            lease_owner TEXT,
            lease_until REAL,
            progress TEXT,
            manifest TEXT,
            created REAL NOT NULL,
            finished REAL
        )""",
        "CREATE INDEX export_job_by_state ON export_job (state, created)",
    ),
    # 6: the history's commit order (storage/history.py). ``tx`` is the id of the transaction that wrote a version,
    # raised to its previous version's ``tx``; type and system histories follow (tx, seq) and show only versions
    # below the oldest transaction still in flight, so a version committed late never lands behind a page already
    # served. Versions written before this migration have committed: 0. An export's snapshot is bounded the same way
    # (jobs made before this migration keep their sequence bound alone).
    (
        "ALTER TABLE resource_history ADD COLUMN tx INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX resource_history_by_tx ON resource_history (tx, seq)",
        "CREATE INDEX resource_history_by_type_tx ON resource_history (type, tx, seq)",
        "DROP INDEX resource_history_by_type",
        "ALTER TABLE export_job ADD COLUMN snapshot_tx INTEGER NOT NULL DEFAULT 9223372036854775807",
    ),
    # 7: ImagingStudy's series and instance UIDs (a hundred token rows a study) in a compact table of their own.
    id_token_migration,
    # 8: composite search parameters (search/composite.py): one table per component type, each row a component's
    # value with the position of its element, filled for the resources already stored.
    composite_migration,
    # 9: ImagingStudy's series and instance UIDs as 64-bit hashes, checked against the stored body when searched.
    id_hash_migration,
    # 10: PostgreSQL keeps a body in its row up to a page, and never compresses it again.
    body_storage_migration,
    # 11: each resource's UIDs of a parameter, sorted and compressed in its row: a hash's candidates are checked
    # against them, not against their bodies; the list of a resource's hashes goes.
    id_list_migration,
)

SCHEMA_VERSION = len(MIGRATIONS)
