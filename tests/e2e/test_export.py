"""End to end: ``fhir-imaging export`` against a real server process, the files loaded back into an empty server with
``fhir-imaging load`` (the same resources), and, with authorization, an export only its owner can see."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fhir_imaging.auth.backend_client import BackendServicesAuth
from fhir_imaging.auth.keys import load_private_key, public_jwk
from tests.e2e.server import ServerProcess, running_server

pytestmark = pytest.mark.e2e


def command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fhir_imaging", *args], capture_output=True, text=True, timeout=300)


def seed(base: str, studies: int = 60, headers: dict[str, str] | None = None) -> None:
    entries: list[dict[str, Any]] = []
    for number in range(studies // 3):
        entries.append({"resource": {"resourceType": "Patient", "id": f"p{number}", "name": [{"family": f"F{number}"}]},
                        "request": {"method": "PUT", "url": f"Patient/p{number}"}})  # fmt: skip
    for number in range(studies):
        study = {"resourceType": "ImagingStudy", "id": f"s{number}", "status": "available",
                 "subject": {"reference": f"Patient/p{number % (studies // 3)}"},
                 "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM",
                               "code": ("CT", "MR", "US")[number % 3]}]}  # fmt: skip
        entries.append({"resource": study, "request": {"method": "PUT", "url": f"ImagingStudy/s{number}"}})
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    answer = httpx.post(base, json=bundle, headers=headers or {}, timeout=60)
    assert answer.status_code == 200, answer.text


def everything(base: str, headers: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    found = {}
    for resource_type in ("Patient", "ImagingStudy"):
        url: str | None = f"{base}/{resource_type}?_count=1000"
        while url:
            bundle = httpx.get(url, headers=headers or {}).json()
            for entry in bundle.get("entry", []):
                resource = dict(entry["resource"])
                resource.pop("meta")
                found[f"{resource_type}/{resource['id']}"] = resource
            url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
    return found


def test_export_then_load_back_gives_the_same_resources(tmp_path: Path) -> None:
    with running_server(f"sqlite:///{tmp_path / 'source.db'}", extra=("--export-dir", str(tmp_path / "x"))) as source:
        seed(source.base)
        done = command("export", str(tmp_path / "out"), "--server", source.base, "--no-progress")
        assert done.returncode == 0, done.stderr
        assert "exported 80 resources in 2 files: ImagingStudy 60, Patient 20" in done.stdout
        manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
        assert {output["type"] for output in manifest["output"]} == {"Patient", "ImagingStudy"}
        original = everything(source.base)
        ct_only = command("export", str(tmp_path / "ct"), "--server", source.base, "--no-progress",
                          "--type", "ImagingStudy", "--type-filter", "ImagingStudy?modality=CT")  # fmt: skip
        assert ct_only.returncode == 0 and "ImagingStudy 20" in ct_only.stdout, ct_only.stderr
    with running_server(f"sqlite:///{tmp_path / 'copy.db'}") as copy:
        files = sorted(str(path) for path in (tmp_path / "out").glob("*.ndjson"))
        loaded = command("load", *files, "--server", copy.base)
        assert loaded.returncode == 0, loaded.stderr
        assert everything(copy.base) == original


def test_an_export_belongs_to_its_owner(tmp_path: Path) -> None:
    keys = {}
    clients = []
    for name, scope in (("exporter", "system/*.rs system/*.cu"), ("other", "system/*.rs")):
        key = ec.generate_private_key(ec.SECP384R1())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
        keys[name] = tmp_path / f"{name}.pem"
        keys[name].write_bytes(pem)
        clients.append({"client_id": name, "scope": scope, "jwks": {"keys": [public_jwk(load_private_key(pem))]}})
    (tmp_path / "clients.json").write_text(json.dumps(clients))
    extra = ("--auth-clients", str(tmp_path / "clients.json"), "--export-dir", str(tmp_path / "x"))
    with running_server(f"sqlite:///{tmp_path / 'auth.db'}", extra=extra) as server:
        auth = ("--client-id", "exporter", "--private-key", str(keys["exporter"]))
        assert command("load", *_seed_file(tmp_path), "--server", server.base, *auth).returncode == 0
        done = command("export", str(tmp_path / "out"), "--server", server.base, "--no-progress", *auth)
        assert done.returncode == 0, done.stderr
        manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
        assert manifest["requiresAccessToken"] is True
        file_url = manifest["output"][0]["url"]
        status_url = file_url.replace("$export-file", "$export-status").rsplit("/", 1)[0]
        assert httpx.get(file_url).status_code == 401
        assert httpx.get(status_url).status_code == 401
        other = BackendServicesAuth(server.base, "other", load_private_key(keys["other"].read_bytes()), "system/*.rs")
        with httpx.Client(auth=other) as client:
            assert client.get(status_url).status_code == 404  # not confirmed to exist
            assert client.get(file_url).status_code == 404
        refused = command("export", str(tmp_path / "no"), "--server", server.base, "--no-progress",
                          "--client-id", "other", "--private-key", str(keys["other"]),
                          "--scope", "system/ImagingStudy.rs", "--type", "Patient")  # fmt: skip
        assert refused.returncode == 2 and "answered 403" in refused.stderr, refused.stderr


def _seed_file(folder: Path) -> list[str]:
    path = folder / "seed.ndjson"
    lines = [orjson.dumps({"resourceType": "Patient", "id": f"a{n}"}) for n in range(5)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return [str(path)]


def test_an_export_whose_server_is_killed_is_finished_by_another(tmp_path: Path) -> None:
    """Two server processes on one database; the one running an export is killed with SIGKILL mid-way (caught
    running in the job table), and the other takes the job over once its lease lapses."""
    database = f"sqlite:///{tmp_path / 'shared.db'}"
    lease = ("--export-lease", "1", "--export-dir", str(tmp_path / "files"))
    with running_server(database, extra=lease) as first:
        seed(first.base, studies=3000)
        expected = everything(first.base)
    caught = None
    for _ in range(10):
        victim = ServerProcess(database, extra=lease)
        answer = httpx.get(f"{victim.base}/$export", headers={"Prefer": "respond-async"})
        assert answer.status_code == 202, answer.text
        status_url = answer.headers["content-location"]
        job_id = status_url.rsplit("/", 1)[1]
        # Until a first page is written, watched in the job table itself: asking the victim for its status would
        # take CPU from it and let the export finish first on a busy machine.
        with sqlite3.connect(tmp_path / "shared.db", timeout=10) as db:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                state, progress = db.execute(
                    "SELECT state, progress FROM export_job WHERE id = ?", (job_id,)
                ).fetchone()
                if state not in ("accepted", "running") or "resources written" in (progress or ""):
                    break
                time.sleep(0.002)
        victim.kill()
        with sqlite3.connect(tmp_path / "shared.db") as db:
            state, owner = db.execute("SELECT state, lease_owner FROM export_job WHERE id = ?", (job_id,)).fetchone()
        if state == "running":
            caught = (answer.headers["content-location"], owner)
            break
    assert caught is not None, "the export always finished before its server was killed"
    status_url, dead_runner = caught
    with running_server(database, extra=lease) as survivor:
        status_url = status_url.replace(status_url.split("/baseR4")[0], survivor.base.removesuffix("/baseR4"))
        deadline = time.monotonic() + 60
        while (answer := httpx.get(status_url)).status_code == 202 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert answer.status_code == 200, answer.text
        manifest = answer.json()
        exported = {}
        for output in manifest["output"]:  # URLs on the base of the kick-off (the dead one's port: no --public-url)
            url = survivor.base + output["url"].split("/baseR4", 1)[1]
            for line in httpx.get(url).content.splitlines():
                resource = orjson.loads(line)
                resource.pop("meta")
                exported[f"{resource['resourceType']}/{resource['id']}"] = resource
        assert exported == expected
        with sqlite3.connect(tmp_path / "shared.db") as db:
            (owner,) = db.execute(
                "SELECT lease_owner FROM export_job WHERE id = ?", (status_url.rsplit("/", 1)[1],)
            ).fetchone()
        assert owner != dead_runner
