"""The server as an OAuth 2 resource server (``--auth-issuer``): bearer JWTs checked against a real HTTP issuer
(tests/auth/issuer.py), 401 for every bad token, 403 for a missing scope, on every path; discovery stays public."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from starlette.testclient import TestClient

from fhir_imaging.app import create_app
from fhir_imaging.cli import main
from fhir_imaging.config import Settings
from tests.auth.issuer import Issuer, running_issuer
from tests.conftest import BASE

AUDIENCE = BASE
STUDY: dict[str, Any] = {"resourceType": "ImagingStudy", "status": "available", "subject": {"reference": "Patient/p1"}}


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    with running_issuer() as running:
        yield running


@pytest.fixture
def server(issuer: Issuer, tmp_path: Any) -> Iterator[TestClient]:
    settings = Settings(database=f"sqlite:///{tmp_path / 'auth.db'}", auth_issuer=issuer.url, auth_audience=AUDIENCE)
    with TestClient(create_app(settings), base_url=BASE) as client:
        yield client


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _assert_401(response: Any) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "login"


def test_a_valid_token_is_served(server: TestClient, issuer: Issuer) -> None:
    token = issuer.token()
    created = server.post("/ImagingStudy", json=STUDY, headers=_bearer(token))
    assert created.status_code == 201, created.text
    read = server.get(created.headers["location"].split("/_history")[0].removeprefix(BASE), headers=_bearer(token))
    assert read.status_code == 200


def test_without_a_token_every_fhir_path_is_401(server: TestClient) -> None:
    for method, path in [("GET", "/ImagingStudy/x"), ("GET", "/ImagingStudy"), ("GET", "/_history"), ("POST", "/"),
                         ("GET", "/Patient/p1/ImagingStudy"), ("POST", "/ImagingStudy/$validate"),
                         ("DELETE", "/ImagingStudy/x"), ("GET", "/ImagingStudy/x/_history/1")]:  # fmt: skip
        _assert_401(server.request(method, path, json={} if method == "POST" else None))


def test_discovery_stays_public(server: TestClient, issuer: Issuer) -> None:
    metadata = server.get("/metadata")
    assert metadata.status_code == 200
    security = metadata.json()["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = {item["url"]: item["valueUri"] for item in security["extension"][0]["extension"]}
    assert uris == {"token": f"{issuer.url}/token"}
    smart = server.get("/.well-known/smart-configuration")
    assert smart.status_code == 200 and smart.headers["content-type"].startswith("application/json")
    assert smart.json()["token_endpoint"] == f"{issuer.url}/token"
    assert "permission-v2" in smart.json()["capabilities"]


def test_bad_tokens_are_401(server: TestClient, issuer: Issuer) -> None:
    good = issuer.token()
    header, payload, signature = good.split(".")
    claims = jwt.decode(good, options={"verify_signature": False})
    other = Issuer(issuer.url)
    other.rotate()
    forged = other.token(kid=other.current)
    forged_same_kid = jwt.encode(
        claims, other.keys[other.current][0], algorithm="RS256", headers={"kid": issuer.current}
    )
    public_pem = (
        issuer.keys[issuer.current][0]
        .public_key()
        .public_bytes(
            encoding=__import__("cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]).Encoding.PEM,
            format=__import__(
                "cryptography.hazmat.primitives.serialization", fromlist=["PublicFormat"]
            ).PublicFormat.SubjectPublicKeyInfo,
        )
    )
    bad = {
        "expired": issuer.token(lifetime=-120),
        "wrong audience": issuer.token(audience="http://elsewhere/baseR4"),
        "wrong issuer": issuer.token(iss="http://127.0.0.1:1/other"),
        "not yet valid": issuer.token(nbf=int(time.time()) + 600),
        "unknown key": forged,
        "bad signature": forged_same_kid,
        "alg none": f"{_b64({'alg': 'none', 'kid': issuer.current})}.{payload}.",
        "tampered payload": f"{header}.{_b64({**claims, 'scope': 'system/*.cruds', 'sub': 'admin'})}.{signature}",
        "hmac with the public key": _hmac(claims, public_pem, issuer.current),
        "garbage": "not-a-jwt",
        "no exp": jwt.encode(
            {k: v for k, v in claims.items() if k != "exp"},
            issuer.keys[issuer.current][0],
            algorithm="RS256",
            headers={"kid": issuer.current},
        ),
    }
    for name, token in bad.items():
        response = server.get("/ImagingStudy", headers=_bearer(token))
        assert response.status_code == 401, (name, response.text)
    _assert_401(server.get("/ImagingStudy", headers={"Authorization": f"Basic {good}"}))


def _hmac(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    header = _b64({"alg": "HS256", "typ": "JWT", "kid": kid})
    body = _b64(claims)
    signature = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def test_a_rotated_key_is_fetched_without_a_restart(server: TestClient, issuer: Issuer) -> None:
    assert server.get("/ImagingStudy", headers=_bearer(issuer.token())).status_code == 200
    issuer.rotate("ES256")
    time.sleep(1.1)  # the JWKS refresh cooldown
    assert server.get("/ImagingStudy", headers=_bearer(issuer.token())).status_code == 200


# (method, path, body, the permission letter it needs)
INTERACTIONS: list[tuple[str, str, Any, str]] = [
    ("GET", "/ImagingStudy/s1", None, "r"),
    ("GET", "/ImagingStudy/s1/_history/1", None, "r"),
    ("GET", "/ImagingStudy/s1/_history", None, "r"),
    ("GET", "/ImagingStudy/_history", None, "r"),
    ("GET", "/ImagingStudy?status=available", None, "s"),
    ("GET", "/Patient/p1/ImagingStudy", None, "s"),
    ("POST", "/ImagingStudy/_search", None, "s"),
    ("POST", "/ImagingStudy", STUDY, "c"),
    ("PUT", "/ImagingStudy/s1", {**STUDY, "id": "s1"}, "u"),
    ("PATCH", "/ImagingStudy/s1", [{"op": "replace", "path": "/status", "value": "cancelled"}], "u"),
    ("DELETE", "/ImagingStudy/s1", None, "d"),
]


@pytest.mark.parametrize(("method", "path", "body", "needed"), INTERACTIONS)
@pytest.mark.parametrize("context", ["user", "system", "patient"])
@pytest.mark.parametrize("granted", ["r", "s", "c", "u", "d", "cruds"])
def test_scope_matrix(
    server: TestClient, issuer: Issuer, method: str, path: str, body: Any, needed: str, context: str, granted: str
) -> None:
    """Every interaction × every permission × every context: allowed exactly when the scope names the permission
    (a patient/ scope without a patient in the token allows nothing)."""
    admin = _bearer(issuer.token("system/*.cruds"))
    assert server.put("/ImagingStudy/s1", json={**STUDY, "id": "s1"}, headers=admin).status_code in (200, 201)
    headers = _bearer(issuer.token(f"{context}/ImagingStudy.{granted}"))
    if method == "PATCH":
        headers["Content-Type"] = "application/json-patch+json"
    elif method == "POST" and path.endswith("_search"):
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    content = json.dumps(body) if body is not None else None
    response = server.request(
        method, path, content=content, headers={"Content-Type": "application/fhir+json", **headers}
    )
    allowed = needed in granted and context != "patient"
    if allowed:
        assert response.status_code < 400, response.text
    else:
        assert response.status_code == 403, response.text
        assert response.headers["www-authenticate"] == 'Bearer error="insufficient_scope"'
        assert response.json()["issue"][0]["code"] == "forbidden"


def test_a_transaction_needs_the_scopes_of_every_entry(server: TestClient, issuer: Issuer) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": STUDY, "request": {"method": "POST", "url": "ImagingStudy"}},
            {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
        ],
    }
    token = issuer.token("system/ImagingStudy.c")
    refused = server.post("/", json=bundle, headers=_bearer(token))
    assert refused.status_code == 403, refused.text
    assert "Bundle.entry[1]" in refused.json()["issue"][0]["expression"]
    admin = _bearer(issuer.token("system/*.rs"))
    assert server.get("/ImagingStudy", headers=admin).json().get("total") == 0  # nothing of it was written
    allowed = server.post("/", json=bundle, headers=_bearer(issuer.token("system/ImagingStudy.c system/Patient.c")))
    assert allowed.status_code == 200, allowed.text


def test_include_leaves_out_types_the_token_may_not_read(server: TestClient, issuer: Issuer) -> None:
    admin = _bearer(issuer.token("system/*.cruds"))
    server.put("/Patient/p1", json={"resourceType": "Patient", "id": "p1"}, headers=admin)
    server.put("/ImagingStudy/s1", json={**STUDY, "id": "s1"}, headers=admin)
    only_studies = _bearer(issuer.token("system/ImagingStudy.rs"))
    bundle = server.get("/ImagingStudy?_include=ImagingStudy:subject", headers=only_studies).json()
    assert [entry["resource"]["resourceType"] for entry in bundle["entry"]] == ["ImagingStudy"]
    both = _bearer(issuer.token("system/ImagingStudy.rs system/Patient.r"))
    bundle = server.get("/ImagingStudy?_include=ImagingStudy:subject", headers=both).json()
    assert sorted(entry["resource"]["resourceType"] for entry in bundle["entry"]) == ["ImagingStudy", "Patient"]


def test_serving_beyond_loopback_without_authorization_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--host", "0.0.0.0", "--database", "sqlite:////nonexistent/x.db"]) == 2
    assert "--allow-anonymous" in capsys.readouterr().err


def test_chains_and_has_need_search_on_the_types_they_reach(server: TestClient, issuer: Issuer) -> None:
    only_studies = _bearer(issuer.token("system/ImagingStudy.rs"))
    chained = server.get("/ImagingStudy?subject:Patient.name=Smith", headers=only_studies)
    assert chained.status_code == 403 and "Patient" in chained.text
    only_patients = _bearer(issuer.token("system/Patient.rs"))
    has = server.get("/Patient?_has:ImagingStudy:subject:status=available", headers=only_patients)
    assert has.status_code == 403 and "ImagingStudy" in has.text
    both = _bearer(issuer.token("system/ImagingStudy.rs system/Patient.s"))
    assert server.get("/ImagingStudy?subject:Patient.name=Smith", headers=both).status_code == 200


def test_health_probes_need_no_token(server: TestClient) -> None:
    root = BASE.removesuffix("/baseR4")
    assert server.get(f"{root}/healthz").status_code == 200
    assert server.get(f"{root}/readyz").json() == {"status": "ready"}
