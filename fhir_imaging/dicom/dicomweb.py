"""``fhir-imaging sync-dicomweb URL``: read a PACS over QIDO-RS (studies, then each study's series and instances) and
create or update its ImagingStudy resources, each pointing at an Endpoint for the PACS's WADO-RS root.

Spec: DICOM PS3.18 §10.6 (QIDO-RS: query keys, ``includefield``, ``offset``), PS3.18 F.2 (the DICOM JSON model),
https://hl7.org/fhir/R4/endpoint.html and https://hl7.org/fhir/R4/imagingstudy.html (``ImagingStudy.endpoint``).

The QIDO-RS answers are turned into pydicom Datasets (study ∪ series ∪ instance attributes) and go through the same
mapping as files. A study is read completely before anything of it is written, so a PACS that fails halfway leaves
no partial study. Runs are incremental: a study whose ImagingStudy already counts as many instances as the PACS's
NumberOfStudyRelatedInstances (0020,1208) and points at the Endpoint is not read again (``full=True`` reads all).
"""

from __future__ import annotations

import asyncio
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset

from fhir_imaging.client import fhir_client
from fhir_imaging.config import Settings
from fhir_imaging.dicom.bundle import Write
from fhir_imaging.dicom.mapping import InstanceRecord, MappingError, MappingOptions, from_dicom_dataset
from fhir_imaging.dicom.progress import Reporter
from fhir_imaging.dicom.study import group_studies, without_meta
from fhir_imaging.dicom.writer import Tally, find_one, study_identifier, write_study

PATIENT_FIELDS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex")
STUDY_FIELDS = (
    *PATIENT_FIELDS,
    *("StudyDate", "StudyTime", "TimezoneOffsetFromUTC", "StudyDescription", "ReferringPhysicianName"),
    *("AccessionNumber", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"),
)
SERIES_FIELDS = ("Modality", "SeriesNumber", "SeriesDescription", "BodyPartExamined", "Laterality")
SERIES_FIELDS += ("SeriesDate", "SeriesTime", "NumberOfSeriesRelatedInstances")
INSTANCE_FIELDS = ("SOPClassUID", "InstanceNumber", "ContentLabel", "DocumentTitle", "ImageType", "ImageLaterality")
ENDPOINT_CONNECTION = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
URI_SYSTEM = "urn:ietf:rfc:3986"
_STUDY_UID, _SERIES_UID, _INSTANCES = "0020000D", "0020000E", "00201208"


class PacsError(Exception):
    """The PACS cannot be reached or refused a query; the message names it and says why."""


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
    resource = {
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


class QidoReader:
    """QIDO-RS queries through dicomweb-client; every failure becomes a ``PacsError``."""

    def __init__(self, url: str, client: DICOMwebClient | None = None, attempts: int = 3) -> None:
        self.url = url.rstrip("/")
        self.client = client or DICOMwebClient(self.url, timeout=30)
        # dicomweb-client retries every failure 5 times with waits growing to 16 s (30 s for a PACS that is down);
        # three attempts, 0.4 and 0.8 s apart, ride over a hiccup and still answer "down" quickly.
        self.client.set_http_retry_params(retry=True, max_attempts=attempts, wait_exponential_multiplier=200)

    def _query(self, what: str, call: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
        try:
            return call()
        except requests.ConnectionError as exc:
            raise PacsError(f"cannot reach the PACS at {self.url} ({what}): {_reason(exc)}") from None
        except requests.Timeout:
            raise PacsError(f"the PACS at {self.url} did not answer in time ({what})") from None
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            raise PacsError(f"the PACS at {self.url} answered HTTP {status} to {what}") from None
        except (requests.RequestException, ValueError) as exc:
            raise PacsError(f"the PACS at {self.url} failed {what}: {exc}") from None

    def studies(self, since: date | None = None) -> list[dict[str, Any]]:
        filters = {"StudyDate": f"{since:%Y%m%d}-"} if since else None
        return self._query(
            "the study query",
            lambda: self.client.search_for_studies(fields=STUDY_FIELDS, search_filters=filters, get_remaining=True),
        )

    def study_datasets(self, study: dict[str, Any]) -> list[Dataset]:
        """Every instance of ``study`` as a Dataset of its study, series and instance attributes."""
        uid = _value(study, _STUDY_UID)
        series_list = self._query(
            f"the series query of study {uid}",
            lambda: self.client.search_for_series(uid, fields=SERIES_FIELDS, get_remaining=True),
        )
        datasets = []
        for series in series_list:
            series_uid = _value(series, _SERIES_UID)
            instances = self._query(
                f"the instance query of series {series_uid}",
                lambda series_uid=series_uid: self.client.search_for_instances(
                    uid, series_uid, fields=INSTANCE_FIELDS, get_remaining=True
                ),
            )
            for instance in instances:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    datasets.append(Dataset.from_json({**study, **series, **instance}))
        return datasets


def _reason(exc: Exception) -> str:
    text = str(exc)
    for known in ("Connection refused", "Name or service not known", "timed out", "No route to host"):
        if known in text:
            return known.lower()
    return text[:200]


def _up_to_date(existing: dict[str, Any] | None, study: dict[str, Any], endpoint: Write) -> bool:
    count = _value(study, _INSTANCES)
    if existing is None or count is None or endpoint.id is None or endpoint.write:
        return False
    points_at_endpoint = {"reference": f"Endpoint/{endpoint.id}"} in existing.get("endpoint", [])
    return points_at_endpoint and existing.get("numberOfInstances") == int(count)


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
        for group in group_studies(records):
            await write_study(client, group, summary.tally, endpoint)
        advance(1)
    return summary


async def sync_dicomweb(
    url: str,
    *,
    server: str | None = None,
    settings: Settings | None = None,
    options: MappingOptions | None = None,
    since: date | None = None,
    full: bool = False,
    reporter: Reporter | None = None,
) -> SyncSummary:
    """One pass of ``sync_once`` against the FHIR server at ``server`` (or in-process on ``settings.database``)."""
    reader = QidoReader(url)
    async with fhir_client(server=server, settings=settings) as client:
        return await sync_once(client, reader, options=options, since=since, full=full, reporter=reporter)
