"""``--audit-log PATH``: AuditEvents appended to a file, one JSON resource per line (NDJSON, which
``fhir-imaging load`` reads when the file is named ``*.ndjson``).

``record`` never blocks a request: it appends the event to a bounded queue and returns. A background thread wakes
every ``FLUSH_INTERVAL_S`` seconds, serialises what the queue holds and appends it to the file in one ``write`` (no
buffer of ours is left unwritten: each wake-up is a flush). It wakes on a timer rather than once per event, as the
request log's writer does (``logs.py``: a thread woken per record fights the event loop for the GIL). The file is
opened with ``O_APPEND`` (every process of ``--workers N`` appends whole batches of whole lines) and created
readable by its owner only. When the queue is full the event is dropped, counted in ``dropped`` and logged (at
most one warning a second); a failing write is counted and logged the same way. ``close`` writes what is left,
syncs the file to disk and stops the thread.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("fhir_imaging.audit")

FLUSH_INTERVAL_S = 0.25
QUEUE_SIZE = 100_000  # events waiting for the writer (a few hundred bytes each)


class AuditLog:
    """Appends AuditEvents (dicts) to ``path``; ``close()`` once at shutdown."""

    def __init__(self, path: str | Path, capacity: int = QUEUE_SIZE, interval: float = FLUSH_INTERVAL_S) -> None:
        self.path = Path(path)
        self.capacity = capacity
        self.interval = interval
        self.dropped = 0
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        self._warned_at = 0.0
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fhir-imaging-audit", daemon=True)
        self._thread.start()

    def record(self, event: dict[str, Any]) -> None:
        """Queue ``event`` for the file; never blocks and never raises (a full queue drops it, counted)."""
        if len(self._pending) >= self.capacity or self._stop.is_set():
            self._drop(1, "the audit queue is full" if not self._stop.is_set() else "the audit log is closed")
            return
        self._pending.append(event)

    def close(self) -> None:
        """Write every queued event, sync the file and stop the writer."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        self._write()
        try:
            os.fsync(self._fd)
        except OSError as exc:
            log.error("audit log %s: sync failed: %s", self.path, exc)
        os.close(self._fd)
        if self.dropped:
            log.warning("audit log %s: %d events were dropped", self.path, self.dropped)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._write()

    def _write(self) -> None:
        pending = self._pending
        lines = []
        while pending:
            lines.append(orjson.dumps(pending.popleft()))
        if not lines:
            return
        data = memoryview(b"\n".join(lines) + b"\n")
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError as exc:
            self._drop(len(lines), f"writing failed: {exc}")

    def _drop(self, count: int, reason: str) -> None:
        self.dropped += count
        moment = time.monotonic()
        if moment - self._warned_at >= 1.0:
            self._warned_at = moment
            log.warning("audit log %s: %s; %d events dropped so far", self.path, reason, self.dropped)
