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
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import polars as pl

from salesml import backtest as shared_backtest
from salesml import metrics
from salesml.config import Settings
from salesml.demand import baselines, buckets
from salesml.demand.features import build_history
from salesml.demand.pipeline import fit, forecast, point_metrics
from salesml.progress import Progress, report

BASELINES = ("zero", "median_8w", "seasonal_naive", "recent_mean", "ets")


def to_utc(instant: datetime) -> datetime:
    """An aware instant in UTC (the shared backtest stamps origins in UTC)."""
    return instant.astimezone(UTC)


def origins(settings: Settings, as_of: datetime, n_origins: int) -> list[datetime]:
    """Backtest origins (instants): ends of the origin buckets, one horizon apart."""
    demand = settings.demand
    last = (
        buckets.origin_bucket(as_of, settings.timezone, demand.bucket_hours)
        - demand.horizon_buckets
    )
    return [
        buckets.bucket_start_value(
            last - k * demand.horizon_buckets + 1, settings.timezone, demand.bucket_hours
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
) -> pl.DataFrame:
    """Fit at `origin_at`, forecast, attach actuals and baselines: one row per bucket ahead."""
    demand = settings.demand
    history = build_history(sales, demand, settings.timezone, origin_at)
    fitted = fit(sales, settings, origin_at, signals, history=history)
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
        strata=pl.lit(list(demand.interval_strata), dtype=pl.List(pl.Float64)),
        fit_seconds=pl.lit(fitted.timings.get("total", float("nan"))),
    )
    return frame


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
) -> shared_backtest.BacktestResult:
    """Rolling-origin backtest at `n_origins` weekly origins before `as_of` (see module doc),
    or at the given origins `at` (each at least a horizon before `as_of`)."""
    demand = settings.demand
    origin = buckets.origin_bucket(as_of, settings.timezone, demand.bucket_hours)
    actuals = (
        buckets.bucket_sales(sales, demand, settings.timezone, origin).select(
            "customer_id", "sku", "bucket", "y"
        )
    ).collect()
    points = origins(settings, as_of, n_origins) if at is None else sorted(to_utc(p) for p in at)

    def fit_predict(origin_at: datetime) -> pl.DataFrame:
        return evaluate_origin(sales, actuals, settings, origin_at, signals, with_ets)

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
        if base is not None and base == base and base > 0:
            comparison[f"wape_vs_{name}"] = mean["wape"] / base - 1.0
    out["wape_change_vs_baselines"] = comparison
    out["evaluated_rows"] = "open buckets plus any bucket with a sale; closed empty slots left out"
    return out
