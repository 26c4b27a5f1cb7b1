"""The one config model: minimal config works, unknown keys are named, secrets stay out of YAML."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from salesml.config import (
    MAX_CONFIG_BYTES,
    MAX_CONFIG_VALUES,
    ConfigError,
    Settings,
    from_dict,
    load,
)
from salesml.secrets import redact

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


# --- issue 11, item 4: passwords -------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "url"),
    [
        ("sources.url", "postgresql://app:hun/ter2@db/sales"),
        ("sources.url", "postgresql://:hunter2@db/sales"),
        ("sources.url", "postgresql://app@db/sales?password=hunter2"),
        ("sources.url", "postgresql://app@db/sales?sslmode=require&PassWord=hunter2"),
        ("sources.url", "postgresql://app:p@ss:word@db/sales"),
        ("sources.url", "postgresql://app:${H1_SET}x@db/sales"),
        ("warehouse.url", "postgresql+psycopg://app:pw%40x@db/sales"),
        ("mlflow.tracking_uri", "http://user:tok3n@mlflow:5000/"),
    ],
)
def test_literal_password_in_any_form_is_refused(
    key: str, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("H1_SET", "x")
    section, name = key.split(".")
    raw: dict[str, Any] = {"sources": {"path": "x"}, section: {name: url}}
    with pytest.raises(ConfigError, match="literal password") as err:
        from_dict(raw)
    message = str(err.value)
    assert f"'{key}'" in message and "${VAR}" in message and "PGPASSWORD" in message
    assert "\n" not in message
    assert "hunter2" not in message and "p@ss" not in message


def _show(url: str) -> tuple[Settings, str]:
    settings = from_dict({"sources": {"url": url}})
    return settings, settings.to_yaml()


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("postgresql://app:${H1_PGPW}@db/sales", "se/cret-a"),
        ("postgresql://app@db/sales?sslmode=require&password=${H1_PGPW}", "se/cret-b"),
        ("postgresql://app:${H1_PGPW}@db/sales", "p@ss:word-c"),
        ("postgresql://app:${H1_PGPW}@db/sales", "p?ss#w&rd=d"),
    ],
)
def test_env_password_is_masked_and_encoded(
    url: str, secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11: `${PGPW}` holding se/cret was printed by config show; p@ss:word half-masked."""
    from sqlalchemy.engine.url import make_url

    monkeypatch.setenv("H1_PGPW", secret)
    settings, shown = _show(url)
    parsed = make_url(settings.sources.url)  # the URL stays readable: the password is encoded
    assert secret in (parsed.password, parsed.query.get("password"))
    assert parsed.host == "db" and parsed.database == "sales"
    assert secret not in shown and quote(secret, safe="") not in shown
    assert "***" in shown and "db/sales" in shown
    assert secret not in redact(f"boom: {secret} in {settings.sources.url}")


def test_password_brought_in_by_a_whole_url_variable_is_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("H1_DATABASE_URL", "postgresql://app:wh0le-secret@db/sales")
    settings, shown = _show("${H1_DATABASE_URL}")
    assert settings.sources.url == "postgresql://app:wh0le-secret@db/sales"
    assert "wh0le-secret" not in shown
    assert redact("the server rejected wh0le-secret") == "the server rejected ***"


def test_env_values_outside_password_positions_are_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("H1_PGHOST", "db-primary")
    monkeypatch.setenv("H1_PGPW", "pw-elsewhere")
    _, shown = _show("postgresql://app:${H1_PGPW}@${H1_PGHOST}/sales")
    assert "postgresql://app:***@db-primary/sales" in shown


