"""``fhir-imaging sync-dicomweb URL``: read a PACS over QIDO-RS (studies, then each study's series and instances) and
create or update its ImagingStudy resources, each pointing at an Endpoint for the PACS's WADO-RS root.

Spec: DICOM PS3.18 §10.6 (QIDO-RS: query keys, ``includefield``, ``offset``), PS3.18 F.2 (the DICOM JSON model),
https://hl7.org/fhir/R4/endpoint.html and https://hl7.org/fhir/R4/imagingstudy.html (``ImagingStudy.endpoint``).

``QidoReader`` is the QIDO-RS ``StudySource`` of the sync core (``sync.py``, shared with ``sync-dimse``): the answers
are turned into pydicom Datasets (study ∪ series ∪ instance attributes) and go through the same mapping as files.
Nothing the PACS answers is trusted: every answer is bounded in time and size (``pacs.py``) and checked for shape
(``qido.py``), paging stops at a page that brings nothing new, and each query level is capped (``PacsLimits``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from pydicom import Dataset

from fhir_imaging.dicom.bundle import Write
from fhir_imaging.dicom.keys import INSTANCE_FIELDS, SERIES_FIELDS, STUDY_FIELDS
from fhir_imaging.dicom.limits import PacsLimits
from fhir_imaging.dicom.pacs import PacsError, PacsHttp
from fhir_imaging.dicom.qido import MalformedAnswer, check_page, count_value, to_dataset
from fhir_imaging.dicom.sync import ENDPOINT_CONNECTION, FoundStudy, SyncSummary, endpoint_write

__all__ = ["PacsError", "QidoReader", "SyncSummary", "endpoint_for", "parse_since"]
_STUDY_UID, _SERIES_UID, _SOP_UID, _INSTANCES = "0020000D", "0020000E", "00080018", "00201208"


def endpoint_for(url: str) -> Write:
    """The Endpoint of a DICOMweb root: WADO-RS connection, active, identified by its address (as a URI)."""
    address = url.rstrip("/")
    return endpoint_write(
        {
            "status": "active",
            "connectionType": {"system": ENDPOINT_CONNECTION, "code": "dicom-wado-rs"},
            "name": f"DICOMweb WADO-RS {address}",
            "payloadType": [{"text": "DICOM WADO-RS"}],
            "payloadMimeType": ["application/dicom"],
            "address": address,
        }
    )


def parse_since(text: str, today: date | None = None) -> date:
    """``--since``: a date (``2024-06-15`` or ``20240615``) or a number of days back (``7d``)."""
    text = text.strip()
    if re.fullmatch(r"\d+d", text):
        return (today or date.today()) - timedelta(days=int(text[:-1]))
    digits = text.replace("-", "")
    if re.fullmatch(r"\d{8}", digits):
        try:
            return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
        except ValueError:
            pass
    raise ValueError(f"--since wants a date (2024-06-15) or a number of days (7d), not {text!r}")


def _value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


@dataclass(frozen=True, slots=True)
class _Level:
    """One QIDO-RS query level: the UID that identifies its results and the option that caps their number."""

    noun: str
    uid_tag: str
    uid_name: str
    cap_option: str
    per: str = ""


STUDIES = _Level("studies", _STUDY_UID, "StudyInstanceUID", "--max-studies")
SERIES = _Level("series", _SERIES_UID, "SeriesInstanceUID", "--max-series-per-study", " in one study")
INSTANCES = _Level("instances", _SOP_UID, "SOPInstanceUID", "--max-instances-per-study", " in one study")


class QidoReader:
    """QIDO-RS queries to one PACS, paged with ``limit`` and ``offset`` and bounded by ``PacsLimits``; every
    failure and every malformed answer becomes a ``PacsError`` naming the PACS and the query."""

    def __init__(self, url: str, limits: PacsLimits | None = None) -> None:
        self.limits = limits or PacsLimits()
        self.http = PacsHttp(url, self.limits)
        self.url = self.http.shown

    @property
    def shown(self) -> str:
        return self.url

    def close(self) -> None:
        self.http.close()

    def endpoint(self) -> Write:
        return endpoint_for(self.url)

    def find_studies(self, since: date | None) -> list[FoundStudy[dict[str, Any]]]:
        return [
            FoundStudy(str(_value(item, _STUDY_UID)), count_value(item, _INSTANCES), item)
            for item in self.studies(since)
        ]

    def read_study(self, study: FoundStudy[dict[str, Any]]) -> list[Dataset]:
        return self.study_datasets(study.attributes)

    def search(
        self, path: str, params: list[tuple[str, str]], level: _Level, what: str, cap: int, counted: int = 0
    ) -> list[dict[str, Any]]:
        """Every result of one query, page after page until an empty one. A page that brings nothing new (a PACS
        that ignores ``offset``) ends paging with an error, as do more than ``cap`` results (``counted`` of them
        already met in earlier queries) or ``max_pages`` pages; a result met twice is kept once."""
        results: dict[str, dict[str, Any]] = {}
        offset = 0
        for _ in range(self.limits.max_pages):
            paging = [("limit", str(self.limits.page_size)), ("offset", str(offset))]
            answer = self.http.get_json(path, params + paging, what)
            try:
                page = check_page(answer, level.uid_tag, level.uid_name)
            except MalformedAnswer as exc:
                raise PacsError(f"the PACS at {self.url} answered {what} (offset {offset}) wrongly: {exc}") from None
            if not page:
                return list(results.values())
            if all(uid in results for uid, _ in page):
                raise PacsError(
                    f"the PACS at {self.url} answered {what} at offset {offset} with {level.noun} it had already "
                    "sent: paging stopped (does it ignore offset?)"
                )
            results.update((uid, item) for uid, item in page if uid not in results)
            if counted + len(results) > cap:
                raise PacsError(
                    f"the PACS at {self.url} answered {what}: more than {cap} {level.noun}{level.per} "
                    f"({level.cap_option})"
                )
            offset += len(page)
        raise PacsError(
            f"the PACS at {self.url} answered {what} with more than {self.limits.max_pages} pages (--max-pages)"
        )

    def studies(self, since: date | None = None) -> list[dict[str, Any]]:
        params = _fields(STUDY_FIELDS) + ([("StudyDate", f"{since:%Y%m%d}-")] if since else [])
        return self.search("/studies", params, STUDIES, "the study query", self.limits.max_studies)

    def study_datasets(self, study: dict[str, Any]) -> list[Dataset]:
        """Every instance of ``study`` (a result of ``studies``) as a Dataset of its study, series and instance
        attributes; at most ``max_instances_per_study`` in all its series."""
        uid = _value(study, _STUDY_UID)
        what = f"the series query of study {uid}"
        series_list = self.search(
            f"/studies/{uid}/series", _fields(SERIES_FIELDS), SERIES, what, self.limits.max_series_per_study
        )
        datasets: list[Dataset] = []
        for series in series_list:
            series_uid = _value(series, _SERIES_UID)
            what = f"the instance query of series {series_uid}"
            path = f"/studies/{uid}/series/{series_uid}/instances"
            cap = self.limits.max_instances_per_study
            instances = self.search(path, _fields(INSTANCE_FIELDS), INSTANCES, what, cap, len(datasets))
            for instance in instances:
                try:
                    datasets.append(to_dataset({**study, **series, **instance}))
                except MalformedAnswer as exc:
                    raise PacsError(f"the PACS at {self.url} answered {what} wrongly: {exc}") from None
        return datasets


def _fields(names: tuple[str, ...]) -> list[tuple[str, str]]:
    return [("includefield", name) for name in names]
