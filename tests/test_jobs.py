"""Input validation as a job: a runs record, quarantine written, stop before writing outputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from salesml.config import from_dict
from salesml.sample import WORLD_END
from salesml.validate_job import validate_inputs
from salesml.validation import DataValidationError
from salesml.warehouse import Warehouse

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


def _settings(tmp_path: Path, data: Path, max_bad_share: float = 0.01):  # type: ignore[no-untyped-def]
    return from_dict(
        {
            "sources": {"path": str(data)},
            "warehouse": {"url": f"duckdb:///{tmp_path / 'wh.duckdb'}"},
            "validation": {"max_bad_share": max_bad_share},
        }
    )


def test_bundled_sample_validates_clean_and_records_the_run(tmp_path: Path) -> None:
    settings = _settings(tmp_path, SAMPLE)
    summary = validate_inputs(settings, WORLD_END)
    assert summary["quarantined_rows"] == 0
    assert summary["rows"]["deals"] > 1000
    runs = Warehouse.from_settings(settings).read("runs")
    assert runs.height == 1
    assert runs["status"][0] == "succeeded"
    assert runs["flow"][0] == "validate"


def _copy_sample_with_bad_deals(tmp_path: Path, n_bad: int) -> Path:
    data = tmp_path / "data"
    shutil.copytree(SAMPLE, data)
    deals = pl.read_parquet(data / "deals.parquet")
    bad_ids = deals["deal_id"].head(n_bad)
    deals = deals.with_columns(
        pl.when(pl.col("deal_id").is_in(bad_ids.implode()))
        .then(pl.lit(-5.0))
        .otherwise(pl.col("amount"))
        .alias("amount")
    )
    deals.write_parquet(data / "deals.parquet")
    return data


def test_few_bad_rows_are_quarantined_and_the_run_goes_on(tmp_path: Path) -> None:
    data = _copy_sample_with_bad_deals(tmp_path, n_bad=3)
    settings = _settings(tmp_path, data)
    summary = validate_inputs(settings, WORLD_END)
    quarantine = Warehouse.from_settings(settings).read("quarantine")
    deal_rows = quarantine.filter(pl.col("table_name") == "deals")
    assert deal_rows.filter(pl.col("check") == "non_negative").height == 3
    assert summary["quarantined_rows"] >= 3


def test_too_many_bad_rows_stop_with_one_line_and_a_failed_run(tmp_path: Path) -> None:
    data = _copy_sample_with_bad_deals(tmp_path, n_bad=200)
    settings = _settings(tmp_path, data)
    with pytest.raises(DataValidationError) as info:
        validate_inputs(settings, WORLD_END)
    message = str(info.value)
    assert "\n" not in message
    assert "deals" in message and "amount" in message
    warehouse = Warehouse.from_settings(settings)
    runs = warehouse.read("runs")
    assert runs["status"].to_list() == ["failed"]
    assert "DataValidationError" in runs["message"][0]
    assert warehouse.read("quarantine").filter(pl.col("check") == "non_negative").height == 200
