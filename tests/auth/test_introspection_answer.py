"""What an introspection answer grants (``principal_from_answer``, pure) and which verifier a token goes to
(``Authenticators``): tables, no I/O."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_imaging.auth.authenticators import Authenticators, looks_like_jwt
from fhir_imaging.auth.introspection import UNDATED_ANSWER_SECONDS, IntrospectionVerifier, principal_from_answer
from fhir_imaging.auth.scopes import Grant
from fhir_imaging.auth.tokens import TokenVerifier
from fhir_imaging.fhir.outcome import Unauthorized

NOW = 1_800_000_000.0
AUDIENCE = "https://fhir.example.org/baseR4"
ISSUER = "https://idp.example.org"
ACTIVE: dict[str, Any] = {
    "active": True,
    "client_id": "viewer",
    "scope": "patient/*.rs openid",
    "patient": "p1",
    "exp": NOW + 300,
    "iat": NOW - 10,
    "aud": AUDIENCE,
    "iss": ISSUER,
    "token_type": "Bearer",
}


def test_an_active_answer_makes_the_principal() -> None:
    principal = principal_from_answer(ACTIVE, AUDIENCE, ISSUER, NOW)
    assert principal.subject == "viewer" and principal.client_id == "viewer"
    assert principal.access.grants == (Grant("patient", "*", frozenset("rs")),)
    assert principal.access.patient == "p1"
    assert principal.expires == NOW + 300


@pytest.mark.parametrize(
    ("changes", "subject", "client_id"),
    [
        ({"sub": "dr-1"}, "dr-1", "viewer"),
        ({"client_id": None}, "unknown", None),
        ({"client_id": None, "sub": "dr-1"}, "dr-1", None),
    ],
)
def test_the_subject_is_sub_else_the_client(changes: dict[str, Any], subject: str, client_id: str | None) -> None:
    answer = {key: value for key, value in {**ACTIVE, **changes}.items() if value is not None}
    principal = principal_from_answer(answer, AUDIENCE, ISSUER, NOW)
    assert (principal.subject, principal.client_id) == (subject, client_id)


@pytest.mark.parametrize(
    "changes",
    [
        {"aud": [AUDIENCE, "https://other.example.org"]},  # aud may be a list
        {"aud": None},  # optional in RFC 7662
        {"iss": None},
        {"token_type": None},
        {"token_type": "bearer"},
        {"exp": NOW - 20},  # within the 30 s leeway
        {"scope": ["patient/*.rs", "openid"]},  # a list, as some servers send
    ],
)
def test_accepted_variations(changes: dict[str, Any]) -> None:
    answer = {key: value for key, value in {**ACTIVE, **changes}.items() if value is not None}
    principal = principal_from_answer(answer, AUDIENCE, ISSUER, NOW)
    assert principal.access.grants == (Grant("patient", "*", frozenset("rs")),)


def test_without_an_issuer_setting_any_iss_is_taken() -> None:
    assert principal_from_answer({**ACTIVE, "iss": "https://else.example.org"}, AUDIENCE, None, NOW).subject


def test_an_answer_without_exp_holds_a_short_while() -> None:
    answer = {key: value for key, value in ACTIVE.items() if key != "exp"}
    assert principal_from_answer(answer, AUDIENCE, ISSUER, NOW).expires == NOW + UNDATED_ANSWER_SECONDS
    assert UNDATED_ANSWER_SECONDS <= 60


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ({"active": False}, "not active"),
        ({}, "not active"),  # active is required
        ({**ACTIVE, "active": "true"}, "not active"),  # a boolean, not a string
        ({**ACTIVE, "exp": NOW - 31}, "expired"),
        ({**ACTIVE, "exp": "soon"}, "exp"),
        ({**ACTIVE, "exp": True}, "exp"),
        ({**ACTIVE, "aud": "https://other.example.org"}, "not for this server"),
        ({**ACTIVE, "aud": ["https://other.example.org"]}, "not for this server"),
        ({**ACTIVE, "iss": "https://else.example.org"}, "trusted issuer"),
        ({**ACTIVE, "token_type": "DPoP"}, "bearer tokens"),
        ({**ACTIVE, "token_type": "refresh_token"}, "bearer tokens"),
    ],
)
def test_refused_answers(answer: dict[str, Any], reason: str) -> None:
    with pytest.raises(Unauthorized, match=reason) as refused:
        principal_from_answer(answer, AUDIENCE, ISSUER, NOW)
    assert refused.value.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


OPAQUE = "CiyzbQYw75egeuv_26J3pF3CI4yI0GHhDh1lGdHRMwu"
JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("token", "jwt"),
    [
        (JWT, True),
        ("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", True),  # alg none: the JWT check refuses it
        (OPAQUE, False),
        ("2YotnFZFEjr1zCsicMWpAA", False),  # RFC 6749's example
        ("a.b", False),
        ("a.b.c.d.e", False),  # a JWE: not something the JWT check reads
        (".b.c", False),
        ("a..c", False),
        ("a+b.c/d.e", False),  # base64, not base64url
        ("a=.b.c", False),  # padding
        ("ä.b.c", False),
        ("", False),
    ],
)
def test_looks_like_jwt(token: str, jwt: bool) -> None:
    assert looks_like_jwt(token) is jwt


def _verifiers() -> tuple[TokenVerifier, IntrospectionVerifier]:
    # Built, never used: neither makes a request before its first token.
    jwt = TokenVerifier(ISSUER, AUDIENCE)
    introspection = IntrospectionVerifier(f"{ISSUER}/introspect", "fhir", "secret", AUDIENCE, ISSUER)
    return jwt, introspection


def test_with_both_the_shape_of_the_token_picks_the_verifier() -> None:
    jwt, introspection = _verifiers()
    both = Authenticators(jwt, introspection)
    assert both.verifier_for(JWT) is jwt
    assert both.verifier_for(OPAQUE) is introspection
    assert both.verifier_for("a.b.c.d.e") is introspection
    assert both.introspection_endpoint == f"{ISSUER}/introspect"


def test_with_one_verifier_it_takes_every_token() -> None:
    jwt, introspection = _verifiers()
    only_jwt, only_introspection = Authenticators(jwt=jwt), Authenticators(introspection=introspection)
    assert only_jwt.verifier_for(OPAQUE) is jwt and only_jwt.verifier_for(JWT) is jwt
    assert only_introspection.verifier_for(JWT) is introspection
    assert only_introspection.verifier_for(OPAQUE) is introspection
    assert only_jwt.introspection_endpoint is None
    assert only_introspection.metadata() is None  # no issuer: nothing to discover
    with pytest.raises(ValueError, match="needs"):
        Authenticators()


def test_the_secret_is_not_in_the_verifiers_repr() -> None:
    _, introspection = _verifiers()
    assert "secret" not in repr(introspection) and "secret" not in repr(vars(introspection))
