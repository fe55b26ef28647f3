"""The backend clients this server issues tokens to (``--auth-clients clients.json``): SMART Backend Services
registrations, each a client id, its public keys (a JWKS inline, or the URL the client publishes it at) and the
scopes it may be granted. A JSON list::

    [
      {"client_id": "dicom-bridge", "scope": "system/*.cruds",
       "jwks": {"keys": [{"kty": "EC", "crv": "P-384", "x": "...", "y": "...", "kid": "k1"}]}},
      {"client_id": "exporter", "scope": "system/*.rs", "jwks_url": "https://exporter.example.org/jwks.json"}
    ]

A key without ``kid`` is known by its RFC 7638 thumbprint (what ``fhir-imaging`` clients put in their assertions).
Reading the file checks every entry and names the one at fault; nothing is fetched here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import orjson

from fhir_imaging.auth.keys import ASSERTION_ALGORITHMS, thumbprint
from fhir_imaging.auth.scopes import parse_scope

MAX_CLIENTS_FILE = 4 * 1024 * 1024


@dataclass(frozen=True)
class BackendClient:
    """One registered client."""

    client_id: str
    scopes: tuple[str, ...]  # the scopes it may be granted (each a resource scope this server understands)
    keys: dict[str, jwt.PyJWK] = field(default_factory=dict)  # kid → public key (an inline JWKS)
    jwks_url: str | None = None  # or where the client publishes its JWKS


def load_clients(path: str | Path) -> dict[str, BackendClient]:
    """The clients of a registration file, by client id; ValueError naming the entry at fault."""
    data = Path(path).read_bytes()
    if len(data) > MAX_CLIENTS_FILE:
        raise ValueError(f"{path}: larger than {MAX_CLIENTS_FILE} bytes")
    try:
        entries = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    return parse_clients(entries, str(path))


def parse_clients(entries: Any, where: str = "clients") -> dict[str, BackendClient]:
    if not isinstance(entries, list):
        raise ValueError(f"{where}: expected a JSON list of clients")
    clients: dict[str, BackendClient] = {}
    for number, entry in enumerate(entries):
        client = _client(entry, f"{where}[{number}]")
        if client.client_id in clients:
            raise ValueError(f"{where}[{number}]: client_id {client.client_id!r} is registered twice")
        clients[client.client_id] = client
    return clients


def _client(entry: Any, where: str) -> BackendClient:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected an object")
    unknown = set(entry) - {"client_id", "scope", "jwks", "jwks_url", "name"}
    if unknown:
        raise ValueError(f"{where}: unknown member(s) {', '.join(sorted(unknown))}")
    client_id = entry.get("client_id")
    if not isinstance(client_id, str) or not client_id or len(client_id) > 255:
        raise ValueError(f"{where}: client_id must be a string of 1 to 255 characters")
    scope = entry.get("scope")
    if not isinstance(scope, str) or not scope.split():
        raise ValueError(f"{where} ({client_id}): scope must name the scopes the client may be granted")
    scopes = tuple(scope.split())
    for item in scopes:
        if parse_scope(item) is None:
            raise ValueError(f"{where} ({client_id}): {item!r} is not a SMART resource scope")
    jwks, jwks_url = entry.get("jwks"), entry.get("jwks_url")
    if (jwks is None) == (jwks_url is None):
        raise ValueError(f"{where} ({client_id}): give exactly one of jwks and jwks_url")
    if jwks_url is not None:
        if not isinstance(jwks_url, str) or not jwks_url.startswith(("https://", "http://")):
            raise ValueError(f"{where} ({client_id}): jwks_url must be an http(s) URL")
        return BackendClient(client_id, scopes, jwks_url=jwks_url)
    return BackendClient(client_id, scopes, keys=public_keys(jwks, f"{where} ({client_id}).jwks"))


def public_keys(jwks: Any, where: str) -> dict[str, jwt.PyJWK]:
    """The signing keys of a JWKS by kid (a key without one: by its thumbprint); keys that cannot sign an
    assertion (other types, other algorithms, private members) are refused."""
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list) or not keys:
        raise ValueError(f"{where}: expected {{'keys': [...]}} with at least one key")
    found: dict[str, jwt.PyJWK] = {}
    for index, jwk in enumerate(keys):
        if not isinstance(jwk, dict):
            raise ValueError(f"{where}.keys[{index}]: expected an object")
        if "d" in jwk:
            raise ValueError(f"{where}.keys[{index}]: a private key; register the public key only")
        algorithm = jwk.get("alg") or ("RS384" if jwk.get("kty") == "RSA" else "ES384")
        if algorithm not in ASSERTION_ALGORITHMS:
            raise ValueError(f"{where}.keys[{index}]: alg must be one of {', '.join(ASSERTION_ALGORITHMS)}")
        try:
            kid = jwk.get("kid") or thumbprint(jwk)
            found[str(kid)] = jwt.PyJWK(jwk, algorithm)
        except (ValueError, jwt.PyJWKError) as exc:
            raise ValueError(f"{where}.keys[{index}]: not a usable public key ({exc})") from None
    return found
