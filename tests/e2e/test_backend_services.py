"""End to end: SMART Backend Services with a real server process (``--auth-clients``) and the command-line clients
obtaining their own tokens: ``sync-dicomweb`` from a real Orthanc PACS, ``load`` and ``import-dicom``; tokens renewed
before they expire; a replayed assertion refused."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydicom.data import get_testdata_file

from fhir_imaging.auth.backend import ASSERTION_TYPE
from fhir_imaging.auth.backend_client import BackendServicesAuth
from fhir_imaging.auth.keys import load_private_key, public_jwk
from tests.e2e.orthanc import OrthancProcess, files_under, orthanc_holding
from tests.e2e.server import ServerProcess

pytestmark = pytest.mark.e2e

DICOMDIR_TESTS = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests"
TOKEN_LIFETIME = 33  # seconds: clients renew a token 30 s before it expires, so after 3 s here


def write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> Path:
    pkcs8 = serialization.PrivateFormat.PKCS8
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption()))
    return path


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("client-keys")
    return {
        "bridge": write_key(folder / "bridge.pem", ec.generate_private_key(ec.SECP384R1())),
        "loader": write_key(folder / "loader.pem", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    }


@pytest.fixture(scope="module")
def server(keys: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("backend-e2e")
    clients = [
        {"client_id": "pacs-bridge", "scope": "system/*.cruds",
         "jwks": {"keys": [public_jwk(load_private_key(keys["bridge"].read_bytes()))]}},
        {"client_id": "loader", "scope": "system/*.cu system/*.rs",
         "jwks": {"keys": [public_jwk(load_private_key(keys["loader"].read_bytes()))]}},
    ]  # fmt: skip
    (folder / "clients.json").write_text(json.dumps(clients))
    extra = ("--auth-clients", str(folder / "clients.json"), "--auth-token-lifetime", str(TOKEN_LIFETIME))
    running = ServerProcess(f"sqlite:///{folder / 'backend.db'}", extra=extra, log=folder / "server.log")
    yield running
    running.stop()


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[OrthancProcess]:
    files = [*files_under(DICOMDIR_TESTS / "98892001"), str(get_testdata_file("CT_small.dcm"))]
    with orthanc_holding(tmp_path / "orthanc", files) as pacs:
        yield pacs


def command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fhir_imaging", *args], capture_output=True, text=True, timeout=180)


def token_request(server: ServerProcess, key: Path, scope: str = "system/*.cruds") -> dict[str, str]:
    """The form of a token request of the pacs-bridge client, with a fresh assertion."""
    auth = BackendServicesAuth(server.base, "pacs-bridge", load_private_key(key.read_bytes()))
    return {"grant_type": "client_credentials", "scope": scope, "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": auth.assertion(f"{server.base}/auth/token")}  # fmt: skip


def bridge_token(server: ServerProcess, key: Path) -> str:
    answer = httpx.post(f"{server.base}/auth/token", data=token_request(server, key))
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["access_token"]
    return token


def studies(server: ServerProcess, token: str) -> list[dict[str, object]]:
    bundle = httpx.get(
        f"{server.base}/ImagingStudy", params={"_count": "100"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert bundle.status_code == 200, bundle.text
    return [entry["resource"] for entry in bundle.json().get("entry", [])]


def test_sync_dicomweb_obtains_its_own_token(
    server: ServerProcess, keys: dict[str, Path], orthanc: OrthancProcess
) -> None:
    unauthorized = command("sync-dicomweb", orthanc.dicomweb, "--server", server.base, "--no-progress")
    assert unauthorized.returncode != 0 and "401" in unauthorized.stderr + unauthorized.stdout
    done = command(
        "sync-dicomweb", orthanc.dicomweb, "--server", server.base, "--no-progress",
        "--client-id", "pacs-bridge", "--private-key", str(keys["bridge"]),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = studies(server, bridge_token(server, keys["bridge"]))
    uids = {study["identifier"][0]["value"] for study in found}  # type: ignore[index]
    assert "urn:oid:1.3.6.1.4.1.5962.1.2.1.20040119072730.12322" in uids and len(found) >= 2


def test_load_and_import_dicom_with_an_rsa_key(server: ServerProcess, keys: dict[str, Path], tmp_path: Path) -> None:
    patient = {"resourceType": "Patient", "id": "loaded-1", "name": [{"family": "Loaded"}]}
    (tmp_path / "patient.json").write_text(json.dumps(patient))
    auth = ("--client-id", "loader", "--private-key", str(keys["loader"]))
    loaded = command("load", str(tmp_path / "patient.json"), "--server", server.base, *auth)
    assert loaded.returncode == 0, loaded.stderr
    imported = command("import-dicom", str(get_testdata_file("MR_small.dcm")), "--server", server.base, *auth)
    assert imported.returncode == 0, imported.stderr
    assert "1 created" in imported.stdout
    wrong_key = command("load", str(tmp_path / "patient.json"), "--server", server.base,
                        "--client-id", "loader", "--private-key", str(keys["bridge"]))  # fmt: skip
    assert wrong_key.returncode == 2 and "no access token" in wrong_key.stderr and "invalid_client" in wrong_key.stderr


def test_a_token_given_as_it_is(server: ServerProcess, keys: dict[str, Path], tmp_path: Path) -> None:
    token = bridge_token(server, keys["bridge"])
    (tmp_path / "p.json").write_text(json.dumps({"resourceType": "Patient", "id": "given-token"}))
    env_run = subprocess.run(
        [sys.executable, "-m", "fhir_imaging", "load", str(tmp_path / "p.json"), "--server", server.base],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "FHIR_IMAGING_ACCESS_TOKEN": token},
    )  # fmt: skip
    assert env_run.returncode == 0, env_run.stderr
    assert command("load", str(tmp_path / "p.json"), "--server", server.base, "--token", token).returncode == 0


def test_tokens_are_renewed_before_they_expire(server: ServerProcess, keys: dict[str, Path]) -> None:
    auth = BackendServicesAuth(server.base, "pacs-bridge", load_private_key(keys["bridge"].read_bytes()))
    sent: list[str] = []

    async def run() -> None:
        async def record(request: httpx.Request) -> None:
            if request.url.path.endswith("/ImagingStudy"):
                sent.append(request.headers["authorization"])

        async with httpx.AsyncClient(auth=auth, event_hooks={"request": [record]}) as client:
            assert (await client.get(f"{server.base}/ImagingStudy")).status_code == 200
            assert (await client.get(f"{server.base}/ImagingStudy")).status_code == 200
            await asyncio.sleep(TOKEN_LIFETIME - 30 + 0.5)
            assert (await client.get(f"{server.base}/ImagingStudy")).status_code == 200

    asyncio.run(run())
    assert sent[0] == sent[1] != sent[2]


def test_a_replayed_assertion_is_refused(server: ServerProcess, keys: dict[str, Path]) -> None:
    form = token_request(server, keys["bridge"], "system/*.rs")
    first = httpx.post(f"{server.base}/auth/token", data=form)
    assert first.status_code == 200, first.text
    replay = httpx.post(f"{server.base}/auth/token", data=form)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_client" and "jti" in replay.text