def test_config_show_masks_env_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from salesml.cli import app

    monkeypatch.setenv("H1_PGPW", "se/cret-cli")
    config = tmp_path / "c.yaml"
    config.write_text(
        'sources: {url: "postgresql://app:${H1_PGPW}@db/sales?password=${H1_PGPW}"}\n'
    )
    result = CliRunner().invoke(app, ["config", "show", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "url: postgresql://app:***@db/sales?password=***" in result.output
    assert "se/cret-cli" not in result.output and "se%2Fcret-cli" not in result.output


# --- issue 11, item 4: YAML loaded safely ----------------------------------------------------


def _write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "salesml.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _one_line_error(path: Path) -> str:
    with pytest.raises(ConfigError) as err:
        load(path)
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_alias_bomb_fails_fast(tmp_path: Path) -> None:
    """Issue 11: an alias bomb under deals.custom_features ran > 60 s and 1.6 GB."""
    levels = ["&l0 [" + ",".join(["lol"] * 9) + "]"]
    levels += [f"&l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 10)]
    path = _write(
        tmp_path, "sources: {path: x}\ndeals:\n  custom_features: [" + ",".join(levels) + "]\n"
    )
    started = time.perf_counter()
    message = _one_line_error(path)
    assert time.perf_counter() - started < 0.5
    assert "deals.custom_features" in message and f"{MAX_CONFIG_VALUES}" in message


def test_self_referencing_alias_is_refused(tmp_path: Path) -> None:
    message = _one_line_error(_write(tmp_path, "sources: {path: x}\ndeals: &d {top_k: *d}\n"))
    assert "'deals.top_k'" in message and "itself" in message


def test_a_few_anchors_still_work(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "sources: {path: x}\n"
        "deals:\n  stage_order: &stages [a, b]\n"
        "  rules: {stage_limit_days: {a: 3, b: 4}}\n"
        "demand: {known_signals: *stages}\n",
    )
    settings = load(path)
    assert settings.deals.stage_order == ["a", "b"] == settings.demand.known_signals


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "sources: {path: x}\ndeals:\n  decay_hours: 10\n  top_k: 3\n  decay_hours: 20\n",
            "key 'deals.decay_hours' appears twice (lines 3 and 5)",
        ),
        ("sources: {path: x}\ntimezone: UTC\nsources: {path: y}\n", "key 'sources' appears twice"),
        ("sources: {path: x, path: y}\n", "key 'sources.path' appears twice (on line 1)"),
    ],
)
def test_duplicate_key_is_named_with_its_lines(tmp_path: Path, text: str, expected: str) -> None:
    """Issue 11: duplicate YAML keys, last wins."""
    assert expected in _one_line_error(_write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", "is empty"), ("  \n\n", "is empty"), ("# only a comment\n", "holds no settings")],
)
def test_empty_config_is_an_error(tmp_path: Path, text: str, expected: str) -> None:
    """Issue 11: an empty config file was accepted."""
    message = _one_line_error(_write(tmp_path, text))
    assert expected in message and "configs/minimal.yaml" in message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (bytes(range(256)) * 4, "is binary"),
        (
            'sources: {path: "caf\xe9"}\n'.encode("latin-1"),
            "not UTF-8 text (byte 0xe9 at offset 20)",
        ),
        (b"\x89PNG\r\n\x1a\n" + bytes(range(1, 255)), "not UTF-8"),
        (
            b"sources: {path: x}\ntimezone: \x07\n",
            "unacceptable character #x0007 on line 2",
        ),
    ],
)
def test_binary_or_non_utf8_config_is_one_line(tmp_path: Path, data: bytes, expected: str) -> None:
    """Issue 11: a binary config file gave a traceback."""
    assert expected in _one_line_error(_write(tmp_path, data))


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    assert load(_write(tmp_path, "\ufeffsources: {path: x}\n".encode())).sources.path == Path("x")


def test_config_file_size_is_limited(tmp_path: Path) -> None:
    text = "sources: {path: x}\n" + "# padding\n" * (MAX_CONFIG_BYTES // 10)
    assert "larger than 1 MiB" in _one_line_error(_write(tmp_path, text))


@pytest.mark.parametrize("depth", [40, 1200])
def test_deep_nesting_is_refused(tmp_path: Path, depth: int) -> None:
    text = "sources: {path: x}\nx: " + "[" * depth + "]" * depth + "\n"
    assert "nested deeper than" in _one_line_error(_write(tmp_path, text))


def test_python_tags_are_refused(tmp_path: Path) -> None:
    message = _one_line_error(_write(tmp_path, "sources: !!python/object/apply:os.getpid []\n"))
    assert "not valid YAML" in message and "line 1" in message


def test_unreadable_config_is_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "sources: {path: x}\n")
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root: permissions are not enforced")
        assert "cannot read config file" in _one_line_error(path)
    finally:
        path.chmod(0o600)


# --- config show --describe (issue 9) ------------------------------------------------------------


def test_describe_round_trips_and_comments_each_key() -> None:
    import yaml

    from salesml.config import Settings, describe_keys, from_dict

    settings = from_dict(
        {"sources": {"path": "/data/crm", "datetime_format": {"deals": "%d-%m-%Y"}}}
    )
    text = settings.to_yaml(describe=True)
    assert Settings.model_validate(yaml.safe_load(text)) == settings
    lines = text.splitlines()
    where = lines.index("  datetime_format: {deals: '%d-%m-%Y'}")
    assert lines[where - 1].startswith("  # strftime format of text datetimes")
    keys = describe_keys()
    assert "sources.encoding" in keys and "deals.bands.red_below" in keys
    for key in ("sources.path", "warehouse.url", "mlflow.tracking_uri", "timezone", "column_map"):
        assert keys[key], f"{key} has no description"


def test_every_key_outside_the_model_sections_is_described() -> None:
    from salesml.config import describe_keys

    general = (
        "sources.",
        "warehouse.",
        "mlflow.",
        "validation.",
        "compute.",
        "timezone",
        "column_",
    )
    undescribed = [k for k, text in describe_keys().items() if k.startswith(general) and not text]
    assert undescribed == []
