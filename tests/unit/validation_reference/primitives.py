"""Checkers for FHIR primitive values, built from the shipped table of JSON types and regular expressions.

Spec: https://hl7.org/fhir/R4/datatypes.html#primitive (regexes, 32-bit integers) and
https://hl7.org/fhir/R4/json.html#primitive (JSON representation: boolean → JSON boolean, integer, unsignedInt,
positiveInt and decimal → JSON number, every other primitive → JSON string; no empty strings).

Each checker takes the parsed JSON value and returns ``None`` when it is valid, else a short reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

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


def make_check(type_code: str, json_type: str, regex: str | None) -> PrimitiveCheck:
    """A checker for ``type_code`` values: the JSON type first, then the spec's regex (full match)."""
    # The spec's regexes are XML Schema / Java regexes: ``\s`` is ASCII whitespace only (U+00A0 is a ``\S``).
    match = re.compile(regex, re.ASCII).fullmatch if regex is not None else None
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
            if match is not None and match(str(value)) is None:
                return f"{value} is not a valid {type_code}"
            return None

    elif json_type == "number":

        def check(value: Any) -> str | None:
            kind = type(value)
            if kind is not int and kind is not float:
                return f"{wrong_type}, not {_describe(value)}"
            if match is not None and match(str(value)) is None:
                return f"{value} is not a valid {type_code}"
            return None

    else:

        def check(value: Any) -> str | None:
            if type(value) is not str:
                return f"{wrong_type}, not {_describe(value)}"
            if not value:
                return "empty strings are not allowed in FHIR JSON"
            if match is not None and match(value) is None:
                return f"{_describe(value)} is not a valid {type_code}"
            return None

    return check


def compile_primitives(table: Mapping[str, Mapping[str, str]]) -> dict[str, PrimitiveCheck]:
    """Primitive type code → checker, from the ``primitives`` table of the package data."""
    return {code: make_check(code, spec["json"], spec.get("regex")) for code, spec in table.items()}
