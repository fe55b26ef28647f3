"""Formats, content negotiation and errors: every 4xx/5xx is an OperationOutcome naming what is wrong."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from fhir_imaging.app import create_app
from fhir_imaging.config import Settings
from tests.conftest import BASE


def _outcome(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"] and all({"severity", "code", "diagnostics"} <= set(issue) for issue in body["issue"])
    return body


def test_format_json_and_plain_json_accepted(client: TestClient) -> None:
    assert client.get("/metadata", params={"_format": "json"}).status_code == 200
    plain = client.get("/metadata", headers={"Accept": "application/json"})
    assert plain.status_code == 200 and plain.headers["content-type"].startswith("application/json")
    browser = client.get("/metadata", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert browser.status_code == 200


def test_pretty_output_is_indented(client: TestClient) -> None:
    assert b"\n  " in client.get("/metadata", params={"_pretty": "true"}).content
    assert b"\n" not in client.get("/metadata").content


def test_xml_accept_is_406_with_outcome(client: TestClient) -> None:
    response = client.get("/metadata", headers={"Accept": "application/fhir+xml"})
    assert response.status_code == 406
    assert _outcome(response)["issue"][0]["expression"] == ["Accept"]


def test_xml_format_param_is_406_with_outcome(client: TestClient) -> None:
    response = client.get("/metadata", params={"_format": "xml"})
    assert response.status_code == 406
    assert _outcome(response)["issue"][0]["expression"] == ["_format"]


def test_xml_body_is_415_with_outcome(client: TestClient) -> None:
    response = client.post(
        "/Patient", content=b"<Patient xmlns='http://hl7.org/fhir'/>", headers={"Content-Type": "application/fhir+xml"}
    )
    assert response.status_code == 415
    assert _outcome(response)["issue"][0]["expression"] == ["Content-Type"]


def test_form_body_is_415(client: TestClient) -> None:
    response = client.post("/Patient", content=b"a=b", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415
    _outcome(response)


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b"[1, 2]", b'"text"', b'{"resourceType": 5}', b"{}"],
    ids=["malformed", "empty", "array", "string", "type-not-string", "no-type"],
)
def test_unusable_body_is_400(client: TestClient, body: bytes) -> None:
    response = client.post("/Patient", content=body, headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == 400
    _outcome(response)


BOM = b"\xef\xbb\xbf"
FHIR_JSON = {"Content-Type": "application/fhir+json"}


def test_utf8_bom_before_a_json_body_is_accepted(client: TestClient) -> None:
    """RFC 8259 §8.1: a parser may ignore a leading byte order mark; HL7's tools do, so every body-taking
    interaction does: create, update, patch, transaction, $validate."""
    patient = b'{"resourceType": "Patient", "id": "bom", "gender": "male"}'
    created = client.post("/Patient", content=BOM + patient, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    assert client.put("/Patient/bom", content=BOM + patient, headers=FHIR_JSON).status_code == 201
    patch = BOM + b'[{"op": "replace", "path": "/gender", "value": "female"}]'
    patched = client.patch("/Patient/bom", content=patch, headers={"Content-Type": "application/json-patch+json"})
    assert patched.status_code == 200 and patched.json()["gender"] == "female"
    transaction = b'{"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": %s, ' % patient
    transaction += b'"request": {"method": "PUT", "url": "Patient/bom"}}]}'
    assert client.post("/", content=BOM + transaction, headers=FHIR_JSON).status_code == 200
    validated = client.post("/Patient/$validate", content=BOM + patient, headers=FHIR_JSON)
    assert validated.status_code == 200
    assert all(issue["severity"] in ("information", "warning") for issue in validated.json()["issue"])
    assert client.get("/Patient/bom").json()["meta"]["versionId"] == "3"


def test_deeply_nested_json_is_400(client: TestClient) -> None:
    nested = b'{"resourceType": "Basic", "extension": ' + b"[" * 200 + b"]" * 200 + b"}"
    response = client.post("/Basic", content=nested, headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == 400
    assert "deeper" in _outcome(response)["issue"][0]["diagnostics"]


def test_body_over_limit_is_413(tmp_path: Any) -> None:
    settings = Settings(database=f"sqlite:///{tmp_path / 'small.db'}", max_body_size=1000)
    with TestClient(create_app(settings), base_url=BASE) as small:
        big = {"resourceType": "Basic", "code": {"text": "x" * 2000}}
        response = small.post("/Basic", json=big)
        assert response.status_code == 413
        _outcome(response)
        assert small.get("/Basic/_history").json().get("entry") is None


def test_unknown_route_is_404_outcome(client: TestClient) -> None:
    response = client.get("/ImagingStudy/a/b/c/d")
    assert response.status_code == 404
    _outcome(response)
    outside = client.get("http://testserver/nothing-here")
    assert outside.status_code == 404
    _outcome(outside)


def test_wrong_method_is_405_outcome_with_allow(client: TestClient) -> None:
    response = client.post("/Patient/x", content=b"{}")
    assert response.status_code == 405
    _outcome(response)
    assert set(response.headers["allow"].replace(" ", "").split(",")) >= {"GET", "PUT", "PATCH", "DELETE"}


def test_server_error_is_500_outcome_with_request_id_and_no_trace(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings)
    with TestClient(app, base_url=BASE, raise_server_exceptions=False) as failing:

        def explode(*args: Any) -> None:
            raise RuntimeError("secret internals")

        async def explode_async(*args: Any) -> None:
            explode()

        app.state.service.store.reading = explode  # every unit of reads goes through it
        app.state.service.store.read_async = explode_async  # and every read by id
        response = failing.get("/Patient/x")
    assert response.status_code == 500
    outcome = _outcome(response)
    request_id = response.headers["x-request-id"]
    assert request_id in outcome["issue"][0]["diagnostics"]
    assert "secret" not in response.text and "Traceback" not in response.text
    assert any(request_id in record.getMessage() for record in caplog.records)


def test_every_response_carries_a_request_id(client: TestClient) -> None:
    assert client.get("/metadata").headers["x-request-id"]
