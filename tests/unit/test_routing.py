"""Read replicas, the pure part: LSN tokens, sessions and how far a replica trails (storage/routing.py)."""

from __future__ import annotations

import math

import pytest

from fhir_imaging.api.consistency import token_headers, token_lifetime, token_of
from fhir_imaging.storage.routing import MAX_LSN, SESSION, LagTracker, fence_of, format_lsn, parse_lsn, session


@pytest.mark.parametrize(
    ("text", "lsn"),
    [
        ("0/0", 0),
        ("0/3000060", 0x3000060),
        ("16/B374D848", (0x16 << 32) | 0xB374D848),
        ("16/b374d848", (0x16 << 32) | 0xB374D848),
        ("FFFFFFFF/FFFFFFFF", 2**64 - 1),
        ("", None),
        ("0", None),
        ("/0", None),
        ("0/", None),
        ("0/0/0", None),
        ("g/0", None),
        ("-1/0", None),
        (" 0/1", None),
        ("100000000/0", None),  # more than 32 bits in one half
        ("0/" + "0" * 10_000, None),  # long input is refused by its length, not parsed
    ],
)
def test_parse_lsn(text: str, lsn: int | None) -> None:
    assert parse_lsn(text) == lsn


@pytest.mark.parametrize("lsn", [0, 1, 0x3000060, (0x16 << 32) | 0xB374D848, 2**64 - 1])
def test_format_lsn_round_trips(lsn: int) -> None:
    assert parse_lsn(format_lsn(lsn)) == lsn


def test_format_lsn_is_postgres_text_form() -> None:
    assert format_lsn((0x16 << 32) | 0xB374D848) == "16/B374D848"


@pytest.mark.parametrize(
    ("token", "fence"),
    [(None, 0), ("", 0), ("0/10", 16), (" 0/10 ", 16), ("garbage", MAX_LSN), ("1/2/3", MAX_LSN)],
)
def test_a_token_that_does_not_parse_asks_for_the_primary(token: str | None, fence: int) -> None:
    assert fence_of(token) == fence


def test_session_fence_is_the_later_of_token_and_own_commits() -> None:
    assert SESSION.get() is None
    with session(after=100) as current:
        assert SESSION.get() is current
        assert current.fence == 100
        current.note_commit(50)
        assert current.fence == 100
        current.note_commit(150)
        current.note_commit(120)  # an older commit never lowers it
        assert current.fence == 150
    assert SESSION.get() is None


def test_session_that_does_not_follow_writes_keeps_its_fence() -> None:
    with session(after=100, follow_writes=False) as current:
        current.note_commit(500)
        assert current.fence == 100


def test_lag_of_a_replica_that_replayed_the_latest_sample_is_zero() -> None:
    tracker = LagTracker(horizon=10)
    tracker.note(0.0, 100)
    assert tracker.lag(100, 0.0) == 0
    assert tracker.lag(150, 0.0) == 0


def test_lag_is_unknown_until_a_replica_has_replayed_some_sample() -> None:
    tracker = LagTracker(horizon=10)
    tracker.note(0.0, 100)
    assert tracker.lag(99, 0.0) == math.inf


def test_lag_is_time_since_the_latest_sample_replayed() -> None:
    tracker = LagTracker(horizon=10)
    for at, lsn in [(0.0, 100), (1.0, 200), (2.0, 300), (3.0, 300)]:
        tracker.note(at, lsn)
    assert tracker.lag(300, 3.0) == 0
    assert tracker.lag(250, 3.0) == 2.0  # it has what the primary had at 1.0
    assert tracker.lag(100, 3.0) == 3.0


def test_an_idle_primary_makes_no_lag() -> None:
    """Nothing written for a long time: a replica that replayed everything does not trail, however old its last
    replayed transaction is."""
    tracker = LagTracker(horizon=10)
    for second in range(100):
        tracker.note(float(second), 500)
    assert tracker.lag(500, 99.0) == 0


def test_samples_older_than_the_horizon_are_dropped() -> None:
    tracker = LagTracker(horizon=5)
    for second in range(20):
        tracker.note(float(second), 100 * second)
    assert tracker.lag(1500, 19.0) == 4.0
    assert tracker.lag(1300, 19.0) == math.inf  # the samples it replayed were dropped: it trails by more than 5 s


def test_token_travels_in_header_or_cookie() -> None:
    assert token_of([]) is None
    assert token_of([(b"cookie", b"a=1; fhir_imaging_consistency=0/10; b=2")]) == "0/10"
    assert token_of([(b"cookie", b"fhir_imaging_consistency=0/10"), (b"x-consistency-token", b"0/20")]) == "0/20"
    assert token_of([(b"cookie", b"other=0/10")]) is None


def test_token_headers() -> None:
    headers = dict(token_headers(0x3000060, 7, secure=True))
    assert headers[b"x-consistency-token"] == b"0/3000060"
    cookie = headers[b"set-cookie"].decode()
    assert cookie.startswith("fhir_imaging_consistency=0/3000060;")
    for attribute in ("Path=/baseR4", "Max-Age=7", "HttpOnly", "SameSite=Lax", "Secure"):
        assert attribute in cookie
    assert "Secure" not in dict(token_headers(1, 7, secure=False))[b"set-cookie"].decode()
    assert token_lifetime(5.0, 1.0) == 7
    assert token_lifetime(0.0, 0.1) == 1
