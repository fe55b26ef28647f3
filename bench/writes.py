"""Write benchmark, this tree against a baseline commit in the same run: ``python -m bench.writes [--studies 10000]
[--baseline main]``.

Both trees (the baseline is ``git archive`` of ``--baseline``'s ``fhir_imaging/`` into a temporary directory) run
the same steps on the same corpus (bench/generate.py, realistic studies with their patients, encounters…), each in
its own process on its own SQLite database:

1. preload: every resource through ``fhir-imaging load --database`` (the bulk path, as ``python -m bench run``
   preloads; a tree without it: ``SQLiteStore.create``, 500 a transaction, ``synchronous=off``); database bytes
   per study after a checkpoint (bodies, indexes, history);
2. then, durable (``synchronous=full``, the served default), new studies: transactions of 100 through the
   in-process FHIR API (``POST /`` transaction Bundles: validation and Bundle processing included), single creates
   (``POST /ImagingStudy``) one at a time and 16 at a time, and the bare store's single creates; WAL bytes a study
   (automatic checkpoints off while measuring) and CPU milliseconds a study (``time.process_time`` of the process:
   every thread, the in-process HTTP client's work included; the figure a loaded machine changes least);
3. reads by id of preloaded studies through the bare store (``SQLiteStore.read``, bodies decoded);
4. a tree with bundle workers (``bundle_workers``): the transactions of 100 again, on new studies, with 2 of them
   (after one unmeasured transaction that starts them); the server process's CPU a study, and the workers'.

Prints a Markdown table: each figure for the baseline, this tree and their ratio. The machine may be shared: trust
ratios of one run rather than figures of different runs.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import orjson

from bench.bundle_workers import children_cpu

REPO = Path(__file__).resolve().parent.parent
SINGLE = 300  # single creates measured (each kind)
BATCHES = 10  # transactions of 100 measured
READS = 3000
BUNDLE_WORKERS = 2  # the transactions of 100 again with this many bundle workers (a tree that has them)


def _bundle(resources: list[dict[str, Any]]) -> bytes:
    entries = [{"resource": r, "request": {"method": "POST", "url": r["resourceType"]}} for r in resources]
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})


def _wal_bytes(path: str) -> int:
    wal = Path(path + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def _checkpoint(path: str) -> None:
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _timed_wal(path: str, count: int, work: Callable[[], None]) -> tuple[float, float, float]:
    """(items a second, WAL bytes an item, CPU ms an item) of ``work``, which writes ``count`` items; checkpoints
    off meanwhile."""
    _checkpoint(path)
    started, cpu = time.perf_counter(), time.process_time()
    work()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return count / seconds, _wal_bytes(path) / count, 1000 * cpu / count


async def _api(database: str, path: str, studies: list[dict[str, Any]]) -> dict[str, float]:
    from fhir_imaging.client import fhir_client
    from fhir_imaging.config import Settings

    out: dict[str, float] = {}
    settings = Settings(database=database)
    async with fhir_client(settings=settings) as client:

        async def transactions(chunk: list[dict[str, Any]]) -> None:
            for start in range(0, len(chunk), 100):
                response = await client.post("", content=_bundle(chunk[start : start + 100]))
                assert response.status_code == 200, response.text[:300]

        async def creates(chunk: list[dict[str, Any]], connections: int) -> None:
            queue = list(chunk)

            async def one_connection() -> None:
                while queue:
                    response = await client.post("ImagingStudy", content=orjson.dumps(queue.pop()))
                    assert response.status_code == 201, response.text[:300]

            await asyncio.gather(*(one_connection() for _ in range(connections)))

        async def measured(name: str, count: int, run: Any) -> None:
            _checkpoint(path)
            started, cpu = time.perf_counter(), time.process_time()
            await run
            out[f"{name} /s"] = count / (time.perf_counter() - started)
            out[f"{name}: CPU ms a study"] = 1000 * (time.process_time() - cpu) / count
            out[f"{name}: WAL bytes a study"] = _wal_bytes(path) / count

        tx = studies[: BATCHES * 100]
        await measured("API transactions of 100", len(tx), transactions(tx))
        one = studies[len(tx) : len(tx) + SINGLE]
        await measured("API single creates, 1 at a time", len(one), creates(one, 1))
        many = studies[len(tx) + SINGLE : len(tx) + 2 * SINGLE]
        await measured("API single creates, 16 at a time", len(many), creates(many, 16))
    if "bundle_workers" in {f.name for f in dataclasses.fields(Settings)}:  # a tree with bundle workers
        pooled = studies[len(tx) + 3 * SINGLE :]
        async with fhir_client(settings=Settings(database=database, bundle_workers=BUNDLE_WORKERS)) as client:
            await transactions(pooled[:100])  # the workers start (not measured)
            workers = children_cpu()
            name = f"API transactions of 100, {BUNDLE_WORKERS} bundle workers"
            await measured(name, len(tx), transactions(pooled[100 : 100 + len(tx)]))
            out[f"{name}: CPU ms a study, workers'"] = 1000 * (children_cpu() - workers) / len(tx)
    return out


def measure(database_path: str, corpus: Path, studies_count: int, fresh: Path) -> dict[str, float]:
    """The steps of the module docstring on one tree (the one on ``sys.path``); figures by name."""
    from fhir_imaging.fhir.registry import load_registry
    from fhir_imaging.storage.sqlite import SQLiteStore

    registry = load_registry()
    resources = [orjson.loads(line) for line in corpus.read_bytes().splitlines() if line]
    out: dict[str, float] = {}
    started = time.perf_counter()
    if importlib.util.find_spec("fhir_imaging.bulk_load") is not None:  # the tree has the bulk path
        from fhir_imaging.cli import main as cli

        assert cli(["load", str(corpus), "--database", f"sqlite:///{database_path}"]) == 0
    else:
        store = SQLiteStore(f"sqlite:///{database_path}", registry, synchronous="off")
        for start in range(0, len(resources), 500):
            batch = resources[start : start + 500]
            store.transact(lambda tx, batch=batch: [tx.create(r["resourceType"], r["id"], r) for r in batch])
        store.close()
    out["preload resources/s"] = len(resources) / (time.perf_counter() - started)
    _checkpoint(database_path)
    out["database bytes a study"] = Path(database_path).stat().st_size / studies_count

    new = [orjson.loads(line) for line in fresh.read_bytes().splitlines() if line]
    out.update(_no_autocheckpoint(lambda: asyncio.run(_api(f"sqlite:///{database_path}", database_path, new))))

    store = SQLiteStore(f"sqlite:///{database_path}", registry, synchronous="full")
    store._writer.execute("PRAGMA wal_autocheckpoint = 0")
    bare = new[BATCHES * 100 + 2 * SINGLE :][:SINGLE]
    rate, wal, cpu = _timed_wal(
        database_path, len(bare), lambda: [store.create("ImagingStudy", f"bare-{i}", s) for i, s in enumerate(bare)]
    )
    out["store single creates, 1 at a time /s"] = rate
    out["store single creates: CPU ms a study"] = cpu
    out["store single creates: WAL bytes a study"] = wal
    ids = [r["id"] for r in resources if r["resourceType"] == "ImagingStudy"]
    picks = [random.Random(5).choice(ids) for _ in range(READS)]
    started = time.perf_counter()
    for resource_id in picks:
        assert store.read("ImagingStudy", resource_id) is not None
    out["store reads by id /s"] = READS / (time.perf_counter() - started)
    store.close()
    return out


def _no_autocheckpoint(work: Callable[[], dict[str, float]]) -> dict[str, float]:
    """Run ``work`` with SQLite's automatic checkpoints off on every connection the server opens (WAL growth is
    then the bytes written)."""
    from fhir_imaging.storage import sqlite as backend

    original = backend.SQLiteStore._open

    def opened(self: Any, cache_kib: int) -> Any:
        conn = original(self, cache_kib)
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        return conn

    backend.SQLiteStore._open = opened  # type: ignore[method-assign]
    try:
        return work()
    finally:
        backend.SQLiteStore._open = original  # type: ignore[method-assign]


def _baseline_tree(revision: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", revision, "fhir_imaging"], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def _run_tree(tree: Path, work: Path, name: str, corpus: Path, fresh: Path, studies: int) -> dict[str, float]:
    """``measure`` in a child process whose ``fhir_imaging`` is ``tree``'s."""
    result = work / f"{name}.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(REPO)])}
    code = (
        "import json, sys; from pathlib import Path; from bench.writes import measure; "
        "out = measure(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])); "
        "Path(sys.argv[5]).write_text(json.dumps(out))"
    )
    database = work / f"{name}.db"
    subprocess.run(
        [sys.executable, "-c", code, str(database), str(corpus), str(studies), str(fresh), str(result)],
        check=True,
        env=env,
        cwd=work,
    )
    figures: dict[str, float] = json.loads(result.read_text())
    return figures


