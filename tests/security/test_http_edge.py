"""The HTTP edge of a real ``fhir-imaging serve`` process: slow or malformed clients cannot hold it or get a non-FHIR
answer, nothing names the server software, and the request log cannot be forged."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.e2e.server import ServerProcess

pytestmark = pytest.mark.e2e

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.5
SLACK = 2.5  # scheduling on a loaded machine
LIMITS = (
    "--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT), "--max-headers", "50",
    "--max-header-size", "32KiB",
)  # fmt: skip


LARGE_HEADERS = (b"X-Some: " + b"y" * 1000 + b"\r\n") * 40  # 40 kB in 40 fields: each within the limits, not all


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("edge")
    process = ServerProcess(f"sqlite:///{folder / 'edge.db'}", extra=LIMITS, log=folder / "server.log")
    try:
        yield process
    finally:
        process.stop()


def _connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.settimeout(10)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a timeout here fails the test)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def _exchange(server: ServerProcess, request: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """Send raw bytes, read the answer until the server closes: status, headers, body."""
    with _connect(server) as sock:
        sock.sendall(request)
        return _parse(_read_until_closed(sock))


def _parse(response: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in lines)
    return int(status_line.split()[1]), headers, body


def _assert_outcome(headers: dict[bytes, bytes], body: bytes, code: str) -> None:
    assert headers[b"content-type"].startswith(b"application/fhir+json")
    outcome = orjson.loads(body)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == code


def test_a_connection_that_sends_nothing_is_closed_within_the_header_timeout(server: ServerProcess) -> None:
    started = time.monotonic()
    with _connect(server) as sock:
        assert _read_until_closed(sock) == b""
    assert time.monotonic() - started < HEADER_TIMEOUT + SLACK


def test_half_a_request_line_is_answered_408_and_closed_within_the_header_timeout(server: ServerProcess) -> None:
    started = time.monotonic()
    status, headers, body = _exchange(server, b"GET /baseR4/meta")
    assert time.monotonic() - started < HEADER_TIMEOUT + SLACK
    assert status == 408
    _assert_outcome(headers, body, "timeout")


def test_headers_sent_a_byte_at_a_time_do_not_hold_the_connection(server: ServerProcess) -> None:
    started = time.monotonic()
    with _connect(server) as sock:
        sock.sendall(b"GET /baseR4/metadata HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        sock.setblocking(False)
        closed = False
        while not closed and time.monotonic() - started < HEADER_TIMEOUT + 2 * SLACK:
            try:
                sock.send(b"a")
                closed = sock.recv(65536) == b"" or closed
            except BlockingIOError:
                pass
            except OSError:
                closed = True
            time.sleep(0.1)
    assert closed
    assert time.monotonic() - started < HEADER_TIMEOUT + 2 * SLACK


def test_a_kept_alive_connection_trickling_its_next_request_is_closed(server: ServerProcess) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /baseR4/metadata?_summary=true HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while b"\r\n\r\n" not in first:
            first += sock.recv(65536)
        _, headers, body = _parse(first)
        remaining = int(headers[b"content-length"]) - len(body)
        while remaining > 0:
            remaining -= len(sock.recv(65536))
        started = time.monotonic()
        sock.sendall(b"GET /baseR4/")  # and nothing more: uvicorn's keep-alive timer stops at the first byte
        status, _, _ = _parse(_read_until_closed(sock))
    assert status == 408
    assert time.monotonic() - started < HEADER_TIMEOUT + SLACK


def test_a_trickling_body_is_answered_408_within_the_body_timeout(server: ServerProcess) -> None:
    started = time.monotonic()
    with _connect(server) as sock:
        sock.sendall(
            b"POST /baseR4/Patient HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        received = b""
        sock.setblocking(False)
        while time.monotonic() - started < BODY_TIMEOUT + 2 * SLACK:
            try:
                sock.send(b" ")
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
            except BlockingIOError:
                pass
            except OSError:
                break
            time.sleep(0.1)
    assert time.monotonic() - started < BODY_TIMEOUT + 2 * SLACK
    if received:  # the answer, unless the close overtook it
        status, headers, body = _parse(received)
        assert status == 408
        _assert_outcome(headers, body, "timeout")


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (b"GET /baseR4/metadata?x=" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "too-long"),
        (b"FOO /baseR4/metadata HTTP/1.1\r\nHost: x\r\n\r\n", 400, "structure"),
        (b"\x16\x03\x01garbage that is no request line\r\n\r\n", 400, "structure"),
        (b"GET /baseR4/metadata HTTP/1.1\r\nHost: x\r\nX-Bad Name: y\r\n\r\n", 400, "structure"),
        (b"GET /baseR4/metadata HTTP/1.1\r\nHost: x\r\n" + b"X-Many: y\r\n" * 5000 + b"\r\n", 431, "too-costly"),
        (b"GET /baseR4/metadata HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 200_000 + b"\r\n\r\n", 431, "too-long"),
        (b"GET /baseR4/metadata HTTP/1.1\r\nHost: x\r\n" + LARGE_HEADERS + b"\r\n", 431, "too-long"),
    ],
    ids=["long-url", "unknown-method", "garbage", "bad-header-name", "many-headers", "huge-header", "large-headers"],
)
def test_a_request_uvicorn_cannot_parse_or_refuses_gets_an_operation_outcome(
    server: ServerProcess, request_bytes: bytes, status: int, code: str
) -> None:
    answer_status, headers, body = _exchange(server, request_bytes)
    assert answer_status == status
    _assert_outcome(headers, body, code)
    assert b"server" not in headers


def test_no_server_header_and_a_date(server: ServerProcess) -> None:
    response = httpx.get(f"{server.base}/metadata?_summary=true")
    assert response.status_code == 200
    assert "server" not in response.headers
    assert "date" in response.headers


def test_a_websocket_upgrade_is_an_ordinary_request(server: ServerProcess) -> None:
    upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"}
    response = httpx.get(
        f"{server.base}/metadata?_summary=true", headers={**upgrade, "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    )
    assert response.status_code == 200


def test_control_characters_in_a_path_are_escaped_in_the_one_log_line(server: ServerProcess) -> None:
    response = httpx.get(f"{server.base}/Patient/%0aFORGED%0d%1b[31mred%5c")
    assert response.status_code == 404
    assert server.log_path is not None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and b"FORGED" not in server.log_path.read_bytes():
        time.sleep(0.1)  # the request log is written in batches
    log = server.log_path.read_bytes()
    assert b"\x1b" not in log and b"\r" not in log
    lines = [line for line in log.split(b"\n") if b"FORGED" in line]
    assert len(lines) == 1
    assert b"GET /baseR4/Patient/\\nFORGED\\r\\x1b[31mred\\\\ 404" in lines[0]


def test_connections_over_the_limit_are_closed(tmp_path: Path) -> None:
    server = ServerProcess(f"sqlite:///{tmp_path / 'limit.db'}", extra=("--max-connections", "4"))
    try:
        sockets = [_connect(server) for _ in range(10)]
        time.sleep(0.5)
        closed = 0
        for sock in sockets:
            sock.setblocking(False)
            try:
                closed += sock.recv(1) == b""
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
        assert closed >= 6
        for sock in sockets:
            sock.close()
        time.sleep(0.2)
        assert httpx.get(f"{server.base}/metadata?_summary=true").status_code == 200
    finally:
        server.stop()


def test_workers_get_the_same_protocol_and_limits(tmp_path: Path) -> None:
    server = ServerProcess(
        f"sqlite:///{tmp_path / 'workers.db'}", extra=("--workers", "2", "--header-timeout", str(HEADER_TIMEOUT))
    )
    try:
        for _ in range(4):  # connections are spread over the workers
            started = time.monotonic()
            status, headers, body = _exchange(server, b"GET /baseR4/meta")
            assert status == 408 and time.monotonic() - started < HEADER_TIMEOUT + SLACK
            status, headers, body = _exchange(server, b"FOO /baseR4/metadata HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status == 400 and b"server" not in headers
            _assert_outcome(headers, body, "structure")
    finally:
        server.stop()
