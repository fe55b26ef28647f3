"""PostgreSQL's store against its own generic path and against SQLite, in one run: ``python -m bench.pgstore
--postgres URL [--rounds 10] [--reads 2000]``.

Three variants, interleaved round by round so that the load of a shared machine falls on each alike:

- ``sqlite``: ``SQLiteStore`` on a temporary file (``synchronous=normal``);
- ``pg-generic``: ``PostgresStore`` writing through the shared ``SqlTransaction`` (an ``executemany`` of INSERTs per
  index table, a DELETE per index table, three statements a create) and reading on pooled connections in
  transactions, each checked before use (five round trips a point read) — the store before the bulk path;
- ``pg``: ``PostgresStore`` as it is (``PgTransaction``: index rows by COPY, one statement a create and a removal;
  autocommit reads on connections checked only after a second idle: one round trip a point read).

Measured: transactions of 100 realistic studies (bench/generate.py) created, then the same studies updated (a new
version each: index rows replaced), in studies/s; point reads of those studies by id from one thread and from 16
threads, in reads/s. Prints a Markdown table with each variant and the ratios ``pg / pg-generic`` and ``pg / sqlite``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from bench import generate
from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.storage import postgres
from fhir_imaging.storage.postgres import PostgresStore
from fhir_imaging.storage.sqlite import SQLiteStore
from fhir_imaging.storage.sqlstore import SqlTransaction

VARIANTS = ("sqlite", "pg-generic", "pg")


class GenericTransaction(SqlTransaction):
    """The shared write path, as PostgreSQL ran it before ``PgTransaction``."""

    def flush(self) -> None:
        pass


def _generic_pool(url: str, size: int) -> ConnectionPool:
    """The pool as it was: transactions for reads, every connection checked before use."""
    return ConnectionPool(
        url,
        min_size=1,
        max_size=size,
        kwargs={"options": "-c statement_timeout=30000"},
        check=ConnectionPool.check_connection,
    )


def run(postgres_url: str, rounds: int, reads: int) -> str:
    registry = load_registry()
    studies = [generate.study(20_000, 1, index) for index in range(100 * rounds)]
    name = f"bench_pgstore_{int(time.time())}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    pg = PostgresStore(url, registry, pool_size=20)
    generic = PostgresStore(url, registry, pool_size=20)
    generic._pool.close()
    generic._pool = _generic_pool(url, 20)
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = SQLiteStore(f"sqlite:///{Path(tmp) / 'bench.db'}", registry, synchronous="normal")
        stores: dict[str, Any] = {"sqlite": sqlite, "pg-generic": generic, "pg": pg}
        transactions = {"sqlite": None, "pg-generic": GenericTransaction, "pg": postgres.PgTransaction}
        spent: dict[tuple[str, str], float] = {}

        def timed(what: str, variant: str, work: Callable[[], Any]) -> None:
            cls = transactions[variant]
            if cls is not None:
                postgres.PgTransaction = cls  # type: ignore[misc]
            started = time.perf_counter()
            work()
            spent[what, variant] = spent.get((what, variant), 0.0) + time.perf_counter() - started
            postgres.PgTransaction = transactions["pg"]  # type: ignore[misc,assignment]

        for what, change in (("create, tx of 100", None), ("update, tx of 100", "cancelled")):
            for round_ in range(rounds):
                batch = studies[100 * round_ : 100 * (round_ + 1)]
                for variant in VARIANTS:
                    store = stores[variant]

                    def write(
                        tx: Any,
                        batch: list[dict[str, Any]] = batch,
                        variant: str = variant,
                        change: str | None = change,
                    ) -> None:
                        for study in batch:
                            if change is None:
                                tx.create("ImagingStudy", f"{variant}-{study['id']}", study)
                            else:
                                tx.update("ImagingStudy", f"{variant}-{study['id']}", {**study, "status": change})

                    timed(what, variant, lambda store=store, write=write: store.transact(write))
        ids = [study["id"] for study in studies]
        for what, threads in (("read by id, 1 thread", 1), ("read by id, 16 threads", 16)):
            for round_ in range(rounds):
                chunk = [ids[(round_ * reads + n) % len(ids)] for n in range(reads // rounds)]
                for variant in VARIANTS:
                    store = stores[variant]

                    def reads_of(
                        store: Any = store, chunk: list[str] = chunk, variant: str = variant, threads: int = threads
                    ) -> None:
                        def one(study_id: str) -> None:
                            assert store.reading(lambda r: r.read("ImagingStudy", f"{variant}-{study_id}")) is not None

                        if threads == 1:
                            for study_id in chunk:
                                one(study_id)
                        else:
                            with ThreadPoolExecutor(threads) as pool:
                                list(pool.map(one, chunk))

                    timed(what, variant, reads_of)
        sqlite.close()
    pg.close()
    generic.close()
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    lines = [
        f"`python -m bench.pgstore --rounds {rounds} --reads {reads}`: per second, interleaved rounds",
        "",
        "| measure | sqlite | pg-generic | pg | pg / pg-generic | pg / sqlite |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    counts = {"create, tx of 100": 100 * rounds, "update, tx of 100": 100 * rounds}
    for what in ("create, tx of 100", "update, tx of 100", "read by id, 1 thread", "read by id, 16 threads"):
        count = counts.get(what, (reads // rounds) * rounds)
        rate = {variant: count / spent[what, variant] for variant in VARIANTS}
        lines.append(
            f"| {what} | {rate['sqlite']:,.0f} | {rate['pg-generic']:,.0f} | {rate['pg']:,.0f} | "
            f"{rate['pg'] / rate['pg-generic']:.2f} | {rate['pg'] / rate['sqlite']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", required=True, help="a PostgreSQL server URL (a database is made and dropped)")
    parser.add_argument("--rounds", type=int, default=10, help="transactions of 100 studies per variant")
    parser.add_argument("--reads", type=int, default=2000, help="point reads per variant and way")
    args = parser.parse_args()
    print(run(args.postgres, args.rounds, args.reads))


if __name__ == "__main__":
    main()
