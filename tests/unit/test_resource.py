from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_imaging.fhir.outcome import BadRequest
from fhir_imaging.fhir.resource import (
    ID_PATTERN,
    etag,
    format_instant,
    http_date,
    is_valid_id,
    json_depth_exceeds,
    new_id,
    parse_etag,
    parse_instant,
    parse_resource_json,
    stamped,
)


@pytest.mark.parametrize("value", ["a", "img-001", "A.b-9", "x" * 64, new_id()])
def test_valid_ids(value: str) -> None:
    assert is_valid_id(value)


@pytest.mark.parametrize("value", ["", "x" * 65, "a/b", "a_b", "a b", "é", 12, None])
def test_invalid_ids(value: object) -> None:
    assert not is_valid_id(value)


@given(st.text(alphabet=st.sampled_from("aZ09-._/ é\n\x00\u0660"), max_size=70))
def test_ids_checked_exactly_as_the_id_regex(value: str) -> None:
    assert is_valid_id(value) == (re.fullmatch(ID_PATTERN.pattern, value, re.ASCII) is not None)


def test_instant_round_trip_and_http_date() -> None:
    moment = parse_instant("2024-06-15T12:30:00.123+02:00")
    assert format_instant(moment) == "2024-06-15T10:30:00.123Z"
    assert http_date("2024-06-15T10:30:00.123Z") == "Sat, 15 Jun 2024 10:30:00 GMT"


def test_http_date_is_what_the_email_module_writes() -> None:
    moment = datetime(1999, 12, 31, 23, 59, 58, 999000, tzinfo=UTC)
    for days in range(0, 3000, 7):
        instant = format_instant(moment + timedelta(days=days, hours=days % 24, seconds=days % 61))
        assert http_date(instant) == format_datetime(parse_instant(instant), usegmt=True)


def test_etag_round_trip() -> None:
    assert parse_etag(etag(42)) == 42
    assert parse_etag("nonsense") is None


def test_stamp_sets_id_and_meta_first_and_keeps_everything_else() -> None:
    resource = {"resourceType": "Patient", "id": "old", "gender": "male", "meta": {"versionId": "9", "tag": [1]}}
    document = stamped(resource, "new", 3, "2024-01-01T00:00:00.000Z")
    assert list(document)[:3] == ["resourceType", "id", "meta"]
    assert document["id"] == "new"
    assert document["meta"] == {"versionId": "3", "lastUpdated": "2024-01-01T00:00:00.000Z", "tag": [1]}
    assert document["gender"] == "male"
    assert resource["meta"]["versionId"] == "9"  # the input is not changed


def test_json_depth() -> None:
    assert not json_depth_exceeds({"a": [{"b": 1}]}, limit=3)
    assert json_depth_exceeds({"a": [{"b": [1]}]}, limit=3)


@pytest.mark.parametrize("body", [b"", b"  ", b"{", b"[]", b"1", b'{"resourceType": ""}', b'{"a": 1}'])
def test_parse_resource_json_refuses(body: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_resource_json(body)


def test_parse_resource_json_accepts_object_with_type() -> None:
    assert parse_resource_json(b'{"resourceType": "Patient"}') == {"resourceType": "Patient"}
