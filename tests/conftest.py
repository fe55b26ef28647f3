"""Shared fixtures: an app on a fresh database, an in-process client, the seed's example resources."""

from __future__ import annotations

import copy
import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from fhir_imaging import logs
from fhir_imaging.app import create_app
from fhir_imaging.config import Settings
from tests.shared_data import shared_dir


@pytest.fixture(autouse=True)
def _logging_left_as_found() -> Iterator[None]:
    """A test that runs a command in process (``cli.main``) installs the server's log handler on the stderr pytest
    captures for that test: put logging back, so later tests' threads do not write to a closed capture."""
    root = logging.getLogger()
    handlers, level, handler = root.handlers[:], root.level, logs._handler
    yield
    root.handlers, logs._handler = handlers, handler
    root.setLevel(level)


BASE = "http://testserver/baseR4"
SHARED = shared_dir()  # the third-party test data shipped in tests/data (see tests/shared_data.py)

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


POSTGRES_URL = os.environ.get("FHIR_IMAGING_TEST_POSTGRES")
BACKENDS = [
    pytest.param("sqlite"),
    pytest.param(
        "postgres",
        marks=pytest.mark.skipif(
            not POSTGRES_URL, reason="FHIR_IMAGING_TEST_POSTGRES is not set (scripts/test starts a PostgreSQL)"
        ),
    ),
]


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database on the test server; dropped afterwards."""
    import psycopg

    assert POSTGRES_URL
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database URL on each backend: every test using it runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
    else:
        with fresh_postgres_database() as url:
            yield url


@pytest.fixture
def settings(database: str) -> Settings:
    return Settings(database=database, sqlite_synchronous="normal", pool_size=4)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), base_url=BASE) as test_client:
        yield test_client
