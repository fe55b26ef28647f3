"""Date values read by position (the common full forms) give what the general pattern gives, for any input."""

from __future__ import annotations

import gc
from unittest import mock

from hypothesis import given
from hypothesis import strategies as st

from fhir_imaging.heap import YOUNG_THRESHOLD, freeze_loaded, thaw
from fhir_imaging.search.types import date
from fhir_imaging.search.types.base import InvalidValue
from fhir_imaging.search.types.date import parse_interval

DIGITS = st.text("0123456789", min_size=1, max_size=3)
PIECES = st.sampled_from(["-", ":", "T", ".", "Z", "+", " ", "t", "\ud800", "０"])


def _interval(text: str) -> object:
    try:
        return parse_interval(text)
    except InvalidValue:
        return None


def _general(text: str) -> object:
    """``_interval`` by the general path alone (the whole pattern's groups), the positional reading switched off."""
    with (
        mock.patch.object(date, "FULL_DATETIME", lambda _: False),
        mock.patch.object(date, "FULL_DATE", lambda _: False),
    ):
        return _interval(text)


FULL_FORMS = [
    ("2024-06-15T10:30:00Z", True),
    ("2024-06-15T10:30:00.123456789-05:30", True),
    ("2024-06-15", True),
    (" 2024-06-15T10:30:00+14:00 ", True),
    ("2024-06-15T10:30:00", True),  # no zone: the general path, read as UTC
    ("2024-06-15T10:30:00.Z", False),
    ("2024-02-30", False),  # the pattern matches, the calendar does not
    ("2024-06-15T24:00:00Z", False),
]


def test_full_forms_read_by_position() -> None:
    for text, valid in FULL_FORMS:
        assert (_interval(text) is not None) == valid, text
        assert _interval(text) == _general(text), text
    assert parse_interval("2024-06-15T10:30:00.5+02:00") == parse_interval("2024-06-15T08:30:00.5Z")
    lo, hi = parse_interval("2024-06-15")
    assert hi - lo + 1 == 86_400_000_000


@given(st.lists(st.one_of(DIGITS, PIECES), max_size=14).map("".join))
def test_any_text_parses_as_the_general_path_reads_it(text: str) -> None:
    assert _interval(text) == _general(text)


@given(
    st.integers(1, 9999),
    st.integers(1, 12),
    st.integers(1, 28),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
    st.text("0123456789", max_size=9),
    st.sampled_from(["Z", "+00:00", "-05:30", "+14:00"]),
)
def test_full_datetime_matches_its_minute(
    year: int, month: int, day: int, hour: int, minute: int, second: int, fraction: str, zone: str
) -> None:
    """A value to the second lies inside the minute that contains it (the minute is read by the general path)."""
    head = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}"
    text = f"{head}:{second:02d}{'.' + fraction if fraction else ''}{zone}"
    lo, hi = parse_interval(text)
    minute_lo, minute_hi = parse_interval(head + zone)
    assert minute_lo <= lo <= hi <= minute_hi
    assert (lo - minute_lo) // 1_000_000 == second
    assert (lo, hi) == _general(text)


def test_heap_thresholds_restored() -> None:
    before = gc.get_threshold()
    freeze_loaded()
    try:
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD
        assert gc.get_freeze_count() > 0
    finally:
        thaw()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
