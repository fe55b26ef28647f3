"""``listen`` against hostile peers (fhir_imaging/dicom/dimse.py, listener.py): a PDU header stating a huge length,
a PDU trickled byte by byte, an association request that never ends. Each connection is closed in bounded time,
nothing large is read into memory, and the listener keeps answering.

Spec: DICOM PS3.8 §9.3 (PDU header: type, reserved, 4-byte length); docs/dicom.md, *listen*.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE

from fhir_imaging.config import Settings
from fhir_imaging.dicom.listen import Stop, serve
from fhir_imaging.dicom.listen_options import ListenOptions
from fhir_imaging.dicom.listener import Listener

VERIFICATION = "1.2.840.10008.1.1"


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    settings = Settings(database=f"sqlite:///{tmp_path / 'listen.db'}", sqlite_synchronous="normal")
    options = ListenOptions(port=0, timeout=2.0, max_pdu_bytes=64 * 1024)
    started: list[Listener] = []
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stop: list[Stop] = []

    def run() -> None:
        async def main() -> None:
            stop.append(Stop())
            await serve(options, settings=settings, stop=stop[0], ready=lambda lst: (started.append(lst), ready.set()))

        loop.run_until_complete(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(30)
    yield started[0]
    loop.call_soon_threadsafe(stop[0].set)
    thread.join(30)
    loop.close()


def echo(port: int) -> int:
    ae = AE("PROBE")
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", port, ae_title="FHIRIMAGING")
    assert assoc.is_established
    status = int(assoc.send_c_echo().Status)
    assoc.release()
    return status


def closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the listener closes ``sock`` (reading whatever it answers); fails past ``seconds``."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    elapsed = time.monotonic() - started
    assert elapsed < seconds
    return elapsed


def test_a_pdu_stating_a_huge_length_is_refused_before_its_body(listener: Listener) -> None:
    with socket.create_connection(("127.0.0.1", listener.port), timeout=10) as sock:
        sock.sendall(struct.pack(">BBL", 0x01, 0, 0xFFFFFFF0) + b"\x00" * 1024)  # A-ASSOCIATE-RQ of 4 GB
        closed_within(sock, 5)
    assert echo(listener.port) == 0


def test_a_trickled_pdu_is_cut_off_at_the_timeout(listener: Listener) -> None:
    with socket.create_connection(("127.0.0.1", listener.port), timeout=10) as sock:
        sock.sendall(struct.pack(">BBL", 0x01, 0, 1000))
        started = time.monotonic()
        try:
            while time.monotonic() - started < 8:
                sock.sendall(b"\x00")
                time.sleep(0.2)
        except OSError:
            pass  # closed by the listener: what this test wants
        assert time.monotonic() - started < 8
    assert echo(listener.port) == 0


def test_a_connection_that_sends_nothing_is_closed(listener: Listener) -> None:
    with socket.create_connection(("127.0.0.1", listener.port), timeout=10) as sock:
        closed_within(sock, 8)  # the ARTIM timer (--dimse-timeout) ends it
    assert echo(listener.port) == 0
