"""The C-STORE SCP of ``fhir-imaging listen``: a pynetdicom AE accepting every storage SOP class (any transfer
syntax: only headers are read) and C-ECHO, run in pynetdicom's threads. Each received instance is written by
pynetdicom to a temporary file as it arrives (``STORE_RECV_CHUNKED_DATASET``), its header read from there
(``stop_before_pixels``), its file moved to ``--store-dir`` or deleted, and its record handed to the
``StudyCollector``; the writer (``listen.py``) writes studies as they become due.

Spec: DICOM PS3.4 Annex B (Storage service class, C-STORE statuses: 0000 success, A700 out of resources, C000
cannot understand), Annex A (Verification), PS3.7 §9.1.1 (C-STORE), PS3.8 §7.1 (association rejection: calling AE
title not recognised), PS3.10 §7.1 (the Part 10 file a stored instance is kept as).

Nothing a peer sends is trusted: an unknown calling AE title is rejected when ``allow_aets`` is given; a PDU is
bounded in size and time (``dimse.py``); one dataset is bounded by ``max_dataset_bytes`` (counted as its P-DATA
arrives, the association aborted when it passes; the partial file is removed); a stream that is not DICOM ends its
association in pynetdicom's state machine; an instance without the UIDs or modality a study needs is refused with
C000. Files in ``--store-dir`` are named by UIDs checked to be digits and dots, so no peer picks a path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socketserver
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, evt
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from fhir_imaging.dicom.collector import StudyCollector
from fhir_imaging.dicom.dimse import BoundedSocket
from fhir_imaging.dicom.header import read_file_header
from fhir_imaging.dicom.mapping import MappingError, MappingOptions, from_dicom_dataset
from fhir_imaging.dicom.qido import is_uid

LOG = logging.getLogger("fhir_imaging.listen")
VERIFICATION = "1.2.840.10008.1.1"
SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000
P_DATA_TF = 0x04
ORPHAN_DELAY = 1.0


@dataclass(frozen=True, slots=True)
class ListenOptions:
    """Every setting and bound of ``listen`` (docs/dicom.md, *listen*); each is a command option."""

    aet: str = "FHIRIMAGING"
    host: str = "127.0.0.1"
    port: int = 11112
    allow_aets: tuple[str, ...] = ()  # --allow-aet: empty = any calling AE title
    store_dir: Path | None = None  # --store-dir: keep the files there; else they are dropped
    quiet_period: float = 30.0  # --quiet-period
    timeout: float = 60.0  # --dimse-timeout: negotiation, each message, idle association, one PDU
    max_pdu_bytes: int = 256 * 1024  # --max-pdu-size
    max_dataset_bytes: int = 1024 * 1024 * 1024  # --max-dataset-mb
    max_associations: int = 10  # --max-associations
    max_held: int = 100_000  # --max-held-instances
    retry_for: float = 600.0  # --retry-for: seconds a study is tried again while the FHIR server is down or busy

    def __post_init__(self) -> None:
        from fhir_imaging.dicom.limits import MAX_TIMEOUT, check_pdu_size

        if not 0 < self.timeout <= MAX_TIMEOUT:
            raise ValueError(f"--dimse-timeout must be above 0 and at most {MAX_TIMEOUT} seconds, not {self.timeout}")
        if not 0 <= self.quiet_period <= MAX_TIMEOUT:
            raise ValueError(f"--quiet-period must be 0 to {MAX_TIMEOUT} seconds, not {self.quiet_period}")
        if not 0 <= self.retry_for <= MAX_TIMEOUT:
            raise ValueError(f"--retry-for must be 0 to {MAX_TIMEOUT} seconds, not {self.retry_for}")
        if not 0 <= self.port < 65536:
            raise ValueError(f"--port must be 0 to 65535, not {self.port}")
        check_pdu_size(self.max_pdu_bytes)
        for name, value in (
            ("--max-dataset-mb", self.max_dataset_bytes),
            ("--max-associations", self.max_associations),
            ("--max-held-instances", self.max_held),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")


def _request_handler(max_pdu_bytes: int, timeout: float) -> type[RequestHandler]:
    """pynetdicom's connection handler, its association socket made a ``BoundedSocket``."""

    class BoundedRequestHandler(RequestHandler):
        def _create_association(self) -> Any:
            assoc = super()._create_association()
            sock = assoc.dul.socket
            if sock is not None:  # the socket pynetdicom made for this connection, bounded in place
                sock.__class__ = BoundedSocket
                assert isinstance(sock, BoundedSocket)
                sock.bound(max_pdu_bytes, timeout)
            return assoc

    return BoundedRequestHandler


