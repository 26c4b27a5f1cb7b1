"""Sales -> 4-hour buckets on a dense grid, aligned to midnight in the configured timezone.

A bucket is identified by an integer `bucket`: the local wall-clock time (in `settings.timezone`)
counted in `bucket_hours` steps since 1970-01-01 00:00 local. Because the count runs on wall
time, a local day always holds 24 / bucket_hours buckets, bucket k of a day is the same
time-of-day every day, and "the same bucket one week earlier" is always `bucket - 7 * per_day`,
across DST changes too. The price is that a bucket spanning a DST change lasts 3 or 5 real hours
(00:00-04:00 on a spring-forward day in Europe/Berlin is 3 hours long); `bucket_start` gives
its true UTC start.

Time semantics: the forecast origin at `as_of` is the last bucket that ended at or before
`as_of`; sales in the partial bucket that contains `as_of` are left out of the history (the
first bucket forecast is that partial bucket).
"""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from salesml.config import DemandSettings
from salesml.timeutil import DATETIME

_US_PER_HOUR = 3_600_000_000
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)


def per_day(bucket_hours: int) -> int:
    """Buckets per local day."""
    return 24 // bucket_hours


def per_week(bucket_hours: int) -> int:
    """Buckets per local week (42 for 4-hour buckets)."""
    return 7 * per_day(bucket_hours)


