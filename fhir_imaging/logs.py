"""The server's log: one line per record on stderr; the request log (a line per request) written in batches.

Request lines (logger ``REQUEST_LOGGER``) are formatted when they are logged and appended to a buffer; a background
thread writes the buffer out every ``FLUSH_INTERVAL_S`` seconds. Any other record is written at once, after
the request lines before it. Requests therefore never wait on a write to stderr, and the writer wakes a few times a
second, not once a request (a thread woken per record — a ``QueueListener`` — fights the event loop for the GIL:
it halved the read throughput when measured; writing each line at once cost 17 %). On SIGTERM uvicorn ends the
process without ``atexit``: its own "Shutting down" line flushes the request lines before it.
Records do not look up the calling frame, thread or process names (the logging HOWTO's "Optimization" section),
which cost microseconds a request and are not in our format.

Both ``fhir-imaging serve`` and each worker process (``--workers N``, ``app_from_environment``) call
``configure_logging``; calling it again in one process only changes the level.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
import time
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
FLUSH_INTERVAL_S = 0.2
REQUEST_LOGGER = "fhir_imaging.requests"
_handler: BufferedStreamHandler | None = None


class BufferedStreamHandler(logging.Handler):
    """Formats each record into a buffer; ``flush`` writes the buffer to the stream in one call. Records of other
    loggers than ``buffered`` are flushed at once."""

    def __init__(self, stream: TextIO, buffered: str) -> None:
        super().__init__()
        self.stream = stream
        self.buffered = buffered
        self._lines: list[str] = []
        self._stopped = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record) + "\n")
        except Exception:
            self.handleError(record)
            return
        if record.name != self.buffered:
            self.flush()

    def flush(self) -> None:
        assert self.lock is not None  # created by Handler.__init__
        with self.lock:
            lines, self._lines = self._lines, []
            if lines:
                self.stream.write("".join(lines))
                self.stream.flush()

    def flush_periodically(self, interval_s: float) -> None:
        """Start a daemon thread that flushes every ``interval_s`` seconds until ``close``."""

        def run() -> None:
            while not self._stopped.wait(interval_s):
                self.flush()

        threading.Thread(target=run, name="log-writer", daemon=True).start()

    def close(self) -> None:
        self._stopped.set()
        self.flush()
        super().close()


class _Formatter(logging.Formatter):
    """``FORMAT`` with the date and time formatted once a second, not once a line (``time.strftime`` is the
    costliest part of a request line)."""

    _second = -1
    _stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = second
        return self.default_msec_format % (self._stamp, record.msecs)


def configure_logging(level: str) -> None:
    """Log ``level`` and above of every logger to stderr."""
    global _handler
    root = logging.getLogger()
    root.setLevel(level.upper())
    if _handler is not None:
        return
    logging._srcfile = None  # type: ignore[attr-defined]  # no sys._getframe() per record (documented switch)
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    _handler = BufferedStreamHandler(sys.stderr, buffered=REQUEST_LOGGER)
    _handler.setFormatter(_Formatter(FORMAT))
    _handler.flush_periodically(FLUSH_INTERVAL_S)
    atexit.register(_handler.close)  # the last lines are written before the process exits
    root.handlers = [_handler]
