"""Bundle workers (service/entry_pool.py): a Bundle whose resources are validated and indexed in worker processes
stores exactly what it stores without them (bodies, index rows), refuses exactly as it refuses without them, and
survives its workers dying or not answering in time."""

from __future__ import annotations

import copy
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.generate import patient as generated_patient
from bench.generate import study as generated_study
from fhir_imaging.config import Settings
from fhir_imaging.fhir.outcome import FhirError
from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.fhir.transaction import read_entries
from fhir_imaging.search.index import ID_HASH_TABLE, INDEX_TABLES, Indexer
from fhir_imaging.service import ANONYMOUS, Bases, FhirService
from fhir_imaging.service.bundle import BundleRunner, run_bundle
from fhir_imaging.service.entry_pool import FAILURES_IN_A_ROW, EntryPool
from fhir_imaging.storage import open_store
from fhir_imaging.storage.base import Store
from fhir_imaging.validation import Validator
from tests.conftest import POSTGRES_URL, fresh_postgres_database

REGISTRY = load_registry()
VALIDATOR = Validator.load()
BASES = Bases.of("http://example.org/baseR4")
STUDIES = 12


@pytest.fixture(scope="module")
def pool() -> Iterator[EntryPool]:
    """One pool of one process for the module (each start loads the definitions in a new process)."""
    started = EntryPool(1, 1, 120.0)
    started.start()
    try:
        yield started
    finally:
        started.close()


@contextmanager
def _service(database: str, pool: EntryPool | None) -> Iterator[FhirService]:
    settings = Settings(database=database, sqlite_synchronous="normal", pool_size=4)
    store = open_store(settings, REGISTRY)
    try:
        yield FhirService(settings, REGISTRY, store, VALIDATOR, pool)
    finally:
        store.close()


@contextmanager
def _second_database(database: str, tmp_path: Path) -> Iterator[str]:
    """Another fresh database on the backend of ``database``."""
    if database.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'second.db'}"
    else:
        assert POSTGRES_URL
        with fresh_postgres_database() as url:
            yield url


def _entry(resource: dict[str, Any], method: str = "POST", **request: str) -> dict[str, Any]:
    url = resource["resourceType"] if method == "POST" else f"{resource['resourceType']}/{resource['id']}"
    full_url = request.pop("fullUrl", None)
    entry: dict[str, Any] = {"resource": resource, "request": {"method": method, "url": url, **request}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def _feed() -> dict[str, Any]:
    """Realistic studies of a new patient (a placeholder), a PUT, a conditional create whose placeholder a study
    names, and a conditional reference: what the workers index ahead and what only the transaction can resolve."""
    patient = generated_patient(7, 1)
    patient.pop("id")
    fixed = {**generated_patient(7, 2), "id": "fixed-patient"}
    maybe = {**generated_patient(7, 3), "identifier": [{"system": "urn:test", "value": "maybe"}]}
    maybe.pop("id")
    entries = [
        _entry(patient, fullUrl="urn:uuid:0f1e2d3c-0000-4000-8000-000000000001"),
        _entry(fixed, "PUT"),
        _entry(maybe, ifNoneExist="identifier=urn:test|maybe", fullUrl="urn:uuid:0f1e2d3c-0000-4000-8000-00000000000a"),
    ]
    for index in range(STUDIES):
        study = generated_study(100, 7, index)
        study.pop("id")
        study["subject"] = {"reference": "urn:uuid:0f1e2d3c-0000-4000-8000-000000000001"}
        if index == 1:
            study["subject"] = {"reference": "urn:uuid:0f1e2d3c-0000-4000-8000-00000000000a"}
        if index == 2:
            study["subject"] = {"reference": "Patient?identifier=urn:test|existing"}
        if index == 3:
            study["subject"] = {"reference": "Patient/fixed-patient"}
        entries.append(_entry(study))
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _existing_patient(service: FhirService) -> None:
    existing = {"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": "existing"}]}
    service.store.create("Patient", "existing", existing)