def run(studies: int, baseline: str) -> str:
    from bench.generate import generate_corpus

    work = Path(tempfile.mkdtemp(prefix="fhir-imaging-writes-"))
    try:
        corpus, fresh = work / "corpus.ndjson", work / "fresh.ndjson"
        corpus.write_bytes(b"\n".join(orjson.dumps(r) for r in generate_corpus(studies, seed=11)) + b"\n")
        extra = 2 * BATCHES * 100 + 3 * SINGLE + 100
        new = [r for r in generate_corpus(extra, seed=12) if r["resourceType"] == "ImagingStudy"][:extra]
        fresh.write_bytes(b"\n".join(orjson.dumps(r) for r in new) + b"\n")
        old = _run_tree(_baseline_tree(baseline, work / "baseline"), work, "baseline", corpus, fresh, studies)
        ours = _run_tree(REPO, work, "this", corpus, fresh, studies)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        f"{studies:,} studies preloaded, then {BATCHES * 100:,} in transactions of 100 and {SINGLE} single creates "
        f"of each kind (SQLite, durable); baseline `{baseline}`",
        "",
        "| figure | baseline | this tree | this / baseline |",
        "|---|---:|---:|---:|",
    ]
    for name, value in ours.items():
        before = old.get(name)
        ratio = f"{value / before:.2f}" if before else "–"
        digits = 2 if "CPU ms" in name else 0
        lines.append(f"| {name} | {before or 0:,.{digits}f} | {value:,.{digits}f} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.writes", description=__doc__)
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--baseline", default="main", help="the git revision to compare with (default main)")
    args = parser.parse_args()
    print(run(args.studies, args.baseline))


if __name__ == "__main__":
    main()
