"""``fhir-imaging sync-dicomweb URL``: read a PACS over QIDO-RS (studies, then each study's series and instances) and
create or update its ImagingStudy resources, each pointing at an Endpoint for the PACS's WADO-RS root.

Spec: DICOM PS3.18 §10.6 (QIDO-RS: query keys, ``includefield``, ``offset``), PS3.18 F.2 (the DICOM JSON model),
https://hl7.org/fhir/R4/endpoint.html and https://hl7.org/fhir/R4/imagingstudy.html (``ImagingStudy.endpoint``).

The QIDO-RS answers are turned into pydicom Datasets (study ∪ series ∪ instance attributes) and go through the same
mapping as files. A study is read completely before anything of it is written, so a PACS that fails halfway leaves
no partial study. Nothing the PACS answers is trusted: every answer is bounded in time and size (``pacs.py``) and
checked for shape (``qido.py``), paging stops at a page that brings nothing new, and each query level is capped
(``PacsLimits``). Runs are incremental: a study whose ImagingStudy already counts as many instances as the PACS's
NumberOfStudyRelatedInstances (0020,1208) and points at the Endpoint is not read again (``full=True`` reads all).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from pydicom import Dataset

from fhir_imaging.client import RemoteServer, fhir_client
from fhir_imaging.config import Settings
from fhir_imaging.dicom.bundle import Write
from fhir_imaging.dicom.limits import PacsLimits
from fhir_imaging.dicom.mapping import InstanceRecord, MappingError, MappingOptions, from_dicom_dataset
from fhir_imaging.dicom.pacs import PacsError, PacsHttp
from fhir_imaging.dicom.progress import Reporter
from fhir_imaging.dicom.qido import MalformedAnswer, check_page, count_value, to_dataset
from fhir_imaging.dicom.study import group_studies, without_meta
from fhir_imaging.dicom.writer import Tally, find_one, study_identifier, write_study

PATIENT_FIELDS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex")
STUDY_FIELDS = (
    *PATIENT_FIELDS,
    *("StudyDate", "StudyTime", "TimezoneOffsetFromUTC", "StudyDescription", "ReferringPhysicianName"),
    *("AccessionNumber", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"),
)
SERIES_FIELDS: tuple[str, ...] = ("Modality", "SeriesNumber", "SeriesDescription", "BodyPartExamined", "Laterality")
SERIES_FIELDS += ("SeriesDate", "SeriesTime", "NumberOfSeriesRelatedInstances")
INSTANCE_FIELDS = ("SOPClassUID", "InstanceNumber", "ContentLabel", "DocumentTitle", "ImageType", "ImageLaterality")
ENDPOINT_CONNECTION = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
URI_SYSTEM = "urn:ietf:rfc:3986"
_STUDY_UID, _SERIES_UID, _SOP_UID, _INSTANCES = "0020000D", "0020000E", "00080018", "00201208"


@dataclass(slots=True)
class SyncSummary:
    """One pass over the PACS."""

    studies: int = 0
    skipped_instances: list[tuple[str, str]] = field(default_factory=list)  # (SOPInstanceUID, reason)
    tally: Tally = field(default_factory=Tally)

    def lines(self) -> list[str]:
        tally = self.tally
        return [
            f"studies: {self.studies} ({tally.studies_created} created, {tally.studies_updated} updated, "
            f"{tally.studies_unchanged} unchanged, {len(tally.failed)} failed)",
            f"series added: {tally.series_added}; instances added: {tally.instances_added}",
            f"patients: {tally.patients_created} created, {tally.patients_updated} updated",
            *(f"skipped instance {uid}: {reason}" for uid, reason in self.skipped_instances),
            *(f"failed study {uid}: {reason}" for uid, reason in tally.failed),
        ]


def endpoint_for(url: str) -> Write:
    """The Endpoint of a DICOMweb root: WADO-RS connection, active, identified by its address (as a URI). The same
    ``Write`` serves every study of a sync: it is written (``write``) with the first, and only referred to after."""
    address = url.rstrip("/")
    resource: dict[str, Any] = {
        "resourceType": "Endpoint",
        "identifier": [{"system": URI_SYSTEM, "value": address}],
        "status": "active",
        "connectionType": {"system": ENDPOINT_CONNECTION, "code": "dicom-wado-rs"},
        "name": f"DICOMweb WADO-RS {address}",
        "payloadType": [{"text": "DICOM WADO-RS"}],
        "payloadMimeType": ["application/dicom"],
        "address": address,
    }
    return Write(resource, resource["identifier"][0])


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

    def close(self) -> None:
        self.http.close()

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


def _up_to_date(existing: dict[str, Any] | None, study: dict[str, Any], endpoint: Write) -> bool:
    count = count_value(study, _INSTANCES)
    if existing is None or count is None or endpoint.id is None or endpoint.write:
        return False
    points_at_endpoint = {"reference": f"Endpoint/{endpoint.id}"} in existing.get("endpoint", [])
    return points_at_endpoint and existing.get("numberOfInstances") == count


async def sync_once(
    client: Any,
    reader: QidoReader,
    *,
    options: MappingOptions | None = None,
    since: date | None = None,
    full: bool = False,
    reporter: Reporter | None = None,
) -> SyncSummary:
    """One pass: every study of the PACS (from ``since``), written to the FHIR server behind ``client``."""
    options = options or MappingOptions()
    studies = await asyncio.to_thread(reader.studies, since)  # first: a PACS that is down touches nothing
    endpoint = endpoint_for(reader.url)
    found = await find_one(client, "Endpoint", endpoint.identifier)
    if found is not None:
        endpoint.id, endpoint.version = str(found["id"]), found.get("meta", {}).get("versionId")
        endpoint.resource = {**without_meta(found), **endpoint.resource}
        endpoint.write = endpoint.resource != without_meta(found)
    summary = SyncSummary(studies=len(studies))
    advance = reporter.task("syncing studies", len(studies)) if reporter else (lambda n: None)
    for study in studies:
        existing = await find_one(client, "ImagingStudy", study_identifier(str(_value(study, _STUDY_UID))))
        if not full and _up_to_date(existing, study, endpoint):
            summary.tally.studies_unchanged += 1
            advance(1)
            continue
        datasets = await asyncio.to_thread(reader.study_datasets, study)
        records: list[InstanceRecord] = []
        for dataset in datasets:
            try:
                records.append(from_dicom_dataset(dataset, options))
            except MappingError as exc:
                summary.skipped_instances.append((str(dataset.get("SOPInstanceUID", "?")), str(exc)))
            except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:  # values of the wrong kind
                reason = f"attributes that cannot be mapped ({type(exc).__name__})"
                summary.skipped_instances.append((str(dataset.get("SOPInstanceUID", "?")), reason))
        for group in group_studies(records):
            await write_study(client, group, summary.tally, endpoint)
        advance(1)
    return summary


async def sync_dicomweb(
    url: str,
    *,
    server: RemoteServer | None = None,
    settings: Settings | None = None,
    options: MappingOptions | None = None,
    since: date | None = None,
    full: bool = False,
    reporter: Reporter | None = None,
    limits: PacsLimits | None = None,
) -> SyncSummary:
    """One pass of ``sync_once`` against the FHIR server at ``server`` (or in-process on ``settings.database``),
    reading the PACS within ``limits``."""
    reader = QidoReader(url, limits)
    try:
        async with fhir_client(server=server, settings=settings) as client:
            return await sync_once(client, reader, options=options, since=since, full=full, reporter=reporter)
    finally:
        reader.close()
