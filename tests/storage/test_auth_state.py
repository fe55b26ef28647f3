"""The token endpoint's state in the store, on both backends: the server's signing key, made once and kept; client
assertion ids (jti) spent once, also when two requests race, and forgotten once expired."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from fhir_imaging.auth.keys import load_private_key, new_server_key
from fhir_imaging.config import Settings
from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.storage import open_store


def test_the_signing_key_is_made_once_and_kept(database: str) -> None:
    settings = Settings(database=database, pool_size=4)
    store = open_store(settings, load_registry())
    made: list[bytes] = []

    def make() -> bytes:
        made.append(new_server_key())
        return made[-1]

    try:
        first = store.transact(lambda tx: tx.server_key(make))
        assert store.transact(lambda tx: tx.server_key(make)) == first and len(made) == 1
        load_private_key(first)
    finally:
        store.close()
    reopened = open_store(settings, load_registry())
    try:
        assert reopened.transact(lambda tx: tx.server_key(make)) == first and len(made) == 1
    finally:
        reopened.close()


def test_an_assertion_id_is_spent_once(database: str) -> None:
    store = open_store(Settings(database=database, pool_size=8), load_registry())
    later = time.time() + 300
    try:

        def spend(client: str, jti: str, expires: float = later) -> bool:
            return store.transact(lambda tx: tx.spend_assertion(client, jti, expires))

        assert spend("a", "j1") and not spend("a", "j1")
        assert spend("b", "j1")  # another client's jti of the same text
        assert spend("a", "old", time.time() - 1)
        assert spend("a", "old")  # expired, so forgotten: its assertion is refused for its exp anyway
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: spend("racer", "same"), range(16)))
        assert results.count(True) == 1
    finally:
        store.close()
