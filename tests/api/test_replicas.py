"""Read replicas through the API, on a real primary and a real streaming replica: which requests a replica serves,
read-your-writes with the consistency token, a replica that goes down and comes back (docs/replicas.md)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from fhir_imaging.app import create_app
from fhir_imaging.storage.base import Store
from tests.api.test_export import exported, finished, ids, kick_off, seed
from tests.conftest import BASE, SEED_PATIENT, SEED_STUDY
from tests.replicas import (
    needs_postgres,
    replay_paused,
    replica_served,
    replica_settings,
    replica_stopped,
    replicas_of,
    replicated_database,
    wait_until,
    wait_usable,
)

pytestmark = needs_postgres
ACCESSION = {"system": "http://hospital.example/accession", "value": "ACC-1"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with replicated_database() as urls:
        settings = replica_settings(urls, export_dir=str(tmp_path / "exports"))
        with TestClient(create_app(settings), base_url=BASE) as test_client:
            wait_usable(store_of(test_client))
            yield test_client


def store_of(client: TestClient) -> Store:
    store: Store = client.app.state.service.store  # type: ignore[attr-defined]
    return store


def caught_up(client: TestClient) -> None:
    """Wait until the replica has replayed every write made so far, and forget the client's token."""
    replicas = replicas_of(store_of(client))
    fence = int(client.app.state.service.store._primary_lsn())  # type: ignore[attr-defined]
    wait_until(lambda: replicas.replicas[0].usable and replicas.replicas[0].replayed >= fence, replicas)
    client.cookies.clear()


def study(**extra: Any) -> dict[str, Any]:
    return {**SEED_STUDY, "subject": {"reference": "Patient/p1"}, **extra}


def test_reads_searches_and_histories_are_served_by_the_replica(client: TestClient) -> None:
    client.put("/Patient/p1", json={**SEED_PATIENT, "id": "p1"})
    study_id = client.post("/ImagingStudy", json=study()).json()["id"]
    caught_up(client)
    store = store_of(client)
    gets = [
        f"/ImagingStudy/{study_id}",
        f"/ImagingStudy/{study_id}/_history/1",
        f"/ImagingStudy/{study_id}/_history",
        "/ImagingStudy/_history",
        "/_history",
        "/ImagingStudy?modality=CT",
        "/?_type=ImagingStudy,Patient",
        "/Patient/p1/ImagingStudy",
    ]
    for path in gets:
        before = replica_served(store)
        response = client.get(path)
        assert response.status_code == 200, (path, response.text)
        assert replica_served(store) == before + 1, path
    before = replica_served(store)
    found = client.post("/ImagingStudy/_search", data={"modality": "CT"})
    assert found.status_code == 200 and found.json()["total"] == 1
    reads = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": f"ImagingStudy/{study_id}"}}],
    }
    assert client.post("/", json=reads).json()["entry"][0]["response"]["status"] == "200 OK"
    assert replica_served(store) == before + 2


def test_a_create_answers_a_token_that_reads_its_write(client: TestClient) -> None:
    """Replay paused: the replica lacks the write. With the token (cookie or header) the read is the primary's;
    without, the replica's stale answer shows the token is what made the difference."""
    with replay_paused():
        created = client.post("/ImagingStudy", json=study(identifier=[ACCESSION]))
        assert created.status_code == 201
        token = created.headers["x-consistency-token"]
        assert client.cookies.get("fhir_imaging_consistency") == token
        path = f"/ImagingStudy/{created.json()['id']}"
        assert client.get(path).status_code == 200  # the cookie, as a browser sends it
        assert client.get("/ImagingStudy?identifier=ACC-1").json()["total"] == 1
        client.cookies.clear()
        assert client.get(path, headers={"X-Consistency-Token": token}).status_code == 200
        assert client.get(path, headers={"X-Consistency-Token": "not-a-token"}).status_code == 200
        assert client.get(path).status_code == 404  # no token: the replica, which has not replayed the create
        assert client.get("/ImagingStudy?identifier=ACC-1").json()["total"] == 0
    caught_up(client)
    assert client.get(path).status_code == 200


def test_a_read_only_request_answers_no_token(client: TestClient) -> None:
    client.cookies.clear()
    response = client.get("/ImagingStudy")
    assert response.status_code == 200
    assert "x-consistency-token" not in response.headers and "set-cookie" not in response.headers


