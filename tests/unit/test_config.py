from __future__ import annotations

import pytest

from fhir_imaging.config import SETTINGS, Settings, load_settings, to_environ


def test_defaults_match_the_settings_table() -> None:
    assert load_settings(environ={}) == Settings()
    for setting in SETTINGS:
        assert getattr(Settings(), setting.name) == setting.default


def test_environment_then_flag_precedence() -> None:
    environ = {"FHIR_IMAGING_PORT": "9000", "FHIR_IMAGING_DATABASE": "sqlite:///env.db"}
    settings = load_settings({"port": 9100}, environ)
    assert settings.port == 9100
    assert settings.database == "sqlite:///env.db"


def test_sizes_and_choices_are_checked() -> None:
    assert load_settings(environ={"FHIR_IMAGING_MAX_BODY_SIZE": "2MiB"}).max_body_size == 2 * 1024**2
    with pytest.raises(ValueError, match="FHIR_IMAGING_PORT"):
        load_settings(environ={"FHIR_IMAGING_PORT": "eighty"})
    with pytest.raises(ValueError, match="sqlite-synchronous"):
        load_settings(environ={"FHIR_IMAGING_SQLITE_SYNCHRONOUS": "off"})


def test_to_environ_round_trips() -> None:
    settings = Settings(port=1234, public_url="https://fhir.example.org/baseR4", max_body_size=99)
    assert load_settings(environ=to_environ(settings)) == settings


def test_a_repeated_setting_takes_each_flag_or_the_variable_split_on_spaces() -> None:
    assert Settings().database_replica == ()
    urls = ("postgresql://r1/fhir", "postgresql://a:1,b:2/fhir")  # a libpq URL may hold commas (several hosts)
    assert load_settings(environ={"FHIR_IMAGING_DATABASE_REPLICA": " ".join(urls)}).database_replica == urls
    assert load_settings({"database_replica": ["postgresql://r3/fhir"]}, {}).database_replica == (
        "postgresql://r3/fhir",
    )
    settings = Settings(database_replica=urls, replica_max_lag=2.5)
    assert load_settings(environ=to_environ(settings)) == settings


def test_serve_takes_database_replica_several_times() -> None:
    from fhir_imaging.cli import build_parser

    args = build_parser().parse_args(
        ["serve", "--database-replica", "postgresql://r1/x", "--database-replica", "postgresql://r2/x"]
    )
    assert args.database_replica == ["postgresql://r1/x", "postgresql://r2/x"]
