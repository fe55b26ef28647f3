"""A FHIR client for the command-line tools (import-dicom, sync-dicomweb, load): the same REST API whether it
talks to a running server (``--server URL``) or to a database directly (``--database URL``, the app in-process).

Going through the REST API keeps one write path: validation, versioning, transactions and indexes behave the same.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import httpx

from fhir_imaging.config import Settings

if TYPE_CHECKING:
    from starlette.applications import Starlette

IN_PROCESS_BASE = "http://fhir-imaging.local/baseR4"
TIMEOUT = httpx.Timeout(120.0, connect=10.0)


class TokenError(RuntimeError):
    """No access token could be obtained for a server (the message says why; it never holds a secret)."""


@dataclass(frozen=True)
class RemoteServer:
    """A running server: its base URL, and how requests authenticate to it (``None``: they do not)."""

    url: str
    auth: httpx.Auth | None = None


@asynccontextmanager
async def fhir_client(
    server: str | RemoteServer | None = None, database: str | None = None, settings: Settings | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """An ``httpx.AsyncClient`` whose relative URLs (``ImagingStudy/1``) address the FHIR base.

    With ``server``, requests go over HTTP to it (with its ``auth``: a bearer token, obtained and renewed by
    auth/backend_client.py); otherwise the app runs in this process on ``database`` (or ``settings.database``), with
    its lifespan (store opened, closed at the end).
    """
    headers = {"Accept": "application/fhir+json", "Content-Type": "application/fhir+json"}
    if server:
        remote = RemoteServer(server) if isinstance(server, str) else server
        base = remote.url.rstrip("/") + "/"
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=TIMEOUT, auth=remote.auth) as client:
            yield client
        return
    settings = settings or Settings()
    if database:
        settings = replace(settings, database=database)
    async with in_process_app(settings) as (client, _):
        yield client


@asynccontextmanager
async def in_process_app(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Starlette]]:
    """The app on ``settings.database`` in this process, with its lifespan, and a client of its FHIR base (the app
    also gives its ``FhirService``: ``app.state.service``)."""
    from fhir_imaging.app import create_app

    headers = {"Accept": "application/fhir+json", "Content-Type": "application/fhir+json"}
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url=IN_PROCESS_BASE + "/", headers=headers, timeout=TIMEOUT
        ) as client:
            yield client, app
