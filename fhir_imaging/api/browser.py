"""The study browser: the files of ``fhir_imaging/web/`` at ``/app/``, its settings at ``/app/config.json``, and
``/`` sending the visitor there.

With ``--auth-issuer`` and ``--app-client-id`` the page signs its user in (SMART App Launch, standalone launch,
authorization code with PKCE: ``web/js/auth.js``); its configuration then names the client id, the scopes to ask for
and the audience, and the page's Content-Security-Policy lets it reach the OpenID provider's origins (the issuer's and
the token endpoint's, where it exchanges the code) besides this one.

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
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from fhir_imaging.api.context import BASE_PATH, in_thread
from fhir_imaging.config import Settings
from fhir_imaging.fhir.outcome import FhirError

if TYPE_CHECKING:
    from fhir_imaging.auth.authenticators import Authenticators

APP_PATH = "/app/"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}


def content_security_policy(connect: tuple[str, ...] = ()) -> str:
    """The pages' policy; ``connect``: origins the page may send requests to besides its own."""
    sources = " ".join(("'self'", *connect))
    return (
        f"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src {sources}; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


CONTENT_SECURITY_POLICY = content_security_policy()
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


def browser_config(settings: Settings, audience: str) -> bytes:
    """What the page needs to know of the server's settings: where the FHIR API is, the viewer template, and how to
    sign in (null: no sign-in): the client id, the scopes, and the ``aud`` of the authorization request (the audience
    the server's tokens must name)."""
    sign_in = None
    if settings.auth_issuer and settings.app_client_id:
        sign_in = {"clientId": settings.app_client_id, "scope": settings.app_scope, "audience": audience}
    return orjson.dumps({"fhirBase": BASE_PATH, "viewerUrl": settings.viewer_url, "signIn": sign_in})


def origin(url: str | None) -> str | None:
    """``scheme://host[:port]`` of an http(s) address, or None."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


async def provider_origins(request: Request, issuer: str) -> tuple[str, ...]:
    """The origins of the OpenID provider the signing-in page talks to: the issuer's (its discovery document) and
    the token endpoint's (the code exchange), as the provider's discovery document names it (read once by the
    token verifier; the issuer's origin alone while the provider cannot be reached)."""
    found = [origin(issuer)]
    verifier: Authenticators | None = request.app.state.verifier
    if verifier is not None:
        try:
            metadata = await in_thread(verifier.metadata)
        except FhirError:
            metadata = None
        if metadata is not None:
            found.append(origin(metadata.token_endpoint))
    return tuple(dict.fromkeys(item for item in found if item))


def browser_routes(settings: Settings, audience: str) -> list[Route]:
    files = load_web_files()
    config = browser_config(settings, audience)
    signs_in = bool(settings.auth_issuer and settings.app_client_id)

    async def to_app(request: Request) -> Response:
        return RedirectResponse(APP_PATH, status_code=302)

    async def index(request: Request) -> Response:
        page = files["index.html"]
        headers = PAGE_HEADERS
        if signs_in:
            assert settings.auth_issuer
            policy = content_security_policy(await provider_origins(request, settings.auth_issuer))
            headers = {**PAGE_HEADERS, "Content-Security-Policy": policy}
        return Response(page.body, media_type=page.media_type, headers=headers)

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
