"""Reads by id over HTTP, PostgreSQL against SQLite on the same machine, and against another version of the server:
``python -m bench.pgreads --postgres URL [--scale 20000] [--workers 1,2] [--baseline REF] [--rounds 3]``.

Every variant serves the same preloaded data and gets the ``read-c16`` workload of ``python -m bench run`` (``GET
/ImagingStudy/{id}`` of 5,000 random preloaded studies on 16 connections, wrk): ``sqlite`` and ``postgres`` are
``fhir-imaging serve`` of this tree; with ``--baseline REF`` also ``postgres@REF``, the same command on the
``fhir_imaging/`` of a git revision (unpacked by ``git archive`` into the work directory, first on ``PYTHONPATH``), so
that a change to the read path is measured before and after in one run. Variants alternate within each round, and
rounds repeat, so that the load of a shared machine falls on each alike; the table shows each variant's median and
the ratio ``postgres / sqlite``, with ``uptime``'s load average before and after.

The data is kept between runs, keyed by scale and seed only (not by the server's source, unlike ``bench run``, whose
databases a change to ``fhir_imaging/`` rebuilds): a SQLite file in the cache directory and a PostgreSQL database
``pgreads_<scale>_<seed>`` on the server, each loaded by ``fhir-imaging load --database`` (then ``ANALYZE``). A
baseline must read the same schema; drop the database (and the file) after a migration.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import psycopg

from bench import generate, targets
from bench.loadgen import run_wrk
from bench.run import drain
from bench.workloads import BY_NAME, Corpus

REPO = targets.REPO
WORKLOAD = BY_NAME["read-c16"]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def corpus_file(cache: Path, scale: int, seed: int) -> Path:
    path = cache / f"pgreads-corpus-{scale}-{seed}.ndjson"
    if not path.exists():
        log(f"generating the corpus ({scale} studies)")
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as out:
            for resource in generate.generate_corpus(scale, seed):
                out.write(orjson.dumps(resource) + b"\n")
        tmp.rename(path)
    return path


def load(corpus: Path, url: str) -> None:
    started = time.monotonic()
    command = [str(targets.VENV_BIN / "fhir-imaging"), "load", str(corpus), "--database", url]
    subprocess.run(command, check=True, capture_output=True)
    log(f"  loaded in {time.monotonic() - started:.0f} s")


def sqlite_database(cache: Path, corpus: Path, scale: int, seed: int) -> Path:
    path = cache / f"pgreads-{scale}-{seed}.db"
    if not path.exists():
        log(f"preloading SQLite ({path})")
        tmp = cache / f"pgreads-{scale}-{seed}.tmp.db"
        load(corpus, f"sqlite:///{tmp}")
        tmp.rename(path)
    return path


def postgres_database(server_url: str, corpus: Path, scale: int, seed: int) -> str:
    name = f"pgreads_{scale}_{seed}"
    server = server_url.rsplit("/", 1)[0]
    with psycopg.connect(server_url, autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return f"{server}/{name}"
        admin.execute(f'DROP DATABASE IF EXISTS "{name}_loading" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}_loading"')
    log(f"preloading PostgreSQL ({name})")
    load(corpus, f"{server}/{name}_loading")
    with psycopg.connect(f"{server}/{name}_loading", autocommit=True) as conn:
        conn.execute("ANALYZE")
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}_loading" RENAME TO "{name}"')
    return f"{server}/{name}"


def unpack_revision(ref: str, into: Path) -> Path:
    """``fhir_imaging/`` of git revision ``ref``, unpacked under ``into`` (a directory to put first on PYTHONPATH)."""
    tree = into / f"src-{ref.replace('/', '_')}"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", ref, "fhir_imaging"], cwd=REPO, check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def uptime() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def measure(
    name: str, database: str | Path, workers: int, source: Path | None, requests: Path, opts: argparse.Namespace
) -> tuple[float, float]:
    """requests/s and server CPU (cores) of one variant on ``read-c16``."""
    target = targets.ours(database, workers, name=name)
    if source is not None:
        target.env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")]))}
    target.start(requests.parent / f"{name}-{workers}.log", timeout_s=120)
    try:
        run_wrk(target.base_url, requests, WORKLOAD.connections, opts.warmup)
        drain(target)
        cpu = target.cpu()
        result = run_wrk(target.base_url, requests, WORKLOAD.connections, opts.duration)
        cpu = (target.cpu() - cpu) / result.seconds
        if result.errors:
            log(f"    {name}: {result.errors} errors {result.error_detail}")
        return result.rate, cpu
    finally:
        target.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", required=True, help="a PostgreSQL server URL (a database is created on it)")
    parser.add_argument("--scale", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", default="1,2", help="comma-separated --workers of the servers")
    parser.add_argument("--baseline", help="a git revision whose server also reads from PostgreSQL")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=6)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/fhir-imaging-bench"))
    opts = parser.parse_args()
    opts.cache_dir.mkdir(parents=True, exist_ok=True)
    corpus = corpus_file(opts.cache_dir, opts.scale, opts.seed)
    sqlite = sqlite_database(opts.cache_dir, corpus, opts.scale, opts.seed)
    postgres = postgres_database(opts.postgres, corpus, opts.scale, opts.seed)
    work = Path(tempfile.mkdtemp(prefix="pgreads-", dir=opts.cache_dir))
    requests = WORKLOAD.write_requests(Corpus(opts.scale, opts.seed), work)
    variants: list[tuple[str, str | Path, Path | None]] = [("sqlite", sqlite, None), ("postgres", postgres, None)]
    if opts.baseline:
        variants.append((f"postgres@{opts.baseline}", postgres, unpack_revision(opts.baseline, work)))
    workers = [int(w) for w in opts.workers.split(",")]
    rates: dict[tuple[str, int], list[float]] = {}
    cpus: dict[tuple[str, int], list[float]] = {}
    load_before = uptime()
    for round_number in range(1, opts.rounds + 1):
        for count in workers:
            for name, database, source in variants:
                rate, cpu = measure(name, database, count, source, requests, opts)
                rates.setdefault((name, count), []).append(rate)
                cpus.setdefault((name, count), []).append(cpu)
                log(f"round {round_number} workers {count} {name:<24} {rate:8.1f} req/s  server cpu {cpu:.2f}")
    print(
        f"read-c16 at {opts.scale:,} studies, {opts.rounds} rounds of {opts.duration:g} s (median; load average "
        f"{load_before} before, {uptime()} after)\n"
    )
    print("| workers | variant | req/s | server CPU (cores) | / sqlite |")
    print("|---:|---|---:|---:|---:|")
    for count in workers:
        base = statistics.median(rates[("sqlite", count)])
        for name, _, _ in variants:
            rate = statistics.median(rates[(name, count)])
            cpu = statistics.median(cpus[(name, count)])
            print(f"| {count} | {name} | {rate:,.0f} | {cpu:.2f} | {rate / base:.2f} |")


if __name__ == "__main__":
    main()
