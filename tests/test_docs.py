"""The README documents every setting and every interaction the CapabilityStatement offers."""

from __future__ import annotations

from pathlib import Path

from fhir_imaging.api.routes import ROUTES
from fhir_imaging.cli import build_parser
from fhir_imaging.config import SETTINGS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_lists_every_setting_with_its_flag_and_variable() -> None:
    for setting in SETTINGS:
        assert f"`{setting.env}`" in README, setting.env
        if setting.secret:  # environment only: a flag would show in ps
            assert f"`{setting.flag}`" not in README, setting.flag
        else:
            assert f"`{setting.flag}`" in README, setting.flag


def test_serve_help_explains_every_setting() -> None:
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    text = serve.format_help()
    for setting in SETTINGS:
        assert setting.env in text, setting.env
        assert (setting.flag in text) is not setting.secret, setting.flag


def test_readme_names_every_interaction() -> None:
    for _, _, _, codes in ROUTES:
        for code in (codes or "").split():
            assert code.split("-")[0] in README, code
