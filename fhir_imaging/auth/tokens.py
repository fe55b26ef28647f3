"""Bearer access tokens: JWTs issued by an OpenID provider, checked with PyJWT against the provider's JWKS.

The provider's discovery document (``ISSUER/.well-known/openid-configuration``) names its ``jwks_uri``; it is read at
the first token, and again after a failure. Keys are cached; a token naming an unknown ``kid`` refreshes the JWKS
(at most once per ``JWKS_COOLDOWN`` seconds), so the provider can rotate its keys without a restart. A token must be
signed with one of ``ALGORITHMS`` (never ``none``, never an HMAC) and carry ``iss`` (the issuer), ``aud`` (this
server) and ``exp``; ``exp``/``nbf`` allow ``leeway`` seconds of clock skew. A verified token is remembered until it
expires (at most ``MAX_CACHED_TOKENS``), so the check costs one dictionary look-up per request.

Spec: RFC 7519 (JWT), RFC 8414 / OpenID Connect Discovery, https://hl7.org/fhir/smart-app-launch/
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from fhir_imaging.auth.principal import MAX_TOKEN_LENGTH, Principal, principal_from_claims
from fhir_imaging.fhir.outcome import ServiceUnavailable, Unauthorized

__all__ = ["MAX_TOKEN_LENGTH", "Principal", "ProviderMetadata", "TokenVerifier", "Verifiers"]

ALGORITHMS = ("RS256", "RS384", "ES256", "ES384")
JWKS_COOLDOWN = 1.0  # seconds between two JWKS refreshes caused by unknown key ids
MAX_CACHED_TOKENS = 10_000
HTTP_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    """What the server uses of the provider's discovery document."""

    issuer: str
    jwks_uri: str
    token_endpoint: str | None
    authorization_endpoint: str | None
    grant_types: tuple[str, ...] = ()
    token_auth_methods: tuple[str, ...] = ()
    code_challenge_methods: tuple[str, ...] = ()


class TokenVerifier:
    """Checks bearer JWTs from one issuer for one audience (thread-safe)."""

    def __init__(
        self, issuer: str, audience: str, leeway: float = 30.0, own: tuple[ProviderMetadata, jwt.PyJWK] | None = None
    ) -> None:
        """``own``: the tokens of this server's own token endpoint (auth/backend.py), whose metadata and signing
        key are known here: nothing is discovered or fetched."""
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self._lock = threading.Lock()
        self._metadata: ProviderMetadata | None = own[0] if own else None
        self._keys: jwt.PyJWKClient | None = None
        self._own_key = own[1] if own else None
        self._verified: dict[str, Principal] = {}

    # -- the provider --------------------------------------------------------------------------------------------

    def metadata(self) -> ProviderMetadata:
        """The provider's discovery document (read once; again after a failure: ServiceUnavailable). Blocking."""
        with self._lock:
            if self._metadata is None:
                try:
                    self._metadata = _discover(self.issuer)
                except (httpx.HTTPError, ValueError) as exc:
                    reason = type(exc).__name__
                    raise ServiceUnavailable(f"The token issuer cannot be reached right now ({reason})") from None
                self._keys = jwt.PyJWKClient(
                    self._metadata.jwks_uri,
                    cache_keys=True,
                    lifespan=3600,
                    timeout=HTTP_TIMEOUT,
                    cooldown_duration=JWKS_COOLDOWN,
                )
            return self._metadata

    # -- tokens --------------------------------------------------------------------------------------------------

    def cached(self, token: str) -> Principal | None:
        """The principal of a token verified before and not yet expired (cheap: call it on the event loop)."""
        principal = self._verified.get(token)
        if principal is not None and principal.expires > time.time() - self.leeway:
            return principal
        return None

    def verify(self, token: str) -> Principal:
        """The principal of ``token``, or Unauthorized saying why not. Blocking (it may fetch the JWKS)."""
        principal = self.cached(token)
        if principal is not None:
            return principal
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthorized("The bearer token is too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthorized("The bearer token is not a JWT") from None
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise Unauthorized(
                f"The bearer token is signed with {str(algorithm)[:20]!r}; accepted: {', '.join(ALGORITHMS)}"
            )
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise Unauthorized("The bearer token names no signing key (kid)")
        claims = self._decode(token, kid)
        principal = principal_from_claims(claims, float(claims["exp"]))
        if len(self._verified) >= MAX_CACHED_TOKENS:
            self._verified.clear()
        self._verified[token] = principal
        return principal

    def _signing_key(self, kid: str) -> jwt.PyJWK:
        if self._own_key is not None:
            if kid != self._own_key.key_id:
                raise Unauthorized("The bearer token is signed with a key this server does not sign with")
            return self._own_key
        self.metadata()
        assert self._keys is not None
        try:
            return self._keys.get_signing_key(kid)
        except jwt.PyJWKClientError:
            raise Unauthorized("The bearer token is signed with a key the issuer does not publish") from None

    def _decode(self, token: str, kid: str) -> dict[str, Any]:
        key = self._signing_key(kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=list(ALGORITHMS),
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The bearer token has expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized(f"The bearer token is not for this server (aud must be {self.audience})") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized(f"The bearer token is not from the trusted issuer ({self.issuer})") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"The bearer token is not valid ({type(exc).__name__})") from None
        return claims


class Verifiers:
    """Bearer JWTs from more than one issuer (the OpenID provider and this server's own token endpoint): a token
    goes to the verifier of the issuer its ``iss`` names (read before the signature is checked, only to choose the
    verifier, which then checks everything). The first verifier's provider is the one SMART discovery names."""

    def __init__(self, verifiers: list[TokenVerifier]) -> None:
        self.verifiers = verifiers
        self._by_issuer = {verifier.issuer: verifier for verifier in verifiers}
        if len(self._by_issuer) != len(verifiers):
            raise ValueError("two token verifiers for one issuer")

    def metadata(self) -> ProviderMetadata:
        return self.verifiers[0].metadata()

    def cached(self, token: str) -> Principal | None:
        for verifier in self.verifiers:
            principal = verifier.cached(token)
            if principal is not None:
                return principal
        return None

    def verify(self, token: str) -> Principal:
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthorized("The bearer token is too long")
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except jwt.InvalidTokenError:
            raise Unauthorized("The bearer token is not a JWT") from None
        verifier = self._by_issuer.get(issuer) if isinstance(issuer, str) else None
        if verifier is None:
            raise Unauthorized("The bearer token is not from a trusted issuer")
        return verifier.verify(token)


def _discover(issuer: str) -> ProviderMetadata:
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    response = httpx.get(url, timeout=HTTP_TIMEOUT, follow_redirects=False)
    response.raise_for_status()
    document = response.json()
    if not isinstance(document, dict) or not isinstance(document.get("jwks_uri"), str):
        raise ValueError("the discovery document names no jwks_uri")
    if document.get("issuer") != issuer:
        raise ValueError("the discovery document is for another issuer")

    def text(name: str) -> str | None:
        value = document.get(name)
        return value if isinstance(value, str) else None

    def texts(name: str) -> tuple[str, ...]:
        value = document.get(name)
        return tuple(item for item in value if isinstance(item, str)) if isinstance(value, list) else ()

    return ProviderMetadata(
        issuer,
        document["jwks_uri"],
        text("token_endpoint"),
        text("authorization_endpoint"),
        texts("grant_types_supported"),
        texts("token_endpoint_auth_methods_supported"),
        texts("code_challenge_methods_supported"),
    )
