"""SKU stock health: red / yellow / green with plain reasons, from the forecast and on-hand stock.

Inputs: the forecast rows (customer_id, sku, bucket_start, horizon, mean, var: the predictive
mean and variance per bucket) and the inventory snapshots (ts, customer_id, sku, on_hand); only
snapshots at or before `as_of` are read. The on-hand quantity is the latest snapshot.
Projected stock-out: the instant the P50 (or P90) of cumulative forecast demand reaches
on-hand, interpolated linearly inside the bucket where it happens (see `_cumulative_demand`).
`projected_stockout_at` is the P50 one (null when stock lasts the whole horizon).

Safety level = `safety_stock_days` x the mean daily forecast demand over the horizon.
7-day sales growth = units sold in the 7 days up to as_of / units in the 7 days before - 1
(sales with ts <= as_of only; from nothing to something counts as growth).

Rules (the first that applies sets the colour; every rule that applies adds its reason):
- red: nothing on hand while demand is forecast; the P50 stock-out falls within
  `stockout_red_hours`; or stock below its safety level while 7-day sales grew more than
  `growth_threshold` (0.4 = 40%);
- yellow: a P50 stock-out within the horizon; a P90 stock-out within the horizon; stock below
  its safety level;
- green: stock covers high (P90) demand over the whole horizon.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

from salesml import contract
from salesml.config import DemandSettings
from salesml.jsonutil import json_text
from salesml.timeutil import DATETIME

HEALTH_SCHEMA: dict[str, pl.DataType] = contract.row_dtypes("sku_health")
"""The contract's `sku_health` columns without the lineage the warehouse stamps."""


