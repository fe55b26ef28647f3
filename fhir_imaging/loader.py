"""``fhir-imaging load``: Bundles, single resources and NDJSON files into the server, through its REST API.

Transaction and batch Bundles are posted as they are. Every other resource (one per NDJSON line, the entries of a
collection Bundle, a single resource file) is sent in transaction Bundles of ``batch_size`` entries: ``PUT
[type]/[id]`` when it has an id (so loading again changes no set of resources), ``POST [type]`` when not. When such
a transaction fails, its entries are sent again as a batch, so one bad resource fails alone, reported with its file
and line. Lines that are not JSON are reported the same way; neither stops the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import orjson

from fhir_imaging.fhir.resource import without_bom

NDJSON_SUFFIXES = (".ndjson", ".jsonl")
JSON_SUFFIXES = (".json", *NDJSON_SUFFIXES)


@dataclass(frozen=True, slots=True)
class Item:
    """One resource to load and where it came from (``file:line`` or ``file#entry``)."""

    source: str
    resource: dict[str, Any]
    size: int


@dataclass(frozen=True, slots=True)
class Line:
    """One NDJSON line (``file:line``), not parsed yet."""

    source: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Failure:
    source: str
    reason: str
    size: int = 0


@dataclass(frozen=True, slots=True)
class PreparedBundle:
    """A transaction or batch Bundle from a file, posted as it is."""

    source: str
    bundle: dict[str, Any]
    size: int


@dataclass
class Summary:
    loaded: int = 0
    failed: list[Failure] = field(default_factory=list)
    files: int = 0


class Progress(Protocol):
    def advance(self, size: int) -> None: ...


def find_files(paths: Iterable[Path]) -> list[Path]:
    """The files named, and the JSON/NDJSON files below the folders named, sorted."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in JSON_SUFFIXES))
        else:
            found.append(path)
    return found


def read_file(path: Path) -> Iterator[Item | Failure | PreparedBundle]:
    """What one file holds, in order."""
    if path.suffix.lower() in NDJSON_SUFFIXES:
        yield from _read_ndjson(path)
        return
    data = path.read_bytes()
    try:
        value = orjson.loads(without_bom(data))
    except orjson.JSONDecodeError as exc:
        yield Failure(str(path), f"not JSON: {exc}", len(data))
        return
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        yield Failure(str(path), "not a FHIR resource (no resourceType)", len(data))
        return
    if value["resourceType"] == "Bundle" and value.get("type") in ("transaction", "batch"):
        yield PreparedBundle(str(path), value, len(data))
    elif value["resourceType"] == "Bundle" and value.get("type") in ("collection", "searchset", "history", "document"):
        entries = [e for e in value.get("entry") or [] if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
        share = len(data) // max(len(entries), 1)
        for index, entry in enumerate(entries):
            yield Item(f"{path}#entry[{index}]", entry["resource"], share)
    else:
        yield Item(str(path), value, len(data))


def ndjson_lines(path: Path) -> Iterator[Line]:
    """The lines of an NDJSON file that are not blank, not parsed yet."""
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                yield Line(f"{path}:{number}", without_bom(line) if number == 1 else line)


def parse_line(line: Line) -> Item | Failure:
    """One NDJSON line as an item, or why it is not one."""
    try:
        value = orjson.loads(line.data)
    except orjson.JSONDecodeError as exc:
        return Failure(line.source, f"not JSON: {exc}", len(line.data))
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        return Failure(line.source, "not a FHIR resource (no resourceType)", len(line.data))
    return Item(line.source, value, len(line.data))


def _read_ndjson(path: Path) -> Iterator[Item | Failure]:
    for line in ndjson_lines(path):
        yield parse_line(line)


def bundle_of(items: list[Item], kind: str) -> dict[str, Any]:
    """A transaction (or batch) Bundle writing ``items``: PUT where there is an id, POST where not."""
    entries = []
    for item in items:
        resource = item.resource
        resource_id = resource.get("id")
        if isinstance(resource_id, str) and resource_id:
            request = {"method": "PUT", "url": f"{resource['resourceType']}/{resource_id}"}
        else:
            request = {"method": "POST", "url": resource["resourceType"]}
        entries.append({"resource": resource, "request": request})
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def _outcome_text(outcome: Any) -> str:
    issues = outcome.get("issue", []) if isinstance(outcome, dict) else []
    return "; ".join(
        str(issue.get("diagnostics", issue.get("code", ""))) for issue in issues if isinstance(issue, dict)
    )


def _reason(response: httpx.Response) -> str:
    try:
        text = _outcome_text(response.json())
    except ValueError:
        text = ""
    return f"HTTP {response.status_code}: {text}" if text else f"HTTP {response.status_code}"


def _entry_failure(source: str, answer: dict[str, Any]) -> Failure:
    text = _outcome_text(answer.get("outcome"))
    return Failure(source, f"{answer.get('status', '')}: {text}" if text else str(answer.get("status", "failed")))


class Loader:
    def __init__(self, client: httpx.AsyncClient, batch_size: int = 500, progress: Progress | None = None) -> None:
        self.client = client
        self.batch_size = batch_size
        self.progress = progress
        self.summary = Summary()

    def _advance(self, size: int) -> None:
        if self.progress is not None:
            self.progress.advance(size)

    async def load(self, files: list[Path]) -> Summary:
        for path in files:
            self.summary.files += 1
            pending: list[Item] = []
            for unit in read_file(path):
                if isinstance(unit, Item):
                    pending.append(unit)
                    if len(pending) >= self.batch_size:
                        await self._send_items(pending)
                        pending = []
                elif isinstance(unit, Failure):
                    self.summary.failed.append(unit)
                    self._advance(unit.size)
                else:
                    await self._send_bundle(unit)
            if pending:
                await self._send_items(pending)
        return self.summary

    async def _send_bundle(self, unit: PreparedBundle) -> None:
        response = await self.client.post("", content=orjson.dumps(unit.bundle))
        entries = unit.bundle.get("entry") or []
        if response.status_code == 200 and unit.bundle.get("type") == "batch":
            for index, entry in enumerate(response.json().get("entry", [])):
                answer = entry.get("response", {})
                if answer.get("status", "").startswith("2"):
                    self.summary.loaded += 1
                else:
                    self.summary.failed.append(_entry_failure(f"{unit.source}#entry[{index}]", answer))
        elif response.status_code == 200:
            self.summary.loaded += len(entries)
        else:
            self.summary.failed.append(Failure(unit.source, _reason(response)))
        self._advance(unit.size)

    async def _send_items(self, items: list[Item]) -> None:
        response = await self.client.post("", content=orjson.dumps(bundle_of(items, "transaction")))
        if response.status_code == 200:
            self.summary.loaded += len(items)
        else:
            retry = await self.client.post("", content=orjson.dumps(bundle_of(items, "batch")))
            if retry.status_code != 200:
                self.summary.failed.extend(Failure(item.source, _reason(retry)) for item in items)
            else:
                for item, entry in zip(items, retry.json().get("entry", []), strict=True):
                    answer = entry.get("response", {})
                    if answer.get("status", "").startswith("2"):
                        self.summary.loaded += 1
                    else:
                        self.summary.failed.append(_entry_failure(item.source, answer))
        self._advance(sum(item.size for item in items))
