"""PostgreSQL in production shape: several server processes on one database, races, and a database restart."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import POSTGRES_URL, SEED_PATIENT, SEED_STUDY, fresh_postgres_database
from tests.e2e.server import ServerProcess, running_server
from tests.replicas import replica_caught_up

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not POSTGRES_URL, reason="FHIR_IMAGING_TEST_POSTGRES is not set (scripts/test starts one)"),
]


@pytest.fixture
def pg_database() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url


def test_two_servers_on_one_database_behave_as_one(pg_database: str) -> None:
    with running_server(pg_database) as first, running_server(pg_database) as second:
        created = [httpx.post(f"{first.base}/ImagingStudy", json=SEED_STUDY).json()["id"] for _ in range(7)]
        for study_id in created:
            assert httpx.get(f"{second.base}/ImagingStudy/{study_id}").status_code == 200
        seen: list[str] = []
        url: str | None = f"{second.base}/ImagingStudy/_history?_count=3"
        while url:
            bundle = httpx.get(url).json()
            seen += [entry["resource"]["id"] for entry in bundle.get("entry", [])]
            url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
            if url:  # a next link written by one process is followed on the other
                url = url.replace(second.base, first.base if len(seen) % 2 else second.base)
        assert sorted(seen) == sorted(created)


def test_racing_if_match_updates_across_processes_have_one_winner(pg_database: str) -> None:
    with running_server(pg_database) as first, running_server(pg_database) as second:
        patient = dict(SEED_PATIENT, id="raced")
        assert httpx.put(f"{first.base}/Patient/raced", json=patient).status_code == 201

        def attempt(number: int) -> int:
            base = first.base if number % 2 else second.base
            body = dict(patient, gender="female" if number % 2 else "other")
            return httpx.put(f"{base}/Patient/raced", json=body, headers={"If-Match": 'W/"1"'}, timeout=30).status_code

        with ThreadPoolExecutor(max_workers=12) as pool:
            statuses = list(pool.map(attempt, range(12)))
        assert statuses.count(200) == 1
        assert statuses.count(412) == 11
        assert httpx.get(f"{second.base}/Patient/raced").json()["meta"]["versionId"] == "2"


def test_concurrent_updates_and_update_as_create_keep_versions_gap_free(pg_database: str) -> None:
    with running_server(pg_database) as first, running_server(pg_database) as second:

        def write(number: int) -> int:
            base = first.base if number % 2 else second.base
            patient = dict(SEED_PATIENT, id="together")
            return httpx.put(f"{base}/Patient/together", json=patient, timeout=30).status_code

        with ThreadPoolExecutor(max_workers=16) as pool:
            statuses = list(pool.map(write, range(40)))
        assert statuses.count(201) == 1 and statuses.count(200) == 39
        history = httpx.get(f"{first.base}/Patient/together/_history", params={"_count": 100}).json()
        versions = [int(entry["resource"]["meta"]["versionId"]) for entry in history["entry"]]
        assert versions == list(range(40, 0, -1))


def test_unreachable_database_at_start_is_a_clear_error(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with pytest.raises(RuntimeError, match="exited"):
        ServerProcess("postgresql://nobody@127.0.0.1:1/none", log=log)
    assert "cannot be reached" in log.read_text()


@pytest.mark.skipif(not os.environ.get("FHIR_IMAGING_TEST_PG_CTL"), reason="needs the throwaway cluster's pg_ctl")
def test_database_restart_answers_503_then_recovers_and_loses_nothing(pg_database: str) -> None:
    pg_ctl = shlex.split(os.environ["FHIR_IMAGING_TEST_PG_CTL"])
    with running_server(pg_database) as server, httpx.Client(base_url=server.base, timeout=30) as client:
        acknowledged = [client.post("/ImagingStudy", json=SEED_STUDY).json()["id"] for _ in range(5)]
        subprocess.run([*pg_ctl, "-m", "fast", "-w", "stop"], check=True, capture_output=True)
        try:
            down = client.post("/ImagingStudy", json=SEED_STUDY)
            assert down.status_code == 503
            assert down.json()["resourceType"] == "OperationOutcome"
            assert client.get(f"/ImagingStudy/{acknowledged[0]}").status_code == 503
            root = server.base.removesuffix("/baseR4")
            not_ready = httpx.get(f"{root}/readyz", timeout=10)
            assert not_ready.status_code == 503 and not_ready.json()["resourceType"] == "OperationOutcome"
            assert httpx.get(f"{root}/healthz", timeout=10).status_code == 200
        finally:
            subprocess.run([*pg_ctl, "-w", "start"], check=True, capture_output=True)
        deadline = time.monotonic() + 30
        while True:
            response = client.post("/ImagingStudy", json=SEED_STUDY)
            if response.status_code == 201 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert response.status_code == 201
        acknowledged.append(response.json()["id"])
        for study_id in acknowledged:
            assert client.get(f"/ImagingStudy/{study_id}").status_code == 200
        assert httpx.get(f"{server.base.removesuffix('/baseR4')}/readyz", timeout=10).status_code == 200
    if os.environ.get("FHIR_IMAGING_TEST_POSTGRES_REPLICA"):
        replica_caught_up()


@pytest.mark.skipif(not os.environ.get("FHIR_IMAGING_TEST_PG_CTL"), reason="needs the throwaway cluster's pg_ctl")
def test_after_a_long_outage_the_first_requests_are_answered_again(pg_database: str) -> None:
    """Requests during an outage of several seconds make the pools retry, and fail; the first read (the event loop's
    pool) and the first write (the threads' pool) once the database is back are answered, not left waiting for the
    next step of a reconnection backoff."""
    pg_ctl = shlex.split(os.environ["FHIR_IMAGING_TEST_PG_CTL"])
    with running_server(pg_database) as server, httpx.Client(base_url=server.base, timeout=30) as client:
        study_id = client.post("/ImagingStudy", json=SEED_STUDY).json()["id"]
        assert client.get(f"/ImagingStudy/{study_id}").status_code == 200
        subprocess.run([*pg_ctl, "-m", "fast", "-w", "stop"], check=True, capture_output=True)
        try:
            down_until = time.monotonic() + 16  # past the backoff steps of 1, 2, 4 and 8 s
            while time.monotonic() < down_until:
                assert client.get(f"/ImagingStudy/{study_id}").status_code == 503
                assert client.post("/ImagingStudy", json=SEED_STUDY).status_code == 503
                time.sleep(0.3)
        finally:
            subprocess.run([*pg_ctl, "-w", "start"], check=True, capture_output=True)
        assert client.get(f"/ImagingStudy/{study_id}").status_code == 200
        assert client.post("/ImagingStudy", json=SEED_STUDY).status_code == 201
    if os.environ.get("FHIR_IMAGING_TEST_POSTGRES_REPLICA"):
        replica_caught_up()
