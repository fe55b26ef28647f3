"""Checkers for FHIR primitive values, built from the shipped table of JSON types and regular expressions.

Spec: https://hl7.org/fhir/R4/datatypes.html#primitive (regexes, 32-bit integers) and
https://hl7.org/fhir/R4/json.html#primitive (JSON representation: boolean → JSON boolean, integer, unsignedInt,
positiveInt and decimal → JSON number, every other primitive → JSON string; no empty strings).

Each checker takes the parsed JSON value and returns ``None`` when it is valid, else a short reason. The regexes run
on RE2 (``linear_regex``): their time is linear in the value, whatever a client sends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fhir_imaging.fhir.resource import is_valid_id
from fhir_imaging.linear_regex import ascii_whitespace, fullmatcher
from fhir_imaging.validation.values import RULES

PrimitiveCheck = Callable[[Any], "str | None"]

# datatypes.html#integer: "32 bit number; for values larger than this, use decimal". The range is stated in the
# prose of the specification only (the StructureDefinitions carry no machine-readable bound).
INT_MIN, INT_MAX = -(2**31), 2**31 - 1

_JSON_NAMES = {
    "boolean": "a JSON boolean",
    "integer": "a JSON integer",
    "number": "a JSON number",
    "string": "a JSON string",
}


def _describe(value: Any) -> str:
    text = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def spec_fullmatcher(regex: str) -> Callable[[str], bool]:
    """The linear-time full match of one of the spec's regexes. These are XML Schema / Java regexes: ``\\s`` is
    ASCII whitespace only, tab, line feed, vertical tab, form feed, carriage return and space, as ``re.ASCII`` reads
    it (U+00A0 is not whitespace)."""
    return fullmatcher(ascii_whitespace(regex))


def make_check(type_code: str, json_type: str, regex: str | None) -> PrimitiveCheck:
    """A checker for ``type_code`` values: the JSON type first, then the spec's regex (full match), then the rule
    the regex cannot state (values.py: days of the calendar, string length, narrative XHTML)."""
    match = spec_fullmatcher(regex) if regex is not None else None
    rule = RULES.get(type_code)
    wrong_type = f"{_JSON_NAMES[json_type]} is required for {type_code}"

    if json_type == "boolean":

        def check(value: Any) -> str | None:
            return None if value is True or value is False else f"{wrong_type}, not {_describe(value)}"

    elif json_type == "integer":

        def check(value: Any) -> str | None:
            if type(value) is not int:
                return f"{wrong_type}, not {_describe(value)}"
            if not INT_MIN <= value <= INT_MAX:
                return f"{value} is outside the 32-bit range of {type_code}"
            if match is not None and not match(str(value)):
                return f"{value} is not a valid {type_code}"
            return None

    elif json_type == "number":

        def check(value: Any) -> str | None:
            kind = type(value)
            if kind is not int and kind is not float:
                return f"{wrong_type}, not {_describe(value)}"
            if match is not None and not match(str(value)):
                return f"{value} is not a valid {type_code}"
            return None

    else:

        def check(value: Any) -> str | None:
            if type(value) is not str:
                return f"{wrong_type}, not {_describe(value)}"
            if not value:
                return "empty strings are not allowed in FHIR JSON"
            if match is not None and not match(value):
                return f"{_describe(value)} is not a valid {type_code}"
            return rule(value) if rule is not None else None

    return check


def compile_primitives(table: Mapping[str, Mapping[str, str]]) -> dict[str, PrimitiveCheck]:
    """Primitive type code → checker, from the ``primitives`` table of the package data."""
    return {code: make_check(code, spec["json"], spec.get("regex")) for code, spec in table.items()}


# -- yes/no tests for the fast pass (fast.py) ---------------------------------------------------------------------

PrimitiveOk = Callable[[Any], bool]

# Integer regexes of the R4 table → the least value whose decimal form (``str(int)``) they all match: with these, an
# int in [least, INT_MAX] is exactly a valid value and the regex need not run.
_INT_LEAST = {r"-?([0]|([1-9][0-9]*))": INT_MIN, r"[0]|([1-9][0-9]*)": 0, r"[1-9][0-9]*": 1}
# The decimal regex matches the decimal form of every int (floats still go through it: ``inf``, ``1e+20``).
_DECIMAL = r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?"


# Regexes → a test without a regex that is exactly equivalent (the id's is the one every request path uses).
_EXACT = {r"[A-Za-z0-9\-\.]{1,64}": is_valid_id}  # id: DICOM uids, a thousand per large study

# String regexes → a cheaper test that implies a match (when it fails, the regex decides). ``isprintable()`` is
# false for every ASCII whitespace but the space (\t \n \r \f \v are control characters).
_IMPLIES_MATCH: dict[str, Callable[[str], bool]] = {
    r"[ \r\n\t\S]+": str.isprintable,  # string, markdown: no \f, \v
    r"\S*": lambda value: value.isprintable() and " " not in value,  # uri, url, canonical: no whitespace
    r"[^\s]+(\s[^\s]+)*": lambda value: value.isprintable() and " " not in value,  # code: no whitespace at all
}
# Valid strings remembered per type (system URLs, codes and display texts repeat across a study's instances), except
# for the identifier types: their values (DICOM uids) rarely repeat, remembering them would only cost.
MEMO_SIZE, MEMO_MAX_LENGTH = 4096, 256
_NO_MEMO = frozenset({"id", "oid", "uuid"})


@dataclass(frozen=True, slots=True)
class PrimitiveTest:
    """``ok(value)`` is exactly ``make_check(...)(value) is None``; the rest lets callers inline the common case."""

    ok: PrimitiveOk
    memo: set[str] | None = None  # strings known valid (a str in it is valid; the set only grows, or is cleared)
    int_least: int | None = None  # when set: valid ⇔ ``type(value) is int and int_least <= value <= INT_MAX``
    fullmatch: Callable[[str], bool] | None = None  # when set: valid ⇔ a non-empty str and ``fullmatch(value)``


def make_test(type_code: str, json_type: str, regex: str | None) -> PrimitiveTest:
    """The yes/no test of ``type_code`` values, equivalent to ``make_check`` (the same JSON type, regex and rule)."""
    match = spec_fullmatcher(regex) if regex is not None else None
    rule = RULES.get(type_code)

    if json_type == "boolean":

        def ok(value: Any) -> bool:
            return value is True or value is False

        return PrimitiveTest(ok)

    if json_type == "integer":
        least = INT_MIN if regex is None else _INT_LEAST.get(regex)
        if least is not None:

            def ok(value: Any) -> bool:
                return type(value) is int and least <= value <= INT_MAX

            return PrimitiveTest(ok, int_least=least)

        def ok(value: Any) -> bool:
            return type(value) is int and INT_MIN <= value <= INT_MAX and match(str(value))  # type: ignore[misc]

        return PrimitiveTest(ok)

    if json_type == "number":
        ints_match = match is None or regex == _DECIMAL

        def ok(value: Any) -> bool:
            kind = type(value)
            if kind is not int and kind is not float:
                return False
            return (kind is int and ints_match) or match is None or match(str(value))

        return PrimitiveTest(ok)

    if match is None:

        def ok(value: Any) -> bool:
            return type(value) is str and value != "" and (rule is None or rule(value) is None)

        return PrimitiveTest(ok)

    if type_code in _NO_MEMO and rule is None:
        fullmatch = _EXACT.get(regex, match)  # type: ignore[arg-type]

        def ok(value: Any) -> bool:
            return type(value) is str and value != "" and fullmatch(value)

        return PrimitiveTest(ok, fullmatch=fullmatch)

    implies = _IMPLIES_MATCH.get(regex)  # type: ignore[arg-type]
    valid: set[str] = set()  # bounded; cleared when full (set operations are atomic: safe between threads)

    def remembered_or_ok(value: Any) -> bool:
        if type(value) is not str:
            return False
        if value in valid:
            return True
        if not value or not ((implies is not None and implies(value)) or match(value)):
            return False
        if rule is not None and rule(value) is not None:
            return False
        if len(value) <= MEMO_MAX_LENGTH:
            if len(valid) >= MEMO_SIZE:
                valid.clear()
            valid.add(value)
        return True

    return PrimitiveTest(remembered_or_ok, memo=valid)


def compile_tests(table: Mapping[str, Mapping[str, str]]) -> dict[str, PrimitiveTest]:
    """Primitive type code → yes/no test, from the ``primitives`` table of the package data."""
    return {code: make_test(code, spec["json"], spec.get("regex")) for code, spec in table.items()}
