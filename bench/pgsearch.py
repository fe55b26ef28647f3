"""The seed searches on PostgreSQL against SQLite over the same data, in one run: ``python -m bench.pgsearch
--postgres URL --sqlite sqlite:///PATH --scale N [--runs 60]``, or ``--load`` to build both databases first.

Both databases hold the benchmark corpus of ``--scale`` studies (bench/generate.py, seed 1), loaded by ``fhir-imaging
load FILE --database URL`` as ``python -m bench run`` preloads them; ``--load`` generates the corpus and loads it into
a new PostgreSQL database on the server of ``--postgres`` (kept, its URL printed) and into ``--sqlite``.

Each seed search of bench/workloads.py (the same request lines, from the same random seeds) runs in-process through
the store (``run_search``: the statements the server would send, on the store's pooled connections, as the server
runs them), ``--runs`` requests per search and
variant (after an untimed run of each), the variants interleaved request by request so that the load of a shared
machine falls on each alike:

- ``sqlite``: ``SQLiteStore``;
- ``pg-before``: ``PostgresStore`` on the database without the planner statistics the bulk load now leaves
  (the extended statistics of ``storage/pgstats.py`` dropped, then ``ANALYZE``: the single-column statistics alone,
  as the database was after ``fhir-imaging load`` and the analysis the benchmark ran after it), and without the
  statements planned for their values of ``PostgresStore.run_query`` (each prepared on the server from its fifth
  run on a connection, psycopg's default, and then given a generic plan when PostgreSQL judges it no dearer);
- ``pg``: ``PostgresStore`` as it is, on the database as ``fhir-imaging load`` leaves it now.

The two PostgreSQL variants need the database in two states, so they run in two passes (``pg-before`` first, then
``pg``), each interleaved with SQLite; the ratios are to the SQLite requests of the same pass. Prints p50 and p95 in
milliseconds, the time of PostgreSQL's p50 over SQLite's (above 1: slower), and ``pg-before`` over ``pg``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import psycopg

from bench import workloads
from bench.generate import generate_corpus
from bench.targets import VENV_BIN
from fhir_imaging.fhir.registry import Registry, load_registry
from fhir_imaging.search.execute import run_search
from fhir_imaging.search.query import Compartment, SearchRequest, parse_search
from fhir_imaging.storage import pgstats, sqlstore
from fhir_imaging.storage.postgres import PostgresStore
from fhir_imaging.storage.sqlite import SQLiteStore

BASES = ("",)
Store = Any


def load(postgres_url: str, sqlite_url: str, scale: int) -> str:
    """Generate the corpus and load it into a new PostgreSQL database and ``sqlite_url``; the database's URL."""
    name = f"bench_pgsearch_{scale}_{int(time.time())}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    with tempfile.TemporaryDirectory(prefix="fhir-imaging-pgsearch-") as directory:
        corpus = Path(directory) / "corpus.ndjson"
        with corpus.open("wb") as out:
            for item in generate_corpus(scale, seed=1):
                out.write(orjson.dumps(item) + b"\n")
        for database in (url, sqlite_url):
            command = [str(VENV_BIN / "fhir-imaging"), "load", str(corpus), "--database", database]
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return url


def requests(registry: Registry, scale: int, name: str, runs: int) -> list[SearchRequest]:
    """The first ``runs`` requests of the seed search ``name``, parsed as the server parses them."""
    build = {seed: builder for seed, _, builder in workloads.SEED_SEARCHES}[name]
    corpus = workloads.Corpus(scale, 1)
    lines = build(corpus, random.Random(f"{corpus.seed}:{name}"))
    searchable = {param.code for param in registry.searchable_params("ImagingStudy")}
    codes = tuple(code for code in registry.patient_compartment["ImagingStudy"] if code in searchable)
    parsed = []
    for line, _ in zip(lines, range(runs), strict=False):
        target = urlsplit(line.split("\t")[1])
        segments = target.path.split("/")  # /baseR4/Patient/{id}/ImagingStudy: the compartment
        extra = (Compartment(codes, segments[3]),) if len(segments) == 5 else ()
        parsed.append(parse_search(registry, ("ImagingStudy",), parse_qsl(target.query), extra=extra))
    return parsed


