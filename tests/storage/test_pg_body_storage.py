"""PostgreSQL keeps a (compressed) body in its row up to a page and never compresses it again (schema migration 10):
a read by id then needs no TOAST lookup for most resources."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest

from fhir_imaging.config import Settings
from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.storage import open_store
from fhir_imaging.storage.base import Store
from tests.conftest import fresh_postgres_database
from tests.replicas import needs_postgres

pytestmark = needs_postgres
STORED = (
    "SELECT pg_column_size(body), octet_length(body), "
    "(SELECT count(*) FROM pg_toast.pg_toast_{toast}) FROM resource WHERE id = %s"
)


@pytest.fixture
def store() -> Iterator[Store]:
    with fresh_postgres_database() as url:
        opened = open_store(Settings(database=url, pool_size=1), load_registry())
        try:
            yield opened
        finally:
            opened.close()


def _stored(store: Store, resource_id: str) -> tuple[int, int, int]:
    with psycopg.connect(store.url, autocommit=True) as conn:  # type: ignore[attr-defined]
        toast = conn.execute("SELECT reltoastrelid::regclass::text FROM pg_class WHERE relname = 'resource'")
        name = str(toast.fetchone()[0]).removeprefix("pg_toast.pg_toast_")  # type: ignore[index]
        row = conn.execute(STORED.format(toast=name), (resource_id,)).fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2])


def _basic(resource_id: str, random_bytes: int) -> dict[str, object]:
    # random hex in the narrative (not indexed): LZ4 (storage/bodies.py) leaves about two thirds of it
    div = f"<div>{os.urandom(random_bytes).hex()}</div>"
    return {"resourceType": "Basic", "id": resource_id, "text": {"status": "generated", "div": div}}


def test_a_body_up_to_a_page_stays_in_its_row(store: Store) -> None:
    store.create("Basic", "medium", _basic("medium", 2500))
    size, length, toast_rows = _stored(store, "medium")
    assert 2500 < length < 8000  # TOASTed by default (its row is over 2 kB)
    assert toast_rows == 0 and size == length + 4  # in the row as it is (a 4-byte header), not compressed again
    version = store.read("Basic", "medium")
    assert version is not None and version.body is not None and b"medium" in version.body


def test_a_larger_body_goes_out_of_line_uncompressed(store: Store) -> None:
    store.create("Basic", "large", _basic("large", 20_000))
    size, length, toast_rows = _stored(store, "large")
    assert length > 8160 and toast_rows > 0
    assert size == length  # stored as it is: no second compression
    version = store.read("Basic", "large")
    assert version is not None and version.body is not None and b"large" in version.body
