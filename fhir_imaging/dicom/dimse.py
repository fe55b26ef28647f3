"""What ``sync-dimse`` (C-FIND SCU) and ``listen`` (C-STORE SCP) share over pynetdicom: AE titles checked, and a
socket that bounds what a peer can make us hold.

Spec: DICOM PS3.8 §9.3 (PDU structure: a 6-byte header whose 4-byte length the peer chooses), §9.3.1 and Annex D.1
(Maximum Length sub-item: the largest P-DATA-TF PDU a peer may send us), PS3.5 §6.2 (AE: 1 to 16 characters of the
default repertoire, no backslash or control characters, not only spaces).

pynetdicom reads each PDU whole into memory, for whatever length its header states, with a blocking read that never
times out on an accepted connection. ``BoundedSocket`` refuses a PDU longer than ``max_pdu_bytes`` (the Maximum
Length we announce, or 256 KiB for association PDUs, whichever is larger) before reading its body, and gives one
PDU ``pdu_timeout`` seconds to arrive: a peer that trickles bytes is cut off. Either fault closes the connection
(pynetdicom's event 17), which ends the association; the server keeps running.

It also sets ``TCP_NODELAY`` and acknowledges each read at once (``TCP_QUICKACK``): pynetdicom, and other DICOM
stacks, write a message's command and dataset as two PDUs, and with Nagle's algorithm and delayed ACKs each message
would wait about 40 ms (bench/README.md, *The DIMSE bridge*).
"""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Any

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.transport import AddressInformation, AssociationSocket

MIN_ASSOCIATION_PDU_BYTES = 256 * 1024  # A-ASSOCIATE PDUs are not bound by Maximum Length; this fits 128 contexts
READ_CHUNK = 64 * 1024
AE_TITLE_LENGTH = 16
QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


def check_ae_title(title: str, option: str) -> str:
    """``title`` when it is a valid AE title (PS3.5: 1–16 characters, printable ASCII without backslash, not only
    spaces); ``ValueError`` naming ``option`` otherwise."""
    stripped = title.strip(" ")
    if not stripped or len(title) > AE_TITLE_LENGTH:
        raise ValueError(f"{option} must be 1 to 16 characters, not {len(title)}")
    if not all(" " <= char <= "~" and char != "\\" for char in title):
        raise ValueError(f"{option} may hold printable ASCII characters only, no backslash")
    return stripped


class BoundedSocket(AssociationSocket):
    """An ``AssociationSocket`` whose reads are bounded in size and time (see the module doc)."""

    max_pdu_bytes = MIN_ASSOCIATION_PDU_BYTES
    pdu_timeout = 60.0

    def bound(self, max_pdu_bytes: int, pdu_timeout: float) -> BoundedSocket:
        """Set the bounds, and TCP_NODELAY: pynetdicom writes a message's command and dataset as separate PDUs, and
        with Nagle's algorithm the second waits for the peer's delayed ACK of the first (about 40 ms a message)."""
        self.max_pdu_bytes = max(max_pdu_bytes, MIN_ASSOCIATION_PDU_BYTES) + 6
        self.pdu_timeout = pdu_timeout
        if self.socket is not None:
            with contextlib.suppress(OSError):
                self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self

    def _shutdown_socket(self) -> None:
        """Shut down and close, also a socket that never connected (pynetdicom's skips the close when the shutdown
        fails, which leaks the socket of a refused connection)."""
        sock = self.socket
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()

    def recv(self, nr_bytes: int) -> bytearray:
        """``nr_bytes`` from the peer (fewer when it closes); ``OSError`` when more than ``max_pdu_bytes`` are
        asked for, ``TimeoutError`` when they do not arrive within ``pdu_timeout``. pynetdicom asks for 6 bytes
        (the PDU header), then for the length the header states."""
        if nr_bytes > self.max_pdu_bytes:
            raise OSError(f"the peer sent a PDU of {nr_bytes} bytes, more than {self.max_pdu_bytes}")
        sock = self.socket
        if sock is None:
            raise OSError("the connection is closed")
        deadline = time.monotonic() + self.pdu_timeout
        data = bytearray()
        while len(data) < nr_bytes:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"a PDU did not arrive within {self.pdu_timeout:g} s")
            sock.settimeout(remaining)
            chunk = sock.recv(min(READ_CHUNK, nr_bytes - len(data)))
            if not chunk:
                break
            data.extend(chunk)
        if QUICKACK is not None:  # Linux: acknowledge now, so a sender held by Nagle's algorithm goes on at once
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
        return data


class BoundedAE(AE):
    """A pynetdicom AE whose association requests use a ``BoundedSocket``; ``max_pdu_bytes`` is also the Maximum
    Length it announces."""

    def __init__(self, ae_title: str, max_pdu_bytes: int, timeout: float) -> None:
        super().__init__(ae_title)
        self.maximum_pdu_size = max_pdu_bytes
        self.acse_timeout = timeout
        self.dimse_timeout = timeout
        self.network_timeout = timeout
        self.connection_timeout = timeout
        self._pdu_timeout = timeout

    def _create_socket(
        self, assoc: Association, address: AddressInformation, tls_args: tuple[Any, str] | None
    ) -> AssociationSocket:
        sock = BoundedSocket(assoc, address=address).bound(self.maximum_pdu_size, self._pdu_timeout)
        sock.tls_args = tls_args
        return sock


def bounded_socket(assoc: Association, client: socket.socket, max_pdu_bytes: int, timeout: float) -> BoundedSocket:
    """The ``BoundedSocket`` of an accepted connection."""
    return BoundedSocket(assoc, client_socket=client).bound(max_pdu_bytes, timeout)
