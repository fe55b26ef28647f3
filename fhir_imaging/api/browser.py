"""The study browser: the files of ``fhir_imaging/web/`` at ``/app/``, its settings at ``/app/config.json``, and
``/`` sending the visitor there.

The page is a client of this server's FHIR API like any other (it reads ``/baseR4`` only). Its files are read once,
when the application is made, into a table keyed by their path below ``web/``; a request is answered from that table
alone, so no path a client sends (``..``, an encoded slash, a symbolic link) can reach any other file. Every page
answer carries a Content-Security-Policy that allows scripts, styles and requests from this origin only: no inline
script runs, and nothing the server stores (patient names, descriptions) can become markup or code in the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from fhir_imaging.api.context import BASE_PATH
from fhir_imaging.config import Settings

APP_PATH = "/app/"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True, slots=True)
class WebFile:
    body: bytes
    media_type: str


def _walk(folder: Traversable, prefix: str) -> dict[str, WebFile]:
    files: dict[str, WebFile] = {}
    for entry in folder.iterdir():
        name = f"{prefix}{entry.name}"
        if entry.is_dir():
            files.update(_walk(entry, f"{name}/"))
            continue
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if suffix in CONTENT_TYPES:
            files[name] = WebFile(entry.read_bytes(), CONTENT_TYPES[suffix])
    return files


def load_web_files() -> dict[str, WebFile]:
    """Every file of the package's ``web/`` folder whose kind the table above knows, by its path below it."""
    return _walk(resources.files("fhir_imaging").joinpath("web"), "")


def browser_config(settings: Settings) -> bytes:
    """What the page needs to know of the server's settings: where the FHIR API is, and the viewer template."""
    return orjson.dumps({"fhirBase": BASE_PATH, "viewerUrl": settings.viewer_url})


def browser_routes(settings: Settings) -> list[Route]:
    files = load_web_files()
    config = browser_config(settings)

    async def to_app(request: Request) -> Response:
        return RedirectResponse(APP_PATH, status_code=302)

    async def index(request: Request) -> Response:
        page = files["index.html"]
        return Response(page.body, media_type=page.media_type, headers=PAGE_HEADERS)

    async def config_json(request: Request) -> Response:
        return Response(config, media_type="application/json", headers=PAGE_HEADERS)

    async def static(request: Request) -> Response:
        found = files.get(request.path_params["path"])
        if found is None:
            raise HTTPException(404)
        return Response(found.body, media_type=found.media_type, headers=PAGE_HEADERS)

    return [
        Route("/", to_app, methods=["GET"]),
        Route("/app", to_app, methods=["GET"]),
        Route(APP_PATH, index, methods=["GET"]),
        Route(f"{APP_PATH}config.json", config_json, methods=["GET"]),
        Route(APP_PATH + "{path:path}", static, methods=["GET"]),
    ]
