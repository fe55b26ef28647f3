"""token: codes, Codings, CodeableConcepts, Identifiers, ContactPoints, booleans (https://hl7.org/fhir/R4/search.html#token).

Index row: (system, code, text). A missing system is stored as '' so that every token form is one equality lookup
on the index (type, param, code, system) — ``code``; ``system|code``; ``|code`` (system = '') — or on
(type, param, system) for ``system|``. ``text`` holds the normalised display / CodeableConcept.text for ``:text``.
An Identifier also yields ``:of-type`` rows (system = type's system|code, code = value).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

from fhir_imaging.fhir.registry import SearchParam
from fhir_imaging.search import sql
from fhir_imaging.search.fhirpath import Node
from fhir_imaging.search.types.base import (
    CompileContext,
    Extractor,
    IndexColumn,
    InvalidValue,
    NotSupportedModifier,
    Row,
    column,
    normalize,
    normalize_cached,
    split_escaped,
    unescape,
)

TERMINOLOGY_MODIFIERS = frozenset({"in", "not-in", "above", "below"})


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
    value_columns = (
        IndexColumn("system", "TEXT"),
        IndexColumn("code", "TEXT", nullable=True),
        IndexColumn("text", "TEXT", nullable=True),
    )
    indexes = (
        ("code", ("type", "param", "code", "system", "rid")),
        ("system", ("type", "param", "system", "rid")),
        ("text", ("type", "param", "text", "rid")),  # partial since schema migration 3: text IS NOT NULL
    )
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

    def extractor(self, kind: str) -> Extractor:
        return token_extractor(kind)

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


@dataclass(frozen=True, slots=True)
class IdMatch:
    """An id/oid value resolved for ``ID_HASH_TABLE`` (search/index.py): its hash, and the resources whose stored
    body holds the value under the parameter (search/execute.py ``resolve_ids`` checked each candidate)."""

    code: str
    hash: int
    rids: tuple[int, ...]


def compile_id_token(value: Any, alias: str) -> sql.Expr:
    """The condition on a row (alias ``alias``) of ``ID_HASH_TABLE`` (search/index.py) for one value: its hash, and
    one of the resources checked to hold it (``IdMatch``). An ``id``/``oid`` value has no system (it is '') and no
    text, so only a code with no system or with ``|`` can match; any other form matches nothing, decided here
    rather than by reading the parameter's rows. A code not yet resolved to an ``IdMatch`` is a programming error:
    a hash alone could name a wrong resource."""
    if isinstance(value, IdMatch):
        if not value.rids:
            return sql.FALSE
        return sql.and_(sql.eq(column(alias, "h"), value.hash), sql.InValues(column(alias, "rid"), value.rids))
    if isinstance(value, TokenValue) and value.code is not None and value.system in (None, ""):
        raise AssertionError(f"the id value {value.code!r} was not resolved against the stored bodies")
    return sql.FALSE


def _text(value: Any) -> str | None:
    return normalize_cached(value) if isinstance(value, str) and value else None


def _coding_row(coding: Any, text: str | None) -> Row | None:
    if not isinstance(coding, dict):
        return None
    code, system, display = coding.get("code"), coding.get("system"), coding.get("display")
    display = (normalize_cached(display) if isinstance(display, str) and display else None) or text
    if not isinstance(code, str):
        if display is None:
            return None
        code = None
    return ("token", "", (system if isinstance(system, str) else "", code, display))


def _scalar(value: Any) -> list[Row]:
    """A primitive's row (and what any type gives for a primitive value): booleans as true/false."""
    if isinstance(value, bool):
        return [("token", "", ("", "true" if value else "false", None))]
    if isinstance(value, str | int | float):
        return [("token", "", ("", str(value), None))]
    return []


def _scalars(values: list[Any]) -> list[Row]:
    out = [("token", "", ("", value, None)) for value in values if value.__class__ is str]
    if len(out) == len(values):
        return out
    return [row for value in values for row in _scalar(value)]


def _codings(values: list[Any]) -> list[Row]:
    """``_coding_row`` for each value, inlined, and once per (code, system, display): a study has a sopClass Coding
    per instance, mostly the same few."""
    out: list[Row] = []
    seen: set[tuple[Any, Any, Any]] = set()
    for coding in values:
        if isinstance(coding, dict):
            get = coding.get
            code, system, display = key = get("code"), get("system"), get("display")
            try:
                if key in seen:  # equal keys give equal rows
                    continue
                seen.add(key)
            except TypeError:  # a list or an object where a string belongs: not remembered
                pass
            display = normalize_cached(display) if isinstance(display, str) and display else None
            if not isinstance(code, str):
                if not display:
                    continue
                code = None
            out.append(("token", "", (system if isinstance(system, str) else "", code, display or None)))
    return out


def _concept(value: Any) -> list[Row]:
    if not isinstance(value, dict):
        return _scalar(value)
    text = _text(value.get("text"))
    out = [row for coding in value.get("coding") or () if (row := _coding_row(coding, None))]
    if text:
        out.append(("token", "", ("", None, text)))
    return out


def identifier_rows(value: Any) -> list[Row]:
    """An Identifier's rows: (system, value, type text) and one ``of-type`` row per coded type."""
    if not isinstance(value, dict):
        return _scalar(value)
    identifier, system = value.get("value"), value.get("system")
    system = system if isinstance(system, str) else ""
    kind = value.get("type")
    kind_of: dict[str, Any] = kind if isinstance(kind, dict) else {}
    text = _text(kind_of.get("text"))
    if isinstance(identifier, str):
        out: list[Row] = [("token", "", (system, identifier, text))]
        for coding in kind_of.get("coding") or ():
            if isinstance(coding, dict) and coding.get("code"):
                type_system = f"{coding.get('system') or ''}|{coding['code']}"
                out.append(("token", "of-type", (type_system, identifier, None)))
        return out
    return [("token", "", (system, None, text))] if text else []


def _contact(value: Any) -> list[Row]:
    if not isinstance(value, dict):
        return _scalar(value)
    if not isinstance(value.get("value"), str):
        return []
    system = value.get("system")
    return [("token", "", (system if isinstance(system, str) else "", value["value"], None))]


def _each(one: Callable[[Any], list[Row]]) -> Extractor:
    return lambda values: [row for value in values for row in one(value)]


@cache
def token_extractor(kind: str) -> Extractor:
    """Token rows for values of FHIR type ``kind``: Coding, CodeableConcept, Identifier, ContactPoint, primitives."""
    if kind == "Coding":
        return _codings
    one = {"CodeableConcept": _concept, "Identifier": identifier_rows, "ContactPoint": _contact}.get(kind)
    return _each(one) if one is not None else _scalars


def token_rows(node: Node) -> Iterator[Row]:
    """Token index rows for one typed value."""
    return iter(token_extractor(node.type)([node.value]))
