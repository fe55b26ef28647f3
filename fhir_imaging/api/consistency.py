"""Read-your-writes with read replicas: the consistency token a client gets after a write and sends back.

With ``--database-replica``, every request runs in a ``storage.routing`` session. A request that wrote answers with the
primary's log position after its commit, as the header ``X-Consistency-Token: 0/3000060`` and as the cookie
``fhir_imaging_consistency`` (so a browser sends it back by itself; ``Path=/baseR4``, ``HttpOnly``, ``SameSite=Lax``,
valid as long as a usable replica may still lack the write). A later request carrying the token (the header wins
over the cookie) is served by a replica only once the replica has replayed that far, else by the primary. A token
that does not parse sends the request to the primary: it is never a reason to answer stale data, nor an error.
"""

from __future__ import annotations

import math

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhir_imaging.storage.routing import fence_of, format_lsn, session

TOKEN_HEADER = "X-Consistency-Token"
COOKIE = "fhir_imaging_consistency"
_HEADER_KEY = TOKEN_HEADER.lower().encode("latin-1")
_COOKIE_PREFIX = COOKIE + "="


def token_of(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The client's token: the header's, else the cookie's, else None."""
    cookie = None
    for key, value in headers:
        if key == _HEADER_KEY:
            return value.decode("latin-1")
        if key == b"cookie" and cookie is None:
            cookie = _cookie_value(value.decode("latin-1"))
    return cookie


def _cookie_value(header: str) -> str | None:
    for part in header.split(";"):
        part = part.strip()
        if part.startswith(_COOKIE_PREFIX):
            return part[len(_COOKIE_PREFIX) :]
    return None


def token_headers(lsn: int, max_age: int, secure: bool) -> list[tuple[bytes, bytes]]:
    """The response headers handing the token for ``lsn`` to the client."""
    token = format_lsn(lsn)
    cookie = f"{COOKIE}={token}; Path=/baseR4; Max-Age={max_age}; HttpOnly; SameSite=Lax"
    if secure:
        cookie += "; Secure"
    return [(_HEADER_KEY, token.encode("latin-1")), (b"set-cookie", cookie.encode("latin-1"))]


def token_lifetime(max_lag: float, check_interval: float) -> int:
    """Seconds a token matters: a replica that has not replayed a write this long after it trails by more than
    ``max_lag`` (as the checks every ``check_interval`` see it) and is skipped."""
    return max(1, math.ceil(max_lag + 2 * check_interval))


class ConsistencyMiddleware:
    """Each request in a session whose fence is the client's token; a request that wrote answers a new token."""

    def __init__(self, app: ASGIApp, max_age: int) -> None:
        self.app = app
        self.max_age = max_age

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        secure = scope.get("scheme") == "https"
        with session(fence_of(token_of(scope["headers"]))) as current:

            async def send_with_token(message: Message) -> None:
                if message["type"] == "http.response.start" and current.written:
                    message["headers"] = [
                        *message.get("headers", []),
                        *token_headers(current.written, self.max_age, secure),
                    ]
                await send(message)

            await self.app(scope, receive, send_with_token)
