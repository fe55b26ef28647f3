"""No input makes a regular expression stall the server: every primitive regex runs in linear time (RE2).

Each case is built to make a backtracking engine explode: long runs of near-matches, then one character that fails.
Python's ``re`` takes seconds on 25 repetitions of ``"AAAA "`` + ``"!"`` (base64Binary) and never ends on these.
"""

from __future__ import annotations

import asyncio
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import orjson
import pytest

from fhir_imaging.app import create_app
from fhir_imaging.config import Settings
from tests.e2e.server import running_server

REPO = Path(__file__).resolve().parents[2]
LIMIT = 0.2  # seconds for one adversarial value: RE2 takes about a millisecond on 100 kB
KILL_AFTER = 5.0  # a worker still busy after this long is stuck in a backtracking regex

N = 50_000
# type code → (label, the JSON text of a value of it); every string here is invalid for its type.
ADVERSARIAL: dict[str, list[tuple[str, bytes]]] = {
    "base64Binary": [
        ("'AAAA ' * 5000 + '!'", orjson.dumps("AAAA " * 5000 + "!")),
        ("spaces then '!'", orjson.dumps(" " * N + "!")),
        ("'A' * 99999 + '!'", orjson.dumps("A" * 99_999 + "!")),
    ],
    "boolean": [("'true ' * 20000", orjson.dumps("true " * 20_000))],
    "canonical": [("letters then a space", orjson.dumps("a" * 2 * N + " "))],
    "code": [
        ("'a ' * 50000 + ' '", orjson.dumps("a " * N + " ")),
        ("letters then two tabs", orjson.dumps("a" * 2 * N + "\t\t")),
    ],
    "date": [
        ("digits", orjson.dumps("1" * 2 * N)),
        ("a day then digits", orjson.dumps("2024-01-0" + "1" * 2 * N)),
    ],
    "dateTime": [
        ("digits", orjson.dumps("1" * 2 * N)),
        ("a long fraction then '!'", orjson.dumps("2024-01-01T10:00:00." + "1" * 2 * N + "!")),
    ],
    "decimal": [
        ("300 digits . 100000 digits", b"1" * 300 + b"." + b"1" * 2 * N),
        ("'-0.' 100000 zeros '1e-5'", b"-0." + b"0" * 2 * N + b"1e-5"),
    ],
    "id": [("letters then '!'", orjson.dumps("a" * 2 * N + "!")), ("'a-.' * 30000", orjson.dumps("a-." * 30_000))],
    "instant": [("a long fraction then 'Z!'", orjson.dumps("2024-01-01T10:00:00." + "1" * 2 * N + "Z!"))],
    "integer": [("300 digits", b"1" * 300), ("'1' * 50000 as a string", orjson.dumps("1" * N))],
    "markdown": [("'a\\t' * 50000 + '\\v'", orjson.dumps("a\t" * N + "\x0b"))],
    "oid": [
        ("'urn:oid:1' + '.1' * 50000 + '.'", orjson.dumps("urn:oid:1" + ".1" * N + ".")),
        ("'urn:oid:1' + '.0' * 50000 + '0'", orjson.dumps("urn:oid:1" + ".0" * N + "0")),
    ],
    "positiveInt": [("300 digits", b"1" * 300), ("'1' * 50000 as a string", orjson.dumps("1" * N))],
    "string": [
        ("'a\\t' * 50000 + '\\v'", orjson.dumps("a\t" * N + "\x0b")),
        ("'a ' * 50000 + '\\f'", orjson.dumps("a " * N + "\x0c")),
    ],
    "time": [("a long fraction then '!'", orjson.dumps("10:00:00." + "1" * 2 * N + "!"))],
    "unsignedInt": [("300 digits", b"1" * 300), ("'1' * 50000 as a string", orjson.dumps("1" * N))],
    "uri": [("letters then a space", orjson.dumps("a" * 2 * N + " "))],
    "url": [("'http://x/' + letters then a tab", orjson.dumps("http://x/" + "a" * 2 * N + "\t"))],
    "uuid": [("'urn:uuid:' + zeros", orjson.dumps("urn:uuid:" + "0" * 2 * N))],
}
# The JSON numbers (decimal) here are valid values: they are only timed.
VALID = {"300 digits . 100000 digits", "'-0.' 100000 zeros '1e-5'"}


def _regex_types() -> set[str]:
    data = resources.files("fhir_imaging.validation") / "data" / "types.json"
    table: dict[str, dict[str, str]] = orjson.loads(data.read_bytes())["primitives"]
    return {code for code, spec in table.items() if "regex" in spec}


