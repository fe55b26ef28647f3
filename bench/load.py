"""Load benchmark, the API path against the bulk path in the same run: ``python -m bench.load [--studies 10000]
[--postgres URL] [--workers N]``.

The corpus (bench/generate.py: the studies with their patients, practitioners, encounters and service requests) is
loaded into an empty database on each backend twice, each time by a process of its own:

- ``api``: what ``fhir-imaging load --database`` did before the bulk path, and still does for Bundles: transaction
  Bundles of 500 through the in-process FHIR API (``fhir_imaging.loader.Loader``);
- ``bulk``: ``fhir-imaging load FILE --database URL`` (fhir_imaging/bulk_load.py).

Prints a Markdown table: wall seconds, studies a second, CPU seconds of the loading process with its worker
processes (and of the PostgreSQL server, from its postmaster's accounting of the backends that ended, when the
server runs on this machine and its data directory can be read). The machine may be shared: wall figures swing
with the other work on it, CPU seconds much less; compare the two paths within one run. The last column: the
resources a second of each tenth of the load, from the rows counted every second (whether the rate holds as the
database grows); the next, the seconds from the last row loaded to the end (a bulk load into an empty database
builds its indexes then).
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

SAMPLE_SECONDS = 1.0  # how often the rows loaded are counted (the rate of each tenth of the load)


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


def _loaded(url: str) -> int:
    """The resources in the database being loaded (read on a connection of its own; 0 before its schema exists)."""
    try:
        if url.startswith("sqlite"):
            import sqlite3

            conn = sqlite3.connect(f"file:{url.removeprefix('sqlite:///')}?mode=ro", uri=True)
            try:
                return int(conn.execute("SELECT coalesce(max(rid), 0) FROM resource").fetchone()[0])
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(url, autocommit=True) as pg:
            row = pg.execute("SELECT coalesce(max(rid), 0) FROM resource").fetchone()
            return int(row[0]) if row else 0
    except Exception:  # not created yet
        return 0


def _tenths(samples: list[tuple[float, int]], total: int) -> list[float]:
    """Resources a second in each tenth of the load, from (seconds, resources loaded) samples."""
    rates = []
    for tenth in range(10):
        low, high = total * tenth / 10, total * (tenth + 1) / 10
        start = next((t for t, n in samples if n >= low), None)
        end = next((t for t, n in samples if n >= high), None)
        rates.append((high - low) / (end - start) if start is not None and end is not None and end > start else 0.0)
    return rates


def _timed(
    command: list[str], server: str | None, url: str | None = None, samples: list[tuple[float, int]] | None = None
) -> tuple[float, float, float | None]:
    """Wall seconds, CPU seconds of the process and its descendants, and of the PostgreSQL server (or None); with
    ``samples``, the resources in ``url`` every second meanwhile."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before = _postmaster_cpu(server) if server else None
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, cwd=REPO)
    while process.poll() is None:
        if samples is not None and url is not None:
            samples.append((time.monotonic() - started, _loaded(url)))
        time.sleep(SAMPLE_SECONDS)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    server_after = _postmaster_cpu(server) if server else None
    server_cpu = server_after - server_before if server_after is not None and server_before is not None else None
    return wall, cpu, server_cpu


def run(studies: int, postgres: str | None, workers: int | None, paths: list[str] | None = None) -> str:
    from bench.generate import generate_corpus

    lines = [
        f"{studies:,} studies (with their patients, practitioners, encounters and service requests) into an empty "
        f"database; the bulk path with {workers or 'the default'} worker processes",
        "",
        "| backend | path | wall s | studies/s | CPU s (load) | CPU s (PostgreSQL) | resources/s by tenth | s after "
        "the last row |",
        "|---|---|---:|---:|---:|---:|---|---:|",
    ]
    with tempfile.TemporaryDirectory(prefix="fhir-imaging-load-") as directory:
        work = Path(directory)
        corpus = work / "corpus.ndjson"
        with corpus.open("wb") as out:
            for item in generate_corpus(studies, seed=1):
                out.write(orjson.dumps(item) + b"\n")
        for backend in ("sqlite", "postgresql") if postgres else ("sqlite",):
            server = postgres if backend == "postgresql" else None
            for path in paths or ["api", "bulk"]:
                url = _database(backend, postgres, work, path)
                if path == "api":
                    code = "import sys; from bench.load import api_load; api_load(sys.argv[1], sys.argv[2])"
                    command = [sys.executable, "-c", code, str(corpus), url]
                else:
                    command = [str(VENV_BIN / "fhir-imaging"), "load", str(corpus), "--database", url]
                    command += ["--load-workers", str(workers)] if workers else []
                samples: list[tuple[float, int]] = []
                wall, cpu, server_cpu = _timed(command, server, url, samples)
                pg = f"{server_cpu:.1f}" if server_cpu is not None else "–"
                total = _loaded(url)
                tenths = " / ".join(f"{rate:,.0f}" for rate in _tenths(samples, total))
                last = next((t for t, n in samples if n >= total), wall)
                lines.append(
                    f"| {backend} | {path} | {wall:.1f} | {studies / wall:,.0f} | {cpu:.1f} | {pg} | {tenths} | "
                    f"{wall - last:.1f} |"
                )
                print(lines[-1], file=sys.stderr)
                if server:
                    _drop(server, url)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--postgres", help="a PostgreSQL server URL (a database is created per path)")
    parser.add_argument("--workers", type=int, default=None, help="--load-workers of the bulk path")
    parser.add_argument("--paths", default="api,bulk", help="which paths, comma-separated (default: api,bulk)")
    args = parser.parse_args()
    print(run(args.studies, args.postgres, args.workers, args.paths.split(",")))


if __name__ == "__main__":
    main()
