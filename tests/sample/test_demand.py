"""The demand world: determinism, canonical shape, and the planted effects."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from salesml.sample import HOLIDAYS, WORLD_END, demand_world
from salesml.sample import demand as world
from salesml.timeutil import DATETIME

N_SERIES = 300
DAYS = 90
START = WORLD_END - timedelta(days=DAYS)
KEY = ["customer_id", "sku"]


@pytest.fixture(scope="module")
def demand() -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    return demand_world(n_series=N_SERIES, days=DAYS, seed=11)


def _daily_units(sales: pl.DataFrame) -> pl.DataFrame:
    """Positive units per series and UTC day (returns excluded)."""
    return (
        sales.filter(pl.col("quantity") > 0)
        .group_by(*KEY, day=pl.col("ts").dt.truncate("1d"))
        .agg(units=pl.col("quantity").sum())
    )


def _daily_promotion(signals: pl.DataFrame, series: pl.DataFrame) -> pl.DataFrame:
    """Promotion flag per series and day from the step-function signal rows."""
    days = pl.datetime_range(
        START, WORLD_END - timedelta(days=1), "1d", time_zone="UTC", eager=True
    )
    grid = series.select(KEY).join(pl.DataFrame({"day": days}), how="cross").sort("day")
    promo = signals.filter(pl.col("name") == "promotion").sort("ts")
    store = promo.filter(pl.col("customer_id").is_not_null()).select(
        *KEY, pl.col("ts").alias("day"), pl.col("value").alias("store")
    )
    chain = promo.filter(pl.col("customer_id").is_null()).select(
        "sku", pl.col("ts").alias("day"), pl.col("value").alias("chain")
    )
    # Both sides are sorted by day above; with `by=` polars cannot check it, so say so.
    flagged = grid.join_asof(store, on="day", by=KEY, check_sortedness=False).join_asof(
        chain, on="day", by="sku", check_sortedness=False
    )
    return flagged.select(
        *KEY,
        "day",
        promo=pl.max_horizontal(pl.col("store").fill_null(0), pl.col("chain").fill_null(0)),
    )


def test_same_seed_same_world(demand) -> None:
    tables, truth = demand
    again_tables, again_truth = demand_world(n_series=N_SERIES, days=DAYS, seed=11)
    for name, frame in tables.items():
        assert frame.equals(again_tables[name]), name
    assert truth.equals(again_truth)
    other, _ = demand_world(n_series=N_SERIES, days=DAYS, seed=12)
    assert not other["sales"].equals(tables["sales"])


def test_canonical_columns_and_dtypes(demand) -> None:
    tables, truth = demand
    assert dict(tables["sales"].schema) == {
        "ts": DATETIME,
        "customer_id": pl.String,
        "sku": pl.String,
        "quantity": pl.Float64,
        "unit_price": pl.Float64,
        "region": pl.String,
    }
    assert dict(tables["signals"].schema) == {
        "ts": DATETIME,
        "name": pl.String,
        "value": pl.Float64,
        "sku": pl.String,
        "customer_id": pl.String,
        "region": pl.String,
    }
    assert dict(tables["inventory"].schema) == {
        "ts": DATETIME,
        "customer_id": pl.String,
        "sku": pl.String,
        "on_hand": pl.Float64,
    }
    assert truth.height == N_SERIES
    assert truth.select(KEY).is_unique().all()


def test_time_ranges_and_known_future_signals(demand) -> None:
    tables, _ = demand
    sales, inventory, signals = tables["sales"], tables["inventory"], tables["signals"]
    assert sales["ts"].min() >= START
    assert sales["ts"].max() < WORLD_END
    assert inventory["ts"].max() == WORLD_END - timedelta(days=1)
    assert inventory.height == N_SERIES * DAYS
    # The plan (price, promotions) is known a week beyond the end.
    assert signals["ts"].max() >= WORLD_END + timedelta(days=6)
    assert set(signals["name"].unique()) == {"price", "promotion"}
    assert set(signals.filter(pl.col("name") == "promotion")["value"].unique()) <= {0.0, 1.0}
    assert (signals.filter(pl.col("name") == "price")["value"] > 0).all()
    # Every sold SKU has a price row at the window start.
    first_prices = signals.filter((pl.col("name") == "price") & (pl.col("ts") == START))
    assert sales["sku"].unique().is_in(first_prices["sku"].implode()).all()


def test_returns_are_a_small_share(demand) -> None:
    sales = demand[0]["sales"]
    share = (sales["quantity"] < 0).mean()
    assert 0.005 < share < 0.05
    assert 0 < sales["unit_price"].null_count() < 0.05 * sales.height


def test_closed_buckets_and_weekdays_never_sell(demand) -> None:
    tables, truth = demand
    sales = tables["sales"].join(truth.select(*KEY, "closed_buckets", "closed_weekdays"), on=KEY)
    bucket = (pl.col("ts").dt.hour() // 4 * 4).cast(pl.Int64)
    weekday = (pl.col("ts").dt.weekday() - 1).cast(pl.Int64)
    in_closed_bucket = sales.filter(bucket.is_in(pl.col("closed_buckets")))
    on_closed_day = sales.filter(weekday.is_in(pl.col("closed_weekdays")))
    assert in_closed_bucket.height == 0
    assert on_closed_day.height == 0
    assert truth.filter(pl.col("closed_buckets").list.len() > 0).height > N_SERIES / 2
    assert world.closed_buckets("standard") == [0, 4, 20]
    # The open hours do sell: the busiest bucket of standard stores is an open one.
    standard = sales.filter(pl.col("closed_buckets").list.len() == 3)
    busiest = standard.group_by(bucket.alias("b")).len().sort("len")["b"][-1]
    assert busiest in (8, 12, 16)


def test_holiday_closes_stores(demand) -> None:
    easter = date(2025, 4, 20)
    assert HOLIDAYS[easter] == 0.0
    sales = demand[0]["sales"]
    assert sales.filter(pl.col("ts").dt.date() == easter).height == 0
    assert sales.filter(pl.col("ts").dt.date() == date(2025, 4, 19)).height > 0


def test_long_tail_series_are_mostly_zero(demand) -> None:
    tables, truth = demand
    buckets_per_series = DAYS * 24 // world.BUCKET_HOURS
    busy = (
        tables["sales"]
        .group_by(*KEY, pl.col("ts").dt.truncate("4h"))
        .len()
        .group_by(KEY)
        .agg(nonzero=pl.len())
    )
    share = (
        truth.join(busy, on=KEY, how="left")
        .group_by("long_tail")
        .agg((pl.col("nonzero").fill_null(0) / buckets_per_series).mean())
    )
    by_flag = dict(share.iter_rows())
    assert by_flag[True] < 0.05
    assert by_flag[False] > 3 * by_flag[True]


def test_promotions_lift_sales(demand) -> None:
    tables, truth = demand
    flags = _daily_promotion(tables["signals"], truth)
    in_stock = tables["inventory"].filter(pl.col("on_hand") > 0).rename({"ts": "day"})
    daily = (
        flags.join(in_stock, on=[*KEY, "day"])
        .join(_daily_units(tables["sales"]), on=[*KEY, "day"], how="left")
        .with_columns(pl.col("units").fill_null(0.0))
    )
    promoted = daily.group_by(KEY).agg(pl.col("promo").max()).filter(pl.col("promo") == 1)
    assert promoted.height > 0.2 * N_SERIES
    daily = daily.join(promoted.select(KEY), on=KEY)
    means = dict(daily.group_by("promo").agg(pl.col("units").mean()).iter_rows())
    assert means[1.0] > 1.3 * means[0.0]


def test_stock_outs_censor_sales(demand) -> None:
    tables, truth = demand
    daily = (
        tables["inventory"]
        .rename({"ts": "day"})
        .join(_daily_units(tables["sales"]), on=[*KEY, "day"], how="left")
    )
    daily = daily.with_columns(pl.col("units").fill_null(0.0))
    empty = daily.filter(pl.col("on_hand") == 0)
    assert empty.height > 0.01 * daily.height
    assert (empty["units"] == 0).all()
    assert (daily["units"] <= daily["on_hand"]).all()
    assert truth["censored_units"].sum() > 0
    assert (truth["sold_units"] <= truth["demand_units"]).all()


def test_price_cuts_raise_sales_of_elastic_skus(demand) -> None:
    tables, truth = demand
    prices = (
        tables["signals"]
        .filter(pl.col("name") == "price")
        .select("sku", pl.col("ts").alias("day"), pl.col("value").alias("price"))
    )
    sales = tables["sales"].filter(pl.col("quantity") > 0, pl.col("unit_price").is_not_null())
    ratio = sales.join(truth.select(*KEY, "base_price"), on=KEY).with_columns(
        cheaper=pl.col("unit_price") < pl.col("base_price") * 0.95,
        dearer=pl.col("unit_price") > pl.col("base_price") * 1.05,
    )
    assert prices.height > truth["sku"].n_unique()  # some prices change in the window
    per_day = ratio.group_by(*KEY, pl.col("ts").dt.truncate("1d")).agg(
        pl.col("quantity").sum(), pl.col("cheaper").first(), pl.col("dearer").first()
    )
    cheap = per_day.filter("cheaper")["quantity"].mean()
    dear = per_day.filter("dearer")["quantity"].mean()
    assert cheap is not None and dear is not None
    assert cheap > dear


def test_end_off_midnight_cuts_sales_at_end() -> None:
    end = datetime(2025, 7, 1, 13, 30, tzinfo=UTC)
    tables, _ = demand_world(n_series=40, days=10, seed=1, end=end)
    last_sale = tables["sales"].select(pl.col("ts").max()).item()
    assert datetime(2025, 7, 1, tzinfo=UTC) <= last_sale < end
    assert tables["inventory"]["ts"].max() == datetime(2025, 7, 1, tzinfo=UTC)


def test_a_small_world_is_pinned() -> None:
    """Refactors keep the world byte-for-byte: the chunk's draws keep their order. Figures of
    the world the code wrote before `_demand_chunk` was split (2026-12-02)."""
    tables, truth = demand_world(n_series=12, days=30, seed=5)
    assert {name: frame.height for name, frame in tables.items()} == {
        "sales": 609,
        "signals": 18,
        "inventory": 360,
    }
    assert tables["sales"]["quantity"].sum() == 838.0
    assert tables["inventory"]["on_hand"].sum() == 5746.0
    assert truth["censored_units"].sum() == 130.0
    assert truth["base_rate_per_day"].sum() == pytest.approx(23.15524930257952, rel=1e-12)
