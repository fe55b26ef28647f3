"""What PostgreSQL plans searches from (storage/pgstats.py, ``PostgresStore.run_query``): a bulk load leaves the
planner's statistics, extended statistics make its estimate of a token filter's rows right, and search statements
are planned for their values (never prepared as a generic plan)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.generate import generate_corpus
from fhir_imaging.cli import main
from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.search.execute import run_search
from fhir_imaging.search.planner import Planner
from fhir_imaging.search.query import parse_search
from fhir_imaging.search.sql import render
from fhir_imaging.storage import pgstats
from fhir_imaging.storage.dialect import POSTGRES
from fhir_imaging.storage.postgres import PostgresStore
from tests.conftest import fresh_postgres_database

pytestmark = pytest.mark.skipif(
    not os.environ.get("FHIR_IMAGING_TEST_POSTGRES"), reason="PostgreSQL's planner: FHIR_IMAGING_TEST_POSTGRES"
)
DCM = "http://dicom.nema.org/resources/ontology/DCM"


def test_a_bulk_load_leaves_the_planner_statistics(tmp_path: Path) -> None:
    path = tmp_path / "corpus.ndjson"
    path.write_bytes(b"\n".join(orjson.dumps(item) for item in generate_corpus(10, seed=3)) + b"\n")
    with fresh_postgres_database() as url:
        assert main(["load", str(path), "--database", url, "--load-workers", "1"]) == 0
        store = PostgresStore(url, load_registry(), migrate=False)
        try:
            analysed = dict(store.query("SELECT relname, last_analyze IS NOT NULL FROM pg_stat_user_tables", []))
            extended = dict(
                store.query(
                    "SELECT s.stxname, d.stxdmcv IS NOT NULL FROM pg_statistic_ext s "
                    "JOIN pg_statistic_ext_data d ON d.stxoid = s.oid",
                    [],
                )
            )
        finally:
            store.close()
    assert analysed["resource"] and analysed["spidx_token"] and analysed["spidx_reference"]
    assert extended["spidx_token_together"]


def _token_rows(count: int) -> list[tuple[Any, ...]]:
    """Index rows of ``count`` studies shaped as real ones are: a status (4 in 5 available), a modality (5 codes,
    one a study), an identifier each its own, two SOP classes of a few."""
    rows: list[tuple[Any, ...]] = []
    for rid in range(1, count + 1):
        rows += [
            (rid, "ImagingStudy", "status", "", "available" if rid % 5 else "cancelled", None),
            (rid, "ImagingStudy", "modality", DCM, ("CT", "MR", "US", "DX", "CR")[rid % 5], None),
            (rid, "ImagingStudy", "identifier", "urn:ietf:rfc:3986", f"urn:oid:2.25.{rid}", None),
            (rid, "ImagingStudy", "dicom-class", "urn:ietf:rfc:3986", f"1.2.840.10008.5.1.4.1.1.{rid % 7}", None),
            (rid, "ImagingStudy", "dicom-class", "urn:ietf:rfc:3986", f"1.2.840.10008.5.1.4.1.2.{rid % 3}", None),
        ]
    return rows


def test_the_estimate_of_a_token_filter_is_near_its_rows() -> None:
    """Per-column statistics multiply the selectivities of type, param, code and system as if independent: 25 times
    too few rows here, and PostgreSQL then lists every match to sort them for a page."""
    registry = load_registry()
    with fresh_postgres_database() as url:
        store = PostgresStore(url, registry)
        try:

            def fill(tx: Any) -> None:
                columns = "rid, type, param, system, code, text"
                with tx.conn.cursor().copy(f"COPY spidx_token ({columns}) FROM STDIN") as copy:
                    for row in _token_rows(20_000):
                        copy.write_row(row)

            store.transact(fill)
            store.transact(lambda tx: tx.conn.execute("ANALYZE spidx_token"))
            request = parse_search(registry, ("ImagingStudy",), [("modality", f"{DCM}|CT")])
            text, params = render(Planner(("",), POSTGRES).clause(request.filters[0], ("ImagingStudy",)), POSTGRES)
            plan = store.query("EXPLAIN (FORMAT JSON) " + text, params)[0][0]
        finally:
            store.close()
    estimated = plan[0]["Plan"]["Plan Rows"]
    assert 2_000 <= estimated <= 8_000  # 4,000 rows match


def test_search_statements_are_not_prepared_on_the_server(study: dict[str, Any]) -> None:
    """A prepared statement gets a generic plan after a few runs, made for any value: ``status=available`` (most
    studies) would be served the plan of a rare code. Searches are planned for their values every time."""
    registry = load_registry()
    with fresh_postgres_database() as url:
        store = PostgresStore(url, registry, pool_size=1)
        try:
            store.create("ImagingStudy", "a", study)
            request = parse_search(registry, ("ImagingStudy",), [("status", "available")])
            for _ in range(8):  # psycopg prepares a statement from its fifth run on a connection
                assert len(store.reading(lambda reader: run_search(reader, request, ("",))).matches) == 1
            prepared = store.reading(lambda reader: reader.conn.execute("SELECT statement FROM pg_prepared_statements"))
            statements = [row[0] for row in prepared.fetchall()]
        finally:
            store.close()
    assert not [statement for statement in statements if "spidx_token" in statement]


def test_every_index_table_has_its_statistics_once() -> None:
    """Opening a store again creates none twice (``CREATE STATISTICS IF NOT EXISTS``, under the migration lock)."""
    with fresh_postgres_database() as url:
        for _ in range(2):
            store = PostgresStore(url, load_registry())
            names = [row[0] for row in store.query("SELECT stxname FROM pg_statistic_ext ORDER BY stxname", [])]
            store.close()
    assert names == sorted(pgstats.STATISTICS)
