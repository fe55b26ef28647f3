"""PATCH (JSON Patch, FHIRPath Patch), PATCH entries of a Bundle and $validate under hostile bodies: every size, count
and time bounded, the work off the event loop, and every wrong shape a 4xx OperationOutcome naming the part at fault."""

from __future__ import annotations

import base64
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from fhir_imaging.app import create_app
from fhir_imaging.config import Settings

BASE = "http://testserver/baseR4"
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
PATIENT = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Chalmers", "given": ["Peter"]}]}
# 360 characters: each select() triples the work of the one before (3.8 s on the event loop with no bound).
WHERE_BOMB = "Patient.name.where(1.combine(1)" + ".select(1.combine(1))" * 16 + ".count() > 0).family"
COPY_BOMB = [{"op": "copy", "from": "/name", "path": "/name/-"}] * 20  # 921 bytes; unbounded: +468 MiB


def _client(tmp_path: Path, **overrides: Any) -> Iterator[TestClient]:
    options: dict[str, Any] = {"database": f"sqlite:///{tmp_path / 'patch.db'}", "sqlite_synchronous": "normal"}
    with TestClient(create_app(Settings(**(options | overrides))), base_url=BASE) as client:
        assert client.put("/Patient/p1", json=PATIENT).status_code == 201
        yield client


@pytest.fixture
def patched(tmp_path: Path) -> Iterator[TestClient]:
    yield from _client(tmp_path)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    yield from _client(tmp_path_factory.mktemp("patch-shapes"))


def _outcome(response: Any, statuses: tuple[int, ...] = (400, 413, 422)) -> dict[str, Any]:
    assert response.status_code in statuses, (response.status_code, response.text[:300])
    outcome: dict[str, Any] = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    return outcome


def _operation(kind: str, path: str, *more: dict[str, Any]) -> dict[str, Any]:
    parts = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}, *more]
    return {"name": "operation", "part": parts}


def _parameters(*operations: Any) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(operations)}


# -- FHIRPath bounds -----------------------------------------------------------------------------------------------


def test_exponential_where_criteria_answer_422_within_a_second(patched: TestClient) -> None:
    body = _parameters(_operation("replace", WHERE_BOMB, {"name": "value", "valueString": "X"}))
    started = time.perf_counter()
    response = patched.patch("/Patient/p1", json=body)
    assert time.perf_counter() - started < 1.0
    issue = _outcome(response, (422,))["issue"][0]
    assert issue["code"] == "too-costly"
    assert issue["expression"] == ["Parameters.parameter[0].part[1]"]
    assert patched.get("/Patient/p1").json()["meta"]["versionId"] == "1"


@pytest.mark.parametrize(
    ("criteria", "too_costly"),
    [
        ("'" + "a" * 30 + "!'.matches('(a+)+$')", False),  # catastrophic backtracking in Python's re; RE2 is linear
        ("(9.power(999990)).round(0) > 1", True),  # a million-digit integer: a minute in one call
        ("'a'" + ".select($this + $this)" * 24 + ".length() > 1", True),  # a string doubled 24 times: 16 MiB
        (
            "given.replace('', '" + "x" * 200 + "').replace('', '" + "x" * 200 + "').replace('', '" + "x" * 50 + "')"
            ".exists()",
            True,
        ),
        (
            "%context" + ".select(%context.combine(%context))" * 15 + ".given.exists()",
            True,
        ),  # 32,768 copies, then navigated
    ],
)
def test_costly_criteria_are_bounded(patched: TestClient, criteria: str, too_costly: bool) -> None:
    path = f"Patient.name.where({criteria}).family"
    body = _parameters(_operation("replace", path, {"name": "value", "valueString": "X"}))
    started = time.perf_counter()
    response = patched.patch("/Patient/p1", json=body)
    assert time.perf_counter() - started < 1.0
    assert response.status_code < 500, response.text[:300]
    if too_costly:
        issue = _outcome(response, (422,))["issue"][0]
        assert issue["code"] == "too-costly" and issue["expression"] == ["Parameters.parameter[0].part[1]"]


