"""``fhir-imaging sync-dimse HOST PORT --called-aet AET``: read a PACS with C-FIND (Study Root, study → series →
instance level) and feed the sync core (``sync.py``) exactly as ``sync-dicomweb`` does, each study pointing at an
Endpoint for the PACS's DICOM (DIMSE) address.

Spec: DICOM PS3.4 C.4.1 (C-FIND), C.6.2 (Study Root information model: unique keys and required keys per level),
PS3.7 §9.1.2 (C-FIND statuses: Pending FF00/FF01, Success 0000, the rest end the query), PS3.8 (associations);
https://hl7.org/fhir/R4/endpoint.html.

``CFindReader`` is the DIMSE ``StudySource``: one association for the study query, one for each study's series and
instance queries (a PACS may drop an idle association while the FHIR writes run). Nothing the PACS answers is
trusted: connecting, negotiating and every message are bounded by ``DimseLimits.timeout``, one whole query too
(checked as answers arrive), PDUs by ``max_pdu_bytes`` (``dimse.py``), and each level's results by the same caps
as ``sync-dicomweb``; a result without the valid UID of its level, or an identifier that cannot be decoded, ends
the pass. Every failure is a ``PacsError`` naming the PACS (``AET@host:port``) and the query, never a value.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import quote

from pydicom import Dataset
from pydicom.uid import UID
from pynetdicom import evt

from fhir_imaging.dicom.bundle import Write
from fhir_imaging.dicom.dimse import BoundedAE
from fhir_imaging.dicom.keys import INSTANCE_FIELDS, SERIES_FIELDS, STUDY_FIELDS
from fhir_imaging.dicom.limits import DimseLimits
from fhir_imaging.dicom.pacs import PacsError
from fhir_imaging.dicom.qido import is_uid
from fhir_imaging.dicom.sync import FoundStudy, endpoint_write

STUDY_ROOT_FIND = UID("1.2.840.10008.5.1.4.1.2.2.1")  # Study Root Query/Retrieve Information Model - FIND
PENDING = frozenset({0xFF00, 0xFF01})
SUCCESS = 0x0000
QUERY_ONLY = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle", "InstanceAvailability"})
# R4's endpoint-connection-type (an extensible binding) has no code for DIMSE: IHE RO SMRT's code system has one
# (docs/dicom.md, *sync-dimse*).
DIMSE_CONNECTION = {
    "system": "https://profiles.ihe.net/RO/SMRT/CodeSystem/dicom-endpoint-connection-type",
    "code": "dicom-dimse",
    "display": "DICOM DIMSE",
}


def dimse_address(called_aet: str, host: str, port: int) -> str:
    """``dicom://AET@host:port``: the called AE title (percent-encoded), host and port in one URI (there is no
    registered URI scheme for a DICOM AE; see docs/dicom.md)."""
    shown_host = f"[{host}]" if ":" in host else host
    return f"dicom://{quote(called_aet, safe='')}@{shown_host}:{port}"


def endpoint_for(called_aet: str, host: str, port: int) -> Write:
    """The Endpoint of a DIMSE peer: connection type ``dicom-dimse`` (``DIMSE_CONNECTION``), the AE title in
    ``name`` too."""
    address = dimse_address(called_aet, host, port)
    return endpoint_write(
        {
            "status": "active",
            "connectionType": dict(DIMSE_CONNECTION),
            "name": called_aet,
            "payloadType": [{"text": "DICOM DIMSE"}],
            "payloadMimeType": ["application/dicom"],
            "address": address,
        }
    )


@dataclass(frozen=True, slots=True)
class _Level:
    """One C-FIND query level: QueryRetrieveLevel, the unique key of its results and the option capping them."""

    name: str
    noun: str
    uid: str
    cap_option: str
    per: str = ""


STUDIES = _Level("STUDY", "studies", "StudyInstanceUID", "--max-studies")
SERIES = _Level("SERIES", "series", "SeriesInstanceUID", "--max-series-per-study", " in one study")
INSTANCES = _Level("IMAGE", "instances", "SOPInstanceUID", "--max-instances-per-study", " in one study")


def query_identifier(level: _Level, keys: Iterable[str], **matching: str) -> Dataset:
    """The C-FIND request identifier: the level, the unique keys to match (``matching``), the level's unique key
    and ``keys`` as empty return keys."""
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level.name
    for keyword, value in matching.items():
        setattr(identifier, keyword, value)
    for keyword in (level.uid, *keys):
        if keyword not in matching:
            setattr(identifier, keyword, "")
    return identifier


def count_of(value: Any) -> int | None:
    """An IS/US count from a C-FIND answer, or ``None`` when absent or not a count."""
    text = str(value).strip() if value is not None else ""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 12 else None


def plain_elements(identifier: Dataset) -> dict[int, Any]:
    """The non-empty elements of an answer (decoded with its own character set), query-only keys left out; an
    element pydicom cannot read is treated as absent, as for files."""
    elements: dict[int, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for tag in list(identifier.keys()):
            try:
                element = identifier[tag]
            except Exception:  # pydicom raises many types for values of the wrong kind
                continue
            if element.keyword in QUERY_ONLY or element.is_empty:
                continue
            elements[int(tag)] = element
    return elements


def combine(*answers: Dataset) -> Dataset:
    """One instance's Dataset from its study, series and instance answers (later levels win)."""
    combined = Dataset()
    for answer in answers:
        for tag, element in plain_elements(answer).items():
            combined[tag] = element
    return combined


