"""Persistence: the Store protocol and its backends (the only package that touches a database driver)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fhir_imaging.config import Settings
    from fhir_imaging.fhir.registry import Registry
    from fhir_imaging.storage.base import Store


def open_store(settings: Settings, registry: Registry) -> Store:
    """The backend named by the database URL, indexing the search parameters of ``registry``."""
    url = settings.database
    if url.startswith("sqlite:"):
        from fhir_imaging.storage.sqlite import SQLiteStore

        if settings.database_replica:
            raise ValueError("read replicas (--database-replica) need a PostgreSQL database")

        return SQLiteStore(
            url,
            registry,
            synchronous=settings.sqlite_synchronous,
            query_timeout=settings.search_timeout,
            migrate=not settings.no_migrate,
        )
    if url.startswith(("postgresql:", "postgres:")):
        from fhir_imaging.storage.postgres import PostgresStore

        return PostgresStore(
            url,
            registry,
            pool_size=settings.pool_size,
            statement_timeout=settings.search_timeout,
            replicas=settings.database_replica,
            replica_max_lag=settings.replica_max_lag,
            replica_check_interval=settings.replica_check_interval,
            migrate=not settings.no_migrate,
            transaction_pooler=settings.transaction_pooler,
        )
    from fhir_imaging.logs import redact_url

    raise ValueError(f"unsupported database URL (expected sqlite:///path.db or postgresql://…): {redact_url(url)}")