def stored_path(store_dir: Path, study: str, series: str, sop: str) -> Path:
    """Where an instance is kept: ``DIR/study/series/sop.dcm``; ``ValueError`` unless each is a UID (digits and
    dots), so that no name from the network picks a path."""
    if not (is_uid(study) and is_uid(series) and is_uid(sop)):
        raise ValueError("an instance UID that is not digits and dots")
    return store_dir / study / series / f"{sop}.dcm"


def keep_file(source: Path, target: Path) -> None:
    """Move ``source`` to ``target`` whole or not at all (a temporary name beside it, then a rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.partial")
    try:
        shutil.move(source, partial)
        os.replace(partial, target)
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()


class Listener:
    """The SCP: ``start()`` opens the port, ``stop()`` closes it; ``due()`` wakes the writer."""

    def __init__(
        self,
        options: ListenOptions,
        collector: StudyCollector,
        mapping: MappingOptions | None = None,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.options = options
        self.collector = collector
        self.mapping = mapping or MappingOptions()
        self.wake = wake
        self.incoming = Path(tempfile.mkdtemp(prefix="fhir-imaging-listen-"))
        self.received = 0
        self.refused = 0
        self._pending_bytes: dict[int, int] = {}
        self._orphans: list[tuple[float, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadedAssociationServer | None = None
        self.ae = self._make_ae()

    def _make_ae(self) -> AE:
        options = self.options
        ae = AE(options.aet)
        ae.maximum_pdu_size = options.max_pdu_bytes
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = options.timeout
        ae.maximum_associations = options.max_associations
        ae.require_calling_aet = list(options.allow_aets)
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax is not None:
                ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(VERIFICATION)
        return ae

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server is not None else self.options.port

    def start(self) -> None:
        _config.STORE_RECV_CHUNKED_DATASET = True  # datasets go to files as they arrive, never whole in memory
        tempfile.tempdir = str(self.incoming)  # pynetdicom's temporary files: ours to clean
        handlers: list[evt.EventHandlerType] = [
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_DATA_RECV, self._on_data),
            (evt.EVT_DIMSE_RECV, self._on_message),
            (evt.EVT_RELEASED, self._on_end),
            (evt.EVT_ABORTED, self._on_end),
            (evt.EVT_CONN_CLOSE, self._on_end),
            (evt.EVT_REJECTED, self._on_rejected),
        ]
        handler = _request_handler(self.options.max_pdu_bytes, self.options.timeout)
        server = self.ae.make_server(
            (self.options.host, self.options.port),
            evt_handlers=handlers,
            server_class=ThreadedAssociationServer,
            request_handler=handler,
        )
        self._server = server
        thread = threading.Thread(target=server.serve_forever, name="fhir-imaging-listen", daemon=True)
        thread.start()

    def stop(self) -> None:
        """Close the port, then abort the associations still open (what they delivered is written)."""
        if self._server is not None:
            socketserver.BaseServer.shutdown(self._server)  # made by make_server: the AE does not list it
            self._server.server_close()
            self._server = None
        for assoc in self.ae.active_associations:
            assoc.abort()
        self.sweep(time.monotonic(), delay=0)
        if tempfile.tempdir == str(self.incoming):
            tempfile.tempdir = None
        shutil.rmtree(self.incoming, ignore_errors=True)

    # --- event handlers (pynetdicom's threads) ------------------------------------------------------------------

    def _on_echo(self, event: evt.Event) -> int:
        return SUCCESS

    def _on_rejected(self, event: evt.Event) -> None:
        LOG.warning("refused an association from %s", _peer(event))

    def _on_data(self, event: evt.Event) -> None:
        """Count the bytes of the message being received; past ``max_dataset_bytes`` the association is aborted
        (the PDU itself is already bounded by the socket)."""
        data: bytes = event.data
        if not data or data[0] != P_DATA_TF:
            return
        key = id(event.assoc)
        with self._lock:
            size = self._pending_bytes.get(key, 0) + len(data)
            self._pending_bytes[key] = size
        if size > self.options.max_dataset_bytes:
            LOG.warning(
                "aborted the association from %s: a dataset of more than %d bytes (--max-dataset-mb)",
                _peer(event),
                self.options.max_dataset_bytes,
            )
            with self._lock:
                self.refused += 1
                self._pending_bytes[key] = 0
            event.assoc.abort()

    def _on_message(self, event: evt.Event) -> None:
        with self._lock:
            self._pending_bytes[id(event.assoc)] = 0

    def _on_end(self, event: evt.Event) -> None:
        key = id(event.assoc)
        partial = _partial_file(event.assoc)
        with self._lock:
            self._pending_bytes.pop(key, None)
            if partial is not None:
                self._orphans.append((time.monotonic(), partial))
        self.collector.end(key)
        self.wake()

    def sweep(self, now: float, delay: float = ORPHAN_DELAY) -> None:
        """Remove the temporary files of datasets whose association ended before they were complete (pynetdicom
        removes only those of complete messages), ``delay`` seconds after the end: its thread may still be
        writing the last PDU it had read."""
        with self._lock:
            due = [item for item in self._orphans if now - item[0] >= delay]
            self._orphans = [item for item in self._orphans if now - item[0] < delay]
        for _, partial in due:
            with contextlib.suppress(OSError, AttributeError, ValueError):
                partial.close()
                os.unlink(partial.name)

    def _on_store(self, event: evt.Event) -> int:
        path = Path(event.dataset_path)
        try:
            with warnings.catch_warnings(), open(path, "rb") as fp:
                warnings.simplefilter("ignore")
                record = from_dicom_dataset(read_file_header(fp), self.mapping)
        except MappingError as exc:
            return self._refuse(event, f"refused an instance from %s: {exc}")
        except Exception as exc:  # pydicom raises many types on a corrupt header
            return self._refuse(event, f"refused an instance from %s: unreadable header ({type(exc).__name__})")
        if self.options.store_dir is not None:
            try:
                target = stored_path(self.options.store_dir, record.study_uid, record.series_uid, record.sop_uid)
                keep_file(path, target)
            except ValueError as exc:
                return self._refuse(event, f"refused an instance from %s: {exc}")
            except OSError as exc:
                LOG.error("cannot keep an instance in --store-dir: %s", exc)
                return OUT_OF_RESOURCES
        self.collector.add(id(event.assoc), record, time.monotonic())
        with self._lock:
            self.received += 1
        return SUCCESS

    def _refuse(self, event: evt.Event, message: str) -> int:
        LOG.warning(message, _peer(event))
        with self._lock:
            self.refused += 1
        return CANNOT_UNDERSTAND


def _peer(event: evt.Event) -> str:
    requestor = event.assoc.requestor
    return f"{requestor.ae_title}@{requestor.address}:{requestor.port}"


def _partial_file(assoc: Any) -> Any:
    """The temporary file of the dataset an association was receiving when it ended, if any."""
    message = getattr(getattr(assoc, "dimse", None), "message", None)
    return getattr(message, "_data_set_file", None)
