"""Which connections the server believes ``X-Forwarded-Proto`` and ``X-Forwarded-For`` from (docs/security.md,
"Behind a proxy"): the options ``serve`` gives uvicorn, loaded as uvicorn loads them, around an app that records the
scheme and client it is given."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvicorn

from fhir_imaging.config import Settings
from fhir_imaging.server import uvicorn_options

FORWARDED = [(b"x-forwarded-proto", b"https"), (b"x-forwarded-for", b"203.0.113.7")]


def _seen(peer: str, monkeypatch: pytest.MonkeyPatch, allowed: str | None = None) -> tuple[str, str]:
    """The scheme and client host the app sees for a request from ``peer`` carrying ``FORWARDED``."""
    if allowed is None:
        monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    else:
        monkeypatch.setenv("FORWARDED_ALLOW_IPS", allowed)
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.update(scheme=scope["scheme"], client=scope["client"][0])

    options = uvicorn_options(Settings())
    config = uvicorn.Config(app, **{name: value for name, value in options.items() if name not in {"host", "port"}})
    config.load()
    scope = {
        "type": "http",
        "scheme": "http",
        "client": (peer, 50000),
        "headers": FORWARDED,
        "method": "GET",
        "path": "/",
    }
    asyncio.run(config.loaded_app(scope, None, None))
    return seen["scheme"], seen["client"]


@pytest.mark.parametrize("peer", ["127.0.0.1", "::1"])
def test_a_proxy_on_the_same_machine_is_believed(peer: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _seen(peer, monkeypatch) == ("https", "203.0.113.7")


def test_any_other_client_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _seen("198.51.100.20", monkeypatch) == ("http", "198.51.100.20")


def test_forwarded_allow_ips_names_a_proxy_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _seen("10.1.2.3", monkeypatch, allowed="10.1.2.3") == ("https", "203.0.113.7")
    assert _seen("127.0.0.1", monkeypatch, allowed="10.1.2.3") == ("http", "127.0.0.1")
