"""Forecasts for series with no (or too little) history, from similar series ("cold start").

Which series are cold at as_of (`cold_series`): a (customer_id, sku) with inventory readings at or
before as_of but no sale in the history window (stock on the shelf, nothing sold yet), and one whose
first sale is fewer than `demand.grid.cold_start_min_days` days before the origin (too little history
for the model's lags and seasonal features).

The rule (`cold_start_forecast`), per target bucket, from the last `seasonal_lag_weeks` weeks up to
the origin (known buckets only: closure days and stock-outs are skipped):
1. same SKU at other customers: the mean per series of that slot of the week (weekday x bucket of
   day) over the SKU's established series elsewhere, scaled by the customer's size relative to
   theirs (its mean total per bucket over all its SKUs / the mean of those customers'; 1 when the
   customer has no sale in the window, e.g. a new customer);
2. else the same category (`demand.grid.category_column` on sales, the SKU's last value): the mean per
   series of that slot over the category's established series, scaled the same way;
3. else the customer's per-SKU average of that slot over its established series (0 if none).
Slots in which the customer is always closed are 0. The distribution is Poisson with that mean:
P10/P50/P90 are whole units, ordered, P10 <= expected < P90 + 1, and `expected` is the mean.
Rows carry `basis = 'cold_start'` in `demand_forecast` (model rows: 'model').
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl
from scipy.stats import poisson

from salesml.config import DemandSettings
from salesml.demand import buckets
from salesml.demand.features import History
from salesml.timeutil import DATETIME

_KEY = ["customer_id", "sku"]


def sku_categories(sales: pl.DataFrame | pl.LazyFrame, column: str | None) -> pl.DataFrame:
    """(sku, category): the last non-null value of `column` per SKU (empty without one)."""
    empty = pl.DataFrame(schema={"sku": pl.String, "category": pl.String})
    if column is None:
        return empty
    lf = sales.lazy()
    if column not in lf.collect_schema().names():
        raise ValueError(f"sales: demand.grid.category_column {column!r} is not a column of sales")
    return (
        lf.filter(pl.col(column).is_not_null())
        .sort("ts")
        .group_by("sku")
        .agg(pl.col(column).last().cast(pl.String).alias("category"))
        .collect()
    )


def cold_series(
    history: History,
    demand: DemandSettings,
    as_of: datetime,
    inventory: pl.DataFrame | pl.LazyFrame | None,
) -> pl.DataFrame:
    """(customer_id, sku) of the cold series at as_of (see module doc); inventory readings
    after as_of are not read.
    """
    young_from = history.origin - demand.grid.cold_start_min_days * history.day + 1
    young = history.series.filter(pl.col("first_bucket") >= young_from).select(_KEY)
    parts = [young]
    if inventory is not None:
        stocked = (
            inventory.lazy()
            .filter(pl.col("ts").cast(DATETIME) <= as_of)
            .select(_KEY)
            .unique()
            .collect()
            .join(history.series.select(_KEY), on=_KEY, how="anti")
        )
        parts.append(stocked)
    return pl.concat(parts).unique().sort(_KEY)


def cold_start_forecast(
    history: History,
    cold: pl.DataFrame,
    categories: pl.DataFrame,
    demand: DemandSettings,
) -> pl.DataFrame:
    """Forecast rows of the `cold` series for buckets origin+1 .. origin+horizon: customer_id,
    sku, bucket, bucket_start, horizon, mean, p10, p50, p90, basis ('cold_start').
    """
    schema: dict[str, pl.DataType | type[pl.DataType]] = {
        "customer_id": pl.String,
        "sku": pl.String,
        "bucket": pl.Int32,
        "bucket_start": DATETIME,
        "horizon": pl.Int32,
        "mean": pl.Float64,
        "p10": pl.Float64,
        "p50": pl.Float64,
        "p90": pl.Float64,
        "basis": pl.String,
    }
    if cold.height == 0:
        return pl.DataFrame(schema=schema)
    hours = history.bucket_hours
    profile = _slot_profile(history, demand, cold)
    size = _customer_size(history, demand)
    steps = pl.DataFrame(
        {"horizon": np.arange(1, history.horizon + 1, dtype=np.int32)}
    ).with_columns(bucket=(pl.col("horizon") + history.origin).cast(pl.Int32))
    rows = (
        cold.select(_KEY)
        .join(categories, on="sku", how="left")
        .join(steps, how="cross")
        .with_columns(slot=buckets.slot_of_week(pl.col("bucket"), hours))
        .join(size, on="customer_id", how="left")
    )
    mean = _level(rows, profile.join(size, on="customer_id", how="left"), categories)
    closed = history.closed.select("customer_id", "slot", pl.lit(True).alias("always_closed"))
    mean = mean.join(closed, on=["customer_id", "slot"], how="left").with_columns(
        mean=pl.when(pl.col("always_closed").fill_null(False)).then(0.0).otherwise(pl.col("mean"))
    )
    lam = mean["mean"].to_numpy()
    quantiles = {
        f"p{int(q * 100)}": np.where(lam > 0, poisson.ppf(q, np.maximum(lam, 1e-12)), 0.0)
        for q in (0.1, 0.5, 0.9)
    }
    return mean.select(
        *_KEY,
        "bucket",
        buckets.bucket_start(pl.col("bucket"), history.timezone, hours).alias("bucket_start"),
        "horizon",
        "mean",
        **{name: pl.Series(values, dtype=pl.Float64) for name, values in quantiles.items()},
        basis=pl.lit("cold_start"),
    ).sort(*_KEY, "bucket")


def _slot_profile(history: History, demand: DemandSettings, cold: pl.DataFrame) -> pl.DataFrame:
    """Per established series (not cold) and slot of the week: mean y over the known buckets
    of the last `seasonal_lag_weeks` weeks up to the origin; with customer_id, sku.
    """
    hours = history.bucket_hours
    since = history.origin - demand.features.seasonal_lag_weeks * history.week + 1
    established = history.series.join(cold, on=_KEY, how="anti").select("series_id", *_KEY)
    return (
        history.grid.lazy()
        .filter(pl.col("bucket").is_between(since, history.origin) & pl.col("y").is_not_null())
        .group_by("series_id", buckets.slot_of_week(pl.col("bucket"), hours).alias("slot"))
        .agg(pl.col("y").cast(pl.Float64).mean().alias("level"))
        .join(established.lazy(), on="series_id")
        .collect()
    )


def _customer_size(history: History, demand: DemandSettings) -> pl.DataFrame:
    """(customer_id, size): mean total units per bucket over the last `seasonal_lag_weeks`
    weeks up to the origin, all its SKUs (known buckets).
    """
    since = history.origin - demand.features.seasonal_lag_weeks * history.week + 1
    return (
        history.grid.lazy()
        .filter(pl.col("bucket").is_between(since, history.origin))
        .join(history.series.lazy().select("series_id", "customer_id"), on="series_id")
        .group_by("customer_id", "bucket")
        .agg(pl.col("y").cast(pl.Float64).sum())
        .group_by("customer_id")
        .agg(pl.col("y").mean().alias("size"))
        .collect()
    )


def _level(rows: pl.DataFrame, profile: pl.DataFrame, categories: pl.DataFrame) -> pl.DataFrame:
    """`rows` (with the customer's `size`) plus `mean` by the first rule that has peers (module
    doc) and `rule` ('sku' | 'category' | 'customer' | 'none').
    """
    by_sku = profile.group_by("sku", "slot").agg(
        pl.col("level").mean().alias("sku_level"), pl.col("size").mean().alias("sku_size")
    )
    by_category = (
        profile.join(categories, on="sku")
        .group_by("category", "slot")
        .agg(
            pl.col("level").mean().alias("category_level"),
            pl.col("size").mean().alias("category_size"),
        )
    )
    by_customer = profile.group_by("customer_id", "slot").agg(
        pl.col("level").mean().alias("customer_level")
    )
    frame = (
        rows.join(by_sku, on=["sku", "slot"], how="left")
        .join(by_category, on=["category", "slot"], how="left")
        .join(by_customer, on=["customer_id", "slot"], how="left")
    )
    own = pl.col("size").fill_null(0.0)

    def scaled(level: str, peer_size: str) -> pl.Expr:
        """Peers' level x the customer's size relative to theirs (1 without a size)."""
        ratio = pl.when((own > 0) & (pl.col(peer_size) > 0)).then(own / pl.col(peer_size))
        return pl.col(level) * ratio.otherwise(1.0)

    return frame.with_columns(
        mean=pl.coalesce(
            scaled("sku_level", "sku_size"),
            scaled("category_level", "category_size"),
            pl.col("customer_level"),
            pl.lit(0.0),
        ).cast(pl.Float64),
        rule=pl.when(pl.col("sku_level").is_not_null())
        .then(pl.lit("sku"))
        .when(pl.col("category_level").is_not_null())
        .then(pl.lit("category"))
        .when(pl.col("customer_level").is_not_null())
        .then(pl.lit("customer"))
        .otherwise(pl.lit("none")),
    )
