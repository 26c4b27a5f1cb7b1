"""The command line: help everywhere, one-line errors, no heavy imports at start-up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from salesml.cli import app

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
