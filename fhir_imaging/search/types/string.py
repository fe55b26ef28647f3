"""string: https://hl7.org/fhir/R4/search.html#string

Index row: (norm, exact) — ``norm`` is case- and accent-folded (default search: starts with; ``:contains``: anywhere),
``exact`` the value as sent (``:exact``). HumanName and Address give one row per part.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fhir_imaging.fhir.registry import SearchParam
from fhir_imaging.search import sql
from fhir_imaging.search.fhirpath import Node
from fhir_imaging.search.types.base import CompileContext, InvalidValue, Row, column, normalize, unescape

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
    columns = ("norm", "exact")
    modifiers = frozenset({"exact", "contains"})

    def parse_value(self, text: str, modifier: str | None, param: SearchParam) -> Any:
        value = unescape(text)
        if not value:
            raise InvalidValue("an empty string matches nothing useful")
        return StringValue(value, normalize(value))

    def extract(self, node: Node) -> Iterator[Row]:
        for text in string_parts(node):
            yield ("string", "", (normalize(text), text))

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


def string_parts(node: Node) -> Iterator[str]:
    value = node.value
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        parts = NAME_PARTS if node.type == "HumanName" else ADDRESS_PARTS if node.type == "Address" else ()
        for part in parts:
            item = value.get(part)
            for text in item if isinstance(item, list) else (item,):
                if isinstance(text, str) and text:
                    yield text
