"""token: codes, Codings, CodeableConcepts, Identifiers, ContactPoints, booleans (https://hl7.org/fhir/R4/search.html#token).

Index row: (system, code, text). A missing system is stored as '' so that every token form is one equality lookup
on the index (type, param, code, system) — ``code``; ``system|code``; ``|code`` (system = '') — or on
(type, param, system) for ``system|``. ``text`` holds the normalised display / CodeableConcept.text for ``:text``.
An Identifier also yields ``:of-type`` rows (system = type's system|code, code = value).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fhir_imaging.fhir.registry import SearchParam
from fhir_imaging.search import sql
from fhir_imaging.search.fhirpath import Node
from fhir_imaging.search.types.base import (
    CompileContext,
    InvalidValue,
    NotSupportedModifier,
    Row,
    column,
    normalize,
    split_escaped,
    unescape,
)

TERMINOLOGY_MODIFIERS = frozenset({"in", "not-in", "above", "below"})
CODING_TYPES = frozenset({"Coding"})
CODEABLE_TYPES = frozenset({"CodeableConcept"})


@dataclass(frozen=True, slots=True)
class TokenValue:
    """``[system|]code``: system None = any system, '' = no system; code None = any code (``system|``)."""

    system: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class TextValue:
    text: str  # normalised


@dataclass(frozen=True, slots=True)
class OfTypeValue:
    type_system: str
    type_code: str
    value: str


def parse_token(text: str) -> TokenValue:
    parts = split_escaped(text, "|", 1)
    if len(parts) == 1:
        return TokenValue(None, unescape(parts[0]))
    system, code = unescape(parts[0]), unescape(parts[1])
    if not system and not code:
        raise InvalidValue("'|' alone is not a token: give a code, system|code, |code or system|")
    return TokenValue(system, code or None)


class TokenType:
    name = "token"
    table = "spidx_token"
    columns = ("system", "code", "text")
    modifiers = frozenset({"not", "text", "of-type", *TERMINOLOGY_MODIFIERS})

    def parse_value(self, text: str, modifier: str | None, param: SearchParam) -> Any:
        if modifier in TERMINOLOGY_MODIFIERS:
            raise NotSupportedModifier(f":{modifier} needs terminology services, which this server does not have")
        if modifier == "text":
            return TextValue(normalize(unescape(text)))
        if modifier == "of-type":
            parts = [unescape(part) for part in split_escaped(text, "|")]
            if len(parts) != 3 or not all(parts):
                raise InvalidValue(":of-type takes type-system|type-code|value")
            return OfTypeValue(*parts)
        return parse_token(text)

    def extract(self, node: Node) -> Iterator[Row]:
        yield from token_rows(node)

    def compile(self, value: Any, modifier: str | None, context: CompileContext) -> sql.Expr:
        return compile_token(value, context.alias)

    def sort_key(self, alias: str, descending: bool) -> sql.Expr:
        return sql.Func("max" if descending else "min", (column(alias, "code"),))


def compile_token(value: Any, alias: str) -> sql.Expr:
    system, code, text = column(alias, "system"), column(alias, "code"), column(alias, "text")
    if isinstance(value, TextValue):
        upper = value.text + "\U0010ffff"
        return sql.and_(sql.Compare(text, ">=", sql.Param(value.text)), sql.Compare(text, "<", sql.Param(upper)))
    if isinstance(value, OfTypeValue):
        return sql.and_(sql.eq(system, f"{value.type_system}|{value.type_code}"), sql.eq(code, value.value))
    assert isinstance(value, TokenValue)
    conditions = []
    if value.code is not None:
        conditions.append(sql.eq(code, value.code))
    if value.system is not None:
        conditions.append(sql.eq(system, value.system))
    return sql.and_(*conditions)


def _text(value: Any) -> str | None:
    return normalize(value) if isinstance(value, str) and value else None


def _coding_row(coding: Any, text: str | None) -> Row | None:
    if not isinstance(coding, dict):
        return None
    code, system = coding.get("code"), coding.get("system")
    display = _text(coding.get("display")) or text
    if not isinstance(code, str) and display is None:
        return None
    return ("token", "", (system if isinstance(system, str) else "", code if isinstance(code, str) else None, display))


def token_rows(node: Node) -> Iterator[Row]:
    """Token index rows for one typed value."""
    value, kind = node.value, node.type
    if kind == "Coding":
        row = _coding_row(value, None)
        if row:
            yield row
    elif kind == "CodeableConcept" and isinstance(value, dict):
        text = _text(value.get("text"))
        for coding in value.get("coding") or ():
            row = _coding_row(coding, None)
            if row:
                yield row
        if text:
            yield ("token", "", ("", None, text))
    elif kind == "Identifier" and isinstance(value, dict):
        identifier, system = value.get("value"), value.get("system")
        system = system if isinstance(system, str) else ""
        kind_of = value.get("type") if isinstance(value.get("type"), dict) else {}
        text = _text(kind_of.get("text"))
        if isinstance(identifier, str):
            yield ("token", "", (system, identifier, text))
            for coding in kind_of.get("coding") or ():
                if isinstance(coding, dict) and coding.get("code"):
                    type_system = f"{coding.get('system') or ''}|{coding['code']}"
                    yield ("token", "of-type", (type_system, identifier, None))
        elif text:
            yield ("token", "", (system, None, text))
    elif kind == "ContactPoint" and isinstance(value, dict):
        if isinstance(value.get("value"), str):
            system = value.get("system")
            yield ("token", "", (system if isinstance(system, str) else "", value["value"], None))
    elif kind == "boolean" and isinstance(value, bool):
        yield ("token", "", ("", "true" if value else "false", None))
    elif isinstance(value, str | int | float) and not isinstance(value, bool):
        yield ("token", "", ("", str(value), None))
    elif isinstance(value, bool):
        yield ("token", "", ("", "true" if value else "false", None))
