"""The client side of SMART Backend Services, for the command-line tools that talk to a server (``load``,
``import-dicom``, ``sync-dicomweb`` with ``--server``): an ``httpx.Auth`` that obtains an access token with a signed
client assertion, sends it as a bearer token, and obtains a new one shortly before it expires (or once, when the
server answers 401 to a token it still thought valid).

The token endpoint is the one the server's SMART configuration names (``[base]/.well-known/smart-configuration``),
unless given. The assertion is a JWT signed with the client's private key (RS384 for RSA, ES384 for P-384), with
``iss`` = ``sub`` = the client id, ``aud`` = the token endpoint, five minutes to live and a fresh ``jti``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Generator
from dataclasses import dataclass

import httpx
import jwt

from fhir_imaging.auth.backend import ASSERTION_TYPE, GRANT_TYPE
from fhir_imaging.auth.keys import PrivateKey, public_jwk, signing_algorithm
from fhir_imaging.client import TokenError

RENEW_BEFORE = 30.0  # seconds before its expiry a token is replaced
ASSERTION_LIFETIME = 300  # seconds


@dataclass
class _Token:
    value: str
    expires: float  # seconds since the epoch


class StaticTokenAuth(httpx.Auth):
    """A bearer token given as it is (``--token``): sent with every request, never renewed."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


class BackendServicesAuth(httpx.Auth):
    """Bearer tokens for one registered client, obtained and renewed as needed."""

    requires_response_body = True  # the token endpoint's answer is read inside the flow

    def __init__(
        self,
        server: str,
        client_id: str,
        key: PrivateKey,
        scope: str = "system/*.cruds",
        kid: str | None = None,
        token_url: str | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.client_id = client_id
        self.scope = scope
        self._key = key
        self._algorithm = signing_algorithm(key)
        self._kid = kid or public_jwk(key)["kid"]
        self._token_url = token_url
        self._token: _Token | None = None

    def assertion(self, token_url: str) -> str:
        """A fresh client assertion for ``token_url``."""
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": token_url,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._key, algorithm=self._algorithm, headers={"kid": self._kid, "typ": "JWT"})

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        fresh = False
        if self._token is None or self._token.expires - RENEW_BEFORE <= time.time():
            yield from self._obtain()
            fresh = True
        assert self._token is not None
        request.headers["Authorization"] = f"Bearer {self._token.value}"
        response = yield request
        if response.status_code == 401 and not fresh:  # revoked, or the server's key changed: one new token
            yield from self._obtain()
            request.headers["Authorization"] = f"Bearer {self._token.value}"
            yield request

    def _obtain(self) -> Generator[httpx.Request, httpx.Response, None]:
        if self._token_url is None:
            response = yield httpx.Request(
                "GET", f"{self.server}/.well-known/smart-configuration", headers={"Accept": "application/json"}
            )
            self._token_url = _token_endpoint(response)
        form = {
            "grant_type": GRANT_TYPE,
            "scope": self.scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.assertion(self._token_url),
        }
        response = yield httpx.Request("POST", self._token_url, data=form, headers={"Accept": "application/json"})
        self._token = _token_from(response)


def _token_endpoint(response: httpx.Response) -> str:
    if response.status_code != 200:
        raise TokenError(f"the server's SMART configuration answered {response.status_code}: no token endpoint known")
    try:
        endpoint = response.json().get("token_endpoint")
    except (ValueError, AttributeError):
        endpoint = None
    if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
        raise TokenError("the server's SMART configuration names no token_endpoint")
    return endpoint


def _token_from(response: httpx.Response) -> _Token:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise TokenError(f"the token endpoint answered {response.status_code} without a JSON object")
    if response.status_code != 200 or not isinstance(body.get("access_token"), str):
        error = str(body.get("error", "no access_token"))[:100]
        description = str(body.get("error_description", ""))[:300]
        raise TokenError(f"the token endpoint refused: {error}" + (f" ({description})" if description else ""))
    lifetime = body.get("expires_in")
    lifetime = float(lifetime) if isinstance(lifetime, int | float) and lifetime > 0 else 300.0
    return _Token(body["access_token"], time.time() + lifetime)
