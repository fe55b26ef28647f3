"""The HTTP server (uvicorn, httptools parser) with the limits uvicorn lacks, and its options from the settings.

``EdgeProtocol`` is uvicorn's httptools protocol with:

- a header deadline: a connection must deliver a complete request line and headers within ``header_timeout`` seconds
  of connecting or of its previous response, else it is closed (with a 408 OperationOutcome when part of a request
  had arrived). uvicorn's keep-alive timeout alone is cancelled by the first byte, so one byte every few seconds
  would hold a connection for ever;
- a size limit on the request line and headers (``max_header_size``: 414 when the URL alone is over it, else 431) and
  on their number (``max_headers``: 431);
- at most ``max_connections`` open connections per process: more are closed as soon as they are accepted;
- every error it answers itself (malformed request line, unknown method, limits above) is an OperationOutcome, not
  uvicorn's plain-text "Invalid HTTP request received.".

Request bodies are bounded in time by ``read_body`` (``body_timeout``, api/context.py) and in size by
``max_body_size``. The protocol is passed to uvicorn as ``functools.partial(EdgeProtocol, limits=…)``, which pickles,
so ``--workers N`` processes get the same protocol and limits.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from fhir_imaging.api.errors import SECURITY_HEADERS
from fhir_imaging.config import Settings, to_environ
from fhir_imaging.fhir.outcome import Issue, operation_outcome

log = logging.getLogger("fhir_imaging.server")

MAX_PARSABLE_URL = 65_535  # httptools' URL parser keeps offsets in 16 bits: a longer URL cannot be parsed
REFUSAL_LOG_INTERVAL_S = 10.0  # refused connections are logged at most this often (they come in floods)
LINGER_S = 2.0  # after an error answer, what the client still sends is read and dropped this long, then we close
LINGER_BYTES = 1024**2  # … or until this much has been dropped


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    header_timeout: float
    max_header_size: int
    max_headers: int
    max_connections: int


def edge_limits(settings: Settings) -> EdgeLimits:
    return EdgeLimits(
        header_timeout=settings.header_timeout,
        max_header_size=settings.max_header_size,
        max_headers=settings.max_headers,
        max_connections=settings.max_connections,
    )


def outcome_response(status: int, code: str, diagnostics: str, headers: list[tuple[bytes, bytes]]) -> bytes:
    """A complete HTTP/1.1 response carrying an OperationOutcome, after which the connection is closed."""
    body = orjson.dumps(operation_outcome([Issue("error", code, diagnostics)]))
    lines = [STATUS_LINE[status]]
    for name, value in [
        *headers,
        *SECURITY_HEADERS,
        (b"content-type", b"application/fhir+json; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]:
        lines.extend([name, b": ", value, b"\r\n"])
    lines.extend([b"\r\n", body])
    return b"".join(lines)


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; ``send_400_response`` then answers ``EdgeProtocol._refusal``."""


