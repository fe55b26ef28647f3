"""The server's log: one line per record on stderr; the request log (a line per request) written in batches.

Request lines (logger ``REQUEST_LOGGER``) are formatted when they are logged and appended to a buffer; a background
thread writes the buffer out every ``FLUSH_INTERVAL_S`` seconds. Any other record is written at once, after
the request lines before it. Requests therefore never wait on a write to stderr, and the writer wakes a few times a
second, not once a request (a thread woken per record — a ``QueueListener`` — fights the event loop for the GIL:
it halved the read throughput when measured; writing each line at once cost 17 %). On SIGTERM uvicorn ends the
process without ``atexit``: its own "Shutting down" line flushes the request lines before it.
Records do not look up the calling frame, thread or process names (the logging HOWTO's "Optimization" section),
which cost microseconds a request and are not in our format.

Every line is one line: control characters in a message (a decoded ``%0a`` or ``%1b`` in a request path, a
multi-line driver message) are escaped (``\n``, ``\x1b``) by ``escape_control``, so nothing a client sends can forge
a line or drive a terminal. URLs are printed and logged through ``redact_url``: a password never shows.

Both ``fhir-imaging serve`` and each worker process (``--workers N``, ``app_from_environment``) call
``configure_logging``; calling it again in one process only changes the level.
"""

from __future__ import annotations

import atexit
import logging
import re
import sys
import threading
import time
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
FLUSH_INTERVAL_S = 0.2
REQUEST_LOGGER = "fhir_imaging.requests"
_handler: BufferedStreamHandler | None = None
_CONTROL_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))} | {
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
    ord("\\"): "\\\\",
}
_SECRET_PARAMETER = re.compile(r"(?i)\b(password|passwd|pwd|secret|token|access_token|api_key|apikey)=([^&#\s]*)")


def _escape_character(character: str) -> str:
    escaped = _CONTROL_ESCAPES.get(ord(character))
    if escaped is not None:
        return escaped
    if character.isprintable():
        return character
    code = ord(character)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def escape_control(text: str) -> str:
    """``text`` on one line with nothing a terminal acts on: control characters (C0, DEL, C1) become ``\\n``,
    ``\\r``, ``\\t`` or ``\\xNN``, other non-printable ones (line and paragraph separators, bidirectional
    overrides) ``\\uNNNN``, and a backslash ``\\\\`` so that an escape cannot be forged."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(map(_escape_character, text))


def _password_span(url: str) -> tuple[int, int] | None:
    """Where the password of ``scheme://user:password@host…`` is in ``url`` (the last ``@`` before any ``?`` or
    ``#`` ends it, so a password holding an ``@`` is found whole)."""
    start = url.find("://")
    if start < 0:
        return None
    start += 3
    ends = [index for index in (url.find("?", start), url.find("#", start)) if index >= 0]
    at = url.rfind("@", start, min(ends, default=len(url)))
    colon = url.find(":", start, at) if at >= 0 else -1
    return (colon + 1, at) if colon >= 0 else None


def redact_url(url: str) -> str:
    """``url`` with its password (``user:password@``, or a ``password=`` parameter) replaced by ``***``: the one
    form in which a database, server or PACS URL is printed or logged."""
    span = _password_span(url)
    if span is not None:
        url = f"{url[: span[0]]}***{url[span[1] :]}"
    return _SECRET_PARAMETER.sub(r"\1=***", url)


def redact(text: str, *urls: str | None) -> str:
    """``text`` (e.g. an error message from a driver) with each of ``urls`` redacted and their passwords masked
    wherever else they appear."""
    for url in urls:
        if url:
            text = text.replace(url, redact_url(url))
            for secret in _secrets(url):
                text = text.replace(secret, "***")
    return text


def _secrets(url: str) -> list[str]:
    """The passwords written in ``url``, longest first."""
    found = [match.group(2) for match in _SECRET_PARAMETER.finditer(url)]
    span = _password_span(url)
    if span is not None:
        found.append(url[span[0] : span[1]])
    return sorted((secret for secret in found if secret), key=len, reverse=True)


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
                try:
                    self.stream.write("".join(lines))
                    self.stream.flush()
                except (OSError, ValueError):  # the stream is closed or broken: a log line never stops the caller
                    pass

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
    costliest part of a request line), and every message escaped onto one line (``escape_control``)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_control(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: object) -> str:
        """A traceback keeps its lines; control characters inside them (from an exception's message) are escaped."""
        text = super().formatException(ei)  # type: ignore[arg-type]
        return "\n".join(escape_control(line) for line in text.split("\n"))

    _second = -1
    _stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = second
        return f"{self._stamp},{int(record.msecs):03d}"  # logging's default_msec_format, "%s,%03d"


def configure_logging(level: str) -> None:
    """Log ``level`` and above of every logger to stderr."""
    global _handler
    root = logging.getLogger()
    root.setLevel(level.upper())
    if _handler is not None:
        return
    logging._srcfile = None  # no sys._getframe() per record (documented switch)
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    _handler = BufferedStreamHandler(sys.stderr, buffered=REQUEST_LOGGER)
    _handler.setFormatter(_Formatter(FORMAT))
    _handler.flush_periodically(FLUSH_INTERVAL_S)
    atexit.register(_handler.close)  # the last lines are written before the process exits
    root.handlers = [_handler]
