"""Search benchmark: p50/p95 latency of the seed queries and of paging, through the ASGI app in-process.

Usage::

    python -m bench.search [--scale 10000] [--seed 1] [--database sqlite:////tmp/bench-search.db] [--runs 200]
        [--only instance,series] [--baseline main]

Loads ``--scale`` ImagingStudy resources (with ``scale // 5`` patients, and the encounters, service requests and
practitioners bench/generate.py makes: 1–10 series of 1–300 instances per study) directly through the store —
skipped when the database already holds them — then times each query's first page of 20 (``--runs`` times, over
varying patients; ``instance=`` / ``series=``: over UIDs drawn from random studies) and following ``next`` across
1,000 results. ``--only`` times the named queries alone. ``--baseline REV``: the same queries, each tree in its own
process on its own database (``fhir_imaging/`` of ``REV`` from ``git archive``, as bench/writes.py does), one after
the other, and their ratio. Not a test: see bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from starlette.testclient import TestClient

from bench.generate import generate_corpus
from bench.writes import REPO, _baseline_tree
from fhir_imaging.app import create_app
from fhir_imaging.config import Settings
from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.storage.sqlite import SQLiteStore

BATCH = 500
TARGET_P95_MS = 20.0


def load(url: str, scale: int, seed: int) -> float:
    """Write the corpus through the store in batches of one transaction each; seconds taken (0 when present)."""
    store = SQLiteStore(url, load_registry(), synchronous="off")
    try:
        present = store.query("SELECT count(*) FROM resource WHERE type = 'ImagingStudy'", [])[0][0]
        if present >= scale:
            return 0.0
        started = time.perf_counter()
        batch: list[dict[str, object]] = []

        def flush() -> None:
            store.transact(lambda tx: [tx.update(str(r["resourceType"]), str(r["id"]), r) for r in batch])
            batch.clear()

        for number, resource in enumerate(generate_corpus(scale, seed), start=1):
            batch.append(resource)
            if len(batch) >= BATCH:
                flush()
            if number % 20_000 == 0:
                print(f"  loaded {number} resources", file=sys.stderr)
        if batch:
            flush()
        store.query("ANALYZE", [])
        return time.perf_counter() - started
    finally:
        store.close()


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95


CPU_MS: list[float] = []  # the process's CPU time of each request timed (the app runs in this process)


def _time(client: TestClient, url: str) -> tuple[float, dict[str, object]]:
    started, cpu = time.perf_counter(), time.process_time()
    response = client.get(url)
    elapsed = (time.perf_counter() - started) * 1000
    CPU_MS.append((time.process_time() - cpu) * 1000)
    assert response.status_code == 200, response.text[:300]
    return elapsed, response.json()


def _uids(store: SQLiteStore, count: int, seed: int) -> tuple[list[str], list[str]]:
    """``count`` series UIDs and ``count`` instance UIDs, each from a random study."""
    import orjson

    from fhir_imaging.storage.bodies import unpack

    rng = random.Random(seed)
    rids = [row[0] for row in store.query("SELECT rid FROM resource WHERE type = 'ImagingStudy'", [])]
    series, instances = [], []
    for rid in rng.sample(rids, min(count, len(rids))):
        study = orjson.loads(unpack(store.query("SELECT body FROM resource WHERE rid = ?", [rid])[0][0]))
        picked = rng.choice(study["series"])
        series.append(picked["uid"])
        instances.append(rng.choice(picked["instance"])["uid"])
    return series, instances


def _run_search(store: SQLiteStore, name: str, uids: list[str]) -> tuple[float, ...]:
    """p50 and p95 of wall and CPU time of ``run_search`` alone (no HTTP, no Bundle) for ``name=uid``, each UID once
    after one warm-up pass over the first ten."""
    from fhir_imaging.search.execute import run_search
    from fhir_imaging.search.query import parse_search

    registry = load_registry()
    walls, cpus = [], []
    for uid in [*uids[:10], *uids]:
        started, cpu = time.perf_counter(), time.process_time()
        run_search(store, parse_search(registry, ("ImagingStudy",), [(name, uid)]), ("",))
        walls.append((time.perf_counter() - started) * 1000)
        cpus.append((time.process_time() - cpu) * 1000)
    return (*_percentiles(walls[10:]), *_percentiles(cpus[10:]))


def compare(argv: list[str], baseline: str) -> int:
    """Run ``argv`` (without ``--baseline``) with the baseline tree, then with this one; print both and the ratio."""
    work = Path(tempfile.mkdtemp(prefix="fhir-imaging-search-"))
    results = {}
    for name, tree in (("baseline", _baseline_tree(baseline, work / "baseline")), ("this", REPO)):
        out = work / f"{name}.json"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(REPO)])}
        database = f"sqlite:///{work / name}.db"
        command = [sys.executable, "-m", "bench.search", *argv, "--database", database, "--json", str(out)]
        subprocess.run(command, check=True, env=env, cwd=work)  # not REPO: ``-m`` puts the working folder first
        results[name] = {row[0]: row[1:] for row in json.loads(out.read_text())}
    print(f"\nbaseline `{baseline}` → this tree (first page of 20; ms, and ratio this / baseline)\n")
    print("| query | p50 | p95 | CPU p50 | CPU p95 |\n| --- | ---: | ---: | ---: | ---: |")
    for name, figures in results["this"].items():
        old = results["baseline"].get(name, [0.0] * len(figures))
        cells = [f"{a:.2f} → {b:.2f} ({b / a:.2f})" if a else "–" for a, b in zip(old, figures, strict=True)]
        print(f"| {name} | {' | '.join(cells)} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="p50/p95 of the seed search queries")
    parser.add_argument("--scale", type=int, default=10_000, help="ImagingStudy resources (patients: scale // 5)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database", default=None, help="sqlite:///path.db (default: a file in the temp folder)")
    parser.add_argument("--runs", type=int, default=200, help="timed requests per query")
    parser.add_argument("--only", default=None, help="comma-separated names of the queries to time (no paging)")
    parser.add_argument("--baseline", default=None, help="a git revision to compare with, in the same run")
    parser.add_argument("--json", default=None, help=argparse.SUPPRESS)  # where --baseline's children write rows
    args = parser.parse_args(argv)
    if args.baseline:
        given = sys.argv[1:] if argv is None else argv
        kept, skip = [], False
        for item in given:
            if skip or item.startswith("--baseline") or item.startswith("--database"):
                skip = item in ("--baseline", "--database")
                continue
            kept.append(item)
        return compare(kept, args.baseline)
    url = args.database or f"sqlite:///{Path(tempfile.gettempdir()) / f'bench-search-{args.scale}-{args.seed}.db'}"
    print(f"corpus: {args.scale} studies, {args.scale // 5} patients, seed {args.seed}, {url}", file=sys.stderr)
    seconds = load(url, args.scale, args.seed)
    if seconds:
        print(f"loaded in {seconds:.1f} s", file=sys.stderr)
    settings = Settings(database=url, sqlite_synchronous="normal", log_level="warning")
    with TestClient(create_app(settings), base_url="http://bench/baseR4") as client:
        store = client.app.state.service.store  # type: ignore[attr-defined]
        sample = (
            "SELECT DISTINCT target_id FROM spidx_reference WHERE type = 'ImagingStudy' AND param = 'patient' LIMIT 100"
        )
        patients = [row[0] for row in store.query(sample, [])]
        # Instants after which the newest 8, 5 and 3 % of the studies were written: _lastUpdated follows rid order,
        # as dates do when data arrives in date order, so these matches all sit at the far end of a walk in rid order.
        studies = store.query("SELECT count(*) FROM resource WHERE type = 'ImagingStudy'", [])[0][0]
        newest = "SELECT last_updated FROM resource WHERE type = 'ImagingStudy' ORDER BY rid LIMIT 1 OFFSET ?"
        recent = [store.query(newest, [int(studies * (1 - share))])[0][0] for share in (0.08, 0.05, 0.03)]
        queries: dict[str, Callable[[int], str]] = {
            "patient": lambda i: f"/ImagingStudy?patient=Patient/{patients[i % len(patients)]}",
            "modality": lambda i: f"/ImagingStudy?modality={('CT', 'MR', 'US', 'DX', 'CR')[i % 5]}",
            "status": lambda i: "/ImagingStudy?status=available",
            "started=ge": lambda i: f"/ImagingStudy?started=ge{2019 + i % 7}-01-01",
            "patient+modality": lambda i: f"/ImagingStudy?patient=Patient/{patients[i % len(patients)]}&modality=CT,MR",
            "compartment": lambda i: f"/Patient/{patients[i % len(patients)]}/ImagingStudy",
            "_lastUpdated=ge (newest 3–8 %)": lambda i: f"/ImagingStudy?_lastUpdated=ge{recent[i % 3]}",
            "-started sort": lambda i: "/ImagingStudy?status=available&_sort=-started",
        }
        series, instances = _uids(store, args.runs, args.seed)
        queries["series"] = lambda i: f"/ImagingStudy?series={series[i % len(series)]}"
        queries["instance"] = lambda i: f"/ImagingStudy?instance={instances[i % len(instances)]}"
        only = args.only.split(",") if args.only else None
        rows = []
        for name, make in queries.items():
            if only is not None and name not in only:
                continue
            for i in range(5):  # warm up
                _time(client, make(i))
            CPU_MS.clear()
            samples = [_time(client, make(i))[0] for i in range(args.runs)]
            rows.append((name, *_percentiles(samples), *_percentiles(CPU_MS)))
        for name, uids in (("series", series), ("instance", instances)):
            if only is None or name in only:
                rows.append((f"{name} (run_search alone)", *_run_search(store, name, uids)))
        paging = (
            ("paging (next × 50)", "/ImagingStudy?status=available&_count=20"),
            ("paging -started", "/ImagingStudy?status=available&_count=20&_sort=-started"),
        )
        if only is not None:
            paging = ()
        for label, first in paging:
            samples, seen, url_next = [], 0, first
            while url_next and seen < 1000:
                elapsed, bundle = _time(client, url_next)
                samples.append(elapsed)
                seen += len(bundle.get("entry", []))  # type: ignore[arg-type]
                links = {link["relation"]: link["url"] for link in bundle["link"]}  # type: ignore[index, union-attr]
                url_next = None
                if "next" in links:
                    parts = urlsplit(links["next"])
                    url_next = parts.path.removeprefix("/baseR4") + "?" + parts.query
            rows.append((f"{label} ({seen} results, {sum(samples):.0f} ms in all)", *_percentiles(samples), 0.0, 0.0))
    if args.json:
        Path(args.json).write_text(json.dumps(rows))
    print("\n| query (first page of 20) | p50 ms | p95 ms | CPU p50 ms | CPU p95 ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, p50, p95, cpu50, cpu95 in rows:
        flag = "" if p95 < TARGET_P95_MS else " (over target)"
        print(f"| {name} | {p50:.1f} | {p95:.1f}{flag} | {cpu50:.2f} | {cpu95:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
