"""The built-in token endpoint of SMART Backend Services (https://hl7.org/fhir/smart-app-launch/backend-services.html):
a registered client (auth/clients.py) asks for an access token with ``grant_type=client_credentials`` and a JWT it
signed (``client_assertion``, RFC 7523); the answer is a short-lived access token signed by this server's key.

The assertion must be signed with RS384 or ES384 by a key the client registered (``kid`` in its header), have
``iss`` = ``sub`` = the client id, ``aud`` = this token endpoint's URL, ``exp`` at most five minutes ahead and a
``jti`` never seen before (the store remembers each until its ``exp``: a replay is refused, also when it reaches
another server process on the same database). The token grants the requested scopes the client's registration
covers (none of them: ``invalid_scope``). Errors are RFC 6749 §5.2 answers: ``{"error", "error_description"}``.

Everything here but ``BackendTokenIssuer.client_key`` (which may fetch a client's JWKS URL) is computation:
the caller runs ``issue`` in a worker thread and hands it the store's replay check.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from fhir_imaging.auth.clients import BackendClient
from fhir_imaging.auth.keys import ASSERTION_ALGORITHMS, load_private_key, public_jwk
from fhir_imaging.auth.scopes import Grant, parse_scope

GRANT_TYPE = "client_credentials"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME = 300.0  # seconds: SMART Backend Services, "exp ... no more than five minutes in the future"
MAX_ASSERTION_LENGTH = 16 * 1024
MAX_SCOPE_LENGTH = 4 * 1024
LEEWAY = 30.0
SERVER_ALGORITHM = "ES384"
HTTP_TIMEOUT = 5.0

Replay = Callable[[str, str, float], bool]  # (client id, jti, exp) → True the first time, False for a replay


class TokenRequestError(Exception):
    """A refused token request: an RFC 6749 §5.2 error code and a description (never a secret)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str
    client_id: str

    def body(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "scope": self.scope,
        }


