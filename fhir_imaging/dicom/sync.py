"""The sync core shared by ``sync-dicomweb`` (QIDO-RS, ``dicomweb.py``) and ``sync-dimse`` (C-FIND, ``cfind.py``):
one pass over a PACS's studies, each written to the FHIR server with its Patient and pointing at the PACS's
Endpoint.

Spec: https://hl7.org/fhir/R4/imagingstudy.html (``ImagingStudy.endpoint``), https://hl7.org/fhir/R4/endpoint.html.

A source (``StudySource``) only knows how to ask its PACS: which studies there are (with the count of instances the
PACS states, when it does) and, for one study, every instance as a pydicom Dataset of its study, series and
instance attributes. Everything else lives here, once:

- The study list is read first: a PACS that is down writes nothing.
- Incremental runs: a study whose ImagingStudy already counts as many instances as the PACS states and points at
  the Endpoint is not read again (``full=True`` reads every study).
- A study is read completely before anything of it is written, so a PACS failing halfway leaves no partial study.
- Instances whose attributes cannot be mapped are listed as skipped; the rest of the study is written.
- With ``reconcile``, the studies of the Endpoint that the PACS no longer lists are marked (``reconcile.py``),
  after the pass and only when the whole study list was read (not with ``since``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Generic, Protocol, TypeVar

from pydicom import Dataset

from fhir_imaging.dicom.bundle import Write
from fhir_imaging.dicom.mapping import InstanceRecord, MappingError, MappingOptions, from_dicom_dataset
from fhir_imaging.dicom.progress import Reporter
from fhir_imaging.dicom.reconcile import MISSING_STATUS, ReconcileResult
from fhir_imaging.dicom.reconcile import reconcile as reconcile_studies
from fhir_imaging.dicom.study import group_studies, without_meta
from fhir_imaging.dicom.writer import Tally, find_one, study_identifier, write_study

ENDPOINT_CONNECTION = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
URI_SYSTEM = "urn:ietf:rfc:3986"

Attributes = TypeVar("Attributes")


@dataclass(frozen=True, slots=True)
class FoundStudy(Generic[Attributes]):
    """One study of the PACS's study list: its UID, the instances the PACS says it holds (NumberOfStudyRelated
    Instances, when it says), and the study-level attributes as the source got them."""

    uid: str
    instances: int | None
    attributes: Attributes


class StudySource(Protocol[Attributes]):
    """A PACS as the sync core reads it. Methods block (network I/O); the core runs them in a worker thread. Every
    failure is a ``PacsError`` naming the PACS and the query."""

    @property
    def shown(self) -> str:
        """How messages name the PACS (no credentials)."""
        ...

    def endpoint(self) -> Write:
        """The Endpoint every study of this PACS points at."""
        ...

    def find_studies(self, since: date | None) -> list[FoundStudy[Attributes]]:
        """Every study (from StudyDate ``since`` on), within the source's bounds."""
        ...

    def read_study(self, study: FoundStudy[Attributes]) -> list[Dataset]:
        """Every instance of ``study`` as a Dataset of its study, series and instance attributes."""
        ...


@dataclass(slots=True)
class SyncSummary:
    """One pass over the PACS."""

    studies: int = 0
    skipped_instances: list[tuple[str, str]] = field(default_factory=list)  # (SOPInstanceUID, reason)
    tally: Tally = field(default_factory=Tally)
    returned: int = 0  # studies marked unknown earlier that the PACS has again
    reconciled: ReconcileResult | None = None

    def lines(self) -> list[str]:
        tally = self.tally
        reconciled = self.reconciled.lines() if self.reconciled is not None else []
        returned = [f"back in the PACS: {self.returned} studies available again"] if self.returned else []
        return [
            f"studies: {self.studies} ({tally.studies_created} created, {tally.studies_updated} updated, "
            f"{tally.studies_unchanged} unchanged, {len(tally.failed)} failed)",
            f"series added: {tally.series_added}; instances added: {tally.instances_added}",
            f"patients: {tally.patients_created} created, {tally.patients_updated} updated",
            *returned,
            *reconciled,
            *(f"skipped instance {uid}: {reason}" for uid, reason in self.skipped_instances),
            *(f"failed study {uid}: {reason}" for uid, reason in tally.failed),
        ]


