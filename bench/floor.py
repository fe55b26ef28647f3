"""The floor: the least a server can do for the benchmark's requests, on the same HTTP server (uvicorn, uvloop,
httptools) and the same SQLite settings (WAL, ``synchronous`` as the server under test).

A raw ASGI app, no framework: ``POST /baseR4/{type}`` parses the JSON, gives it an id and ``meta``, inserts it and
returns it (201); ``PUT /baseR4/{type}/{id}`` does the same as an upsert; ``GET /baseR4/{type}/{id}`` reads a row
by key (200/404); ``GET /baseR4/metadata`` answers 200 (readiness). Everything else is 404, so workloads the floor
does not model are skipped. No validation, no history, no versioning, no logging: our figures are reported as
ratios to these.

    FLOOR_DATABASE=/tmp/floor.db FLOOR_SYNCHRONOUS=full python -m uvicorn --factory bench.floor:create_app
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

SCHEMA = "CREATE TABLE IF NOT EXISTS resource (type TEXT NOT NULL, id TEXT NOT NULL, body BLOB, PRIMARY KEY (type, id))"
JSON_HEADERS = [(b"content-type", b"application/fhir+json; charset=utf-8")]


def connect(path: str, synchronous: str = "full") -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    conn.execute(SCHEMA)
    return conn


def preload(path: str, resources: Iterable[dict[str, Any]]) -> int:
    """Insert ``resources`` (ids kept) in one transaction; the number inserted."""
    conn = connect(path, "off")
    stamp = datetime.now(UTC).isoformat()
    count = 0

    def rows() -> Iterable[tuple[str, str, bytes]]:
        nonlocal count
        for resource in resources:
            count += 1
            body = {**resource, "meta": {"versionId": "1", "lastUpdated": stamp}}
            yield resource["resourceType"], resource["id"], orjson.dumps(body)

    conn.execute("BEGIN")
    conn.executemany("INSERT OR REPLACE INTO resource (type, id, body) VALUES (?, ?, ?)", rows())
    conn.execute("COMMIT")
    conn.close()
    return count


Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


def create_app() -> Callable[[dict[str, Any], Receive, Send], Awaitable[None]]:
    conn = connect(os.environ.get("FLOOR_DATABASE", "floor.db"), os.environ.get("FLOOR_SYNCHRONOUS", "full"))

    async def respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        await send({"type": "http.response.start", "status": status, "headers": JSON_HEADERS + (headers or [])})
        await send({"type": "http.response.body", "body": body})

    async def read_body(receive: Receive) -> bytes:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                return b"".join(chunks)

    def write(resource_type: str, resource_id: str, body: bytes) -> bytes:
        resource = orjson.loads(body)
        resource["id"] = resource_id
        resource["meta"] = {"versionId": "1", "lastUpdated": datetime.now(UTC).isoformat()}
        stored = orjson.dumps(resource)
        conn.execute(
            "INSERT OR REPLACE INTO resource (type, id, body) VALUES (?, ?, ?)", (resource_type, resource_id, stored)
        )
        return stored

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    conn.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        parts = scope["path"].split("/")  # "", "baseR4", type, id
        method = scope["method"]
        if len(parts) == 3 and parts[2] == "metadata" and method == "GET":
            await respond(send, 200, b'{"resourceType":"CapabilityStatement"}')
        elif len(parts) == 3 and parts[2] and method == "POST":
            resource_id = str(uuid.uuid4())
            stored = write(parts[2], resource_id, await read_body(receive))
            await respond(send, 201, stored, [(b"location", f"/baseR4/{parts[2]}/{resource_id}".encode())])
        elif len(parts) == 4 and method == "GET":
            row = conn.execute("SELECT body FROM resource WHERE type = ? AND id = ?", (parts[2], parts[3])).fetchone()
            await (respond(send, 200, row[0]) if row else respond(send, 404, b'{"resourceType":"OperationOutcome"}'))
        elif len(parts) == 4 and method == "PUT":
            await respond(send, 200, write(parts[2], parts[3], await read_body(receive)))
        else:
            await read_body(receive)
            await respond(send, 404, b'{"resourceType":"OperationOutcome"}')

    return app
