"""``python -m bench run``: preload each server with the corpus, run every workload against it, write the report.

For each scale: the corpus is generated once (cached as NDJSON), the request files are built once, then each target
in turn is preloaded, started, probed and measured workload by workload (a warm-up run, then the measured run), and
stopped. Only one server runs at a time. Nothing but 127.0.0.1 is contacted.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import floor as floor_app
from bench import study_profiles, targets
from bench.loadgen import run_wrk
from bench.workloads import BY_NAME, WORKLOADS, Corpus, Workload, probe

REPO = targets.REPO
TARGET_NAMES = ("floor", "ours", "ours-granian", "peer")
POSTGRES_TARGET = "ours-postgres"  # only when named in --targets, with --postgres URL
REPLICA_TARGET = "ours-postgres-replica"  # the same with --postgres-replica URL as its --database-replica
EXPERIMENTS = {  # what-if variants (bench/experiments.py), only when named in --targets
    "ours-control": "fhir_imaging.app:app_from_environment",  # unpatched, launched like the variants
    "ours-switch-interval": "bench.experiments:short_switch_interval",
}


@dataclass
class Measurement:
    scale: int
    target: str
    workload: str
    skipped: str | None = None  # why, when skipped
    requests: int = 0
    seconds: float = 0.0
    rate: float = 0.0  # requests/s
    resources_rate: float = 0.0  # resources/s (transactions: 100 per request)
    mib_per_s: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    errors: int = 0
    error_detail: dict[str, int] = field(default_factory=dict)
    rss_mib: float = 0.0  # server RSS at the end of the run
    rss_peak_mib: float = 0.0
    server_cpu: float = 0.0  # cores busy (1.0 = one core) during the run
    client_cpu: float = 0.0
    other_cpu: float = 0.0  # cores busy with other processes of the machine during the run (noise)


@dataclass
class TargetRun:
    scale: int
    target: str
    description: str
    preload_seconds: float = 0.0
    start_seconds: float = 0.0
    rss_idle_mib: float = 0.0
    source: str = ""  # hash of fhir_imaging/*.py when the target started (the tree may change during a run)
    error: str | None = None


@dataclass
class Options:
    scales: list[int]
    seed: int = 1
    duration: float = 10.0
    warmup: float = 2.0
    targets: tuple[str, ...] = TARGET_NAMES
    workloads: tuple[str, ...] = tuple(w.name for w in WORKLOADS)
    workers: int = 1
    study_profile: str = "realistic"  # bench/study_profiles.py
    study_bytes: dict[int, float] = field(default_factory=dict)  # mean serialised ImagingStudy per scale (measured)
    postgres: str | None = None  # a PostgreSQL server for ours-postgres (a preloaded database per scale, kept)
    postgres_replica: str | None = None  # a streaming replica of ``postgres`` for ours-postgres-replica
    cache_dir: Path = Path(tempfile.gettempdir()) / "fhir-imaging-bench"
    work_dir: Path | None = None
    peer_heap_mib: int = 16384
    slow_limit: float = 2.0  # seconds: a workload whose single request is slower is skipped
    out: Path | None = None
    log: Callable[[str], None] = print


def _hash_files(paths: list[Path]) -> str:
    digest = hashlib.blake2b(digest_size=8)
    for path in sorted(paths):
        digest.update(str(path.relative_to(REPO)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _generator(opts: Options) -> list[Path]:
    """The sources a corpus of the study profile comes from (part of every cache key)."""
    sources = [REPO / "bench" / "generate.py"]
    return sources if opts.study_profile == "realistic" else [*sources, REPO / "bench" / "study_profiles.py"]


def _profile(opts: Options, sep: str = "-") -> str:
    """The profile as it appears in cache names: nothing for ``realistic`` (the names from before profiles)."""
    return "" if opts.study_profile == "realistic" else opts.study_profile + sep


def corpus_file(opts: Options, scale: int) -> Path:
    """The corpus as NDJSON, cached by study profile, scale, seed and the generator's source."""
    key = _hash_files(_generator(opts))
    path = opts.cache_dir / f"corpus-{_profile(opts)}{scale}-{opts.seed}-{key}.ndjson"
    if not path.exists():
        opts.log(f"  generating the corpus ({scale} {opts.study_profile} studies) → {path}")
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as out:
            for resource in study_profiles.generate_corpus(scale, opts.seed, opts.study_profile):
                out.write(orjson.dumps(resource) + b"\n")
        tmp.rename(path)
    return path


