"""reference: https://hl7.org/fhir/R4/search.html#reference

Index row: (target_type, target_id, base, url). ``base`` is what precedes ``Type/id`` in the reference ('' for a
relative reference), so an absolute URL that points at this server matches a search for ``Patient/123`` when the
base is the request's base URL or the configured public URL. ``url`` is the reference as written (without
``/_history/n``, without a canonical's ``|version``) for references that are not ``Type/id`` (urn:uuid, canonical
URLs, other servers). A Reference's ``identifier`` is indexed in the token table under ``code:identifier``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fhir_imaging.fhir.registry import SearchParam
from fhir_imaging.search import sql
from fhir_imaging.search.fhirpath import reference_target
from fhir_imaging.search.types.base import (
    CompileContext,
    Extractor,
    IndexColumn,
    InvalidValue,
    NotSupportedModifier,
    Row,
    column,
    unescape,
)
from fhir_imaging.search.types.token import identifier_rows

HISTORY = "/_history/"


@dataclass(frozen=True, slots=True)
class ReferenceValue:
    """A local target (types + id, base None = this server) or a URL matched as written."""

    types: tuple[str, ...]  # empty: any type
    id: str | None
    base: str | None  # None: relative (this server); else the absolute base it was given with
    url: str  # the value as written (no _history, no |version)


def strip_reference(text: str) -> str:
    text = text.split("|", 1)[0]
    if HISTORY in text:
        text = text[: text.index(HISTORY)]
    return text


def parse_reference(text: str, types: tuple[str, ...], resource_types: frozenset[str] | None = None) -> ReferenceValue:
    url = strip_reference(text)
    if not url:
        raise InvalidValue("an empty reference")
    target = reference_target(url)
    if target is not None and (resource_types is None or target[1] in resource_types):
        base, kind, identity = target
        if types and kind not in types:
            raise InvalidValue(f"{kind} is not a target of this parameter (targets: {', '.join(types)})")
        return ReferenceValue((kind,), identity, base or None, url)
    if "/" not in url and ":" not in url:
        return ReferenceValue(types, url, None, url)  # a bare id
    return ReferenceValue((), None, "?", url)


class ReferenceType:
    name = "reference"
    table = "spidx_reference"
    value_columns = (
        IndexColumn("target_type", "TEXT", nullable=True),
        IndexColumn("target_id", "TEXT", nullable=True),
        IndexColumn("base", "TEXT", nullable=True),
        IndexColumn("url", "TEXT"),
    )
    indexes = (
        ("target", ("type", "param", "target_id", "target_type", "base", "rid")),
        ("url", ("type", "param", "url", "rid")),
        ("reverse", ("target_type", "target_id", "type", "param", "rid")),  # _revinclude, _has: who points here
    )
    modifiers = frozenset({"identifier", "above", "below"})  # and :[type]; above/below need hierarchies

    def parse_value(self, text: str, modifier: str | None, param: SearchParam) -> Any:
        if modifier in ("above", "below"):
            raise NotSupportedModifier(f":{modifier} on a reference needs resource hierarchies, not supported here")
        types = param.targets
        if modifier and modifier[:1].isupper():
            if types and modifier not in types:
                raise InvalidValue(f":{modifier} is not a target type of {param.code}")
            types = (modifier,)
        return parse_reference(unescape(text), types)

    def extractor(self, kind: str) -> Extractor:
        return reference_rows

    def compile(self, value: Any, modifier: str | None, context: CompileContext) -> sql.Expr:
        return compile_reference(value, context)

    def sort_key(self, alias: str, descending: bool) -> sql.Expr:
        return sql.Func("max" if descending else "min", (column(alias, "url"),))


def reference_rows(values: list[Any]) -> list[Row]:
    """Reference rows for References (and the ``:identifier`` token rows of their identifiers) or canonicals."""
    out: list[Row] = []
    for value in values:
        if isinstance(value, dict):
            reference = value.get("reference")
            if isinstance(reference, str) and reference and reference[0] != "#":
                out.append(("reference", "", reference_row(reference)))
            identifier = value.get("identifier")
            if isinstance(identifier, dict):
                out += [("token", "identifier", row) for _, _, row in identifier_rows(identifier)]
        elif isinstance(value, str) and value and value[0] != "#":  # canonical, uri
            out.append(("reference", "", reference_row(value)))
    return out


@lru_cache(maxsize=16384)
def reference_row(reference: str) -> tuple[Any, ...]:
    url = strip_reference(reference)
    target = reference_target(url)
    if target is None:
        return (None, None, None, url)
    base, kind, identity = target
    return (kind, identity, base, url)


def compile_reference(value: ReferenceValue, context: CompileContext) -> sql.Expr:
    alias = context.alias
    if value.id is None or (value.base is not None and value.base not in context.bases):
        return sql.eq(column(alias, "url"), value.url)
    conditions = [sql.eq(column(alias, "target_id"), value.id)]
    if len(value.types) == 1:
        conditions.append(sql.eq(column(alias, "target_type"), value.types[0]))
    elif value.types:
        conditions.append(sql.InValues(column(alias, "target_type"), value.types))
    conditions.append(sql.InValues(column(alias, "base"), context.bases))
    return sql.and_(*conditions)
