"""Load benchmark, the API path against the bulk path in the same run: ``python -m bench.load [--studies 10000]
[--postgres URL] [--workers N]``.

The corpus (bench/generate.py: the studies with their patients, practitioners, encounters and service requests) is
loaded into an empty database on each backend twice, each time by a process of its own:

- ``api``: what ``fhir-imaging load --database`` did before the bulk path, and still does for Bundles: transaction
  Bundles of 500 through the in-process FHIR API (``fhir_imaging.loader.Loader``);
- ``bulk``: ``fhir-imaging load FILE --database URL`` (fhir_imaging/bulk_load.py).

Prints a Markdown table: wall seconds, studies a second, and CPU seconds of the loading process with its worker
processes (and of the PostgreSQL server, from its postmaster's accounting of the backends that ended, when the
server runs on this machine and its data directory can be read). The machine may be shared: wall figures swing
with the other work on it, CPU seconds much less; compare the two paths within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench.targets import CLOCK_TICKS, REPO, VENV_BIN


def api_load(path: str, database: str) -> None:
    """The API path (run in a child process)."""
    from fhir_imaging.client import fhir_client
    from fhir_imaging.config import Settings
    from fhir_imaging.loader import Loader

    async def run() -> int:
        async with fhir_client(database=database, settings=Settings(database=database)) as client:
            summary = await Loader(client, batch_size=500).load([Path(path)])
        return len(summary.failed)

    failed = asyncio.run(run())
    if failed:
        raise SystemExit(f"{failed} resources failed to load")


def _postmaster_cpu(url: str) -> float | None:
    """CPU seconds of the PostgreSQL server: its postmaster's own and its ended backends' (None: not readable)."""
    import psycopg

    try:
        with psycopg.connect(url, autocommit=True) as conn:
            directory = conn.execute("SHOW data_directory").fetchone()
        pid = (Path(str(directory[0])) / "postmaster.pid").read_text().split()[0] if directory else ""
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, psycopg.Error, IndexError):
        return None
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS  # utime, stime, cutime, cstime


def _database(backend: str, postgres: str | None, work: Path, name: str) -> str:
    if backend == "sqlite":
        return f"sqlite:///{work / name}.db"
    import psycopg

    assert postgres
    database = f"bench_load_{name}_{int(time.time())}"
    with psycopg.connect(postgres, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    return postgres.rsplit("/", 1)[0] + f"/{database}"


def _drop(server: str, url: str) -> None:
    import psycopg

    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def _timed(command: list[str], server: str | None) -> tuple[float, float, float | None]:
    """Wall seconds, CPU seconds of the process and its descendants, and of the PostgreSQL server (or None)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before = _postmaster_cpu(server) if server else None
    started = time.monotonic()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=REPO)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    server_after = _postmaster_cpu(server) if server else None
    server_cpu = server_after - server_before if server_after is not None and server_before is not None else None
    return wall, cpu, server_cpu


def run(studies: int, postgres: str | None, workers: int | None) -> str:
    from bench.generate import generate_corpus

    lines = [
        f"{studies:,} studies (with their patients, practitioners, encounters and service requests) into an empty "
        f"database; the bulk path with {workers or 'the default'} worker processes",
        "",
        "| backend | path | wall s | studies/s | CPU s (load) | CPU s (PostgreSQL) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory(prefix="fhir-imaging-load-") as directory:
        work = Path(directory)
        corpus = work / "corpus.ndjson"
        with corpus.open("wb") as out:
            for item in generate_corpus(studies, seed=1):
                out.write(orjson.dumps(item) + b"\n")
        for backend in ("sqlite", "postgresql") if postgres else ("sqlite",):
            server = postgres if backend == "postgresql" else None
            for path in ("api", "bulk"):
                url = _database(backend, postgres, work, path)
                if path == "api":
                    code = "import sys; from bench.load import api_load; api_load(sys.argv[1], sys.argv[2])"
                    command = [sys.executable, "-c", code, str(corpus), url]
                else:
                    command = [str(VENV_BIN / "fhir-imaging"), "load", str(corpus), "--database", url]
                    command += ["--load-workers", str(workers)] if workers else []
                wall, cpu, server_cpu = _timed(command, server)
                pg = f"{server_cpu:.1f}" if server_cpu is not None else "–"
                lines.append(f"| {backend} | {path} | {wall:.1f} | {studies / wall:,.0f} | {cpu:.1f} | {pg} |")
                print(lines[-1], file=sys.stderr)
                if server:
                    _drop(server, url)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--postgres", help="a PostgreSQL server URL (a database is created per path)")
    parser.add_argument("--workers", type=int, default=None, help="--load-workers of the bulk path")
    args = parser.parse_args()
    print(run(args.studies, args.postgres, args.workers))


if __name__ == "__main__":
    main()
