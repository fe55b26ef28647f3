"""A tiny SQL tree: the planner builds it, ``render`` turns it into SQL text and bound parameters for a dialect.

Every value that comes from a request is a ``Param`` (a bound parameter); SQL text only ever holds names and
operators written in this package. Every difference between SQLite and PostgreSQL lives in the ``Dialect``
(storage/dialect.py) that ``render`` is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fhir_imaging.storage.dialect import Dialect


class Expr:
    """A node of the tree."""


@dataclass(frozen=True, slots=True)
class Column(Expr):
    alias: str
    name: str


@dataclass(frozen=True, slots=True)
class NoIndex(Expr):
    """A column compared without an index on it (SQLite: unary ``+``), so that another condition drives the query."""

    item: Expr


@dataclass(frozen=True, slots=True)
class Param(Expr):
    value: Any


@dataclass(frozen=True, slots=True)
class Compare(Expr):
    left: Expr
    op: str  # = <> < <= > >=
    right: Expr


@dataclass(frozen=True, slots=True)
class And(Expr):
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Or(Expr):
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Not(Expr):
    item: Expr


@dataclass(frozen=True, slots=True)
class IsNull(Expr):
    item: Expr


@dataclass(frozen=True, slots=True)
class InValues(Expr):
    item: Expr
    values: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class InSelect(Expr):
    item: Expr
    select: Select
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Exists(Expr):
    select: Select


@dataclass(frozen=True, slots=True)
class Func(Expr):
    name: str  # min, max, count, coalesce, length, substr…
    args: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Contains(Expr):
    haystack: Expr
    needle: Expr


@dataclass(frozen=True, slots=True)
class Concat(Expr):
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Scalar(Expr):
    """A select used as a value (a correlated sub-query returning one column)."""

    select: Select


@dataclass(frozen=True, slots=True)
class Star(Expr):
    pass


@dataclass(frozen=True, slots=True)
class Select(Expr):
    columns: tuple[tuple[Expr, str | None], ...]  # (expression, alias)
    source: tuple[tuple[str | Select, str], ...]  # (table name or sub-select, alias); joined by conditions in where
    where: Expr | None = None
    order_by: tuple[tuple[Expr, bool], ...] = ()  # (expression, descending)
    limit: int | None = None
    distinct: bool = False
    union_all: tuple[Select, ...] = ()  # further selects of the same columns, their rows added (before any limit)


TRUE = Compare(Param(1), "=", Param(1))
FALSE = Compare(Param(1), "=", Param(0))


def and_(*items: Expr | None) -> Expr:
    kept = tuple(item for item in items if item is not None and item != TRUE)
    if not kept:
        return TRUE
    return kept[0] if len(kept) == 1 else And(kept)


def or_(*items: Expr) -> Expr:
    return items[0] if len(items) == 1 else Or(tuple(items))


def eq(left: Expr, value: Any) -> Expr:
    return Compare(left, "=", value if isinstance(value, Expr) else Param(value))


@dataclass
class _Renderer:
    dialect: Dialect
    params: list[Any] = field(default_factory=list)

    def bind(self, value: Any) -> str:
        self.params.append(value)
        return self.dialect.placeholder

    def expr(self, node: Expr) -> str:
        if isinstance(node, Column):
            return f"{node.alias}.{node.name}" if node.alias else node.name
        if isinstance(node, Param):
            return self.bind(node.value)
        if isinstance(node, NoIndex):
            return self.dialect.no_index.format(self.expr(node.item))
        if isinstance(node, Compare):
            return f"{self.expr(node.left)} {node.op} {self.expr(node.right)}"
        if isinstance(node, And):
            return self.joined(node.items, " AND ")
        if isinstance(node, Or):
            return self.joined(node.items, " OR ")
        if isinstance(node, Not):
            return f"NOT ({self.expr(node.item)})"
        if isinstance(node, IsNull):
            return f"{self.expr(node.item)} IS NULL"
        if isinstance(node, InValues):
            if not node.values:
                return self.expr(FALSE)
            marks = ", ".join(self.bind(value) for value in node.values)
            return f"{self.expr(node.item)} IN ({marks})"
        if isinstance(node, InSelect):
            keyword = "NOT IN" if node.negated else "IN"
            return f"{self.expr(node.item)} {keyword} ({self.select(node.select)})"
        if isinstance(node, Exists):
            return f"EXISTS ({self.select(node.select)})"
        if isinstance(node, Func):
            return f"{node.name}({', '.join(self.expr(arg) for arg in node.args)})"
        if isinstance(node, Contains):
            return self.dialect.contains.format(self.expr(node.haystack), self.expr(node.needle))
        if isinstance(node, Concat):
            return "(" + " || ".join(self.expr(item) for item in node.items) + ")"
        if isinstance(node, Scalar):
            return f"({self.select(node.select)})"
        if isinstance(node, Star):
            return "*"
        if isinstance(node, Select):
            return self.select(node)
        raise TypeError(f"not an SQL node: {node!r}")

    def joined(self, items: tuple[Expr, ...], operator: str) -> str:
        """``(a OR b OR c)``; past ``FLAT_TERMS`` terms as a balanced tree, ``((a OR b) OR (c OR d))``: databases
        parse a flat list into a tree as deep as it is long (SQLite refuses depth 1000), and the two mean the same."""
        if len(items) <= FLAT_TERMS:
            return "(" + operator.join(self.expr(item) for item in items) + ")"
        middle = len(items) // 2
        return "(" + self.joined(items[:middle], operator) + operator + self.joined(items[middle:], operator) + ")"

    def select(self, node: Select) -> str:
        columns = ", ".join(
            self.expr(expression) + (f" AS {alias}" if alias else "") for expression, alias in node.columns
        )
        sources = ", ".join(
            (f"({self.select(source)})" if isinstance(source, Select) else source) + f" {alias}"
            for source, alias in node.source
        )
        text = f"SELECT {'DISTINCT ' if node.distinct else ''}{columns} FROM {sources}"
        if node.where is not None and node.where != TRUE:
            text += f" WHERE {self.expr(node.where)}"
        for other in node.union_all:
            text += " UNION ALL " + self.select(other)
        if node.order_by:
            text += " ORDER BY " + ", ".join(
                self.expr(expression) + (" DESC" if descending else "") for expression, descending in node.order_by
            )
        if node.limit is not None:
            text += f" LIMIT {int(node.limit)}"
        return text


FLAT_TERMS = 16


def render(node: Select, dialect: Dialect) -> tuple[str, list[Any]]:
    """SQL text and its bound parameters, in order, for ``dialect``."""
    renderer = _Renderer(dialect)
    return renderer.select(node), renderer.params