def latest_on_hand(inventory: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    """(customer_id, sku, on_hand, on_hand_at): the last snapshot at or before `as_of`."""
    return (
        inventory.lazy()
        .filter(pl.col("ts") <= as_of)
        .sort("ts")
        .group_by("customer_id", "sku")
        .agg(
            pl.col("on_hand").last().cast(pl.Float64),
            pl.col("ts").last().alias("on_hand_at"),
        )
        .collect()
    )


def sales_growth(sales: pl.DataFrame, as_of: datetime, days: int = 7) -> pl.DataFrame:
    """(customer_id, sku, sold_recent, sold_before, growth) over two `days` windows to as_of."""
    recent_from = as_of - timedelta(days=days)
    before_from = as_of - timedelta(days=2 * days)
    window = sales.lazy().filter((pl.col("ts") > before_from) & (pl.col("ts") <= as_of))
    recent = pl.col("ts") > recent_from
    return (
        window.group_by("customer_id", "sku")
        .agg(
            pl.col("quantity").filter(recent).sum().alias("sold_recent"),
            pl.col("quantity").filter(~recent).sum().alias("sold_before"),
        )
        .with_columns(
            growth=pl.when(pl.col("sold_before") > 0)
            .then(pl.col("sold_recent") / pl.col("sold_before") - 1.0)
            .when(pl.col("sold_recent") > 0)
            .then(float("inf"))
            .otherwise(0.0)
        )
        .collect()
    )


def safety_level(total_demand: pl.Expr, demand: DemandSettings) -> pl.Expr:
    """The safety level of a series: `safety_stock_days` x its mean daily forecast demand over
    the horizon, from `total_demand` (the forecast mean summed over the horizon's buckets).
    The one definition `sku_health` and the stock-promotion alert share.
    """
    horizon_days = demand.grid.horizon_buckets * demand.grid.bucket_hours / 24.0
    return demand.safety_stock_days * total_demand / horizon_days


Z90 = 1.2815515655446004  # standard normal 0.9 quantile


def _cumulative_demand() -> tuple[pl.Expr, pl.Expr]:
    """(P50, P90) of cumulative demand up to the end of each bucket (rows sorted by horizon).

    The sum of many buckets is close to normal: its median is about its mean, its P90 about
    mean + 1.28 sd, with the bucket variances (negative binomial, `var`) added up. Summing
    per-bucket P50s (too low for skewed counts) or P90s (far too high) would not be quantiles
    of the total.
    """
    cum_mean = pl.col("mean").cum_sum().over("customer_id", "sku")
    cum_sd = pl.col("var").cum_sum().over("customer_id", "sku").sqrt()
    return cum_mean, cum_mean + Z90 * cum_sd


def _stockout_at(cumulative: pl.Expr) -> pl.Expr:
    """First instant `cumulative` demand reaches on_hand, interpolated inside the bucket."""
    before = cumulative.shift(1).over("customer_id", "sku").fill_null(0.0)
    step = cumulative - before
    reached = cumulative >= pl.col("on_hand")
    share = (
        pl.when(step > 0).then((pl.col("on_hand") - before) / step).otherwise(0.0).clip(0.0, 1.0)
    )
    length = (pl.col("bucket_end") - pl.col("bucket_start")).dt.total_microseconds()
    offset = (share * length).cast(pl.Int64, strict=False).fill_null(0)
    at = pl.col("bucket_start") + pl.duration(microseconds=offset)
    return at.filter(reached).first()


def sku_health(
    forecast: pl.DataFrame,
    inventory: pl.DataFrame,
    sales: pl.DataFrame,
    demand: DemandSettings,
    as_of: datetime,
) -> pl.DataFrame:
    """One row per forecast series with an inventory snapshot: health, reasons (JSON array of
    plain sentences), on_hand, projected_stockout_at (schema `HEALTH_SCHEMA`).
    """
    stock = latest_on_hand(inventory, as_of)
    if stock.height == 0 or forecast.height == 0:
        return pl.DataFrame(schema=HEALTH_SCHEMA)
    bucket = timedelta(hours=demand.grid.bucket_hours)
    rows = (
        forecast.lazy()
        .select("customer_id", "sku", "bucket_start", "horizon", "mean", "var")
        .join(stock.lazy(), on=["customer_id", "sku"], how="inner")
        .sort("customer_id", "sku", "horizon")
        .with_columns(
            bucket_end=pl.col("bucket_start")
            .shift(-1)
            .over("customer_id", "sku")
            .fill_null(pl.col("bucket_start") + bucket)
        )
    )
    cum_p50, cum_p90 = _cumulative_demand()
    rows = rows.with_columns(cum_p50=cum_p50, cum_p90=cum_p90)
    per_series = rows.group_by("customer_id", "sku").agg(
        pl.col("on_hand").first(),
        pl.col("cum_p50").last().alias("demand_p50"),
        pl.col("cum_p90").last().alias("demand_p90"),
        _stockout_at(pl.col("cum_p50")).alias("stockout_p50"),
        _stockout_at(pl.col("cum_p90")).alias("stockout_p90"),
    )
    growth = sales_growth(sales, as_of).lazy().select("customer_id", "sku", "growth")
    rated = (
        per_series.join(growth, on=["customer_id", "sku"], how="left")
        .with_columns(
            growth=pl.col("growth").fill_null(0.0),
            safety=safety_level(pl.col("demand_p50"), demand),
        )
        .collect()
    )
    return _rate(rated, demand, as_of)


def _fmt(value: pl.Expr, decimals: int = 1) -> pl.Expr:
    rounded = value.round(decimals)
    if decimals == 0:
        return rounded.cast(pl.Int64, strict=False).cast(pl.String)
    return rounded.cast(pl.String)


Rule = tuple[str, pl.Expr, pl.Expr]
"""(colour, condition, reason text): one health rule over the rated rows."""

_BELOW_SAFETY = pl.col("on_hand") < pl.col("safety")


def _rate(rated: pl.DataFrame, demand: DemandSettings, as_of: datetime) -> pl.DataFrame:
    """Colour and reasons per series from the rules (the first colour that applies, red before
    yellow; every rule that applies adds its reason; none: green with its cover reason).
    """
    rules = [*_red_rules(demand, as_of), *_yellow_rules(demand)]
    reasons = [pl.when(cond).then(text) for _, cond, text in rules]
    colour = pl.lit("green")
    for level in ("yellow", "red"):
        hit = pl.any_horizontal([cond.fill_null(False) for lv, cond, _ in rules if lv == level])
        colour = pl.when(hit).then(pl.lit(level)).otherwise(colour)
    green_reason = pl.format(
        "stock {} covers high (P90) demand of {} units over the horizon",
        _fmt(pl.col("on_hand")),
        _fmt(pl.col("demand_p90")),
    )
    out = rated.with_columns(
        health=colour,
        _reasons=pl.concat_list(reasons).list.drop_nulls(),
    ).with_columns(
        _reasons=pl.when(pl.col("_reasons").list.len() == 0)
        .then(pl.concat_list(green_reason))
        .otherwise(pl.col("_reasons"))
    )
    return (
        out.with_columns(reasons=json_text(pl.col("_reasons")))
        .select(
            "customer_id",
            "sku",
            "health",
            "reasons",
            "on_hand",
            pl.col("stockout_p50").cast(DATETIME).alias("projected_stockout_at"),
        )
        .sort("customer_id", "sku")
    )


def _below_safety_text(demand: DemandSettings) -> pl.Expr:
    return pl.format(
        "stock {} below its safety level {} ({} of demand)",
        _fmt(pl.col("on_hand")),
        _fmt(pl.col("safety"), 2),
        pl.lit(f"{demand.safety_stock_days:g} days"),
    )


def _red_rules(demand: DemandSettings, as_of: datetime) -> list[Rule]:
    """Out of stock with demand ahead; a P50 stock-out within `stockout_red_hours`; below the
    safety level while 7-day sales grew more than `growth_threshold`.
    """
    red_until = as_of + timedelta(hours=demand.stockout_red_hours)
    growing = pl.col("growth") > demand.growth_threshold
    growth_text = (
        pl.when(pl.col("growth").is_infinite())
        .then(pl.lit("from none"))
        .otherwise(pl.format("by {}%", _fmt(pl.col("growth") * 100, 0)))
    )
    return [
        (
            "red",
            (pl.col("on_hand") <= 0) & (pl.col("demand_p50") > 0),
            pl.format(
                "out of stock (on hand {}) while {} units are expected over the horizon",
                _fmt(pl.col("on_hand")),
                _fmt(pl.col("demand_p50")),
            ),
        ),
        (
            "red",
            (pl.col("on_hand") > 0) & (pl.col("stockout_p50") <= red_until),
            pl.format(
                "projected to run out within {} h at expected demand (at {})",
                pl.lit(f"{demand.stockout_red_hours:g}"),
                _when_text("stockout_p50"),
            ),
        ),
        (
            "red",
            _BELOW_SAFETY & growing,
            pl.format(
                "{} while 7-day sales grew {} (threshold {})",
                _below_safety_text(demand),
                growth_text,
                pl.lit(f"{demand.growth_threshold * 100:g}%"),
            ),
        ),
    ]


def _yellow_rules(demand: DemandSettings) -> list[Rule]:
    """A P50 or (only) a P90 stock-out within the horizon; below the safety level (not growing)."""
    growing = pl.col("growth") > demand.growth_threshold
    return [
        (
            "yellow",
            (pl.col("on_hand") > 0) & pl.col("stockout_p50").is_not_null(),
            pl.format("projected to run out at expected demand at {}", _when_text("stockout_p50")),
        ),
        (
            "yellow",
            (pl.col("on_hand") > 0)
            & pl.col("stockout_p50").is_null()
            & pl.col("stockout_p90").is_not_null(),
            pl.format("could run out by {} if demand is high (P90)", _when_text("stockout_p90")),
        ),
        ("yellow", _BELOW_SAFETY & ~growing, _below_safety_text(demand)),
    ]


def _when_text(column: str) -> pl.Expr:
    return pl.col(column).dt.to_string("%Y-%m-%d %H:%M UTC")
