"""Bounded HTTP GETs to a PACS, for ``sync-dicomweb``: nothing a PACS answers can hold the command forever or fill
its memory.

- Every answer (connect, headers, whole body, redirects included) arrives within ``PacsLimits.timeout`` seconds.
  ``requests`` timeouts bound each socket read, not the whole answer, so a watchdog thread shuts the socket down when
  the deadline passes: a PACS trickling one byte at a time is cut off like one that never answers.
- An answer is at most ``PacsLimits.max_answer_bytes`` (the declared Content-Length is checked first, then the bytes
  as they arrive).
- Redirects are followed by hand, at most ``PacsLimits.max_redirects``, and only on the PACS's own origin (scheme,
  host, port) unless ``PacsLimits.cross_origin_redirects``; credentials in the PACS URL are sent to that origin only.
- A PACS that is down or busy (connection refused or reset, HTTP 408/429/503/504) is tried ``PacsLimits.attempts``
  times, 0.4 and 0.8 s apart; an answer that ran out of time is not tried again.

Messages name the PACS by its URL without credentials and never quote an answer's content.
Spec: RFC 9110 §15.4 (redirects), RFC 6454 (origins).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

import orjson
import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.utils import get_auth_from_url

from fhir_imaging.dicom.limits import PacsLimits

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
RETRY_STATUSES = frozenset({408, 429, 503, 504})
CHUNK_BYTES = 64 * 1024


class PacsError(Exception):
    """The PACS cannot be reached, refused a query or answered something unusable; the message names it and says
    why."""


def public_url(url: str) -> str:
    """``url`` without user name, password, query or fragment: what messages and resources may show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of ``url``, the port defaulted from the scheme; ``ValueError`` for a bad port."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    default = {"http": 80, "https": 443}.get(scheme, 0)
    return scheme, (parts.hostname or "").lower(), parts.port or default


def _origin_text(key: tuple[str, str, int]) -> str:
    scheme, host, port = key
    return f"{scheme}://{host}:{port}"


class _TimedOut(Exception):
    """The deadline of one answer passed."""


class _Retry(Exception):
    """A failure worth another attempt (the PACS is down or busy); ``error`` is what to report after the last."""

    def __init__(self, error: PacsError) -> None:
        super().__init__(str(error))
        self.error = error


_current = threading.local()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's, also for TLS: wakes a blocked read


class Deadline:
    """A total time limit for one answer. While it is entered, the sockets of the connections this thread uses are
    shut down when it passes, which ends any read blocked on them."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def remaining(self) -> float:
        return max(self.end - time.monotonic(), 0.001)

    def passed(self) -> bool:
        return self.expired or time.monotonic() >= self.end

    def watch(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            if self.expired:
                _shut(sock)
            else:
                self._sockets.append(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)

    def __enter__(self) -> Deadline:
        _current.deadline = self
        self._timer.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._timer.cancel()
        _current.deadline = None
        with self._lock:
            self._sockets.clear()


def _watch(sock: socket.socket | None) -> None:
    deadline: Deadline | None = getattr(_current, "deadline", None)
    if deadline is not None:
        deadline.watch(sock)


class _WatchedHTTPConnection(urllib3.connection.HTTPConnection):
    def getresponse(self) -> Any:
        _watch(self.sock)
        return super().getresponse()


class _WatchedHTTPSConnection(urllib3.connection.HTTPSConnection):
    def getresponse(self) -> Any:
        _watch(self.sock)
        return super().getresponse()


class _WatchedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _WatchedAdapter(HTTPAdapter):
    """requests' adapter whose connections put their socket under the thread's current ``Deadline``."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS pools keep theirs; the read loop still checks the time
            manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


def _reason(exc: BaseException) -> str:
    text = str(exc)
    for known in ("Connection refused", "Name or service not known", "No route to host", "Connection reset"):
        if known in text:
            return known.lower()
    return type(exc).__name__


