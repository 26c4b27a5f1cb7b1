"""Rolling-origin backtest of the demand model next to its baselines (pure: frames in).

Origins are weekly (every `horizon` buckets), the last one `horizon` buckets before the origin
at `as_of`, so every evaluation window lies in the known past. At each origin the whole
training (calibration included) is replayed on what was known then, and all active series are
forecast `horizon` buckets ahead.

Evaluated rows: every (active series, bucket ahead) except closed-slot buckets in which nothing
was sold (those are trivially right for every method and would inflate coverage); a sale in a
slot thought closed is kept and counts as an error. Metrics (`metrics.quantile_report`, the
same function training and the tests use): WAPE and bias of P50 and of the mean, MASE of P50
with the pooled in-sample seasonal-naive scale, pinball loss of P10/P50/P90, coverage of
[P10, P90] overall, per stratum of expected demand (< 0.5, 0.5-2, >= 2 units per bucket) and on
cells with a sale. Baselines (WAPE, MASE, bias, pinball at 0.5), honest ones first: zero, the
8-week same-bucket median, seasonal naive, the 4-week same-bucket mean, ETS. On intermittent
data a point forecast that loses to zero has no skill at the bottom level, whatever it gains
over mean-type baselines.

Aggregate levels (`score_levels`, keys `agg_<level>_*`, nested under `levels` in `summary`): all
rows of an origin summed to sku_day, sku_week, customer_day, region_day and total_bucket
(`salesml.demand.aggregate`); WAPE / bias of the summed mean, P10-P90 coverage of the aggregate
interval, next to the same baselines summed bottom-up (for seasonal naive and the 4-week mean
that is exactly the level's own baseline).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime

import polars as pl

from salesml import backtest as shared_backtest
from salesml import metrics
from salesml.config import Settings
from salesml.demand import aggregate, baselines, buckets
from salesml.demand.features import build_history
from salesml.demand.forecasting import fit, forecast, point_metrics
from salesml.progress import Progress, report

BASELINES = ("zero", "median_8w", "seasonal_naive", "recent_mean", "ets")


def to_utc(instant: datetime) -> datetime:
    """An aware instant in UTC (the shared backtest stamps origins in UTC)."""
    return instant.astimezone(UTC)


def origins(settings: Settings, as_of: datetime, n_origins: int) -> list[datetime]:
    """Backtest origins (instants): ends of the origin buckets, one horizon apart."""
    demand = settings.demand
    last = (
        buckets.origin_bucket(as_of, settings.timezone, demand.grid.bucket_hours)
        - demand.grid.horizon_buckets
    )
    return [
        buckets.bucket_start_value(
            last - k * demand.grid.horizon_buckets + 1, settings.timezone, demand.grid.bucket_hours
        )
        for k in range(n_origins - 1, -1, -1)
    ]


def evaluate_origin(
    sales: pl.DataFrame,
    actuals: pl.DataFrame,
    settings: Settings,
    origin_at: datetime,
    signals: pl.DataFrame | None = None,
    with_ets: bool = True,
    inventory: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Fit at `origin_at`, forecast, attach actuals and baselines: one row per bucket ahead.
    `inventory` censors stock-out buckets known at the origin, as training does.
    """
    demand = settings.demand
    history = build_history(sales, demand, settings.timezone, origin_at, inventory=inventory)
    fitted = fit(sales, settings, origin_at, signals, history=history, inventory=inventory)
    result = forecast(fitted.model, sales, settings, origin_at, signals, history=history)
    frame = result.frame.drop("y")
    rows = frame.select(
        (
            pl.lit(history.series["start_row"]).gather(pl.col("series_id"))
            + (history.origin - pl.lit(history.series["first_bucket"]).gather(pl.col("series_id")))
            + pl.col("horizon")
        ).alias("row"),
        pl.col("horizon").alias("h"),
    )
    naive = baselines.naive_forecasts(history, rows)
    frame = frame.with_columns(naive.select(*baselines.NAIVE_BASELINES))
    if with_ets and history.series.height <= demand.ets_max_series:
        ids = frame["series_id"].unique().to_list()
        ets = baselines.ets_forecasts(history, history.origin, ids)
        if ets is not None:
            frame = frame.join(
                ets.rename({"h": "horizon"}), on=["series_id", "horizon"], how="left"
            ).with_columns(
                ets=pl.when(pl.col("closed")).then(0.0).otherwise(pl.col("ets").fill_null(0.0))
            )
    frame = frame.join(
        actuals, on=["customer_id", "sku", "bucket"], how="left", maintain_order="left"
    ).with_columns(
        y=pl.col("y").fill_null(0.0).cast(pl.Float64),
        mase_scale=pl.lit(baselines.seasonal_naive_scale(history, history.origin)),
        strata=pl.lit(list(demand.intervals.interval_strata), dtype=pl.List(pl.Float64)),
        fit_seconds=pl.lit(fitted.timings.get("total", float("nan"))),
        bucket_hours=pl.lit(demand.grid.bucket_hours, dtype=pl.Int32),
        **{
            f"{aggregate.INFLATION_KEY}{level}": pl.lit(
                aggregate.inflation_of(fitted.model.calibration_.metrics, level)
            )
            for level in aggregate.LEVELS
        },
    )
    regions = aggregate.region_map(sales, origin_at)
    return frame.join(regions, on="customer_id", how="left", maintain_order="left").with_columns(
        pl.col("region").fill_null(aggregate.UNKNOWN_REGION)
    )


