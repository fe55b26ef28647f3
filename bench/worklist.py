"""The study browser's worklist at scale: ``python -m bench.worklist --database PATH``.

Copies a SQLite database of the benchmark corpus (bench/generate.py: studies with their patients, e.g. the 100,000-
study one), adds the index rows of the search parameters a database written before them lacks (``description``,
``accession``), starts a server on the copy, and times the worklist's first page for each single filter — the exact
search the page sends (``page_params`` mirrors ``fhir_imaging/web/js/worklist-query.js``; tests/e2e/test_browser.py
checks that they agree) — and the count search that fills in the total. Each search runs once to warm up, then
``--repeat`` times; the median and the slowest are printed, and the ratio of the median to the unfiltered first page.
Times are seen by the client on loopback (the server's own time plus well under a millisecond). Not a test:
bench/README.md.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson

from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.search.index import extract_values, insert_sql
from fhir_imaging.search.types import TYPES
from fhir_imaging.storage.bodies import unpack
from tests.e2e.server import ServerProcess

ADDED = ("description", "accession")  # ImagingStudy parameters newer than the benchmark databases
TARGET_MS = 300.0


# -- the page's searches (fhir_imaging/web/js/worklist-query.js) -----------------------------------------------------


def local_midnight(day: str, zone: ZoneInfo, days: int = 0) -> str:
    moment = datetime.combine(date.fromisoformat(day) + timedelta(days=days), datetime.min.time(), zone)
    return moment.isoformat()


def filter_params(state: dict[str, Any], zone: ZoneInfo) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = []
    if state.get("name"):
        params.append(("patient.name:contains", state["name"]))
    if state.get("mrn"):
        params.append(("patient.identifier", state["mrn"]))
    if state.get("from"):
        params.append(("started", f"ge{local_midnight(state['from'], zone)}"))
    if state.get("to"):
        params.append(("started", f"lt{local_midnight(state['to'], zone, 1)}"))
    if state.get("modality"):
        params.append(("modality", ",".join(state["modality"])))
    if state.get("accession"):
        params.append(("accession", state["accession"]))
    if state.get("description"):
        params.append(("description:contains", state["description"]))
    if state.get("status"):
        params.append(("status", state["status"]))
    return params


def page_params(state: dict[str, Any], zone: ZoneInfo) -> list[tuple[str, str]]:
    """The search of the worklist's page for ``state`` (the same keys as the page's address bar)."""
    params = [
        *filter_params(state, zone),
        ("_sort", state.get("sort", "-started")),
        ("_count", str(state.get("count", 25))),
        ("_include", "ImagingStudy:patient"),
        ("_summary", "true"),
    ]
    if state.get("cursor"):
        params.append(("_cursor", state["cursor"]))
    return params


def count_params(state: dict[str, Any], zone: ZoneInfo) -> list[tuple[str, str]]:
    return [*filter_params(state, zone), ("_summary", "count")]


# -- the database ----------------------------------------------------------------------------------------------------


def copy_database(source: Path, folder: Path) -> Path:
    target = folder / "worklist.db"
    with sqlite3.connect(source) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy(source, target)
    return target


def add_index_rows(path: Path, codes: tuple[str, ...] = ADDED) -> int:
    """Index ``codes`` of every ImagingStudy (what ``fhir-imaging reindex`` would add, for these parameters only);
    the number of studies read. Nothing is done for a parameter that has rows already."""
    params = load_registry().params_for("ImagingStudy")
    with sqlite3.connect(path) as db:
        missing = []
        for code in codes:
            table = TYPES[params[code].type].table
            found = db.execute(f"SELECT 1 FROM {table} WHERE type = 'ImagingStudy' AND param = ? LIMIT 1", (code,))
            if found.fetchone() is None:
                missing.append(params[code])
        if not missing:
            return 0
        studies = 0
        for rid, body in db.execute("SELECT rid, body FROM resource WHERE type = 'ImagingStudy' AND deleted = 0"):
            resource = orjson.loads(unpack(body))
            studies += 1
            for param in missing:
                for kind, sub, columns in extract_values(resource, param):
                    code = f"{param.code}:{sub}" if sub else param.code
                    db.execute(insert_sql(TYPES[kind].table), (rid, "ImagingStudy", code, *columns))
        db.execute("ANALYZE")
        return studies


def sample_values(path: Path) -> dict[str, str]:
    """Filter values that exist in the database: a name fragment, an MRN, an accession, the last day."""
    with sqlite3.connect(path) as db:
        mrn = db.execute(
            "SELECT code FROM spidx_token WHERE type = 'Patient' AND param = 'identifier' "
            "ORDER BY rid LIMIT 1 OFFSET 77"
        ).fetchone()[0]
        accession = db.execute(
            "SELECT code FROM spidx_token WHERE type = 'ImagingStudy' AND param = 'accession' "
            "ORDER BY rid LIMIT 1 OFFSET 4321"
        ).fetchone()[0]
        last = db.execute(
            "SELECT max(lo) FROM spidx_date WHERE type = 'ImagingStudy' AND param = 'started'"
        ).fetchone()[0]
    last_day = datetime.fromtimestamp(last / 1e6).date()
    return {"mrn": mrn, "accession": accession, "last_day": last_day.isoformat()}


# -- timing ----------------------------------------------------------------------------------------------------------


def timed(client: httpx.Client, url: str, params: list[tuple[str, str]], repeat: int) -> tuple[list[float], Any]:
    answer = client.get(url, params=params)
    assert answer.status_code == 200, answer.text
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        answer = client.get(url, params=params)
        times.append((time.perf_counter() - started) * 1000)
    return times, answer.json()


def cases(values: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    last = date.fromisoformat(values["last_day"])
    return [
        ("none (baseline)", {}),
        ("patient name contains 'sen'", {"name": "sen"}),
        ("MRN", {"mrn": values["mrn"]}),
        ("date: last 7 days of data", {"from": (last - timedelta(days=6)).isoformat(), "to": last.isoformat()}),
        ("date: one year", {"from": f"{last.year - 1}-01-01", "to": f"{last.year - 1}-12-31"}),
        ("modality CT", {"modality": ["CT"]}),
        ("modality MR,NM", {"modality": ["MR", "NM"]}),
        ("accession", {"accession": values["accession"]}),
        ("description contains 'knee'", {"description": "knee"}),
        ("status cancelled", {"status": "cancelled"}),
        ("status available", {"status": "available"}),
        ("sort accession", {"sort": "accession"}),
        ("sort status", {"sort": "status"}),
    ]


class Server(ServerProcess):
    """The server, given two minutes to answer (its first start on a large database, on a busy machine)."""

    def _wait_ready(self, timeout: float = 120.0) -> None:
        super()._wait_ready(timeout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", type=Path, required=True, help="a SQLite database of the benchmark corpus")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--zone", default="Europe/Paris", help="the browser's time zone (local days)")
    parser.add_argument("--no-count", action="store_true", help="do not time the count searches")
    parser.add_argument(
        "--in-place",
        action="store_true",
        help="serve the database itself, not a copy (a copy made for the benchmark: the index rows are added to it)",
    )
    parser.add_argument("--only", action="append", default=[], help="time only the filters with these labels")
    args = parser.parse_args()
    zone = ZoneInfo(args.zone)
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        started = time.perf_counter()
        if args.in_place:
            copy = args.database
        else:
            copy = copy_database(args.database, Path(folder))
            print(f"copied {args.database} in {time.perf_counter() - started:.0f} s")
        started = time.perf_counter()
        indexed = add_index_rows(copy)
        if indexed:
            print(f"indexed {', '.join(ADDED)} of {indexed:,} studies in {time.perf_counter() - started:.0f} s")
        values = sample_values(copy)
        server = Server(f"sqlite:///{copy}", log=Path(folder) / "server.log")
        try:
            url = f"{server.base}/ImagingStudy"
            with httpx.Client(timeout=120) as client:
                total = client.get(url, params=[("_summary", "count")]).json()["total"]
                print(f"{total:,} studies; median and slowest of {args.repeat} after a warm-up, ms\n")
                print("| filter | matches | first page | slowest | × baseline | count search |")
                print("| --- | ---: | ---: | ---: | ---: | ---: |")
                baseline = None
                for label, state in cases(values):
                    if args.only and label not in args.only and baseline is not None:
                        continue
                    times, bundle = timed(client, url, page_params(state, zone), args.repeat)
                    median = statistics.median(times)
                    baseline = baseline or median
                    rows = sum(1 for e in bundle.get("entry", []) if e["search"]["mode"] == "match")
                    count_text = "–"
                    matches = "–"
                    if not args.no_count:
                        count_times, counted = timed(client, url, count_params(state, zone), max(1, args.repeat // 2))
                        count_text = f"{statistics.median(count_times):.0f}"
                        matches = f"{counted['total']:,}"
                    mark = "" if median < TARGET_MS else " ✗"
                    print(
                        f"| {label} | {matches} | {median:.1f}{mark} | {max(times):.1f} | {median / baseline:.2f} "
                        f"| {count_text} |"
                    )
                    assert rows <= 25
        finally:
            server.stop()


if __name__ == "__main__":
    main()