def test_a_path_over_the_length_limit_is_refused(tmp_path: Path) -> None:
    for client in _client(tmp_path, fhirpath_max_length=100):
        path = "Patient.name.where(" + " or ".join(["family = 'x'"] * 10) + ").family"
        body = _parameters(_operation("replace", path, {"name": "value", "valueString": "X"}))
        issue = _outcome(client.patch("/Patient/p1", json=body), (422,))["issue"][0]
        assert issue["code"] == "too-costly" and issue["expression"] == ["Parameters.parameter[0].part[1]"]


def test_a_slow_patch_leaves_the_event_loop_free(patched: TestClient) -> None:
    body = _parameters(_operation("replace", WHERE_BOMB, {"name": "value", "valueString": "X"}))
    worker = threading.Thread(target=patched.patch, args=("/Patient/p1",), kwargs={"json": body})
    worker.start()
    time.sleep(0.1)
    timings = []  # reads answered while the patch was still being evaluated (a blocked loop answers none of them)
    while worker.is_alive() and len(timings) < 3:
        started = time.perf_counter()
        assert patched.get("/Patient/p1").status_code == 200
        elapsed = time.perf_counter() - started
        if worker.is_alive():
            timings.append(elapsed)
    worker.join()
    assert timings and min(timings) < 0.3


# -- JSON Patch bounds ---------------------------------------------------------------------------------------------


def test_json_patch_copy_bomb_answers_413_quickly_and_small(tmp_path: Path) -> None:
    for client in _client(tmp_path, max_body_size=2 * 1024**2):
        started = time.perf_counter()
        response = client.patch("/Patient/p1", content=orjson.dumps(COPY_BOMB), headers=JSON_PATCH)
        assert time.perf_counter() - started < 1.0
        issue = _outcome(response, (413,))["issue"][0]
        assert issue["code"] == "too-costly" and issue["expression"] == ["/15"]
        tracemalloc.start()
        try:
            client.patch("/Patient/p1", content=orjson.dumps(COPY_BOMB), headers=JSON_PATCH)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 64 * 1024**2


def test_json_patch_with_too_many_operations_is_refused(tmp_path: Path) -> None:
    for client in _client(tmp_path, max_patch_operations=10):
        operations = [{"op": "test", "path": "/id", "value": "p1"}] * 11
        response = client.patch("/Patient/p1", content=orjson.dumps(operations), headers=JSON_PATCH)
        assert _outcome(response, (413,))["issue"][0]["expression"] == ["Patient"]


def test_fhirpath_patch_with_too_many_operations_is_refused(tmp_path: Path) -> None:
    for client in _client(tmp_path, max_patch_operations=2):
        operation = _operation("replace", "Patient.name.family", {"name": "value", "valueString": "X"})
        response = client.patch("/Patient/p1", json=_parameters(operation, operation, operation))
        assert _outcome(response, (413,))["issue"][0]["expression"] == ["Parameters.parameter"]


def _extensions(levels: int) -> dict[str, Any]:
    """An extension holding an extension… ``levels`` deep (2 × levels - 1 JSON levels)."""
    if levels == 1:
        return {"url": "urn:example:x", "valueString": "x"}
    return {"url": "urn:example:x", "extension": [_extensions(levels - 1)]}


def test_json_patch_may_not_nest_the_resource_too_deeply(patched: TestClient) -> None:
    operations = [{"op": "add", "path": "/name/0/extension", "value": [_extensions(49)]}]  # the body nests 100 deep
    response = patched.patch("/Patient/p1", content=orjson.dumps(operations), headers=JSON_PATCH)
    assert _outcome(response, (422,))["issue"][0]["expression"] == ["Patient"]


# -- wrong shapes: each answered 500 -------------------------------------------------------------------------------