def settings_strata(frame: pl.DataFrame) -> tuple[float, ...]:
    """The strata edges `evaluate_origin` stamped on its rows (default: metrics.DEMAND_STRATA)."""
    if "strata" in frame.columns and frame.height:
        return tuple(frame["strata"][0])
    return metrics.DEMAND_STRATA


def score(frame: pl.DataFrame) -> dict[str, float]:
    """Metrics of one origin (model and baselines) on the evaluated rows (see module doc)."""
    rows = frame.filter(~pl.col("closed") | (pl.col("y") > 0))
    if rows.height == 0:
        return {}
    out = point_metrics(rows, strata=settings_strata(rows))
    y = rows["y"].to_numpy()
    scale = float(rows["mase_scale"][0])
    out["mase"] = metrics.mase(y, rows["p50"].to_numpy(), scale)
    out["rows"] = float(rows.height)
    out["actual_units"] = float(y.sum())
    for name in BASELINES:
        if name not in rows.columns:
            continue
        values = rows[name].to_numpy()
        out[f"{name}_wape"] = metrics.wape(y, values)
        out[f"{name}_mase"] = metrics.mase(y, values, scale)
        out[f"{name}_bias"] = metrics.bias(y, values)
        out[f"{name}_pinball_p50"] = metrics.pinball_loss(y, values, 0.5)
    if "region" in frame.columns:
        out.update(score_levels(frame))
    return out


def level_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """One origin's rows summed to every aggregate level (all rows: a closed slot adds its
    sales, if any, and nothing else): level, key, period_start, y, mean, p10/p50/p90 of the
    aggregate interval (`aggregate.nb_interval`, the level's inflation stamped on the rows)
    and each baseline summed bottom-up. Summed seasonal naive / 4-week mean are exactly the
    level's own (same period last week; mean of the last 4 weeks' same period).
    """
    hours = int(frame["bucket_hours"][0])
    values = ["y", "mean", "var", *(b for b in BASELINES if b in frame.columns)]
    sums = aggregate.sum_levels(
        frame.drop("region"), frame.select("customer_id", "region").unique(), values, "UTC", hours
    )
    factor = pl.col("level").replace_strict(
        {lvl: float(frame[f"{aggregate.INFLATION_KEY}{lvl}"][0]) for lvl in aggregate.LEVELS},
        return_dtype=pl.Float64,
    )
    sums = sums.with_columns(var=pl.col("var") * factor)
    p10, p50, p90 = aggregate.nb_interval(sums["mean"].to_numpy(), sums["var"].to_numpy())
    return sums.with_columns(p10=pl.Series(p10), p50=pl.Series(p50), p90=pl.Series(p90))


