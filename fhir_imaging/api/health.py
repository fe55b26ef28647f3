"""Probes for load balancers and orchestrators, outside the FHIR base and open to anyone (no token, no audit):

- ``GET /healthz`` — liveness: the process answers. It touches no database, so a database outage never gets a
  healthy process restarted.
- ``GET /readyz`` — readiness: one cheap round trip to the database (``Store.ping``) within ``READY_TIMEOUT``
  seconds; ``503`` with an OperationOutcome when it fails, so the balancer sends requests elsewhere meanwhile. With
  read replicas the answer lists each one's state from its last background check (``usable``, ``lag`` in seconds):
  a replica down or lagging leaves the server ready, since the primary answers its reads meanwhile.

The request log leaves out probes that answer as the previous one did (api/errors.py ``RequestLogMiddleware``).
"""

from __future__ import annotations

import anyio
import anyio.to_thread
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fhir_imaging.api.formats import FHIR_JSON
from fhir_imaging.fhir.outcome import Issue, operation_outcome

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
PROBE_PATHS = frozenset({HEALTH_PATH, READY_PATH})
READY_TIMEOUT = 2.0  # seconds the database may take to answer a readiness probe


def _json(body: object, status: int = 200, media_type: str = "application/json") -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=media_type)  # never cached: errors.py


async def healthz(request: Request) -> Response:
    return _json({"status": "ok"})


async def readyz(request: Request) -> Response:
    service = getattr(request.app.state, "service", None)
    reason = "the server is starting"
    if service is not None:
        try:
            with anyio.fail_after(READY_TIMEOUT):
                await anyio.to_thread.run_sync(service.store.ping, READY_TIMEOUT, abandon_on_cancel=True)
            replicas = service.store.replica_states()
            return _json({"status": "ready", "replicas": replicas} if replicas else {"status": "ready"})
        except TimeoutError:
            reason = f"the database did not answer within {READY_TIMEOUT:g} s"
        except Exception as exc:  # any failure to reach the database: not ready, and say which kind
            reason = f"the database cannot be reached ({type(exc).__name__})"
    issue = Issue("error", "transient", f"Not ready: {reason}")
    return _json(operation_outcome([issue]), 503, FHIR_JSON)


def health_routes() -> list[Route]:
    return [Route(HEALTH_PATH, healthz, methods=["GET", "HEAD"]), Route(READY_PATH, readyz, methods=["GET", "HEAD"])]
