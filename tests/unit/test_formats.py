from __future__ import annotations

import pytest

from fhir_imaging.api import formats
from fhir_imaging.api.formats import FHIR_JSON, PLAIN_JSON, check_content_type, negotiate
from fhir_imaging.fhir.outcome import NotAcceptable, UnsupportedMediaType


@pytest.mark.parametrize(
    ("accept", "format_param", "expected"),
    [
        (None, None, FHIR_JSON),
        ("application/fhir+json", None, FHIR_JSON),
        ("application/json", None, PLAIN_JSON),
        ("*/*", None, FHIR_JSON),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", None, FHIR_JSON),
        ("application/fhir+xml;q=0.9, application/fhir+json", None, FHIR_JSON),
        (None, "json", FHIR_JSON),
        (None, "application/json", PLAIN_JSON),
        ("application/fhir+xml", "json", FHIR_JSON),
    ],
)
def test_negotiate_picks_json(accept: str | None, format_param: str | None, expected: str) -> None:
    assert negotiate(accept, format_param) == expected


@pytest.mark.parametrize(
    ("accept", "format_param"),
    [("application/fhir+xml", None), ("application/xml", None), ("text/plain", None), (None, "xml"), (None, "ttl")],
)
def test_negotiate_refuses_what_we_cannot_write(accept: str | None, format_param: str | None) -> None:
    with pytest.raises(NotAcceptable):
        negotiate(accept, format_param)


@pytest.mark.parametrize(
    "content_type", ["application/fhir+json", "application/json", "application/fhir+json; charset=utf-8"]
)
def test_json_bodies_accepted(content_type: str | None) -> None:
    check_content_type(content_type)


@pytest.mark.parametrize(
    "content_type", [None, "", "application/fhir+xml", "text/xml", "application/x-www-form-urlencoded", "text/plain"]
)
def test_other_bodies_refused(content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaType):
        check_content_type(content_type)


def test_the_usual_accept_headers_get_what_negotiation_gives() -> None:
    for accept, media_type in formats.USUAL_ACCEPT.items():
        assert formats._negotiate(accept, None) == media_type
