"""Reading the database as it was at an export's kick-off: for each resource, the newest version in the job's
snapshot, unless that version is a delete. The snapshot is the versions at or before the job's ``snapshot_seq``
whose ``tx`` is below its ``snapshot_tx`` (storage/history.py): on PostgreSQL, those written by transactions that
had begun writing at the kick-off (every one committed by then, and any still in flight). Before reading, the export
waits until those in flight have ended (``settled``), so the snapshot no longer changes: writes committed after the
kick-off by later transactions are invisible, whatever they change, and no version appears half-way through the
export. On SQLite (one writer) the sequence number alone bounds it.

Each page is one statement (one consistent read on both backends): a version that is still current has no body in
``resource_history`` (storage/sqlstore.py keeps it once, in ``resource``) and is read from there; a version superseded
since has had its body copied into its history row before the newer one committed.
"""

from __future__ import annotations

from dataclasses import dataclass

from fhir_imaging.storage.bodies import unpack
from fhir_imaging.storage.sqlstore import SqlReader

PAGE_SIZE = 1000

_IN_SNAPSHOT = "{0}.seq <= ? AND {0}.tx < ?"
_TYPES = f"SELECT DISTINCT type FROM resource_history h WHERE {_IN_SNAPSHOT.format('h')} ORDER BY type"
_PAGE = (
    "SELECT h.id, h.last_updated, COALESCE(h.body, r.body) FROM resource_history h JOIN resource r ON r.rid = h.rid "
    f"WHERE h.type = ? AND h.id > ? AND {_IN_SNAPSHOT.format('h')} AND h.method <> 'DELETE' "
    "AND NOT EXISTS (SELECT 1 FROM resource_history n "
    f"WHERE n.type = h.type AND n.id = h.id AND n.version > h.version AND {_IN_SNAPSHOT.format('n')}) "
    "ORDER BY h.id LIMIT ?"
)


@dataclass(frozen=True, slots=True)
class Snapshot:
    seq: int
    tx: int


@dataclass(frozen=True, slots=True)
class Row:
    id: str
    last_updated: str
    body: bytes


def settled(reader: SqlReader, snapshot: Snapshot) -> bool:
    """True once no transaction that can write into ``snapshot`` is still in flight."""
    horizon = reader.query(f"SELECT {reader.dialect.history_horizon}", ())[0][0]
    return int(horizon) >= snapshot.tx


def snapshot_types(reader: SqlReader, snapshot: Snapshot) -> list[str]:
    """The resource types that had a version in ``snapshot``."""
    return [row[0] for row in reader.query(reader.dialect.sql(_TYPES), (snapshot.seq, snapshot.tx))]


def snapshot_page(
    reader: SqlReader, resource_type: str, snapshot: Snapshot, after: str, limit: int = PAGE_SIZE
) -> list[Row]:
    """Up to ``limit`` resources of ``resource_type`` as of ``snapshot``, in id order, after the id ``after``."""
    bounds = (snapshot.seq, snapshot.tx)
    rows = reader.query(reader.dialect.sql(_PAGE), (resource_type, after, *bounds, *bounds, limit))
    return [Row(row[0], row[1], unpack(row[2])) for row in rows if row[2] is not None]
