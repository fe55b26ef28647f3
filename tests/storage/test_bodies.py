"""Each version's body is stored once: the current one in ``resource``, older ones in ``resource_history``; every
read, vread and history page still returns every version's body (both backends)."""

from __future__ import annotations

import orjson

from fhir_imaging.config import Settings
from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.storage import open_store
from fhir_imaging.storage.base import HistoryQuery


def _patient(family: str) -> dict[str, object]:
    return {"resourceType": "Patient", "name": [{"family": family}]}


def _history_bodies(store: object, resource_id: str) -> list[bytes | None]:
    rows = store.query(  # type: ignore[attr-defined]
        "SELECT body FROM resource_history WHERE id = " + store.dialect.placeholder + " ORDER BY version",  # type: ignore[attr-defined]
        [resource_id],
    )
    return [bytes(row[0]) if row[0] is not None else None for row in rows]


def test_each_body_is_stored_once_and_every_version_reads_back(database: str) -> None:
    store = open_store(Settings(database=database), load_registry())
    try:
        store.create("Patient", "p", _patient("One"))
        assert _history_bodies(store, "p") == [None]  # the current body lives in resource only
        store.update("Patient", "p", _patient("Two"))
        store.update("Patient", "p", _patient("Three"))
        first, second, third = _history_bodies(store, "p")
        assert first is not None and orjson.loads(first)["name"] == [{"family": "One"}]
        assert second is not None and orjson.loads(second)["name"] == [{"family": "Two"}]
        assert third is None
        for version, family in ((1, "One"), (2, "Two"), (3, "Three")):
            read = store.vread("Patient", "p", version)
            assert read is not None and read.body is not None
            assert orjson.loads(read.body)["name"] == [{"family": family}]
        versions, _ = store.history(HistoryQuery(resource_type="Patient", id="p", count=10))
        assert [orjson.loads(v.body or b"{}")["meta"]["versionId"] for v in versions] == ["3", "2", "1"]

        store.delete("Patient", "p")
        assert _history_bodies(store, "p")[2] is not None  # version 3 superseded by the deletion
        versions, _ = store.history(HistoryQuery(resource_type="Patient", id="p", count=10))
        assert versions[0].method == "DELETE" and versions[0].body is None
        assert [orjson.loads(v.body or b"{}")["name"][0]["family"] for v in versions[1:]] == ["Three", "Two", "One"]
        store.update("Patient", "p", _patient("Four"))  # brought back after the deletion
        back = store.vread("Patient", "p", 5)
        assert back is not None and back.body is not None and b"Four" in back.body
        deleted = store.vread("Patient", "p", 4)
        assert deleted is not None and deleted.method == "DELETE" and deleted.body is None
    finally:
        store.close()


def test_histories_written_with_the_body_twice_still_read(database: str) -> None:
    """Databases written before the body was stored once hold the current body in both tables."""
    store = open_store(Settings(database=database), load_registry())
    try:
        store.create("Patient", "q", _patient("Old"))
        placeholder = store.dialect.placeholder  # type: ignore[attr-defined]
        store.transact(
            lambda tx: tx.conn.execute(
                "UPDATE resource_history SET body = (SELECT body FROM resource WHERE resource.id = resource_history.id)"
                f" WHERE id = {placeholder}",
                ("q",),
            )
        )
        store.update("Patient", "q", _patient("New"))
        old, new = store.vread("Patient", "q", 1), store.vread("Patient", "q", 2)
        assert old is not None and old.body is not None and b"Old" in old.body
        assert new is not None and new.body is not None and b"New" in new.body
    finally:
        store.close()
