"""The servers the benchmark measures, each a separate process on 127.0.0.1 and a free port:

- ``ours``: ``fhir-imaging serve --port P --database sqlite:///… [--workers N]`` (uvicorn, as shipped)
- ``ours-granian``: the same app under ``granian --interface asgi`` (the alternative HTTP server; see DESIGN §7)
- ``floor``: ``bench/floor.py`` on uvicorn: the least work for the same requests
- ``peer``: ``@medplum/fhir-router`` 5.2.13 + its in-memory repository behind node:http (``bench/peer/``)

Memory is the sum of ``VmRSS`` over the server process and its descendants (uvicorn/granian workers), from
``/proc``; CPU is their ``utime + stime``.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
PEER_DIR = REPO / "bench" / "peer"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def process_tree(pid: int) -> list[int]:
    tree, todo = _children(), [pid]
    out: list[int] = []
    while todo and len(out) < 1000:
        current = todo.pop()
        out.append(current)
        todo.extend(tree.get(current, []))
    return out


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds spent by every process of the machine (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


@dataclass
class Target:
    name: str
    description: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = REPO
    ready_path: str = "/baseR4/metadata"
    port: int = 0
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    start_seconds: float = 0.0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log_path: Path, timeout_s: float) -> None:
        self.log_path = log_path
        env = {**os.environ, **self.env}
        started = time.monotonic()
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.command, cwd=self.cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}): {log_path.read_text()[-2000:]}")
            if self.get(self.ready_path)[0] > 0:
                self.start_seconds = time.monotonic() - started
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer within {timeout_s:.0f} s: {log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)  # the session we started: the server and its workers
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def pids(self) -> list[int]:
        return process_tree(self.proc.pid) if self.proc else []

    def rss(self) -> int:
        return rss_bytes(self.pids())

    def cpu(self) -> float:
        return cpu_seconds(self.pids())

    def get(self, path: str) -> tuple[int, bytes]:
        return self.request("GET", path)

    def request(self, method: str, path: str, body: bytes | None = None, timeout: float = 30) -> tuple[int, bytes]:
        """One request; status 0 when nothing answers."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        except OSError:
            return 0, b""
        finally:
            conn.close()


def ours(database: Path | str, workers: int = 1, extra: tuple[str, ...] = (), name: str = "ours") -> Target:
    """``fhir-imaging serve`` on a SQLite file (a Path) or on a database URL (PostgreSQL)."""
    port = free_port()
    url = database if isinstance(database, str) else f"sqlite:///{database}"
    command = [
        str(VENV_BIN / "fhir-imaging"),
        "serve",
        "--port",
        str(port),
        "--database",
        url,
        "--workers",
        str(workers),
        *extra,
    ]
    backend = "PostgreSQL" if url.startswith("postgres") else "SQLite"
    return Target(name, f"fhir-imaging serve (uvicorn, {workers} worker, {backend})", command, port=port)


def ours_granian(database: Path, workers: int = 1) -> Target:
    port = free_port()
    command = [
        str(VENV_BIN / "granian"),
        "--interface",
        "asgi",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
        "fhir_imaging.app:app_from_environment",
    ]
    env = {"FHIR_IMAGING_DATABASE": f"sqlite:///{database}"}
    return Target(
        "ours-granian", f"fhir_imaging app under granian --interface asgi ({workers} worker)", command, env, port=port
    )


def _uvicorn_factory(factory: str, port: int) -> list[str]:
    """``python -m uvicorn --factory FACTORY`` on 127.0.0.1:PORT, quiet."""
    return [
        str(VENV_BIN / "python"), "-m", "uvicorn", "--factory", factory,
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip


def ours_variant(name: str, factory: str, database: Path) -> Target:
    """A what-if variant of our app (bench/experiments.py) on uvicorn, like ``fhir-imaging serve``."""
    port = free_port()
    command = _uvicorn_factory(factory, port)
    env = {"FHIR_IMAGING_DATABASE": f"sqlite:///{database}"}
    return Target(name, f"what-if: {factory} on uvicorn (1 worker)", command, env, port=port)


def floor(database: Path, synchronous: str = "full") -> Target:
    port = free_port()
    command = _uvicorn_factory("bench.floor:create_app", port)
    env = {"FLOOR_DATABASE": str(database), "FLOOR_SYNCHRONOUS": synchronous}
    return Target("floor", "raw ASGI app on uvicorn: parse, insert, return; read a row by key", command, env, port=port)


def peer(preload: Path | None, heap_mib: int) -> Target:
    port = free_port()
    command = [
        "node",
        "--experimental-websocket",
        f"--max-old-space-size={heap_mib}",
        "server.mjs",
        "--port",
        str(port),
    ]
    if preload:
        command += ["--preload", str(preload)]
    return Target(
        "peer",
        "@medplum/fhir-router 5.2.13, MemoryRepository, node:http",
        command,
        cwd=PEER_DIR,
        ready_path="/baseR4/Patient/none",
        port=port,
    )


def install_peer() -> None:
    """``npm install`` into bench/peer (node_modules is git-ignored); a no-op when it is already there."""
    if (PEER_DIR / "node_modules" / "@medplum" / "fhir-router").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed: the peer server needs Node 20 and npm")
    subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=PEER_DIR, check=True, timeout=600)