def score_levels(frame: pl.DataFrame) -> dict[str, float]:
    """Per aggregate level `agg_<level>_<metric>`: WAPE and bias of the summed mean, WAPE of the
    aggregate P50, P10-P90 coverage of the aggregate interval, rows, and WAPE / bias of each
    baseline summed bottom-up (the level's seasonal naive, 4-week mean, zero, 8-week median,
    ETS).
    """
    sums = level_frame(frame)
    out: dict[str, float] = {}
    for level in aggregate.LEVELS:
        part = sums.filter(pl.col("level") == level)
        if part.height == 0:
            continue
        y = part["y"].to_numpy()
        name = f"agg_{level}_"
        out[name + "wape"] = metrics.wape(y, part["mean"].to_numpy())
        out[name + "bias"] = metrics.bias(y, part["mean"].to_numpy())
        out[name + "wape_p50"] = metrics.wape(y, part["p50"].to_numpy())
        out[name + "coverage_p10_p90"] = metrics.interval_coverage(
            y, part["p10"].to_numpy(), part["p90"].to_numpy()
        )
        out[name + "rows"] = float(part.height)
        out[name + "inflation"] = float(frame[f"{aggregate.INFLATION_KEY}{level}"][0])
        for base in BASELINES:
            if base in part.columns:
                out[f"{name}{base}_wape"] = metrics.wape(y, part[base].to_numpy())
                out[f"{name}{base}_bias"] = metrics.bias(y, part[base].to_numpy())
    return out


def backtest(
    sales: pl.DataFrame,
    settings: Settings,
    as_of: datetime,
    n_origins: int = 4,
    signals: pl.DataFrame | None = None,
    progress: Progress | None = None,
    with_ets: bool = True,
    keep_predictions: bool = False,
    at: list[datetime] | None = None,
    inventory: pl.DataFrame | None = None,
) -> shared_backtest.BacktestResult:
    """Rolling-origin backtest at `n_origins` weekly origins before `as_of` (see module doc),
    or at the given origins `at` (each at least a horizon before `as_of`). `inventory`:
    stock-outs known at each origin are censored in its training, as in `train demand`.
    """
    demand = settings.demand
    origin = buckets.origin_bucket(as_of, settings.timezone, demand.grid.bucket_hours)
    actuals = (
        buckets.bucket_sales(sales, demand, settings.timezone, origin).select(
            "customer_id", "sku", "bucket", "y"
        )
    ).collect()
    points = origins(settings, as_of, n_origins) if at is None else sorted(to_utc(p) for p in at)

    def fit_predict(origin_at: datetime) -> pl.DataFrame:
        return evaluate_origin(sales, actuals, settings, origin_at, signals, with_ets, inventory)

    on_origin: Callable[[int, int, datetime, dict[str, float]], None] | None = None
    if progress is not None:

        def on_origin(done: int, total: int, at: datetime, _: dict[str, float]) -> None:
            report(progress, f"backtest origin {at:%Y-%m-%d %H:%M} done", done / total)

        report(progress, f"backtest: {len(points)} origins", 0.0)
    return shared_backtest.run_backtest(
        points, fit_predict, score, progress=on_origin, keep_predictions=keep_predictions
    )


def summary(result: shared_backtest.BacktestResult) -> dict[str, object]:
    """The JSON-ready backtest report with the model-vs-baseline comparison spelled out."""
    out = result.to_dict()
    mean = result.mean
    comparison: dict[str, float | None] = {}
    for name in BASELINES:
        base = mean.get(f"{name}_wape")
        if base is not None and not math.isnan(base) and base > 0:
            comparison[f"wape_vs_{name}"] = mean["wape"] / base - 1.0
    out["wape_change_vs_baselines"] = comparison
    out["evaluated_rows"] = "open buckets plus any bucket with a sale; closed empty slots left out"
    out["levels"] = levels_summary(mean)
    return out


def levels_summary(mean: dict[str, float]) -> dict[str, dict[str, float | None]]:
    """The aggregate levels' mean metrics, nested: {level: {metric: value}}, with
    `wape_vs_<baseline>` (relative change of the summed mean's WAPE; < 0 beats it).
    """
    out: dict[str, dict[str, float | None]] = {}
    for level in aggregate.LEVELS:
        prefix = f"agg_{level}_"
        values: dict[str, float | None] = {
            k.removeprefix(prefix): (None if math.isnan(v) else v)
            for k, v in mean.items()
            if k.startswith(prefix)
        }
        if not values:
            continue
        for name in BASELINES:
            base, own = values.get(f"{name}_wape"), values.get("wape")
            if base and own is not None:
                values[f"wape_vs_{name}"] = own / base - 1.0
        out[level] = values
    return out