def _stored(store: Store, locations: list[str]) -> list[Any]:
    """Each written resource's body as stored, its own ids and stamps replaced by its entry's position (POST ids
    are drawn at random), with its index rows, each checked against what the indexer makes of that body."""
    names = {location.rsplit("/_history/", 1)[0]: f"entry-{i}" for i, location in enumerate(locations)}
    indexer = Indexer(REGISTRY)
    sql = store.dialect.sql  # type: ignore[attr-defined]
    out = []
    for location in locations:
        resource_type, resource_id = location.split("/")[:2]
        version = store.read(resource_type, resource_id)
        assert version is not None and version.body is not None
        body = orjson.loads(version.body)
        rid = store.reading(
            lambda reader, t=resource_type, i=resource_id: reader.query(
                sql("SELECT rid FROM resource WHERE type = ? AND id = ?"), (t, i)
            )
        )[0][0]
        found: dict[str, list[Any]] = {}
        for table in INDEX_TABLES:
            rows = store.reading(
                lambda reader, t=table, r=rid: reader.query(sql(f"SELECT * FROM {t} WHERE rid = ?"), (r,))
            )
            if rows:
                found[table] = sorted((tuple(row) for row in rows), key=repr)
        expected = {
            table: sorted((tuple(row) for row in rows), key=repr)
            for table, rows in indexer.rows(rid, body, None).items()
        }
        assert found == expected, location
        text = orjson.dumps({key: value for key, value in body.items() if key not in ("id", "meta")}).decode()
        for stored_name, name in names.items():
            text = text.replace(f'"{stored_name}"', f'"{name}"')
        out.append((resource_type, orjson.loads(text), {table: len(rows) for table, rows in found.items()}))
    return out


def _locations(response: dict[str, Any]) -> list[str]:
    return [entry["response"]["location"] for entry in response["entry"]]


def test_a_transaction_through_the_workers_stores_what_it_stores_without_them(
    database: str, tmp_path: Path, pool: EntryPool
) -> None:
    """The same Bundle on two fresh databases, with and without workers: the same statuses, the same bodies
    (placeholders, the conditional create and the conditional reference resolved alike), and on both, every
    resource's index rows exactly those the indexer gives for its stored body."""
    stored = []
    with _second_database(database, tmp_path) as second:
        for url, workers in ((database, pool), (second, None)):
            with _service(url, workers) as service:
                _existing_patient(service)
                response = run_bundle(service, ANONYMOUS, _feed(), "minimal", BASES, strict=False)
                statuses = [entry["response"]["status"] for entry in response["entry"]]
                stored.append((statuses, _stored(service.store, _locations(response))))
    assert stored[0] == stored[1]
    assert stored[0][0] == ["201 Created"] * (3 + STUDIES)
    assert stored[0][1][3][2][ID_HASH_TABLE] > 10  # the studies' UIDs were indexed


def test_the_workers_index_ahead_every_entry_whose_id_and_content_are_known_before_the_transaction(
    database: str, pool: EntryPool
) -> None:
    """The rows computed ahead are the ones the writes take (same id, same content after references are rewritten);
    only the entries the transaction itself resolves differently are indexed in the server process."""
    with _service(database, pool) as service:
        _existing_patient(service)
        entries = read_entries(_feed(), REGISTRY.is_resource_type)
        runner = BundleRunner(service, ANONYMOUS, "minimal", BASES, False)
        runner.transaction(entries)
        assert _received(runner) == len(entries)
        usable = [
            Indexer.usable(runner._prepared(entry), entry.resource_id or "", entry.resource or {}) is not None
            for entry in entries
        ]
    # the conditional create (id found in the database), and the studies naming it or a conditional reference
    assert [index for index, ok in enumerate(usable) if not ok] == [2, 4, 5]


def _received(runner: BundleRunner) -> int:
    return runner.ahead.received() if runner.ahead is not None else 0


def _refused(service: FhirService, bundle: dict[str, Any]) -> tuple[int, list[Any]]:
    with pytest.raises(FhirError) as raised:
        run_bundle(service, ANONYMOUS, bundle, "minimal", BASES, strict=False)
    return raised.value.status, [(i.severity, i.code, i.diagnostics, i.expression) for i in raised.value.issues]


