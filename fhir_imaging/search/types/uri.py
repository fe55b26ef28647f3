"""uri: https://hl7.org/fhir/R4/search.html#uri — exact match; ``:below`` (starts with), ``:above`` (is a prefix of).

Index row: (uri,).
"""

from __future__ import annotations

from typing import Any

from fhir_imaging.fhir.registry import SearchParam
from fhir_imaging.search import sql
from fhir_imaging.search.types import base
from fhir_imaging.search.types.base import CompileContext, Extractor, InvalidValue, Row, column, unescape

TOP = "\U0010ffff"


class UriType:
    name = "uri"
    table = "spidx_uri"
    value_columns = (base.IndexColumn("uri", "TEXT"),)
    indexes = (("uri", ("type", "param", "uri", "rid")),)
    modifiers = frozenset({"above", "below"})

    def parse_value(self, text: str, modifier: str | None, param: SearchParam) -> Any:
        value = unescape(text)
        if not value:
            raise InvalidValue("an empty uri")
        return value

    def extractor(self, kind: str) -> Extractor:
        return uri_rows

    def compile(self, value: Any, modifier: str | None, context: CompileContext) -> sql.Expr:
        uri = column(context.alias, "uri")
        if modifier == "below":
            return sql.and_(sql.Compare(uri, ">=", sql.Param(value)), sql.Compare(uri, "<", sql.Param(value + TOP)))
        if modifier == "above":
            # the stored uri is a prefix of the value: one of the value's prefixes
            return sql.InValues(uri, tuple(value[:end] for end in range(1, len(value) + 1)))
        return sql.eq(uri, value)

    def sort_key(self, alias: str, descending: bool) -> sql.Expr:
        return sql.Func("max" if descending else "min", (column(alias, "uri"),))


def uri_rows(values: list[Any]) -> list[Row]:
    return [("uri", "", (value,)) for value in values if isinstance(value, str) and value]
