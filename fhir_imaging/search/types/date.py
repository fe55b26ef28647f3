"""date: https://hl7.org/fhir/R4/search.html#date — every value is an interval set by its precision.

``2024`` is the whole year, ``2024-06-15T10:30`` that minute, ``…:00.5`` that tenth of a second. Stored values are
intervals too (a Period is [start, end], a Timing the span of its events and bounds). Intervals are kept as
integers: microseconds since 1970-01-01T00:00:00Z, both ends inclusive; an open end is ±2^62.

Timezones: a value with ``Z`` or an offset is converted to UTC. A dateTime without a zone — and a date, which has
none — is taken as UTC, both when indexing and when searching (the spec leaves it to the server).

Prefixes compare the target interval [lo, hi] with the search interval [slo, shi] as the R4 spec words them:
eq: contained; ne: not contained; gt: hi > shi; lt: lo < slo; ge: gt or eq; le: lt or eq; sa: lo > shi;
eb: hi < slo; ap: overlaps the search interval widened by 10 % of its distance from now (at least one day).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import cache, lru_cache
from typing import Any

from fhir_imaging import linear_regex
from fhir_imaging.fhir.registry import SearchParam
from fhir_imaging.search import sql
from fhir_imaging.search.types import base
from fhir_imaging.search.types.base import CompileContext, Extractor, InvalidValue, Row, column, split_prefix

LOWEST, HIGHEST = -(2**62), 2**62
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICRO = timedelta(microseconds=1)
DATE_PATTERN = linear_regex.compile(
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d+))?)?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})?)?)?)?"
)
DATE_KINDS = frozenset({"date", "dateTime", "instant"})


@dataclass(frozen=True, slots=True)
class DateValue:
    prefix: str
    lo: int
    hi: int


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // MICRO


def _add_months(moment: datetime, months: int) -> datetime:
    total = moment.month - 1 + months
    return moment.replace(year=moment.year + total // 12, month=total % 12 + 1)


# The common forms (a dateTime to the second or an instant: every ``started`` and ``meta.lastUpdated``; a date: a
# ``birthDate``), read by position once a yes/no test passes: no match object and no group dictionary, which cost RE2's
# Python wrapper several times what the rest of ``parse_interval`` does.
FULL_DATETIME = linear_regex.fullmatcher(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})")
FULL_DATE = linear_regex.fullmatcher(r"\d{4}-\d{2}-\d{2}")


def _parts(text: str) -> tuple[str, str | None, str | None, str | None, str | None, str | None, str, str | None]:
    """(year, month, day, hour, minute, second, fraction, zone) of a FHIR date / dateTime / instant; None where the
    value's precision stops (fraction: '' when it has none)."""
    if len(text) >= 20 and FULL_DATETIME(text):
        zone = "Z" if text[-1] == "Z" else text[-6:]
        fraction = text[20 : len(text) - len(zone)] if text[19] == "." else ""
        return text[:4], text[5:7], text[8:10], text[11:13], text[14:16], text[17:19], fraction, zone
    if len(text) == 10 and FULL_DATE(text):
        return text[:4], text[5:7], text[8:10], None, None, None, "", None
    match = DATE_PATTERN.fullmatch(text)
    if match is None:
        raise InvalidValue(f"'{text}' is not a date, dateTime or instant (YYYY, YYYY-MM, YYYY-MM-DD, …T10:30:00Z)")
    part = match.groupdict()
    fields = ("year", "month", "day", "hour", "minute", "second")
    year, month, day, hour, minute, second = (part[name] for name in fields)
    return year, month, day, hour, minute, second, part["fraction"] or "", part["zone"]


def parse_interval(text: str) -> tuple[int, int]:
    """A FHIR date / dateTime / instant of any precision → [lo, hi] in microseconds (UTC; no zone = UTC)."""
    year, month, day, hour, minute, second, fraction, zone = _parts(text.strip())
    if zone in (None, "Z"):
        tz = UTC
    else:
        sign = 1 if zone[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        start = datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((fraction[:6]).ljust(6, "0")) if fraction else 0,
            tzinfo=tz,
        )
        if month is None:
            end = start.replace(year=start.year + 1) if start.year < 9999 else None
        elif day is None:
            end = _add_months(start, 1) if (start.year, start.month) != (9999, 12) else None
        elif hour is None:
            end = start + timedelta(days=1)
        elif second is None:
            end = start + timedelta(minutes=1)
        elif not fraction:
            end = start + timedelta(seconds=1)
        else:
            end = start + timedelta(microseconds=10 ** (6 - min(len(fraction), 6)))
    except (ValueError, OverflowError):
        raise InvalidValue(f"'{text}' is not a valid date") from None
    return micros(start), (micros(end) - 1 if end is not None else HIGHEST)


