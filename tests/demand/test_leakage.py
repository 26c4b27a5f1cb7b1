"""Time travel: rows after as_of (sales, observed signals, inventory) cannot move a forecast,
its training or SKU health; known-in-advance signals (promotion plan) can, by design."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from salesml.config import Settings
from salesml.demand import forecasting, health
from salesml.sample import WORLD_END, demand_world
from tests.demand.conftest import tiny_demand

AS_OF = WORLD_END - timedelta(days=7, hours=-1, minutes=-30)  # mid-bucket on purpose
QUANTILES = ["customer_id", "sku", "bucket_start", "horizon", "p10", "p50", "p90"]


@pytest.fixture(scope="module")
def world() -> dict[str, pl.DataFrame]:
    tables, _ = demand_world(n_series=40, days=63, seed=3)
    # an observed-only signal (e.g. footfall), with values after as_of too
    days = pl.datetime_range(
        WORLD_END - timedelta(days=63), WORLD_END, "1d", time_zone="UTC", eager=True
    )
    footfall = pl.DataFrame(
        {"ts": days, "name": "footfall", "value": [float(i % 5) for i in range(days.len())]}
    ).with_columns(
        pl.col("ts").dt.cast_time_unit("us"),
        sku=pl.lit(None, pl.String),
        customer_id=pl.lit(None, pl.String),
        region=pl.lit(None, pl.String),
    )
    tables["signals"] = pl.concat([tables["signals"], footfall], how="diagonal_relaxed")
    return tables


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(demand=tiny_demand(observed_signals=["footfall"]))


def _run(tables: dict[str, pl.DataFrame], settings: Settings) -> tuple[pl.DataFrame, pl.DataFrame]:
    fitted = forecasting.fit(tables["sales"], settings, AS_OF, tables["signals"])
    result = forecasting.forecast(fitted.model, tables["sales"], settings, AS_OF, tables["signals"])
    rated = health.sku_health(
        result.frame, tables["inventory"], tables["sales"], settings.demand, AS_OF
    )
    return result.frame.select(QUANTILES).sort(QUANTILES[:3]), rated


def _future(ts: pl.Expr, when: datetime = AS_OF) -> pl.Expr:
    return ts > when


def _tamper(tables: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """Change or delete every row after as_of, except known-in-advance signals."""
    sales = tables["sales"]
    future_sales = sales.filter(_future(pl.col("ts")))
    tampered_sales = pl.concat(
        [
            sales.filter(~_future(pl.col("ts"))),
            future_sales.with_columns(pl.col("quantity") * 10).head(future_sales.height // 2),
            future_sales.head(50).with_columns(pl.lit("NEWSTORE").alias("customer_id")),
        ]
    )
    signals = tables["signals"]
    observed = (pl.col("name") == "footfall") & _future(pl.col("ts"))
    tampered_signals = signals.with_columns(
        value=pl.when(observed).then(pl.col("value") * 100 + 7).otherwise(pl.col("value"))
    )
    inventory = tables["inventory"]
    tampered_inventory = inventory.with_columns(
        on_hand=pl.when(_future(pl.col("ts"))).then(0.0).otherwise(pl.col("on_hand"))
    )
    return {"sales": tampered_sales, "signals": tampered_signals, "inventory": tampered_inventory}


def test_future_rows_change_nothing(world: dict[str, pl.DataFrame], settings: Settings) -> None:
    assert world["sales"].filter(_future(pl.col("ts"))).height > 0
    forecast, rated = _run(world, settings)
    tampered_forecast, tampered_rated = _run(_tamper(world), settings)
    assert forecast.height > 0 and rated.height > 0
    assert_frame_equal(forecast, tampered_forecast)
    assert_frame_equal(rated, tampered_rated)
    first_bucket = forecast["bucket_start"].min()
    assert isinstance(first_bucket, datetime) and first_bucket <= AS_OF  # partial bucket first


def test_known_in_advance_signals_can_change_the_forecast(
    world: dict[str, pl.DataFrame], settings: Settings
) -> None:
    forecast, _ = _run(world, settings)
    # a store promotion planned for every series from tomorrow (most specific scope wins)
    plan = (
        world["sales"]
        .select("customer_id", "sku")
        .unique()
        .with_columns(
            ts=pl.lit(AS_OF + timedelta(days=1)).dt.cast_time_unit("us"),
            name=pl.lit("promotion"),
            value=pl.lit(1.0),
            region=pl.lit(None, pl.String),
        )
    )
    boosted = pl.concat([world["signals"], plan], how="diagonal_relaxed")
    fitted = forecasting.fit(world["sales"], settings, AS_OF, world["signals"])
    base = forecasting.forecast(fitted.model, world["sales"], settings, AS_OF, world["signals"])
    planned_run = forecasting.forecast(fitted.model, world["sales"], settings, AS_OF, boosted)
    assert "signal_promotion" in fitted.model.feature_names_
    assert_frame_equal(base.frame.select(QUANTILES).sort(QUANTILES[:3]), forecast)
    before = base.features["signal_promotion"].fill_null(-1.0)
    after = planned_run.features["signal_promotion"].fill_null(-1.0)
    assert (before != after).sum() > base.frame.height // 2
    assert (base.frame["mean"] != planned_run.frame["mean"]).any()
