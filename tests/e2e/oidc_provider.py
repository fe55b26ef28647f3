"""Start a real OpenID provider (the npm package ``oidc-provider``, run by ``tests/e2e/oidc/provider.mjs``) on a free
loopback port, for end-to-end tests of SMART-on-FHIR authorization.

    app = {"client_id": "app", "client_secret": "secret", "scope": "system/*.rs", "patient": "p1"}
    with start_provider([app]) as op:
        token = op.token("app", "secret", "system/*.rs", "http://127.0.0.1:8080/baseR4")

- ``clients``: oidc-provider client metadata, one dict per client: ``client_id``, ``client_secret`` (sent with
  client_secret_basic), ``scope`` (every scope the client may ask for, space-separated; asking for another is
  refused with ``invalid_scope``), optionally ``patient`` and ``fhirUser`` (copied as claims of the same names into
  each of its access tokens) and ``access_token_alg`` (``"RS256"``, the default, or ``"ES256"``). Other standard
  client metadata (e.g. ``token_endpoint_auth_method`` with ``jwks``) is passed through to oidc-provider.
  ``access_token_format``: ``"jwt"`` (the default) or ``"opaque"`` (random strings, for token introspection).
- Tokens: grant ``client_credentials`` with ``resource`` (RFC 8707) required. The access token is a JWT (header
  ``typ`` ``at+jwt``, ``kid`` of a key in the JWKS) with ``iss`` = ``issuer``, ``aud`` = exactly the ``resource``
  string given, ``sub`` = ``client_id`` = the client id, ``scope`` = the requested scopes, ``iat``, ``exp`` (``iat`` +
  ``token_ttl``, 300 s by default), ``jti``, and ``patient``/``fhirUser`` for a client that has them. A client with
  ``access_token_format: "opaque"`` gets an opaque token with the same audience, scope, lifetime and claims instead.
- Introspection (RFC 7662, ``introspection_endpoint``): any client that authenticates with its secret (e.g. one
  configured for the FHIR server) may introspect any opaque token; the answer carries ``active``, ``client_id``,
  ``exp``, ``iat``, ``iss``, ``aud``, ``scope``, ``token_type`` (``Bearer``) and ``patient``/``fhirUser``. JWTs are
  not introspected (400 ``unsupported_token_type``). ``revoke()`` revokes an opaque token (RFC 7009) as the client
  it was issued to; introspection then answers ``{"active": false}``.
- Sign-in (authorization code with PKCE): a public client (``token_endpoint_auth_method: "none"``,
  ``grant_types: ["authorization_code"]``, ``response_types: ["code"]``, ``redirect_uris``, ``scope`` e.g.
  ``"openid fhirUser user/*.rs"``) and ``users`` (``login``, ``password``, ``sub``, ``name``, ``fhirUser``): the
  provider's login form (fields ``login``, ``password``, button "Sign in") and consent page (button "Allow") are plain
  pages of its own; the access token is a JWT for the ``resource`` the requests name, ``sub`` the user's, ``scope``
  the SMART scopes asked for; the ID token carries ``name`` and ``fhirUser``.
- Keys: an RS256 and an ES256 signing key made at start, each with a random kid. ``rotate_keys()`` replaces both with
  new keys and new kids; the JWKS then lists only the new keys (``keep_old=True``: the old ones stay listed, unused).

``npm ci`` installs ``tests/e2e/oidc/node_modules`` (ignored by git) when it is missing or older than the lock file.
Nothing here skips: a missing ``node`` or ``npm`` or a provider that does not start raises ``ProviderError``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

OIDC_DIR = Path(__file__).resolve().with_name("oidc")
NODE_MODULES = OIDC_DIR / "node_modules"
_STAMP = NODE_MODULES / ".fhir-imaging-installed"  # the hash of package.json + package-lock.json npm ci installed
_NPM_TIMEOUT = 600.0


class ProviderError(RuntimeError):
    """The provider could not be installed or started, or it refused a request."""


class ProviderNotReady(ProviderError):
    """The provider's process runs but has not said it listens within the time allowed."""


def _lock_hash() -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((OIDC_DIR / name).read_bytes())
    return digest.hexdigest()


