"""Regular expressions that run in time linear in the text (RE2), for every pattern that sees what a client sends.

Python's ``re`` backtracks: R4's base64Binary regex ``(\\s*([0-9a-zA-Z\\+/=]){4}\\s*)+`` against ``"AAAA " * 25 +
"!"`` runs for seconds on the event loop, and each further ``"AAAA "`` doubles the time. RE2 runs an automaton
instead: its time is linear in the text whatever the pattern, so no pattern and no input can stall the server. A
pattern RE2 cannot run (backreferences, lookaround) raises ``re2.error`` where it is compiled, at import, never on a
request.

Where RE2 reads a pattern differently from ``re`` (the patterns here rely on the RE2 reading):

- ``\\d``, ``\\w`` and ``\\b`` are ASCII only, as with ``re.ASCII`` (``re`` on str would take ``٣`` as a digit).
- ``\\s`` is ``[\\t\\n\\f\\r ]``: no ``\\v``, unlike ``re.ASCII`` and Java. The FHIR regexes are read with ``\\v``
  as whitespace (a vertical tab is no more valid in a FHIR string than a form feed): ``ascii_whitespace`` rewrites
  their ``\\s`` and ``\\S`` into explicit classes before they are compiled.
- ``$`` matches at the very end only (``re``'s ``$`` also before a final newline); prefer ``fullmatch``.
- Text that is not Unicode (a lone surrogate, which ``re`` accepts as a character) is matched with each lone
  surrogate read as U+FFFD: it matches ``.`` and negated classes, as in ``re``, and never raises.
- bytes patterns read the text byte by byte (Latin-1), exactly as ``re`` does with bytes.

``fullmatcher`` is for the hot paths (primitive validation): a yes/no answer from one call into RE2's own extension
module (``re2._re2``, which the ``re2`` module wraps), without capture groups or match objects (its cost against
``re``: bench/README.md, "Figures behind design choices"). ``compile`` gives match objects, at a few microseconds
more per call; its ``findall`` makes one call per match.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import re2
from re2 import _re2

# Python re.ASCII's whitespace, \t \n \v \f \r (0x09-0x0D) and the space, as members of a character class; and its
# complement (every code point but those), also as members so that it can stand inside a class.
_SPACE_MEMBERS = r"\t-\r "
_NOT_SPACE_MEMBERS = r"\x00-\x08\x0e-\x1f\x21-\x{10ffff}"


class LinearMatch(Protocol):
    """The part of a match object the callers use (``re.Match`` has the same methods)."""

    def __getitem__(self, group: int | str) -> Any: ...

    def group(self, *groups: int | str) -> Any: ...

    def groupdict(self, default: Any = None) -> dict[str, Any]: ...

    def start(self, group: int | str = 0) -> int: ...

    def end(self, group: int | str = 0) -> int: ...


def ascii_whitespace(pattern: str) -> str:
    """``pattern`` with ``\\s`` and ``\\S`` spelled as explicit classes of ``re.ASCII``'s whitespace (with ``\\v``)."""
    out: list[str] = []
    in_class, index = False, 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            escape = pattern[index : index + 2]
            if escape == r"\s":
                out.append(_SPACE_MEMBERS if in_class else f"[{_SPACE_MEMBERS}]")
            elif escape == r"\S":
                out.append(_NOT_SPACE_MEMBERS if in_class else f"[^{_SPACE_MEMBERS}]")
            else:
                out.append(escape)
            index += 2
            continue
        if char == "[" and not in_class:
            in_class = True
            start = index + 1 + (pattern[index + 1 : index + 2] == "^")
            if pattern[start : start + 1] == "]":  # a leading ] is a member, not the end of the class
                out.append(pattern[index : start + 1])
                index = start + 1
                continue
        elif char == "]" and in_class:
            in_class = False
        out.append(char)
        index += 1
    return "".join(out)


def _unicode(text: str) -> str:
    """``text`` as RE2 can take it: each lone surrogate (not encodable as UTF-8) → U+FFFD, the length unchanged."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def _options(pattern: str | bytes, capture: bool) -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # an error is raised, not also printed
    options.never_capture = not capture
    if isinstance(pattern, bytes):
        options.encoding = re2.Options.Encoding.LATIN1
    return options


def _program(pattern: str | bytes, capture: bool) -> Any:
    """The RE2 program itself (``re2._re2.RE2``, which the ``re2`` module wraps): one call per match, no objects."""
    program = _re2.RE2(pattern.encode() if isinstance(pattern, str) else pattern, _options(pattern, capture))
    if not program.ok():
        raise re2.error(program.error())
    return program


_UNANCHORED, _BOTH = re2._Anchor.UNANCHORED, re2._Anchor.ANCHOR_BOTH


class LinearPattern:
    """A compiled RE2 pattern with ``re``'s methods; ``text`` is str for a str pattern, bytes for a bytes one."""

    __slots__ = ("_program", "_regexp", "pattern")

    def __init__(self, pattern: str | bytes) -> None:
        self.pattern = pattern
        self._regexp = re2.compile(pattern, _options(pattern, capture=True))
        self._program = _program(pattern, capture=True)

    def _text(self, text: Any) -> Any:
        return text if isinstance(text, bytes) or text.isascii() else _unicode(text)

    def fullmatch(self, text: Any) -> LinearMatch | None:
        result: LinearMatch | None = self._regexp.fullmatch(self._text(text))
        return result

    def finditer(self, text: Any) -> Iterator[LinearMatch]:
        iterator: Iterator[LinearMatch] = self._regexp.finditer(self._text(text))
        return iterator

    def findall(self, text: Any) -> list[Any]:
        """As ``re.findall``, with one call to RE2 per match (scanning serialised resources is a hot path). After an
        empty match the scan moves on by one character."""
        is_bytes = isinstance(text, bytes)
        data = text if is_bytes else text.encode("utf-8", "surrogatepass")
        run, end = self._program.Match, len(data)
        found: list[Any] = []
        position = 0
        while True:
            spans = run(_UNANCHORED, data, position, end)
            start, stop = spans[0]
            if start < 0:
                return found
            found.append(_found(data, spans, is_bytes))
            if stop > start:
                position = stop
            elif stop < end:
                position = stop + (1 if is_bytes else _re2.CharLenToBytes(data, stop, 1))
            else:
                return found


def _found(data: bytes, spans: list[tuple[int, int]], is_bytes: bool) -> Any:
    """What ``re.findall`` lists for one match: the match, its one group, or the tuple of its groups."""
    parts: list[Any] = [data[a:b] if a >= 0 else b"" for a, b in (spans[1:] or spans)]
    if not is_bytes:
        parts = [part.decode("utf-8", "surrogatepass") for part in parts]
    return parts[0] if len(parts) == 1 else tuple(parts)


def compile(pattern: str | bytes) -> LinearPattern:
    """``pattern`` compiled by RE2; ``re2.error`` when RE2 cannot run it."""
    return LinearPattern(pattern)


def fullmatcher(pattern: str) -> Callable[[str], bool]:
    """Whether a whole str matches ``pattern``: the yes/no test of the hot paths, without groups or match objects."""
    run = _program(pattern, capture=False).Match

    def fullmatch(text: str) -> bool:
        data = text.encode("utf-8", "surrogatepass")  # a lone surrogate: bytes RE2 reads as U+FFFD
        start: int = run(_BOTH, data, 0, len(data))[0][0]
        return start >= 0

    return fullmatch
