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


def _stored(store: object, table: str, resource_id: str) -> bytes:
    placeholder = store.dialect.placeholder  # type: ignore[attr-defined]
    rows = store.query(f"SELECT body FROM {table} WHERE id = {placeholder} AND body IS NOT NULL", [resource_id])  # type: ignore[attr-defined]
    return bytes(rows[0][0])


def test_large_bodies_are_stored_compressed_and_read_back_as_written(database: str) -> None:
    """A body past ``SMALLEST`` bytes is stored packed (storage/bodies.py); read, vread, history, search and the
    export snapshot give back the JSON, byte for byte."""
    from fhir_imaging.export.snapshot import Snapshot, snapshot_page
    from fhir_imaging.search.execute import run_search
    from fhir_imaging.search.query import parse_search
    from fhir_imaging.storage.bodies import MARK, SMALLEST

    store = open_store(Settings(database=database), load_registry())
    try:
        names = [{"family": f"Family{n}", "given": ["Given"] * 3} for n in range(40)]
        large = {"resourceType": "Patient", "name": names}
        written = store.create("Patient", "big", large).version.body
        assert written is not None and len(written) > SMALLEST
        assert _stored(store, "resource", "big").startswith(MARK)
        assert len(_stored(store, "resource", "big")) < len(written)
        read = store.read("Patient", "big")
        assert read is not None and read.body == written
        store.update("Patient", "big", {**large, "gender": "female"})
        assert _stored(store, "resource_history", "big").startswith(MARK)  # version 1, superseded
        old = store.vread("Patient", "big", 1)
        assert old is not None and old.body == written
        versions, _ = store.history(HistoryQuery(resource_type="Patient", id="big", count=10))
        assert versions[1].body == written and orjson.loads(versions[0].body or b"{}")["gender"] == "female"
        search = parse_search(load_registry(), ("Patient",), [("family", "Family39")])
        hits = store.reading(lambda reader: run_search(reader, search, ("",)).matches)  # type: ignore[attr-defined]
        assert [orjson.loads(hit.body)["gender"] for hit in hits] == ["female"]
        seq = store.query("SELECT max(seq) FROM resource_history", [])[0][0]  # type: ignore[attr-defined]
        snapshot = Snapshot(seq, 2**63 - 1)  # every version so far, whichever transaction wrote it
        rows = store.reading(lambda reader: snapshot_page(reader, "Patient", snapshot, ""))  # type: ignore[attr-defined]
        assert [orjson.loads(row.body)["gender"] for row in rows] == ["female"]
        small = store.create("Patient", "small", _patient("Small")).version.body
        assert small is not None and _stored(store, "resource", "small") == small  # too small to gain: as written
    finally:
        store.close()
