"""Migration 2 is generated from the search types' declared columns and indexes (storage/schema.py). A migration
must never change once released: databases it already ran on would not get the change. This pins its text as
released; a new column or index belongs in a new migration, not in the declarations alone."""

from __future__ import annotations

from fhir_imaging.search.types import TYPES
from fhir_imaging.search.types.base import column_names
from fhir_imaging.storage.schema import MIGRATIONS

KEY = "rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL"
RELEASED_MIGRATION_2 = (
    f"CREATE TABLE spidx_token ({KEY}, system TEXT NOT NULL, code TEXT, text TEXT)",
    "CREATE INDEX spidx_token_code ON spidx_token (type, param, code, system, rid)",
    "CREATE INDEX spidx_token_system ON spidx_token (type, param, system, rid)",
    "CREATE INDEX spidx_token_text ON spidx_token (type, param, text, rid)",
    "CREATE INDEX spidx_token_rid ON spidx_token (rid, param)",
    f"CREATE TABLE spidx_string ({KEY}, norm TEXT NOT NULL, exact TEXT NOT NULL)",
    "CREATE INDEX spidx_string_norm ON spidx_string (type, param, norm, rid)",
    "CREATE INDEX spidx_string_exact ON spidx_string (type, param, exact, rid)",
    "CREATE INDEX spidx_string_rid ON spidx_string (rid, param)",
    f"CREATE TABLE spidx_date ({KEY}, lo INTEGER NOT NULL, hi INTEGER NOT NULL)",
    "CREATE INDEX spidx_date_lo ON spidx_date (type, param, lo, hi, rid)",
    "CREATE INDEX spidx_date_hi ON spidx_date (type, param, hi, lo, rid)",
    "CREATE INDEX spidx_date_rid ON spidx_date (rid, param)",
    f"CREATE TABLE spidx_number ({KEY}, lo REAL NOT NULL, hi REAL NOT NULL)",
    "CREATE INDEX spidx_number_lo ON spidx_number (type, param, lo, hi, rid)",
    "CREATE INDEX spidx_number_rid ON spidx_number (rid, param)",
    f"CREATE TABLE spidx_quantity ({KEY}, system TEXT, code TEXT, unit TEXT, lo REAL NOT NULL, hi REAL NOT NULL)",
    "CREATE INDEX spidx_quantity_lo ON spidx_quantity (type, param, lo, hi, rid)",
    "CREATE INDEX spidx_quantity_rid ON spidx_quantity (rid, param)",
    f"CREATE TABLE spidx_uri ({KEY}, uri TEXT NOT NULL)",
    "CREATE INDEX spidx_uri_uri ON spidx_uri (type, param, uri, rid)",
    "CREATE INDEX spidx_uri_rid ON spidx_uri (rid, param)",
    f"CREATE TABLE spidx_reference ({KEY}, target_type TEXT, target_id TEXT, base TEXT, url TEXT NOT NULL)",
    "CREATE INDEX spidx_reference_target ON spidx_reference (type, param, target_id, target_type, base, rid)",
    "CREATE INDEX spidx_reference_url ON spidx_reference (type, param, url, rid)",
    "CREATE INDEX spidx_reference_reverse ON spidx_reference (target_type, target_id, type, param, rid)",
    "CREATE INDEX spidx_reference_rid ON spidx_reference (rid, param)",
    "CREATE INDEX resource_by_type_id ON resource (type, rid)",
)


def test_migration_2_is_the_released_index_schema() -> None:
    assert MIGRATIONS[1] == RELEASED_MIGRATION_2


def test_every_indexed_column_is_a_declared_column() -> None:
    for kind in TYPES.values():
        declared = ("rid", "type", "param", *column_names(kind.value_columns))
        assert all(name in declared for _, names in kind.indexes for name in names)
