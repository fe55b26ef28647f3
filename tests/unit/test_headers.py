from __future__ import annotations

import pytest

from fhir_imaging.api.headers import (
    handling_preference,
    if_match,
    none_match,
    not_modified_since,
    return_preference,
)
from fhir_imaging.fhir.outcome import BadRequest


@pytest.mark.parametrize(("value", "expected"), [(None, None), ('W/"3"', 3), ('"12"', 12), ("7", 7)])
def test_if_match(value: str | None, expected: int | None) -> None:
    assert if_match(value) == expected


@pytest.mark.parametrize("value", ["banana", 'W/"x"', ""])
def test_if_match_malformed_is_400(value: str) -> None:
    with pytest.raises(BadRequest):
        if_match(value)


@pytest.mark.parametrize(
    ("value", "current", "expected"),
    [(None, 1, False), ('W/"1"', 1, True), ('W/"1"', 2, False), ('W/"1", W/"2"', 2, True), ("*", 5, True)],
)
def test_none_match(value: str | None, current: int, expected: bool) -> None:
    assert none_match(value, current) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Sat, 15 Jun 2024 10:30:00 GMT", True),
        ("Sat, 15 Jun 2024 10:29:59 GMT", False),
        ("Sun, 16 Jun 2024 00:00:00 GMT", True),
        ("not a date", False),
        (None, False),
    ],
)
def test_not_modified_since(value: str | None, expected: bool) -> None:
    assert not_modified_since(value, "2024-06-15T10:30:00.999Z") is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "representation"),
        ("return=minimal", "minimal"),
        ("return=OperationOutcome", "OperationOutcome"),
        ('respond-async, return="minimal"', "minimal"),
        ("return=everything", "representation"),
        ("handling=strict; return=minimal", "minimal"),
    ],
)
def test_return_preference(value: str | None, expected: str) -> None:
    assert return_preference(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"), [(None, "lenient"), ("handling=strict", "strict"), ("handling=lenient", "lenient")]
)
def test_handling_preference(value: str | None, expected: str) -> None:
    assert handling_preference(value) == expected
