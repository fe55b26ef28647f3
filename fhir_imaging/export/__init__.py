"""Bulk Data export (``$export``): kick-off requests, jobs kept in the database, and the runner that writes NDJSON."""
