"""number: https://hl7.org/fhir/R4/search.html#number — the search value's precision sets an implied range.

``100`` means [99.5, 100.5), ``100.00`` [99.995, 100.005), ``1e2`` [50, 150). eq / ne test the stored value against
that range; gt lt ge le sa eb compare with the value itself; ap widens the range by 10 % of the value.
Index row: (lo, hi) — a number is the point lo = hi; a Range (quantity) its bounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any

from fhir_imaging import linear_regex
from fhir_imaging.fhir.registry import SearchParam
from fhir_imaging.search import sql
from fhir_imaging.search.types import base
from fhir_imaging.search.types.base import CompileContext, Extractor, InvalidValue, Row, column, split_prefix

NUMBER_PATTERN = linear_regex.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
UNBOUNDED = 1e308


@dataclass(frozen=True, slots=True)
class NumberValue:
    prefix: str
    value: float
    lo: float  # implied range, lo inclusive
    hi: float  # hi exclusive


def parse_number(text: str, prefix: str) -> NumberValue:
    if not NUMBER_PATTERN.fullmatch(text):
        raise InvalidValue(f"'{text}' is not a number")
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise InvalidValue(f"'{text}' is not a number") from None
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)
    half = Decimal(5).scaleb(exponent - 1)
    lo, hi = number - half, number + half
    if prefix == "ap":
        slack = abs(number) / 10
        lo, hi = min(lo, number - slack), max(hi, number + slack)
    return NumberValue(prefix, float(number), float(lo), float(hi))


def compile_number(value: NumberValue, alias: str) -> sql.Expr:
    lo, hi = column(alias, "lo"), column(alias, "hi")

    def cmp(left: sql.Expr, op: str, number: float) -> sql.Expr:
        return sql.Compare(left, op, sql.Param(number))

    within = sql.and_(cmp(lo, ">=", value.lo), cmp(hi, "<", value.hi))
    conditions = {
        "eq": within,
        "ne": sql.Not(within),
        "gt": cmp(hi, ">", value.value),
        "lt": cmp(lo, "<", value.value),
        "ge": cmp(hi, ">=", value.value),
        "le": cmp(lo, "<=", value.value),
        "sa": cmp(lo, ">", value.value),
        "eb": cmp(hi, "<", value.value),
        "ap": sql.and_(cmp(lo, "<", value.hi), cmp(hi, ">=", value.lo)),
    }
    return conditions[value.prefix]


def number_of(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


class NumberType:
    name = "number"
    table = "spidx_number"
    value_columns = (base.IndexColumn("lo", "REAL"), base.IndexColumn("hi", "REAL"))
    indexes = (("lo", ("type", "param", "lo", "hi", "rid")),)
    modifiers: frozenset[str] = frozenset()

    def parse_value(self, text: str, modifier: str | None, param: SearchParam) -> Any:
        prefix, rest = split_prefix(text, "number")
        return parse_number(rest, prefix)

    def extractor(self, kind: str) -> Extractor:
        return number_extractor(kind)

    def compile(self, value: Any, modifier: str | None, context: CompileContext) -> sql.Expr:
        return compile_number(value, context.alias)

    def sort_key(self, alias: str, descending: bool) -> sql.Expr:
        return sql.Func("max", (column(alias, "hi"),)) if descending else sql.Func("min", (column(alias, "lo"),))


def _number_rows(values: list[Any], ranges: bool) -> list[Row]:
    out: list[Row] = []
    for value in values:
        number = number_of(value)
        if number is not None:
            out.append(("number", "", (number, number)))
        elif ranges and isinstance(value, dict):
            low, high = value.get("low") or {}, value.get("high") or {}
            lo, hi = number_of(low.get("value")), number_of(high.get("value"))
            if lo is not None or hi is not None:
                out.append(("number", "", (lo if lo is not None else -UNBOUNDED, hi if hi is not None else UNBOUNDED)))
    return out


@cache
def number_extractor(kind: str) -> Extractor:
    """Number rows for values of FHIR type ``kind``: numbers (and numeric strings) as points, a Range its bounds."""
    ranges = kind == "Range"
    return lambda values: _number_rows(values, ranges)
