"""Opaque bearer tokens, checked by asking the authorization server: OAuth 2.0 Token Introspection (RFC 7662).

An opaque token carries nothing the server could verify by itself, so ``IntrospectionVerifier.verify`` POSTs it
(``token=…&token_type_hint=access_token``, form-encoded) to ``--auth-introspection-url``, authenticating as
``--auth-introspection-client-id`` with HTTP Basic (client_secret_basic; the secret comes from the environment
only). The answer (``principal_from_answer``, pure) decides:

- ``active`` not true → 401 ``invalid_token``: unknown, expired or revoked tokens look the same, on purpose;
- ``exp``, when given, must not have passed (``leeway`` seconds of clock skew); ``aud``, when given, must include
  this server's audience; ``iss``, when given and ``--auth-issuer`` is set, must be that issuer; ``token_type``,
  when given, must be ``Bearer`` (a DPoP-bound token needs a proof this server does not check);
- ``scope``, ``patient``, ``sub``/``client_id`` make the ``Principal``, as a JWT's claims do.

An active answer is remembered until the token's ``exp`` (at most ``MAX_CACHED_TOKENS`` answers), so a token costs
one round trip to the authorization server, not one per request; a revocation is therefore seen once the
remembered answer runs out. An answer without ``exp`` (RFC 7662 makes it optional) is remembered for
``UNDATED_ANSWER_SECONDS`` only. An inactive answer is not remembered: the next request asks again.

The endpoint unreachable, slow (``HTTP_TIMEOUT``), answering 5xx, a redirect, something that is not a JSON object or
more than ``MAX_ANSWER_BYTES`` → 503 ``transient``: the token may well be good, the client should retry. Refusing
this server's own credentials (401/403) is a 503 too, with a warning in the log naming the settings to check. The
one refusal that is about the token is ``400 unsupported_token_type``: 401.

The client secret is never logged, never put in an error message, and not in this object's ``repr``.

Spec: RFC 7662, RFC 6749 §2.3.1 (client_secret_basic), https://hl7.org/fhir/smart-app-launch/token-introspection.html
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from fhir_imaging.auth.principal import MAX_TOKEN_LENGTH, Principal, principal_from_claims
from fhir_imaging.fhir.outcome import ServiceUnavailable, Unauthorized
from fhir_imaging.logs import redact_url

log = logging.getLogger("fhir_imaging.auth")

UNDATED_ANSWER_SECONDS = 60.0  # how long an active answer without exp is relied on
MAX_CACHED_TOKENS = 10_000
MAX_ANSWER_BYTES = 64 * 1024  # an introspection answer is a few hundred bytes; more is not read
HTTP_TIMEOUT = 5.0  # seconds for connecting, for sending, for each read; and for the whole answer, checked per read
WARNING_INTERVAL = 10.0  # the same trouble with the endpoint is logged at most this often


def principal_from_answer(
    answer: Mapping[str, Any], audience: str, issuer: str | None, now: float, leeway: float = 30.0
) -> Principal:
    """The principal an introspection answer grants, or Unauthorized saying why the token is refused. Pure."""
    if answer.get("active") is not True:
        raise Unauthorized("The bearer token is not active (unknown, expired or revoked)")
    token_type = answer.get("token_type")
    if token_type is not None and str(token_type).lower() != "bearer":
        raise Unauthorized(f"The token is a {str(token_type)[:20]!r} token; this server accepts bearer tokens")
    exp = answer.get("exp")
    if exp is None:
        expires = now + UNDATED_ANSWER_SECONDS
    elif isinstance(exp, bool) or not isinstance(exp, int | float):
        raise Unauthorized("The issuer's introspection answer has an exp that is not a number")
    elif exp <= now - leeway:
        raise Unauthorized("The bearer token has expired")
    else:
        expires = float(exp)
    aud = answer.get("aud")
    if aud is not None and audience not in (aud if isinstance(aud, list) else [aud]):
        raise Unauthorized(f"The bearer token is not for this server (aud must include {audience})")
    iss = answer.get("iss")
    if issuer is not None and iss is not None and iss != issuer:
        raise Unauthorized(f"The bearer token is not from the trusted issuer ({issuer})")
    return principal_from_claims(answer, expires)


class IntrospectionVerifier:
    """Checks opaque bearer tokens with one authorization server's introspection endpoint (thread-safe)."""

    def __init__(
        self,
        url: str,
        client_id: str,
        client_secret: str,
        audience: str,
        issuer: str | None = None,
        leeway: float = 30.0,
        timeout: float = HTTP_TIMEOUT,
    ) -> None:
        self.url = url
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway
        self.timeout = timeout
        # client_secret_basic: id and secret are form-urlencoded before the Basic encoding (RFC 6749 §2.3.1).
        self._auth = httpx.BasicAuth(quote(client_id, safe=""), quote(client_secret, safe=""))
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None  # made at the first token: an SSL context takes tens of ms
        self._answers: dict[str, Principal] = {}
        self._last_warning = 0.0

    def __repr__(self) -> str:
        return f"IntrospectionVerifier({redact_url(self.url)!r})"

    def cached(self, token: str) -> Principal | None:
        """The principal of a token introspected before, while its answer holds (cheap: call it on the event
        loop)."""
        principal = self._answers.get(token)
        if principal is not None and principal.expires > time.time():
            return principal
        return None

    def verify(self, token: str) -> Principal:
        """The principal of ``token``, or Unauthorized saying why not, or ServiceUnavailable when the endpoint cannot
        answer. Blocking (one HTTP round trip)."""
        principal = self.cached(token)
        if principal is not None:
            return principal
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthorized("The bearer token is too long")
        answer = self._ask(token)
        principal = principal_from_answer(answer, self.audience, self.issuer, time.time(), self.leeway)
        if len(self._answers) >= MAX_CACHED_TOKENS:
            self._answers.clear()
        self._answers[token] = principal
        return principal

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # -- the endpoint ---------------------------------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self.timeout, follow_redirects=False)
            return self._client

    def _ask(self, token: str) -> dict[str, Any]:
        """The endpoint's answer about ``token`` (a JSON object), read up to ``MAX_ANSWER_BYTES``."""
        form = {"token": token, "token_type_hint": "access_token"}
        headers = {"Accept": "application/json"}
        deadline = time.monotonic() + self.timeout
        try:
            with self._http().stream("POST", self.url, data=form, auth=self._auth, headers=headers) as response:
                status = response.status_code
                body = _read_bounded(response, deadline)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            reason = type(exc).__name__
            self._warn("cannot be reached (%s)", reason)
            raise ServiceUnavailable(f"The token introspection endpoint cannot be reached ({reason})") from None
        except _TooLarge:
            self._warn("answered more than %d bytes", MAX_ANSWER_BYTES)
            raise ServiceUnavailable("The token introspection endpoint answered something too large") from None
        answer = _json_object(body)
        if status == 400 and answer is not None and answer.get("error") == "unsupported_token_type":
            raise Unauthorized("The authorization server does not introspect this kind of token")
        if status != 200:
            if status in (401, 403):
                self._warn(
                    "refused this server's credentials (%d): check --auth-introspection-client-id and "
                    "FHIR_IMAGING_INTROSPECTION_SECRET",
                    status,
                )
            else:
                self._warn("answered %d", status)
            raise ServiceUnavailable(f"The token introspection endpoint answered {status}")
        if answer is None:
            self._warn("answered something that is not a JSON object")
            raise ServiceUnavailable("The token introspection endpoint answered something that is not a JSON object")
        return answer

    def _warn(self, message: str, *args: object) -> None:
        """Log trouble with the endpoint, at most once per ``WARNING_INTERVAL`` (a failing endpoint fails every
        request)."""
        now = time.monotonic()
        if now - self._last_warning >= WARNING_INTERVAL:
            self._last_warning = now
            log.warning("token introspection endpoint %s " + message, redact_url(self.url), *args)


class _TooLarge(Exception):
    pass


def _read_bounded(response: httpx.Response, deadline: float) -> bytes:
    """The answer's body (decoded), refused past ``MAX_ANSWER_BYTES`` or ``deadline``: an endpoint that trickles
    its answer would otherwise hold a worker thread for as long as each read stays within the timeout."""
    declared = response.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_ANSWER_BYTES:
        raise _TooLarge
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise _TooLarge
        if time.monotonic() > deadline:
            raise httpx.ReadTimeout("the answer took too long", request=response.request)
        chunks.append(chunk)
    return b"".join(chunks)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