def _invalid(entry: dict[str, Any]) -> None:
    entry["resource"]["status"] = "no-such-status"
    entry["resource"]["started"] = "yesterday"


def _no_status(entry: dict[str, Any]) -> None:
    entry["resource"].pop("status")


def _matches_nothing(entry: dict[str, Any]) -> None:
    entry["resource"]["subject"] = {"reference": "Patient?identifier=urn:test|nobody"}  # 412 in the transaction


def _other_id(entry: dict[str, Any]) -> None:
    entry["request"]["url"] = "Patient/another-id"  # 400 before the transaction (the body's id differs)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({6: _invalid, 9: _no_status}, 6),  # two invalid entries: the first, with every error of it
        ({3: _matches_nothing, 9: _invalid}, 9),  # invalid beats what fails in the transaction, though later
        ({1: _other_id, 9: _invalid}, 1),  # a check before validation, on an earlier entry
        ({5: _invalid, 1: _other_id}, 1),
        ({1: _matches_nothing}, 1),  # nothing invalid: the transaction's own refusal
    ],
)
def test_refusals_are_the_same_with_and_without_workers(
    database: str, pool: EntryPool, changes: dict[int, Any], named: int
) -> None:
    """The refusal is the one the Bundle gives validating in this process, and nothing is stored."""
    bundle = _feed()
    for index, change in changes.items():
        change(bundle["entry"][index])
    refusals = []
    for workers in (pool, None):
        with _service(database, workers) as service:
            if workers is not None:
                _existing_patient(service)
            refusals.append(_refused(service, copy.deepcopy(bundle)))
            assert service.store.read("Patient", "fixed-patient") is None
    assert refusals[0] == refusals[1]
    assert all(f"Bundle.entry[{named}]" in issue[2] for issue in refusals[0][1])


def test_a_killed_worker_costs_no_request(database: str) -> None:
    """Workers killed (as by the OOM killer): the next Bundle is processed in the server process, stores what it
    would have, and the one after it goes through new workers."""
    killed = EntryPool(1, 1, 120.0)
    killed.start()
    try:
        with _service(database, killed) as service:
            _existing_patient(service)
            assert run_bundle(service, ANONYMOUS, _feed(), "minimal", BASES, strict=False)["entry"]
            assert killed._pool is not None
            for pid in list(killed._pool._processes):  # type: ignore[attr-defined]
                os.kill(pid, signal.SIGKILL)
            runner = BundleRunner(service, ANONYMOUS, "minimal", BASES, False)
            results = runner.transaction(read_entries(_feed(), REGISTRY.is_resource_type))
            assert len(results) == 3 + STUDIES and results[0]["response"]["status"] == "201 Created"
            assert _received(runner) == 0 and killed.failures == 1
            again = BundleRunner(service, ANONYMOUS, "minimal", BASES, False)
            again.transaction(read_entries(_feed(), REGISTRY.is_resource_type))
            assert _received(again) == 3 + STUDIES and killed.failures == 1
    finally:
        killed.close()


def test_workers_that_do_not_answer_in_time_cost_no_request(database: str) -> None:
    """A timeout shorter than the work: the Bundle is processed in the server process."""
    slow = EntryPool(1, 1, 0.000_001)
    try:
        with _service(database, slow) as service:
            _existing_patient(service)
            runner = BundleRunner(service, ANONYMOUS, "minimal", BASES, False)
            results = runner.transaction(read_entries(_feed(), REGISTRY.is_resource_type))
            assert len(results) == 3 + STUDIES and _received(runner) == 0 and slow.failures == 1
    finally:
        slow.close()


def test_a_bundle_smaller_than_the_setting_stays_in_the_server_process(database: str, pool: EntryPool) -> None:
    few = EntryPool(1, 3 + STUDIES + 1, 120.0)  # never started: a Bundle below its size does not start it
    with _service(database, few) as service:
        _existing_patient(service)
        runner = BundleRunner(service, ANONYMOUS, "minimal", BASES, False)
        runner.transaction(read_entries(_feed(), REGISTRY.is_resource_type))
        assert _received(runner) == 0 and few._pool is None


