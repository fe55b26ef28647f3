"""The study browser on a server that requires access tokens: SMART standalone launch (authorization code with PKCE)
against a real OpenID provider (npm ``oidc-provider``, tests/e2e/oidc_provider.py), driven in Debian's chromium by
Playwright. The user signs in at the provider's login form and allows the app; the page then reads the worklist with
the provider's access token, which the server checks as any other."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from tests.e2e.oidc_provider import Provider, start_provider
from tests.e2e.server import ServerProcess, free_port

playwright_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.e2e
CHROMIUM = Path("/usr/bin/chromium")
USER = {"login": "alice", "password": "wonderland", "sub": "alice", "name": "Alice Liddell",
        "fhirUser": "Practitioner/alice"}  # fmt: skip
SCOPE = "openid fhirUser user/*.rs"


@dataclass(frozen=True)
class Site:
    provider: Provider
    server: ServerProcess
    app: str
    studies: list[str]


def _loader_token(provider: Provider, base: str) -> str:
    return provider.token("loader", "loader-secret", "system/*.cruds", base)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("browser-signin")
    port = free_port()
    app = f"http://127.0.0.1:{port}/app/"
    base = f"http://127.0.0.1:{port}/baseR4"
    clients = [
        {"client_id": "loader", "client_secret": "loader-secret", "scope": "system/*.cruds"},
        {
            "client_id": "study-browser",
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "redirect_uris": [app],
            "scope": SCOPE,
        },
    ]
    with start_provider(clients, users=[USER]) as provider:
        extra = ("--auth-issuer", provider.issuer, "--app-client-id", "study-browser")
        server = ServerProcess(f"sqlite:///{folder / 'signin.db'}", port=port, extra=extra, log=folder / "server.log")
        try:
            headers = {"Authorization": f"Bearer {_loader_token(provider, base)}"}
            studies = []
            for number in range(3):
                study = {
                    "resourceType": "ImagingStudy",
                    "id": f"signin-{number}",
                    "status": "available",
                    "subject": {"reference": "Patient/signin-p"},
                    "started": f"2025-0{number + 1}-10T09:00:00Z",
                    "description": f"Sign-in study {number}",
                }
                answer = httpx.put(f"{base}/ImagingStudy/{study['id']}", json=study, headers=headers)
                assert answer.status_code in (200, 201), answer.text
                studies.append(study["id"])
            yield Site(provider, server, app, studies)
        finally:
            server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing (scripts/test installs Debian's chromium)")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-GB")
    # Only loopback is ever reached: anything else would be a fault of the page or the provider's pages.
    context.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/]).*"), lambda route: route.abort())
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert errors == []


def _sign_in_at_provider(page: Any, site: Site) -> None:
    page.wait_for_url(f"{site.provider.issuer}/interaction/**")
    page.fill('input[name="login"]', USER["login"])
    page.fill('input[name="password"]', USER["password"])
    page.click('button:has-text("Sign in")')
    page.click('button:has-text("Allow")')


def _rows(page: Any) -> list[str]:
    page.wait_for_selector("table.worklist tbody tr.row")
    ids: list[str] = page.locator("table.worklist tbody tr.row").evaluate_all("rows => rows.map(r => r.dataset.id)")
    return ids


def test_the_smart_configuration_offers_the_browser_sign_in(site: Site) -> None:
    smart = httpx.get(f"{site.server.base}/.well-known/smart-configuration").json()
    assert smart["authorization_endpoint"].startswith(site.provider.issuer)
    assert smart["token_endpoint"].startswith(site.provider.issuer)
    assert smart["code_challenge_methods_supported"] == ["S256"]
    assert {"launch-standalone", "client-public"} <= set(smart["capabilities"])
    config = httpx.get(site.app + "config.json").json()
    assert config["signIn"] == {"clientId": "study-browser", "scope": SCOPE, "audience": site.server.base}
    policy = httpx.get(site.app).headers["content-security-policy"]
    assert f"connect-src 'self' {site.provider.issuer};" in policy


def test_sign_in_reads_the_worklist_with_the_token_then_sign_out(page: Any, site: Site) -> None:
    authorize: list[str] = []
    fhir_headers: list[dict[str, str]] = []
    page.on("request", lambda request: authorize.append(request.url) if "/auth?" in request.url else None)
    page.on(
        "request",
        lambda request: fhir_headers.append(request.headers) if "/baseR4/ImagingStudy" in request.url else None,
    )
    page.goto(site.app + "#/?status=available")
    _sign_in_at_provider(page, site)
    page.wait_for_url(site.app + "#/?status=available")
    assert sorted(_rows(page)) == sorted(site.studies)
    assert page.locator("#session").inner_text().startswith("Signed in as Alice Liddell")

    # The authorization request: a SMART standalone launch with PKCE (S256).
    query = {name: values[0] for name, values in parse_qs(urlsplit(authorize[0]).query).items()}
    assert query["response_type"] == "code" and query["client_id"] == "study-browser"
    assert query["redirect_uri"] == site.app and query["scope"] == SCOPE
    assert query["aud"] == site.server.base and query["code_challenge_method"] == "S256"
    assert len(query["state"]) >= 32 and re.fullmatch(r"[A-Za-z0-9_-]{43}", query["code_challenge"])

    # Every FHIR request carried the token; it lives in sessionStorage only, and the address bar kept no code.
    assert fhir_headers and all(headers["authorization"].startswith("Bearer ") for headers in fhir_headers)
    token = fhir_headers[0]["authorization"].removeprefix("Bearer ")
    assert "code=" not in page.url and "state=" not in page.url
    assert page.evaluate("() => window.localStorage.length") == 0
    assert token in page.evaluate("() => sessionStorage.getItem('fhir-imaging.session')")
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["aud"] == site.server.base and claims["sub"] == "alice" and claims["scope"] == "user/*.rs"

    # A study page works too, with the same token.
    page.goto(f"{site.app}#/study/{site.studies[0]}")
    page.wait_for_selector("h1:has-text('Sign-in study 0'), h1")
    assert page.locator(".error").count() == 0

    page.click('#session button:has-text("Sign out")')
    page.wait_for_selector("h1:has-text('Signed out')")
    assert page.evaluate("() => sessionStorage.getItem('fhir-imaging.session')") is None
    assert page.locator("#session").is_hidden()
    page.reload()  # no silent way back in: signed out stays signed out in this tab
    page.wait_for_selector("h1:has-text('Signed out')")
    assert not page.url.startswith(site.provider.issuer)


def _code_of_another_sign_in(site: Site) -> tuple[str, str]:
    """(code, state) of a sign-in of the same user and client done elsewhere (over HTTP, as an attacker with an
    account would), the code still unused: what a forged answer would carry."""
    state = "elsewhere-" + hashlib.sha256(b"attacker").hexdigest()
    verifier = "v" * 64
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    params = {"response_type": "code", "client_id": "study-browser", "redirect_uri": site.app, "scope": SCOPE,
              "state": state, "resource": site.server.base, "code_challenge": challenge,
              "code_challenge_method": "S256"}  # fmt: skip
    with httpx.Client(follow_redirects=False, timeout=10) as client:
        answer = client.get(f"{site.provider.issuer}/auth", params=params)
        for _ in range(10):
            location = answer.headers.get("location", "")
            if location.startswith(site.app):
                query = parse_qs(urlsplit(location).query)
                return query["code"][0], query["state"][0]
            if answer.is_redirect:
                answer = client.get(httpx.URL(str(answer.url)).join(location))
            elif "Sign in" in answer.text:
                answer = client.post(str(answer.url), data={"login": USER["login"], "password": USER["password"]})
            else:
                answer = client.post(str(answer.url))
    raise AssertionError(f"no code: {answer.status_code} {answer.text[:200]}")


def test_a_tampered_state_is_refused(page: Any, site: Site) -> None:
    code, state = _code_of_another_sign_in(site)
    token_requests: list[str] = []
    page.on("request", lambda request: token_requests.append(request.url) if request.method == "POST" else None)
    page.goto(site.app)  # this tab starts a sign-in of its own: its state waits in sessionStorage
    page.wait_for_url(f"{site.provider.issuer}/interaction/**")
    page.goto(f"{site.app}?{urlencode({'code': code, 'state': state})}")
    page.wait_for_selector("h1:has-text('Sign-in failed')")
    assert "state differs" in page.locator("[role=alert]").inner_text()
    assert token_requests == []  # the code was never exchanged
    assert "code=" not in page.url
    assert page.evaluate("() => sessionStorage.getItem('fhir-imaging.session')") is None
    # The same answer in a tab that started no sign-in is refused too.
    page.goto(f"{site.app}?{urlencode({'code': code, 'state': state})}")
    page.wait_for_selector("h1:has-text('Sign-in failed')")
    assert "started no sign-in" in page.locator("[role=alert]").inner_text()
    assert token_requests == []


def test_an_expired_or_revoked_token_sends_back_to_sign_in(page: Any, site: Site) -> None:
    page.goto(site.app)
    _sign_in_at_provider(page, site)
    _rows(page)
    # The server no longer accepts the token (as after expiry): a 401 starts a new sign-in, which the provider
    # grants from its session, and the page comes back to the view it was on.
    page.evaluate(
        """() => {
            const session = JSON.parse(sessionStorage.getItem('fhir-imaging.session'));
            session.accessToken = 'not-a-token'; session.obtainedAt = 0;
            sessionStorage.setItem('fhir-imaging.session', JSON.stringify(session));
        }"""
    )
    with page.expect_request(lambda request: request.url.startswith(site.provider.issuer + "/auth?")):
        page.goto(site.app + "#/overview")
    page.wait_for_url(site.app + "#/overview")
    page.wait_for_selector("h1:has-text('Overview')")
    assert page.locator("#session").inner_text().startswith("Signed in as Alice Liddell")
