"""``fhir-imaging export``: a Bulk Data client (https://hl7.org/fhir/uv/bulkdata/STU2/export.html) for this server or
any other. It kicks an export off, polls its status as the server's ``Retry-After`` says, downloads every file the
manifest lists into a folder (streamed, with progress), checks each file's line count against the manifest's
``count``, and writes the manifest next to them as ``manifest.json``.

The files are saved as ``TYPE-N.ndjson`` by the client's own numbering (never under a name the server chose), and the
access token goes only to the server's own files when the manifest says ``requiresAccessToken``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from fhir_imaging.client import RemoteServer

POLL_DEFAULT = 2.0
POLL_MOST = 60.0
TIMEOUT = httpx.Timeout(300.0, connect=10.0)
MAX_MANIFEST = 16 * 1024 * 1024


class ExportError(RuntimeError):
    """The export could not be started, failed on the server, or its files could not be fetched."""


@dataclass
class ExportSummary:
    files: list[tuple[str, str, int]] = field(default_factory=list)  # (type, saved as, lines)
    errors: list[str] = field(default_factory=list)  # the manifest's error files, saved as
    mismatches: list[str] = field(default_factory=list)  # files whose line count is not the manifest's

    def lines(self) -> list[str]:
        by_type: dict[str, int] = {}
        for kind, _, count in self.files:
            by_type[kind] = by_type.get(kind, 0) + count
        total = sum(by_type.values())
        out = [f"exported {total} resources in {len(self.files)} files: "
               + ", ".join(f"{kind} {count}" for kind, count in sorted(by_type.items()))]  # fmt: skip
        out += [f"  the server reported problems in {name}" for name in self.errors]
        out += [f"  count mismatch: {item}" for item in self.mismatches]
        return out


def kick_off_path(group: str | None, patients: bool) -> str:
    if group is not None:
        return f"Group/{group}/$export"
    return "Patient/$export" if patients else "$export"


async def run_export(
    server: RemoteServer,
    out: Path,
    params: list[tuple[str, str]],
    *,
    group: str | None = None,
    patients: bool = False,
    report: Callable[[str], None] = lambda text: None,
    advance: Callable[[int], None] = lambda size: None,
) -> ExportSummary:
    """Run one export into ``out`` (created when missing)."""
    out.mkdir(parents=True, exist_ok=True)
    base = server.url.rstrip("/")
    headers = {"Accept": "application/fhir+json", "Prefer": "respond-async"}
    async with httpx.AsyncClient(auth=server.auth, timeout=TIMEOUT) as client:
        query = httpx.QueryParams(tuple(params))
        answer = await client.get(f"{base}/{kick_off_path(group, patients)}", params=query, headers=headers)
        if answer.status_code != 202 or "content-location" not in answer.headers:
            raise ExportError(f"the kick-off answered {answer.status_code}: {_explain(answer)}")
        status_url = answer.headers["content-location"]
        manifest = await _poll(client, status_url, report)
    (out / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    summary = ExportSummary()
    with_token = bool(manifest.get("requiresAccessToken"))
    origin = _origin(base)
    async with httpx.AsyncClient(timeout=TIMEOUT) as files:
        numbers: dict[str, int] = {}
        for part in ("output", "error"):
            for entry in manifest.get(part) or []:
                kind, url = str(entry.get("type", "Resource")), str(entry.get("url", ""))
                if not kind.isalpha() or not url.startswith(("https://", "http://")):
                    raise ExportError(f"the manifest lists a file this client will not fetch: {url[:100]!r}")
                numbers[kind] = numbers.get(kind, 0) + 1
                name = f"{kind}-{numbers[kind]}.ndjson"
                auth = server.auth if with_token and _origin(url) == origin else None
                count = await _download(files, url, out / name, auth, advance)
                if part == "error":
                    summary.errors.append(name)
                    continue
                summary.files.append((kind, name, count))
                expected = entry.get("count")
                if isinstance(expected, int) and expected != count:
                    summary.mismatches.append(f"{name}: {count} lines, the manifest says {expected}")
    return summary


async def _poll(client: httpx.AsyncClient, status_url: str, report: Callable[[str], None]) -> dict[str, Any]:
    while True:
        answer = await client.get(status_url, headers={"Accept": "application/json"})
        if answer.status_code == 200:
            if len(answer.content) > MAX_MANIFEST:
                raise ExportError("the manifest is larger than this client reads")
            manifest: Any = answer.json()
            if not isinstance(manifest, dict):
                raise ExportError("the status answered 200 without a manifest")
            return manifest
        if answer.status_code != 202:
            raise ExportError(f"the export failed ({answer.status_code}): {_explain(answer)}")
        report(answer.headers.get("x-progress", "in progress")[:100])
        await asyncio.sleep(_retry_after(answer.headers.get("retry-after")))


def _retry_after(value: str | None) -> float:
    """``Retry-After`` in seconds (the HTTP-date form, and anything unreadable: the default), within bounds."""
    try:
        seconds = float(value) if value is not None else POLL_DEFAULT
    except ValueError:
        seconds = POLL_DEFAULT
    return min(max(seconds, 0.2), POLL_MOST)


async def _download(
    client: httpx.AsyncClient, url: str, path: Path, auth: httpx.Auth | None, advance: Callable[[int], None]
) -> int:
    """Stream ``url`` into ``path``; its number of non-empty lines."""
    lines, last = 0, b"\n"
    request = client.build_request("GET", url, headers={"Accept": "application/fhir+ndjson"})
    response = await client.send(request, auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT, stream=True)
    try:
        if response.status_code != 200:
            await response.aread()
            raise ExportError(f"GET {url} answered {response.status_code}: {_explain(response)}")
        with path.open("wb") as file:
            async for chunk in response.aiter_bytes():
                file.write(chunk)
                lines += chunk.count(b"\n")
                last = chunk[-1:] or last
                advance(len(chunk))
    finally:
        await response.aclose()
    return lines + (0 if last == b"\n" else 1)


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _explain(response: httpx.Response) -> str:
    try:
        outcome = response.json()
        issues = outcome.get("issue", []) if isinstance(outcome, dict) else []
        text = "; ".join(str(issue.get("diagnostics", issue.get("code", ""))) for issue in issues)
    except ValueError:
        text = response.text[:200]
    return text or f"HTTP {response.status_code}"
