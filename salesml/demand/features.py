"""Demand features on the dense bucket grid: declared as polars expressions, computed in bulk.

The training and forecasting rows are (target bucket t, horizon h): the model predicts bucket t
from what was known at the origin o = t - h (the last complete bucket at as_of when forecasting;
t - h for a training row, with h drawn per row so one global model learns every horizon: the
"direct" strategy with the horizon as a feature, no recursion, no row replication).

Which time each feature reads (no feature reads after the origin unless it is known in advance):
- recent lags `lag_k`, rolling means/spreads, intermittency, series/SKU/customer aggregates,
  observed signals: values up to and including the origin bucket o;
- seasonal lags `same_bucket_w{k}` (same bucket k weeks earlier, t - k*week) and their
  mean / spread over `seasonal_lag_weeks` weeks: only when that bucket is <= o (k*week >= h),
  else null;
- calendar (bucket of day, weekday, holiday) and known-in-advance signals (price, promotion plan):
  at the target bucket t, by design.

Row positions: the grid is sorted by (series_id, bucket) and dense per series, so "k buckets
earlier" is "k rows earlier" as long as it stays inside the series (row >= the series' start
row). Sums over windows use global cumulative sums (differences inside one series are exact).

Why direct and not recursive: measured on the pizza year and the synthetic world
(`benchmarks/bench_demand_strategy.py`), see `salesml.demand.forecasting`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cached_property

import numpy as np
import polars as pl

from salesml.config import DemandSettings
from salesml.demand import buckets
from salesml.timeutil import DATETIME

# Hash seeds (fixed so the same data gives the same rows; independent of settings.seed).
_HORIZON_SEED = 11
_SAMPLE_SEED = 29


@dataclass(frozen=True)
class History:
    """The dense grid of every series from its first sale (within `history_days`) to the
    origin, extended by `horizon` future buckets whose `y` is null.

    series: series_id (row position in this frame), customer_id, sku, region, customer_idx,
      sku_idx, first_bucket, start_row, end_row, last_sale_bucket, active.
    grid: series_id, bucket, y (Float32; null after the origin and on missing buckets: closure
      days, stock-outs), closed, and helper columns cs / cs2 / cnz (global cumulative sum of y,
      y^2, y > 0, up to and including the row); only when a bucket was censored by a stock-out:
      stockout (that flag) and ck (cumulative count of rows not censored),
      last_sale_row (global row of the last sale up to the row; from another series when it
      is before the series' start row), unit_price (last positive-sale price up to the row).
    """

    series: pl.DataFrame
    grid: pl.DataFrame
    closed: pl.DataFrame
    origin: int
    horizon: int
    timezone: str
    bucket_hours: int

    @property
    def week(self) -> int:
        """Buckets per week."""
        return buckets.per_week(self.bucket_hours)

    @property
    def day(self) -> int:
        """Buckets per local day."""
        return buckets.per_day(self.bucket_hours)

    def col(self, name: str) -> pl.Expr:
        """A grid column as a literal to `gather` from with row positions."""
        return pl.lit(self.grid.get_column(name))

    @cached_property
    def sku_rolling(self) -> pl.DataFrame:
        """Per (sku_idx, bucket <= origin): week_mean (per series), bucket_mean (per series)."""
        return _group_rolling(self, "sku_idx").collect()

    @cached_property
    def customer_rolling(self) -> pl.DataFrame:
        """Per (customer_idx, bucket <= origin): week_total (mean customer total per bucket)."""
        return _group_rolling(self, "customer_idx").collect()


def build_history(
    sales: pl.DataFrame | pl.LazyFrame,
    demand: DemandSettings,
    timezone: str,
    as_of: datetime,
    horizon: int | None = None,
    inventory: pl.DataFrame | pl.LazyFrame | None = None,
) -> History:
    """Bucket `sales` (events <= as_of) and lay out the dense grid up to the origin + horizon.

    Series = (customer_id, sku) with at least one sale in the last `history_days`; `active`
    series (a sale in the last `active_days`) are the ones forecast. Sales after the origin
    bucket's end are ignored even if given (time travel). With `inventory` (readings <= as_of)
    and `censor_stockouts`, stock-out buckets that sold nothing are missing (`stockout_buckets`).
    """
    hours = demand.grid.bucket_hours
    horizon = demand.grid.horizon_buckets if horizon is None else horizon
    origin = buckets.origin_bucket(as_of, timezone, hours)
    window_start = origin - demand.grid.history_days * buckets.per_day(hours) + 1
    sold = (
        buckets.bucket_sales(sales, demand, timezone, origin)
        .filter(pl.col("bucket") >= window_start)
        .collect()
    )
    closed = (
        buckets.closed_slots(sold, demand, origin) if demand.grid.detect_closed else _no_closed()
    )
    series = (
        _series(sold, demand, origin)
        .with_columns(n_rows=(origin + horizon - pl.col("first_bucket") + 1).cast(pl.Int64))
        .with_columns(start_row=pl.col("n_rows").cum_sum().shift(1, fill_value=0))
        .with_columns(end_row=pl.col("start_row") + pl.col("n_rows") - 1)
    )
    closures = closure_days(sold, demand, origin)
    stockouts = (
        stockout_buckets(inventory, timezone, hours, as_of, origin)
        if inventory is not None and demand.grid.censor_stockouts
        else None
    )
    grid = _grid(series, sold, closed, origin, hours, closures, stockouts)
    return History(series, grid, closed, origin, horizon, timezone, hours)


def closure_days(sold: pl.DataFrame, demand: DemandSettings, origin: int) -> pl.DataFrame:
    """(customer_id, day) of the local days a usually-daily customer sold nothing at all.

    A customer that sold on at least `closure_min_day_share` of its complete days (from its
    first sale up to the origin; only days <= the origin's day are read) and sold nothing on a
    whole day was closed that day (a holiday, a closed Monday): its buckets are missing, not
    zero demand. Left as zeros they pull the level down and teach "closed again next week"
    (pizza 2015: closed Mondays in October and 24-25 September drove the mean -12 % .. +28 %).
    `day` is the local day number (bucket // buckets per day).
    """
    empty = pl.DataFrame(schema={"customer_id": pl.String, "day": pl.Int64})
    if demand.grid.closure_min_day_share >= 1.0 or sold.height == 0:
        return empty
    n_day = buckets.per_day(demand.grid.bucket_hours)
    last_day = (origin + 1) // n_day - 1  # the last complete local day at the origin
    daily = (
        sold.lazy()
        .filter(pl.col("y") > 0)
        .select("customer_id", (pl.col("bucket").cast(pl.Int64) // n_day).alias("day"))
        .filter(pl.col("day") <= last_day)
        .unique()
    )
    span = daily.group_by("customer_id").agg(
        pl.col("day").min().alias("first_day"), pl.len().alias("days_sold")
    )
    busy = span.filter(
        pl.col("days_sold")
        >= demand.grid.closure_min_day_share * (last_day - pl.col("first_day") + 1)
    ).with_columns(day=pl.int_ranges(pl.col("first_day"), last_day + 1))
    return (
        busy.explode("day")
        .select("customer_id", pl.col("day").cast(pl.Int64))
        .join(daily, on=["customer_id", "day"], how="anti")
        .collect()
    )


def stockout_buckets(
    inventory: pl.DataFrame | pl.LazyFrame,
    timezone: str,
    bucket_hours: int,
    as_of: datetime,
    origin: int,
) -> pl.DataFrame:
    """(customer_id, sku, bucket) of the buckets <= `origin` spent entirely out of stock.

    Reads only inventory readings with ts <= as_of. A stock-out run starts at a reading with
    on_hand <= 0 (after a positive one or none) and ends at the next reading with on_hand > 0
    (a restock; none known yet: it lasts to the origin). Bucket b is out of stock when the run
    covers it whole: the level in force at b's start (last reading at or before it) is <= 0 and
    no restock falls inside b. Whether b is out of stock depends only on readings before b's end,
    so a training target and every feature at an origin read only what was known then.
    `_grid` censors such a bucket (y missing) only when it sold nothing: a bucket with a sale
    despite the reading shows demand served and keeps its (lower-bound) count.
    """
    key = ["customer_id", "sku"]
    readings = (
        inventory.lazy()
        .select(*key, pl.col("ts").cast(DATETIME), pl.col("on_hand").cast(pl.Float64))
        .filter(pl.col("ts") <= as_of)
        .sort(*key, "ts")
        .with_columns(out=pl.col("on_hand") <= 0)
        .with_columns(
            starts=pl.col("out") & ~pl.col("out").shift(1, fill_value=False).over(key),
            next_ts=pl.col("ts").shift(-1).over(key),
        )
        .with_columns(run=pl.col("starts").cum_sum().over(key))
        .filter(pl.col("out"))
    )
    runs = readings.group_by(*key, "run").agg(
        pl.col("ts").first().alias("start"), pl.col("next_ts").last().alias("end")
    )
    index = buckets.bucket_index
    first = index(pl.col("start").dt.offset_by("-1us"), timezone, bucket_hours) + 1
    last = (
        pl.when(pl.col("end").is_null())
        .then(pl.lit(origin, dtype=pl.Int32))
        .otherwise(index(pl.col("end"), timezone, bucket_hours) - 1)
    )
    return (
        runs.select(*key, first.alias("first"), pl.min_horizontal(last, origin).alias("last"))
        .filter(pl.col("first") <= pl.col("last"))
        .select(*key, pl.int_ranges("first", pl.col("last") + 1, dtype=pl.Int32).alias("bucket"))
        .explode("bucket")
        .unique()
        .sort(*key, "bucket")
        .collect()
    )


def _no_closed() -> pl.DataFrame:
    return pl.DataFrame(schema={"customer_id": pl.String, "slot": pl.Int16})


def _series(sold: pl.DataFrame, demand: DemandSettings, origin: int) -> pl.DataFrame:
    active_from = origin - demand.grid.active_days * buckets.per_day(demand.grid.bucket_hours) + 1
    series = (
        sold.lazy()
        .group_by("customer_id", "sku")
        .agg(
            pl.col("bucket").filter(pl.col("y") > 0).min().alias("first_sale"),
            pl.col("bucket").min().alias("first_bucket"),
            pl.col("bucket").filter(pl.col("y") > 0).max().alias("last_sale_bucket"),
            pl.col("region").drop_nulls().last().alias("region"),
        )
        .filter(pl.col("first_sale").is_not_null())
        .with_columns(pl.col("first_sale").alias("first_bucket"))
        .drop("first_sale")
        .sort("customer_id", "sku")
        .with_row_index("series_id")
        .with_columns(
            customer_idx=pl.col("customer_id").rank("dense").cast(pl.UInt32) - 1,
            sku_idx=pl.col("sku").rank("dense").cast(pl.UInt32) - 1,
            active=pl.col("last_sale_bucket") >= active_from,
        )
        .collect()
    )
    return series


def _grid(
    series: pl.DataFrame,
    sold: pl.DataFrame,
    closed: pl.DataFrame,
    origin: int,
    hours: int,
    closures: pl.DataFrame | None = None,
    stockouts: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Lay the grid out by position (series i owns rows start_row .. end_row, one per bucket)
    and scatter the observed buckets into it: no join over the (large) grid. Buckets of a
    customer's closure days (`closure_days`) and stock-out buckets without a sale
    (`stockout_buckets`) get y = null (missing).
    """
    n_rows = series["n_rows"].to_numpy()
    start = series["start_row"].to_numpy()
    first = series["first_bucket"].to_numpy().astype(np.int64)
    total = int(n_rows.sum())
    series_id = np.repeat(series["series_id"].to_numpy(), n_rows)
    bucket = (np.arange(total, dtype=np.int64) - np.repeat(start - first, n_rows)).astype(np.int32)
    y, price = _scatter_observed(series, sold, total)
    out_of_stock = _out_of_stock(series, stockouts, origin, total)
    start_of = pl.lit(series["start_row"]).gather(pl.col("series_id"))
    row = pl.int_range(pl.len(), dtype=pl.Int32)
    price_row = pl.when(pl.col("unit_price").is_not_nan()).then(row).forward_fill()
    # censored by a stock-out (sold nothing while out of stock); kept on the grid as `stockout`
    stocked_out = pl.col("out_of_stock") & (pl.col("y") == 0) & (pl.col("bucket") <= origin)
    grid = (
        pl.DataFrame(
            {
                "series_id": series_id,
                "bucket": bucket,
                "y": y,
                "unit_price": price,
                "out_of_stock": out_of_stock,
            }
        )
        .with_columns(
            y=pl.when(
                (pl.col("bucket") <= origin)
                & ~_on_closure_day(series, closures, hours)
                & ~stocked_out
            ).then(pl.col("y")),
            stockout=stocked_out,
            closed=_closed_slot(series, closed, hours),
            # last known price of this series (forward fill that stops at the series' start)
            unit_price=pl.when(price_row >= start_of).then(
                pl.col("unit_price").gather(price_row.fill_null(0))
            ),
        )
        .drop("out_of_stock" if out_of_stock.any() else ["out_of_stock", "stockout"])
    )
    return with_running_sums(grid).collect()


def _scatter_observed(
    series: pl.DataFrame, sold: pl.DataFrame, total: int
) -> tuple[np.ndarray, np.ndarray]:
    """(y, unit_price) per grid row: the observed buckets scattered by position, 0 and NaN
    elsewhere; returns-only buckets before a series' first sale are left out.
    """
    observed = sold.join(
        series.select("series_id", "customer_id", "sku", "start_row", "first_bucket"),
        on=["customer_id", "sku"],
    ).filter(pl.col("bucket") >= pl.col("first_bucket"))  # returns-only buckets before it
    observed = observed.select(
        (pl.col("start_row") + pl.col("bucket") - pl.col("first_bucket")).alias("pos"),
        "y",
        pl.col("unit_price").fill_null(float("nan")),
    )
    position = observed["pos"].to_numpy()
    y = np.zeros(total, dtype=np.float32)
    y[position] = observed["y"].to_numpy()
    price = np.full(total, np.nan, dtype=np.float32)
    price[position] = observed["unit_price"].to_numpy()
    return y, price


def _out_of_stock(
    series: pl.DataFrame, stockouts: pl.DataFrame | None, origin: int, total: int
) -> np.ndarray:
    """Bool per grid row: a stock-out bucket (`stockout_buckets`) of the row's series."""
    out_of_stock = np.zeros(total, dtype=bool)
    if stockouts is not None and stockouts.height:
        censored = stockouts.join(
            series.select("customer_id", "sku", "start_row", "first_bucket"),
            on=["customer_id", "sku"],
        ).filter((pl.col("bucket") >= pl.col("first_bucket")) & (pl.col("bucket") <= origin))
        out_of_stock[
            (censored["start_row"] + censored["bucket"] - censored["first_bucket"]).to_numpy()
        ] = True
    return out_of_stock


def _closed_slot(series: pl.DataFrame, closed: pl.DataFrame, hours: int) -> pl.Expr:
    """True on grid rows whose slot of the week is always closed at the row's customer
    (`closed`: customer_id, slot), looked up in a (customer x slot) mask by position.
    """
    n_week = buckets.per_week(hours)
    closed_idx = closed.join(
        series.select("customer_id", "customer_idx").unique(), on="customer_id"
    ).select((pl.col("customer_idx").cast(pl.Int64) * n_week + pl.col("slot")).alias("key"))
    n_customers = series["customer_idx"].n_unique() if series.height else 0
    if not n_customers:
        return pl.lit(False)
    closed_mask = pl.Series("closed", [False] * (n_customers * n_week), dtype=pl.Boolean)
    if closed_idx.height:
        closed_mask = closed_mask.scatter(closed_idx["key"], True)
    customer_of = pl.lit(series["customer_idx"])
    return pl.lit(closed_mask).gather(
        customer_of.gather(pl.col("series_id")).cast(pl.Int64) * n_week
        + buckets.slot_of_week(pl.col("bucket"), hours).cast(pl.Int64)
    )


def _on_closure_day(series: pl.DataFrame, closures: pl.DataFrame | None, hours: int) -> pl.Expr:
    """True on grid rows (series_id, bucket) that fall on a closure day of their customer."""
    if closures is None or closures.height == 0:
        return pl.lit(False)
    keys = closures.join(
        series.select("customer_id", "customer_idx").unique(), on="customer_id"
    ).select(pl.col("customer_idx").cast(pl.Int64) * (1 << 32) + pl.col("day"))
    customer = pl.lit(series["customer_idx"]).gather(pl.col("series_id")).cast(pl.Int64)
    day = pl.col("bucket").cast(pl.Int64) // buckets.per_day(hours)
    return (customer * (1 << 32) + day).is_in(keys.to_series().implode())


def with_running_sums(grid: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    """(Re)compute the helper columns from `y` (null = 0): global cumulative sums cs / cs2 / cnz,
    ck (with stock-outs only: count of rows not censored by one; window means divide by it,
    so a stock-out neither counts nor pulls them down) and last_sale_row (which may point into
    the previous series: checked at gather time).

    Closure days are missing too (no lag, no seasonal lag, no training target) but still count
    as zero in window means, as before: skipping them as well moved the pizza backtest's
    October bias of the mean from +6.5 % to +10.3 % (P50 WAPE 0.892 -> 0.890;
    `benchmarks/bench_demand_peers.py --no-peers`), so only stock-outs are skipped there.
    """
    row = pl.int_range(pl.len(), dtype=pl.Int32)  # < 2**31 grid rows (memory)
    y0 = pl.col("y").fill_null(0.0).cast(pl.Float64)
    lf = grid.lazy()
    if "stockout" in lf.collect_schema().names():  # only grids with stock-outs pay for `ck`
        lf = lf.with_columns(ck=(~pl.col("stockout")).cast(pl.Int32).cum_sum())
    return lf.with_columns(
        cs=y0.cum_sum(),
        cs2=(y0**2).cum_sum(),
        cnz=(y0 > 0).cast(pl.Int32).cum_sum(),
        last_sale_row=pl.when(y0 > 0).then(row).forward_fill(),
    )


# --- rows to predict -------------------------------------------------------------------------


def training_rows(
    history: History,
    last_target: int,
    demand: DemandSettings,
    max_rows: int | None = None,
) -> pl.DataFrame:
    """(row, h) pairs for training: target buckets <= `last_target` with a known y, open, with
    at least `min_history_buckets` of history at their origin; each target gets
    `horizon_samples` horizons drawn uniformly from 1..horizon by a hash of (row, sample).
    Targets more than `recent_train_weeks` before `last_target` are kept with probability
    `older_rows_share` (recent weeks matter more; fewer rows train faster), then rows are
    subsampled (deterministically, by hash) to at most `max_rows`.
    """
    max_rows = demand.model.max_train_rows if max_rows is None else max_rows
    g = history.grid.lazy().with_row_index("row").with_columns(pl.col("row").cast(pl.Int64))
    start = pl.lit(history.series["start_row"]).gather(pl.col("series_id"))
    eligible = g.filter(
        (pl.col("bucket") <= min(last_target, history.origin))
        & ~pl.col("closed")
        & pl.col("y").is_not_null()  # closure days are missing, not zero demand
        & (pl.col("row") - start >= demand.model.min_history_buckets + 1)
    ).select("row")
    samples = pl.LazyFrame(
        {"sample": list(range(demand.model.horizon_samples))}, schema={"sample": pl.Int64}
    )
    rows = eligible.join(samples, how="cross").with_columns(
        h=(
            (pl.col("row") * 1_000_003 + pl.col("sample")).hash(_HORIZON_SEED) % history.horizon + 1
        ).cast(pl.Int32)
    )
    rows = rows.with_columns(
        origin_row=pl.col("row") - pl.col("h"),
        start_row=start_of_row(history),
    ).filter(pl.col("origin_row") >= pl.col("start_row") + demand.model.min_history_buckets)
    recent_from = last_target - demand.model.recent_train_weeks * history.week
    older = history.col("bucket").gather(pl.col("row")) <= recent_from
    thin = (pl.col("row") * 17 + pl.col("h")).hash(_SAMPLE_SEED + 1) % 1_000_000 >= int(
        1_000_000 * demand.model.older_rows_share
    )
    rows = rows.filter(~(older & thin))
    frame = rows.select("row", "h").collect()
    if frame.height > max_rows:
        keep = (pl.col("row") * 31 + pl.col("h")).hash(_SAMPLE_SEED) % 1_000_000 < int(
            1_000_000 * max_rows / frame.height
        )
        frame = frame.filter(keep)
    return frame.sort("row", "h")


def start_of_row(history: History) -> pl.Expr:
    """The start row of the series of grid row `row` (used with a `row` column)."""
    series_of_row = history.col("series_id").gather(pl.col("row"))
    return pl.lit(history.series["start_row"]).gather(series_of_row)


def origin_rows(history: History, origin: int, only_active: bool = True) -> pl.DataFrame:
    """(row, h) for every bucket origin+1 .. origin+horizon of each series (active ones by
    default) alive at `origin`; `origin` <= history.origin (an earlier one replays a backtest).
    """
    series = history.series.filter(pl.col("first_bucket") <= origin)
    if only_active:
        series = series.filter(pl.col("active"))
    steps = pl.int_range(1, history.horizon + 1, dtype=pl.Int32)
    return (
        series.lazy()
        .select(
            (pl.col("start_row") + (origin - pl.col("first_bucket"))).alias("origin_row"),
            steps.implode().alias("h"),
        )
        .explode("h")
        .select((pl.col("origin_row") + pl.col("h")).alias("row"), "h")
        .collect()
    )


# --- features --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemandFeature:
    """One feature declared once: its column, its plain words (drivers' text) and how it is
    computed, in the spirit of mlforecast's lag transforms.

    `expr(history)` reads the rows being built (row, h, origin_row, start_row, bucket); with
    `derived` it reads other features instead and runs after them; None: computed by a join
    (SKU / customer aggregates, signals). `model=False`: computed (an input of another feature)
    and labelled, but not a model column.
    """

    name: str
    label: str
    expr: Callable[[History], pl.Expr] | None = None
    model: bool = True
    derived: bool = False


def _name_windows(demand: DemandSettings) -> list[int]:
    return sorted(set(demand.features.rolling_windows) | set(demand.features.spread_windows))


def _intermittency_window(demand: DemandSettings) -> int:
    """The window (buckets) of the intermittency features: the longest mean/spread window."""
    return max(_name_windows(demand))


def declared_features(demand: DemandSettings) -> list[DemandFeature]:
    """Every feature of the configured set except signals, in model column order."""
    hours = demand.grid.bucket_hours
    weeks = demand.features.seasonal_lag_weeks
    single = min(demand.features.seasonal_lag_features, weeks)
    windows = _name_windows(demand)
    longest = _span_text(_intermittency_window(demand), hours)
    return [
        DemandFeature("horizon", "buckets ahead", lambda h: pl.col("h")),
        DemandFeature("bucket_of_day", f"{hours}-hour bucket of the day", _bucket_of_day),
        DemandFeature("weekday", "weekday (Mon=0)", _weekday),
        DemandFeature("is_holiday", "holiday", lambda h: _is_holiday(h, demand)),
        *[
            DemandFeature(f"lag_{k}", _lag_label(k), _lag(k))
            for k in range(demand.features.recent_lags)
        ],
        *[
            DemandFeature(f"same_bucket_w{k}", _seasonal_label(k), _seasonal(k), k <= single)
            for k in range(1, weeks + 1)
        ],
        DemandFeature(
            "same_bucket_mean",
            f"same-bucket mean of last {weeks} weeks",
            lambda h: _seasonal_mean(weeks),
            derived=True,
        ),
        DemandFeature(
            "same_bucket_std",
            f"same-bucket spread of last {weeks} weeks",
            lambda h: _seasonal_std(weeks),
            derived=True,
        ),
        *[
            DemandFeature(
                f"mean_{w}",
                f"mean per bucket, last {_span_text(w, hours)}",
                _window_mean(w),
                w in demand.features.rolling_windows,
            )
            for w in windows
        ],
        *[
            DemandFeature(
                f"std_{w}",
                f"spread per bucket, last {_span_text(w, hours)}",
                _window_std(w),
                w in demand.features.spread_windows,
            )
            for w in windows
        ],
        *_series_features(demand, longest),
    ]


def _series_features(demand: DemandSettings, longest: str) -> list[DemandFeature]:
    """Intermittency, recency, level and price of the series, then SKU / customer context."""
    w_int = _intermittency_window(demand)
    return [
        DemandFeature(
            "nonzero_share",
            f"share of buckets with a sale (last {longest})",
            lambda h: _nonzero_share(h, w_int),
        ),
        DemandFeature(
            "mean_nonzero_size",
            f"mean size of a non-zero bucket (last {longest})",
            lambda h: _mean_nonzero_size(h, w_int),
        ),
        DemandFeature("buckets_since_sale", "buckets since the last sale", _buckets_since_sale),
        DemandFeature("history_buckets", "buckets of history", lambda h: _history_len()),
        DemandFeature("series_mean", "mean per bucket, all history", _series_mean),
        DemandFeature(
            "unit_price",
            "last unit price",
            lambda h: h.col("unit_price").gather(pl.col("origin_row")),
        ),
        DemandFeature("sku_mean_week", "SKU mean per series per bucket, last week"),
        DemandFeature("sku_same_bucket_w1", "SKU same bucket last week (per series)"),
        DemandFeature("customer_mean_week", "customer total per bucket, last week"),
    ]


def feature_names(demand: DemandSettings, signal_names: list[str] | None = None) -> list[str]:
    """Model feature columns in order (signals: `signal_<name>` known, `observed_<name>`)."""
    names = [f.name for f in declared_features(demand) if f.model]
    return names + (signal_names or [])


def redundant_features(history: History) -> set[str]:
    """Aggregates that repeat a series feature in this data (one series per SKU: the SKU-level
    ones; one series per customer: the customer-level one); left out of a model (cost only).
    """
    series = history.series
    out: set[str] = set()
    if series.height == series["sku"].n_unique():
        out |= {"sku_mean_week", "sku_same_bucket_w1"}
    if series.height == series["customer_id"].n_unique():
        out.add("customer_mean_week")
    return out


def feature_labels(demand: DemandSettings, signal_names: list[str] | None = None) -> dict[str, str]:
    """Plain words for each feature, used in the drivers' text (signal names other than
    `signal_*` / `observed_*` get none).
    """
    labels = {f.name: f.label for f in declared_features(demand)}
    for name in signal_names or []:
        if name.startswith("signal_"):
            labels[name] = f"{name.removeprefix('signal_')} planned"
        elif name.startswith("observed_"):
            labels[name] = f"{name.removeprefix('observed_')} (last observed)"
    return labels


def _lag_label(k: int) -> str:
    return "last bucket" if k == 0 else f"{k + 1} buckets before now"


def _seasonal_label(k: int) -> str:
    return "same bucket last week" if k == 1 else f"same bucket {k} weeks ago"


def _span_text(buckets_count: int, hours: int) -> str:
    total = buckets_count * hours
    if total % 168 == 0:
        weeks = total // 168
        return "week" if weeks == 1 else f"{weeks} weeks"
    if total % 24 == 0:
        days = total // 24
        return "day" if days == 1 else f"{days} days"
    return f"{total} hours"


def make_features(
    history: History,
    rows: pl.DataFrame,
    demand: DemandSettings,
    signals: pl.DataFrame | None = None,
    as_of: datetime | None = None,
    columns: list[str] | None = None,
) -> pl.DataFrame:
    """Features for `rows` (row, h) -> keys (series_id, bucket, origin_bucket, h), target `y`,
    `closed`, and the columns of `feature_names` (Float32), or exactly `columns` when given
    (a fitted model's features; one absent from the data is null).

    `signals` (canonical: ts, name, value, optional sku / customer_id / region) are used as
    configured: names in `known_signals` at the target bucket's start (future values allowed),
    names in `observed_signals` as last seen at the origin's end and never after `as_of`.
    """
    h = history
    start = start_of_row(h)
    frame = rows.lazy().with_columns(
        series_id=h.col("series_id").gather(pl.col("row")),
        bucket=h.col("bucket").gather(pl.col("row")),
        y=h.col("y").gather(pl.col("row")),
        closed=h.col("closed").gather(pl.col("row")),
        start_row=start,
        origin_row=pl.col("row") - pl.col("h"),
    )
    frame = frame.with_columns(origin_bucket=pl.col("bucket") - pl.col("h"))
    declared = declared_features(demand)
    frame = (
        frame.with_columns(
            f.expr(h).alias(f.name) for f in declared if f.expr is not None and not f.derived
        )
        .with_columns(f.expr(h).alias(f.name) for f in declared if f.expr is not None and f.derived)
        .collect()
        .lazy()
    )
    wanted = None if columns is None else set(columns)
    frame = _join_aggregates(frame, h, wanted)
    signal_cols: list[str] = []
    if signals is not None and signals.height:
        frame, signal_cols = _join_signals(frame.collect().lazy(), h, demand, signals, as_of)
    names = feature_names(demand, signal_cols) if columns is None else columns
    present = set(frame.collect_schema().names())
    keys = ["row", "series_id", "bucket", "origin_bucket", "h", "y", "closed"]
    return (
        frame.select(
            *keys,
            *[
                (pl.col(n) if n in present else pl.lit(None)).cast(pl.Float32).alias(n)
                for n in names
            ],
        )
        .collect()
        .sort("row", "h")
    )


def _at(h: History, column: str, index: pl.Expr) -> pl.Expr:
    """Grid `column` at row `index` when it lies inside the row's series (else null)."""
    valid = pl.when((index >= pl.col("start_row")) & (index <= pl.col("origin_row"))).then(index)
    return h.col(column).gather(valid)


def _window_sum(h: History, column: str, width: int) -> pl.Expr:
    """Sum of a per-row quantity over the `width` rows ending at the origin row (series-clipped),
    from the global cumulative column `column`.
    """
    lo = pl.max_horizontal(pl.col("origin_row") - width + 1, pl.col("start_row"))
    before = pl.when(lo > 0).then(h.col(column).gather(pl.when(lo > 0).then(lo - 1))).otherwise(0)
    return h.col(column).gather(pl.col("origin_row")) - before.fill_null(0)


def _window_known(h: History, width: int) -> pl.Expr:
    """Rows not censored by a stock-out among the `width` rows ending at the origin row: the
    denominator of window means (see `with_running_sums`).
    """
    if "ck" not in h.grid.columns:  # no stock-out: every row counts
        lo = pl.max_horizontal(pl.col("origin_row") - width + 1, pl.col("start_row"))
        return (pl.col("origin_row") - lo + 1).cast(pl.Float64)
    return _window_sum(h, "ck", width).cast(pl.Float64)


def holiday_dates(demand: DemandSettings, first_year: int, last_year: int) -> list[date]:
    """The explicit `holidays` list union-ed with the public holidays of `holiday_country`
    (and `holiday_subdivision`) in first_year .. last_year, from the `holidays` package: a
    maintained, offline calendar (moving feasts such as Thanksgiving, observed days), better
    than a hand list that has to be extended every year. Local dates, sorted.
    """
    dates = set(demand.features.holidays)
    if demand.features.holiday_country is not None:
        import holidays

        calendar = holidays.country_holidays(
            demand.features.holiday_country,
            subdiv=demand.features.holiday_subdivision,
            years=range(first_year, last_year + 1),
        )
        dates |= set(calendar.keys())
    return sorted(dates)


def _years(h: History) -> tuple[int, int]:
    """First and last calendar year of the grid (its first bucket .. the last forecast one)."""
    first = int(h.series["first_bucket"].min()) if h.series.height else h.origin  # type: ignore[arg-type]
    last = h.origin + h.horizon
    return _year_of(first, h.bucket_hours), _year_of(last, h.bucket_hours)


def _year_of(bucket: int, hours: int) -> int:
    return (date(1970, 1, 1) + timedelta(days=bucket // buckets.per_day(hours))).year


def _bucket_of_day(h: History) -> pl.Expr:
    return buckets.bucket_of_day(pl.col("bucket"), h.bucket_hours)


def _weekday(h: History) -> pl.Expr:
    return buckets.weekday(pl.col("bucket"), h.bucket_hours)


def _is_holiday(h: History, demand: DemandSettings) -> pl.Expr:
    """The target bucket's local date is a holiday (known in advance)."""
    dates = pl.Series(holiday_dates(demand, *_years(h)), dtype=pl.Date)
    return buckets.local_date(pl.col("bucket"), h.bucket_hours).is_in(dates.implode())


def _lag(k: int) -> Callable[[History], pl.Expr]:
    """Y k buckets before the origin bucket (k = 0: the origin bucket itself)."""
    return lambda h: _at(h, "y", pl.col("origin_row") - k)


def _seasonal(k: int) -> Callable[[History], pl.Expr]:
    """Y of the target's bucket k weeks earlier (null when that is after the origin)."""
    return lambda h: _at(h, "y", pl.col("row") - k * h.week)


def _seasonal_moments(weeks: int) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """(count, mean, variance) of the known `same_bucket_w1..weeks` columns."""
    seasonal = [pl.col(f"same_bucket_w{k}") for k in range(1, weeks + 1)]
    count = pl.sum_horizontal([s.is_not_null() for s in seasonal]).cast(pl.Float64)
    mean = pl.sum_horizontal(seasonal) / count
    var = (pl.sum_horizontal([s**2 for s in seasonal]) - count * mean**2) / (count - 1)
    return count, mean, var


def _seasonal_mean(weeks: int) -> pl.Expr:
    count, mean, _ = _seasonal_moments(weeks)
    return pl.when(count > 0).then(mean)


def _seasonal_std(weeks: int) -> pl.Expr:
    count, _, var = _seasonal_moments(weeks)
    return pl.when(count > 1).then(var.clip(lower_bound=0.0).sqrt())


def _window_mean(width: int) -> Callable[[History], pl.Expr]:
    """Mean per known bucket over the `width` buckets ending at the origin."""

    def expr(h: History) -> pl.Expr:
        n = _window_known(h, width)
        return pl.when(n > 0).then(_window_sum(h, "cs", width) / n)

    return expr


def _window_std(width: int) -> Callable[[History], pl.Expr]:
    """Spread (population standard deviation) over the same window as `_window_mean`."""

    def expr(h: History) -> pl.Expr:
        n = _window_known(h, width)
        squares = _window_sum(h, "cs2", width)
        mean = _window_mean(width)(h)
        return ((squares / n - mean**2).clip(lower_bound=0.0)).sqrt()

    return expr


def _nonzero_share(h: History, width: int) -> pl.Expr:
    n = _window_known(h, width)
    return pl.when(n > 0).then(_window_sum(h, "cnz", width).cast(pl.Float64) / n)


def _mean_nonzero_size(h: History, width: int) -> pl.Expr:
    nonzero = _window_sum(h, "cnz", width).cast(pl.Float64)
    return pl.when(nonzero > 0).then(_window_sum(h, "cs", width) / nonzero)


def _history_len() -> pl.Expr:
    """Buckets from the series' first sale to the origin, inclusive."""
    return (pl.col("origin_row") - pl.col("start_row") + 1).cast(pl.Float64)


def _buckets_since_sale(h: History) -> pl.Expr:
    """Buckets from the last sale to the origin (the history length when none in the series)."""
    last_sale = h.col("last_sale_row").gather(pl.col("origin_row"))
    return (
        pl.when(last_sale >= pl.col("start_row"))
        .then(pl.col("origin_row") - last_sale)
        .otherwise(_history_len())
    )


def _series_mean(h: History) -> pl.Expr:
    """Mean per known bucket over the whole history up to the origin."""
    known = _window_known(h, 1 << 30)
    return pl.when(known > 0).then(_window_sum(h, "cs", 1 << 30) / known)


def _group_rolling(h: History, group: str) -> pl.LazyFrame:
    """Per (group, bucket): mean per series over the last week ending at that bucket, and the
    bucket's own mean per series (for "same bucket last week" at SKU level).
    """
    week = h.week
    known = (~pl.col("stockout")).sum() if "stockout" in h.grid.columns else pl.len()
    by_group = (
        h.grid.lazy()
        .filter(pl.col("bucket") <= h.origin)
        .with_columns(pl.lit(h.series[group]).gather(pl.col("series_id")).alias(group))
        .group_by(group, "bucket")
        .agg(pl.col("y").sum().alias("total"), known.alias("n"))
        .sort(group, "bucket")
    )
    known_week = pl.col("n").rolling_sum(week, min_samples=1).over(group)
    return by_group.with_columns(
        week_mean=pl.when(known_week > 0).then(
            pl.col("total").rolling_sum(week, min_samples=1).over(group) / known_week
        ),
        week_total=pl.col("total").rolling_mean(week, min_samples=1).over(group),
        bucket_mean=pl.when(pl.col("n") > 0).then(pl.col("total") / pl.col("n")),
    )


def _join_aggregates(frame: pl.LazyFrame, h: History, wanted: set[str] | None) -> pl.LazyFrame:
    """SKU-level (across customers) and customer-level (across SKUs) context at the origin;
    only those in `wanted` (None: all).
    """
    frame = frame.with_columns(
        sku_idx=pl.lit(h.series["sku_idx"]).gather(pl.col("series_id")),
        customer_idx=pl.lit(h.series["customer_idx"]).gather(pl.col("series_id")),
        week_back=pl.col("bucket") - h.week,
    )
    if wanted is None or {"sku_mean_week", "sku_same_bucket_w1"} & wanted:
        frame = _join_sku(frame, h.sku_rolling, h.week)
    if wanted is None or "customer_mean_week" in wanted:
        frame = frame.join(
            h.customer_rolling.lazy().select(
                "customer_idx",
                pl.col("bucket").alias("origin_bucket"),
                pl.col("week_total").alias("customer_mean_week"),
            ),
            on=["customer_idx", "origin_bucket"],
            how="left",
        )
    return frame


def _join_sku(frame: pl.LazyFrame, sku_frame: pl.DataFrame, week: int) -> pl.LazyFrame:
    sku = sku_frame.lazy()
    frame = frame.join(
        sku.select(
            "sku_idx",
            pl.col("bucket").alias("origin_bucket"),
            pl.col("week_mean").alias("sku_mean_week"),
        ),
        on=["sku_idx", "origin_bucket"],
        how="left",
    )
    return frame.join(
        sku.select(
            "sku_idx",
            pl.col("bucket").alias("week_back"),
            pl.col("bucket_mean").alias("sku_same_bucket_w1"),
        ),
        on=["sku_idx", "week_back"],
        how="left",
    ).with_columns(
        sku_same_bucket_w1=pl.when(pl.col("h") <= week).then(pl.col("sku_same_bucket_w1"))
    )


# --- signals ---------------------------------------------------------------------------------

_SCOPES = ("customer_id", "sku", "region")


def signal_feature_names(demand: DemandSettings, signals: pl.DataFrame | None) -> list[str]:
    """Signal feature columns present for these signals (configured names that occur)."""
    if signals is None or not signals.height:
        return []
    present = set(signals["name"].unique().to_list())
    return [f"signal_{n}" for n in demand.known_signals if n in present] + [
        f"observed_{n}" for n in demand.observed_signals if n in present
    ]


def _join_signals(
    frame: pl.LazyFrame,
    h: History,
    demand: DemandSettings,
    signals: pl.DataFrame,
    as_of: datetime | None,
) -> tuple[pl.LazyFrame, list[str]]:
    """Attach each configured signal's value per row: the most specific scope that matches the
    series wins (a row for this customer+sku beats one for the sku, beats a global one); within
    a scope, the latest value at or before the lookup time. Raw values: `signal_weights` act
    on the forecast after the model (`salesml.demand.adjust`), not on this input.
    """
    names = signal_feature_names(demand, signals)
    if not names:
        return frame, []
    hours, tz = h.bucket_hours, h.timezone
    frame = frame.with_columns(
        customer_id=pl.lit(h.series["customer_id"]).gather(pl.col("series_id")),
        sku=pl.lit(h.series["sku"]).gather(pl.col("series_id")),
        region=pl.lit(h.series["region"]).gather(pl.col("series_id")),
        target_at=buckets.bucket_start(pl.col("bucket"), tz, hours),
        origin_at=buckets.bucket_start(pl.col("origin_bucket") + 1, tz, hours),
    )
    sig = signals
    for scope in _SCOPES:
        if scope not in sig.columns:
            sig = sig.with_columns(pl.lit(None, dtype=pl.String).alias(scope))
    sig = sig.with_columns(pl.col("ts").cast(DATETIME), pl.col("value").cast(pl.Float64))
    for column in names:
        known = column.startswith("signal_")
        name = column.split("_", 1)[1]
        rows = sig.filter(pl.col("name") == name)
        if not known and as_of is not None:
            rows = rows.filter(pl.col("ts") <= as_of)
        at = "target_at" if known else "origin_at"
        frame = _attach_signal(frame, rows, column, at)
    return frame, names


def _attach_signal(frame: pl.LazyFrame, rows: pl.DataFrame, column: str, at: str) -> pl.LazyFrame:
    """As-of join per scope pattern present in `rows`; coalesce from most to least specific."""
    patterns = rows.select([pl.col(s).is_not_null().alias(s) for s in _SCOPES]).unique().rows()
    scopes = sorted(
        ([s for s, on in zip(_SCOPES, bits, strict=True) if on] for bits in patterns),
        key=lambda scope: (-len(scope), scope),
    )
    if not scopes:
        return frame.with_columns(pl.lit(None, dtype=pl.Float64).alias(column))
    lookup = frame.select("row", "h", at, *_SCOPES).sort(at)
    found: list[str] = []
    for number, scope in enumerate(scopes):
        cond = pl.lit(True)
        for s in _SCOPES:
            cond = cond & (pl.col(s).is_not_null() if s in scope else pl.col(s).is_null())
        part = rows.filter(cond).select(pl.col("ts").alias(at), *scope, "value").sort(at)
        name = f"_v{number}"
        matched = lookup.join_asof(
            part.lazy(), on=at, by=scope or None, strategy="backward", check_sortedness=False
        ).select("row", "h", pl.col("value").alias(name))
        frame = frame.join(matched, on=["row", "h"], how="left")
        found.append(name)
    return frame.with_columns(pl.coalesce(found).alias(column)).drop(*found)