class EdgeProtocol(HttpToolsProtocol):
    _last_refusal_log = 0.0

    def __init__(self, *args: Any, limits: EdgeLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._head_since: float | None = None  # loop time the awaited request line and headers began to be due
        self._refusal: tuple[int, str, str] | None = None
        self._in_head = True  # between the end of a request (or connecting) and the end of the next one's headers
        self._head_bytes = 0  # bytes received while in a head (counted by chunk: what the parser may be holding)
        self._lingering: asyncio.TimerHandle | None = None  # answered and half-closed: input is dropped until then
        self._dropped = 0

    # connection life

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._log_refused_connection()
            self.transport.close()
            return
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_deadline()
        if self._lingering is not None:
            self._lingering.cancel()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None:  # idle, waiting for the next request: uvicorn armed keep-alive
            self._arm_header_deadline()

    # parsing

    def data_received(self, data: bytes) -> None:
        if self._lingering is not None:
            self._dropped += len(data)
            if self._dropped > LINGER_BYTES:
                self.transport.close()
            return
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.limits.max_header_size and not self.transport.is_closing():
            self._respond_and_close(*self._too_large())

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self._url_limit():
            self._refuse(*self._too_large())

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        if len(self.headers) > self.limits.max_headers:
            self._refuse(431, "too-costly", f"The request has more than {self.limits.max_headers} header fields")

    def on_headers_complete(self) -> None:
        self._cancel_header_deadline()
        self._in_head = False
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if len(self.url) > self._url_limit() or size > self.limits.max_header_size:
            self._refuse(*self._too_large())
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0

    def send_400_response(self, msg: str) -> None:
        """uvicorn calls this when the parser fails: a malformed request, or a limit refused from a callback."""
        refusal = self._refusal or (400, "structure", "The request is not a valid HTTP/1.1 request (request line, "
                                    "method or headers)")  # fmt: skip
        self._respond_and_close(*refusal)

    # helpers

    def _url_limit(self) -> int:
        return min(self.limits.max_header_size, MAX_PARSABLE_URL)

    def _too_large(self) -> tuple[int, str, str]:
        if len(getattr(self, "url", b"")) > self._url_limit():  # ``url`` is set when a request begins
            return 414, "too-long", f"The URL is longer than {self._url_limit()} bytes"
        return 431, "too-long", f"The request line and headers are over {self.limits.max_header_size} bytes"

    def _refuse(self, status: int, code: str, diagnostics: str) -> None:
        self._refusal = (status, code, diagnostics)
        raise _Refused(diagnostics)

    def _respond_and_close(self, status: int, code: str, diagnostics: str) -> None:
        """Answer, then close without losing the answer: a client still sending when the socket closes gets a
        reset that may discard the answer unread, so the write side is closed first and input dropped a moment."""
        self._cancel_header_deadline()
        if self.transport.is_closing() or self._lingering is not None:
            return
        self.transport.write(outcome_response(status, code, diagnostics, self.server_state.default_headers))
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.flow.resume_reading()
        self._lingering = self.loop.call_later(LINGER_S, self.transport.close)

    def _arm_header_deadline(self) -> None:
        """The next request line and headers are due within ``header_timeout`` from now. No timer per request (a
        timer armed and cancelled on every request cost more than a tenth of a read): one sweep per server process
        checks every connection a few times per timeout (``_sweep``)."""
        self._head_since = self.loop.time()
        state = self.server_state
        if not getattr(state, "edge_sweeping", False):
            state.edge_sweeping = True  # type: ignore[attr-defined]
            interval = min(1.0, self.limits.header_timeout / 4)
            self.loop.call_later(interval, _sweep, self.loop, self.connections, interval)

    def _cancel_header_deadline(self) -> None:
        self._head_since = None

    def check_header_deadline(self, now: float) -> None:
        if self._head_since is not None and now - self._head_since >= self.limits.header_timeout:
            self._header_deadline_passed()

    def _header_deadline_passed(self) -> None:
        self._head_since = None
        if self.transport.is_closing():
            return
        if self._in_head and self._head_bytes:
            message = f"The request line and headers did not arrive within {self.limits.header_timeout:g} seconds"
            self._respond_and_close(408, "timeout", message)
        else:
            self.transport.close()

    def _log_refused_connection(self) -> None:
        now = time.monotonic()
        if now - EdgeProtocol._last_refusal_log >= REFUSAL_LOG_INTERVAL_S:
            EdgeProtocol._last_refusal_log = now
            log.warning("more than %d open connections: new connections are closed", self.limits.max_connections)


def _sweep(loop: asyncio.AbstractEventLoop, connections: set[Any], interval: float) -> None:
    """Close the connections whose request line and headers are overdue; again in ``interval`` seconds."""
    now = loop.time()
    for protocol in list(connections):
        if isinstance(protocol, EdgeProtocol):
            protocol.check_header_deadline(now)
    loop.call_later(interval, _sweep, loop, connections, interval)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Every option ``uvicorn.run`` gets, for one process or for ``--workers N``."""
    return {
        "host": settings.host,
        "port": settings.port,
        "http": functools.partial(EdgeProtocol, limits=edge_limits(settings)),
        "ws": "none",  # no WebSocket endpoints: an Upgrade request is an ordinary request
        "timeout_keep_alive": settings.keep_alive_timeout,
        "server_header": False,  # the software and version are nobody's business; ``date`` stays
        "log_config": None,
        "access_log": False,  # the request log is RequestLogMiddleware's
        **({"ssl_certfile": settings.tls_cert, "ssl_keyfile": settings.tls_key} if settings.tls_cert else {}),
    }


def run(settings: Settings) -> None:
    """Serve until interrupted: the app in this process, or ``settings.workers`` processes of it."""
    import uvicorn

    options = uvicorn_options(settings)
    if settings.workers > 1:
        os.environ.update(to_environ(settings))
        uvicorn.run("fhir_imaging.app:app_from_environment", factory=True, workers=settings.workers, **options)
    else:
        from fhir_imaging.app import create_app

        uvicorn.run(create_app(settings), **options)
