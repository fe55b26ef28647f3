"""PostgreSQL's planner statistics for the search index tables: what makes it pick the right plan for a search.

A search filter compares several columns of one index row together (``type = 'ImagingStudy' AND param = 'modality'
AND code = 'CT' AND system = '…DCM'``), and those columns are far from independent: the code ``CT`` occurs only
under ``modality``, which occurs only for ImagingStudy. With per-column statistics alone PostgreSQL multiplies
their selectivities and estimates a few rows where a fifth of the studies match (5 estimated against 5,054 found at
20,000 studies): it then lists every match, fetches each one's resource row and sorts them all for a page of 20,
instead of walking the resources and the index rows in rid order together and stopping after the page. Extended
statistics (``CREATE STATISTICS … (mcv, dependencies)``) on the columns a filter compares together give it the
frequency of each common combination (``ImagingStudy, status, available`` …), and the estimates come within a few
per cent (4,898 against 5,054).

They are planner metadata, not schema: ``ensure`` creates those missing (``IF NOT EXISTS``) whenever the store
migrates, so any database gets them, and ``ANALYZE`` fills them. Statistics count only once analysed, so a bulk
load (bulk_load.py), a migration that fills tables and ``reindex`` end with ``ANALYZE`` (``PostgresStore.analyze``);
autovacuum keeps them current after that.
"""

from __future__ import annotations

from typing import Any

from fhir_imaging.search.types import TYPES

# (index table, the columns its filters compare together): the token table's values, the reference table's target
# type; every table's (type, param), which a filter always compares together.
TOGETHER: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
    (
        kind.table,
        ("type", "param", *({"token": ("code", "system"), "reference": ("target_type",)}.get(kind.name, ()))),
    )
    for kind in TYPES.values()
)
STATISTICS = tuple(f"{table}_together" for table, _ in TOGETHER)


def create_statements() -> tuple[str, ...]:
    """The ``CREATE STATISTICS`` statements, one per index table."""
    return tuple(
        f"CREATE STATISTICS IF NOT EXISTS {table}_together (mcv, dependencies) ON {', '.join(columns)} FROM {table}"
        for table, columns in TOGETHER
    )


def drop_statements() -> tuple[str, ...]:
    """The statistics dropped again (for the benchmark's comparison: bench/pgsearch.py)."""
    return tuple(f"DROP STATISTICS IF EXISTS {name}" for name in STATISTICS)


def ensure(conn: Any) -> bool:
    """Create the extended statistics that are missing on ``conn`` (inside the caller's transaction); whether any
    was."""
    present = {row[0] for row in conn.execute("SELECT stxname FROM pg_statistic_ext").fetchall()}
    wanted = zip(STATISTICS, create_statements(), strict=True)
    missing = [statement for name, statement in wanted if name not in present]
    for statement in missing:
        conn.execute(statement)
    return bool(missing)
