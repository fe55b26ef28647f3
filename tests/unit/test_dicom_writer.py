"""The study writer's conversation with the server (fhir_imaging/dicom/writer.py), against a scripted FHIR API:
searches first, one transaction, a retry when a concurrent import got there first, clear errors otherwise.

Spec: https://hl7.org/fhir/R4/http.html#transaction, http.html#concurrency.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.data import get_testdata_file

from fhir_imaging.dicom.mapping import from_dicom_dataset
from fhir_imaging.dicom.study import StudyGroup, group_studies
from fhir_imaging.dicom.writer import ServerUnsupported, Tally, write_study

Handler = Callable[[httpx.Request], httpx.Response]


def ct_small() -> StudyGroup:
    (group,) = group_studies([from_dicom_dataset(pydicom.dcmread(str(get_testdata_file("CT_small.dcm"))))])
    return group


def searchset(*resources: dict[str, Any]) -> httpx.Response:
    entries = [{"resource": r, "search": {"mode": "match"}} for r in resources]
    return httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset", "entry": entries})


def created(*locations: str) -> httpx.Response:
    entries = [{"response": {"status": "201 Created", "location": f"{loc}/_history/1"}} for loc in locations]
    return httpx.Response(200, json={"resourceType": "Bundle", "type": "transaction-response", "entry": entries})


def run(handler: Handler, group: StudyGroup) -> Tally:
    async def go() -> Tally:
        tally = Tally()
        transport = httpx.MockTransport(handler)
        async with httpx.AsyncClient(transport=transport, base_url="http://fhir.test/baseR4/") as client:
            await write_study(client, group, tally)
        return tally

    return asyncio.run(go())


def test_a_stale_write_is_merged_and_written_again() -> None:
    group, posted = ct_small(), []
    stored: dict[str, Any] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            kind = request.url.path.rsplit("/", 1)[-1]
            return searchset(stored[kind]) if kind in stored else searchset()
        posted.append(json.loads(request.content))
        if len(posted) == 1:  # someone else created the study meanwhile: the conditional create finds it
            meta = {"versionId": "1"}
            stored["Patient"] = {**group.patient, "id": "p1", "meta": meta}
            stored["ImagingStudy"] = {**group.study, "id": "s1", "meta": meta, "subject": {"reference": "Patient/p1"}}
            entries = [{"response": {"status": "201 Created", "location": "Patient/p1/_history/1"}},
                       {"response": {"status": "200 OK"}}]  # fmt: skip
            return httpx.Response(200, json={"resourceType": "Bundle", "entry": entries})
        return created("Patient/p1", "ImagingStudy/s1")

    tally = run(handler, group)
    assert len(posted) == 1  # the second attempt finds the study as it would write it: nothing left to write
    assert tally.failed == [] and tally.studies_created == 0 and tally.studies_unchanged == 1


def test_the_transaction_holds_patient_then_study_and_counts_what_was_created() -> None:
    group, posted = ct_small(), []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            assert request.url.params["identifier"] in ("urn:dicom:uid|urn:oid:" + group.uid, "|1CT1")
            return searchset()
        posted.append(json.loads(request.content))
        return created("Patient/p1", "ImagingStudy/s1")

    tally = run(handler, group)
    (bundle,) = posted
    assert [entry["request"]["method"] for entry in bundle["entry"]] == ["PUT", "POST"]
    assert (tally.studies_created, tally.patients_created, tally.series_added, tally.instances_added) == (1, 1, 1, 1)


def test_a_412_is_retried_then_reported() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return searchset()
        issue = {"severity": "error", "code": "conflict", "diagnostics": "stale"}
        return httpx.Response(412, json={"resourceType": "OperationOutcome", "issue": [issue]})

    tally = run(handler, ct_small())
    assert tally.failed == [(ct_small().uid, "still changing under concurrent writes: HTTP 412: stale")]


def test_a_server_without_search_stops_the_import_with_a_clear_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(405, json={"resourceType": "OperationOutcome",
                                         "issue": [{"severity": "error", "code": "not-supported"}]})  # fmt: skip

    with pytest.raises(ServerUnsupported, match=r"does not support search \(GET ImagingStudy\?identifier="):
        run(handler, ct_small())