def mean_study_bytes(corpus: Path) -> float:
    """The mean size of the corpus's ImagingStudy resources as stored in the NDJSON (compact JSON)."""
    total = count = 0
    with corpus.open("rb") as f:
        for line in f:
            if line.startswith(b'{"resourceType":"ImagingStudy"'):
                total += len(line) - 1  # without the newline
                count += 1
    return total / count if count else 0.0


def read_corpus(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as f:
        for line in f:
            yield orjson.loads(line)


def source_hash() -> str:
    return _hash_files(list((REPO / "fhir_imaging").rglob("*.py")))


def bulk_load(opts: Options, corpus: Path, url: str) -> float:
    """``fhir-imaging load CORPUS --database URL`` (the bulk path: validated and indexed in worker processes, written
    in large transactions); the seconds it took. Every resource must load."""
    started = time.monotonic()
    done = subprocess.run(
        [str(targets.VENV_BIN / "fhir-imaging"), "load", str(corpus), "--database", url],
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.monotonic() - started
    summary = done.stderr.strip().splitlines()[-1:] or [""]
    if done.returncode != 0:
        raise RuntimeError(f"fhir-imaging load failed ({done.returncode}): {done.stderr[-2000:]}")
    opts.log(f"  {summary[0].strip()} in {seconds:.1f} s")
    return seconds


def ours_database(opts: Options, scale: int, corpus: Path, into: Path) -> float:
    """Copy a preloaded database into ``into``; build it (``fhir-imaging load --database``) when not cached.

    The cache key covers the server's source, so a change of schema or indexing rebuilds it. Returns the seconds
    the preload took (0 when cached)."""
    key = _hash_files([*(REPO / "fhir_imaging").rglob("*.py"), *_generator(opts)])
    template = opts.cache_dir / f"ours-{_profile(opts)}{scale}-{opts.seed}-{key}.db"
    seconds = 0.0
    if not template.exists():
        opts.log(f"  preloading our database ({scale} studies) through fhir-imaging load --database")
        tmp = template.with_suffix(".tmp.db")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)
        seconds = bulk_load(opts, corpus, f"sqlite:///{tmp}")
        tmp.rename(template)
        for stale in opts.cache_dir.glob(
            f"ours-{_profile(opts)}{scale}-{opts.seed}-*.db"
        ):  # templates of older sources
            if stale != template:
                stale.unlink()
    shutil.copyfile(template, into)
    return seconds


def postgres_database(opts: Options, scale: int, corpus: Path) -> str:
    """A database on ``opts.postgres`` preloaded with the corpus (``fhir-imaging load --database``), then analysed.

    Like our SQLite template, it is kept on the server and reused, by a name that covers the scale, the seed and the
    server's source: the PostgreSQL targets of a run (and of the next runs, e.g. another ``--workers``) share it, so
    each scale is preloaded once. The writes of one target's workloads stay in it for the next (a few thousand
    studies at most, next to the scale). A preload is built under a temporary name and renamed when complete."""
    import psycopg

    assert opts.postgres
    key = _hash_files([*(REPO / "fhir_imaging").rglob("*.py"), *_generator(opts)])
    name = f"bench_{_profile(opts, '_')}{scale}_{opts.seed}_{key}"
    server = opts.postgres.rsplit("/", 1)[0]
    with psycopg.connect(opts.postgres, autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            opts.log(f"  PostgreSQL database {name} is preloaded already")
            return f"{server}/{name}"
        admin.execute(f'DROP DATABASE IF EXISTS "{name}_loading" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}_loading"')
    opts.log(f"  preloading PostgreSQL database {name} ({scale} studies) through fhir-imaging load --database")
    bulk_load(opts, corpus, f"{server}/{name}_loading")
    with psycopg.connect(f"{server}/{name}_loading", autocommit=True) as conn:
        conn.execute("ANALYZE")
    with psycopg.connect(opts.postgres, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}_loading" RENAME TO "{name}"')
    return f"{server}/{name}"


def wait_replayed(primary: str, replica: str, opts: Options, limit_s: float = 600) -> None:
    """Wait until ``replica`` has replayed everything ``primary`` holds (the preload)."""
    import psycopg

    with psycopg.connect(primary, autocommit=True) as conn:
        target = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
    opts.log("  waiting for the replica to replay the preload")
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(replica, autocommit=True, connect_timeout=2) as conn:
                row = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", target).fetchone()
                if row and row[0]:
                    return
        except psycopg.OperationalError:
            pass  # the database is not there yet
        time.sleep(0.5)
    raise RuntimeError(f"the replica did not replay the preload within {limit_s:g} s")


def build_target(name: str, opts: Options, scale: int, corpus: Path, work: Path) -> tuple[targets.Target, float]:
    """The target, preloaded with the corpus; also the preload time in seconds."""
    started = time.monotonic()
    if name in ("ours", "ours-granian", *EXPERIMENTS):
        db = work / f"{name}-{scale}.db"
        built = ours_database(opts, scale, corpus, db)
        if name in EXPERIMENTS:
            target = targets.ours_variant(name, EXPERIMENTS[name], db)
        else:
            target = targets.ours(db, opts.workers) if name == "ours" else targets.ours_granian(db, opts.workers)
        return target, built or (time.monotonic() - started)
    if name == POSTGRES_TARGET:
        if not opts.postgres:
            raise ValueError("ours-postgres needs --postgres URL")
        url = postgres_database(opts, scale, corpus)
        return targets.ours(url, opts.workers, name=POSTGRES_TARGET), time.monotonic() - started
    if name == REPLICA_TARGET:
        if not opts.postgres or not opts.postgres_replica:
            raise ValueError("ours-postgres-replica needs --postgres URL and --postgres-replica URL")
        url = postgres_database(opts, scale, corpus)
        replica = opts.postgres_replica.rsplit("/", 1)[0] + "/" + url.rsplit("/", 1)[1]
        wait_replayed(url, replica, opts)
        extra = ("--database-replica", replica)
        return targets.ours(url, opts.workers, extra, name=REPLICA_TARGET), time.monotonic() - started
    if name == "floor":
        db = work / f"floor-{scale}.db"
        floor_app.preload(str(db), read_corpus(corpus))
        return targets.floor(db), time.monotonic() - started
    if name == "peer":
        targets.install_peer()
        return targets.peer(corpus, opts.peer_heap_mib), 0.0  # preloaded by the process itself (start time)
    raise ValueError(f"unknown target {name}")


def measure(target: targets.Target, workload: Workload, requests: Path, opts: Options, scale: int) -> Measurement:
    m = Measurement(scale, target.name, workload.name)
    why = probe(target, workload, requests, opts.slow_limit)
    if why:
        m.skipped = why
        return m
    if opts.warmup > 0:
        run_wrk(target.base_url, requests, workload.connections, opts.warmup, workload.follow)
        drain(target)
    peak = [0]

    def sample() -> None:
        peak[0] = max(peak[0], target.rss())

    cpu_before, busy_before = target.cpu(), targets.machine_busy_seconds()
    result = run_wrk(target.base_url, requests, workload.connections, opts.duration, workload.follow, during=sample)
    cpu_after, busy_after = target.cpu(), targets.machine_busy_seconds()
    rss = target.rss()
    drain(target)
    m.requests, m.seconds, m.rate = result.requests, result.seconds, result.rate
    m.resources_rate = result.rate * workload.resources_per_request
    m.mib_per_s = result.bytes / result.seconds / 2**20 if result.seconds else 0.0
    m.p50_ms, m.p95_ms, m.p99_ms, m.max_ms = result.p50_ms, result.p95_ms, result.p99_ms, result.max_ms
    m.errors, m.error_detail = result.errors, result.error_detail
    m.rss_mib, m.rss_peak_mib = rss / 2**20, max(peak[0], rss) / 2**20
    m.server_cpu = (cpu_after - cpu_before) / result.seconds if result.seconds else 0.0
    m.client_cpu = result.client_cpu / result.seconds if result.seconds else 0.0
    if result.seconds:
        others = (busy_after - busy_before) - (cpu_after - cpu_before) - result.client_cpu
        m.other_cpu = max(0.0, others / result.seconds)
    return m


def drain(target: targets.Target, limit_s: float = 300) -> None:
    """Wait until the server has answered what wrk left queued (a cheap request answers quickly again)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        started = time.monotonic()
        status, _ = target.request("GET", target.ready_path, timeout=limit_s)
        if status and time.monotonic() - started < 0.5:
            return
        time.sleep(0.5)


def run(opts: Options) -> tuple[list[TargetRun], list[Measurement], Path]:
    opts.cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=opts.work_dir or opts.cache_dir))
    runs: list[TargetRun] = []
    results: list[Measurement] = []
    try:
        for scale in opts.scales:
            opts.log(f"scale {scale}")
            corpus = corpus_file(opts, scale)
            opts.study_bytes[scale] = mean_study_bytes(corpus)
            opts.log(f"  {opts.study_profile} studies: {opts.study_bytes[scale]:,.0f} bytes on average")
            request_dir = work / f"requests-{scale}"
            request_dir.mkdir()
            chosen = [BY_NAME[name] for name in opts.workloads]
            files = {
                w.name: w.write_requests(Corpus(scale, opts.seed, opts.study_profile), request_dir) for w in chosen
            }
            for name in opts.targets:
                opts.log(f"  {name}")
                target, preload_seconds = build_target(name, opts, scale, corpus, work)
                run_info = TargetRun(scale, name, target.description, preload_seconds, source=source_hash())
                runs.append(run_info)
                try:
                    target.start(work / f"{name}-{scale}.log", timeout_s=120 + scale / 200)
                    run_info.start_seconds = target.start_seconds
                    if name == "peer":
                        run_info.preload_seconds = target.start_seconds
                    run_info.rss_idle_mib = target.rss() / 2**20
                    for workload in chosen:
                        m = measure(target, workload, files[workload.name], opts, scale)
                        results.append(m)
                        opts.log(
                            f"    {workload.name:<24} "
                            + (
                                f"skipped: {m.skipped}"
                                if m.skipped
                                else f"{m.rate:9.1f} req/s  p50 {m.p50_ms:7.2f} ms  p99 {m.p99_ms:7.2f} ms  "
                                f"errors {m.errors}  rss {m.rss_mib:6.0f} MiB  cpu server {m.server_cpu:.2f} "
                                f"client {m.client_cpu:.2f} others {m.other_cpu:.2f}"
                            )
                        )
                except Exception as exc:
                    run_info.error = str(exc)[-500:]
                    opts.log(f"    failed: {run_info.error}")
                finally:
                    target.stop()
                    for db in work.glob(f"{name}-{scale}.db*"):
                        db.unlink()
    finally:
        for request_dir in work.glob("requests-*"):
            shutil.rmtree(request_dir, ignore_errors=True)
    return runs, results, work


def save_json(
    path: Path, opts: Options, command: str, machine: dict[str, Any], runs: list[TargetRun], results: list[Measurement]
) -> None:
    saved = ("scales", "seed", "duration", "warmup", "targets", "workloads", "workers", "slow_limit", "study_profile")
    options = {k: v for k, v in asdict(opts).items() if k in saved}
    options["study_bytes"] = {str(scale): size for scale, size in opts.study_bytes.items()}
    data = {
        "command": command,
        "options": options,
        "machine": machine,
        "runs": [asdict(r) for r in runs],
        "results": [asdict(m) for m in results],
    }
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))


def load_json(path: Path) -> tuple[Options, str, dict[str, Any], list[TargetRun], list[Measurement]]:
    """The inverse of ``save_json`` (for ``python -m bench report FILE.json``)."""
    data = orjson.loads(path.read_bytes())
    o = data["options"]
    opts = Options(
        scales=o["scales"],
        seed=o["seed"],
        duration=o["duration"],
        warmup=o["warmup"],
        targets=tuple(o["targets"]),
        workloads=tuple(o["workloads"]),
        workers=o["workers"],
        slow_limit=o.get("slow_limit", 2.0),
        study_profile=o.get("study_profile", "realistic"),
        study_bytes={int(scale): size for scale, size in o.get("study_bytes", {}).items()},
    )
    runs = [TargetRun(**r) for r in data["runs"]]
    results = [Measurement(**m) for m in data["results"]]
    return opts, data["command"], data["machine"], runs, results
