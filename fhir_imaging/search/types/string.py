"""string: https://hl7.org/fhir/R4/search.html#string

Index row: (norm, exact) — ``norm`` is case- and accent-folded (default search: starts with; ``:contains``: anywhere),
``exact`` the value as sent (``:exact``). HumanName and Address give one row per part.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from fhir_imaging.fhir.registry import SearchParam
from fhir_imaging.search import sql
from fhir_imaging.search.types import base
from fhir_imaging.search.types.base import (
    CompileContext,
    Extractor,
    InvalidValue,
    Row,
    column,
    normalize,
    normalize_cached,
    unescape,
)

NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")
TOP = "\U0010ffff"


@dataclass(frozen=True, slots=True)
class StringValue:
    text: str  # as given (for :exact)
    norm: str  # folded


class StringType:
    name = "string"
    table = "spidx_string"
    value_columns = (base.IndexColumn("norm", "TEXT"), base.IndexColumn("exact", "TEXT"))
    indexes = (("norm", ("type", "param", "norm", "rid")), ("exact", ("type", "param", "exact", "rid")))
    modifiers = frozenset({"exact", "contains"})

    def parse_value(self, text: str, modifier: str | None, param: SearchParam) -> Any:
        value = unescape(text)
        if not value:
            raise InvalidValue("an empty string matches nothing useful")
        return StringValue(value, normalize(value))

    def extractor(self, kind: str) -> Extractor:
        return string_extractor(kind)

    def compile(self, value: Any, modifier: str | None, context: CompileContext) -> sql.Expr:
        norm, exact = column(context.alias, "norm"), column(context.alias, "exact")
        if modifier == "exact":
            return sql.eq(exact, value.text)
        if modifier == "contains":
            return sql.Contains(norm, sql.Param(value.norm))
        return sql.and_(
            sql.Compare(norm, ">=", sql.Param(value.norm)), sql.Compare(norm, "<", sql.Param(value.norm + TOP))
        )

    def sort_key(self, alias: str, descending: bool) -> sql.Expr:
        return sql.Func("max" if descending else "min", (column(alias, "norm"),))


def _parts(parts: tuple[str, ...]) -> Extractor:
    def extract(values: list[Any]) -> list[Row]:
        out: list[Row] = []
        for value in values:
            if isinstance(value, str):
                out.append(("string", "", (normalize_cached(value), value)))
            elif isinstance(value, dict):
                for part in parts:
                    item = value.get(part)
                    for text in item if isinstance(item, list) else (item,):
                        if isinstance(text, str) and text:
                            out.append(("string", "", (normalize_cached(text), text)))
        return out

    return extract


@cache
def string_extractor(kind: str) -> Extractor:
    """String rows for values of FHIR type ``kind``: strings, and the parts of a HumanName or an Address."""
    return _parts(NAME_PARTS if kind == "HumanName" else ADDRESS_PARTS if kind == "Address" else ())
