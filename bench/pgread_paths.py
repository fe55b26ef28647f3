"""Ways of reading one row by id from PostgreSQL out of an asyncio event loop, in one process and one run:
``python -m bench.pgread_paths --postgres URL [--reads 3000] [--rounds 2]``.

16 coroutines share the reads (as 16 HTTP connections would), each read the point read of ``storage/postgres.py``
on a 2.7 kB random ``bytea`` body (a compressed study's size) in a table of 2,000 rows made in a scratch database:

- ``anyio-thread``: a pooled psycopg connection in a worker thread through ``anyio.to_thread.run_sync`` (the read
  route's hop before ``read_threads``), text results, psycopg preparing from the fifth run;
- ``executor``: the same through ``loop.run_in_executor`` on a ``ThreadPoolExecutor`` of 16 threads;
- ``executor-binary-prepared``: that, with the statement prepared at once and the row in binary (as shipped);
- ``async-pool``: ``psycopg_pool.AsyncConnectionPool`` on the event loop, no thread;
- ``async-pool-binary-prepared``: that, prepared and binary.

Prints reads/s and the process's CPU per read (both loop and threads; the database's own CPU is not in it). The
event loop is uvloop's, as under uvicorn.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio.to_thread
import psycopg
import uvloop
from psycopg_pool import AsyncConnectionPool, ConnectionPool

SQL = "SELECT version, last_updated, deleted, body FROM resource WHERE type = %s AND id = %s"
ROWS = 2000
CONCURRENCY = 16
POOL = 10


def scratch_database(server_url: str) -> str:
    server = server_url.rsplit("/", 1)[0]
    with psycopg.connect(server_url, autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = 'pgread_paths'").fetchone():
            admin.execute("CREATE DATABASE pgread_paths")
    url = f"{server}/pgread_paths"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS resource (rid bigserial PRIMARY KEY, type text NOT NULL, id text NOT NULL, "
            "version integer NOT NULL, last_updated text NOT NULL, deleted integer NOT NULL DEFAULT 0, body bytea, "
            "UNIQUE (type, id))"
        )
        if conn.execute("SELECT count(*) FROM resource").fetchone() == (0,):
            with conn.cursor().copy("COPY resource (type, id, version, last_updated, body) FROM STDIN") as copy:
                for i in range(ROWS):
                    copy.write_row(("ImagingStudy", f"s{i}", 1, "2020-01-01T00:00:00.000Z", os.urandom(2700)))
    return url


async def _timed(ids: list[str], read: Callable[[str], Awaitable[Any]]) -> tuple[float, float]:
    remaining = iter(ids)

    async def worker() -> None:
        for resource_id in remaining:
            await read(resource_id)

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return len(ids) / (time.perf_counter() - started), (time.process_time() - cpu) / len(ids) * 1e6


async def threaded(url: str, ids: list[str], hop: str, lean: bool) -> tuple[float, float]:
    pool = ConnectionPool(url, min_size=POOL, max_size=POOL, kwargs={"autocommit": True}, open=True)
    pool.wait()
    threads = ThreadPoolExecutor(CONCURRENCY)
    loop = asyncio.get_running_loop()

    def read(resource_id: str) -> Any:
        with pool.connection() as conn:
            cursor = conn.execute(SQL, ("ImagingStudy", resource_id), prepare=True if lean else None, binary=lean)
            return cursor.fetchone()

    async def hop_and_read(resource_id: str) -> Any:
        if hop == "anyio":
            return await anyio.to_thread.run_sync(read, resource_id)
        return await loop.run_in_executor(threads, read, resource_id)

    try:
        return await _timed(ids, hop_and_read)
    finally:
        pool.close()
        threads.shutdown()


async def on_loop(url: str, ids: list[str], lean: bool) -> tuple[float, float]:
    pool = AsyncConnectionPool(url, min_size=POOL, max_size=POOL, kwargs={"autocommit": True}, open=False)
    await pool.open(wait=True)

    async def read(resource_id: str) -> Any:
        async with pool.connection() as conn:
            cursor = await conn.execute(SQL, ("ImagingStudy", resource_id), prepare=True if lean else None, binary=lean)
            return await cursor.fetchone()

    try:
        return await _timed(ids, read)
    finally:
        await pool.close()


async def run(url: str, reads: int, rounds: int) -> None:
    ids = [f"s{random.randrange(ROWS)}" for _ in range(reads)]
    variants: dict[str, Callable[[], Awaitable[tuple[float, float]]]] = {
        "anyio-thread": lambda: threaded(url, ids, "anyio", False),
        "executor": lambda: threaded(url, ids, "executor", False),
        "executor-binary-prepared": lambda: threaded(url, ids, "executor", True),
        "async-pool": lambda: on_loop(url, ids, False),
        "async-pool-binary-prepared": lambda: on_loop(url, ids, True),
    }
    for number in range(1, rounds + 1):
        for name, variant in variants.items():
            rate, cpu = await variant()
            print(f"round {number}  {name:<28} {rate:8.0f} reads/s  {cpu:6.0f} µs CPU a read", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", required=True, help="a PostgreSQL server URL (a scratch database is made on it)")
    parser.add_argument("--reads", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    opts = parser.parse_args()
    url = scratch_database(opts.postgres)
    uvloop.run(run(url, opts.reads, opts.rounds))


if __name__ == "__main__":
    main()
