"""The data set of the study browser's tests (and of its screenshots in docs/): loaded into a running server the way
a site would load it, with ``fhir-imaging load`` and ``fhir-imaging import-dicom``.

- generated studies (bench/generate.py): patients with MRNs, nine modalities, dates over 2019–2025, accession
  numbers, descriptions, series with instances, and the Encounter, ServiceRequest and Practitioners they point at;
- pydicom's DICOMDIR test set (CT and MR studies of two patients), imported from the files;
- a few made here: studies of today and of five days ago (the date quick picks), a study with an Endpoint and a
  second version (the WADO-RS address, the version diff) and a DiagnosticReport on it, and a patient whose name is
  markup (it must show as text).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pydicom

from bench.generate import generate_corpus

DICOMDIR = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests" / "DICOMDIR"
VIEWER = "https://viewer.example/viewer?StudyInstanceUIDs={study_uid}"
WADO_ROOT = "https://pacs.example/dicom-web"
ENDPOINT_TYPES = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
MARKUP_NAME = '<img src=x onerror="window.injected=1">'
SCALE = 110
SEED = 7


@dataclass(frozen=True)
class BrowserData:
    featured_study: str  # has an Endpoint, a report and two versions
    featured_uid: str
    featured_patient: str
    markup_patient: str
    recent_studies: tuple[str, ...]


def _run(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "fhir_imaging", *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]


def _put(base: str, resource: dict[str, Any]) -> dict[str, Any]:
    answer = httpx.put(
        f"{base}/{resource['resourceType']}/{resource['id']}",
        content=orjson.dumps(resource),
        headers={"Content-Type": "application/fhir+json"},
        timeout=30,
    )
    assert answer.status_code in (200, 201), answer.text
    body: dict[str, Any] = answer.json()
    return body


def _instant(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S+00:00")


def load_browser_data(base: str, workdir: Path) -> BrowserData:
    corpus = list(generate_corpus(SCALE, SEED))
    ndjson = workdir / "corpus.ndjson"
    ndjson.write_bytes(b"\n".join(orjson.dumps(resource) for resource in corpus) + b"\n")
    _run("load", str(ndjson), "--server", base)
    _run("import-dicom", str(DICOMDIR), "--server", base)

    studies = [r for r in corpus if r["resourceType"] == "ImagingStudy"]
    featured = dict(studies[0])
    uid = next(i["value"] for i in featured["identifier"] if i["system"] == "urn:dicom:uid").removeprefix("urn:oid:")
    _put(
        base,
        {
            "resourceType": "Endpoint",
            "id": "pacs-wado",
            "status": "active",
            "name": "Main PACS",
            "connectionType": {
                "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                "code": "dicom-wado-rs",
            },
            "payloadType": [{"text": "DICOM WADO-RS"}],
            "address": WADO_ROOT,
        },
    )
    featured["endpoint"] = [{"reference": "Endpoint/pacs-wado"}]
    featured["description"] = f"{featured['description']} (reviewed)"
    _put(base, featured)
    _put(
        base,
        {
            "resourceType": "DiagnosticReport",
            "id": "report-1",
            "status": "final",
            "code": {"text": "Radiology report"},
            "subject": featured["subject"],
            "imagingStudy": [{"reference": f"ImagingStudy/{featured['id']}"}],
            "issued": "2025-01-02T10:00:00Z",
            "conclusion": "No acute findings.",
        },
    )

    now = datetime.now(UTC).replace(microsecond=0)
    recent = []
    for index, days in enumerate((0, 5)):
        study = dict(studies[1 + index])
        study["id"] = f"recent-{index}"
        study["identifier"] = [
            {
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
                "value": f"RECENT{index}",
            }
        ]
        study["started"] = _instant(now - timedelta(days=days, minutes=5))
        study.pop("series", None)
        study["numberOfSeries"] = 0
        study["numberOfInstances"] = 0
        _put(base, study)
        recent.append(study["id"])

    _put(
        base,
        {
            "resourceType": "Patient",
            "id": "markup",
            "name": [{"family": MARKUP_NAME, "given": ["<b>bold</b>"]}],
            "identifier": [{"value": "MRN-MARKUP"}],
        },
    )
    _put(
        base,
        {
            "resourceType": "ImagingStudy",
            "id": "markup-study",
            "status": "available",
            "subject": {"reference": "Patient/markup"},
            "started": "2020-02-02T10:00:00Z",
            "description": "<script>window.injected=2</script>",
            "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "OT"}],
        },
    )
    patient = featured["subject"]["reference"].split("/")[-1]
    return BrowserData(featured["id"], uid, patient, "markup", tuple(recent))
