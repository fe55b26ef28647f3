"""A small OpenID issuer for the resource-server tests: a real HTTP server on loopback publishing a discovery
document and a JWKS, and the private keys to sign tokens with (PyJWT + cryptography). Tokens it does not sign
(tampered, other keys, ``alg: none``) are made by the tests themselves. The end-to-end tests use a real OpenID
provider (tests/e2e/oidc_provider.py)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa


@dataclass
class Issuer:
    url: str
    keys: dict[str, Any] = field(default_factory=dict)  # kid → private key, the published ones
    current: str = ""
    jwks_fetches: int = 0

    def rotate(self, algorithm: str = "RS256") -> str:
        """A new signing key with a new kid, published from now on (the old ones stay published)."""
        kid = uuid.uuid4().hex[:12]
        key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if algorithm.startswith("ES"):
            key = ec.generate_private_key(ec.SECP256R1() if algorithm == "ES256" else ec.SECP384R1())
        self.keys[kid] = (key, algorithm)
        self.current = kid
        return kid

    def jwks(self) -> dict[str, Any]:
        found = []
        for kid, (key, algorithm) in self.keys.items():
            algo = jwt.algorithms.get_default_algorithms()[algorithm]
            jwk = json.loads(algo.to_jwk(key.public_key()))
            jwk.update({"kid": kid, "alg": algorithm, "use": "sig"})
            found.append(jwk)
        return {"keys": found}

    def token(
        self,
        scope: str = "system/*.cruds",
        audience: str = "http://testserver/baseR4",
        lifetime: float = 300,
        kid: str | None = None,
        **claims: Any,
    ) -> str:
        """A token signed by the current key (or ``kid``'s)."""
        kid = kid or self.current
        key, algorithm = self.keys[kid]
        now = time.time()
        payload = {"iss": self.url, "aud": audience, "sub": "client-1", "client_id": "client-1", "scope": scope,
                   "iat": int(now), "exp": int(now + lifetime), "jti": uuid.uuid4().hex}  # fmt: skip
        payload.update(claims)
        return jwt.encode(payload, key, algorithm=algorithm, headers={"kid": kid})


@contextmanager
def running_issuer() -> Iterator[Issuer]:
    issuer = Issuer("")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/.well-known/openid-configuration":
                body = {
                    "issuer": issuer.url,
                    "jwks_uri": f"{issuer.url}/jwks",
                    "token_endpoint": f"{issuer.url}/token",
                    "grant_types_supported": ["client_credentials"],
                }
            elif self.path == "/jwks":
                issuer.jwks_fetches += 1
                body = issuer.jwks()
            else:
                self.send_response(404)
                self.end_headers()
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    issuer.url = f"http://127.0.0.1:{server.server_address[1]}"
    issuer.rotate()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield issuer
    finally:
        server.shutdown()
        server.server_close()