def _basic_with(type_code: str, value: bytes) -> bytes:
    """A Basic resource whose extension carries ``value`` as ``value[x]`` of ``type_code`` (one line of JSON)."""
    element = "value" + type_code[0].upper() + type_code[1:]
    head = b'{"resourceType":"Basic","code":{"text":"x"},"extension":[{"url":"http://example.org/x","'
    return head + element.encode() + b'":' + value + b"}]}"


class TimingWorker:
    """``tests.security.timing_worker`` in a child process; killed and replaced when a value takes too long."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None

    def _started(self) -> subprocess.Popen[bytes]:
        if self.process is None or self.process.poll() is not None:
            command = [sys.executable, "-m", "tests.security.timing_worker"]
            self.process = subprocess.Popen(command, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        return self.process

    def run(self, line: bytes, timeout: float) -> dict[str, Any] | None:
        """The worker's answer for one resource, or None when it has not answered within ``timeout`` seconds."""
        process = self._started()
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(line + b"\n")
        process.stdin.flush()
        readable, _, _ = select.select([process.stdout], [], [], timeout)
        if not readable:
            self.stop()
            return None
        answer: dict[str, Any] = orjson.loads(process.stdout.readline())
        return answer

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            for pipe in (self.process.stdin, self.process.stdout):
                if pipe is not None:
                    pipe.close()
            self.process = None


@pytest.fixture(scope="module")
def worker() -> Iterator[TimingWorker]:
    timing = TimingWorker()
    assert timing.run(_basic_with("string", b'"warm up"'), timeout=30.0) is not None
    try:
        yield timing
    finally:
        timing.stop()


def test_every_primitive_regex_has_adversarial_cases() -> None:
    assert set(ADVERSARIAL) == _regex_types()


CASES = [(code, label, value) for code, values in ADVERSARIAL.items() for label, value in values]


@pytest.mark.parametrize(("type_code", "label", "value"), CASES, ids=[f"{c}: {label}" for c, label, _ in CASES])
def test_adversarial_value_is_judged_in_linear_time(
    worker: TimingWorker, type_code: str, label: str, value: bytes
) -> None:
    answer = worker.run(_basic_with(type_code, value), timeout=KILL_AFTER)
    assert answer is not None, f"{type_code} {label}: still matching after {KILL_AFTER} s"
    assert "exception" not in answer, answer
    assert answer["seconds"] < LIMIT, f"{type_code} {label}: {answer['seconds']:.3f} s"
    if label in VALID:
        assert answer["errors"] == 0, answer
    else:
        assert answer["errors"] > 0 and answer["located"] > 0, answer


# -- through the HTTP API ------------------------------------------------------------------------------------------

HOSTILE_BINARY = {"resourceType": "Binary", "contentType": "text/plain", "data": "AAAA " * 200 + "!"}  # ~1 kB


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """TimeoutError in this (the main) thread after ``seconds``; ``re`` checks for signals while it backtracks."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


async def _post(settings: Settings, path: str, body: dict[str, Any]) -> httpx.Response:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver/baseR4") as client:
            return await client.post(path, json=body, headers={"Content-Type": "application/fhir+json"})


def test_hostile_base64_binary_is_refused_within_a_second(settings: Settings) -> None:
    # The app runs on this thread's event loop, so the deadline can interrupt a backtracking regex.
    started = time.perf_counter()
    with deadline(5.0):
        response = asyncio.run(_post(settings, "/Binary", HOSTILE_BINARY))
    elapsed = time.perf_counter() - started
    assert response.status_code == 400
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["expression"] == ["Binary.data"]
    assert elapsed < 1.0


@pytest.mark.e2e
def test_server_answers_others_while_hostile_requests_arrive(tmp_path: Path) -> None:
    with running_server(f"sqlite:///{tmp_path / 'redos.db'}") as server:
        stop = threading.Event()
        hostile_answers: list[int] = []

        def attack() -> None:
            with httpx.Client(timeout=10.0) as client:
                while not stop.is_set():
                    try:
                        hostile_answers.append(client.post(f"{server.base}/Binary", json=HOSTILE_BINARY).status_code)
                    except httpx.TransportError:
                        return

        attackers = [threading.Thread(target=attack) for _ in range(4)]
        for thread in attackers:
            thread.start()
        try:
            time.sleep(0.2)  # the hostile requests are in flight
            latencies = []
            with httpx.Client(timeout=5.0) as client:
                for _ in range(10):
                    started = time.perf_counter()
                    response = client.get(f"{server.base}/metadata")
                    latencies.append(time.perf_counter() - started)
                    assert response.status_code == 200
        finally:
            stop.set()
            for thread in attackers:
                thread.join(timeout=15.0)
        assert max(latencies) < 1.0, latencies
        assert hostile_answers and set(hostile_answers) == {400}
