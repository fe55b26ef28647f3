"""The Bundle builders read a stored version through a Protocol: any object with its attributes will do."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, NamedTuple

import orjson

import fhir_imaging.fhir
from fhir_imaging.fhir.bundle import history_bundle, searchset_bundle
from fhir_imaging.storage.base import Version

BASE = "http://example.org/fhir"


class Plain(NamedTuple):
    resource_type: str
    id: str
    version: int
    last_updated: str
    method: str
    body: bytes | None


def _without_id_and_time(bundle: dict[str, Any]) -> Any:
    """The Bundle as a client reads it (stored bodies are spliced in as ``orjson.Fragment``), without id and time."""
    return orjson.loads(orjson.dumps({key: value for key, value in bundle.items() if key not in ("id", "meta")}))


def test_any_object_with_the_attributes_builds_the_same_bundles() -> None:
    rows = [
        ("Patient", "p1", 2, "2024-01-02T00:00:00.000Z", "DELETE", None),
        ("Patient", "p1", 1, "2024-01-01T00:00:00.000Z", "PUT", b'{"resourceType":"Patient","id":"p1"}'),
    ]
    stored, plain = [Version(*row) for row in rows], [Plain(*row) for row in rows]
    links = {"self": f"{BASE}/Patient/p1/_history"}
    history = _without_id_and_time(history_bundle(BASE, plain, links, 2))
    assert history == _without_id_and_time(history_bundle(BASE, stored, links, 2))
    entries = history["entry"]
    assert entries[0]["request"] == {"method": "DELETE", "url": "Patient/p1"} and "resource" not in entries[0]
    assert entries[1]["response"]["status"] == "201 Created" and entries[1]["resource"]["id"] == "p1"
    search = _without_id_and_time(searchset_bundle(BASE, plain[1:], links, 1))
    assert search == _without_id_and_time(searchset_bundle(BASE, stored[1:], links, 1))


def test_the_fhir_package_does_not_import_storage() -> None:
    for path in Path(fhir_imaging.fhir.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            assert not any(name.startswith("fhir_imaging.storage") for name in names), path.name
