"""``IntrospectionVerifier`` against a real HTTP endpoint on loopback that answers what each test needs, including
what the real provider (tests/e2e/test_auth_introspection.py) never does: 5xx, oversized or malformed answers,
redirects, slowness. Plus the settings and ``serve`` checks of the introspection options."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from fhir_imaging.auth.introspection import MAX_ANSWER_BYTES, IntrospectionVerifier
from fhir_imaging.cli import build_parser, main, serve_setup_problem
from fhir_imaging.config import Settings, load_settings, to_environ
from fhir_imaging.fhir.outcome import ServiceUnavailable, Unauthorized

AUDIENCE = "http://testserver/baseR4"
SECRET = "s3cret with spaces/&"


@dataclass
class Reply:
    status: int = 200
    body: bytes = b'{"active": false}'
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    delay: float = 0.0
    chunked: bool = False


@dataclass
class Endpoint:
    url: str = ""
    replies: dict[str, Reply] = field(default_factory=dict)  # token → what to answer (else inactive)
    requests: list[tuple[dict[str, str], dict[str, list[str]]]] = field(default_factory=list)  # headers, form


@pytest.fixture(scope="module")
def endpoint() -> Iterator[Endpoint]:
    state = Endpoint()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = parse_qs(self.rfile.read(length).decode())
            state.requests.append((dict(self.headers), form))
            reply = state.replies.get(form.get("token", [""])[0], Reply())
            time.sleep(reply.delay)
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if reply.chunked:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for start in range(0, len(reply.body), 4096):
                    chunk = reply.body[start : start + 4096]
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
                return
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # the verifier hangs up on answers too large or too slow: that is what those tests check

    server = Server(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/introspect"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def verifier(endpoint: Endpoint) -> Iterator[IntrospectionVerifier]:
    endpoint.replies.clear()
    endpoint.requests.clear()
    made = IntrospectionVerifier(endpoint.url, "fhir server", SECRET, AUDIENCE, timeout=1.0)
    yield made
    made.close()


def _active(**claims: Any) -> Reply:
    answer = {"active": True, "client_id": "app", "scope": "system/*.rs", "exp": int(time.time()) + 300, **claims}
    return Reply(body=json.dumps(answer).encode())


def test_the_request_is_form_encoded_with_basic_client_authentication(
    endpoint: Endpoint, verifier: IntrospectionVerifier
) -> None:
    endpoint.replies["tok"] = _active()
    assert verifier.verify("tok").client_id == "app"
    headers, form = endpoint.requests[0]
    assert form == {"token": ["tok"], "token_type_hint": ["access_token"]}
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    scheme, _, credentials = headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    # RFC 6749 §2.3.1: id and secret form-urlencoded, then joined by ":" and base64-encoded.
    assert base64.b64decode(credentials).decode() == "fhir%20server:s3cret%20with%20spaces%2F%26"


def test_an_active_answer_is_remembered_until_exp(endpoint: Endpoint, verifier: IntrospectionVerifier) -> None:
    endpoint.replies["tok"] = _active(exp=int(time.time()) + 300)
    assert verifier.cached("tok") is None
    first = verifier.verify("tok")
    assert verifier.cached("tok") == first == verifier.verify("tok")
    assert len(endpoint.requests) == 1


def test_an_answer_without_exp_is_remembered_briefly(endpoint: Endpoint, verifier: IntrospectionVerifier) -> None:
    endpoint.replies["tok"] = Reply(body=b'{"active": true, "scope": "system/*.rs"}')
    before = time.time()
    principal = verifier.verify("tok")
    assert before + 59 <= principal.expires <= time.time() + 60
    assert verifier.cached("tok") == principal


def test_an_inactive_answer_is_not_remembered(endpoint: Endpoint, verifier: IntrospectionVerifier) -> None:
    for _ in range(2):
        with pytest.raises(Unauthorized, match="not active"):
            verifier.verify("revoked")
    assert len(endpoint.requests) == 2 and verifier.cached("revoked") is None


def test_a_refused_token_type_is_401(endpoint: Endpoint, verifier: IntrospectionVerifier) -> None:
    body = b'{"error": "unsupported_token_type", "error_description": "Structured JWT Tokens cannot be introspected"}'
    endpoint.replies["a.b.c"] = Reply(400, body)
    with pytest.raises(Unauthorized, match="does not introspect"):
        verifier.verify("a.b.c")


def test_a_token_too_long_is_refused_without_asking(endpoint: Endpoint, verifier: IntrospectionVerifier) -> None:
    with pytest.raises(Unauthorized, match="too long"):
        verifier.verify("x" * 20_000)
    assert endpoint.requests == []


@pytest.mark.parametrize(
    "reply",
    [
        Reply(500, b'{"error": "server_error"}'),
        Reply(502, b"<html>bad gateway</html>", {"Content-Type": "text/html"}),
        Reply(400, b'{"error": "invalid_request"}'),
        Reply(302, b"", {"Location": "http://127.0.0.1:1/elsewhere"}),
        Reply(200, b"not json"),
        Reply(200, b'["active", true]'),
        Reply(200, b'{"active": true, "pad": "' + b"x" * MAX_ANSWER_BYTES + b'"}'),
        Reply(200, b'{"active": true, "pad": "' + b"x" * MAX_ANSWER_BYTES + b'"}', chunked=True),
        Reply(200, b'{"active": false}', delay=1.5),  # past the 1 s timeout of the fixture
    ],
    ids=["500", "502-html", "400", "redirect", "not-json", "not-an-object", "too-large", "too-large-chunked", "slow"],
)
def test_an_endpoint_that_cannot_answer_is_503(
    endpoint: Endpoint, verifier: IntrospectionVerifier, reply: Reply
) -> None:
    endpoint.replies["tok"] = reply
    with pytest.raises(ServiceUnavailable) as failed:
        verifier.verify("tok")
    assert failed.value.status == 503 and failed.value.issues[0].code == "transient"


def test_an_unreachable_endpoint_is_503() -> None:
    unreachable = IntrospectionVerifier("http://127.0.0.1:1/introspect", "fhir", SECRET, AUDIENCE, timeout=1.0)
    with pytest.raises(ServiceUnavailable, match="cannot be reached"):
        unreachable.verify("tok")


def test_refused_server_credentials_are_503_and_logged_without_the_secret(
    endpoint: Endpoint, verifier: IntrospectionVerifier, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint.replies["tok"] = Reply(401, b'{"error": "invalid_client"}')
    with caplog.at_level(logging.WARNING, logger="fhir_imaging.auth"), pytest.raises(ServiceUnavailable):
        verifier.verify("tok")
    assert "FHIR_IMAGING_INTROSPECTION_SECRET" in caplog.text
    assert SECRET not in caplog.text and "s3cret" not in caplog.text


# -- settings and serve ----------------------------------------------------------------------------------------------


def test_the_secret_comes_from_the_environment_only() -> None:
    environ = {"FHIR_IMAGING_INTROSPECTION_SECRET": SECRET, "FHIR_IMAGING_AUTH_INTROSPECTION_URL": "http://x/i"}
    settings = load_settings({"introspection_secret": "from a flag"}, environ)
    assert settings.introspection_secret == SECRET
    assert SECRET not in repr(settings)
    assert load_settings(environ=to_environ(settings)) == settings
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--introspection-secret", "x"])


@pytest.mark.parametrize(
    ("settings", "refused"),
    [
        (Settings(host="0.0.0.0"), True),
        (Settings(host="0.0.0.0", auth_issuer="https://idp.example.org"), False),
        (Settings(host="0.0.0.0", auth_introspection_url="https://idp.example.org/introspect",
                  auth_introspection_client_id="fhir", introspection_secret=SECRET), False),
        (Settings(host="127.0.0.1"), False),
    ],
)  # fmt: skip
def test_introspection_counts_as_authorization_beyond_loopback(settings: Settings, refused: bool) -> None:
    problem = serve_setup_problem(settings)
    assert (problem is not None and "without authorization" in problem) is refused


@pytest.mark.parametrize(
    ("flags", "secret", "complaint"),
    [
        (["--auth-introspection-url", "http://127.0.0.1:1/i"], SECRET, "--auth-introspection-client-id"),
        (["--auth-introspection-url", "http://127.0.0.1:1/i", "--auth-introspection-client-id", "fhir"], None,
         "FHIR_IMAGING_INTROSPECTION_SECRET"),
        (["--auth-introspection-client-id", "fhir"], SECRET, "give both, or neither"),
    ],
)  # fmt: skip
def test_serve_refuses_incomplete_introspection_settings(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    flags: list[str],
    secret: str | None,
    complaint: str,
    tmp_path: Path,
) -> None:
    monkeypatch.delenv("FHIR_IMAGING_INTROSPECTION_SECRET", raising=False)
    if secret:
        monkeypatch.setenv("FHIR_IMAGING_INTROSPECTION_SECRET", secret)
    # Refused before logging is set up or the database is opened (one that cannot be: were the settings taken, the
    # test fails at once instead of serving).
    (tmp_path / "a-file").write_text("")
    assert main(["serve", *flags, "--database", f"sqlite:///{tmp_path / 'a-file' / 'x.db'}"]) == 2
    err = capsys.readouterr().err
    assert complaint in err and "cannot open the database" not in err


def test_settings_without_the_secret_are_refused_by_the_app() -> None:
    from fhir_imaging.app import token_verifier

    with pytest.raises(ValueError, match="FHIR_IMAGING_INTROSPECTION_SECRET"):
        token_verifier(Settings(auth_introspection_url="http://127.0.0.1:1/i", auth_introspection_client_id="x"))