def test_a_batch_through_the_workers_answers_each_entry_as_without_them(
    database: str, tmp_path: Path, pool: EntryPool
) -> None:
    bundle = _feed()
    bundle["type"] = "batch"
    bundle["entry"][6]["resource"]["status"] = "no-such-status"
    answers = []
    with _second_database(database, tmp_path) as second:
        for url, workers in ((database, pool), (second, None)):
            with _service(url, workers) as service:
                _existing_patient(service)
                response = run_bundle(service, ANONYMOUS, copy.deepcopy(bundle), "minimal", BASES, strict=False)
                answers.append(
                    [
                        (e["response"]["status"], e["response"].get("outcome", {}).get("issue"))
                        for e in response["entry"]
                    ]
                )
    assert answers[0] == answers[1]
    assert answers[0][6][0] == "422 Unprocessable Entity" and answers[0][1][0] == "201 Created"


def test_workers_failing_again_and_again_are_no_longer_started(database: str) -> None:
    failing = EntryPool(1, 1, 0.000_001)
    try:
        with _service(database, failing) as service:
            _existing_patient(service)
            for _ in range(FAILURES_IN_A_ROW + 1):
                runner = BundleRunner(service, ANONYMOUS, "minimal", BASES, False)
                runner.transaction(read_entries(_feed(), REGISTRY.is_resource_type))
            assert failing.failures == FAILURES_IN_A_ROW and failing._pool is None
            assert not failing.pays_for(1000)
    finally:
        failing.close()


def test_a_resource_is_validated_as_received_when_the_workers_fail_during_the_transaction(database: str) -> None:
    """Workers that do not answer: a write validates its resource in the server process as the Bundle sent it, not
    as the transaction rewrote it (a ``uuid`` element naming another entry's fullUrl becomes ``Patient/…``)."""
    placeholder = "urn:uuid:0f1e2d3c-0000-4000-8000-000000000001"
    patient = {"resourceType": "Patient", "gender": "other"}
    study = {
        "resourceType": "ImagingStudy",
        "status": "available",
        "subject": {"reference": placeholder},
        "extension": [{"url": "http://example.org/fhir/StructureDefinition/origin", "valueUuid": placeholder}],
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [_entry(patient, fullUrl=placeholder), _entry(study)],
    }
    slow = EntryPool(1, 1, 0.000_001)
    try:
        statuses = []
        for workers in (slow, None):
            with _service(database, workers) as service:
                response = run_bundle(service, ANONYMOUS, copy.deepcopy(bundle), "minimal", BASES, strict=False)
                statuses.append([entry["response"]["status"] for entry in response["entry"]])
        assert statuses == [["201 Created"] * 2] * 2 and slow.failures == 1
    finally:
        slow.close()


def test_the_server_starts_its_workers_with_the_setting_and_stops_them(database: str) -> None:
    from starlette.testclient import TestClient

    from fhir_imaging.app import create_app

    settings = Settings(
        database=database, sqlite_synchronous="normal", pool_size=4, bundle_workers=1, bundle_workers_from=2
    )
    app = create_app(settings)
    with TestClient(app, base_url="http://testserver/baseR4") as client:
        pool = app.state.service.entry_pool
        assert isinstance(pool, EntryPool) and pool.workers == 1 and pool.smallest == 2
        headers = {"Content-Type": "application/fhir+json"}
        existing = {
            "resourceType": "Patient",
            "id": "existing",
            "identifier": [{"system": "urn:test", "value": "existing"}],
        }
        assert client.put("/Patient/existing", content=orjson.dumps(existing), headers=headers).status_code == 201
        response = client.post("/", content=orjson.dumps(_feed()), headers=headers)
        assert response.status_code == 200, response.text[:300]
        processes = list(pool._pool._processes.values())  # type: ignore[union-attr]
        assert processes and pool.failures == 0
    assert pool._pool is None and not any(process.is_alive() for process in processes)
    without = create_app(Settings(database=database, sqlite_synchronous="normal", pool_size=4))
    with TestClient(without, base_url="http://testserver/baseR4"):
        assert without.state.service.entry_pool is None
