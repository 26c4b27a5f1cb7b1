"""CRM-only and demand-only users (issue 9 item 7): each job requires only the tables it uses.

`salesml validate [deal-win|demand]` checks the tables present plus what the named job needs;
without a job, the tables present and at least one job's required table.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
import yaml

from salesml.timeutil import DATETIME
from tests.clihelp import assert_one_line_or_ok, run_cli

AS_OF = "2024-03-01"


def _deals() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "Opportunity": ["O1", "O2", "O3"],
            "Company": ["Acme", "Acme", "Globex"],
            "Agent": ["ann", "bob", "ann"],
            "Engaged": ["02-01-2024", "10-01-2024", "20-01-2024"],
            "Closed": ["05-02-2024", None, "20-02-2024"],
            "Stage": ["Won", None, "Lost"],
        }
    )


def _config(folder: Path, tmp_path: Path) -> Path:
    """A CRM export as a user has it: own column names, day-first dates, no activity log."""
    config = {
        "sources": {"path": str(folder), "datetime_format": {"deals": "%d-%m-%Y"}},
        "warehouse": {"url": f"duckdb:///{tmp_path / 'warehouse.duckdb'}"},
        "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
        "column_map": {
            "deals": {
                "Opportunity": "deal_id",
                "Company": "account_id",
                "Agent": "owner_id",
                "Engaged": "created_at",
                "Closed": "closed_at",
                "Stage": "outcome",
            },
            "accounts": {"Company": "account_id", "Sector": "industry"},
        },
    }
    path = tmp_path / "salesml.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def crm(tmp_path: Path) -> Path:
    """deals.csv and accounts.csv only: no activities, no histories, no sales."""
    folder = tmp_path / "crm"
    folder.mkdir()
    _deals().write_csv(folder / "deals.csv")
    pl.DataFrame({"Company": ["Acme", "Globex"], "Sector": ["retail", "energy"]}).write_csv(
        folder / "accounts.csv"
    )
    return _config(folder, tmp_path)


def test_crm_only_validate_passes_without_activities(crm: Path) -> None:
    result = run_cli(["validate", "--config", crm, "--as-of", AS_OF])
    assert assert_one_line_or_ok(result) is None
    assert "jobs: deal-win" in result.stdout
    assert "rows: {'deals': 3, 'accounts': 2}" in result.stdout
    assert "absent: deal_stage_history, deal_close_date_history, activities, sales" in result.stdout


def test_validate_deal_win_passes_without_sales(crm: Path) -> None:
    result = run_cli(["validate", "deal-win", "--config", crm, "--as-of", AS_OF])
    assert assert_one_line_or_ok(result) is None
    assert "quarantined_rows: 0" in result.stdout


def test_validate_demand_refuses_naming_sales(crm: Path) -> None:
    line = assert_one_line_or_ok(run_cli(["validate", "demand", "--config", crm, "--as-of", AS_OF]))
    assert line is not None
    assert line.startswith("error: sales: required table not found")
    assert "check: table_present" in line


def test_empty_activities_file_is_fine(crm: Path) -> None:
    folder = crm.parent / "crm"
    (folder / "activities.csv").write_text(
        "activity_id,deal_id,account_id,occurred_at,activity_type\n"
    )
    result = run_cli(["validate", "deal-win", "--config", crm, "--as-of", AS_OF])
    assert assert_one_line_or_ok(result) is None
    assert "'activities': 0" in result.stdout


def test_validate_without_any_job_table_says_what_each_job_needs(tmp_path: Path) -> None:
    folder = tmp_path / "crm"
    folder.mkdir()
    pl.DataFrame({"Company": ["Acme"], "Sector": ["retail"]}).write_csv(folder / "accounts.csv")
    line = assert_one_line_or_ok(
        run_cli(["validate", "--config", _config(folder, tmp_path), "--as-of", AS_OF])
    )
    assert line == (
        f"error: no job can run on sources.path {folder}: deal-win needs deals (not found); "
        "demand needs sales (not found) (check: table_present)"
    )


def test_validate_deal_win_refuses_an_empty_deals_table(crm: Path) -> None:
    folder = crm.parent / "crm"
    _deals().clear().write_csv(folder / "deals.csv")
    line = assert_one_line_or_ok(
        run_cli(["validate", "deal-win", "--config", crm, "--as-of", AS_OF])
    )
    assert line is not None and "deals: table has no rows" in line


def test_demand_only_validate_passes_without_deal_tables(tmp_path: Path) -> None:
    folder = tmp_path / "shop"
    folder.mkdir()
    pl.DataFrame(
        {
            "ts": [datetime(2024, 2, 1, 10, tzinfo=UTC)],
            "customer_id": ["store1"],
            "sku": ["pizza"],
            "quantity": [2.0],
        },
        schema_overrides={"ts": DATETIME},
    ).write_parquet(folder / "sales.parquet")
    config = _config(folder, tmp_path)
    for args in (["validate"], ["validate", "demand"]):
        result = run_cli([*args, "--config", config, "--as-of", AS_OF])
        assert assert_one_line_or_ok(result) is None
        assert "jobs: demand" in result.stdout
    line = assert_one_line_or_ok(
        run_cli(["validate", "deal-win", "--config", config, "--as-of", AS_OF])
    )
    assert line is not None and line.startswith("error: deals: required table not found")


def _horizon(config: Path, days: int) -> None:
    data = yaml.safe_load(config.read_text())
    data["deals"] = {"label_horizon_days": days}
    config.write_text(yaml.safe_dump(data))


def test_score_without_any_model_writes_the_base_rate_and_says_why(crm: Path) -> None:
    """Issue 9: training refuses (history too short), so no model version exists; scoring
    still gives every open deal the base rate known at as_of, with the reason."""
    from salesml.config import Settings
    from salesml.warehouse import Warehouse

    _horizon(crm, 14)
    refused = assert_one_line_or_ok(
        run_cli(["train", "deal-win", "--config", crm, "--as-of", AS_OF])
    )
    assert refused is not None and refused.startswith("error: refusing to train deal-win")
    result = run_cli(["score", "deals", "--config", crm, "--as-of", AS_OF])
    assert assert_one_line_or_ok(result) is None
    assert "no trained model: the last training run (2024-03-01) failed" in result.stdout
    settings = Settings.model_validate(yaml.safe_load(crm.read_text()))
    scores = Warehouse.from_settings(settings).read("deal_scores")
    assert scores["deal_id"].to_list() == ["O2"]  # the one deal open at as_of
    row = scores.row(0, named=True)
    assert row["score_basis"] == "base_rate" and row["model_version"] is None
    assert row["basis_reason"].startswith("no trained model: the last training run")
    assert "refusing to train deal-win" in row["basis_reason"]
    # the base rate of "won within 14 days" among the latest snapshots with full follow-up
    assert 0 < row["win_probability"] < 1
    assert row["health"] in ("red", "yellow", "green")


def test_score_without_a_model_or_a_base_rate_refuses_in_one_line(crm: Path) -> None:
    """No deal was open H = 60 days before as_of: not even a base rate is known."""
    line = assert_one_line_or_ok(run_cli(["score", "deals", "--config", crm, "--as-of", AS_OF]))
    assert line is not None
    assert line.startswith(f"error: cannot score deals as of {AS_OF}T00:00:00+00:00: no trained")
    assert "no base rate is known either" in line
