"""The database schema, as versioned migrations (oldest first).

``resource`` holds the current version of every resource (``rid`` is the surrogate key index tables refer to);
``resource_history`` holds every version, ``seq`` ordering the server-wide history.
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
)

SCHEMA_VERSION = len(MIGRATIONS)
