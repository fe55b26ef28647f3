"""Transactions of 100 realistic studies with and without bundle workers, in alternating rounds:
``python -m bench.bundle_workers [--rounds 3] [--transactions 10] [--workers 2] [--postgres URL]``.

Each round runs, in a child process of its own on a fresh database (SQLite in a temporary directory, or a new
database on the PostgreSQL server ``--postgres`` names), the in-process FHIR API with ``bundle_workers`` 0 and then
N: two unmeasured transactions (the workers start), then ``--transactions`` measured ones, one after the other.
Prints, per round and setting: studies a second, the server process's CPU milliseconds a study
(``time.process_time``: the in-process HTTP client included) and its worker processes' (from /proc). PostgreSQL's
own processes are not counted. The machine may be shared: compare the settings within a round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

SIZE = 100  # studies a transaction


def children_cpu() -> float:
    """CPU seconds of this process's live child processes (e.g. bundle workers), from /proc."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _bundle(studies: list[dict[str, Any]]) -> bytes:
    entries = [{"resource": s, "request": {"method": "POST", "url": "ImagingStudy"}} for s in studies]
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})


async def _measure(database: str, workers: int, transactions: int, seed: int) -> dict[str, float]:
    from bench.generate import generate_corpus
    from fhir_imaging.client import fhir_client
    from fhir_imaging.config import Settings

    count = (transactions + 2) * SIZE
    studies = [r for r in generate_corpus(count, seed=seed) if r["resourceType"] == "ImagingStudy"][:count]
    bodies = [_bundle(studies[i * SIZE : (i + 1) * SIZE]) for i in range(transactions + 2)]
    async with fhir_client(settings=Settings(database=database, bundle_workers=workers)) as client:
        for body in bodies[:2]:
            response = await client.post("", content=body)
            assert response.status_code == 200, response.text[:300]
        started, cpu, children = time.perf_counter(), time.process_time(), children_cpu()
        for body in bodies[2:]:
            response = await client.post("", content=body)
            assert response.status_code == 200, response.text[:300]
        seconds = time.perf_counter() - started
        cpu, children = time.process_time() - cpu, children_cpu() - children
    n = transactions * SIZE
    return {"studies/s": n / seconds, "server CPU ms a study": 1000 * cpu / n, "workers' CPU ms": 1000 * children / n}


def _database(postgres: str | None, work: Path, name: str) -> str:
    if postgres is None:
        return f"sqlite:///{work / name}.db"
    import psycopg

    with psycopg.connect(postgres, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return postgres.rsplit("/", 1)[0] + f"/{name}"


def _drop(postgres: str | None, name: str) -> None:
    if postgres is not None:
        import psycopg

        with psycopg.connect(postgres, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bundle_workers", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--transactions", type=int, default=10, help="measured transactions of 100 a setting")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--postgres", help="a PostgreSQL server's URL (databases are created on it and dropped)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one measurement, in this process: DATABASE WORKERS SEED
        database, workers, seed = json.loads(args.child)
        print(json.dumps(asyncio.run(_measure(database, workers, args.transactions, seed))))
        return
    print(f"load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="fhir-imaging-bundle-workers-") as work:
        for round_ in range(args.rounds):
            for workers in (0, args.workers):
                name = f"bw_{uuid.uuid4().hex[:12]}"
                database = _database(args.postgres, Path(work), name)
                try:
                    child = json.dumps([database, workers, 100 + round_])
                    out = subprocess.run(
                        [sys.executable, "-m", "bench.bundle_workers", "--transactions", str(args.transactions),
                         "--child", child],
                        check=True, capture_output=True, text=True,
                    ).stdout  # fmt: skip
                finally:
                    _drop(args.postgres, name)
                figures = json.loads(out.strip().splitlines()[-1])
                shown = ", ".join(
                    f"{key} {value:.2f}" if "CPU" in key else f"{key} {value:.0f}" for key, value in figures.items()
                )
                print(f"round {round_ + 1}, bundle_workers {workers}: {shown}", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
