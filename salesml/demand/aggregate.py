"""Coherent aggregates of the bottom-level demand forecast (`demand_forecast_agg`; pure).

Levels (`LEVELS`): sku_day, sku_week, customer_day, region_day, total_bucket. Days are local
calendar days and weeks ISO weeks (from Monday) in `settings.timezone`, built from the wall-time
bucket numbers (`buckets`), so a DST day still holds its 6 buckets. `period_start` is the local
start of the period as an aware UTC instant (like `bucket_start`); `key` is readable text: the
sku, the customer_id, the region ('unknown' when the customer's last known region is null) or
'all'. A period only sums the forecast buckets inside it (`buckets`): the first and last day or
week of a horizon that starts mid-week are partial, and so are their actuals in a backtest.

Coherence: `expected` is the exact sum of the cell means (bottom-up), so every level adds up to
every other. P10/P50/P90 are whole units of a negative binomial matched to the aggregate's mean
M and variance V' = inflation * sum of cell variances (`DemandModel.variance`). Summing cell
variances assumes independent cells, which is too narrow when cells move together (a busy day
lifts every pizza); the per-level `inflation` is calibrated on held-out backtest aggregates
(`calibrate_inflation`: Mondrian per level, the factor that puts 80 % of the held-out
aggregates inside the normal 80 % interval). Sample paths would need a joint model of the
cells (we have none: they would repeat the independence assumption); `hierarchicalforecast`
(MinT) reconciles means, which bottom-up already makes coherent (neither was measured).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import numpy as np
import polars as pl

from salesml.config import Settings
from salesml.contract import DEMAND_AGG_LEVELS
from salesml.demand import buckets
from salesml.demand.model import count_quantile

LEVELS = DEMAND_AGG_LEVELS
UNKNOWN_REGION = "unknown"
TOTAL_KEY = "all"
MIN_INV_SIZE = 1e-3  # NB 1/size floor (~Poisson), as in model.py
MIN_INFLATION = 0.1
MAX_INFLATION = 20.0
INFLATION_KEY = "agg_inflation_"  # prefix of the per-level factors in Calibration.metrics
_LEVEL_KEYS = {
    "sku_day": ("sku", "day"),
    "sku_week": ("sku", "week"),
    "customer_day": ("customer_id", "day"),
    "region_day": ("region", "day"),
    "total_bucket": (None, "bucket"),
}


def region_map(sales: pl.DataFrame, before: datetime) -> pl.DataFrame:
    """customer_id -> region: the last non-null region of the customer's sales before `before`
    (the end of the origin bucket, `buckets.origin_end`; 'unknown' when none). Later rows never
    move it (time travel).
    """
    known = sales.lazy().filter(pl.col("ts") < before)
    if "region" not in sales.columns:
        known = known.with_columns(region=pl.lit(None, dtype=pl.String))
    customers = known.select("customer_id").unique()
    last = (
        known.filter(pl.col("region").is_not_null())
        .group_by("customer_id")
        .agg(pl.col("region").cast(pl.String).sort_by("ts").last())
    )
    return (
        customers.join(last, on="customer_id", how="left")
        .with_columns(pl.col("region").fill_null(UNKNOWN_REGION))
        .collect()
    )


def with_periods(frame: pl.DataFrame, bucket_hours: int) -> pl.DataFrame:
    """Adds local `day` and ISO-week `week` (the Monday's day number) of each bucket."""
    n_day = buckets.per_day(bucket_hours)
    day = pl.col("bucket").cast(pl.Int64) // n_day
    return frame.with_columns(day=day, week=day - buckets.weekday(pl.col("bucket"), bucket_hours))


def period_start(level: str, period: pl.Expr, timezone: str, bucket_hours: int) -> pl.Expr:
    """UTC start of a period number (a bucket for total_bucket, else a local day number)."""
    first = period if level == "total_bucket" else period * buckets.per_day(bucket_hours)
    return buckets.bucket_start(first, timezone, bucket_hours)


def sum_level(
    frame: pl.DataFrame,
    level: str,
    values: list[str],
    timezone: str,
    bucket_hours: int,
) -> pl.DataFrame:
    """Sums of `values` per (key, period) of `level`: level, key, period_start, buckets, ...
    `frame` needs bucket, customer_id, sku (and region for region_day).
    """
    key_col, period_col = _LEVEL_KEYS[level]
    key = pl.lit(TOTAL_KEY) if key_col is None else pl.col(key_col).cast(pl.String)
    data = with_periods(frame, bucket_hours) if period_col != "bucket" else frame
    # sequential sums in input order (numpy, stable sort on an integer group id), not polars'
    # parallel group_by whose float rounding varies between runs: same forecast, same rows
    data = data.select(key.alias("key"), pl.col(period_col).cast(pl.Int64).alias("_period"))
    code = (
        data["key"].cast(pl.Categorical).to_physical().cast(pl.Int64).to_numpy()
        if data.height
        else np.zeros(0, dtype=np.int64)
    )
    period = data["_period"].to_numpy()
    offset = period - (period.min() if period.size else 0)
    group = code * (int(offset.max()) + 1 if offset.size else 1) + offset
    order = np.argsort(group, kind="stable")
    starts = np.flatnonzero(np.diff(group[order], prepend=-1)) if order.size else order
    counts = np.diff(np.append(starts, order.size))
    first = order[starts]
    sums = {
        v: np.add.reduceat(frame_values(frame, v)[order], starts) if starts.size else np.zeros(0)
        for v in values
    }
    return (
        data[first]
        .select(
            pl.lit(level).alias("level"),
            "key",
            period_start(level, pl.col("_period"), timezone, bucket_hours).alias("period_start"),
            pl.Series("buckets", counts, dtype=pl.Int64),
            *(pl.Series(v, sums[v], dtype=pl.Float64) for v in values),
            "_period",
        )
        .sort("key", "_period")
        .drop("_period")
    )


def frame_values(frame: pl.DataFrame, column: str) -> np.ndarray:
    """A column as float64 numpy (the order of `frame`'s rows)."""
    return frame[column].cast(pl.Float64).to_numpy()


def sum_levels(
    frame: pl.DataFrame,
    regions: pl.DataFrame,
    values: list[str],
    timezone: str,
    bucket_hours: int,
    levels: tuple[str, ...] = LEVELS,
) -> pl.DataFrame:
    """`sum_level` for every level, stacked (regions: `region_map`)."""
    data = frame.join(regions, on="customer_id", how="left", maintain_order="left").with_columns(
        pl.col("region").fill_null(UNKNOWN_REGION)
    )
    return pl.concat([sum_level(data, lvl, values, timezone, bucket_hours) for lvl in levels])


def nb_interval(mean: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whole-unit (P10, P50, P90) of the negative binomial with this mean and variance (1/size
    floored at ~Poisson when var <= mean).
    """
    mean = np.maximum(np.asarray(mean, dtype=np.float64), 0.0)
    safe = np.maximum(mean, 1e-12)
    inv_size = np.maximum((np.asarray(var, dtype=np.float64) - safe) / safe**2, MIN_INV_SIZE)
    out = tuple(
        np.where(mean > 0, count_quantile(safe, inv_size, np.full(mean.shape, q)), 0.0)
        for q in (0.1, 0.5, 0.9)
    )
    return out[0], out[1], out[2]


def inflation_of(calibration: Mapping[str, float] | None, level: str) -> float:
    """The level's variance inflation from a model's `Calibration.metrics` (1.0 if absent)."""
    if not calibration:
        return 1.0
    value = calibration.get(f"{INFLATION_KEY}{level}", 1.0)
    return float(value) if np.isfinite(value) and value > 0 else 1.0


def aggregate_forecast(
    frame: pl.DataFrame,
    regions: pl.DataFrame,
    timezone: str,
    bucket_hours: int,
    inflation: Mapping[str, float] | None = None,
) -> pl.DataFrame:
    """The `demand_forecast_agg` rows (without lineage) of a bottom-level forecast frame
    (customer_id, sku, bucket, mean, var: `pipeline.forecast`). `inflation`: the calibration
    metrics holding per-level variance factors (`calibrate_inflation`; none: 1.0).
    """
    sums = sum_levels(frame, regions, ["mean", "var"], timezone, bucket_hours)
    factor = pl.col("level").replace_strict(
        {lvl: inflation_of(inflation, lvl) for lvl in LEVELS}, return_dtype=pl.Float64
    )
    sums = sums.with_columns(var=pl.col("var") * factor)
    p10, p50, p90 = nb_interval(sums["mean"].to_numpy(), sums["var"].to_numpy())
    return sums.select(
        "level",
        "key",
        "period_start",
        "buckets",
        pl.col("mean").cast(pl.Float64).alias("expected"),
        p10=pl.Series(p10),
        p50=pl.Series(p50),
        p90=pl.Series(p90),
    )


def forecast_agg(
    frame: pl.DataFrame,
    sales: pl.DataFrame,
    settings: Settings,
    as_of: datetime,
    calibration: Mapping[str, float] | None,
) -> pl.DataFrame:
    """`aggregate_forecast` of a forecast at `as_of`, regions as known at its origin."""
    hours = settings.demand.grid.bucket_hours
    regions = region_map(sales, buckets.origin_end(as_of, settings.timezone, hours))
    return aggregate_forecast(frame, regions, settings.timezone, hours, calibration)


def calibrate_inflation(
    held_out: pl.DataFrame,
    regions: pl.DataFrame,
    timezone: str,
    bucket_hours: int,
    target: float = 0.8,
) -> dict[str, float]:
    """Per-level variance factor on held-out rows (customer_id, sku, bucket, origin, y, mean,
    var) summed per origin: `quantile_factor` (Mondrian: one factor per level). Below 1 when
    the cells' negative-binomial variances already over-state the spread of their sum (cells
    moving against each other; over-wide cell intervals), above 1 when cells move together.
    Keys `agg_inflation_<level>`, ready for `Calibration.metrics`.
    """
    out: dict[str, float] = {}
    data = held_out.join(regions, on="customer_id", how="left", maintain_order="left").with_columns(
        pl.col("region").fill_null(UNKNOWN_REGION)
    )
    for level in LEVELS:
        parts = [
            sum_level(part, level, ["mean", "var", "y"], timezone, bucket_hours)
            for _, part in data.group_by("origin", maintain_order=True)
        ]
        sums = pl.concat(parts) if parts else pl.DataFrame()
        out[f"{INFLATION_KEY}{level}"] = (
            quantile_factor(
                sums["mean"].to_numpy(), sums["var"].to_numpy(), sums["y"].to_numpy(), target
            )
            if sums.height
            else 1.0
        )
    return out


def held_out_inflation(
    calibration: pl.DataFrame,
    series: pl.DataFrame,
    variance: np.ndarray,
    regions: pl.DataFrame,
    timezone: str,
    bucket_hours: int,
    target: float = 0.8,
) -> dict[str, float]:
    """`calibrate_inflation` on training's held-out rows (`FitResult.calibration`: series_id,
    bucket, h, y, mean; `variance` the model's per-row variance; `series` the history's
    series_id -> customer_id, sku). Whole series are sampled in large worlds, so a level's
    factor is measured on the sampled series' sums.
    """
    rows = calibration.select(
        "series_id",
        "bucket",
        (pl.col("bucket").cast(pl.Int64) - pl.col("h").cast(pl.Int64)).alias("origin"),
        pl.col("y").cast(pl.Float64),
        pl.col("mean").cast(pl.Float64),
        var=pl.Series(np.asarray(variance, dtype=np.float64)),
    ).join(
        series.select("series_id", "customer_id", "sku"),
        on="series_id",
        how="left",
        maintain_order="left",
    )
    return calibrate_inflation(rows, regions, timezone, bucket_hours, target)


def quantile_factor(mean: np.ndarray, var: np.ndarray, y: np.ndarray, target: float) -> float:
    """Variance factor k such that a share `target` of the held-out aggregates lie within the
    central normal `target` interval of (M, k V): the `target` quantile of z^2 = (y - M)^2 / V
    over that of a chi-square with 1 degree of freedom (1.642 for 0.8), clipped to
    [MIN_INFLATION, MAX_INFLATION]. A quantile, so one closed day (Thanksgiving) among a week
    of held-out days does not blow the interval up; and no search over whole-unit coverage,
    which is not monotone in the factor (a very dispersed negative binomial moves P90 down).
    """
    from scipy import stats

    keep = var > 0
    if not keep.any():
        return 1.0
    z2 = (y[keep] - mean[keep]) ** 2 / var[keep]
    value = float(np.quantile(z2, target)) / float(stats.chi2.ppf(target, 1))
    return float(np.clip(value, MIN_INFLATION, MAX_INFLATION))