def test_writes_and_what_they_read_never_go_to_the_replica(client: TestClient) -> None:
    """A write sent to a replica would fail (it is read-only); so would the search of a conditional interaction run
    there. Every write answers its usual status, and the replica serves none of it."""
    caught_up(client)
    store = store_of(client)
    before = replica_served(store)
    headers = {"If-None-Exist": "identifier=ACC-1"}
    created = client.post("/ImagingStudy", json=study(identifier=[ACCESSION]), headers=headers)
    assert created.status_code == 201
    study_id = created.json()["id"]
    assert client.post("/ImagingStudy", json=study(identifier=[ACCESSION]), headers=headers).status_code == 200
    answers = [
        client.put(f"/ImagingStudy/{study_id}", json=study(id=study_id, identifier=[ACCESSION], status="registered")),
        client.put("/ImagingStudy?identifier=ACC-1", json=study(identifier=[ACCESSION], status="available")),
        client.patch(
            f"/ImagingStudy/{study_id}",
            json=[{"op": "replace", "path": "/status", "value": "registered"}],
            headers={"Content-Type": "application/json-patch+json"},
        ),
        client.patch(
            "/ImagingStudy?identifier=ACC-1",
            json=[{"op": "replace", "path": "/status", "value": "available"}],
            headers={"Content-Type": "application/json-patch+json"},
        ),
        client.put("/Patient/p2", json={**SEED_PATIENT, "id": "p2"}),
        client.delete("/Patient/p2"),
        client.delete("/ImagingStudy?identifier=ACC-1"),
    ]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 200, 201, 200, 200]
    for kind in ("transaction", "batch"):
        bundle = {
            "resourceType": "Bundle",
            "type": kind,
            "entry": [
                {"resource": {**SEED_PATIENT}, "request": {"method": "POST", "url": "Patient"}},
                {"request": {"method": "GET", "url": "Patient?family=Chalmers"}},
            ],
        }
        response = client.post("/", json=bundle)
        assert response.status_code == 200, response.text
        statuses = [entry["response"]["status"] for entry in response.json()["entry"]]
        assert statuses == ["201 Created", "200 OK"]
    assert replica_served(store) == before


def test_a_replica_going_down_leaves_reads_to_the_primary_until_it_is_back(client: TestClient) -> None:
    study_id = client.post("/ImagingStudy", json=study()).json()["id"]
    caught_up(client)
    store = store_of(client)
    with replica_stopped():
        for _ in range(3):
            assert client.get(f"/ImagingStudy/{study_id}").status_code == 200
            assert client.get("/ImagingStudy?modality=CT").json()["total"] == 1
        wait_usable(store, usable=False)
        assert client.post("/ImagingStudy", json=study()).status_code == 201
        client.cookies.clear()
        before = replica_served(store)
        assert client.get(f"/ImagingStudy/{study_id}/_history").status_code == 200
        assert replica_served(store) == before
    wait_usable(store)
    caught_up(client)
    before = replica_served(store)
    assert client.get(f"/ImagingStudy/{study_id}").status_code == 200
    assert replica_served(store) == before + 1


def _point_reads_of_replica(client: TestClient) -> tuple[int, int]:
    """The replica's pool of reads by id: (generation, requests it served); (-1, 0) before it has one."""
    made = replicas_of(store_of(client)).replicas[0]._point_reads
    return (-1, 0) if made is None else (made[0], int(made[1].get_stats().get("requests_num", 0)))


def test_reads_by_id_on_the_replica_wait_on_the_event_loop_and_follow_it_coming_back(client: TestClient) -> None:
    study_id = client.post("/ImagingStudy", json=study()).json()["id"]
    caught_up(client)
    store = store_of(client)
    before = replica_served(store)
    for _ in range(3):
        assert client.get(f"/ImagingStudy/{study_id}").status_code == 200
    generation, served = _point_reads_of_replica(client)
    assert served == 3 and replica_served(store) == before + 3  # over the replica's asynchronous pool
    with replica_stopped():
        assert client.get(f"/ImagingStudy/{study_id}").status_code == 200  # the primary answers
        wait_usable(store, usable=False)
    wait_usable(store)
    caught_up(client)
    before = replica_served(store)
    assert client.get(f"/ImagingStudy/{study_id}").status_code == 200
    assert replica_served(store) == before + 1
    assert _point_reads_of_replica(client) == (generation + 1, 1)  # a fresh pool: the old one's connections died


def test_bulk_export_reads_a_replica_that_has_replayed_its_kick_off(client: TestClient) -> None:
    """Replay paused: the replica lacks everything, so the job (status, and the resources it writes out) is read
    on the primary and misses nothing; once the replica has caught up, an export's resources come from it."""
    with replay_paused():
        seed(client)
        client.cookies.clear()
        found = ids(exported(client, finished(client, kick_off(client))))
        assert found["ImagingStudy"] == {"s0", "s1", "s2", "s3"} and found["Patient"] == {"p1", "p2", "p3"}
    caught_up(client)
    store = store_of(client)
    status = kick_off(client)
    client.cookies.clear()
    before = replica_served(store)
    assert ids(exported(client, finished(client, status))) == found
    assert replica_served(store) > before


def test_readyz_shows_each_replica_and_stays_ready_while_one_is_down(client: TestClient) -> None:
    """The primary answers a down replica's reads, so the server stays ready; the probe says what the checks found,
    without the replica's address (anyone may ask)."""
    root = BASE.removesuffix("/baseR4")
    answer = client.get(f"{root}/readyz")
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "ready"
    [state] = body["replicas"]
    assert state["usable"] is True and isinstance(state["lag"], float) and 0 <= state["lag"] < 5
    assert "127.0.0.1" not in answer.text and "postgres" not in answer.text
    store = store_of(client)
    with replica_stopped():
        wait_usable(store, usable=False)
        replicas_of(store).wait_checked()  # a check that found it unreachable (a failed read marks it down sooner)
        answer = client.get(f"{root}/readyz")
        assert answer.status_code == 200
        assert answer.json() == {"status": "ready", "replicas": [{"usable": False, "lag": None}]}
    wait_usable(store)
    assert client.get(f"{root}/readyz").json()["replicas"][0]["usable"] is True
