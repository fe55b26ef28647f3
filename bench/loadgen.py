"""The load generator: ``wrk`` (C, event loop per thread; Debian package ``wrk``) driven by a Lua script.

Each workload is a file of requests, one a line: ``METHOD<TAB>PATH<TAB>BODY`` (the body is one line of JSON, or
empty). Every wrk thread loads the file once, pre-formats the requests, and cycles through them from its own
offset. In follow mode (``follow > 0``) a thread has one connection, reads each answer's ``next`` link and requests
it, up to ``follow`` pages, before taking the next line of the file.

wrk is a closed loop (each connection sends its next request when the answer arrives), so the latencies are those
the server gives at that concurrency; ``errors`` counts socket errors, timeouts and answers with a status ≥ 400.
The wrk process's own CPU time (from ``wait4``) is returned, to check that the client is not the bottleneck.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

LUA_COMMON = r"""
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

local reqs = {}
local idx = 1
local follow_max = 0
local next_path = nil
local depth = 0
local hdrs = {["Content-Type"] = "application/fhir+json", ["Accept"] = "application/fhir+json"}

function init(args)
  follow_max = tonumber(args[2] or "0")
  for line in io.lines(args[1]) do
    local method, path, body = string.match(line, "^(%u+)\t([^\t]*)\t?(.*)$")
    if method then
      if body == "" then body = nil end
      reqs[#reqs + 1] = wrk.format(method, path, hdrs, body)
    end
  end
  idx = ((tid or 0) * 7919) % #reqs + 1
end

function request()
  if next_path ~= nil and depth < follow_max then
    depth = depth + 1
    local p = next_path
    next_path = nil
    return wrk.format("GET", p, hdrs)
  end
  depth = 0
  next_path = nil
  local r = reqs[idx]
  idx = idx % #reqs + 1
  return r
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50":%.0f,"p90":%.0f,"p95":%.0f,"p99":%.0f,"max":%.0f,"mean":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(95), latency:percentile(99),
    latency.max, latency.mean))
end
"""

# Only defined in follow mode: when a script defines response(), wrk buffers every answer's headers and body.
LUA_FOLLOW = r"""
function response(status, headers, body)
  next_path = nil
  if status ~= 200 or body == nil then return end
  local url = string.match(body, '"relation"%s*:%s*"next"%s*,%s*"url"%s*:%s*"([^"]+)"')
  if url == nil then
    url = string.match(body, '"url"%s*:%s*"([^"]+)"%s*,%s*"relation"%s*:%s*"next"')
  end
  if url ~= nil then
    next_path = string.gsub(url, "^https?://[^/]+", "")
  end
end
"""


@dataclass(frozen=True, slots=True)
class LoadResult:
    requests: int
    seconds: float
    bytes: int
    errors: int
    error_detail: dict[str, int]
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    client_cpu: float  # CPU seconds of wrk (user + system) over the run

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def write_scripts(directory: Path) -> tuple[Path, Path]:
    plain, follow = directory / "requests.lua", directory / "follow.lua"
    plain.write_text(LUA_COMMON)
    follow.write_text(LUA_COMMON + LUA_FOLLOW)
    return plain, follow


def run_wrk(
    base_url: str,
    requests_file: Path,
    connections: int,
    seconds: float,
    follow: int = 0,
    during: Callable[[], None] | None = None,
    timeout_s: int = 10,
) -> LoadResult:
    """Run wrk for ``seconds`` against ``base_url`` (scheme://host:port); ``during`` is called every 0.25 s."""
    plain, follow_script = write_scripts(requests_file.parent)
    threads = connections if follow else min(connections, 2)
    cmd = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(seconds))}s",
        "--timeout",
        f"{timeout_s}s",
        "-s",
        str(follow_script if follow else plain),
        base_url,
        "--",
        str(requests_file),
        str(follow),
    ]
    out_path = requests_file.with_suffix(".wrk.out")
    with out_path.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + seconds + 120  # wrk loads the file first; bounded wait
        status, usage = 0, None
        while time.monotonic() < deadline:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if during:
                during()
            time.sleep(0.25)
        else:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    text = out_path.read_text(errors="replace")
    line = next((x for x in text.splitlines() if x.startswith("BENCHJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no summary (exit {proc.returncode}): {text[-2000:]}")
    data = json.loads(line[len("BENCHJSON ") :])
    detail = {key: data[key] for key in ("connect", "read", "write", "status", "timeout") if data[key]}
    return LoadResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        bytes=data["bytes"],
        errors=sum(detail.values()),
        error_detail=detail,
        p50_ms=data["p50"] / 1000,
        p90_ms=data["p90"] / 1000,
        p95_ms=data["p95"] / 1000,
        p99_ms=data["p99"] / 1000,
        max_ms=data["max"] / 1000,
        client_cpu=(usage.ru_utime + usage.ru_stime) if usage else 0.0,
    )
