"""A resource's id/oid values of one parameter as stored in its row of ``ID_TABLE`` (search/index.py, column
``codes``): the exact values a hash in the search index stands for.

The values are sorted and front-coded (each one as the length it shares with the one before it and the rest: a
study's instance UIDs extend their series' UID, so most of each is shared), written as a JSON array
``[shared, rest, shared, rest, …]`` and zlib-compressed (zlib, from the standard library, rather than LZ4, which
``storage/bodies.py`` uses for bodies: on these short, repetitive lists it makes them a third smaller, about 220
bytes a generated study against 350 for LZ4 on the same front coding, and the lists are small enough that either
decompresses in microseconds). Without the front coding zlib makes them 450 bytes, LZ4 870.

A search confirms a hash's candidates against these lists (search/ids.py) instead of parsing their bodies, and an
update or delete computes the hashes to remove from them (``id_hashes``).
"""

from __future__ import annotations

import zlib
from bisect import bisect_left
from collections.abc import Iterable

import orjson


def pack_codes(codes: Iterable[str]) -> bytes:
    """``codes`` (any order, repeats allowed) as stored."""
    flat: list[int | str] = []
    previous = ""
    for code in sorted(set(codes)):
        shared = _shared(previous, code)
        flat += (shared, code[shared:])
        previous = code
    return zlib.compress(orjson.dumps(flat))


def _shared(first: str, second: str) -> int:
    """The length of the prefix two strings share: a binary search over prefix comparisons (each done in C), a few
    slices for a UID instead of a Python step per character."""
    low, high = 0, min(len(first), len(second))  # first[:low] == second[:low]; test up to high
    if first[:high] == second[:high]:
        return high
    while high - low > 1:  # first[:high] != second[:high]
        middle = (low + high) // 2
        if first[:middle] == second[:middle]:
            low = middle
        else:
            high = middle
    return low


def unpack_codes(packed: bytes | memoryview) -> list[str]:
    """The stored values, sorted."""
    flat = orjson.loads(zlib.decompress(packed))
    codes: list[str] = []
    previous = ""
    for index in range(0, len(flat), 2):
        previous = previous[: flat[index]] + flat[index + 1]
        codes.append(previous)
    return codes


def holds(codes: list[str], code: str) -> bool:
    """Whether ``code`` is one of ``codes`` (sorted: ``unpack_codes``)."""
    at = bisect_left(codes, code)
    return at < len(codes) and codes[at] == code
