"""The Protocol every search-parameter type implements, and helpers the types share.

Spec: https://hl7.org/fhir/R4/search.html#ptypes (types), #prefix (prefixes), #escaping (``\\,`` ``\\|`` ``\\$``)
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from fhir_imaging.fhir.registry import SearchParam
from fhir_imaging.search import sql

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")

# An index row as extraction yields it: (kind = the type whose table holds it, sub-key, value columns).
# The sub-key is '' for the parameter itself, or names a derived form kept in the same table under
# ``code:sub`` (a reference's identifier → token table ``patient:identifier``; an identifier's type → ``:of-type``).
Row = tuple[str, str, tuple[Any, ...]]
# Index rows for a list of values all of one FHIR type, in order: what ``extract`` gives for each, concatenated.
Extractor = Callable[[list[Any]], list[Row]]


class InvalidValue(ValueError):
    """A search value that cannot be parsed; the message says why (the caller names the parameter)."""


class NotSupportedModifier(ValueError):
    """A modifier FHIR defines that this server cannot answer correctly (terminology): a 400, never wrong results."""


@dataclass(frozen=True, slots=True)
class IndexColumn:
    """A column of an index table, as its DDL declares it (SQLite types: storage/dialect.py converts them)."""

    name: str
    sql_type: str  # TEXT | INTEGER | REAL
    nullable: bool = False


# The columns every index table starts with: the resource's rid and type, and the parameter's code.
KEY_COLUMNS = (IndexColumn("rid", "INTEGER"), IndexColumn("type", "TEXT"), IndexColumn("param", "TEXT"))


def column_names(columns: tuple[IndexColumn, ...]) -> tuple[str, ...]:
    return tuple(item.name for item in columns)


@dataclass(frozen=True, slots=True)
class CompileContext:
    """What compilation needs beyond the value: the index alias and the bases that mean "this server"."""

    alias: str
    bases: tuple[str, ...]  # '' (relative references) and the server's absolute base URLs


class SearchType(Protocol):
    @property
    def name(self) -> str:
        """token | string | date | number | quantity | uri | reference"""

    @property
    def table(self) -> str:
        """spidx_<name>"""

    @property
    def value_columns(self) -> tuple[IndexColumn, ...]:
        """The value columns after ``KEY_COLUMNS`` (rid, type, param), with their SQL types."""

    @property
    def indexes(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """(name suffix, columns) of the table's indexes besides ``<table>_rid`` (rid, param), which every index
        table has (storage/schema.py creates them all)."""

    @property
    def modifiers(self) -> frozenset[str]:
        """The modifiers accepted (besides :missing, which every type takes)."""

    def parse_value(self, text: str, modifier: str | None, param: SearchParam) -> Any:
        """One (already comma-split) value → its typed form; InvalidValue when malformed."""

    def extractor(self, kind: str) -> Extractor:
        """Index rows for a list of values of FHIR type ``kind`` found by a parameter's expression."""

    def compile(self, value: Any, modifier: str | None, context: CompileContext) -> sql.Expr:
        """A condition on one index row (alias ``context.alias``) true when the row matches ``value``."""

    def sort_key(self, alias: str, descending: bool) -> sql.Expr:
        """The aggregate over the index rows of a resource that ``_sort`` orders by."""


def split_escaped(text: str, separator: str, limit: int = -1) -> list[str]:
    """Split on ``separator`` unless it is escaped with a backslash; the parts keep their escapes (see unescape)."""
    parts: list[str] = []
    start, index = 0, 0
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == separator and (limit < 0 or len(parts) < limit):
            parts.append(text[start:index])
            start = index + 1
        index += 1
    parts.append(text[start:])
    return parts


def unescape(text: str) -> str:
    """Undo the search escapes ``\\, \\| \\$ \\\\``; any other backslash stays."""
    out, index = [], 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text) and text[index + 1] in "\\,$|":
            out.append(text[index + 1])
            index += 2
        else:
            out.append(char)
            index += 1
    return "".join(out)


def normalize(text: str) -> str:
    """Case- and accent-insensitive form used by string search (``Müller`` → ``muller``)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(char for char in decomposed if not unicodedata.combining(char)).casefold()


@lru_cache(maxsize=65536)
def normalize_cached(text: str) -> str:
    """``normalize``, remembered: extraction folds the same displays and names again and again."""
    return normalize(text)


def split_prefix(text: str, name: str) -> tuple[str, str]:
    """``ge2024`` → ('ge', '2024'); no prefix → 'eq'; two letters that are not a prefix → InvalidValue."""
    if len(text) >= 2 and text[:2].isalpha() and text[:2].islower():
        prefix = text[:2]
        if prefix not in PREFIXES:
            raise InvalidValue(
                f"'{text}' is not a {name} value: it starts with '{prefix}', which is not a prefix "
                f"({' '.join(PREFIXES)})"
            )
        return prefix, text[2:]
    return "eq", text


def column(alias: str, name: str) -> sql.Column:
    return sql.Column(alias, name)
