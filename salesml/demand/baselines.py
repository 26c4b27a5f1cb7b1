"""Baseline forecasts the model must beat, on the same rows as the model (backtests).

- seasonal naive: the same bucket one week earlier (t - week * ceil(h / week), so it only reads
  up to the origin even for horizons beyond a week);
- zero: nothing sells (on intermittent 4-hour data the one to beat at the bottom level: an
  all-zero forecast scores WAPE 1.000 and beats every mean-type forecast there);
- recent same-bucket mean: the mean of the same bucket over the last `weeks` (4) weeks known at
  the origin;
- same-bucket median: the median of the same bucket over the last `median_weeks` (8) weeks known
  at the origin (a median, like P50, so comparable in WAPE);
- ETS: statsmodels Holt-Winters (additive weekly season, no trend) per series, fitted on the last
  `ets_weeks` weeks up to the origin; only when there are at most `settings.demand.ets_max_series`
  series (one fit per series) and at least two full seasons of history.
All baselines forecast 0 in closed slots, like the model. Buckets of a customer's closure days
are missing in the history (`features.closure_days`): the means and medians skip them.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import polars as pl

from salesml.demand.features import History, start_of_row

ETS_WEEKS = 8


def _lagged(history: History, lag: pl.Expr) -> pl.Expr:
    """Y at row - lag when still inside the series and at or before the origin row, else null."""
    index = pl.col("row") - lag
    valid = pl.when((index >= pl.col("start_row")) & (index <= pl.col("row") - pl.col("h")))
    return history.col("y").gather(valid.then(index))


NAIVE_BASELINES = ("zero", "seasonal_naive", "recent_mean", "median_8w")


def naive_forecasts(
    history: History, rows: pl.DataFrame, weeks: int = 4, median_weeks: int = 8
) -> pl.DataFrame:
    """(row, h) -> zero, seasonal_naive, recent_mean, median_8w (0 where no history or in a
    closed slot).
    """
    week = history.week
    first = ((pl.col("h") + week - 1) // week).cast(pl.Int64)  # weeks back to reach the origin
    frame = rows.lazy().with_columns(start_row=start_of_row(history))
    span = max(weeks, median_weeks)
    lags = [_lagged(history, (first + k) * week).alias(f"_w{k}") for k in range(span)]
    closed = history.col("closed").gather(pl.col("row"))
    median = pl.concat_list([f"_w{k}" for k in range(median_weeks)]).list.drop_nulls()
    return (
        frame.with_columns(lags)
        .with_columns(
            zero=pl.lit(0.0),
            seasonal_naive=pl.col("_w0").fill_null(0.0),
            recent_mean=pl.mean_horizontal([f"_w{k}" for k in range(weeks)]).fill_null(0.0),
            median_8w=median.list.median().fill_null(0.0),
        )
        .with_columns(
            pl.when(closed).then(0.0).otherwise(pl.col(c)).cast(pl.Float64).alias(c)
            for c in NAIVE_BASELINES
        )
        .select("row", "h", *NAIVE_BASELINES)
        .collect()
    )


def seasonal_naive_scale(history: History, origin: int) -> float:
    """In-sample mean |y_t - y_{t-week}| over open buckets up to `origin` (the MASE scale,
    pooled over series).
    """
    week = history.week
    grid = (
        history.grid.lazy()
        .with_row_index("row")
        .with_columns(
            start_row=start_of_row(history).cast(pl.Int64), row=pl.col("row").cast(pl.Int64)
        )
    )
    value = (
        grid.filter(
            (pl.col("bucket") <= origin)
            & ~pl.col("closed")
            & (pl.col("row") - week >= pl.col("start_row"))
        )
        .select((pl.col("y") - history.col("y").gather(pl.col("row") - week)).abs().mean())
        .collect()
        .item()
    )
    return float(value) if value is not None else math.nan


def ets_forecasts(
    history: History, origin: int, series_ids: list[int], weeks: int = ETS_WEEKS
) -> pl.DataFrame | None:
    """Holt-Winters per series -> (series_id, h, ets); None when a fit is impossible.

    A series with less than two seasons of history before the origin gets its same-bucket
    mean instead (statsmodels needs two full seasons).
    """
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    week, horizon = history.week, history.horizon
    series = history.series.filter(pl.col("series_id").is_in(series_ids))
    y_all = history.grid["y"].to_numpy()
    out_ids: list[np.ndarray] = []
    out_h: list[np.ndarray] = []
    out_v: list[np.ndarray] = []
    steps = np.arange(1, horizon + 1)
    for sid, start_row, first_bucket in series.select(
        "series_id", "start_row", "first_bucket"
    ).iter_rows():
        origin_row = start_row + (origin - first_bucket)
        lo = max(start_row, origin_row - weeks * week + 1)
        y = np.nan_to_num(y_all[lo : origin_row + 1].astype(np.float64))
        if y.size >= 2 * week:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    fitted = ExponentialSmoothing(
                        y,
                        trend=None,
                        seasonal="add",
                        seasonal_periods=week,
                        initialization_method="heuristic",
                    ).fit()
                    values = np.asarray(fitted.forecast(horizon), dtype=np.float64)
                except (ValueError, np.linalg.LinAlgError):
                    values = _season_mean(y, week, horizon)
        else:
            values = _season_mean(y, week, horizon)
        out_ids.append(np.full(horizon, sid))
        out_h.append(steps)
        out_v.append(np.clip(np.nan_to_num(values), 0.0, None))
    if not out_ids:
        return None
    return pl.DataFrame(
        {
            "series_id": np.concatenate(out_ids).astype(np.uint32),
            "h": np.concatenate(out_h).astype(np.int32),
            "ets": np.concatenate(out_v),
        }
    )


def _season_mean(y: np.ndarray, week: int, horizon: int) -> np.ndarray:
    """Same-bucket mean over the available weeks (aligned so position -1 is the origin)."""
    if y.size == 0:
        return np.zeros(horizon)
    out = np.zeros(horizon)
    for step in range(1, horizon + 1):
        back = np.arange(y.size - 1 + step - week, -1, -week)
        back = back[back < y.size]
        out[step - 1] = y[back].mean() if back.size else 0.0
    return out
