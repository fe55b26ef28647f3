"""The study browser's files at /app/: served from the package's web/ folder only, with a Content-Security-Policy
that allows this origin's scripts alone, and the page's settings (the viewer template) as JSON."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from dataclasses import replace
from fnmatch import fnmatch
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from fhir_imaging.api.browser import CONTENT_SECURITY_POLICY, load_web_files
from fhir_imaging.app import create_app
from fhir_imaging.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "fhir_imaging" / "web"
VIEWER = "https://viewer.example/viewer?StudyInstanceUIDs={study_uid}"


@pytest.fixture
def sqlite_client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(database=f"sqlite:///{tmp_path / 'browser.db'}", viewer_url=VIEWER)
    with TestClient(create_app(settings), follow_redirects=False) as client:
        yield client


def test_root_and_app_redirect_to_the_page(sqlite_client: TestClient) -> None:
    for path in ("/", "/app"):
        answer = sqlite_client.get(path)
        assert answer.status_code == 302
        assert answer.headers["location"] == "/app/"


def test_page_carries_a_content_security_policy_without_inline_scripts(sqlite_client: TestClient) -> None:
    answer = sqlite_client.get("/app/")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    policy = answer.headers["content-security-policy"]
    assert policy == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "default-src 'none'" in policy
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["x-frame-options"] == "DENY"
    # no inline script and no inline style attribute in the page: the policy would refuse them
    assert not re.search(r"<script(?![^>]*\bsrc=)", answer.text)
    assert " style=" not in answer.text and "<style" not in answer.text


def test_scripts_and_styles_are_served_with_their_types(sqlite_client: TestClient) -> None:
    script = sqlite_client.get("/app/js/main.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert sqlite_client.get("/app/app.css").headers["content-type"].startswith("text/css")
    assert sqlite_client.get("/app/sop-classes.json").json()["classes"]["1.2.840.10008.5.1.4.1.1.2"] == (
        "CT Image Storage"
    )


@pytest.mark.parametrize(
    "path",
    [
        "/app/../pyproject.toml",
        "/app/%2e%2e/app.py",
        "/app/..%2fapp.py",
        "/app/js/../../app.py",
        "/app/%2e%2e/%2e%2e/README.md",
        "/app//etc/passwd",
        "/app/missing.js",
        "/app/js/",
        "/app/index.html/",
    ],
)
def test_nothing_outside_the_web_folder_is_served(sqlite_client: TestClient, path: str) -> None:
    answer = sqlite_client.get(path)
    assert answer.status_code in (302, 404), path
    assert "import" not in answer.text and "[project]" not in answer.text


def test_no_script_builds_markup_from_strings() -> None:
    for script in (WEB / "js").glob("*.js"):
        text = script.read_text()
        for banned in (".innerHTML", ".outerHTML", "insertAdjacentHTML(", "document.write(", "eval(", "new Function("):
            assert banned not in text, (script.name, banned)


def test_config_names_the_api_and_the_viewer_template(sqlite_client: TestClient, tmp_path: Path) -> None:
    assert sqlite_client.get("/app/config.json").json() == {"fhirBase": "/baseR4", "viewerUrl": VIEWER, "signIn": None}
    settings = Settings(database=f"sqlite:///{tmp_path / 'plain.db'}")
    with TestClient(create_app(replace(settings, viewer_url=None))) as plain:
        assert plain.get("/app/config.json").json() == {"fhirBase": "/baseR4", "viewerUrl": None, "signIn": None}
    # A client id alone signs nobody in: there is no provider to sign in at.
    with TestClient(create_app(replace(settings, app_client_id="study-browser"))) as no_issuer:
        assert no_issuer.get("/app/config.json").json()["signIn"] is None


def test_with_a_client_id_the_page_signs_in_at_the_issuer(tmp_path: Path) -> None:
    issuer = "http://127.0.0.1:9/realms/imaging"  # nothing listens: the page's policy still names the issuer
    settings = Settings(
        database=f"sqlite:///{tmp_path / 'signin.db'}",
        auth_issuer=issuer,
        auth_audience="https://fhir.example.org/baseR4",
        app_client_id="study-browser",
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/app/config.json").json()["signIn"] == {
            "clientId": "study-browser",
            "scope": "openid fhirUser user/*.rs",
            "audience": "https://fhir.example.org/baseR4",
        }
        policy = client.get("/app/").headers["content-security-policy"]
        assert "connect-src 'self' http://127.0.0.1:9;" in policy
        assert client.get("/app/js/auth.js").headers["content-security-policy"] == CONTENT_SECURITY_POLICY


@pytest.mark.parametrize(
    "template", ["javascript:alert(1)//{study_uid}", "viewer/{study_uid}", "https://viewer.example/no-placeholder"]
)
def test_viewer_template_must_be_an_http_address_with_the_placeholder(template: str) -> None:
    with pytest.raises(ValueError, match="FHIR_IMAGING_VIEWER_URL"):
        load_settings(environ={"FHIR_IMAGING_VIEWER_URL": template})
    assert load_settings(environ={"FHIR_IMAGING_VIEWER_URL": VIEWER}).viewer_url == VIEWER


def test_every_web_file_is_package_data_and_is_served() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    globs = patterns["fhir_imaging"]
    served = load_web_files()
    for path in WEB.rglob("*"):
        if path.is_file():
            relative = path.relative_to(ROOT / "fhir_imaging").as_posix()
            assert any(fnmatch(relative, glob) for glob in globs), f"{relative} is not package data"
            assert path.relative_to(WEB).as_posix() in served, relative