class CFindReader:
    """C-FIND queries to one PACS, as ``calling_aet`` to ``called_aet`` at ``host:port``, within ``limits``."""

    def __init__(
        self, host: str, port: int, called_aet: str, calling_aet: str = "FHIRIMAGING", limits: DimseLimits | None = None
    ) -> None:
        self.host, self.port, self.called_aet = host, port, called_aet
        self.limits = limits or DimseLimits()
        self.ae = BoundedAE(calling_aet, self.limits.max_pdu_bytes, self.limits.timeout)
        self.ae.add_requested_context(STUDY_ROOT_FIND)
        self.url = f"{called_aet}@{dimse_address(called_aet, host, port).split('@', 1)[1]}"

    @property
    def shown(self) -> str:
        return self.url

    def close(self) -> None:
        self.ae.shutdown()

    def endpoint(self) -> Write:
        return endpoint_for(self.called_aet, self.host, self.port)

    def _associate(self, what: str) -> Any:
        connected: list[bool] = []
        handlers: list[evt.EventHandlerType] = [(evt.EVT_CONN_OPEN, lambda event: connected.append(True))]
        try:
            assoc = self.ae.associate(self.host, self.port, ae_title=self.called_aet, evt_handlers=handlers)
        except (OSError, ValueError, RuntimeError) as exc:
            raise PacsError(f"cannot reach the PACS at {self.url} ({what}): {type(exc).__name__}") from None
        if assoc.is_established:
            return assoc
        if not connected:
            raise PacsError(
                f"cannot reach the PACS at {self.url} ({what}): connection refused, or no connection within "
                f"{self.limits.timeout:g} s (--pacs-timeout)"
            )
        if assoc.is_rejected:
            raise PacsError(
                f"the PACS at {self.url} refused the association for {what} (does it know the calling AE title "
                f"{self.ae.ae_title} and answer to {self.called_aet}?)"
            )
        if assoc.is_aborted:
            raise PacsError(f"the PACS at {self.url} aborted the association for {what}")
        raise PacsError(f"cannot reach the PACS at {self.url} ({what}): no association within the time allowed")

    def search(self, level: _Level, identifier: Dataset, what: str, cap: int, counted: int = 0) -> list[Dataset]:
        """Every answer to one C-FIND, each with a valid unique key of its level (met twice: kept once); more than
        ``cap`` results (``counted`` of them met before), a failure status, or no answer in time end it with a
        ``PacsError``."""
        assoc = self._associate(what)
        results: dict[str, Dataset] = {}
        deadline = time.monotonic() + self.limits.timeout
        try:
            for status, answer in assoc.send_c_find(identifier, STUDY_ROOT_FIND):
                code = status.get("Status")
                if code is None:
                    raise self._no_answer(what, deadline)
                if code == SUCCESS:
                    return list(results.values())
                if code not in PENDING:
                    raise PacsError(f"the PACS at {self.url} answered {what} with the failure status 0x{code:04X}")
                uid = _unique_key(answer, level)
                if uid is None:
                    raise PacsError(
                        f"the PACS at {self.url} answered {what} wrongly: a result without a valid {level.uid} "
                        "(digits and dots, 1 to 64), or one that cannot be decoded"
                    )
                results.setdefault(uid, answer)
                if counted + len(results) > cap:
                    raise PacsError(
                        f"the PACS at {self.url} answered {what}: more than {cap} {level.noun}{level.per} "
                        f"({level.cap_option})"
                    )
                if time.monotonic() > deadline:
                    raise PacsError(
                        f"the PACS at {self.url} did not answer {what} within {self.limits.timeout:g} s "
                        "(--pacs-timeout)"
                    )
            raise PacsError(f"the PACS at {self.url} ended {what} without a final status")
        except PacsError:
            assoc.abort()
            raise
        finally:
            if assoc.is_established:
                assoc.release()

    def _no_answer(self, what: str, deadline: float) -> PacsError:
        if time.monotonic() < deadline:
            return PacsError(
                f"the PACS at {self.url} broke off the association during {what} (does it allow C-FIND from the "
                f"calling AE title {self.ae.ae_title}?)"
            )
        return PacsError(
            f"the PACS at {self.url} did not answer {what} within {self.limits.timeout:g} s (--pacs-timeout)"
        )

    def studies(self, since: date | None = None) -> list[Dataset]:
        matching = {"StudyDate": f"{since:%Y%m%d}-"} if since else {}
        identifier = query_identifier(STUDIES, STUDY_FIELDS, **matching)
        return self.search(STUDIES, identifier, "the study query", self.limits.max_studies)

    def find_studies(self, since: date | None) -> list[FoundStudy[Dataset]]:
        found = []
        for answer in self.studies(since):
            instances = count_of(answer.get("NumberOfStudyRelatedInstances"))
            found.append(FoundStudy(_unique_key(answer, STUDIES) or "", instances, answer))
        return found

    def read_study(self, study: FoundStudy[Dataset]) -> list[Dataset]:
        """Every instance of ``study`` as one Dataset of its study, series and instance answers; at most
        ``max_instances_per_study`` in all its series."""
        what = f"the series query of study {study.uid}"
        identifier = query_identifier(SERIES, SERIES_FIELDS, StudyInstanceUID=study.uid)
        series_list = self.search(SERIES, identifier, what, self.limits.max_series_per_study)
        datasets: list[Dataset] = []
        for series in series_list:
            series_uid = _unique_key(series, SERIES) or ""
            what = f"the instance query of series {series_uid}"
            identifier = query_identifier(
                INSTANCES, INSTANCE_FIELDS, StudyInstanceUID=study.uid, SeriesInstanceUID=series_uid
            )
            cap = self.limits.max_instances_per_study
            instances = self.search(INSTANCES, identifier, what, cap, len(datasets))
            datasets.extend(combine(study.attributes, series, instance) for instance in instances)
        return datasets


def _unique_key(answer: Dataset | None, level: _Level) -> str | None:
    if answer is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            value = answer.get(level.uid)
        except Exception:
            return None
    text = str(value).strip().rstrip("\x00") if value is not None else ""
    return text if is_uid(text) else None
