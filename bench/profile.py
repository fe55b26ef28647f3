"""``python -m bench profile``: where our server spends its time under a workload, sampled with py-spy.

Starts our server on the preloaded corpus (as ``python -m bench run`` does), and for each workload runs wrk while
``py-spy record --nonblocking`` samples the server (and its workers), then prints and saves the hottest functions by
self time and by inclusive time, and self time per package. Files: ``bench/results/profile-<date>-<workload>.txt``
(summary) and ``….collapsed`` (flame-graph input: ``flamegraph.pl`` or https://www.speedscope.app).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import threading
from collections import Counter
from collections.abc import Callable
from datetime import date
from pathlib import Path

from bench import targets
from bench.loadgen import LoadResult, run_wrk
from bench.run import Options, corpus_file, drain, ours_database
from bench.workloads import BY_NAME, Corpus, Workload, probe

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::\d+)?\)$")


def _short(path: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def _frame(text: str) -> tuple[str, str]:
    match = FRAME.match(text.strip())
    if not match:
        return text.strip(), ""
    return match["func"], _short(match["file"])


def _package(file: str) -> str:
    parts = file.replace(".py", "").split("/")
    if parts[0] == "fhir_imaging":
        return ".".join(parts[:2])
    return parts[0] or "?"


def summarize(collapsed: Path, top: int) -> str:
    self_time: Counter[tuple[str, str]] = Counter()
    inclusive: Counter[tuple[str, str]] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        self_time[frames[-1]] += count
        packages[_package(frames[-1][1])] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return "no samples\n"

    def table(counter: Counter[tuple[str, str]], title: str) -> list[str]:
        rows = [f"{title}", f"{'%':>6}  {'samples':>8}  function (file)"]
        rows += [f"{100 * n / total:6.1f}  {n:8d}  {func} ({file})" for (func, file), n in counter.most_common(top)]
        return [*rows, ""]

    out = [f"{total} samples (busy threads only)", ""]
    out += table(self_time, "Self time (the function itself, C calls it makes included):")
    out += table(inclusive, "Inclusive time (the function and everything it calls):")
    out += ["Self time by package:"]
    out += [f"{100 * n / total:6.1f}  {name}" for name, n in packages.most_common(top)]
    return "\n".join(out) + "\n"


def profile(args: argparse.Namespace, log: Callable[[str], None]) -> int:
    opts = Options(scales=[args.scale], seed=args.seed, log=log)
    if args.cache_dir:
        opts.cache_dir = args.cache_dir
    opts.cache_dir.mkdir(parents=True, exist_ok=True)
    py_spy = targets.VENV_BIN / "py-spy"
    if not py_spy.exists():
        log("py-spy is not installed: .venv/bin/pip install py-spy")
        return 2
    out_dir = targets.REPO / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="profile-", dir=opts.cache_dir))
    corpus = corpus_file(opts, args.scale)
    db = work / "ours.db"
    ours_database(opts, args.scale, corpus, db)
    target = targets.ours(db) if args.server == "uvicorn" else targets.ours_granian(db)
    target.start(work / "server.log", timeout_s=120)
    try:
        for name in args.workloads:
            workload = BY_NAME[name]
            requests = workload.write_requests(Corpus(args.scale, args.seed), work)
            why = probe(target, workload, requests, slow_limit=30)
            if why:
                log(f"{name}: skipped — {why}")
                continue
            run_wrk(target.base_url, requests, workload.connections, 2, workload.follow)  # warm-up
            drain(target)
            stem = out_dir / f"profile-{date.today().isoformat()}-{args.server}-{name}"
            assert target.proc is not None  # started above
            collapsed = stem.with_suffix(".collapsed")
            cmd = [
                str(py_spy),
                "record",
                "--pid",
                str(target.proc.pid),
                "--subprocesses",
                "--nonblocking",
                "--rate",
                "250",
                "--duration",
                str(int(args.duration)),
                "--format",
                "raw",
                "--output",
                str(collapsed),
            ]
            spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            result: list[LoadResult] = []

            def load_run(
                requests: Path = requests, workload: Workload = workload, result: list[LoadResult] = result
            ) -> None:
                result.append(
                    run_wrk(target.base_url, requests, workload.connections, args.duration + 1, workload.follow)
                )

            load = threading.Thread(target=load_run)
            load.start()
            _, err = spy.communicate(timeout=args.duration + 120)
            load.join(timeout=args.duration + 120)
            drain(target)
            if spy.returncode != 0 or not collapsed.exists():
                log(f"{name}: py-spy failed: {err.decode(errors='replace')[-500:]}")
                continue
            rate = result[0].rate if result else 0.0
            text = (
                f"# py-spy profile of `{' '.join(target.command[:2])}` ({args.server}) under {name} "
                f"({workload.description}), scale {args.scale:,}, {args.duration:g} s at {rate:,.0f} req/s "
                f"while sampled at 250 Hz\n\n"
            ) + summarize(collapsed, args.top)
            stem.with_suffix(".txt").write_text(text)
            log(text)
    finally:
        target.stop()
        for path in work.iterdir():
            path.unlink()
        work.rmdir()
    return 0