class PacsHttp:
    """GETs of JSON from one PACS (a DICOMweb root), each within ``limits``; every failure is a ``PacsError``."""

    def __init__(self, url: str, limits: PacsLimits | None = None) -> None:
        self.limits = limits or PacsLimits()
        self.shown = public_url(url).rstrip("/")
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise PacsError(f"the PACS URL {self.shown} is not an http:// or https:// URL with a host")
        try:
            self.origin = origin(url)
        except ValueError:
            raise PacsError(f"the PACS URL {self.shown} has an invalid port") from None
        user, password = get_auth_from_url(url)
        self.auth = (user, password) if user or password else None
        self.base = self.shown  # credentials go in the Authorization header, to this origin only
        self.session = requests.Session()
        adapter = _WatchedAdapter(max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def close(self) -> None:
        self.session.close()

    def get_json(self, path: str, params: list[tuple[str, str]], what: str) -> Any:
        """GET ``{URL}{path}?{params}`` and parse the JSON answer (an empty answer is ``[]``)."""
        url = f"{self.base}{path}" + (f"?{urlencode(params)}" if params else "")
        for attempt in range(self.limits.attempts):
            try:
                body = self._get(url, what)
                break
            except _Retry as retry:
                if attempt + 1 == self.limits.attempts:
                    raise retry.error from None
                time.sleep(0.4 * 2**attempt)
        if not body.strip():
            return []
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            message = f"the PACS at {self.shown} answered {what} with something that is not JSON ({exc})"
            raise PacsError(message) from None

    def _get(self, url: str, what: str) -> bytes:
        """One answer, redirects followed, within one deadline."""
        with Deadline(self.limits.timeout) as deadline:
            for _ in range(self.limits.max_redirects + 1):
                location = self._fetch(url, what, deadline)
                if isinstance(location, bytes):
                    return location
                url = self._redirect_target(url, location, what)
        raise PacsError(
            f"the PACS at {self.shown} redirected {what} more than {self.limits.max_redirects} times "
            "(--pacs-max-redirects)"
        )

    def _redirect_target(self, current: str, location: str, what: str) -> str:
        target = urljoin(current, location)
        try:
            key = origin(target)
        except ValueError:
            raise PacsError(f"the PACS at {self.shown} redirected {what} to an invalid URL") from None
        if key[0] not in ("http", "https") or not key[1]:
            raise PacsError(f"the PACS at {self.shown} redirected {what} to a URL that is not http:// or https://")
        if key != self.origin and not self.limits.cross_origin_redirects:
            raise PacsError(
                f"the PACS at {self.shown} redirected {what} to another origin ({_origin_text(key)}); redirects are "
                f"followed only on {_origin_text(self.origin)} (--allow-cross-origin-redirects follows them)"
            )
        return target

    def _timed_out(self, what: str) -> PacsError:
        return PacsError(
            f"the PACS at {self.shown} did not answer {what} within {self.limits.timeout:g} s (--pacs-timeout)"
        )

    def _fetch(self, url: str, what: str, deadline: Deadline) -> bytes | str:
        """The body of ``url``'s answer, or the Location it redirects to."""
        auth = self.auth if origin(url) == self.origin else None
        headers = {"Accept": "application/dicom+json, application/json"}
        try:
            response = self.session.get(
                url,
                headers=headers,
                auth=auth,
                stream=True,
                allow_redirects=False,
                timeout=(deadline.remaining(), deadline.remaining()),
            )
        except requests.Timeout:
            raise self._timed_out(what) from None
        except requests.ConnectionError as exc:
            if deadline.passed():
                raise self._timed_out(what) from None
            raise _Retry(PacsError(f"cannot reach the PACS at {self.shown} ({what}): {_reason(exc)}")) from None
        except requests.RequestException as exc:
            raise PacsError(f"the PACS at {self.shown} failed {what}: {_reason(exc)}") from None
        with response:
            status = response.status_code
            if status in REDIRECT_STATUSES and response.headers.get("Location"):
                return str(response.headers["Location"])
            if status in RETRY_STATUSES:
                raise _Retry(PacsError(f"the PACS at {self.shown} answered HTTP {status} to {what}"))
            if not 200 <= status < 300:
                raise PacsError(f"the PACS at {self.shown} answered HTTP {status} to {what}")
            return self._read(response, what, deadline)

    def _read(self, response: requests.Response, what: str, deadline: Deadline) -> bytes:
        limit = self.limits.max_answer_bytes
        too_big = PacsError(
            f"the PACS at {self.shown} answered {what} with more than {limit:,} bytes (--pacs-max-answer-mb)"
        )
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_big
        chunks, size = [], 0
        try:
            for chunk in response.iter_content(CHUNK_BYTES):
                size += len(chunk)
                if size > limit:
                    raise too_big
                if deadline.passed():
                    raise _TimedOut
                chunks.append(chunk)
        except _TimedOut:
            raise self._timed_out(what) from None
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            if deadline.passed():
                raise self._timed_out(what) from None
            raise PacsError(f"the PACS at {self.shown} broke off its answer to {what} ({_reason(exc)})") from None
        if deadline.passed():
            raise self._timed_out(what)
        return b"".join(chunks)
