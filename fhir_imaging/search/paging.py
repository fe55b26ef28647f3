"""The page cursor, ``_cursor``: an opaque, stateless token in the ``next`` / ``previous`` links of a search and
the ``next`` links of a history.

It is base64url(JSON ``{"d": "n"|"p", "k": [sort key values of the boundary row], "r": its rid}``): the next page
is the rows after the last row of this one in (sort keys…, rid) order; the previous page the rows before the first.
The server keeps nothing between requests, and rows inserted or updated meanwhile never shift a page.

A history is ordered by (``tx``, sequence number) (storage/history.py), newest first, and only goes forward: its
cursor's one key is the ``tx`` of the newest version of the next page, ``"r"`` its sequence number and ``"d"`` is
``"n"`` (the page is the versions at or before it). A cursor without keys, as servers before ``tx`` wrote them, names
a version written before it (``tx`` 0).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson

from fhir_imaging.fhir.outcome import BadRequest
from fhir_imaging.fhir.resource import MAX_INT64

CURSOR = "_cursor"


@dataclass(frozen=True, slots=True)
class Cursor:
    keys: list[Any]
    rid: int
    backward: bool


def encode_cursor(keys: list[Any], rid: int, backward: bool) -> str:
    data = orjson.dumps({"d": "p" if backward else "n", "k": keys, "r": rid})
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


# What the sort key of a row is, by the kind of the sort parameter (planner.sort_expression): dates are integer
# instants, numbers and quantities floats (or integers), anything else text. A cursor whose keys do not fit is refused
# before it reaches the database (PostgreSQL would fail comparing a text value with a number column).
NUMBER_KINDS = frozenset({"number", "quantity"})


def _fits(kind: str, value: Any) -> bool:
    if kind == "integer":  # a history position
        return type(value) is int and 0 <= value <= MAX_INT64
    if type(value) is int:
        return (kind in NUMBER_KINDS or kind == "date") and -MAX_INT64 - 1 <= value <= MAX_INT64
    if type(value) is float:
        return kind in NUMBER_KINDS
    return isinstance(value, str) and kind not in NUMBER_KINDS and kind != "date"


def decode_cursor(token: str, kinds: tuple[str, ...]) -> Cursor:
    """The cursor of a search sorted by parameters of ``kinds`` (one per sort key, e.g. ``("date", "_id")``)."""
    return _decode(token, kinds, "search")


def encode_history_cursor(position: tuple[int, int]) -> str:
    """The cursor of the history page whose newest version is at ``position`` (tx, seq)."""
    tx, seq = position
    return encode_cursor([tx], seq, False)


def decode_history_cursor(token: str) -> tuple[int, int]:
    """The position (tx, seq) a history cursor names: its page is the versions at or before it."""
    try:
        cursor = _decode(token, ("integer",), "history")
    except BadRequest:
        cursor = _decode(token, (), "history")
        cursor.keys.append(0)
    if cursor.backward or cursor.rid < 0:
        raise _refused("history")
    return cursor.keys[0], cursor.rid


def _refused(what: str) -> BadRequest:
    return BadRequest(f"{CURSOR} is not a page cursor given by this {what}'s links", CURSOR)


def _decode(token: str, kinds: tuple[str, ...], what: str) -> Cursor:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        keys, rid, direction = data["k"], data["r"], data["d"]
        if (
            not isinstance(keys, list)
            or len(keys) != len(kinds)
            or not all(_fits(kind, key) for kind, key in zip(kinds, keys, strict=True))
            or type(rid) is not int
            or not -MAX_INT64 - 1 <= rid <= MAX_INT64
            or direction not in ("n", "p")
        ):
            raise ValueError
    except (ValueError, TypeError, KeyError, binascii.Error, orjson.JSONDecodeError):
        raise _refused(what) from None
    return Cursor(keys, rid, direction == "p")
