"""The command line: help everywhere, one-line errors, no heavy imports at start-up."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import polars as pl
import pytest
from typer.testing import CliRunner

from salesml.cli import DEBUG_ENV, DEBUG_HINT, app
from salesml.config import Settings
from tests.clihelp import assert_one_line_or_ok, run_cli

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["config", "show"],
        ["sample"],
        ["validate"],
        ["train"],
        ["score", "deals"],
        ["forecast", "demand"],
        ["backtest"],
        ["demo"],
        ["report"],
    ],
)
def test_every_command_has_help(args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_start_up_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys, salesml.cli;"
        "heavy = [m for m in ('mlflow','shap','lightgbm','prefect','pandera','duckdb') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_config_show_prints_effective_config() -> None:
    result = runner.invoke(
        app, ["config", "show", "--config", str(ROOT / "configs" / "minimal.yaml")]
    )
    assert result.exit_code == 0
    assert "max_bad_share: 0.01" in result.output
    assert "decay_hours: 72.0" in result.output


def test_bad_config_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: {path: x}\nwarehouse: {urll: y}\n")
    result = runner.invoke(app, ["config", "show", "--config", str(bad)])
    assert result.exit_code == 2
    assert result.output.strip() == "error: unknown config key 'warehouse.urll'"


def test_bad_as_of_exits_non_zero(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", "--as-of", "last tuesday"])
    assert result.exit_code == 2
    assert "not an ISO date" in result.output


# --- one line, always (issue 11) ----------------------------------------------------------------


def _raise(exc: BaseException) -> Callable[..., NoReturn]:
    def boom(*_args: object, **_kwargs: object) -> NoReturn:
        raise exc

    return boom


@pytest.mark.parametrize(
    ("exc", "shown"),
    [
        (ValueError("'list' argument must have no negative elements"), "ValueError: 'list'"),
        (pl.exceptions.PanicException("assertion failed: n < len"), "PanicException: assertion"),
        (KeyError("n_demo_7d"), "KeyError: 'n_demo_7d'"),
    ],
)
def test_an_unexpected_exception_is_one_line_naming_its_type(
    monkeypatch: pytest.MonkeyPatch, exc: BaseException, shown: str
) -> None:
    monkeypatch.setattr(Settings, "to_yaml", _raise(exc))
    result = run_cli(["config", "show"])
    line = assert_one_line_or_ok(result)
    assert result.exit_code == 1
    assert line is not None and line.startswith(f"error: {shown}")
    assert line.endswith(DEBUG_HINT)


@pytest.mark.parametrize("how", ["option", "environment"])
def test_debug_prints_the_traceback_then_the_line(
    monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.setattr(Settings, "to_yaml", _raise(RuntimeError("boom")))
    if how == "option":
        result = run_cli(["--debug", "config", "show"])
    else:
        result = run_cli(["config", "show"], env={DEBUG_ENV: "1"})
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: RuntimeError: boom"


def test_a_failure_never_shows_a_password(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "postgresql://app:hunter2@db/sales"
    monkeypatch.setattr(Settings, "to_yaml", _raise(RuntimeError(f"cannot reach {url}")))
    for args in (["config", "show"], ["--debug", "config", "show"]):
        result = run_cli(args)
        assert result.exit_code == 1
        assert "hunter2" not in result.output
        assert "postgresql://app:***@db/sales" in result.stderr


def test_ctrl_c_and_exits_are_not_turned_into_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Settings, "to_yaml", _raise(KeyboardInterrupt()))
    result = run_cli(["config", "show"])
    assert result.exit_code == 130 and "error:" not in result.output
    monkeypatch.setattr(Settings, "to_yaml", _raise(SystemExit(3)))
    assert run_cli(["config", "show"]).exit_code == 3


@pytest.mark.parametrize(
    "args",
    [
        ["nosuch"],
        ["--bogus"],
        ["sample"],
        ["sample", "--out", "x", "--deals", "many"],
        ["train", "nosuch-model"],
    ],
)
def test_usage_errors_are_one_line(args: list[str]) -> None:
    line = assert_one_line_or_ok(run_cli(args))
    assert line is not None and "--help" in line


@pytest.mark.parametrize("value", ["9999-12-31", "0001-01-01", "3000-01-01T00:00"])
def test_as_of_far_from_today_is_refused_in_one_line(value: str) -> None:
    result = run_cli(["validate", "--as-of", value])
    line = assert_one_line_or_ok(result)
    assert result.exit_code == 2
    assert (
        line
        == f"error: --as-of '{value}' is out of range: use a date from 1900-01-01 to 2999-12-31"
    )


def test_a_config_that_cannot_be_read_is_one_line_naming_the_file(tmp_path: Path) -> None:
    binary = tmp_path / "salesml.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    result = run_cli(["config", "show", "--config", str(binary)])
    line = assert_one_line_or_ok(result)
    assert result.exit_code == 2
    assert line is not None and str(binary) in line


def test_an_error_salesml_raises_is_its_message_only(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    result = run_cli(["sample", "--out", str(not_a_folder), "--deals", "0", "--series", "1"])
    line = assert_one_line_or_ok(result)
    assert line == f"error: sample folder {not_a_folder} is a file; choose a folder"


def test_the_helper_rejects_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    assert assert_one_line_or_ok(run_cli(["config", "show"])) is None
    monkeypatch.setattr(Settings, "to_yaml", _raise(RuntimeError("boom")))
    with pytest.raises(AssertionError, match="Traceback"):
        assert_one_line_or_ok(run_cli(["--debug", "config", "show"]))


# --- demo in a folder that is not empty (issue 11) -------------------------------------------


def test_demo_never_overwrites_a_users_config(tmp_path: Path) -> None:
    mine = tmp_path / "salesml.yaml"
    mine.write_text("sources: {path: /data/crm}\n")
    result = run_cli(["demo", "--workdir", str(tmp_path)])
    line = assert_one_line_or_ok(result)
    assert result.exit_code == 1
    assert line == (
        f"error: demo --workdir {tmp_path}: {mine} was not written by salesml demo and would be "
        "overwritten; use another --workdir"
    )
    assert mine.read_text() == "sources: {path: /data/crm}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["salesml.yaml"]


@pytest.mark.parametrize("present", ["warehouse.duckdb", "data/deals.csv"])
def test_demo_refuses_a_folder_holding_someone_elses_data(tmp_path: Path, present: str) -> None:
    (tmp_path / present).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / present).write_text("theirs")
    line = assert_one_line_or_ok(run_cli(["demo", "--workdir", str(tmp_path)]))
    assert line is not None and Path(present).name in line and "--workdir" in line
    assert not (tmp_path / "salesml.yaml").exists()


def _earlier_scores_with_young_deals(settings: Any, as_of: Any, progress: Any) -> dict[str, Any]:
    """Stand-in for the model steps: scores at an earlier as_of, as `score deals --as-of` would
    leave them, where the youngest deals were not scored (null probability) and have closed
    since."""
    from datetime import timedelta

    from salesml.warehouse import Warehouse

    deals = pl.read_parquet(Path(str(settings.sources.path)) / "deals.parquet")
    recent = deals.filter(pl.col("closed_at").is_not_null()).sort("closed_at").tail(20)
    earlier = recent["closed_at"].min() - timedelta(days=1)
    young = pl.int_range(pl.len()) < 5
    scores = recent.select(
        "deal_id",
        pl.when(young).then(None).otherwise(pl.lit(0.4)).alias("win_probability"),
        pl.when(young).then(None).otherwise(pl.lit("yellow")).alias("health"),
        pl.when(young).then(pl.lit("open less than 2 days")).alias("not_scored_reason"),
        pl.lit("[]").alias("health_reasons"),
        pl.lit("[]").alias("top_factors"),
    )
    wh = Warehouse.from_settings(settings)
    run_id = wh.start_run(flow="score_deals", as_of=earlier)
    counts = wh.write_batch(
        {"deal_scores": scores}, as_of=earlier, run_id=run_id, model_version="1"
    )
    wh.finish_run(run_id, "succeeded", model_version="1", row_counts=counts)
    return {"score deals": f"{scores.height} rows at {earlier:%Y-%m-%d}"}


def test_demo_runs_again_in_its_own_workdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second demo in the same folder rewrites its config, sample and report; a report that
    meets earlier scores of deals too young to score (null probability) still renders."""
    from salesml import demo

    monkeypatch.setattr(demo, "DEMO_DEALS", 300)
    monkeypatch.setattr(demo, "DEMO_SERIES", 3)
    monkeypatch.setattr(demo, "DEMO_DAYS", 7)
    monkeypatch.setattr(demo, "_model_steps", _earlier_scores_with_young_deals)
    first = demo.run_demo(tmp_path)
    assert first.report_path is not None and first.report_path.is_file()
    assert first.config_path.read_text().startswith(demo.CONFIG_MARKER)
    again = demo.run_demo(tmp_path)
    assert again.report_path == first.report_path
    assert "Calibration: past scores against what happened" in again.report_path.read_text()


def test_a_demo_config_from_before_the_marker_is_still_the_demos(tmp_path: Path) -> None:
    import yaml

    from salesml.demo import demo_settings, is_demo_config

    raw = demo_settings(tmp_path)
    config = tmp_path / "salesml.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))  # what earlier demos wrote
    assert is_demo_config(config, raw)
    config.write_text(yaml.safe_dump({**raw, "timezone": "Europe/Berlin"}))
    assert not is_demo_config(config, raw)


def test_config_show_describe_prints_each_keys_description() -> None:
    result = runner.invoke(
        app, ["config", "show", "--describe", "--config", str(ROOT / "configs" / "minimal.yaml")]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    at = lines.index("  max_bad_share: 0.01")
    assert lines[at - 1].startswith("  # Share of bad rows per table under which the run goes on")
    assert "# Per table, {your column name: canonical name}" in result.output


def test_validate_takes_the_job_whose_tables_it_requires() -> None:
    result = runner.invoke(app, ["validate", "--help"])
    assert "deal-win" in result.output and "demand" in result.output
    bad = run_cli(["validate", "forecast"])
    assert bad.exit_code == 2