VALUE_X = {"name": "value", "valueString": "X"}
FHIRPATH_SHAPES: list[tuple[Any, str]] = [
    ({"resourceType": "Parameters", "parameter": 5}, "Parameters.parameter"),
    (_parameters(1), "Parameters.parameter[0]"),
    (_parameters({"name": "operation", "part": 5}), "Parameters.parameter[0].part"),
    (_parameters({"name": "operation", "part": [5]}), "Parameters.parameter[0].part[0].name"),
    (
        _parameters(
            _operation("add", "Patient", {"name": "name", "valueString": "gender"}, {"name": "value", "part": 5})
        ),
        "Parameters.parameter[0].part[3].part",
    ),
    (
        _parameters(_operation("add", "Patient", {"name": "name", "valueString": "x"}, {"name": "value", "part": [7]})),
        "Parameters.parameter[0].part[3].part[0].name",
    ),
    (_parameters(_operation("replace", "Patient", VALUE_X)), "Parameters.parameter[0].part[1]"),
    (
        _parameters(_operation("replace", "Patient.name[99999999999999999999].family", VALUE_X)),
        "Parameters.parameter[0].part[1]",
    ),
    (
        _parameters(_operation("insert", "Patient.name", VALUE_X, {"name": "index", "valueInteger": "0"})),
        "Parameters.parameter[0].part[3]",
    ),
    (
        _parameters({"name": "operation", "part": [{"name": "type", "valueCode": ["add"]}]}),
        "Parameters.parameter[0].part[0]",
    ),
]


@pytest.mark.parametrize(("body", "expression"), FHIRPATH_SHAPES)
def test_fhirpath_patch_of_the_wrong_shape_names_the_part(patched: TestClient, body: Any, expression: str) -> None:
    outcome = _outcome(patched.patch("/Patient/p1", json=body))
    assert expression in outcome["issue"][0]["expression"]


