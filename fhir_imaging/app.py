"""``create_app(settings)``: the Starlette application, with its store opened in the lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from fhir_imaging.api.browser import browser_routes
from fhir_imaging.api.consistency import ConsistencyMiddleware, token_lifetime
from fhir_imaging.api.context import BASE_PATH
from fhir_imaging.api.cors import FhirCorsMiddleware, parse_origins
from fhir_imaging.api.errors import RequestLogMiddleware, fhir_error_handler, http_error_handler
from fhir_imaging.api.health import health_routes
from fhir_imaging.api.routes import interaction_codes, operation_names, starlette_routes
from fhir_imaging.audit_log import AuditLog
from fhir_imaging.config import Settings, load_settings
from fhir_imaging.fhir.outcome import FhirError
from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.fhir.resource import format_instant, now
from fhir_imaging.heap import freeze_loaded, thaw
from fhir_imaging.logs import configure_logging
from fhir_imaging.service import FhirService
from fhir_imaging.service.entry_pool import EntryPool
from fhir_imaging.storage import open_store
from fhir_imaging.validation import Validator

if TYPE_CHECKING:  # the JWT library loads only with authorization (it adds a third of a second to start-up), httpx
    # only with authorization
    from fhir_imaging.auth.authenticators import Authenticators
    from fhir_imaging.auth.backend import BackendTokenIssuer
    from fhir_imaging.export.runner import ExportRunner
    from fhir_imaging.storage.base import Store


def own_base(settings: Settings) -> str:
    """This server's base URL as configured: --public-url, else http://HOST:PORT/baseR4."""
    return (settings.public_url or f"http://{settings.host}:{settings.port}{BASE_PATH}").rstrip("/")


def token_audience(settings: Settings) -> str:
    """The ``aud`` an access token must name: --auth-audience, else --public-url, else http://HOST:PORT/baseR4."""
    return settings.auth_audience or own_base(settings)


def token_verifier(settings: Settings) -> Authenticators | None:
    """The check of bearer tokens: JWTs with --auth-issuer, token introspection with --auth-introspection-url, or
    both (auth/authenticators.py); None (no authorization) without either."""
    if not settings.auth_issuer and not settings.auth_introspection_url:
        return None
    from fhir_imaging.auth.authenticators import Authenticators

    jwt = None
    if settings.auth_issuer:
        from fhir_imaging.auth.tokens import TokenVerifier

        jwt = TokenVerifier(settings.auth_issuer, token_audience(settings))
    introspection = None
    if settings.auth_introspection_url:
        from fhir_imaging.auth.introspection import IntrospectionVerifier

        client_id, secret = settings.auth_introspection_client_id, settings.introspection_secret
        if not client_id or not secret:
            raise ValueError(
                "--auth-introspection-url needs --auth-introspection-client-id and FHIR_IMAGING_INTROSPECTION_SECRET"
            )
        introspection = IntrospectionVerifier(
            settings.auth_introspection_url, client_id, secret, token_audience(settings), settings.auth_issuer
        )
    return Authenticators(jwt, introspection)


def backend_token_issuer(settings: Settings, store: Store) -> BackendTokenIssuer:
    """The built-in token endpoint of --auth-clients, signing with the key kept in the database (made there on
    first start)."""
    from fhir_imaging.auth.backend import BackendTokenIssuer
    from fhir_imaging.auth.clients import load_clients
    from fhir_imaging.auth.keys import new_server_key

    assert settings.auth_clients
    key = store.transact(lambda tx: tx.server_key(new_server_key))
    clients = load_clients(settings.auth_clients)
    return BackendTokenIssuer(clients, key, own_base(settings), token_audience(settings), settings.auth_token_lifetime)


def with_own_tokens(verifier: Authenticators | None, issuer: BackendTokenIssuer) -> Authenticators:
    """``verifier`` (the OpenID provider's JWTs and introspection, if any) and the check of the tokens ``issuer``
    signs: JWTs go to the verifier of the issuer they name (auth/tokens.py ``Verifiers``)."""
    from fhir_imaging.auth.authenticators import Authenticators
    from fhir_imaging.auth.tokens import ProviderMetadata, TokenVerifier, Verifiers

    base = issuer.issuer
    metadata = ProviderMetadata(
        base, f"{base}/auth/jwks", f"{base}/auth/token", None, ("client_credentials",), ("private_key_jwt",)
    )
    own = TokenVerifier(base, issuer.audience, own=(metadata, issuer.verification_key()))
    external = verifier.jwt if verifier is not None else None
    others = external.verifiers if isinstance(external, Verifiers) else [external] if external is not None else []
    jwts = Verifiers([*others, own])
    return Authenticators(jwts, verifier.introspection if verifier is not None else None)


