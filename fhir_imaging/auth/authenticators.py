"""The ways this server verifies a bearer token, behind the one interface the HTTP layer uses (``cached`` on the
event loop, ``verify`` in a worker thread).

With ``--auth-issuer`` alone every token is a JWT checked against the issuer's keys (``auth/tokens.py``); with
``--auth-introspection-url`` alone every token is introspected (``auth/introspection.py``). With both, the token's
shape decides: three dot-separated base64url parts (a JWS in compact form, RFC 7515 §7.1) go to the JWT verifier,
anything else (an opaque token, or a JWE's five parts) to introspection. The shape is only a routing hint: the
verifier it picks does every check, so a token made to look like a JWT gains nothing by it.

The verifiers are passed in, already built: this module loads neither the JWT library nor httpx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fhir_imaging.auth.principal import Principal

if TYPE_CHECKING:
    from fhir_imaging.auth.introspection import IntrospectionVerifier
    from fhir_imaging.auth.tokens import ProviderMetadata, TokenVerifier, Verifiers

BASE64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def looks_like_jwt(token: str) -> bool:
    """Whether ``token`` has the shape of a signed JWT: header.payload.signature, each part base64url without
    padding, header and payload not empty (the signature is, for ``alg: none``: the JWT verifier refuses that)."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        return False
    return all(BASE64URL.issuperset(part) for part in parts)


class Authenticators:
    """The JWT verifier, the introspection verifier, or both (at least one), as one verifier."""

    def __init__(
        self,
        jwt: TokenVerifier | Verifiers | None = None,
        introspection: IntrospectionVerifier | None = None,
    ) -> None:
        if jwt is None and introspection is None:
            raise ValueError("Authenticators needs a JWT verifier, an introspection verifier, or both")
        self.jwt = jwt
        self.introspection = introspection

    @property
    def introspection_endpoint(self) -> str | None:
        """The introspection endpoint tokens are checked with (published in the SMART configuration), if any."""
        return self.introspection.url if self.introspection is not None else None

    def verifier_for(self, token: str) -> TokenVerifier | Verifiers | IntrospectionVerifier:
        """The verifier that checks ``token``."""
        if self.jwt is None:
            assert self.introspection is not None
            return self.introspection
        if self.introspection is None or looks_like_jwt(token):
            return self.jwt
        return self.introspection

    def cached(self, token: str) -> Principal | None:
        """The principal of a token verified before and still valid (one dictionary look-up per verifier: no
        dispatch needed, a token is only ever remembered by the verifier that checked it)."""
        for verifier in (self.jwt, self.introspection):
            if verifier is not None:
                principal = verifier.cached(token)
                if principal is not None:
                    return principal
        return None

    def verify(self, token: str) -> Principal:
        """The principal of ``token`` (Unauthorized, or ServiceUnavailable when what verifies it cannot be reached).
        Blocking."""
        return self.verifier_for(token).verify(token)

    def metadata(self) -> ProviderMetadata | None:
        """The issuer's discovery document (blocking; ServiceUnavailable when it cannot be read), None without
        ``--auth-issuer``: introspection alone names no token or authorize endpoint."""
        return self.jwt.metadata() if self.jwt is not None else None

    def close(self) -> None:
        """Close what the verifiers hold open (the introspection endpoint's connections)."""
        if self.introspection is not None:
            self.introspection.close()
