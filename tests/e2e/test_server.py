"""End to end: the real ``fhir-imaging serve`` process, its concurrency and its durability."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import SEED_PATIENT, SEED_STUDY
from tests.e2e.server import ServerProcess, running_server

pytestmark = pytest.mark.e2e


def test_serve_creates_seed_example_and_reads_it_back(tmp_path: Path) -> None:
    with running_server(f"sqlite:///{tmp_path / 'e2e.db'}") as server:
        response = httpx.post(
            f"{server.base}/ImagingStudy", json=SEED_STUDY, headers={"Content-Type": "application/fhir+json"}
        )
        assert response.status_code == 201
        location = response.headers["location"]
        assert location.startswith(f"{server.base}/ImagingStudy/") and location.endswith("/_history/1")
        created = response.json()
        read = httpx.get(f"{server.base}/ImagingStudy/{created['id']}")
        assert read.status_code == 200
        assert read.json() == created
        assert read.json()["description"] == "CT Chest with contrast"


def test_serve_answers_metadata_quickly_after_start(tmp_path: Path) -> None:
    started = time.monotonic()
    with running_server(f"sqlite:///{tmp_path / 'start.db'}") as server:
        elapsed = time.monotonic() - started
        assert httpx.get(f"{server.base}/metadata").json()["fhirVersion"] == "4.0.1"
    assert elapsed < 5.0  # about a second here; generous for a loaded CI machine


def test_serve_with_unusable_database_exits_non_zero(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="exited"):
        ServerProcess("mysql://nowhere/db")


def test_parallel_creates_and_updates_are_all_kept_with_gap_free_versions(tmp_path: Path) -> None:
    with running_server(f"sqlite:///{tmp_path / 'concurrent.db'}") as server:
        with httpx.Client(base_url=server.base, timeout=30) as client:
            for index in range(4):
                patient = dict(SEED_PATIENT, id=f"shared-{index}")
                assert client.put(f"/Patient/shared-{index}", json=patient).status_code == 201

        created: list[str] = []
        updates: dict[str, int] = {f"shared-{index}": 0 for index in range(4)}
        lock = threading.Lock()

        def work(number: int) -> None:
            with httpx.Client(base_url=server.base, timeout=30) as client:
                response = client.post("/ImagingStudy", json=SEED_STUDY)
                assert response.status_code == 201, response.text
                target = f"shared-{number % 4}"
                update = client.put(f"/Patient/{target}", json=dict(SEED_PATIENT, id=target))
                assert update.status_code == 200, update.text
                with lock:
                    created.append(response.json()["id"])
                    updates[target] += 1

        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(work, range(200)))

        with httpx.Client(base_url=server.base, timeout=30) as client:
            assert len(set(created)) == 200
            for study_id in created:
                assert client.get(f"/ImagingStudy/{study_id}").status_code == 200
            for target, count in updates.items():
                current = client.get(f"/Patient/{target}").json()
                assert current["meta"]["versionId"] == str(count + 1)
                history = client.get(f"/Patient/{target}/_history", params={"_count": 1000}).json()
                versions = [int(entry["resource"]["meta"]["versionId"]) for entry in history["entry"]]
                assert versions == list(range(count + 1, 0, -1))


def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'crash.db'}"
    server = ServerProcess(database)
    acknowledged: list[dict[str, Any]] = []
    stop = threading.Event()

    def write() -> None:
        with httpx.Client(base_url=server.base, timeout=5) as client:
            while not stop.is_set():
                try:
                    response = client.post("/ImagingStudy", json=SEED_STUDY)
                except httpx.TransportError:
                    return
                if response.status_code == 201:
                    acknowledged.append(response.json())

    writers = [threading.Thread(target=write) for _ in range(4)]
    for writer in writers:
        writer.start()
    time.sleep(1.5)
    server.kill()
    stop.set()
    for writer in writers:
        writer.join()
    assert len(acknowledged) > 20

    with running_server(database) as restarted, httpx.Client(base_url=restarted.base) as client:
        for resource in acknowledged:
            response = client.get(f"/ImagingStudy/{resource['id']}")
            assert response.status_code == 200
            assert response.json() == resource
