"""SKU health rules: stock-out projection, safety level with growth, green cover."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from salesml.config import DemandSettings
from salesml.demand.health import sku_health
from salesml.timeutil import DATETIME
from tests.demand.conftest import sales_frame

AS_OF = datetime(2024, 6, 10, tzinfo=UTC)
DEMAND = DemandSettings(safety_stock_days=2.0, growth_threshold=0.4, stockout_red_hours=24)


def _forecast(series: dict[str, float]) -> pl.DataFrame:
    """42 buckets ahead per sku with a constant mean per bucket (variance = mean)."""
    rows = []
    for sku, mean in series.items():
        for h in range(1, 43):
            rows.append(("c", sku, AS_OF + timedelta(hours=4 * (h - 1)), h, mean, mean))
    return pl.DataFrame(
        rows,
        schema={
            "customer_id": pl.String,
            "sku": pl.String,
            "bucket_start": DATETIME,
            "horizon": pl.Int32,
            "mean": pl.Float64,
            "var": pl.Float64,
        },
        orient="row",
    )


def _inventory(stock: dict[str, float], future_zero: bool = False) -> pl.DataFrame:
    rows = [(AS_OF - timedelta(hours=2), "c", sku, value) for sku, value in stock.items()]
    if future_zero:
        rows += [(AS_OF + timedelta(hours=1), "c", sku, 0.0) for sku in stock]
    return pl.DataFrame(
        rows,
        schema={"ts": DATETIME, "customer_id": pl.String, "sku": pl.String, "on_hand": pl.Float64},
        orient="row",
    )


def _sales(recent: float, before: float, sku: str) -> pl.DataFrame:
    return sales_frame(
        [
            (AS_OF - timedelta(days=2), "c", sku, recent),
            (AS_OF - timedelta(days=10), "c", sku, before),
        ]
    )


@pytest.fixture
def rated() -> pl.DataFrame:
    forecast = _forecast({"out": 1.0, "soon": 1.0, "week": 0.5, "plenty": 0.1, "growing": 1.0})
    inventory = _inventory(
        {"out": 0.0, "soon": 4.0, "week": 15.0, "plenty": 500.0, "growing": 11.0},
        future_zero=True,  # rows after as_of must be ignored
    )
    sales = pl.concat(
        [
            _sales(10, 10, "out"),
            _sales(10, 10, "soon"),
            _sales(5, 5, "week"),
            _sales(1, 1, "plenty"),
            _sales(15, 10, "growing"),  # +50 % week on week
        ]
    )
    return sku_health(forecast, inventory, sales, DEMAND, AS_OF)


def _row(rated: pl.DataFrame, sku: str) -> dict[str, object]:
    return rated.filter(pl.col("sku") == sku).row(0, named=True)


def test_out_of_stock_is_red(rated: pl.DataFrame) -> None:
    row = _row(rated, "out")
    assert row["health"] == "red" and row["on_hand"] == 0.0
    assert any("out of stock" in r for r in json.loads(str(row["reasons"])))


def test_stockout_within_a_day_is_red_with_its_time(rated: pl.DataFrame) -> None:
    row = _row(rated, "soon")  # 4 units at 1 unit per 4 hours: out after 16 hours
    assert row["health"] == "red"
    assert row["projected_stockout_at"] == AS_OF + timedelta(hours=16)


def test_stockout_within_the_horizon_is_yellow(rated: pl.DataFrame) -> None:
    row = _row(rated, "week")  # 15 units at 0.5 per bucket: out after 30 buckets (120 h)
    assert row["health"] == "yellow"
    assert row["projected_stockout_at"] == AS_OF + timedelta(hours=120)


def test_low_stock_with_fast_growth_is_red(rated: pl.DataFrame) -> None:
    # safety = 2 days x 6 units/day = 12 > 11 on hand; sales grew 50 % > 40 %
    row = _row(rated, "growing")
    assert row["health"] == "red"
    reasons = json.loads(str(row["reasons"]))
    assert any("below its safety level" in r and "grew by 50%" in r for r in reasons)


def test_ample_stock_is_green(rated: pl.DataFrame) -> None:
    row = _row(rated, "plenty")
    assert row["health"] == "green" and row["projected_stockout_at"] is None
    assert "covers high (P90) demand" in json.loads(str(row["reasons"]))[0]


def test_slower_growth_with_low_stock_is_only_yellow() -> None:
    forecast = _forecast({"x": 1.0})
    rated = sku_health(forecast, _inventory({"x": 11.0}), _sales(12, 10, "x"), DEMAND, AS_OF)
    row = _row(rated, "x")
    assert row["health"] == "yellow"  # +20 % only; stock-out after 44 h (not within 24 h)
