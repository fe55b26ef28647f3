"""SQLite group commit: concurrent writers share a transaction, yet each gets its own result or error."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from fhir_imaging.fhir.outcome import PreconditionFailed
from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.storage.sqlite import SQLiteStore


def test_concurrent_writes_each_get_their_own_result_and_a_failure_stays_alone(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'group.db'}", load_registry())
    results: dict[int, Any] = {}
    start = threading.Barrier(24)

    def write(number: int) -> None:
        start.wait()
        try:
            if number % 6 == 0:  # a stale If-Match: this one fails, the others in its batch commit
                results[number] = store.update("Patient", f"p{number}", {"resourceType": "Patient"}, if_match=9)
            else:
                results[number] = store.create("Patient", f"p{number}", {"resourceType": "Patient", "gender": "male"})
        except PreconditionFailed as exc:
            results[number] = exc

    threads = [threading.Thread(target=write, args=(number,)) for number in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for number, result in results.items():
        if number % 6 == 0:
            assert isinstance(result, PreconditionFailed)
            assert store.read("Patient", f"p{number}") is None
        else:
            assert result.version.id == f"p{number}" and result.created
            assert store.read("Patient", f"p{number}") is not None
    store.close()
    reopened = SQLiteStore(f"sqlite:///{tmp_path / 'group.db'}", load_registry())
    assert sum(reopened.read("Patient", f"p{n}") is not None for n in range(24)) == 20
    reopened.close()


def test_an_interrupted_batch_stores_nothing_and_tells_every_caller(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'interrupted.db'}", load_registry())

    def work(tx: Any) -> None:
        tx.create("Patient", "gone", {"resourceType": "Patient"})
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.transact(work)
    assert store.read("Patient", "gone") is None
    assert store.create("Patient", "after", {"resourceType": "Patient"}).created
    store.close()
