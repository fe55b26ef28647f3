"""The built-in token endpoint (``--auth-clients``, SMART Backend Services): registered clients obtain short-lived
access tokens with signed client assertions; replays, wrong audiences, long-lived or badly signed assertions and
unregistered clients are refused with RFC 6749 errors; the tokens are this server's, checked like any other.

Spec: https://hl7.org/fhir/smart-app-launch/backend-services.html, RFC 7523, RFC 6749 §5.2."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.testclient import TestClient

from fhir_imaging.app import create_app
from fhir_imaging.auth.backend import ASSERTION_TYPE, granted_scopes
from fhir_imaging.auth.keys import public_jwk, thumbprint
from fhir_imaging.config import Settings
from tests.auth.issuer import Issuer, running_issuer
from tests.conftest import BASE

TOKEN_URL = f"{BASE}/auth/token"
STUDY: dict[str, Any] = {"resourceType": "ImagingStudy", "status": "available", "subject": {"reference": "Patient/p1"}}
EC_KEY = ec.generate_private_key(ec.SECP384R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def remote_jwks() -> Iterator[Issuer]:
    """An HTTP server publishing a client's JWKS (the tests' OpenID issuer serves its keys at /jwks)."""
    with running_issuer() as running:
        running.rotate("ES384")
        yield running


def clients_file(folder: Path, remote: Issuer | None = None) -> Path:
    entries: list[dict[str, Any]] = [
        {"client_id": "bridge", "scope": "system/*.cruds", "jwks": {"keys": [public_jwk(EC_KEY)]}},
        {"client_id": "rsa-reader", "scope": "system/ImagingStudy.rs system/Patient.r",
         "jwks": {"keys": [public_jwk(RSA_KEY, kid="rsa-1")]}},
    ]  # fmt: skip
    if remote is not None:
        entries.append({"client_id": "remote", "scope": "system/*.rs", "jwks_url": f"{remote.url}/jwks"})
    path = folder / "clients.json"
    path.write_text(json.dumps(entries))
    return path


def settings_for(folder: Path, remote: Issuer | None = None) -> Settings:
    return Settings(
        database=f"sqlite:///{folder / 'backend.db'}",
        auth_clients=str(clients_file(folder, remote)),
        public_url=BASE,
    )


@pytest.fixture
def server(tmp_path: Path, remote_jwks: Issuer) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(tmp_path, remote_jwks)), base_url=BASE) as client:
        yield client


def assertion(
    client_id: str = "bridge",
    key: Any = EC_KEY,
    algorithm: str = "ES384",
    kid: str | None = None,
    **claims: Any,
) -> str:
    now = int(time.time())
    payload = {"iss": client_id, "sub": client_id, "aud": TOKEN_URL, "exp": now + 240, "iat": now,
               "jti": uuid.uuid4().hex}  # fmt: skip
    payload.update(claims)
    payload = {name: value for name, value in payload.items() if value is not None}
    kid = kid or (public_jwk(key)["kid"] if algorithm in ("ES384", "RS384") else "x")
    return jwt.encode(payload, key, algorithm=algorithm, headers={"kid": kid})


def request_token(server: TestClient, signed: str, scope: str = "system/*.cruds", **fields: str) -> Any:
    form = {"grant_type": "client_credentials", "scope": scope, "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": signed, **fields}  # fmt: skip
    return server.post("/auth/token", data=form)


def refused(response: Any, error: str, mentioning: str = "") -> None:
    assert response.status_code == 400, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["error"] == error, body
    assert mentioning in body["error_description"], body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- the token endpoint answers ------------------------------------------------------------------------------------


def test_an_es384_client_obtains_a_token_that_the_server_accepts(server: TestClient) -> None:
    response = request_token(server, assertion())
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store" and response.headers["pragma"] == "no-cache"
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 300 and body["scope"] == "system/*.cruds"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["iss"] == BASE and claims["aud"] == BASE and claims["sub"] == "bridge"
    assert claims["exp"] - claims["iat"] == 300
    assert server.get("/ImagingStudy").status_code == 401
    created = server.post("/ImagingStudy", json=STUDY, headers=bearer(body["access_token"]))
    assert created.status_code == 201, created.text


def test_an_rs384_client_gets_the_scopes_its_registration_covers(server: TestClient) -> None:
    signed = assertion("rsa-reader", RSA_KEY, "RS384", kid="rsa-1")
    response = request_token(server, signed, scope="system/*.cruds")
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "system/ImagingStudy.rs system/Patient.r"
    token = response.json()["access_token"]
    assert server.get("/ImagingStudy", headers=bearer(token)).status_code == 200
    assert server.get("/Patient", headers=bearer(token)).status_code == 403  # r, not s
    assert server.post("/ImagingStudy", json=STUDY, headers=bearer(token)).status_code == 403


def test_a_client_publishing_its_keys_at_a_url(server: TestClient, remote_jwks: Issuer) -> None:
    key, algorithm = remote_jwks.keys[remote_jwks.current]
    signed = assertion("remote", key, algorithm, kid=remote_jwks.current)
    response = request_token(server, signed, scope="system/ImagingStudy.rs")
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "system/ImagingStudy.rs"
    new_kid = remote_jwks.rotate("ES384")  # a key published later is found (the JWKS is fetched again)
    new_key, _ = remote_jwks.keys[new_kid]
    time.sleep(1.1)  # the JWKS is fetched again for an unknown kid at most once a second
    again = request_token(server, assertion("remote", new_key, "ES384", kid=new_kid))
    assert again.status_code == 200, again.text


# --- refusals -------------------------------------------------------------------------------------------------------


def test_a_replayed_assertion_is_refused(server: TestClient) -> None:
    signed = assertion()
    assert request_token(server, signed).status_code == 200
    refused(request_token(server, signed), "invalid_client", "jti")


def test_a_replay_is_refused_by_another_server_process_on_the_same_database(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    signed = assertion()
    with (
        TestClient(create_app(settings), base_url=BASE) as first,
        TestClient(create_app(settings), base_url=BASE) as second,
    ):
        assert request_token(first, signed).status_code == 200
        refused(request_token(second, signed), "invalid_client", "jti")


@pytest.mark.parametrize(
    ("claims", "mentioning"),
    [
        ({"aud": "https://elsewhere.example.org/token"}, "aud"),
        ({"aud": BASE}, "aud"),  # the FHIR base is not the token endpoint
        ({"exp": int(time.time()) + 3600}, "five minutes"),
        ({"exp": int(time.time()) - 120}, "expired"),
        ({"jti": None}, "jti"),
        ({"exp": None}, "exp"),
        ({"sub": "someone-else"}, "sub"),
    ],
)
def test_assertions_with_bad_claims_are_refused(server: TestClient, claims: dict[str, Any], mentioning: str) -> None:
    refused(request_token(server, assertion(**claims)), "invalid_client", mentioning)


def test_assertions_from_unknown_clients_or_keys_are_refused(server: TestClient) -> None:
    refused(request_token(server, assertion("stranger")), "invalid_client", "registered")
    forged = assertion(key=OTHER_KEY, kid=public_jwk(EC_KEY)["kid"])  # the registered kid, another key
    refused(request_token(server, forged), "invalid_client", "not valid")
    refused(request_token(server, assertion(key=OTHER_KEY)), "invalid_client", "no key")


@pytest.mark.parametrize("algorithm", ["ES256", "RS256", "HS256", "none"])
def test_assertions_signed_with_other_algorithms_are_refused(server: TestClient, algorithm: str) -> None:
    key: Any = {"ES256": ec.generate_private_key(ec.SECP256R1()), "RS256": RSA_KEY, "HS256": "a" * 32,
                "none": None}[algorithm]  # fmt: skip
    refused(request_token(server, assertion(key=key, algorithm=algorithm)), "invalid_client", "signed with")


def test_a_tampered_assertion_is_refused(server: TestClient) -> None:
    header, payload, signature = assertion().split(".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    claims["iss"] = claims["sub"] = "rsa-reader"
    tampered = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    refused(request_token(server, f"{header}.{tampered}.{signature}"), "invalid_client")


def test_malformed_token_requests_are_refused(server: TestClient) -> None:
    refused(request_token(server, assertion(), grant_type="authorization_code"), "unsupported_grant_type")
    refused(request_token(server, assertion(), client_assertion_type="basic"), "invalid_request")
    refused(request_token(server, "not.a.jwt"), "invalid_client", "not a JWT")
    refused(request_token(server, assertion(), scope=""), "invalid_request", "scope")
    refused(request_token(server, assertion(), scope="patient/*.rs"), "invalid_scope")
    as_json = server.post("/auth/token", json={"grant_type": "client_credentials"})
    refused(as_json, "invalid_request", "x-www-form-urlencoded")
    twice = server.post(
        "/auth/token",
        content=b"grant_type=client_credentials&grant_type=client_credentials",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    refused(twice, "invalid_request", "more than once")
    huge = server.post(
        "/auth/token", content=b"a=" + b"b" * 100_000, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert huge.status_code == 413


# --- discovery, keys, restarts --------------------------------------------------------------------------------------


def test_discovery_names_the_token_endpoint(server: TestClient) -> None:
    smart = server.get("/.well-known/smart-configuration").json()
    assert smart["token_endpoint"] == TOKEN_URL and smart["jwks_uri"] == f"{BASE}/auth/jwks"
    assert smart["grant_types_supported"] == ["client_credentials"]
    assert smart["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert smart["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert "client-confidential-asymmetric" in smart["capabilities"]
    security = server.get("/metadata").json()["rest"][0]["security"]
    uris = {item["url"]: item["valueUri"] for item in security["extension"][0]["extension"]}
    assert uris == {"token": TOKEN_URL}
    (key,) = server.get("/auth/jwks").json()["keys"]
    assert key["alg"] == "ES384" and key["kid"] == thumbprint(key) and "d" not in key


def test_the_server_key_outlives_a_restart(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    with TestClient(create_app(settings), base_url=BASE) as first:
        token = request_token(first, assertion()).json()["access_token"]
        kid = first.get("/auth/jwks").json()["keys"][0]["kid"]
    with TestClient(create_app(settings), base_url=BASE) as second:
        assert second.get("/auth/jwks").json()["keys"][0]["kid"] == kid
        assert second.get("/ImagingStudy", headers=bearer(token)).status_code == 200


def test_a_token_signed_by_another_server_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with TestClient(create_app(settings_for(tmp_path / "a")), base_url=BASE) as first:
        token = request_token(first, assertion()).json()["access_token"]
    with TestClient(create_app(settings_for(tmp_path / "b")), base_url=BASE) as other:
        response = other.get("/ImagingStudy", headers=bearer(token))
        assert response.status_code == 401 and "key" in response.json()["issue"][0]["diagnostics"]


def test_without_registered_clients_there_is_no_token_endpoint(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(database=f"sqlite:///{tmp_path / 'x.db'}")), base_url=BASE) as client:
        assert client.post("/auth/token", data={"grant_type": "client_credentials"}).status_code == 404
        assert client.get("/auth/jwks").status_code == 404


# --- pure parts ------------------------------------------------------------------------------------------------------


def test_rfc_7638_thumbprint_example() -> None:
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjB"
        "ZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZ"
        "gnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIq"
        "bw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


LAB = "system/Observation.rs?category=laboratory"


@pytest.mark.parametrize(
    ("requested", "allowed", "granted"),
    [
        ("system/*.cruds", ("system/*.cruds",), ["system/*.cruds"]),
        ("system/ImagingStudy.rs", ("system/*.cruds",), ["system/ImagingStudy.rs"]),
        ("system/*.cruds", ("system/ImagingStudy.rs", "system/Patient.r"),
         ["system/ImagingStudy.rs", "system/Patient.r"]),
        ("system/*.rs", ("system/*.cruds",), ["system/*.rs"]),
        ("user/*.rs", ("system/*.cruds",), []),
        ("patient/*.rs openid", ("system/*.rs",), []),
        ("system/*.read system/*.read", ("system/*.rs",), ["system/*.read"]),
        (LAB, ("system/Observation.rs",), [LAB]),
        ("system/Observation.rs", (LAB,), [LAB]),
    ],
)  # fmt: skip
def test_granted_scopes(requested: str, allowed: tuple[str, ...], granted: list[str]) -> None:
    assert granted_scopes(requested, allowed) == granted


def test_token_requests_are_audited_without_assertions_or_tokens(tmp_path: Path) -> None:
    from fhir_imaging.validation import Validator

    path = tmp_path / "audit.ndjson"
    settings = replace(settings_for(tmp_path), audit_log=str(path))
    signed = assertion()
    with TestClient(create_app(settings), base_url=BASE) as server:
        token = request_token(server, signed).json()["access_token"]
        refused(request_token(server, signed), "invalid_client")
    events = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert [(event["subtype"][0]["code"], event["outcome"]) for event in events] == [("110122", "0"), ("110122", "4")]
    assert events[0]["agent"][0]["who"]["identifier"]["value"] == "bridge"
    assert events[0]["outcomeDesc"] == "200 scope: system/*.cruds"
    assert events[1]["agent"][0]["who"]["identifier"]["value"] == "unknown"
    assert events[1]["outcomeDesc"] == "400 invalid_client"
    text = path.read_text()
    assert signed.split(".")[2] not in text and token.split(".")[2] not in text
    validator = Validator.load()
    for event in events:
        assert [issue for issue in validator.locate(event) if issue.severity in ("error", "fatal")] == []
