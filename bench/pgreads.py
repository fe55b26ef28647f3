"""Reads by id over HTTP, PostgreSQL against SQLite on the same machine, and against another version of the server:
``python -m bench.pgreads --postgres URL [--scale 20000] [--workers 1,2] [--baseline REF] [--rounds 3]``.

Every variant serves the same preloaded data and gets the ``read-c16`` workload of ``python -m bench run`` (``GET
/ImagingStudy/{id}`` of 5,000 random preloaded studies on 16 connections, wrk): ``sqlite`` and ``postgres`` are
``fhir-imaging serve`` of this tree; with ``--baseline REF`` also ``postgres@REF``, the same command on the
``fhir_imaging/`` of a git revision (unpacked by ``git archive`` into the work directory, first on ``PYTHONPATH``), so
that a change to the read path is measured before and after in one run; with ``--also NAME=URL`` this tree on another
PostgreSQL database too (a copy laid out otherwise, e.g. its bodies rewritten under another storage setting).
Variants alternate within each round, and rounds repeat, so that the load of a shared machine falls on each alike;
the table shows each variant's median requests/s and server CPU, and its ratio to the first variant (``sqlite``
unless ``--no-sqlite``), with ``uptime``'s load average before and after.

The data is kept between runs, keyed by scale and seed only (not by the server's source, unlike ``bench run``, whose
databases a change to ``fhir_imaging/`` rebuilds): a SQLite file in the cache directory and a PostgreSQL database
``pgreads_<scale>_<seed>`` on the server, each loaded by ``fhir-imaging load --database`` (then ``ANALYZE``). A
baseline must read the schema this tree leaves (a newer one is fine for a server; an older one is migrated when this
tree's server starts on it).
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


def postmaster_pid(url: str) -> int | None:
    """The PostgreSQL server's postmaster, when it runs on this machine and its data directory is readable."""
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute("SHOW data_directory").fetchone()
        return int((Path(str(row[0])) / "postmaster.pid").read_text().split()[0]) if row else None
    except (OSError, psycopg.Error, ValueError):
        return None


def database_cpu(postmaster: int | None) -> float:
    """CPU seconds of the PostgreSQL server's live processes (its backends among them); 0 when unknown."""
    return targets.cpu_seconds(targets.process_tree(postmaster)) if postmaster else 0.0


def measure(
    name: str,
    database: str | Path,
    workers: int,
    source: Path | None,
    requests: Path,
    opts: argparse.Namespace,
    postmaster: int | None,
) -> tuple[float, float, float]:
    """requests/s, server CPU and database CPU (cores) of one variant on ``read-c16``."""
    target = targets.ours(database, workers, name=name)
    if source is not None:
        target.env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")]))}
    target.start(requests.parent / f"{name}-{workers}.log", timeout_s=120)
    try:
        run_wrk(target.base_url, requests, WORKLOAD.connections, opts.warmup)
        drain(target)
        cpu, db_cpu = target.cpu(), database_cpu(postmaster)
        result = run_wrk(target.base_url, requests, WORKLOAD.connections, opts.duration)
        cpu = (target.cpu() - cpu) / result.seconds
        db_cpu = (database_cpu(postmaster) - db_cpu) / result.seconds if isinstance(database, str) else 0.0
        if result.errors:
            log(f"    {name}: {result.errors} errors {result.error_detail}")
        return result.rate, cpu, db_cpu
    finally:
        target.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", required=True, help="a PostgreSQL server URL (a database is created on it)")
    parser.add_argument("--scale", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", default="1,2", help="comma-separated --workers of the servers")
    parser.add_argument("--baseline", help="a git revision whose server also reads from PostgreSQL")
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="another PostgreSQL database (the same data laid out otherwise) served by this tree; repeatable",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=6)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL variants only (ratios to the first)")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/fhir-imaging-bench"))
    opts = parser.parse_args()
    opts.cache_dir.mkdir(parents=True, exist_ok=True)
    corpus = corpus_file(opts.cache_dir, opts.scale, opts.seed)
    postgres = postgres_database(opts.postgres, corpus, opts.scale, opts.seed)
    work = Path(tempfile.mkdtemp(prefix="pgreads-", dir=opts.cache_dir))
    requests = WORKLOAD.write_requests(Corpus(opts.scale, opts.seed), work)
    variants: list[tuple[str, str | Path, Path | None]] = [("postgres", postgres, None)]
    if not opts.no_sqlite:
        variants.insert(0, ("sqlite", sqlite_database(opts.cache_dir, corpus, opts.scale, opts.seed), None))
    for also in opts.also:
        name, _, url = also.partition("=")
        variants.append((name, url, None))
    if opts.baseline:
        variants.append((f"postgres@{opts.baseline}", postgres, unpack_revision(opts.baseline, work)))
    workers = [int(w) for w in opts.workers.split(",")]
    rates: dict[tuple[str, int], list[float]] = {}
    cpus: dict[tuple[str, int], list[float]] = {}
    db_cpus: dict[tuple[str, int], list[float]] = {}
    postmaster = postmaster_pid(opts.postgres)
    load_before = uptime()
    for round_number in range(1, opts.rounds + 1):
        for count in workers:
            for name, database, source in variants:
                rate, cpu, db_cpu = measure(name, database, count, source, requests, opts, postmaster)
                rates.setdefault((name, count), []).append(rate)
                cpus.setdefault((name, count), []).append(cpu)
                db_cpus.setdefault((name, count), []).append(db_cpu)
                log(
                    f"round {round_number} workers {count} {name:<24} {rate:8.1f} req/s  server cpu {cpu:.2f}  "
                    f"database cpu {db_cpu:.2f}"
                )
    print(
        f"read-c16 at {opts.scale:,} studies, {opts.rounds} rounds of {opts.duration:g} s (median; load average "
        f"{load_before} before, {uptime()} after)\n"
    )
    print(
        f"| workers | variant | req/s | / {variants[0][0]} | server CPU (cores) | database CPU (cores) "
        "| server CPU ms a read | server + database CPU ms a read |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for count in workers:
        base = statistics.median(rates[(variants[0][0], count)])
        for name, _, _ in variants:
            rate = statistics.median(rates[(name, count)])
            runs = list(zip(cpus[(name, count)], db_cpus[(name, count)], rates[(name, count)], strict=True))
            cpu = statistics.median(c for c, _, _ in runs)
            db_cpu = statistics.median(d for _, d, _ in runs)
            per_read = statistics.median(c / r * 1000 for c, _, r in runs)
            both = statistics.median((c + d) / r * 1000 for c, d, r in runs)
            print(
                f"| {count} | {name} | {rate:,.0f} | {rate / base:.2f} | {cpu:.2f} | {db_cpu:.2f} | {per_read:.2f} "
                f"| {both:.2f} |"
            )


if __name__ == "__main__":
    main()
