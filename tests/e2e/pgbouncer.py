"""A throwaway PgBouncer (Debian's ``pgbouncer``, installed by scripts/test) in transaction mode in front of the
test PostgreSQL, for end-to-end tests: started on a free loopback port from a config in a temporary folder, as an
unprivileged user when we are root (PgBouncer refuses to run as root; its ``-u``), and stopped by its process id."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tests.e2e.server import free_port, stop_process

BINARY = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
USER = "postgres"


def available() -> bool:
    return os.path.exists(BINARY)


@contextmanager
def running_pgbouncer(database_url: str, pool_size: int = 2) -> Iterator[str]:
    """PgBouncer in transaction mode in front of ``database_url``'s server, at most ``pool_size`` server connections
    per database (fewer than the clients', so they share them); yields the same URL through PgBouncer."""
    target = urlsplit(database_url)
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="fhir-imaging-pgbouncer."))
    user = target.username or "fhir"
    (folder / "users.txt").write_text(f'"{user}" ""\n')
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={target.hostname} port={target.port}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder / 'users.txt'}\n"
        f"pool_mode = transaction\ndefault_pool_size = {pool_size}\nmax_client_conn = 200\n"
        f"logfile = {folder / 'pgbouncer.log'}\n"
    )
    switch: list[str] = []
    if os.geteuid() == 0:  # PgBouncer's -u: start as root, then run as USER
        shutil.chown(folder, USER)
        for item in folder.iterdir():
            shutil.chown(item, USER)
        switch = ["-u", USER]
    process = subprocess.Popen(
        [BINARY, *switch, str(folder / "pgbouncer.ini")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_listening(process, port, folder)
        yield urlunsplit(target._replace(netloc=f"{target.netloc.rsplit('@', 1)[0]}@127.0.0.1:{port}"))
    finally:
        stop_process(process)
        shutil.rmtree(folder, ignore_errors=True)


def _wait_listening(process: subprocess.Popen[bytes], port: int, folder: Path, timeout: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = folder / "pgbouncer.log"
            raise RuntimeError(f"pgbouncer exited: {log.read_text() if log.exists() else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("pgbouncer did not listen in time")
