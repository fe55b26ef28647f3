"""The router's split-based hot paths choose exactly what Starlette's regex matching chooses."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Mount, Route

from fhir_imaging.api.routes import FhirRouter, starlette_routes

PATHS = [
    "/ImagingStudy",
    "/ImagingStudy/",
    "/ImagingStudy/abc-123",
    "/ImagingStudy/abc.1",
    "/ImagingStudy/_search",
    "/ImagingStudy/_history",
    "/ImagingStudy/$validate",
    "/ImagingStudy/abc/_history",
    "/ImagingStudy/abc/_history/2",
    "/ImagingStudy/abc/$validate",
    "/Patient/p1/ImagingStudy",
    "/imagingStudy/abc",
    "/Imaging9/abc",
    "/Ünïcode/abc",
    "/_history",
    "/metadata",
    "/",
    "",
    "/ImagingStudy//",
    "/ImagingStudy/a b",
    "/ImagingStudy/%24x",
    "/ImagingStudy/x$",
    "/ImagingStudy/_x",
]
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _router() -> FhirRouter:
    mount = next(route for route in starlette_routes("/baseR4") if isinstance(route, Mount))
    assert isinstance(mount.app, FhirRouter)
    return mount.app


def _starlette_choice(router: FhirRouter, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "path_params": {}}
    for route in router.routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            assert isinstance(route, Route)
            return route, child["path_params"]
    return None


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("path", PATHS)
def test_hot_paths_agree_with_starlette(method: str, path: str) -> None:
    router = _router()
    hot = router.hot_route(method, path)
    expected = _starlette_choice(router, method, path)
    if hot is not None:
        assert hot == expected
    elif expected is not None:  # not a hot path: Starlette's matching finds another route
        assert expected[0] not in router._by_segments.values()


def test_read_and_search_are_hot() -> None:
    router = _router()
    assert router.hot_route("GET", "/ImagingStudy/abc") is not None
    assert router.hot_route("GET", "/ImagingStudy") is not None
    assert router.hot_route("POST", "/ImagingStudy") is not None
    assert router.hot_route("PUT", "/ImagingStudy/abc") is not None


def test_the_hot_path_sets_only_the_path_parameters() -> None:
    seen: dict[str, Any] = {}

    async def endpoint(request: Request) -> Response:
        seen.update(keys=set(request.scope), params=dict(request.path_params))
        return Response(status_code=204)

    instance = Route("/{type:fhirtype}/{id:fhirid}", endpoint, methods=["GET"])
    kind = Route("/{type:fhirtype}", endpoint, methods=["GET"])
    router = FhirRouter([instance, kind], instance_route=instance, type_route=kind)
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": "/Patient/p1",
        "root_path": "",
        "path_params": {"outer": "1"},
        "headers": [],
        "query_string": b"",
    }
    keys = set(scope)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    assert router.hot_route("GET", "/Patient/p1") == (instance, {"type": "Patient", "id": "p1"})
    asyncio.run(router.app(scope, receive, send))
    assert sent[0]["status"] == 204
    assert seen["params"] == {"outer": "1", "type": "Patient", "id": "p1"}
    assert seen["keys"] == keys  # no "router", "route" or "endpoint"