class BackendTokenIssuer:
    """Issues access tokens to registered backend clients (thread-safe)."""

    def __init__(
        self,
        clients: Mapping[str, BackendClient],
        key_pem: bytes,
        issuer: str,
        audience: str,
        lifetime: int = 300,
    ) -> None:
        self.clients = dict(clients)
        self.issuer = issuer
        self.audience = audience
        self.lifetime = lifetime
        self._key = load_private_key(key_pem)
        self.jwk = public_jwk(self._key)
        if self.jwk["alg"] != SERVER_ALGORITHM:
            raise ValueError(f"the server's signing key must be a P-384 key ({SERVER_ALGORITHM})")
        self.kid: str = self.jwk["kid"]
        self._remote: dict[str, jwt.PyJWKClient] = {}
        self._lock = threading.Lock()

    def jwks(self) -> dict[str, Any]:
        """The public JWKS of the tokens this server signs (published at the token endpoint's JWKS URL)."""
        return {"keys": [self.jwk]}

    def verification_key(self) -> jwt.PyJWK:
        return jwt.PyJWK(self.jwk, SERVER_ALGORITHM)

    # -- the token request ---------------------------------------------------------------------------------------

    def issue(self, form: Mapping[str, str], token_urls: tuple[str, ...], replay: Replay) -> IssuedToken:
        """Answer one token request (its form fields); ``token_urls`` are the URLs an assertion's ``aud`` may name.
        TokenRequestError when refused. Blocking: it may fetch a client's JWKS."""
        if form.get("grant_type") != GRANT_TYPE:
            raise TokenRequestError("unsupported_grant_type", f"grant_type must be {GRANT_TYPE}")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise TokenRequestError("invalid_request", f"client_assertion_type must be {ASSERTION_TYPE}")
        assertion = form.get("client_assertion", "")
        if not assertion:
            raise TokenRequestError("invalid_request", "client_assertion is missing")
        if len(assertion) > MAX_ASSERTION_LENGTH:
            raise TokenRequestError("invalid_request", "client_assertion is too long")
        requested = form.get("scope", "")
        if not requested.split():
            raise TokenRequestError("invalid_request", "scope is missing: name the scopes the token should grant")
        if len(requested) > MAX_SCOPE_LENGTH:
            raise TokenRequestError("invalid_request", "scope is too long")
        client, claims = self._verified_assertion(assertion, token_urls)
        if not replay(client.client_id, str(claims["jti"]), float(claims["exp"])):
            raise TokenRequestError("invalid_client", "this client_assertion was used before (its jti is spent)")
        granted = granted_scopes(requested, client.scopes)
        if not granted:
            raise TokenRequestError("invalid_scope", "none of the requested scopes is allowed to this client")
        return self._token(client.client_id, " ".join(granted))

    def _verified_assertion(self, assertion: str, token_urls: tuple[str, ...]) -> tuple[BackendClient, dict[str, Any]]:
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            raise TokenRequestError("invalid_client", "client_assertion is not a JWT") from None
        algorithm = header.get("alg")
        if algorithm not in ASSERTION_ALGORITHMS:
            accepted = ", ".join(ASSERTION_ALGORITHMS)
            raise TokenRequestError("invalid_client", f"client_assertion must be signed with {accepted}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRequestError("invalid_client", "client_assertion names no key (kid)")
        client_id = unverified.get("iss")
        client = self.clients.get(client_id) if isinstance(client_id, str) else None
        if client is None:
            raise TokenRequestError("invalid_client", "client_assertion's iss is not a registered client")
        key = self.client_key(client, kid)
        if key is None:
            raise TokenRequestError("invalid_client", f"client {client.client_id} has registered no key {kid[:64]!r}")
        try:
            claims: dict[str, Any] = jwt.decode(
                assertion,
                key,
                algorithms=[algorithm],
                audience=list(token_urls),
                issuer=client.client_id,
                leeway=LEEWAY,
                options={"require": ["iss", "sub", "aud", "exp", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRequestError("invalid_client", "client_assertion has expired") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRequestError("invalid_client", f"client_assertion has no {exc.claim} claim") from None
        except jwt.InvalidAudienceError:
            raise TokenRequestError("invalid_client", f"client_assertion's aud must be {token_urls[0]}") from None
        except jwt.InvalidTokenError as exc:
            raise TokenRequestError("invalid_client", f"client_assertion is not valid ({type(exc).__name__})") from None
        if claims["sub"] != client.client_id:
            raise TokenRequestError("invalid_client", "client_assertion's sub must be the client id, as its iss")
        if not isinstance(claims["exp"], int | float) or claims["exp"] > time.time() + MAX_ASSERTION_LIFETIME + LEEWAY:
            raise TokenRequestError("invalid_client", "client_assertion's exp is more than five minutes ahead")
        if not isinstance(claims["jti"], str) or not claims["jti"] or len(claims["jti"]) > 255:
            raise TokenRequestError("invalid_client", "client_assertion's jti must be a string of 1 to 255 characters")
        return client, claims

    def client_key(self, client: BackendClient, kid: str) -> jwt.PyJWK | None:
        """The client's key ``kid``: registered inline, or published at its JWKS URL (cached; fetched again for an
        unknown kid at most once a second, PyJWKClient's cooldown)."""
        if client.jwks_url is None:
            return client.keys.get(kid)
        with self._lock:
            remote = self._remote.get(client.client_id)
            if remote is None:
                remote = self._remote[client.client_id] = jwt.PyJWKClient(
                    client.jwks_url, cache_keys=True, lifespan=3600, timeout=HTTP_TIMEOUT, cooldown_duration=1.0
                )
        try:
            return remote.get_signing_key(kid)
        except jwt.PyJWKClientConnectionError:
            raise TokenRequestError("invalid_client", "the client's JWKS URL cannot be reached") from None
        except jwt.PyJWKClientError:
            return None

    def _token(self, client_id: str, scope: str) -> IssuedToken:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": client_id,
            "client_id": client_id,
            "scope": scope,
            "iat": now,
            "exp": now + self.lifetime,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, self._key, algorithm=SERVER_ALGORITHM, headers={"kid": self.kid, "typ": "at+jwt"})
        return IssuedToken(token, self.lifetime, scope, client_id)


def granted_scopes(requested: str, allowed: tuple[str, ...]) -> list[str]:
    """What a client asking for ``requested`` gets of the scopes ``allowed`` to it: each requested scope that an
    allowed scope covers (same context, its type or ``*``, no more interactions, the same query or none), else the
    allowed scopes it covers (asking for ``system/*.cruds`` with ``system/ImagingStudy.rs`` allowed grants
    ``system/ImagingStudy.rs``). In the order asked, each once."""
    allowed_grants = [(scope, grant) for scope in allowed if (grant := parse_scope(scope)) is not None]
    granted: list[str] = []
    for scope in requested.split():
        grant = parse_scope(scope)
        if grant is None:
            continue
        if any(_covers(allowed_grant, grant) for _, allowed_grant in allowed_grants):
            found = [scope]
        else:
            found = [allowed_scope for allowed_scope, allowed_grant in allowed_grants if _covers(grant, allowed_grant)]
        granted.extend(item for item in found if item not in granted)
    return granted


def _covers(allowed: Grant, requested: Grant) -> bool:
    return (
        allowed.context == requested.context
        and allowed.resource_type in ("*", requested.resource_type)
        and requested.interactions <= allowed.interactions
        and allowed.query in ("", requested.query)
    )
