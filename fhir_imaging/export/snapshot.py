"""Reading the database as it was at an export's kick-off: for each resource, the newest version whose history
sequence number is at most the job's ``snapshot_seq``, unless that version is a delete. Writes committed after the
kick-off are invisible, whatever they change, so an export is one consistent snapshot.

Each page is one statement (one consistent read on both backends): a version that is still current has no body in
``resource_history`` (storage/sqlstore.py keeps it once, in ``resource``) and is read from there; a version superseded
since has had its body copied into its history row before the newer one committed.
"""

from __future__ import annotations

from dataclasses import dataclass

from fhir_imaging.storage.bodies import unpack
from fhir_imaging.storage.sqlstore import SqlReader

PAGE_SIZE = 1000

_TYPES = "SELECT DISTINCT type FROM resource_history WHERE seq <= ? ORDER BY type"
_PAGE = (
    "SELECT h.id, h.last_updated, COALESCE(h.body, r.body) FROM resource_history h JOIN resource r ON r.rid = h.rid "
    "WHERE h.type = ? AND h.id > ? AND h.seq <= ? AND h.method <> 'DELETE' "
    "AND NOT EXISTS (SELECT 1 FROM resource_history n "
    "WHERE n.type = h.type AND n.id = h.id AND n.version > h.version AND n.seq <= ?) "
    "ORDER BY h.id LIMIT ?"
)


@dataclass(frozen=True, slots=True)
class Row:
    id: str
    last_updated: str
    body: bytes


def snapshot_types(reader: SqlReader, seq: int) -> list[str]:
    """The resource types that had a version by ``seq``."""
    return [row[0] for row in reader.query(reader.dialect.sql(_TYPES), (seq,))]


def snapshot_page(reader: SqlReader, resource_type: str, seq: int, after: str, limit: int = PAGE_SIZE) -> list[Row]:
    """Up to ``limit`` resources of ``resource_type`` as of ``seq``, in id order, after the id ``after``."""
    rows = reader.query(reader.dialect.sql(_PAGE), (resource_type, after, seq, seq, limit))
    return [Row(row[0], row[1], unpack(row[2])) for row in rows if row[2] is not None]
