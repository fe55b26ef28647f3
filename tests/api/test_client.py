"""The tools' FHIR client: one REST API, in-process on a database or over HTTP to a server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fhir_imaging.client import fhir_client
from tests.e2e.server import running_server


async def _create_and_read(client: Any, patient: dict[str, Any]) -> dict[str, Any]:
    created = await client.post("Patient", json=patient)
    assert created.status_code == 201
    read = await client.get(f"Patient/{created.json()['id']}")
    assert read.status_code == 200
    body: dict[str, Any] = read.json()
    return body


def test_in_process_client_writes_to_the_database(tmp_path: Path, patient: dict[str, Any]) -> None:
    database = f"sqlite:///{tmp_path / 'client.db'}"

    async def scenario() -> None:
        async with fhir_client(database=database) as client:
            first = await _create_and_read(client, patient)
        async with fhir_client(database=database) as client:
            again = await client.get(f"Patient/{first['id']}")
            assert again.json() == first

    asyncio.run(scenario())


def test_server_client_talks_http(tmp_path: Path, patient: dict[str, Any]) -> None:
    with running_server(f"sqlite:///{tmp_path / 'server.db'}") as server:

        async def scenario() -> None:
            async with fhir_client(server=server.base) as client:
                assert (await _create_and_read(client, patient))["gender"] == "male"

        asyncio.run(scenario())
