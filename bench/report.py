"""The results as Markdown: the machine, one table per workload, ratios to the floor and the peer, the targets."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from bench.run import Measurement, Options, TargetRun
from bench.targets import PEER_DIR, REPO
from bench.workloads import BY_NAME, LATENCY_SUFFIX, SEED_SEARCHES

TARGET_ORDER = (
    "ours",
    "ours-granian",
    "ours-postgres",
    "ours-postgres-replica",
    "ours-control",
    "ours-switch-interval",
    "floor",
    "peer",
)
PEER_CREATE_RATIO = {"small": 0.25, "realistic": 0.38}  # creates (c16) at least this share of the peer's


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=cwd)
        return (done.stdout or done.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def describe_machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "?"
    with contextlib.suppress(OSError):
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        memory = f"{kib / 2**20:.1f} GiB"
    peer_version = "not installed"
    with contextlib.suppress(OSError, ValueError):
        package = PEER_DIR / "node_modules" / "@medplum" / "fhir-router" / "package.json"
        peer_version = json.loads(package.read_text())["version"]
    commit = _run(["git", "rev-parse", "--short", "HEAD"], REPO)
    dirty = _run(["git", "status", "--porcelain", "--", "fhir_imaging"], REPO)
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": memory,
        "kernel": platform.release(),
        "os": _run(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "fhir-imaging": f"{_version('fhir-imaging')} (git {commit}{', fhir_imaging/ modified' if dirty else ''})",
        "uvicorn": _version("uvicorn"),
        "uvloop": _version("uvloop"),
        "httptools": _version("httptools"),
        "starlette": _version("starlette"),
        "orjson": _version("orjson"),
        "granian": _version("granian"),
        "node": _run(["node", "--version"]),
        "@medplum/fhir-router": peer_version,
        "wrk": _run(["sh", "-c", "wrk -v 2>&1 | head -1"]),
    }


def _f(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def _ratio(a: Measurement | None, b: Measurement | None) -> str:
    if a is None or b is None or a.skipped or b.skipped or not b.rate:
        return "–"
    return f"{a.rate / b.rate:.2f}"


def _rate(m: Measurement | None) -> str:
    if m is None:
        return "not run"
    return "skipped" if m.skipped else _f(m.resources_rate if m.resources_rate != m.rate else m.rate)


def render(
    opts: Options, machine: dict[str, Any], runs: list[TargetRun], results: list[Measurement], command: str, date: str
) -> str:
    by_key = {(m.scale, m.target, m.workload): m for m in results}
    order = [*TARGET_ORDER, *dict.fromkeys(m.target for m in results if m.target not in TARGET_ORDER)]
    lines = [f"# Benchmark results, {date}", ""]
    lines += [f"Command: `{command}`", ""]
    lines += [
        f"Scales (ImagingStudy resources; patients = scale / 5; plus one Encounter and one ServiceRequest per "
        f"study): {', '.join(f'{s:,}' for s in opts.scales)}. Seed {opts.seed}. Each workload: "
        f"{opts.warmup:g} s warm-up, then {opts.duration:g} s measured with wrk. "
        f"Our server: {opts.workers} worker, default settings (SQLite `synchronous=full`, request log at "
        f"`info` to a file). Floor: same uvicorn, same SQLite settings.",
        "",
        f"Study profile: `{opts.study_profile}` (`bench/study_profiles.py`; creates send studies of the same profile). "
        "Mean ImagingStudy in the corpus (compact JSON): "
        + (", ".join(f"{size:,.0f} bytes at scale {s:,}" for s, size in opts.study_bytes.items()) or "not measured")
        + ".",
        "",
    ]
    lines += ["## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in machine.items()]
    lines += [
        "",
        "## Servers",
        "",
        "| scale | target | what | preload s | start s | idle RSS MiB | fhir_imaging/ hash | error |",
        "|---:|---|---|---:|---:|---:|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r.scale:,} | {r.target} | {r.description} | {_f(r.preload_seconds)} | "
            f"{_f(r.start_seconds)} | {_f(r.rss_idle_mib, 0)} | {r.source} | {r.error or ''} |"
        )
    lines += [
        "",
        "Peer preload time is its start time (it loads the NDJSON corpus before listening). The hash is of "
        "`fhir_imaging/*.py` when the target started: other work on the tree during a run shows up there.",
        "",
    ]

    for scale in opts.scales:
        lines += [f"## Scale {scale:,}", ""]
        lines += [
            "### Summary: requests/s and ratios",
            "",
            "| workload | ours | ours-granian | floor | peer | ours / floor | ours / peer | granian / ours |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name in opts.workloads:
            ms = {t: by_key.get((scale, t, name)) for t in TARGET_ORDER}
            lines.append(
                f"| {name} | {_rate(ms['ours'])} | {_rate(ms['ours-granian'])} | {_rate(ms['floor'])} | "
                f"{_rate(ms['peer'])} | {_ratio(ms['ours'], ms['floor'])} | {_ratio(ms['ours'], ms['peer'])} | "
                f"{_ratio(ms['ours-granian'], ms['ours'])} |"
            )
        pairs = (  # (baseline, compared, header, the targets that make the table)
            ("ours", "ours-postgres", "ours (SQLite) | ours-postgres | postgres / SQLite", {"ours-postgres"}),
            (
                "ours-postgres",
                "ours-postgres-replica",
                "primary alone | primary + 1 replica | with replica / alone",
                {"ours-postgres", "ours-postgres-replica"},
            ),
        )
        for base, other, header, needed in pairs:
            if needed <= set(opts.targets):
                lines += ["", f"| workload | {header} |", "|---|---:|---:|---:|"]
                for name in opts.workloads:
                    a, b = by_key.get((scale, base, name)), by_key.get((scale, other, name))
                    lines.append(f"| {name} | {_rate(a)} | {_rate(b)} | {_ratio(b, a)} |")
        lines += ["", "Transactions are counted in resources/s (100 per request).", ""]
        for name in opts.workloads:
            workload = BY_NAME[name]
            lines += [
                f"### {name}: {workload.description}",
                "",
                "| target | req/s | p50 ms | p95 ms | p99 ms | max ms | errors | MiB/s out | server RSS MiB (peak) "
                "| server CPU | client CPU | other CPU |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            ]
            notes = []
            for t in order:
                m = by_key.get((scale, t, name))
                if m is None:
                    continue
                if m.skipped:
                    notes.append(f"- {t}: skipped — {m.skipped}")
                    continue
                errors = str(m.errors) + (
                    f" ({', '.join(f'{k} {v}' for k, v in m.error_detail.items())})" if m.errors else ""
                )
                lines.append(
                    f"| {t} | {_f(m.rate)} | {_f(m.p50_ms, 2)} | {_f(m.p95_ms, 2)} | {_f(m.p99_ms, 2)} | "
                    f"{_f(m.max_ms, 1)} | {errors} | {_f(m.mib_per_s)} | {_f(m.rss_mib, 0)} "
                    f"({_f(m.rss_peak_mib, 0)}) | {m.server_cpu:.2f} | {m.client_cpu:.2f} | {m.other_cpu:.2f} |"
                )
            lines += ["", *notes, ""] if notes else [""]
    lines += targets_section(opts, results)
    lines += saturation_section(opts, results)
    return "\n".join(lines) + "\n"


def targets_section(opts: Options, results: list[Measurement]) -> list[str]:
    by_key = {(m.scale, m.target, m.workload): m for m in results}
    scale = max(opts.scales)
    out = [
        "## Targets",
        "",
        f"At scale {scale:,} (the largest of this run).",
        "",
        "| target | measured | verdict |",
        "|---|---|---|",
    ]

    def get(t: str, w: str, s: int = scale) -> Measurement | None:
        m = by_key.get((s, t, w))
        return None if m is None or m.skipped else m

    def row(label: str, value: str, ok: bool | None) -> None:
        out.append(f"| {label} | {value} | {'–' if ok is None else ('met' if ok else 'NOT met')} |")

    c16, floor_c16 = get("ours", "create-c16"), get("floor", "create-c16")
    read, floor_read, peer_read = get("ours", "read-c16"), get("floor", "read-c16"), get("peer", "read-c16")
    row(
        "ingest ≥ 1,500 single creates/s at concurrency 16",
        f"{_f(c16.rate)} /s" if c16 else "not measured",
        c16.rate >= 1500 if c16 else None,
    )
    row(
        "read by id ≥ 5,000 req/s",
        f"{_f(read.rate)} /s" if read else "not measured",
        read.rate >= 5000 if read else None,
    )
    row(
        "read by id ≥ the peer's",
        f"{_f(read.rate)} vs {_f(peer_read.rate)} /s" if read and peer_read else "–",
        read.rate >= peer_read.rate if read and peer_read else None,
    )
    tx = get("ours", "transaction-100")
    row(
        "ingest ≥ 3,000 studies/s in transaction Bundles of 100",
        f"{_f(tx.resources_rate)} studies/s" if tx else "not measured",
        tx.resources_rate >= 3000 if tx else None,
    )
    for name, _, _ in SEED_SEARCHES:
        latency = get("ours", name + LATENCY_SUFFIX)
        row(
            f"{name}: p95 ≤ 20 ms (one connection)",
            f"{_f(latency.p95_ms)} ms" if latency else "not measured",
            latency.p95_ms <= 20 if latency else None,
        )
        ours_m, peer_raw = get("ours", name), by_key.get((scale, "peer", name))
        if ours_m is None or peer_raw is None:
            row(f"{name}: throughput ≥ the peer's (16 connections)", "–", None)
        elif peer_raw.skipped:
            slow = "not run under load" in peer_raw.skipped  # slower than --slow-limit on its own
            row(
                f"{name}: throughput ≥ the peer's (16 connections)",
                f"{_f(ours_m.rate)} /s; peer {peer_raw.skipped}",
                True if slow else None,
            )
        else:
            row(
                f"{name}: throughput ≥ the peer's (16 connections)",
                f"{_f(ours_m.rate)} vs {_f(peer_raw.rate)} /s",
                ours_m.rate >= peer_raw.rate,
            )
    peer_c16 = get("peer", "create-c16")
    need = PEER_CREATE_RATIO.get(opts.study_profile)
    if need is not None:
        row(
            f"create (c16) ≥ {need:.2f}× the peer's ({opts.study_profile} studies)",
            f"{_f(c16.rate)} vs {_f(peer_c16.rate)} /s ({c16.rate / peer_c16.rate:.2f}×)" if c16 and peer_c16 else "–",
            c16.rate >= need * peer_c16.rate if c16 and peer_c16 else None,
        )
    for label, ours_m, floor_m in (("create (c16)", c16, floor_c16), ("read", read, floor_read)):
        ratio = ours_m.rate / floor_m.rate if ours_m and floor_m else None
        row(
            f"{label} ≥ 50 % of the floor",
            f"{ratio:.0%}" if ratio is not None else "–",
            ratio >= 0.5 if ratio is not None else None,
        )
    if len(opts.scales) > 1:
        low, high = min(opts.scales), max(opts.scales)
        a, b = get("ours", "read-c16", low), get("ours", "read-c16", high)
        if a and b:
            change = b.rss_mib / a.rss_mib - 1
            row(
                f"server RSS flat (± 20 %) between scales {low:,} and {high:,} (after read-c16)",
                f"{_f(a.rss_mib, 0)} → {_f(b.rss_mib, 0)} MiB ({change:+.0%})",
                abs(change) <= 0.2,
            )
    else:
        out.append(
            "| server RSS flat (± 20 %) between scales | one scale in this run: compare with another results "
            "file, or pass `--scale` twice | – |"
        )
    return [*out, ""]


def saturation_section(opts: Options, results: list[Measurement]) -> list[str]:
    measured = [m for m in results if not m.skipped]
    if not measured:
        return []
    top = max(measured, key=lambda m: m.rate)
    busiest_client = max(measured, key=lambda m: m.client_cpu)
    ours = [m for m in measured if m.target == "ours"]
    out = [
        "## Is the load generator the bottleneck?",
        "",
        f"- Highest rate in this run: {_f(top.rate)} req/s ({top.target}, {top.workload}, scale {top.scale:,}); "
        "wrk drove every other workload at a lower rate with the same script, so it was not what limited them.",
        f"- Busiest client: wrk used {busiest_client.client_cpu:.2f} of a core ({busiest_client.target}, "
        f"{busiest_client.workload}) with 2 threads at most (one per connection when following links) on "
        f"{os.cpu_count()} cores.",
    ]
    if ours:
        cpu = sorted(m.server_cpu for m in ours)
        client = sorted(m.client_cpu for m in ours)
        out.append(
            f"- Against our server: server CPU {cpu[0]:.2f}–{cpu[-1]:.2f} cores, wrk {client[0]:.2f}–"
            f"{client[-1]:.2f} cores (1.00 = one core busy for the whole run). A single-worker Python server "
            "is saturated near 1.0 (more with SQLite threads that release the GIL)."
        )
    return [*out, ""]
