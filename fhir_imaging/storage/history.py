"""The server-wide history in commit order, so that paging never skips a version: http.html#history

A history page is newest first and its ``next`` link names the last version served; a client following the links
(or polling with that cursor) must see every version exactly once. Ordering by the history sequence alone does not
give that on PostgreSQL: concurrent transactions take sequence numbers in one order and may commit in another, so a
version committed late could land behind a page already served.

Each history row therefore carries ``tx``: the id of the transaction that wrote it (``Dialect.writer_tx``), raised
to the previous version's ``tx`` (so one resource's versions stay in version order). History is ordered by
``(tx, seq)``, and type and system histories show only the versions whose ``tx`` is below the *horizon*: the oldest
transaction still in flight when the statement runs (``Dialect.history_horizon``, PostgreSQL's
``pg_snapshot_xmin(pg_current_snapshot())``). Every version below the horizon has committed (or rolled back) and
every version yet to commit has ``tx`` at or above it, so what a page shows never changes afterwards: the versions
served are a prefix of the order, which only grows at its newest end. The cost is a delay: a version appears in
type and system histories once every transaction older than its own has ended.

An instance history needs no horizon: a resource's versions are written one after another under its row lock, so a
newer version always sorts after the ones served.

SQLite has one writer at a time, so versions commit in sequence order: ``tx`` is 0 and the horizon is unbounded,
through the same statements.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from fhir_imaging.storage.base import HistoryQuery, Version
from fhir_imaging.storage.bodies import unpack
from fhir_imaging.storage.dialect import Dialect

# The current version's body is stored once, in ``resource``; its history row holds NULL until a newer version
# supersedes it (sqlstore.SqlTransaction._supersede). History reads take the body from whichever holds it.
VERSION_COLUMNS = "h.type, h.id, h.version, h.last_updated, h.method, COALESCE(h.body, r.body), h.seq, h.tx"
VERSIONS = "resource_history h LEFT JOIN resource r ON r.rid = h.rid AND r.version = h.version"
APPEND = (
    "INSERT INTO resource_history (rid, type, id, version, last_updated, method, body, tx) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, {greatest}({writer_tx}, ?)) RETURNING seq, tx"
)


@cache
def append_statement(dialect: Dialect) -> str:
    """The INSERT of a history row; its last parameter is the previous version's ``tx`` (0 for a first version).
    Made once per dialect (every write runs it)."""
    return dialect.sql(APPEND.format(greatest=dialect.greatest, writer_tx=dialect.writer_tx))


def to_version(row: tuple[Any, ...]) -> Version:
    body = row[5]
    return Version(row[0], row[1], row[2], row[3], row[4], unpack(body) if body is not None else None, row[6], row[7])


def read_history(conn: Any, dialect: Dialect, query: HistoryQuery) -> tuple[list[Version], tuple[int, int] | None]:
    """Up to ``query.count`` versions, newest first, and the position of the next page's first (None: last page)."""
    where: list[str] = []
    params: list[Any] = []
    for clause, value in (
        ("h.type = ?", query.resource_type),
        ("h.id = ?", query.id),
        ("h.last_updated >= ?", query.since),
    ):
        if value is not None:
            where.append(clause)
            params.append(value)
    if query.at_or_before is not None:
        where.append("(h.tx, h.seq) <= (?, ?)")
        params += query.at_or_before
    if query.id is None:
        where.append(f"h.tx < {dialect.history_horizon}")
    sql = f"SELECT {VERSION_COLUMNS} FROM {VERSIONS}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY h.tx DESC, h.seq DESC LIMIT ?"
    params.append(query.count + 1)
    rows = conn.execute(dialect.sql(sql), params).fetchall()
    versions = [to_version(row) for row in rows[: query.count]]
    following = rows[query.count] if len(rows) > query.count else None
    return versions, (int(following[7]), int(following[6])) if following is not None else None
