"""What a verified access token yields, whichever way it was verified (a JWT's signature, or the authorization
server's introspection answer): the ``Principal``, read from the token's claims the same way in both cases.

This module imports nothing heavy, so that the introspection verifier need not load the JWT library.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fhir_imaging.auth.scopes import Access, parse_scopes

MAX_TOKEN_LENGTH = 16 * 1024  # a longer Authorization header is refused before parsing (or sending it anywhere)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token speaks for, and what it allows."""

    subject: str  # ``sub`` (or ``client_id`` when the token has no subject)
    client_id: str | None
    access: Access
    expires: float  # seconds since the epoch until which the verification holds: the token's ``exp``, or less


def principal_from_claims(claims: Mapping[str, Any], expires: float) -> Principal:
    """The principal of a token's claims (a JWT's payload, or an introspection answer: RFC 7662 uses the same
    names): ``scope`` (a space-separated string, or a list as some providers send) → SMART grants, the ``patient``
    claim → the patient in context, ``sub`` (else ``client_id``/``azp``) → the subject."""
    scope = claims.get("scope", "")
    if isinstance(scope, list):
        scope = " ".join(str(item) for item in scope)
    client_id = claims.get("client_id") or claims.get("azp")
    subject = claims.get("sub") or client_id or "unknown"
    patient = claims.get("patient")
    access = Access(parse_scopes(str(scope)), str(patient) if patient is not None else None)
    return Principal(str(subject), str(client_id) if client_id else None, access, expires)
