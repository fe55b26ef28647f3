"""read and vread, with conditional reads (https://hl7.org/fhir/R4/http.html#read, #vread, #cread)."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient


def _create(client: TestClient, resource: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/{resource['resourceType']}", json=resource)
    assert response.status_code == 201
    body: dict[str, Any] = response.json()
    return body


def test_read_returns_resource_with_version_headers(client: TestClient, study: dict[str, Any]) -> None:
    created = _create(client, study)
    response = client.get(f"/ImagingStudy/{created['id']}")
    assert response.status_code == 200
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["last-modified"].endswith("GMT")
    assert response.headers["content-location"].endswith(f"/ImagingStudy/{created['id']}/_history/1")
    assert response.json() == created


def test_read_unknown_id_is_404_outcome(client: TestClient) -> None:
    response = client.get("/ImagingStudy/does-not-exist")
    assert response.status_code == 404
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "not-found"


def test_read_invalid_id_is_404(client: TestClient) -> None:
    assert client.get("/Patient/" + "x" * 65).status_code == 404


def test_read_unknown_type_is_404(client: TestClient) -> None:
    response = client.get("/NotAType/1")
    assert response.status_code == 404
    assert "NotAType" in response.json()["issue"][0]["diagnostics"]


def test_read_deleted_returns_410_with_outcome(client: TestClient, patient: dict[str, Any]) -> None:
    created = _create(client, patient)
    client.delete(f"/Patient/{created['id']}")
    response = client.get(f"/Patient/{created['id']}")
    assert response.status_code == 410
    assert response.json()["resourceType"] == "OperationOutcome"
    assert response.headers["etag"] == 'W/"2"'


def test_vread_returns_each_version(client: TestClient, patient: dict[str, Any]) -> None:
    created = _create(client, patient)
    updated = dict(created, gender="female")
    client.put(f"/Patient/{created['id']}", json=updated)
    first = client.get(f"/Patient/{created['id']}/_history/1")
    second = client.get(f"/Patient/{created['id']}/_history/2")
    assert first.status_code == second.status_code == 200
    assert first.json()["gender"] == "male" and first.headers["etag"] == 'W/"1"'
    assert second.json()["gender"] == "female" and second.headers["etag"] == 'W/"2"'


def test_vread_unknown_version_is_404(client: TestClient, patient: dict[str, Any]) -> None:
    created = _create(client, patient)
    assert client.get(f"/Patient/{created['id']}/_history/7").status_code == 404
    assert client.get(f"/Patient/{created['id']}/_history/abc").status_code == 404
    assert client.get("/Patient/nobody/_history/1").status_code == 404


def test_vread_of_deletion_is_410(client: TestClient, patient: dict[str, Any]) -> None:
    created = _create(client, patient)
    client.delete(f"/Patient/{created['id']}")
    assert client.get(f"/Patient/{created['id']}/_history/2").status_code == 410
    assert client.get(f"/Patient/{created['id']}/_history/1").status_code == 200


def test_read_with_matching_if_none_match_is_304(client: TestClient, patient: dict[str, Any]) -> None:
    created = _create(client, patient)
    response = client.get(f"/Patient/{created['id']}", headers={"If-None-Match": 'W/"1"'})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == 'W/"1"'


def test_read_with_stale_if_none_match_is_200(client: TestClient, patient: dict[str, Any]) -> None:
    created = _create(client, patient)
    client.put(f"/Patient/{created['id']}", json=created)
    response = client.get(f"/Patient/{created['id']}", headers={"If-None-Match": 'W/"1"'})
    assert response.status_code == 200


def test_read_if_modified_since(client: TestClient, patient: dict[str, Any]) -> None:
    created = _create(client, patient)
    last_modified = client.get(f"/Patient/{created['id']}").headers["last-modified"]
    unchanged = client.get(f"/Patient/{created['id']}", headers={"If-Modified-Since": last_modified})
    assert unchanged.status_code == 304
    old = client.get(f"/Patient/{created['id']}", headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"})
    assert old.status_code == 200
    garbage = client.get(f"/Patient/{created['id']}", headers={"If-Modified-Since": "yesterday"})
    assert garbage.status_code == 200


def test_head_answers_like_get_without_body(client: TestClient, patient: dict[str, Any]) -> None:
    created = _create(client, patient)
    response = client.head(f"/Patient/{created['id']}")
    assert response.status_code == 200
    assert response.headers["etag"] == 'W/"1"'
    assert response.content == b""


def test_each_host_gets_its_own_base_in_the_headers(client: TestClient, study: dict[str, Any]) -> None:
    """The request's base is memoised per Host header: a second host must not get the first one's."""
    created = _create(client, study)
    for host in ("a.example", "b.example:8443", "a.example"):
        response = client.get(f"/ImagingStudy/{created['id']}", headers={"Host": host})
        assert response.headers["content-location"].startswith(f"http://{host}/baseR4/ImagingStudy/")
