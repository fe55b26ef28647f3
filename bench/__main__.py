"""``python -m bench``: run the benchmarks, generate a corpus, or profile our server. See bench/README.md."""

from __future__ import annotations

import argparse
import shlex
import shutil
import signal
import sys
import time
from datetime import date
from pathlib import Path

from bench import generate
from bench.run import EXPERIMENTS, POSTGRES_TARGET, REPLICA_TARGET, TARGET_NAMES, Options, run, save_json
from bench.study_profiles import PROFILES
from bench.targets import REPO
from bench.workloads import WORKLOADS


def _names(text: str, known: tuple[str, ...], what: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    workload_names = tuple(w.name for w in WORKLOADS)

    r = commands.add_parser("run", help="measure every target on every workload and write bench/results/")
    r.add_argument("--scale", type=int, action="append", help="ImagingStudy count; repeat for several (default 10000)")
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--duration", type=float, default=10.0, help="measured seconds per workload (default 10)")
    r.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per workload (default 2)")
    known = (*TARGET_NAMES, POSTGRES_TARGET, REPLICA_TARGET, *EXPERIMENTS)
    r.add_argument(
        "--targets",
        type=lambda t: _names(t, known, "target"),
        default=TARGET_NAMES,
        help=f"comma-separated subset of {','.join(known)} (ours-postgres needs --postgres, ours-postgres-replica "
        "also --postgres-replica; the last ones are what-if variants)",
    )
    r.add_argument(
        "--workloads",
        type=lambda t: _names(t, workload_names, "workload"),
        default=workload_names,
        help="comma-separated subset of " + ",".join(workload_names),
    )
    r.add_argument("--workers", type=int, default=1, help="server processes of ours and ours-granian (default 1)")
    r.add_argument(
        "--study-profile",
        choices=PROFILES,
        default="realistic",
        help="ImagingStudy resources of the corpus and of the creates: realistic (~20 kB, default) or small "
        "(~1.5 kB, one series of 1–2 instances); see bench/study_profiles.py",
    )
    r.add_argument(
        "--postgres",
        help="a PostgreSQL server URL for ours-postgres (a database preloaded per scale and source, kept for reuse)",
    )
    r.add_argument(
        "--postgres-replica",
        help="a streaming replica of --postgres (its URL, any database name) for ours-postgres-replica",
    )
    r.add_argument("--cache-dir", type=Path, help="corpus and preloaded databases (default /tmp/fhir-imaging-bench)")
    r.add_argument("--peer-heap-mib", type=int, default=16384, help="Node heap limit of the peer (default 16384)")
    r.add_argument(
        "--slow-limit",
        type=float,
        default=2.0,
        help="skip a workload whose single request takes longer than this many seconds (default 2)",
    )
    r.add_argument("--out", type=Path, help="results file (default bench/results/<date>-<scales>.md)")

    g = commands.add_parser("generate", help="write a corpus as NDJSON (same as python -m bench.generate)")
    g.add_argument("--scale", type=int, default=1000)
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--out", default="-")

    rp = commands.add_parser("report", help="re-render a results .md from its .json")
    rp.add_argument("json", type=Path)

    p = commands.add_parser("profile", help="sample our server with py-spy during workloads")
    p.add_argument("--scale", type=int, default=10000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--duration", type=float, default=15.0)
    p.add_argument(
        "--workloads", type=lambda t: _names(t, workload_names, "workload"), default=("create-c16", "read-c16")
    )
    p.add_argument("--server", choices=("uvicorn", "granian"), default="uvicorn")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--cache-dir", type=Path)
    return parser


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so that the servers started so far are stopped (finally blocks run)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    args = build_parser().parse_args(argv)
    if args.command == "generate":
        return generate.main(["--scale", str(args.scale), "--seed", str(args.seed), "--out", args.out])
    if args.command == "report":
        from bench.report import render
        from bench.run import load_json

        opts, command, machine, runs, results = load_json(args.json)
        today = args.json.stem[:10]
        args.json.with_suffix(".md").write_text(render(opts, machine, runs, results, command, today))
        return 0
    if shutil.which("wrk") is None:
        log("wrk is not installed: apt-get install wrk (Debian) — see bench/README.md")
        return 2
    if args.command == "profile":
        from bench.profile import profile

        return profile(args, log)
    opts = Options(
        scales=args.scale or [10000],
        seed=args.seed,
        duration=args.duration,
        warmup=args.warmup,
        targets=args.targets,
        workloads=args.workloads,
        workers=args.workers,
        study_profile=args.study_profile,
        postgres=args.postgres,
        postgres_replica=args.postgres_replica,
        peer_heap_mib=args.peer_heap_mib,
        slow_limit=args.slow_limit,
        log=log,
    )
    if args.cache_dir:
        opts.cache_dir = args.cache_dir
    from bench.report import describe_machine, render

    machine = describe_machine()
    started = time.monotonic()
    runs, results, work = run(opts)
    today = date.today().isoformat()
    out = args.out or REPO / "bench" / "results" / f"{today}-{'-'.join(str(s) for s in opts.scales)}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "python -m bench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    out.write_text(render(opts, machine, runs, results, command, today))
    save_json(out.with_suffix(".json"), opts, command, machine, runs, results)
    log(f"done in {time.monotonic() - started:.0f} s: {out} (server logs in {work})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
