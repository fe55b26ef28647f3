"""Read and search throughput with authorization on and off, in one run: ``python -m bench.auth [--rounds 3]``.

Starts a loopback OpenID issuer (tests/auth/issuer.py: discovery and JWKS over HTTP, RS256 tokens), then for each
round one server with ``--auth-issuer`` and one without (alternating which goes first), each on the same SQLite
database of 200 studies, and runs wrk (16 connections, 10 s) on a read and a search. Prints requests/s per run and
the on / off ratios. Needs ``wrk`` on the PATH. Not a test: see bench/README.md.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.auth.issuer import running_issuer
from tests.e2e.server import free_port, stop_process

AUDIENCE = "http://bench/baseR4"


def _serve(database: str, extra: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, "-m", "fhir_imaging", "serve", "--port", str(port), "--database", database,
               "--log-level", "warning", *extra]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/baseR4"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/metadata", timeout=1).status_code == 200:
                return process, base
        except httpx.TransportError:
            time.sleep(0.05)
    stop_process(process)
    raise RuntimeError("the server did not start")


def _wrk(url: str, token: str | None, seconds: int) -> float:
    command = ["wrk", "-t2", "-c16", f"-d{seconds}s", url]
    if token:
        command[1:1] = ["-H", f"Authorization: Bearer {token}"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in output:
        raise RuntimeError(f"errors in the answers to {url}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", output)
    assert found is not None, output
    return float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.auth", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    database = f"sqlite:///{Path(tempfile.mkdtemp()) / 'auth-bench.db'}"
    totals: dict[str, list[float]] = {"on": [0.0, 0.0], "off": [0.0, 0.0]}
    with running_issuer() as issuer:
        token = issuer.token("system/*.cruds", audience=AUDIENCE, lifetime=3600)
        for number in range(args.rounds):
            for mode in ("on", "off") if number % 2 == 0 else ("off", "on"):
                extra = ["--auth-issuer", issuer.url, "--auth-audience", AUDIENCE] if mode == "on" else []
                process, base = _serve(database, extra)
                try:
                    headers = {"Authorization": f"Bearer {token}"}
                    for index in range(200):
                        study = {"resourceType": "ImagingStudy", "id": f"s{index}", "status": "available",
                                 "subject": {"reference": f"Patient/p{index % 20}"}}  # fmt: skip
                        httpx.put(f"{base}/ImagingStudy/s{index}", json=study, headers=headers).raise_for_status()
                    bearer = token if mode == "on" else None
                    read = _wrk(f"{base}/ImagingStudy/s7", bearer, args.seconds)
                    search = _wrk(f"{base}/ImagingStudy?subject=Patient/p3", bearer, args.seconds)
                finally:
                    stop_process(process)
                totals[mode][0] += read
                totals[mode][1] += search
                print(f"round {number} auth {mode}: read {read:,.0f} req/s, search {search:,.0f} req/s", flush=True)
    for index, name in enumerate(("read", "search")):
        print(f"{name}: auth on / off = {totals['on'][index] / totals['off'][index]:.3f}")


if __name__ == "__main__":
    main()