VALIDATE_SHAPES: list[tuple[Any, str]] = [
    ({"resourceType": "Parameters", "parameter": 5}, "Parameters.parameter"),
    ({"resourceType": "Parameters", "parameter": [5]}, "Parameters.parameter[0].name"),
    ({"resourceType": "Parameters", "parameter": [{"name": 5}]}, "Parameters.parameter[0].name"),
    (
        {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": 5}]},
        "Parameters.parameter[0].resource",
    ),
    (
        {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": {"id": "x"}}]},
        "Parameters.parameter[0].resource",
    ),
    (
        {"resourceType": "Parameters", "parameter": [{"name": "mode", "valueCode": {"a": 1}}]},
        "Parameters.parameter[0].valueCode",
    ),
]


@pytest.mark.parametrize(("body", "expression"), VALIDATE_SHAPES)
def test_validate_of_the_wrong_shape_names_the_parameter(patched: TestClient, body: Any, expression: str) -> None:
    outcome = _outcome(patched.post("/Patient/$validate", json=body))
    assert outcome["issue"][0]["expression"] == [expression]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


BINARY_DATA: list[Any] = [
    5,
    ["a"],
    _b64(b"not json"),
    _b64(b'{"a": 1}'),
    _b64(b"5"),
    _b64(b"[" * 200 + b"]" * 200),
    _b64(orjson.dumps({"resourceType": "Parameters", "parameter": 5})),
    _b64(orjson.dumps([{"op": "copy", "from": "/nowhere", "path": "/x"}])),
]


def _patch_bundle(kind: str, resource: dict[str, Any]) -> dict[str, Any]:
    entry = {"resource": resource, "request": {"method": "PATCH", "url": "Patient/p1"}}
    return {"resourceType": "Bundle", "type": kind, "entry": [entry]}


@pytest.mark.parametrize("data", BINARY_DATA)
def test_bundle_patch_binary_of_the_wrong_shape_is_a_4xx(patched: TestClient, data: Any) -> None:
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": data}
    outcome = _outcome(patched.post("/", json=_patch_bundle("transaction", binary)))
    assert any(e.startswith("Bundle.entry[0].resource") for e in outcome["issue"][0]["expression"])
    response = patched.post("/", json=_patch_bundle("batch", binary))
    assert response.status_code == 200
    entry = response.json()["entry"][0]["response"]
    assert entry["status"][:1] == "4", entry


def test_bundle_fhirpath_patch_errors_name_the_entry_part(patched: TestClient) -> None:
    body = _parameters({"name": "operation", "part": 5})
    outcome = _outcome(patched.post("/", json=_patch_bundle("transaction", body)))
    assert "Bundle.entry[0].resource.parameter[0].part" in outcome["issue"][0]["expression"]


def test_bundle_patch_binary_may_carry_a_fhirpath_patch(patched: TestClient) -> None:
    body = _parameters(_operation("replace", "Patient.name.family", VALUE_X))
    binary = {"resourceType": "Binary", "contentType": "application/fhir+json", "data": _b64(orjson.dumps(body))}
    response = patched.post("/", json=_patch_bundle("transaction", binary))
    assert response.status_code == 200, response.text[:300]
    assert patched.get("/Patient/p1").json()["name"][0]["family"] == "X"


# -- any shape: never a 5xx ----------------------------------------------------------------------------------------

WORDS = st.sampled_from(
    ["", "operation", "type", "path", "name", "value", "index", "source", "destination", "resource", "mode", "part",
     "add", "insert", "delete", "replace", "move", "Patient", "Patient.name", "Patient.name[0]", "name.given",
     "Patient.name.where(family = 'Chalmers')", "Patient.name.first()", "Patient.name.last()[0]", "Patient.name[9]",
     "family", "given", "create", "update", "/name", "/name/0", "/name/-", "/id", "/", "/name/0/given/0", "remove",
     "copy", "test", "Patient.name.where(", "where()", "valueString"]
)  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 3),
    st.floats(allow_nan=False, allow_infinity=False),
    WORDS,
    st.text(max_size=4),
)
JSON = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(WORDS, inner, max_size=3), max_leaves=8
)
VALUE_KEYS = st.sampled_from(["valueString", "valueCode", "valueInteger", "valueBoolean", "valueHumanName", "value"])
PART = st.recursive(
    st.builds(lambda name, key, value: {"name": name, key: value}, WORDS | JSON, VALUE_KEYS, JSON),
    lambda inner: st.builds(
        lambda name, parts: {"name": name, "part": parts}, WORDS, st.lists(inner, max_size=3) | SCALARS | JSON
    ),
    max_leaves=6,
)
OPERATION = st.builds(
    lambda name, parts: {"name": name, "part": parts},
    st.just("operation") | JSON,
    st.lists(PART, max_size=6) | SCALARS | JSON,
)
PARAMETERS = st.builds(
    lambda parameter: {"resourceType": "Parameters", "parameter": parameter},
    st.lists(OPERATION | SCALARS | JSON, max_size=3) | SCALARS | JSON,
)
VALIDATE_PARAMETER = st.builds(
    lambda name, resource, mode: {"name": name, "resource": resource, "valueCode": mode},
    WORDS | JSON,
    st.just(PATIENT) | st.just({"resourceType": "Observation"}) | JSON,
    WORDS | JSON,
)
VALIDATE_BODY = st.builds(
    lambda parameter: {"resourceType": "Parameters", "parameter": parameter},
    st.lists(VALIDATE_PARAMETER | JSON, max_size=3) | JSON,
)
JSON_PATCH_OPERATION = st.builds(
    lambda op, path, source, value: {"op": op, "path": path, "from": source, "value": value},
    WORDS | JSON,
    WORDS | JSON,
    WORDS | JSON,
    JSON,
)
JSON_PATCH_BODY = st.lists(JSON_PATCH_OPERATION | JSON, max_size=4) | JSON
SHAPES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FHIR_JSON = {"Content-Type": "application/fhir+json"}


@SHAPES
@given(body=PARAMETERS | VALIDATE_BODY | JSON_PATCH_BODY)
def test_any_patch_or_validate_shape_is_never_a_5xx(shared: TestClient, body: Any) -> None:
    """Each body goes to PATCH as FHIRPath Patch and as JSON Patch, to $validate, and into a PATCH entry of a
    transaction and of a batch (as itself when a Parameters, else in a Binary)."""
    content = orjson.dumps(body)
    responses = [
        shared.patch("/Patient/p1", content=content, headers=FHIR_JSON),
        shared.patch("/Patient/p1", content=content, headers=JSON_PATCH),
        shared.post("/Patient/$validate", content=content, headers=FHIR_JSON),
    ]
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        resource = body
    else:
        resource = {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": _b64(content)}
    for kind in ("transaction", "batch"):
        responses.append(shared.post("/", content=orjson.dumps(_patch_bundle(kind, resource)), headers=FHIR_JSON))
    for response in responses:
        assert response.status_code < 500, response.text[:300]
    assert not responses[-1].json()["entry"][0]["response"]["status"].startswith("5")