def endpoint_write(resource: dict[str, Any]) -> Write:
    """The ``Write`` of an Endpoint identified by its address (as a URI). The same ``Write`` serves every study of
    a pass: it is written (``write``) with the first, and only referred to after."""
    identifier = {"system": URI_SYSTEM, "value": resource["address"]}
    return Write({"resourceType": "Endpoint", "identifier": [identifier], **resource}, identifier)


def up_to_date(existing: dict[str, Any] | None, instances: int | None, endpoint: Write) -> bool:
    """Whether the server's study already counts the ``instances`` the PACS states and points at ``endpoint``."""
    if existing is None or instances is None or endpoint.id is None or endpoint.write:
        return False
    points_at_endpoint = {"reference": f"Endpoint/{endpoint.id}"} in existing.get("endpoint", [])
    return points_at_endpoint and existing.get("numberOfInstances") == instances


async def find_endpoint(client: Any, endpoint: Write) -> None:
    """Complete ``endpoint`` with the id and version of the server's copy (found by identifier), merged with it;
    ``endpoint.write`` tells whether the server's copy needs changing."""
    found = await find_one(client, "Endpoint", endpoint.identifier)
    if found is not None:
        endpoint.id, endpoint.version = str(found["id"]), found.get("meta", {}).get("versionId")
        endpoint.resource = {**without_meta(found), **endpoint.resource}
        endpoint.write = endpoint.resource != without_meta(found)


def map_datasets(datasets: list[Dataset], options: MappingOptions, summary: SyncSummary) -> list[InstanceRecord]:
    """The records of ``datasets``; those that cannot be mapped are listed in ``summary.skipped_instances``."""
    records: list[InstanceRecord] = []
    for dataset in datasets:
        try:
            records.append(from_dicom_dataset(dataset, options))
        except MappingError as exc:
            summary.skipped_instances.append((str(dataset.get("SOPInstanceUID", "?")), str(exc)))
        except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:  # values of the wrong kind
            reason = f"attributes that cannot be mapped ({type(exc).__name__})"
            summary.skipped_instances.append((str(dataset.get("SOPInstanceUID", "?")), reason))
    return records


async def sync_once(
    client: Any,
    source: StudySource[Any],
    *,
    options: MappingOptions | None = None,
    since: date | None = None,
    full: bool = False,
    reporter: Reporter | None = None,
    reconcile: bool = False,
) -> SyncSummary:
    """One pass: every study of ``source`` (from ``since`` on), written to the FHIR server behind ``client``; with
    ``reconcile``, then the studies of its Endpoint the PACS no longer lists are marked."""
    if reconcile and since is not None:
        raise ValueError("--reconcile needs the PACS's whole study list: it does not go with --since")
    options = options or MappingOptions()
    studies = await asyncio.to_thread(source.find_studies, since)  # first: a PACS that is down touches nothing
    endpoint = source.endpoint()
    await find_endpoint(client, endpoint)
    summary = SyncSummary(studies=len(studies))
    advance = reporter.task("syncing studies", len(studies)) if reporter else (lambda n: None)
    for study in studies:
        existing = await find_one(client, "ImagingStudy", study_identifier(study.uid))
        if not full and up_to_date(existing, study.instances, endpoint):
            summary.tally.studies_unchanged += 1
            advance(1)
            continue
        datasets = await asyncio.to_thread(source.read_study, study)
        failed = len(summary.tally.failed)
        for group in group_studies(map_datasets(datasets, options, summary)):
            await write_study(client, group, summary.tally, endpoint)
        if existing is not None and existing.get("status") == MISSING_STATUS and len(summary.tally.failed) == failed:
            summary.returned += 1
        advance(1)
    if reconcile and endpoint.id is not None:
        summary.reconciled = await reconcile_studies(client, endpoint.id, {study.uid for study in studies})
    elif reconcile:
        summary.reconciled = ReconcileResult()  # no Endpoint on the server yet: no study points at it
    return summary
