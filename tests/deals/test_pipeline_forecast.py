"""Pipeline revenue forecast: exact expectation, ordered seeded quantiles, periods, totals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from salesml.deals.pipeline_forecast import pipeline_forecast
from salesml.timeutil import DATETIME

AS_OF = datetime(2025, 7, 10, tzinfo=UTC)


def _deals() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "deal_id": [f"D{i}" for i in range(6)],
            "region": ["emea", "emea", "apac", None, "emea", "apac"],
            "amount": [100.0, 200.0, 50.0, 10.0, None, 1000.0],
            "expected_close_at": [
                AS_OF + timedelta(days=5),
                AS_OF - timedelta(days=30),  # overdue -> month of as_of
                AS_OF + timedelta(days=40),
                None,
                AS_OF + timedelta(days=1),
                AS_OF + timedelta(days=45),
            ],
            "win_probability": [0.5, 1.0, 0.0, 0.2, 0.9, None],  # last one is not scored
        }
    ).with_columns(pl.col("expected_close_at").cast(DATETIME))


def test_expected_revenue_is_exact_and_quantiles_are_ordered() -> None:
    out = pipeline_forecast(_deals(), AS_OF, n_simulations=500, seed=1)
    july_emea = out.filter((pl.col("period") == "2025-07") & (pl.col("region") == "emea")).row(
        0, named=True
    )
    assert july_emea["expected_revenue"] == pytest.approx(0.5 * 100 + 1.0 * 200 + 0.9 * 0)
    assert july_emea["n_deals"] == 3
    assert july_emea["p10"] >= 200  # the certain deal is always won
    assert (out["p10"] <= out["p50"]).all() and (out["p50"] <= out["p90"]).all()
    august = out.filter(pl.col("period") == "2025-08")
    assert august.filter(pl.col("region") == "apac")["p90"].item() == 0.0  # p = 0
    assert "unknown" in out.filter(pl.col("period") == "2025-07")["region"].to_list()


def test_all_region_row_sums_the_regions_of_its_period() -> None:
    out = pipeline_forecast(_deals(), AS_OF, n_simulations=500, seed=1)
    for period in out["period"].unique():
        rows = out.filter(pl.col("period") == period)
        regions = rows.filter(pl.col("region") != "all")
        total = rows.filter(pl.col("region") == "all").row(0, named=True)
        assert total["expected_revenue"] == pytest.approx(regions["expected_revenue"].sum())
        assert total["n_deals"] == regions["n_deals"].sum()


def test_same_seed_same_quantiles() -> None:
    first = pipeline_forecast(_deals(), AS_OF, n_simulations=300, seed=5)
    again = pipeline_forecast(_deals().reverse(), AS_OF, n_simulations=300, seed=5)
    assert first.equals(again)


def test_nothing_scored_gives_an_empty_forecast() -> None:
    empty = _deals().with_columns(pl.lit(None, pl.Float64).alias("win_probability"))
    assert pipeline_forecast(empty, AS_OF).height == 0