def bucket_index(ts: pl.Expr, timezone: str, bucket_hours: int) -> pl.Expr:
    """Bucket number (Int32) of UTC datetimes `ts`, counted on local wall time in `timezone`."""
    local_us = ts.dt.convert_time_zone(timezone).dt.replace_time_zone(None).dt.epoch("us")
    return (local_us // (bucket_hours * _US_PER_HOUR)).cast(pl.Int32)


def bucket_start(index: pl.Expr, timezone: str, bucket_hours: int) -> pl.Expr:
    """UTC start instant of bucket `index`.

    A local start that does not exist (a DST gap at the boundary, e.g. zones that change at
    midnight) moves to the first instant after the gap; an ambiguous one takes the earlier.
    """
    local = (index.cast(pl.Int64) * (bucket_hours * _US_PER_HOUR)).cast(pl.Datetime("us"))

    def to_utc(naive: pl.Expr) -> pl.Expr:
        return naive.dt.replace_time_zone(
            timezone, ambiguous="earliest", non_existent="null"
        ).dt.convert_time_zone("UTC")

    # In a gap, the first valid wall time is at most one hour later in every real zone.
    after_gap = to_utc(local.dt.offset_by("1h")).dt.offset_by("-1h")
    return pl.coalesce(to_utc(local), after_gap).cast(DATETIME)


def slot_of_week(index: pl.Expr, bucket_hours: int) -> pl.Expr:
    """0 .. per_week-1: weekday (Monday = 0) * per_day + bucket of day."""
    n_day = per_day(bucket_hours)
    day = index.cast(pl.Int64) // n_day
    return ((((day + _EPOCH_WEEKDAY) % 7) * n_day) + index.cast(pl.Int64) % n_day).cast(pl.Int16)


def bucket_of_day(index: pl.Expr, bucket_hours: int) -> pl.Expr:
    """Position of the bucket within its local day: 0 .. per_day(bucket_hours) - 1."""
    return (index.cast(pl.Int64) % per_day(bucket_hours)).cast(pl.Int8)


def weekday(index: pl.Expr, bucket_hours: int) -> pl.Expr:
    """Monday = 0 .. Sunday = 6, of the local day holding the bucket."""
    return (((index.cast(pl.Int64) // per_day(bucket_hours)) + _EPOCH_WEEKDAY) % 7).cast(pl.Int8)


def local_date(index: pl.Expr, bucket_hours: int) -> pl.Expr:
    """Local calendar date of the bucket."""
    return (index.cast(pl.Int64) // per_day(bucket_hours)).cast(pl.Int32).cast(pl.Date)


def origin_bucket(as_of: datetime, timezone: str, bucket_hours: int) -> int:
    """The last bucket that ended at or before `as_of` (the forecast origin)."""
    frame = pl.DataFrame({"ts": [as_of.astimezone(UTC)]}, schema={"ts": DATETIME})
    current = frame.select(bucket_index(pl.col("ts"), timezone, bucket_hours)).item()
    return int(current) - 1


def bucket_start_value(index: int, timezone: str, bucket_hours: int) -> datetime:
    """`bucket_start` for one bucket number, as a tz-aware UTC datetime."""
    frame = pl.DataFrame({"b": [index]}, schema={"b": pl.Int64})
    value = frame.select(bucket_start(pl.col("b"), timezone, bucket_hours)).item()
    assert isinstance(value, datetime)
    return value.astimezone(UTC)


def origin_end(as_of: datetime, timezone: str, bucket_hours: int) -> datetime:
    """End of the origin bucket: sales at or after this instant are not in the history."""
    return bucket_start_value(
        origin_bucket(as_of, timezone, bucket_hours) + 1, timezone, bucket_hours
    )


def bucket_sales(
    sales: pl.LazyFrame | pl.DataFrame,
    demand: DemandSettings,
    timezone: str,
    origin: int,
) -> pl.LazyFrame:
    """Sum sales per (customer_id, sku, bucket) for complete buckets up to `origin`.

    returns="net": a return (negative quantity) reduces the bucket's demand, and a bucket whose
    returns exceed its sales counts as 0 (demand is never negative); returns="ignore": only
    positive quantities count. Also carries the bucket's mean positive unit price (null if none)
    and the series' last seen region.
    """
    hours = demand.grid.bucket_hours
    lf = sales.lazy().with_columns(bucket=bucket_index(pl.col("ts"), timezone, hours))
    lf = lf.filter(pl.col("bucket") <= origin)
    quantity = pl.col("quantity").cast(pl.Float64)
    if demand.grid.returns == "ignore":
        quantity = pl.when(quantity > 0).then(quantity).otherwise(0.0)
    schema = lf.collect_schema()
    price = (
        pl.col("unit_price").filter(pl.col("quantity") > 0).mean().cast(pl.Float32)
        if "unit_price" in schema
        else pl.lit(None, dtype=pl.Float32)
    )
    region = (
        pl.col("region").drop_nulls().last().cast(pl.String)
        if "region" in schema
        else pl.lit(None, dtype=pl.String)
    )
    return (
        lf.group_by("customer_id", "sku", "bucket")
        .agg(
            quantity.sum().clip(lower_bound=0.0).cast(pl.Float32).alias("y"),
            price.alias("unit_price"),
            region.alias("region"),
        )
        .sort("customer_id", "sku", "bucket")
    )


def closed_slots(
    sold: pl.LazyFrame | pl.DataFrame, demand: DemandSettings, origin: int
) -> pl.DataFrame:
    """Slots of the week (weekday x bucket of day) in which a customer has never sold anything.

    A business is "always closed" in a slot when it has at least `closed_min_weeks` weeks of
    history up to `origin` and not one positive sale in that slot. Such buckets are forecast as
    zero and left out of training (they carry no signal, only zeros the model would learn as
    noise). Returns (customer_id, slot) for the closed slots.
    """
    hours = demand.grid.bucket_hours
    n_week = per_week(hours)
    lf = sold.lazy().filter(pl.col("y") > 0)
    first = lf.group_by("customer_id").agg(pl.col("bucket").min().alias("first_bucket"))
    eligible = first.filter(
        (origin - pl.col("first_bucket") + 1) >= demand.grid.closed_min_weeks * n_week
    ).select("customer_id")
    open_slots = lf.select(
        "customer_id", slot_of_week(pl.col("bucket"), hours).alias("slot")
    ).unique()
    all_slots = eligible.join(
        pl.LazyFrame({"slot": pl.int_range(0, n_week, dtype=pl.Int16, eager=True)}), how="cross"
    )
    return (
        all_slots.join(open_slots, on=["customer_id", "slot"], how="anti")
        .sort("customer_id", "slot")
        .collect()
    )
