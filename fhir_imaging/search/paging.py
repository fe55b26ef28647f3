"""The page cursor: an opaque, stateless token in the ``next`` / ``previous`` links.

It is base64url(JSON ``{"d": "n"|"p", "k": [sort key values of the boundary row], "r": its rid}``): the next page
is the rows after the last row of this one in (sort keys…, rid) order; the previous page the rows before the first.
The server keeps nothing between requests, and rows inserted or updated meanwhile never shift a page.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson

from fhir_imaging.fhir.outcome import BadRequest

CURSOR = "_cursor"


@dataclass(frozen=True, slots=True)
class Cursor:
    keys: list[Any]
    rid: int
    backward: bool


def encode_cursor(keys: list[Any], rid: int, backward: bool) -> str:
    data = orjson.dumps({"d": "p" if backward else "n", "k": keys, "r": rid})
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def decode_cursor(token: str, sort_keys: int) -> Cursor:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        keys, rid, direction = data["k"], data["r"], data["d"]
        if not isinstance(keys, list) or len(keys) != sort_keys or not isinstance(rid, int) or direction not in "np":
            raise ValueError
    except (ValueError, TypeError, KeyError, binascii.Error, orjson.JSONDecodeError):
        raise BadRequest(f"{CURSOR} is not a page cursor given by this search's links", CURSOR) from None
    return Cursor(keys, rid, direction == "p")
