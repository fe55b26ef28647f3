"""Ingest benchmark (transactions and ``fhir-imaging load``): ``python -m bench.ingest [--studies 2000]``.

1. Transaction Bundles of 1, 10, 100 and 1,000 ImagingStudy entries (``PUT ImagingStudy/[id]``, realistic studies
   from bench/generate.py with their patients, encounters… loaded first), posted through the in-process FHIR API;
   studies per second for each size.
2. ``fhir-imaging load`` of the same corpus as NDJSON (every resource type, batches of 500).
Both on SQLite (``synchronous=full``, as served) and, when ``--postgres URL`` is given, on PostgreSQL. The baseline in
the same run is the same SQLite database written by the bare store (no HTTP, no validation, no Bundle processing):
the figures are also given as a ratio to it. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.generate import generate_corpus
from fhir_imaging.cli import main as cli_main
from fhir_imaging.client import fhir_client
from fhir_imaging.config import Settings
from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.storage import open_store

SIZES = (1, 10, 100, 1000)


def _bundle(resources: list[dict[str, Any]]) -> bytes:
    entries = [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in resources
    ]
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})


async def _transactions(database: str, others: list[dict[str, Any]], studies: list[dict[str, Any]]) -> dict[int, float]:
    rates: dict[int, float] = {}
    async with fhir_client(database=database) as client:
        for start in range(0, len(others), 500):
            response = await client.post("", content=_bundle(others[start : start + 500]))
            assert response.status_code == 200, response.text[:300]
        offset = 0
        for size in SIZES:
            count = max(size, min(len(studies) // len(SIZES), 1000 if size < 100 else len(studies)))
            chunk = studies[offset : offset + count]
            offset = (offset + count) % len(studies)
            bodies = [_bundle(chunk[i : i + size]) for i in range(0, len(chunk), size)]
            started = time.perf_counter()
            for body in bodies:
                response = await client.post("", content=body)
                assert response.status_code == 200, response.text[:300]
            rates[size] = len(chunk) / (time.perf_counter() - started)
    return rates


def _baseline(database: str, studies: list[dict[str, Any]]) -> float:
    store = open_store(Settings(database=database), load_registry())
    try:
        started = time.perf_counter()
        for start in range(0, len(studies), 100):
            chunk = studies[start : start + 100]
            store.transact(lambda tx, chunk=chunk: [tx.update("ImagingStudy", s["id"], s) for s in chunk])
        return len(studies) / (time.perf_counter() - started)
    finally:
        store.close()


def _load(database: str, corpus: Path, resources: int) -> float:
    started = time.perf_counter()
    assert cli_main(["load", str(corpus), "--database", database]) == 0
    return resources / (time.perf_counter() - started)


def run(studies_wanted: int, postgres: str | None) -> str:
    resources = list(generate_corpus(studies_wanted, seed=7))
    studies = [r for r in resources if r["resourceType"] == "ImagingStudy"]
    others = [r for r in resources if r["resourceType"] != "ImagingStudy"]
    work = Path(tempfile.mkdtemp(prefix="fhir-imaging-ingest-"))
    corpus = work / "corpus.ndjson"
    corpus.write_bytes(b"\n".join(orjson.dumps(r) for r in resources) + b"\n")
    instances = sum(len(s.get("instance", [])) for study in studies for s in study.get("series", []))
    lines = [
        f"{len(studies)} studies ({instances / len(studies):.0f} instances a study on average), "
        f"{len(resources)} resources in all",
        "",
        "| backend | "
        + " | ".join(f"transaction of {size}" for size in SIZES)
        + " | load (resources/s) | bare store |",
        "|---|" + "---:|" * (len(SIZES) + 2),
    ]
    backends = [("sqlite", lambda name: f"sqlite:///{work / name}.db")]
    if postgres:
        backends.append(("postgresql", lambda name: _fresh_postgres(postgres, name)))
    for label, database_for in backends:
        rates = asyncio.run(_transactions(database_for("tx"), others, studies))
        load_rate = _load(database_for("load"), corpus, len(resources))
        floor = _baseline(database_for("floor"), studies)
        cells = " | ".join(f"{rates[size]:,.0f} studies/s ({rates[size] / floor:.2f})" for size in SIZES)
        lines.append(f"| {label} | {cells} | {load_rate:,.0f} | {floor:,.0f} studies/s |")
    return "\n".join(lines)


def _fresh_postgres(url: str, name: str) -> str:
    import psycopg

    database = f"bench_{name}_{int(time.time() * 1000) % 10_000_000}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    return url.rsplit("/", 1)[0] + f"/{database}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=2000)
    parser.add_argument("--postgres", default=None, help="a PostgreSQL server URL to also run on (databases are made)")
    args = parser.parse_args()
    print(run(args.studies, args.postgres))


if __name__ == "__main__":
    main()