def statistics_objects(url: str, present: bool) -> None:
    """The database with (``present``) or without the extended statistics, analysed either way."""
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in pgstats.create_statements() if present else pgstats.drop_statements():
            conn.execute(statement)
        conn.execute("ANALYZE")


Timings = dict[tuple[str, str], list[float]]


def timed_pass(stores: dict[str, Store], searches: dict[str, list[SearchRequest]]) -> Timings:
    """Milliseconds of each request on each store, interleaved request by request, after one untimed run of every
    request on each (the caches warm: SQLite's file in the page cache, PostgreSQL's buffers)."""
    spent: Timings = {}
    for timed in (False, True):
        for name, parsed in searches.items():
            for request in parsed:
                for variant, store in stores.items():

                    def search(reader: Any, request: SearchRequest = request) -> Any:
                        return run_search(reader, request, BASES)

                    started = time.perf_counter()
                    store.reading(search)
                    if timed:
                        spent.setdefault((name, variant), []).append(1000 * (time.perf_counter() - started))
    return spent


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


def run(postgres_url: str, sqlite_url: str, scale: int, runs: int) -> str:
    registry = load_registry()
    searches = {name: requests(registry, scale, name, runs) for name, _, _ in workloads.SEED_SEARCHES}
    sqlite = SQLiteStore(sqlite_url, registry)
    results: dict[str, Timings] = {}
    custom: Callable[..., Any] = PostgresStore.run_query
    PostgresStore(postgres_url, registry).close()  # the schema migrated first (the passes open it without migrating)
    try:
        for variant, present in (("pg-before", False), ("pg", True)):
            statistics_objects(postgres_url, present)
            if variant == "pg-before":
                PostgresStore.run_query = sqlstore.SqlStore.run_query  # type: ignore[method-assign]
            pg = PostgresStore(postgres_url, registry, migrate=False)
            try:
                results[variant] = timed_pass({"sqlite": sqlite, variant: pg}, searches)
            finally:
                pg.close()
                PostgresStore.run_query = custom  # type: ignore[method-assign]
    finally:
        statistics_objects(postgres_url, True)
        sqlite.close()
    lines = [
        f"`python -m bench.pgsearch --scale {scale} --runs {runs}`: milliseconds a search (first page of 20), "
        "in-process through the store",
        "",
        "| search | SQLite p50 | p95 | PG before p50 | p95 | / SQLite | PG p50 | p95 | / SQLite | before / now |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in searches:
        before, now = results["pg-before"], results["pg"]
        lite = before[name, "sqlite"] + now[name, "sqlite"]
        old, new = before[name, "pg-before"], now[name, "pg"]
        lite_old, lite_new = statistics.median(before[name, "sqlite"]), statistics.median(now[name, "sqlite"])
        lines.append(
            f"| {name} | {statistics.median(lite):.1f} | {p95(lite):.1f} | {statistics.median(old):.1f} | "
            f"{p95(old):.1f} | {statistics.median(old) / lite_old:.2f} | {statistics.median(new):.1f} | "
            f"{p95(new):.1f} | {statistics.median(new) / lite_new:.2f} | "
            f"{statistics.median(old) / statistics.median(new):.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pgsearch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", required=True, help="the loaded PostgreSQL database (with --load: a server URL)")
    parser.add_argument("--sqlite", required=True, help="the loaded SQLite database (with --load: made)")
    parser.add_argument("--scale", type=int, default=20_000, help="studies in the databases (default 20,000)")
    parser.add_argument("--runs", type=int, default=60, help="requests per seed search and variant (default 60)")
    parser.add_argument("--load", action="store_true", help="generate the corpus and load both databases first")
    args = parser.parse_args()
    url = args.postgres
    if args.load:
        url = load(args.postgres, args.sqlite, args.scale)
        print(f"loaded {url}")
    print(run(url, args.sqlite, args.scale, args.runs))


if __name__ == "__main__":
    main()
