"""``fhir-imaging serve`` with a read replica as deployed (its URL from ``FHIR_IMAGING_DATABASE_REPLICA``): a client
that follows its consistency token reads its writes, one that does not gets the replica's answer."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import SEED_STUDY
from tests.e2e.server import ServerProcess
from tests.replicas import needs_postgres, replay_paused, replicated_database

pytestmark = [pytest.mark.e2e, needs_postgres]


def test_serve_routes_reads_to_the_replica_and_the_token_reads_the_writes() -> None:
    with replicated_database() as urls:
        environ = {"FHIR_IMAGING_DATABASE_REPLICA": urls.replica}
        server = ServerProcess(urls.primary, extra=("--replica-check-interval", "0.2"), environ=environ)
        try:
            with httpx.Client(base_url=server.base, timeout=30) as client:
                assert client.post("/ImagingStudy", json=SEED_STUDY).status_code == 201
                _wait_in_use(server)  # checks every 0.2 s: the replica is found caught up and used
                with replay_paused():
                    created = client.post("/ImagingStudy", json=SEED_STUDY)
                    assert created.status_code == 201
                    token = created.headers["x-consistency-token"]
                    path = f"/ImagingStudy/{created.json()['id']}"
                    assert client.get(path).status_code == 200  # the cookie, kept by the client
                    assert client.get(path, headers={"X-Consistency-Token": token}).status_code == 200
                    with httpx.Client(base_url=server.base, timeout=30) as other:  # no token: the stale replica
                        assert other.get(path).status_code == 404
                assert client.get(path).status_code == 200
        finally:
            server.stop()


def _wait_in_use(server: ServerProcess, timeout: float = 30.0) -> None:
    """Until ``/readyz`` says the replica is in use (a fixed sleep was too short on a loaded machine)."""
    ready = server.base.removesuffix("/baseR4") + "/readyz"
    deadline = time.monotonic() + timeout
    while True:
        replicas = httpx.get(ready, timeout=5).json().get("replicas", [])
        if replicas and replicas[0]["usable"]:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"the replica was not in use within {timeout:g} s: {replicas}")
        time.sleep(0.1)
