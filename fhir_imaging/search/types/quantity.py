"""quantity: https://hl7.org/fhir/R4/search.html#quantity — ``[prefix]number[|system|code]``.

``5.4|http://unitsofmeasure.org|mg`` matches system and code; ``5.4||mg`` matches the code or the unit text;
``5.4`` any unit. Numbers compare as for number (implied precision range). No unit conversion (UCUM) is done:
``5.4||g`` does not find 5400 mg.
Index row: (system, code, unit, lo, hi); a Quantity is a point, a Range its bounds, SampledData its origin.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

from fhir_imaging.fhir.registry import SearchParam
from fhir_imaging.search import sql
from fhir_imaging.search.types.base import (
    CompileContext,
    Extractor,
    IndexColumn,
    Row,
    column,
    split_escaped,
    split_prefix,
    unescape,
)
from fhir_imaging.search.types.number import UNBOUNDED, NumberValue, compile_number, number_of, parse_number


@dataclass(frozen=True, slots=True)
class QuantityValue:
    number: NumberValue
    system: str | None  # None: any
    code: str | None  # None: any; with system None it also matches the unit text


class QuantityType:
    name = "quantity"
    table = "spidx_quantity"
    value_columns = (
        IndexColumn("system", "TEXT", nullable=True),
        IndexColumn("code", "TEXT", nullable=True),
        IndexColumn("unit", "TEXT", nullable=True),
        IndexColumn("lo", "REAL"),
        IndexColumn("hi", "REAL"),
    )
    indexes = (("lo", ("type", "param", "lo", "hi", "rid")),)
    modifiers: frozenset[str] = frozenset()

    def parse_value(self, text: str, modifier: str | None, param: SearchParam) -> Any:
        parts = split_escaped(text, "|")
        prefix, rest = split_prefix(parts[0], "quantity")
        number = parse_number(rest, prefix)
        system = unescape(parts[1]) if len(parts) > 1 and parts[1] else None
        code = unescape("|".join(parts[2:])) if len(parts) > 2 and parts[2] else None
        return QuantityValue(number, system, code)

    def extractor(self, kind: str) -> Extractor:
        return quantity_extractor(kind)

    def compile(self, value: Any, modifier: str | None, context: CompileContext) -> sql.Expr:
        alias = context.alias
        conditions = [compile_number(value.number, alias)]
        if value.system is not None:
            conditions.append(sql.eq(column(alias, "system"), value.system))
        if value.code is not None:
            if value.system is not None:
                conditions.append(sql.eq(column(alias, "code"), value.code))
            else:
                conditions.append(
                    sql.or_(sql.eq(column(alias, "code"), value.code), sql.eq(column(alias, "unit"), value.code))
                )
        return sql.and_(*conditions)

    def sort_key(self, alias: str, descending: bool) -> sql.Expr:
        return sql.Func("max", (column(alias, "hi"),)) if descending else sql.Func("min", (column(alias, "lo"),))


def _unit(quantity: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    def text(key: str) -> str | None:
        item = quantity.get(key)
        return item if isinstance(item, str) else None

    return text("system"), text("code"), text("unit")


def _quantity_rows(value: Any, kind: str) -> Iterator[Row]:
    if not isinstance(value, dict):
        return
    if kind == "Range":
        low, high = value.get("low") or {}, value.get("high") or {}
        lo, hi = number_of(low.get("value")), number_of(high.get("value"))
        if lo is None and hi is None:
            return
        unit = low if lo is not None else high
        yield (
            "quantity",
            "",
            (*_unit(unit), lo if lo is not None else -UNBOUNDED, hi if hi is not None else UNBOUNDED),
        )
    elif kind == "SampledData":
        origin = value.get("origin") or {}
        number = number_of(origin.get("value"))
        if number is not None:
            yield ("quantity", "", (*_unit(origin), number, number))
    else:
        number = number_of(value.get("value"))
        if number is not None:
            if kind == "Money":
                currency = value.get("currency") if isinstance(value.get("currency"), str) else None
                yield ("quantity", "", ("urn:iso:std:iso:4217", currency, currency, number, number))
            else:
                yield ("quantity", "", (*_unit(value), number, number))


@cache
def quantity_extractor(kind: str) -> Extractor:
    """Quantity rows for values of FHIR type ``kind``: Quantity (and its kinds), Money, Range, SampledData."""
    return lambda values: [row for value in values for row in _quantity_rows(value, kind)]
