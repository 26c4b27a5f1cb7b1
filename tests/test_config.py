"""The one config model: minimal config works, unknown keys are named, secrets stay out of YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

from salesml.config import ConfigError, from_dict, load

ROOT = Path(__file__).resolve().parents[1]


def test_minimal_spec_config_loads_with_defaults() -> None:
    settings = load(ROOT / "configs" / "minimal.yaml")
    assert settings.sources.path == Path("/data/crm")
    assert settings.warehouse.url == "duckdb:///out/warehouse.duckdb"
    assert settings.validation.max_bad_share == 0.01
    assert settings.deals.decay_hours == 72.0
    assert settings.demand.bucket_hours == 4


def test_default_config_points_at_bundled_sample() -> None:
    settings = load(ROOT / "configs" / "default.yaml")
    assert settings.sources.path == Path("data/sample")


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'deals\.decay_hourz'"):
        from_dict({"sources": {"path": "x"}, "deals": {"decay_hourz": 10}})
    with pytest.raises(ConfigError, match=r"unknown config key 'colour'"):
        from_dict({"sources": {"path": "x"}, "colour": "red"})


def test_bad_value_names_key() -> None:
    with pytest.raises(ConfigError, match=r"validation\.max_bad_share"):
        from_dict({"sources": {"path": "x"}, "validation": {"max_bad_share": 2}})


def test_sources_need_exactly_one_of_path_or_url() -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        from_dict({"sources": {"path": "x", "url": "duckdb:///a.duckdb"}})


def test_unknown_timezone_is_an_error() -> None:
    with pytest.raises(ConfigError, match="Mars/Olympus"):
        from_dict({"sources": {"path": "x"}, "timezone": "Mars/Olympus"})


def test_literal_password_in_yaml_is_refused() -> None:
    with pytest.raises(ConfigError, match="literal password"):
        from_dict({"sources": {"path": "x"}, "warehouse": {"url": "postgresql://bob:hunter2@db/x"}})


def test_password_comes_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SALESML_PG_PASSWORD", "s3cret")
    settings = from_dict(
        {
            "sources": {"path": "x"},
            "warehouse": {"url": "postgresql://bob:${SALESML_PG_PASSWORD}@db/x"},
        }
    )
    assert settings.warehouse.url == "postgresql://bob:s3cret@db/x"
    shown = settings.to_yaml()
    assert "s3cret" not in shown
    assert "postgresql://bob:***@db/x" in shown


def test_missing_environment_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_NOT_SET", raising=False)
    with pytest.raises(ConfigError, match=r"NOPE_NOT_SET"):
        from_dict({"sources": {"url": "postgresql://bob:${NOPE_NOT_SET}@db/x"}})


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(bad)


def test_effective_config_round_trips() -> None:
    settings = load(ROOT / "configs" / "default.yaml")
    import yaml

    again = from_dict(yaml.safe_load(settings.to_yaml()))
    assert again == settings