def ensure_node_modules() -> None:
    """Run ``npm ci`` in tests/e2e/oidc unless node_modules already holds what package-lock.json pins.

    npm's own download cache (~/.npm) is used with ``--prefer-offline``, so a second install needs no network.
    Concurrent callers (several pytest processes) are serialised by a lock file in the temporary directory.
    """
    wanted = _lock_hash()
    if _STAMP.is_file() and _STAMP.read_text().strip() == wanted:
        return
    npm = shutil.which("npm")
    if npm is None:
        raise ProviderError("npm is not installed (scripts/test installs the Debian packages nodejs and npm)")
    lock_name = "fhir-imaging-npm-" + hashlib.sha256(str(OIDC_DIR).encode()).hexdigest()[:16] + ".lock"
    with open(Path(tempfile.gettempdir()) / lock_name, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _STAMP.is_file() and _STAMP.read_text().strip() == wanted:
            return
        command = [npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"]
        try:
            done = subprocess.run(command, cwd=OIDC_DIR, capture_output=True, text=True, timeout=_NPM_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise ProviderError(f"{' '.join(command)} did not finish in {_NPM_TIMEOUT:.0f} s") from None
        if done.returncode != 0:
            raise ProviderError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        _STAMP.write_text(wanted + "\n")


class Provider:
    """One running provider process. Use it as a context manager (or call ``stop()``)."""

    issuer: str
    port: int
    token_endpoint: str
    jwks_uri: str
    introspection_endpoint: str
    revocation_endpoint: str
    kids: dict[str, str]  # the signing key ids in use, by algorithm ("RS256", "ES256")

    def __init__(
        self,
        clients: list[dict[str, Any]],
        *,
        users: list[dict[str, str]] | None = None,
        token_ttl: int = 300,
        timeout: float = 20.0,
    ) -> None:
        ensure_node_modules()
        node = shutil.which("node")
        if node is None:
            raise ProviderError("node is not installed (scripts/test installs the Debian packages nodejs and npm)")
        self._workdir = Path(tempfile.mkdtemp(prefix="fhir-imaging-oidc-"))
        clients_path = self._workdir / "clients.json"
        clients_path.write_text(json.dumps(clients))
        users_path = self._workdir / "users.json"
        users_path.write_text(json.dumps(users or []))
        self.log_path = self._workdir / "provider.log"
        command = [node, str(OIDC_DIR / "provider.mjs"), "--port", "0", "--clients", str(clients_path)]
        command += ["--users", str(users_path)]
        command += ["--token-ttl", str(token_ttl)]
        with open(self.log_path, "wb") as log:
            # Its own process group, so that stop() ends node and anything it started.
            self.process = subprocess.Popen(
                command, cwd=OIDC_DIR, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        try:
            ready = self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        self.issuer = ready["issuer"]
        self.port = ready["port"]
        self.token_endpoint = ready["token_endpoint"]
        self.jwks_uri = ready["jwks_uri"]
        self.introspection_endpoint = ready["introspection_endpoint"]
        self.revocation_endpoint = ready["revocation_endpoint"]
        self.kids = ready["kids"]
        self._http = httpx.Client(timeout=10.0)

    def _wait_ready(self, timeout: float) -> dict[str, Any]:
        """The JSON line the provider prints once it listens (it may print notices before it)."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log_path.read_text(errors="replace").splitlines():
                if line.startswith("{") and '"ready"' in line:
                    ready: dict[str, Any] = json.loads(line)
                    return ready
            if self.process.poll() is not None:
                raise ProviderError(f"the OpenID provider exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise ProviderNotReady(f"the OpenID provider was not ready within {timeout:.0f} s:\n{self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        """What the provider printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def discovery(self) -> dict[str, Any]:
        """The OpenID configuration document (``/.well-known/openid-configuration``)."""
        return self._get_json(f"{self.issuer}/.well-known/openid-configuration")

    def jwks(self) -> dict[str, Any]:
        """The published JSON Web Key Set (public keys only)."""
        return self._get_json(self.jwks_uri)

    def token_response(
        self, client_id: str, client_secret: str, scope: str | None, resource: str | None
    ) -> httpx.Response:
        """The raw answer of the token endpoint to a client_credentials request (for tests of refusals too)."""
        data = {"grant_type": "client_credentials"}
        if scope is not None:
            data["scope"] = scope
        if resource is not None:
            data["resource"] = resource
        # client_secret_basic: id and secret are form-urlencoded before Basic encoding (RFC 6749 §2.3.1).
        auth = (quote(client_id, safe=""), quote(client_secret, safe=""))
        return self._http.post(self.token_endpoint, data=data, auth=auth)

    def token(self, client_id: str, client_secret: str, scope: str, resource: str) -> str:
        """A client_credentials access token (a JWT whose ``aud`` is ``resource``); ProviderError when refused."""
        response = self.token_response(client_id, client_secret, scope, resource)
        if response.status_code != 200:
            raise ProviderError(f"token request refused ({response.status_code}): {response.text}")
        access_token: str = response.json()["access_token"]
        return access_token

    def revoke(self, client_id: str, client_secret: str, token: str) -> None:
        """Revoke an opaque access token of ``client_id`` (RFC 7009); ProviderError when refused."""
        auth = (quote(client_id, safe=""), quote(client_secret, safe=""))
        response = self._http.post(self.revocation_endpoint, data={"token": token}, auth=auth)
        if response.status_code != 200:
            raise ProviderError(f"revocation refused ({response.status_code}): {response.text}")

    def rotate_keys(self, *, keep_old: bool = False) -> dict[str, str]:
        """New RS256 and ES256 signing keys with new kids; returns the new kids by algorithm.

        The JWKS lists only the new keys, unless ``keep_old``: then the previous keys stay listed (not used to sign).
        """
        url = f"{self.issuer}/admin/rotate" + ("?keep_old=1" if keep_old else "")
        response = self._http.post(url)
        response.raise_for_status()
        kids: dict[str, str] = response.json()["kids"]
        self.kids = kids
        return kids

    def _get_json(self, url: str) -> dict[str, Any]:
        response = self._http.get(url)
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document

    def stop(self) -> None:
        """End the provider's process group (SIGTERM, then SIGKILL after 5 s) and remove its temporary files."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        http = getattr(self, "_http", None)
        if http is not None:
            http.close()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> Provider:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def start_provider(
    clients: list[dict[str, Any]],
    *,
    users: list[dict[str, str]] | None = None,
    token_ttl: int = 300,
    timeout: float = 20.0,
) -> Provider:
    """Install (if needed) and start the provider; returns once it answers. Use as ``with start_provider(...) as op:``.

    ``users``: who may sign in at its login form (authorization code flow). ``timeout`` bounds the wait for
    readiness (not the first ``npm ci``).
    """
    try:
        return Provider(clients, users=users, token_ttl=token_ttl, timeout=timeout)
    except ProviderNotReady:
        # Once in CI node printed its runtime warning and then nothing for 20 s (the other starts of that run took
        # under a second): a start that hangs is stopped and made again, once.
        return Provider(clients, users=users, token_ttl=token_ttl, timeout=timeout)
