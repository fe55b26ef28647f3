"""Export jobs in the database (table ``export_job``): created by a kick-off, answered by any server process, run by
one. A runner claims a job with a lease (``lease_until``) and renews it while it works; a job whose lease lapsed (its
runner died) is claimed again by another and started over. States: ``accepted`` → ``running`` → ``completed`` |
``failed``; ``cancelled`` once a client deletes it (its files are then removed, and it answers 404)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from fhir_imaging.export.request import ExportRequest
from fhir_imaging.fhir.resource import format_instant, now
from fhir_imaging.storage.sqlstore import SqlReader, SqlTransaction

ACTIVE = ("accepted", "running")
COLUMNS = (
    "id, state, request, owner, base, request_url, transaction_time, snapshot_seq, lease_owner, lease_until, "
    "progress, manifest, created, finished, snapshot_tx"
)


@dataclass(frozen=True)
class Job:
    id: str
    state: str
    request: ExportRequest
    owner: dict[str, Any]  # who asked (export/owner.py): only they may see the status and the files
    base: str  # the FHIR base URL the kick-off came in on (the manifest's URLs start with it)
    request_url: str  # the kick-off URL, for the manifest
    transaction_time: str
    snapshot_seq: int  # the export's snapshot: the versions at or before this history sequence number ...
    lease_owner: str | None
    lease_until: float | None
    progress: str | None
    manifest: dict[str, Any] | None
    created: float
    finished: float | None
    snapshot_tx: int  # ... whose ``tx`` is below this (storage/history.py; export/snapshot.py)

    @classmethod
    def of(cls, row: tuple[Any, ...]) -> Job:
        return cls(
            id=row[0],
            state=row[1],
            request=ExportRequest.from_json(orjson.loads(row[2])),
            owner=orjson.loads(row[3]),
            base=row[4],
            request_url=row[5],
            transaction_time=row[6],
            snapshot_seq=int(row[7]),
            lease_owner=row[8],
            lease_until=row[9],
            progress=row[10],
            manifest=orjson.loads(row[11]) if row[11] else None,
            created=float(row[12]),
            finished=float(row[13]) if row[13] is not None else None,
            snapshot_tx=int(row[14]),
        )


def create_job(
    tx: SqlTransaction, job_id: str, request: ExportRequest, owner: dict[str, Any], base: str, request_url: str
) -> Job:
    """A new job whose snapshot is everything committed so far: the versions up to the history's last sequence
    number, written by transactions that began before the kick-off (export/snapshot.py waits for those in flight)."""
    row = tx.query(f"SELECT max(seq), {tx.dialect.history_frontier} FROM resource_history", ())[0]
    seq, frontier = row[0] or 0, int(row[1])
    created = time.time()
    tx.execute(
        f"INSERT INTO export_job ({COLUMNS}) "
        "VALUES (?, 'accepted', ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, NULL, ?, NULL, ?)",
        (
            job_id,
            orjson.dumps(request.to_json()).decode(),
            orjson.dumps(owner).decode(),
            base,
            request_url,
            format_instant(now()),
            seq,
            created,
            frontier,
        ),
    )
    job = get_job(tx, job_id)
    assert job is not None
    return job


def get_job(reader: SqlReader, job_id: str) -> Job | None:
    rows = reader.query(reader.dialect.sql(f"SELECT {COLUMNS} FROM export_job WHERE id = ?"), (job_id,))
    return Job.of(rows[0]) if rows else None


def active_jobs(reader: SqlReader) -> int:
    rows = reader.query(reader.dialect.sql("SELECT count(*) FROM export_job WHERE state IN (?, ?)"), ACTIVE)
    return int(rows[0][0])


def waiting(reader: SqlReader) -> str | None:
    """The oldest job waiting for a runner (new, or whose runner's lease lapsed): a read, so that idle runners
    polling for work never take the write lock."""
    rows = reader.query(
        reader.dialect.sql(
            "SELECT id FROM export_job WHERE state IN (?, ?) AND (lease_until IS NULL OR lease_until < ?) "
            "ORDER BY created LIMIT 1"
        ),
        (*ACTIVE, time.time()),
    )
    return str(rows[0][0]) if rows else None


def claim(tx: SqlTransaction, job_id: str, worker: str, lease: float) -> Job | None:
    """Lease the waiting job ``job_id`` to ``worker``; None when another runner was quicker."""
    moment = time.time()
    changed = tx.execute(
        "UPDATE export_job SET state = 'running', lease_owner = ?, lease_until = ?, progress = NULL "
        "WHERE id = ? AND state IN (?, ?) AND (lease_until IS NULL OR lease_until < ?)",
        (worker, moment + lease, job_id, *ACTIVE, moment),
    )
    return get_job(tx, job_id) if changed == 1 else None


def renew(tx: SqlTransaction, job_id: str, worker: str, lease: float, progress: str) -> bool:
    """Extend ``worker``'s lease and record its progress; False when the job is no longer its to run (cancelled,
    or taken over after a lapse)."""
    changed = tx.execute(
        "UPDATE export_job SET lease_until = ?, progress = ? WHERE id = ? AND lease_owner = ? AND state = 'running'",
        (time.time() + lease, progress, job_id, worker),
    )
    return changed == 1


def finish(tx: SqlTransaction, job_id: str, worker: str, state: str, manifest: dict[str, Any]) -> bool:
    """``completed`` or ``failed`` with its manifest; False when the job was cancelled or taken over meanwhile."""
    changed = tx.execute(
        "UPDATE export_job SET state = ?, manifest = ?, finished = ?, lease_until = NULL "
        "WHERE id = ? AND lease_owner = ? AND state = 'running'",
        (state, orjson.dumps(manifest).decode(), time.time(), job_id, worker),
    )
    return changed == 1


def cancel(tx: SqlTransaction, job_id: str) -> bool:
    """Mark a job cancelled (its runner stops at its next renewal; the sweeper removes its files)."""
    changed = tx.execute(
        "UPDATE export_job SET state = 'cancelled', finished = ? WHERE id = ? AND state <> 'cancelled'",
        (time.time(), job_id),
    )
    return changed == 1


def expired(reader: SqlReader, ttl: float) -> list[str]:
    """Jobs whose files are to be removed: cancelled ones, and finished ones older than ``ttl`` seconds."""
    rows = reader.query(
        reader.dialect.sql(
            "SELECT id FROM export_job WHERE state = 'cancelled' OR (finished IS NOT NULL AND finished < ?)"
        ),
        (time.time() - ttl,),
    )
    return [row[0] for row in rows]


def forget(tx: SqlTransaction, job_id: str) -> None:
    tx.execute("DELETE FROM export_job WHERE id = ?", (job_id,))