def export_runner(service: FhirService, settings: Settings, requires_token: bool) -> ExportRunner:
    """The runner of bulk export jobs in this process, started."""
    from fhir_imaging.export.runner import ExportRunner

    runner = ExportRunner(
        service,
        Path(settings.export_dir),
        settings.export_ttl,
        settings.export_file_size,
        requires_token,
        settings.export_lease,
    )
    runner.start()
    return runner


def entry_pool(settings: Settings) -> EntryPool | None:
    """The bundle workers (``bundle_workers``), their processes started now."""
    if settings.bundle_workers <= 0:
        return None
    pool = EntryPool(settings.bundle_workers, settings.bundle_workers_from, settings.bundle_workers_timeout)
    pool.start()
    return pool


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or load_settings()
    registry = load_registry()
    validator = Validator.load()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = open_store(settings, registry)
        await store.start()
        app.state.service = FhirService(settings, registry, store, validator, entry_pool(settings))
        # point reads of a store that does not read on the event loop (PostgreSQL): one thread per pooled connection
        app.state.read_threads = (
            None if store.reads_inline else ThreadPoolExecutor(settings.pool_size, thread_name_prefix="point-read")
        )
        external = app.state.verifier
        try:
            if settings.auth_clients:
                app.state.token_issuer = await anyio.to_thread.run_sync(backend_token_issuer, settings, store)
                app.state.verifier = with_own_tokens(external, app.state.token_issuer)
            if settings.audit_log:
                app.state.audit = AuditLog(settings.audit_log)
            app.state.export_runner = export_runner(app.state.service, settings, app.state.verifier is not None)
            freeze_loaded()  # what start-up loaded stays out of the collector's walks (fhir_imaging/heap.py)
            yield
        finally:
            thaw()
            if app.state.export_runner is not None:
                await anyio.to_thread.run_sync(app.state.export_runner.stop)
                app.state.export_runner = None
            if app.state.verifier is not None:
                app.state.verifier.close()
            if app.state.audit is not None:
                app.state.audit.close()
                app.state.audit = None
            app.state.token_issuer = None
            app.state.verifier = external
            if app.state.read_threads is not None:
                app.state.read_threads.shutdown(cancel_futures=True)
                app.state.read_threads = None
            if app.state.service.entry_pool is not None:
                await anyio.to_thread.run_sync(app.state.service.entry_pool.close)
            await store.stop()
            store.close()

    middleware = [Middleware(RequestLogMiddleware)]
    if settings.cors_origin:
        middleware.append(Middleware(FhirCorsMiddleware, origins=parse_origins(settings.cors_origin)))
    if settings.database_replica:  # read-your-writes across the primary and its read replicas
        max_age = token_lifetime(settings.replica_max_lag, settings.replica_check_interval)
        middleware.append(Middleware(ConsistencyMiddleware, max_age=max_age))
    app = Starlette(
        routes=[*health_routes(), *browser_routes(settings, token_audience(settings)), *starlette_routes(BASE_PATH)],
        middleware=middleware,
        exception_handlers={FhirError: fhir_error_handler, HTTPException: http_error_handler},
        lifespan=lifespan,
    )
    app.state.verifier = token_verifier(settings)  # with --auth-clients, the lifespan adds this server's own tokens
    app.state.token_issuer = None  # the built-in token endpoint (--auth-clients), made in the lifespan
    app.state.audit = None  # the AuditLog, opened in the lifespan with --audit-log
    app.state.export_runner = None  # bulk export jobs (export/runner.py), started in the lifespan
    app.state.read_threads = None  # the executor of point reads off the event loop (api/context.py read_quickly)
    app.state.type_interactions = interaction_codes("type")
    app.state.system_interactions = interaction_codes("system")
    app.state.operations = operation_names()
    app.state.capability_cache = {}
    app.state.started = format_instant(now())
    logging.getLogger("fhir_imaging").setLevel(settings.log_level.upper())
    return app


def app_from_environment() -> Starlette:
    """Factory for server workers: settings come from ``FHIR_IMAGING_*`` variables; the request log is set up as
    ``fhir-imaging serve`` sets it up (each worker is a process of its own)."""
    settings = load_settings()
    configure_logging(settings.log_level)
    return create_app(settings)
