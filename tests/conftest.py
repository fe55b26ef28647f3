"""Shared fixtures: an app on a fresh database, an in-process client, the seed's example resources."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from fhir_imaging.app import create_app
from fhir_imaging.config import Settings

BASE = "http://testserver/baseR4"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"

SEED_STUDY: dict[str, Any] = {
    "resourceType": "ImagingStudy",
    "status": "available",
    "subject": {"reference": "Patient/patient-001"},
    "started": "2024-06-15T10:30:00Z",
    "modality": [
        {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT", "display": "Computed Tomography"}
    ],
    "description": "CT Chest with contrast",
    "numberOfSeries": 3,
    "numberOfInstances": 256,
    "procedureCode": [
        {"coding": [{"system": "http://snomed.info/sct", "code": "169069000", "display": "CT of chest"}]}
    ],
}

SEED_PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "identifier": [{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12345"}],
    "name": [{"family": "Chalmers", "given": ["Peter", "James"]}],
    "gender": "male",
    "birthDate": "1974-12-25",
}


@pytest.fixture
def study() -> dict[str, Any]:
    return copy.deepcopy(SEED_STUDY)


@pytest.fixture
def patient() -> dict[str, Any]:
    return copy.deepcopy(SEED_PATIENT)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(database=f"sqlite:///{tmp_path / 'test.db'}", sqlite_synchronous="normal")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), base_url=BASE) as test_client:
        yield test_client
