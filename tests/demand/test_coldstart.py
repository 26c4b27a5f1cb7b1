"""Cold start: series with no or too little history get forecasts from similar series."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from salesml.config import Settings
from salesml.demand import coldstart, forecasting
from salesml.demand.features import build_history
from salesml.timeutil import DATETIME
from tests.demand.conftest import tiny_demand

START = datetime(2024, 1, 1, tzinfo=UTC)  # Monday
DAYS = 42
AS_OF = START + timedelta(days=DAYS)
NEW_FROM = AS_OF - timedelta(days=3)


def _world() -> tuple[pl.DataFrame, pl.DataFrame]:
    """c1 sells 4 of a at 10:00 daily, c2 2 of a and 6 of b; c1 started selling d ('drinks',
    like a) 3 days ago, c3 sold 1 of b on each of the last 3 days; inventory: c1 stocks z (sold
    nowhere), c2 stocks a (sold: not cold), c9 stocks a only after as_of."""
    rows = []
    for d in range(DAYS):
        at = START + timedelta(days=d, hours=10)
        rows += [(at, "c1", "a", 4.0, "drinks"), (at, "c2", "a", 2.0, "drinks")]
        rows.append((at, "c2", "b", 6.0, "food"))
        if at >= NEW_FROM:
            rows += [(at, "c1", "d", 1.0, "drinks"), (at, "c3", "b", 1.0, "food")]
    sales = pl.DataFrame(
        [(ts, c, s, q, 1.0, None, cat) for ts, c, s, q, cat in rows],
        schema={
            "ts": DATETIME,
            "customer_id": pl.String,
            "sku": pl.String,
            "quantity": pl.Float64,
            "unit_price": pl.Float64,
            "region": pl.String,
            "category": pl.String,
        },
        orient="row",
    )
    inventory = pl.DataFrame(
        {
            "ts": [START, START, AS_OF + timedelta(days=1)],
            "customer_id": ["c1", "c2", "c9"],
            "sku": ["z", "a", "a"],
            "on_hand": [10.0, 5.0, 5.0],
        },
        schema={"ts": DATETIME, "customer_id": pl.String, "sku": pl.String, "on_hand": pl.Float64},
    )
    return sales, inventory


@pytest.fixture(scope="module")
def cold_rows() -> pl.DataFrame:
    sales, inventory = _world()
    settings = Settings(
        demand=tiny_demand(
            grid={"detect_closed": False, "category_column": "category", "cold_start_min_days": 7}
        )
    )
    history = build_history(sales, settings.demand, "UTC", AS_OF, inventory=inventory)
    model_rows = pl.DataFrame(
        {
            "customer_id": ["c1", "c2"],
            "sku": ["d", "b"],
            "bucket_start": [AS_OF, AS_OF],
            "scenario": ["baseline"] * 2,
            "model_version": ["7"] * 2,
            "horizon": [1, 1],
            "p10": [0.0] * 2,
            "p50": [1.0] * 2,
            "p90": [2.0] * 2,
            "expected": [1.0] * 2,
            "basis": ["model"] * 2,
        },
        schema_overrides={"bucket_start": DATETIME},
    )
    rows = forecasting.cold_start_rows(history, sales, settings, AS_OF, inventory)
    return forecasting.with_cold_start(model_rows, rows)


def _daily(rows: pl.DataFrame, customer: str, sku: str) -> float:
    """Expected units over the first forecast day (6 buckets) of one series."""
    one = rows.filter((pl.col("customer_id") == customer) & (pl.col("sku") == sku))
    return float(one.filter(pl.col("horizon") <= 6)["expected"].sum())


def test_which_series_are_cold_and_their_basis(cold_rows: pl.DataFrame) -> None:
    series = cold_rows.select("customer_id", "sku", "basis").unique().sort("customer_id", "sku")
    assert series.rows() == [
        ("c1", "d", "cold_start"),  # first sale 3 days ago (< 7 days)
        ("c1", "z", "cold_start"),  # stocked, never sold
        ("c2", "b", "model"),  # established: the model's row is kept
        ("c3", "b", "cold_start"),  # first sale 3 days ago
    ]  # c2 x a has stock but also history (model); c9's stock is after as_of
    cold = cold_rows.filter(pl.col("basis") == "cold_start")
    assert cold.group_by("customer_id", "sku").len()["len"].to_list() == [42] * 3
    assert set(cold["scenario"].to_list()) == {"baseline"}
    assert set(cold["model_version"].to_list()) == {"7"}


def test_cold_start_rules(cold_rows: pl.DataFrame) -> None:
    # customer size = mean units per bucket over the window, from its first bucket there
    c1_size = (4.0 * 28 + 3.0) / 168  # a every day, d for 3 days
    c2_size = 8.0 / 6
    c3_size = 3.0 / 16  # 3 units in the 16 buckets since its first sale (day 39, 08:00)
    # c3 x b: same SKU at c2 (6 a day), scaled by c3's size relative to c2's
    assert _daily(cold_rows, "c3", "b") == pytest.approx(6.0 * c3_size / c2_size, rel=1e-5)
    # c1 x d: no other customer sells d: category 'drinks' = a at c1 (4) and c2 (2), mean 3 a
    # day per series, scaled by c1's size relative to the mean of c1's and c2's
    peers = (c1_size + c2_size) / 2
    assert _daily(cold_rows, "c1", "d") == pytest.approx(3.0 * c1_size / peers, rel=1e-5)
    # c1 x z: never sold anywhere, no category: c1's per-SKU average over its established
    # series (a only: 4 a day), unscaled
    assert _daily(cold_rows, "c1", "z") == pytest.approx(4.0, rel=1e-5)


def test_cold_start_quantiles_are_whole_ordered_and_hold_the_mean(
    cold_rows: pl.DataFrame,
) -> None:
    cold = cold_rows.filter(pl.col("basis") == "cold_start")
    p10, p50, p90 = (cold[c].to_numpy() for c in ("p10", "p50", "p90"))
    expected = cold["expected"].to_numpy()
    for q in (p10, p50, p90):
        assert np.array_equal(q, np.round(q))
    assert np.all(p10 <= p50) and np.all(p50 <= p90)
    assert np.all(p10 <= expected + 1e-9) and np.all(expected < p90 + 1)
    assert cold.filter(pl.col("expected") > 1)["p90"].min() >= 2  # type: ignore[operator]


def test_cold_series_ignore_inventory_after_as_of() -> None:
    sales, inventory = _world()
    demand = tiny_demand(grid={"detect_closed": False})
    history = build_history(sales, demand, "UTC", AS_OF)
    later = pl.concat([inventory, inventory.with_columns(ts=pl.lit(AS_OF + timedelta(hours=1)))])
    assert coldstart.cold_series(history, demand, AS_OF, inventory).equals(
        coldstart.cold_series(history, demand, AS_OF, later)
    )


def test_aggregates_sum_the_cold_start_rows_demand_forecast_holds() -> None:
    """`with_cold_cells` hands the aggregates the same cells demand_forecast holds: the model's
    cells of a cold series are replaced by its cold-start rows, stocked-only series added."""
    sales, inventory = _world()
    settings = Settings(
        demand=tiny_demand(
            grid={"detect_closed": False, "category_column": "category", "cold_start_min_days": 7}
        )
    )
    history = build_history(sales, settings.demand, "UTC", AS_OF, inventory=inventory)
    rows = forecasting.cold_start_rows(history, sales, settings, AS_OF, inventory)
    assert rows is not None
    model_cells = pl.DataFrame(
        {
            "customer_id": ["c1", "c2"],
            "sku": ["d", "b"],
            "bucket": [int(rows["bucket"].min())] * 2,
            "mean": [100.0, 1.5],
            "var": [200.0, 2.0],
        },
        schema_overrides={"bucket": rows.schema["bucket"]},
    )
    cells = forecasting.with_cold_cells(model_cells, rows)
    assert cells["mean"].sum() == pytest.approx(1.5 + rows["mean"].sum())
    stocked = cells.filter((pl.col("customer_id") == "c1") & (pl.col("sku") == "z"))
    assert stocked.height == 42 and (stocked["var"] == stocked["mean"]).all()
    assert forecasting.with_cold_cells(model_cells, None).equals(model_cells)
