"""The probes outside the FHIR base: ``/healthz`` (the process answers) and ``/readyz`` (the database answers), on
both backends; ``/readyz`` answers 503 with an OperationOutcome while PostgreSQL cannot be reached, and the request
log records a probe only when its answer changes."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import closing, suppress
from urllib.parse import urlsplit, urlunsplit

from starlette.testclient import TestClient

from fhir_imaging.api.errors import _probe_status, _worth_logging
from fhir_imaging.app import create_app
from fhir_imaging.config import Settings
from tests.conftest import BASE, POSTGRES_URL, fresh_postgres_database
from tests.storage.test_history_order import needs_postgres

ROOT = BASE.removesuffix("/baseR4")


def test_healthz_and_readyz_answer_outside_the_fhir_base(client: TestClient) -> None:
    health = client.get(f"{ROOT}/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert health.headers["content-type"] == "application/json"
    assert health.headers["cache-control"] == "no-store"
    ready = client.get(f"{ROOT}/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    assert client.head(f"{ROOT}/readyz").status_code == 200
    assert client.get("/healthz").status_code == 404  # not a FHIR endpoint
    assert client.post(f"{ROOT}/readyz").status_code == 405


def test_a_probe_is_logged_only_when_its_answer_changes() -> None:
    _probe_status.clear()
    assert [_worth_logging(path, status) for path, status in [
        ("/readyz", 200), ("/readyz", 200), ("/readyz", 503), ("/readyz", 503), ("/readyz", 200),
        ("/healthz", 200), ("/healthz", 200), ("/baseR4/metadata", 200), ("/baseR4/metadata", 200),
    ]] == [True, False, True, False, True, True, False, True, True]  # fmt: skip


class Forwarder:
    """A TCP relay from a local port to ``target``: the database's address as the server sees it. ``cut()`` closes
    every relayed connection and refuses new ones, as a database that went away."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.open = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.open:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        self.open = False
        self.listener.close()
        for sock in self.sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    user = f"{netloc[0]}@" if len(netloc) == 2 else ""
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}"))


@needs_postgres
def test_readyz_is_503_while_postgres_cannot_be_reached() -> None:
    assert POSTGRES_URL
    with fresh_postgres_database() as url:
        target = urlsplit(url)
        relay = Forwarder((target.hostname or "127.0.0.1", target.port or 5432))
        try:
            settings = Settings(database=_through(url, relay.port), pool_size=2)
            with TestClient(create_app(settings), base_url=BASE) as client:
                assert client.get(f"{ROOT}/readyz").status_code == 200
                relay.cut()
                started = time.monotonic()
                ready = client.get(f"{ROOT}/readyz")
                assert time.monotonic() - started < 4  # the probe's own short timeout, not the pool's
                assert ready.status_code == 503
                assert ready.headers["content-type"].startswith("application/fhir+json")
                outcome = ready.json()
                assert outcome["resourceType"] == "OperationOutcome"
                assert outcome["issue"][0]["code"] == "transient"
                assert "Not ready" in outcome["issue"][0]["diagnostics"]
                assert client.get(f"{ROOT}/healthz").status_code == 200  # alive all the same: no restart
        finally:
            with closing(relay.listener):
                relay.cut()
