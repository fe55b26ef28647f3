"""The server through PgBouncer in transaction mode (``--transaction-pooler``): server connections are shared
between transactions of different clients, so nothing may live in a session — no prepared statements (PgBouncer
1.18 here cannot track them), no connection options. Every interaction works, many times over (psycopg would prepare
a statement after its fifth run), from concurrent clients, and the statement timeout still holds."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest

from tests.conftest import POSTGRES_URL, SEED_PATIENT, SEED_STUDY, fresh_postgres_database
from tests.e2e.pgbouncer import available, running_pgbouncer
from tests.e2e.server import running_server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not POSTGRES_URL, reason="FHIR_IMAGING_TEST_POSTGRES is not set (scripts/test starts one)"),
    pytest.mark.skipif(not available(), reason="pgbouncer is not installed (scripts/test installs it)"),
]


@pytest.fixture
def bouncer() -> Iterator[str]:
    with fresh_postgres_database() as url, running_pgbouncer(url) as through:
        yield through


def _work(base: str, worker: int) -> list[int]:
    statuses = []
    with httpx.Client(base_url=base, timeout=30) as client:
        for round_ in range(8):
            patient = dict(SEED_PATIENT, id=f"w{worker}-{round_}")
            statuses.append(client.put(f"/Patient/{patient['id']}", json=patient).status_code)
            statuses.append(client.get(f"/Patient/{patient['id']}").status_code)
            statuses.append(client.get("/Patient", params={"family": "Chalmers", "_count": "2"}).status_code)
            statuses.append(client.get("/Patient/_history", params={"_count": "3"}).status_code)
            study = client.post("/ImagingStudy", json=SEED_STUDY, headers={"If-None-Exist": f"identifier=w{worker}"})
            statuses.append(study.status_code)
    return statuses


def test_every_interaction_works_through_pgbouncer_in_transaction_mode(bouncer: str) -> None:
    with running_server(bouncer, extra=("--transaction-pooler", "--pool-size", "4")) as server:
        with ThreadPoolExecutor(4) as pool:
            results = [status for statuses in pool.map(_work, [server.base] * 4, range(4)) for status in statuses]
        assert set(results) <= {200, 201}, sorted(set(results))
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"fullUrl": "urn:uuid:1", "resource": SEED_PATIENT, "request": {"method": "POST", "url": "Patient"}},
                {
                    "resource": dict(SEED_STUDY, subject={"reference": "urn:uuid:1"}),
                    "request": {"method": "POST", "url": "ImagingStudy"},
                },
            ],
        }
        assert httpx.post(server.base, json=bundle, timeout=30).status_code == 200
        history = httpx.get(f"{server.base}/_history", params={"_count": "1000"}, timeout=30).json()
        assert len(history["entry"]) == 4 * 8 * 2 + 2  # every patient and study version, and the Bundle's two
        root = server.base.removesuffix("/baseR4")
        assert httpx.get(f"{root}/readyz", timeout=10).status_code == 200


def test_the_statement_timeout_holds_through_the_pooler(bouncer: str) -> None:
    with running_server(bouncer, extra=("--transaction-pooler", "--search-timeout", "0.2")) as server:
        assert httpx.get(f"{server.base}/metadata", timeout=10).status_code == 200
    from fhir_imaging.config import Settings
    from fhir_imaging.fhir.registry import load_registry
    from fhir_imaging.storage import open_store

    store = open_store(Settings(database=bouncer, transaction_pooler=True, search_timeout=0.2), load_registry())
    try:
        with pytest.raises(Exception, match="search_timeout"):
            store.query("SELECT pg_sleep(2)", [])
        assert store.query("SELECT 1", []) == [(1,)]  # the connection is fine afterwards
    finally:
        store.close()


def test_without_the_setting_pgbouncer_refuses_the_connection_options(bouncer: str) -> None:
    """Why the setting exists: the options a direct connection carries are refused by the pooler."""
    with pytest.raises(psycopg.OperationalError, match="unsupported startup parameter"):
        psycopg.connect(bouncer, options="-c statement_timeout=1000").close()
