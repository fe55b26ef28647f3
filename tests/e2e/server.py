"""Start the real ``fhir-imaging serve`` process on a free port, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Terminate a process, kill it if it does not stop within ``timeout`` seconds, and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_answers(process: subprocess.Popen[bytes], url: str, name: str, timeout: float = 20.0) -> None:
    """Poll ``url`` until it answers 200; RuntimeError when the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not answer {url} in time")


class ServerProcess:
    """``fhir-imaging serve`` on ``port``; ``environ``: variables the process gets besides ours (whose
    ``FHIR_IMAGING_*`` are left out), e.g. a secret that must not be on its command line."""

    def __init__(
        self,
        database: str,
        port: int | None = None,
        extra: tuple[str, ...] = (),
        log: Path | None = None,
        environ: Mapping[str, str] | None = None,
    ):
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}/baseR4"
        command = [sys.executable, "-m", "fhir_imaging", "serve", "--port", str(self.port), "--database", database]
        self.log_path = log
        output = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed in stop()
        self._output = output
        env = {key: value for key, value in os.environ.items() if not key.startswith("FHIR_IMAGING_")}
        env.update(environ or {})
        self.process = subprocess.Popen([*command, *extra], stdout=output, stderr=output, env=env)
        try:
            self._wait_ready()
        except RuntimeError:
            self.stop()
            raise

    def _wait_ready(self, timeout: float = 20.0) -> None:
        wait_until_answers(self.process, f"{self.base}/metadata", "server", timeout)

    def kill(self) -> None:
        """``kill -9``: no shutdown, no flush."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self._close_output()

    def stop(self) -> None:
        stop_process(self.process)
        self._close_output()

    def _close_output(self) -> None:
        if self._output is not subprocess.DEVNULL:
            self._output.close()  # type: ignore[union-attr]


@contextmanager
def running_server(database: str, extra: tuple[str, ...] = (), log: Path | None = None) -> Iterator[ServerProcess]:
    server = ServerProcess(database, extra=extra, log=log)
    try:
        yield server
    finally:
        server.stop()
