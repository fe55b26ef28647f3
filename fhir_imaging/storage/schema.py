"""The database schema, as versioned migrations (oldest first).

``resource`` holds the current version of every resource (``rid`` is the surrogate key index tables refer to);
``resource_history`` holds every version, ``seq`` ordering the server-wide history. The body of a current version is
stored once, in ``resource``: its history row holds NULL until a newer version supersedes it (storage/sqlstore.py).
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE resource (
            rid INTEGER PRIMARY KEY,
            type TEXT NOT NULL,
            id TEXT NOT NULL,
            version INTEGER NOT NULL,
            last_updated TEXT NOT NULL,
            deleted INTEGER NOT NULL DEFAULT 0,
            body BLOB,
            UNIQUE (type, id)
        )""",
        """CREATE TABLE resource_history (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            rid INTEGER NOT NULL,
            type TEXT NOT NULL,
            id TEXT NOT NULL,
            version INTEGER NOT NULL,
            last_updated TEXT NOT NULL,
            method TEXT NOT NULL,
            body BLOB,
            UNIQUE (type, id, version)
        )""",
        "CREATE INDEX resource_history_by_type ON resource_history (type, seq)",
        "CREATE INDEX resource_by_type_updated ON resource (type, last_updated)",
    ),
    # 2: search indexes, one table per parameter type (fhir_imaging/search/index.py fills them at write time).
    # Every row: the resource's rid and type, the parameter code, the value columns of its type.
    (
        """CREATE TABLE spidx_token (
            rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
            system TEXT NOT NULL, code TEXT, text TEXT
        )""",
        "CREATE INDEX spidx_token_code ON spidx_token (type, param, code, system, rid)",
        "CREATE INDEX spidx_token_system ON spidx_token (type, param, system, rid)",
        "CREATE INDEX spidx_token_text ON spidx_token (type, param, text, rid)",
        "CREATE INDEX spidx_token_rid ON spidx_token (rid, param)",
        """CREATE TABLE spidx_string (
            rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL, norm TEXT NOT NULL, exact TEXT NOT NULL
        )""",
        "CREATE INDEX spidx_string_norm ON spidx_string (type, param, norm, rid)",
        "CREATE INDEX spidx_string_exact ON spidx_string (type, param, exact, rid)",
        "CREATE INDEX spidx_string_rid ON spidx_string (rid, param)",
        """CREATE TABLE spidx_date (
            rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL
        )""",
        "CREATE INDEX spidx_date_lo ON spidx_date (type, param, lo, hi, rid)",
        "CREATE INDEX spidx_date_hi ON spidx_date (type, param, hi, lo, rid)",
        "CREATE INDEX spidx_date_rid ON spidx_date (rid, param)",
        """CREATE TABLE spidx_number (
            rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL, lo REAL NOT NULL, hi REAL NOT NULL
        )""",
        "CREATE INDEX spidx_number_lo ON spidx_number (type, param, lo, hi, rid)",
        "CREATE INDEX spidx_number_rid ON spidx_number (rid, param)",
        """CREATE TABLE spidx_quantity (
            rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
            system TEXT, code TEXT, unit TEXT, lo REAL NOT NULL, hi REAL NOT NULL
        )""",
        "CREATE INDEX spidx_quantity_lo ON spidx_quantity (type, param, lo, hi, rid)",
        "CREATE INDEX spidx_quantity_rid ON spidx_quantity (rid, param)",
        """CREATE TABLE spidx_uri (
            rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL, uri TEXT NOT NULL
        )""",
        "CREATE INDEX spidx_uri_uri ON spidx_uri (type, param, uri, rid)",
        "CREATE INDEX spidx_uri_rid ON spidx_uri (rid, param)",
        """CREATE TABLE spidx_reference (
            rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
            target_type TEXT, target_id TEXT, base TEXT, url TEXT NOT NULL
        )""",
        "CREATE INDEX spidx_reference_target ON spidx_reference (type, param, target_id, target_type, base, rid)",
        "CREATE INDEX spidx_reference_url ON spidx_reference (type, param, url, rid)",
        "CREATE INDEX spidx_reference_reverse ON spidx_reference (target_type, target_id, type, param, rid)",
        "CREATE INDEX spidx_reference_rid ON spidx_reference (rid, param)",
        "CREATE INDEX resource_by_type_id ON resource (type, rid)",
    ),
    # 3: most token rows (instance UIDs, codes without display) have no text: index only those that do.
    (
        "DROP INDEX spidx_token_text",
        "CREATE INDEX spidx_token_text ON spidx_token (type, param, text, rid) WHERE text IS NOT NULL",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)