def approximate(lo: int, hi: int, now: int) -> tuple[int, int]:
    """``ap``: widen by 10 % of the distance from now (at least a day)."""
    distance = max(abs(now - lo), abs(now - hi))
    slack = max(distance // 10, 86_400_000_000)
    return lo - slack, hi + slack


LOWER_PREFIXES = frozenset({"ge", "gt", "sa"})  # a bound below: every later point meets it
UPPER_PREFIXES = frozenset({"le", "lt", "eb"})  # a bound above: every earlier point meets it
EITHER_PREFIXES = frozenset({"ge", "le"})  # beyond the value or inside it: two index ranges (``either_parts``)


@dataclass(frozen=True, slots=True)
class DateRange:
    """A lower and an upper bound (a ``ge``/``gt``/``sa`` and a ``le``/``lt``/``eb`` value) that one index row must
    meet together: a pair of filters on a parameter whose resources have at most one row each, a point in time
    (planner.py ``combine_ranges``)."""

    lower: DateValue
    upper: DateValue


def range_parts(value: DateRange, alias: str) -> tuple[sql.Expr, sql.Expr]:
    """Two disjoint conditions on a row [lo, hi] of ``alias`` whose OR is "meets both bounds", for rows with
    ``lo <= hi`` (points in time): the rows that begin at or after ``start`` — from there on every row meets the
    lower bound, so this is a two-sided range of ``lo``, which an index reads as such — and the rows that begin
    before it and still meet it (they end after it: ``ge``/``gt`` only). Written as one condition, the lower
    bound's OR left the database only one-sided ranges: every row since the start, or until the end."""
    lower, upper = value.lower, value.upper
    lo = column(alias, "lo")
    start = lower.lo if lower.prefix == "ge" else lower.hi + 1  # ge: lo >= slo; gt, sa: lo > shi
    end = upper.hi if upper.prefix == "le" else upper.lo - 1  # le: lo <= shi; lt, eb: lo < slo (implied bounds)
    within = compile_range(upper.prefix, upper.lo, upper.hi, alias)
    inside = sql.and_(sql.Compare(lo, ">=", sql.Param(start)), sql.Compare(lo, "<=", sql.Param(end)), within)
    # Before the start, gt and ge hold as hi > shi (nothing that begins before slo is contained), sa never: read
    # from the hi index (every earlier row on the lo index would be the whole past).
    reaching = sql.Compare(column(alias, "hi"), ">", sql.Param(lower.hi)) if lower.prefix != "sa" else sql.FALSE
    before = _off_lo_index(sql.and_(sql.Compare(lo, "<", sql.Param(start)), reaching, within), lo)
    return inside, before


def either_parts(value: DateValue, alias: str) -> tuple[sql.Expr, sql.Expr]:
    """``ge`` and ``le`` (``compile_range``: beyond the value, or inside it) as two disjoint conditions on a row of
    ``alias``, each a range of one index: for ``ge`` the rows that end after the value (the hi index) and the rows
    inside it (the lo index); for ``le`` the rows that begin before it and the rows inside it (both the lo index).
    Written as one condition, the OR left the database no range at all: it read every row of the parameter, so a
    ``started=ge`` matching few studies cost as much as one matching them all. (The other prefixes are one
    comparison, one range already.)"""
    assert value.prefix in EITHER_PREFIXES
    lo, hi = column(alias, "lo"), column(alias, "hi")
    beyond = (
        sql.Compare(hi, ">", sql.Param(value.hi)) if value.prefix == "ge" else sql.Compare(lo, "<", sql.Param(value.lo))
    )
    return beyond, compile_range("eq", value.lo, value.hi, alias)


def _off_lo_index(node: sql.Expr, lo: sql.Column) -> sql.Expr:
    """``node`` with every comparison of ``lo`` kept off its index (sql.NoIndex)."""
    if isinstance(node, sql.Compare) and node.left == lo:
        return sql.Compare(sql.NoIndex(lo), node.op, node.right)
    if isinstance(node, sql.And):
        return sql.And(tuple(_off_lo_index(item, lo) for item in node.items))
    if isinstance(node, sql.Or):
        return sql.Or(tuple(_off_lo_index(item, lo) for item in node.items))
    if isinstance(node, sql.Not):
        return sql.Not(_off_lo_index(node.item, lo))
    return node


def parse_date_value(text: str, now: datetime | None = None) -> DateValue:
    prefix, rest = split_prefix(text, "date")
    lo, hi = parse_interval(rest)
    if prefix == "ap":
        lo, hi = approximate(lo, hi, micros(now or datetime.now(UTC)))
    return DateValue(prefix, lo, hi)


class DateType:
    name = "date"
    table = "spidx_date"
    value_columns = (base.IndexColumn("lo", "INTEGER"), base.IndexColumn("hi", "INTEGER"))
    indexes = (("lo", ("type", "param", "lo", "hi", "rid")), ("hi", ("type", "param", "hi", "lo", "rid")))
    modifiers: frozenset[str] = frozenset()

    def parse_value(self, text: str, modifier: str | None, param: SearchParam) -> Any:
        return parse_date_value(text)

    def extractor(self, kind: str) -> Extractor:
        return date_extractor(kind)

    def compile(self, value: Any, modifier: str | None, context: CompileContext) -> sql.Expr:
        if isinstance(value, DateRange):
            return sql.or_(*range_parts(value, context.alias))
        return compile_range(value.prefix, value.lo, value.hi, context.alias)

    def sort_key(self, alias: str, descending: bool) -> sql.Expr:
        return sql.Func("max", (column(alias, "hi"),)) if descending else sql.Func("min", (column(alias, "lo"),))


def compile_range(prefix: str, slo: int, shi: int, alias: str) -> sql.Expr:
    """The prefix comparison of a stored interval [lo, hi] with the search interval [slo, shi] (both inclusive)."""
    lo, hi = column(alias, "lo"), column(alias, "hi")

    def cmp(left: sql.Expr, op: str, value: int) -> sql.Expr:
        return sql.Compare(left, op, sql.Param(value))

    # lo <= shi is implied (lo <= hi <= shi); written out, it makes [slo, shi] a two-sided range on the lo index, which
    # the database then prefers to scanning every interval that ends before shi (the hi index, one-sided).
    contained = sql.and_(cmp(lo, ">=", slo), cmp(lo, "<=", shi), cmp(hi, "<=", shi))
    conditions = {
        "eq": contained,
        "ne": sql.Not(contained),
        "gt": cmp(hi, ">", shi),
        "lt": cmp(lo, "<", slo),
        "ge": sql.or_(cmp(hi, ">", shi), contained),
        "le": sql.or_(cmp(lo, "<", slo), contained),
        "sa": cmp(lo, ">", shi),
        "eb": cmp(hi, "<", slo),
        "ap": sql.and_(cmp(lo, "<=", shi), cmp(hi, ">=", slo)),
    }
    return conditions[prefix]


@lru_cache(maxsize=16384)
def _interval(text: str) -> tuple[int, int] | None:
    try:
        return parse_interval(text)
    except InvalidValue:
        return None


def _point(value: Any) -> tuple[int, int] | None:
    return _interval(value) if isinstance(value, str) else None


def _period(value: Any) -> tuple[int, int] | None:
    if not isinstance(value, dict):
        return None
    start, end = _point(value.get("start")), _point(value.get("end"))
    if start is None and end is None:
        return None
    return (start[0] if start else LOWEST, end[1] if end else HIGHEST)


def _timing(value: Any) -> list[tuple[int, int] | None]:
    if not isinstance(value, dict):
        return []
    intervals = [_point(event) for event in value.get("event") or ()]
    repeat = value.get("repeat")
    if isinstance(repeat, dict):
        intervals.append(_period(repeat.get("boundsPeriod")))
    return intervals


def _points(values: list[Any]) -> list[Row]:
    return [("date", "", interval) for value in values if (interval := _point(value))]


def _periods(values: list[Any]) -> list[Row]:
    return [("date", "", interval) for value in values if (interval := _period(value))]


def _timings(values: list[Any]) -> list[Row]:
    return [("date", "", interval) for value in values for interval in _timing(value) if interval]


def _none(values: list[Any]) -> list[Row]:
    return []


@cache
def date_extractor(kind: str) -> Extractor:
    """Date rows for values of FHIR type ``kind``: date, dateTime, instant (and string), Period, Timing."""
    if kind in DATE_KINDS or kind == "string":
        return _points
    return {"Period": _periods, "Timing": _timings}.get(kind, _none)
