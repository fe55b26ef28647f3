"""The workloads: what is sent, at which concurrency. Add one by appending a ``Workload`` to ``WORKLOADS``.

Every workload is a file of requests built once per scale from the generated corpus (``bench/generate.py``, with
the studies of the run's profile, ``bench/study_profiles.py``: creates and updates send studies of that profile too),
so each server gets exactly the same requests. Before a workload runs on a server, its first request is sent once (the
probe): an answer of 404, 405 or 501 means the server does not offer that interaction yet, and the workload is
skipped with the answer as the note (searches and transactions light up by themselves when the server gains them).
A workload that follows ``next`` links is also skipped when the probe's answer has no ``next`` link.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from bench import generate, study_profiles
from bench.targets import Target

UNSUPPORTED = (404, 405, 501)
NEXT_LINK = re.compile(rb'"relation"\s*:\s*"next"\s*,\s*"url"|"url"\s*:\s*"[^"]+"\s*,\s*"relation"\s*:\s*"next"')
DCM = quote(generate.DCM + "|", safe="")
MODALITY_CODES = tuple(m.code for m in generate.MODALITIES)


@dataclass(frozen=True, slots=True)
class Corpus:
    scale: int
    seed: int
    profile: str = "realistic"  # of the studies (bench/study_profiles.py): the preloaded ones and the ones sent

    def study(self, i: int) -> dict[str, Any]:
        return study_profiles.study(self.profile, self.scale, self.seed, i)

    def study_id(self, i: int) -> str:
        return generate.resource_id(self.seed, "ImagingStudy", i)

    def patient_id(self, i: int) -> str:
        return generate.resource_id(self.seed, "Patient", i)

    @property
    def patients(self) -> int:
        return generate.counts(self.scale)["Patient"]

    def new_study(self, k: int) -> dict[str, Any]:
        """A study that is not in the corpus (a further study of visit ``k % scale``), without an id."""
        body = self.study(self.scale + k)
        del body["id"]
        return body


def _line(method: str, path: str, body: dict[str, Any] | None = None) -> str:
    return f"{method}\t{path}\t{orjson.dumps(body).decode() if body is not None else ''}"


def _date(rng: random.Random) -> str:
    return f"{rng.randint(2019, 2025)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


# -- request builders: (corpus, rng) → lines ------------------------------------------------------------------------


def creates(c: Corpus, rng: random.Random) -> Iterator[str]:
    for k in range(500):
        yield _line("POST", "/baseR4/ImagingStudy", c.new_study(k))


def transactions(c: Corpus, rng: random.Random) -> Iterator[str]:
    for b in range(20):
        entries = []
        for k in range(100):
            entries.append(
                {
                    "fullUrl": f"urn:uuid:{generate.resource_id(c.seed, 'bundle-entry', b * 100 + k)}",
                    "resource": c.new_study(10_000 + b * 100 + k),
                    "request": {"method": "POST", "url": "ImagingStudy"},
                }
            )
        yield _line("POST", "/baseR4/", {"resourceType": "Bundle", "type": "transaction", "entry": entries})


def reads(c: Corpus, rng: random.Random) -> Iterator[str]:
    for _ in range(5000):
        yield _line("GET", f"/baseR4/ImagingStudy/{c.study_id(rng.randrange(c.scale))}")


def by_patient(c: Corpus, rng: random.Random) -> Iterator[str]:
    for _ in range(2000):
        yield _line("GET", f"/baseR4/ImagingStudy?patient=Patient/{c.patient_id(rng.randrange(c.patients))}&_count=20")


def by_modality(c: Corpus, rng: random.Random) -> Iterator[str]:
    for _ in range(200):
        yield _line("GET", f"/baseR4/ImagingStudy?modality={DCM}{rng.choice(MODALITY_CODES)}&_count=20")


def by_status(c: Corpus, rng: random.Random) -> Iterator[str]:
    for _ in range(200):
        status = "available" if rng.random() < 0.8 else rng.choice(("registered", "cancelled", "unknown"))
        yield _line("GET", f"/baseR4/ImagingStudy?status={status}&_count=20")


def by_started(c: Corpus, rng: random.Random) -> Iterator[str]:
    for _ in range(500):
        yield _line("GET", f"/baseR4/ImagingStudy?started=ge{_date(rng)}&_count=20")


def by_patient_and_modality(c: Corpus, rng: random.Random) -> Iterator[str]:
    for _ in range(2000):
        v = generate.visit(c.scale, c.seed, rng.randrange(c.scale))  # a pair that has at least one study
        yield _line(
            "GET",
            f"/baseR4/ImagingStudy?patient=Patient/{c.patient_id(v.patient)}&modality={DCM}{v.modality.code}&_count=20",
        )


def compartment(c: Corpus, rng: random.Random) -> Iterator[str]:
    for _ in range(2000):
        yield _line("GET", f"/baseR4/Patient/{c.patient_id(rng.randrange(c.patients))}/ImagingStudy?_count=20")


def paging_seeds(c: Corpus, rng: random.Random) -> Iterator[str]:
    for _ in range(300):
        yield from (next(by_status(c, rng)), next(by_modality(c, rng)), next(by_started(c, rng)))


def mixed(c: Corpus, rng: random.Random) -> Iterator[str]:
    """80 % reads, 15 % creates, 5 % updates of existing studies."""
    for k in range(2000):
        pick = rng.random()
        if pick < 0.80:
            yield _line("GET", f"/baseR4/ImagingStudy/{c.study_id(rng.randrange(c.scale))}")
        elif pick < 0.95:
            yield _line("POST", "/baseR4/ImagingStudy", c.new_study(k))
        else:
            i = rng.randrange(c.scale)
            body = c.study(i)
            body["status"] = "available"
            body["description"] += " (corrected)"
            yield _line("PUT", f"/baseR4/ImagingStudy/{body['id']}", body)


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    kind: str  # ingest | read | search | mixed
    description: str
    connections: int
    build: Callable[[Corpus, random.Random], Iterator[str]]
    follow: int = 0  # follow next links up to this many pages per seed search
    resources_per_request: int = 1

    def write_requests(self, corpus: Corpus, directory: Path) -> Path:
        path = directory / f"{self.name}.txt"
        if not path.exists():
            rng = random.Random(f"{corpus.seed}:{self.name}")
            path.write_text("\n".join(self.build(corpus, rng)) + "\n")
        return path


SEED_SEARCHES: tuple[tuple[str, str, Callable[[Corpus, random.Random], Iterator[str]]], ...] = (
    ("search-patient", "GET /ImagingStudy?patient=Patient/{id}", by_patient),
    ("search-modality", "GET /ImagingStudy?modality=DCM|{code}", by_modality),
    ("search-status", "GET /ImagingStudy?status={code} (80 % available)", by_status),
    ("search-started", "GET /ImagingStudy?started=ge{date}", by_started),
    ("search-patient-modality", "GET /ImagingStudy?patient=…&modality=…", by_patient_and_modality),
    ("search-compartment", "GET /Patient/{id}/ImagingStudy", compartment),
)
LATENCY_SUFFIX = "-c1"  # the seed searches again on one connection: latency without queueing (target p95 ≤ 20 ms)

WORKLOADS: tuple[Workload, ...] = (
    # reads and searches first, on the corpus exactly as preloaded; then the writes, which grow it
    Workload("read-c16", "read", "GET /ImagingStudy/{id} of a preloaded study, 16 connections", 16, reads),
    *(Workload(name, "search", description, 16, build) for name, description, build in SEED_SEARCHES),
    Workload(
        "search-paging",
        "search",
        "status / modality / started searches, then up to 5 next links each",
        16,
        paging_seeds,
        follow=5,
    ),
    *(
        Workload(name + LATENCY_SUFFIX, "search", f"{description}, one connection", 1, build)
        for name, description, build in SEED_SEARCHES
    ),
    Workload("create-c1", "ingest", "POST /ImagingStudy, one connection", 1, creates),
    Workload("create-c16", "ingest", "POST /ImagingStudy, 16 connections", 16, creates),
    Workload(
        "transaction-100",
        "ingest",
        "POST / transaction Bundle of 100 studies, 4 connections",
        4,
        transactions,
        resources_per_request=100,
    ),
    Workload("mixed", "mixed", "80 % read, 15 % create, 5 % update, 16 connections", 16, mixed),
)
BY_NAME = {w.name: w for w in WORKLOADS}


def first_request(path: Path) -> tuple[str, str, bytes | None]:
    with path.open() as f:
        method, target, body = f.readline().rstrip("\n").split("\t", 2)
    return method, target, body.encode() if body else None


def probe(target: Target, workload: Workload, requests_file: Path, slow_limit: float) -> str | None:
    """None when the server offers the workload's interaction; else why it is skipped.

    A request slower than ``slow_limit`` seconds on its own is not run under load: 16 connections would queue
    behind it and time out (the peer's in-memory searches scan every resource)."""
    method, path, body = first_request(requests_file)
    started = time.monotonic()
    status, answer = target.request(method, path, body, timeout=max(120, 2 * slow_limit))
    seconds = time.monotonic() - started
    if status in UNSUPPORTED or status == 0:
        return f"{method} {path.split('?')[0]} → {status or 'no answer'}{_diagnostics(answer)}"
    if workload.follow and not NEXT_LINK.search(answer):
        return f"{method} {path.split('?')[0]} → {status}, but the answer has no next link"
    if seconds > slow_limit:
        return f"one request took {seconds:.1f} s on its own (limit {slow_limit:g} s): not run under load"
    return None


def _diagnostics(answer: bytes) -> str:
    try:
        outcome = orjson.loads(answer)
        issue = outcome["issue"][0]
        text = issue.get("diagnostics") or issue.get("details", {}).get("text") or issue.get("code")
        return f" ({text})" if text else ""
    except Exception:
        return ""
