"""``fhir-imaging load``: a folder of Bundles, NDJSON with a broken line, idempotent reloads."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from fhir_imaging.app import create_app
from fhir_imaging.cli import main
from fhir_imaging.config import Settings
from tests.conftest import BASE, SEED_PATIENT, SEED_STUDY, SHARED
from tests.e2e.server import running_server

SYNTHEA = SHARED / "data" / "synthea"


def _count(database: str, resource_type: str) -> int:
    with TestClient(create_app(Settings(database=database)), base_url=BASE) as client:
        bundle = client.get(f"/{resource_type}/_history", params={"_count": 1000}).json()
        return len({entry["fullUrl"] for entry in bundle.get("entry", [])})


def _ndjson(path: Path, lines: list[Any]) -> Path:
    path.write_bytes(b"\n".join(line if isinstance(line, bytes) else orjson.dumps(line) for line in lines) + b"\n")
    return path


def test_ndjson_with_a_broken_line_loads_the_rest_and_reports_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = f"sqlite:///{tmp_path / 'load.db'}"
    broken_study = dict(SEED_STUDY, status="finished")
    path = _ndjson(
        tmp_path / "studies.ndjson",
        [dict(SEED_PATIENT, id="p1"), dict(SEED_STUDY, id="s1"), b"{not json", broken_study, dict(SEED_STUDY)],
    )
    assert main(["load", str(path), "--database", database, "--batch-size", "10"]) == 1
    err = capsys.readouterr().err
    assert f"{path}:3" in err and "not JSON" in err
    assert f"{path}:4" in err and "ImagingStudy.status" in err
    assert "loaded: 3" in err and "failed: 2" in err
    assert _count(database, "ImagingStudy") == 2
    assert _count(database, "Patient") == 1


def test_reloading_resources_with_ids_keeps_one_of_each(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'again.db'}"
    path = _ndjson(tmp_path / "p.ndjson", [dict(SEED_PATIENT, id=f"p{index}") for index in range(5)])
    assert main(["load", str(path), "--database", database]) == 0
    assert main(["load", str(path), "--database", database]) == 0
    assert _count(database, "Patient") == 5


def test_folder_of_transaction_bundles_and_a_collection(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for source in sorted(SYNTHEA.glob("*.json"))[:3]:
        shutil.copy(source, folder / source.name)
    collection = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": dict(SEED_STUDY)}]}
    (folder / "collection.json").write_bytes(orjson.dumps(collection))
    expected_studies = 1 + sum(
        1
        for source in sorted(SYNTHEA.glob("*.json"))[:3]
        for entry in orjson.loads(source.read_bytes())["entry"]
        if entry["resource"]["resourceType"] == "ImagingStudy"
    )
    database = f"sqlite:///{tmp_path / 'folder.db'}"
    assert main(["load", str(folder), "--database", database]) == 0
    assert "failed: 0" in capsys.readouterr().err
    assert _count(database, "ImagingStudy") == expected_studies


def test_load_through_a_running_server(tmp_path: Path) -> None:
    path = _ndjson(tmp_path / "p.ndjson", [dict(SEED_PATIENT, id="over-http")])
    with running_server(f"sqlite:///{tmp_path / 'server.db'}") as server:
        assert main(["load", str(path), "--server", server.base]) == 0
        import httpx

        assert httpx.get(f"{server.base}/Patient/over-http").status_code == 200
