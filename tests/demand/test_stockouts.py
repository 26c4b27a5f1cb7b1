"""Stock-outs are censored demand: missing, not zero (features.stockout_buckets and the grid)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from salesml.config import Settings
from salesml.demand import forecasting
from salesml.demand.features import build_history, stockout_buckets
from salesml.timeutil import DATETIME
from tests.demand.conftest import sales_frame, tiny_demand

START = datetime(2024, 1, 1, tzinfo=UTC)  # Monday
DAYS = 63
AS_OF = START + timedelta(days=DAYS)
OUT_FROM = AS_OF - timedelta(days=8)  # the last week but one day: out of stock
RESTOCK = AS_OF - timedelta(hours=4)
HOURS = (8, 12, 16)  # sales in three 4-hour buckets a day
CUSTOMERS = tuple(f"c{i}" for i in range(1, 9))


def _inventory(rows: list[tuple[datetime, float]], sku: str = "a") -> pl.DataFrame:
    return pl.DataFrame(
        [(ts, "c1", sku, on_hand) for ts, on_hand in rows],
        schema={"ts": DATETIME, "customer_id": pl.String, "sku": pl.String, "on_hand": pl.Float64},
        orient="row",
    )


def _world() -> tuple[pl.DataFrame, pl.DataFrame]:
    """Eight shops sell ~5 a bucket of sku a in three buckets a day; a is out of stock at c1
    from OUT_FROM to RESTOCK (no sale then)."""
    rng = np.random.default_rng(4)
    rows = []
    for d in range(DAYS):
        day = START + timedelta(days=d)
        for hour in HOURS:
            at = day.replace(hour=hour, minute=30)
            for customer in CUSTOMERS:
                if customer == "c1" and OUT_FROM <= at < RESTOCK:
                    continue
                rows.append((at, customer, "a", float(rng.poisson(5.0))))
    inventory = _inventory([(START, 40.0), (OUT_FROM, 0.0), (RESTOCK, 60.0)])
    return sales_frame(rows), inventory


def _series_grid(history: object, customer: str = "c1") -> pl.DataFrame:
    h = history  # type: ignore[assignment]
    mine = h.series.filter(pl.col("customer_id") == customer)  # type: ignore[attr-defined]
    sid = mine["series_id"].item()
    return h.grid.filter(pl.col("series_id") == sid).sort("bucket")  # type: ignore[attr-defined]


def test_stockout_buckets_cover_whole_buckets_only() -> None:
    # out at 09:00 (inside bucket 08-12), restock at 20:00 sharp (the 20-24 bucket's start)
    day = START + timedelta(days=3)
    inventory = _inventory([(START, 5.0), (day.replace(hour=9), 0.0), (day.replace(hour=20), 3.0)])
    as_of = START + timedelta(days=10)
    out = stockout_buckets(inventory, "UTC", 4, as_of, origin=10**6)
    first = int(day.timestamp() // 3600 // 4)
    assert out["bucket"].to_list() == [first + 3, first + 4]  # 12-16, 16-20
    # a reading exactly at a bucket's start covers that bucket; an open run lasts to the origin
    open_run = _inventory([(day.replace(hour=12), 0.0)])
    out = stockout_buckets(open_run, "UTC", 4, as_of, origin=first + 5)
    assert out["bucket"].to_list() == [first + 3, first + 4, first + 5]


def test_stockout_is_missing_not_zero_and_features_skip_it() -> None:
    sales, inventory = _world()
    demand = tiny_demand(grid={"detect_closed": False})
    censored = _series_grid(build_history(sales, demand, "UTC", AS_OF, inventory=inventory))
    plain = _series_grid(build_history(sales, demand, "UTC", AS_OF))
    out = censored.filter(pl.col("stockout"))
    assert out.height >= 6 * 6  # six whole days out of stock (6 buckets a day)
    assert out["y"].null_count() == out.height
    assert plain.filter(pl.col("bucket").is_in(out["bucket"].implode()))["y"].sum() == 0
    # a bucket with a sale is never censored
    assert censored.filter(pl.col("stockout") & (pl.col("y") > 0)).height == 0


def test_forecast_after_restock_is_not_pulled_down() -> None:
    """The Done-means line: c1's forecast after a week out of stock stays at its peers' level
    (the same shop, the same demand); read as zero demand, the same week pulls it down."""
    sales, inventory = _world()
    settings = Settings(demand=tiny_demand(grid={"detect_closed": False}))

    def relative_to_peers(inv: pl.DataFrame | None) -> float:
        fitted = forecasting.fit(sales, settings, AS_OF, inventory=inv)
        frame = forecasting.forecast(fitted.model, sales, settings, AS_OF, inventory=inv).frame
        mean = frame.group_by("customer_id").agg(pl.col("mean").mean())
        own = mean.filter(pl.col("customer_id") == "c1")["mean"].item()
        return float(own / mean.filter(pl.col("customer_id") != "c1")["mean"].mean())

    censored, as_zeros = relative_to_peers(inventory), relative_to_peers(None)
    assert censored == pytest.approx(1.0, abs=0.03)
    assert as_zeros < censored - 0.02


def test_inventory_after_as_of_changes_nothing() -> None:
    sales, inventory = _world()
    demand = tiny_demand(grid={"detect_closed": False})
    base = build_history(sales, demand, "UTC", RESTOCK, inventory=inventory)
    future = pl.concat(
        [
            inventory.filter(pl.col("ts") <= RESTOCK - timedelta(hours=1)),
            _inventory([(RESTOCK - timedelta(minutes=30), 99.0), (AS_OF, 0.0)]),
        ]
    )
    moved = build_history(sales, demand, "UTC", RESTOCK - timedelta(hours=1), inventory=future)
    again = build_history(sales, demand, "UTC", RESTOCK - timedelta(hours=1), inventory=inventory)
    assert moved.grid.equals(again.grid)  # a restock after as_of is not known at as_of
    assert base.grid["stockout"].sum() > 0
