"""Demand accuracy on the real pizza-shop year, next to baselines and (optionally) mlforecast.

Run (2 cores):  OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_demand_pizza.py
                [--origins 4] [--mlforecast] [--timezone America/New_York]

Data: ../shared/datasets/pizza (read in place), one customer ("shop") x 91 SKUs, 4-hour buckets
aligned to midnight in --timezone, horizon 42 buckets (7 days); origins 2015-09-01, 10-01, 11-01,
12-01 local midnight (issue 10), or with --weekly the last `--origins` weeks before 2016-01-01.

Targets (issue 10; the full table with peers: benchmarks/bench_demand_peers.py):
- P50 WAPE <= 0.893 (best peer) on average and < 1.0 (zero) at every origin;
- bias of the mean within +-10 % at every origin;
- P10-P90 coverage 0.75-0.85 overall and 0.70-0.90 per stratum of expected demand and on cells
  with a sale;
- with --mlforecast: Nixtla's mlforecast (recursive, the same lags / rolling windows / calendar
  features and the same LightGBM settings) on the same buckets and origins, in this one run:
  salesml at least as accurate (WAPE) and no slower (fit + forecast, all origins). mlforecast is
  a benchmark-only dependency (`.venv/bin/pip install -c constraints.txt mlforecast`).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before LightGBM loads OpenMP

import numpy as np
import polars as pl

from salesml import metrics
from salesml.config import Settings
from salesml.demand import buckets, demand_backtest, pizza
from salesml.demand.features import build_history
from salesml.demand.forecasting import fit, forecast


def _settings(timezone: str) -> Settings:
    return Settings(timezone=timezone)


ISSUE_ORIGIN_MONTHS = (9, 10, 11, 12)


def run_backtest(
    settings: Settings, sales: pl.DataFrame, as_of: datetime, n: int, weekly: bool = False
) -> dict[str, Any]:
    started = time.perf_counter()
    tz = ZoneInfo(settings.timezone)
    at = None if weekly else [datetime(2015, m, 1, tzinfo=tz) for m in ISSUE_ORIGIN_MONTHS]
    result = demand_backtest.backtest(sales, settings, as_of, n_origins=n, at=at)
    summary = demand_backtest.summary(result)
    summary["seconds_total"] = time.perf_counter() - started
    return summary


def _grid_pandas(history: Any, origin: int) -> Any:
    """The zero-filled bucket grid up to `origin` as mlforecast wants it (local wall time)."""
    grid = (
        history.grid.filter(pl.col("bucket") <= origin)
        .join(history.series.select("series_id", "sku"), on="series_id")
        .select(
            pl.col("sku").alias("unique_id"),
            (pl.col("bucket").cast(pl.Int64) * history.bucket_hours * 3_600_000_000)
            .cast(pl.Datetime("us"))
            .alias("ds"),
            pl.col("y").cast(pl.Float64),
        )
    )
    return grid.to_pandas()


def run_comparison(
    settings: Settings, sales: pl.DataFrame, as_of: datetime, n: int, intervals: bool
) -> dict[str, Any]:
    """salesml vs mlforecast at the same origins; WAPE on the same evaluated rows."""
    import lightgbm as lgb
    import mlforecast
    from mlforecast import MLForecast
    from mlforecast.lag_transforms import (
        RollingMean,
        RollingStd,
        SeasonalRollingMean,
        SeasonalRollingStd,
    )
    from mlforecast.utils import PredictionIntervals

    demand = settings.demand
    tz = settings.timezone
    full_origin = buckets.origin_bucket(as_of, tz, demand.grid.bucket_hours)
    actuals = (
        buckets.bucket_sales(sales, demand, tz, full_origin)
        .select("customer_id", "sku", "bucket", "y")
        .collect()
    )
    points = demand_backtest.origins(settings, as_of, n)
    params: dict[str, Any] = {
        "objective": demand.model.objective,
        "tweedie_variance_power": demand.model.tweedie_variance_power,
        "num_leaves": demand.model.num_leaves,
        "learning_rate": demand.model.learning_rate,
        "n_estimators": demand.model.n_estimators,
        "min_child_samples": demand.model.min_data_in_leaf,
        "colsample_bytree": demand.model.feature_fraction,
        "n_jobs": demand.model.num_threads,
        "random_state": demand.model.seed,
        "deterministic": True,
        "force_col_wise": True,
        "verbose": -1,
    }
    # the same inputs as salesml's features: recent lags, same bucket 1..k weeks back, rolling
    # mean/spread windows ending at the last known bucket, the same-bucket mean/spread of the
    # last weeks, bucket of day (hour) and weekday
    week = buckets.per_week(demand.grid.bucket_hours)
    single = min(demand.features.seasonal_lag_features, demand.features.seasonal_lag_weeks)
    lags = list(range(1, demand.features.recent_lags + 1)) + [
        k * week for k in range(1, single + 1)
    ]
    lag_transforms: dict[int, list[Any]] = {
        1: [RollingMean(window_size=w) for w in demand.features.rolling_windows]
        + [RollingStd(window_size=w) for w in demand.features.spread_windows],
        week: [
            SeasonalRollingMean(season_length=week, window_size=demand.features.seasonal_lag_weeks),
            SeasonalRollingStd(season_length=week, window_size=demand.features.seasonal_lag_weeks),
        ],
    }
    ours_seconds = 0.0
    theirs_seconds = 0.0
    frames = []
    for origin_at in points:
        tick = time.perf_counter()
        history = build_history(sales, demand, tz, origin_at)
        fitted = fit(sales, settings, origin_at, history=history)
        result = forecast(fitted.model, sales, settings, origin_at, history=history)
        ours_seconds += time.perf_counter() - tick

        data = _grid_pandas(history, history.origin)
        tick = time.perf_counter()
        model = MLForecast(
            models={"lgbm": lgb.LGBMRegressor(**params)},
            freq=f"{demand.grid.bucket_hours}h",
            lags=lags,
            lag_transforms=lag_transforms,
            date_features=["hour", "dayofweek"],
        )
        if intervals:
            model.fit(
                data,
                prediction_intervals=PredictionIntervals(
                    n_windows=2, h=demand.grid.horizon_buckets
                ),
            )
            theirs = model.predict(demand.grid.horizon_buckets, level=[80])
        else:
            model.fit(data)
            theirs = model.predict(demand.grid.horizon_buckets)
        theirs_seconds += time.perf_counter() - tick

        theirs_pl = pl.from_pandas(theirs).with_columns(
            bucket=(
                pl.col("ds").cast(pl.Datetime("us")).dt.epoch("us")
                // (demand.grid.bucket_hours * 3_600_000_000)
            ).cast(pl.Int32)
        )
        rename = {"unique_id": "sku", "lgbm": "mlf_mean"}
        if intervals:
            rename |= {"lgbm-lo-80": "mlf_p10", "lgbm-hi-80": "mlf_p90"}
        theirs_pl = theirs_pl.rename(rename).drop("ds")
        ours = result.frame.join(
            actuals, on=["customer_id", "sku", "bucket"], how="left", suffix="_actual"
        ).with_columns(pl.col("y_actual").fill_null(0.0).alias("actual"))
        frames.append(ours.join(theirs_pl, on=["sku", "bucket"], how="left"))
    both = pl.concat(frames, how="diagonal_relaxed")
    rows = both.filter(~pl.col("closed") | (pl.col("actual") > 0))
    y = rows["actual"].to_numpy()
    mlf_mean = np.clip(rows["mlf_mean"].fill_null(0.0).to_numpy(), 0.0, None)
    out: dict[str, Any] = {
        "mlforecast_version": mlforecast.__version__,
        "lightgbm_params": params,
        "lags": lags,
        "rolling_windows": demand.features.rolling_windows,
        "origins": [p.isoformat() for p in points],
        "rows": int(rows.height),
        "salesml_wape_p50": metrics.wape(y, rows["p50"].to_numpy()),
        "salesml_wape_mean": metrics.wape(y, rows["mean"].to_numpy()),
        "mlforecast_wape_mean": metrics.wape(y, mlf_mean),
        "mlforecast_wape_mean_rounded_down_closed": metrics.wape(
            y, np.where(rows["closed"].to_numpy(), 0.0, mlf_mean)
        ),
        "salesml_pinball_p50": metrics.pinball_loss(y, rows["p50"].to_numpy(), 0.5),
        "mlforecast_pinball_p50": metrics.pinball_loss(y, mlf_mean, 0.5),
        "salesml_seconds": ours_seconds,
        "mlforecast_seconds": theirs_seconds,
    }
    if intervals:
        lo = np.clip(rows["mlf_p10"].fill_null(0.0).to_numpy(), 0.0, None)
        hi = np.clip(rows["mlf_p90"].fill_null(0.0).to_numpy(), 0.0, None)
        out["salesml_coverage_p10_p90"] = metrics.interval_coverage(
            y, rows["p10"].to_numpy(), rows["p90"].to_numpy()
        )
        out["mlforecast_coverage_80"] = metrics.interval_coverage(y, np.minimum(lo, hi), hi)
        out["salesml_pinball_p90"] = metrics.pinball_loss(y, rows["p90"].to_numpy(), 0.9)
        out["mlforecast_pinball_p90"] = metrics.pinball_loss(y, hi, 0.9)
    out["salesml_at_least_as_accurate"] = out["salesml_wape_p50"] <= out["mlforecast_wape_mean"]
    out["salesml_no_slower"] = ours_seconds <= theirs_seconds
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--origins", type=int, default=4)
    parser.add_argument("--timezone", default="America/New_York")
    parser.add_argument("--mlforecast", action="store_true", help="compare with mlforecast")
    parser.add_argument("--intervals", action="store_true", help="mlforecast conformal 80%")
    parser.add_argument("--skip-backtest", action="store_true")
    parser.add_argument("--weekly", action="store_true", help="weekly origins before 2016")
    args = parser.parse_args()
    if not pizza.available():
        raise SystemExit(f"pizza dataset not found at {pizza.default_path()}")
    settings = _settings(args.timezone)
    sales = pizza.load_sales(timezone=args.timezone)
    as_of = datetime(2016, 1, 1, tzinfo=ZoneInfo(args.timezone))
    report: dict[str, Any] = {"series": int(sales["sku"].n_unique()), "sales_rows": sales.height}
    if not args.skip_backtest:
        summary = run_backtest(settings, sales, as_of, args.origins, args.weekly)
        mean = summary["mean"]
        per_origin = summary["per_origin"]
        wapes = [row["wape"] for row in per_origin]
        biases = [row["bias_mean"] for row in per_origin]
        strata = [k for k in mean if k.startswith("coverage_") and k != "coverage_p10_p90"]
        report["backtest"] = {
            "origins": [row["origin"] for row in per_origin],
            "seconds_total": round(summary["seconds_total"], 1),
            "wape_p50_per_origin": [round(w, 3) for w in wapes],
            "bias_mean_per_origin": [round(b, 3) for b in biases],
            "model": {
                k: mean[k]
                for k in (
                    "wape",
                    "wape_mean",
                    "mase",
                    "bias",
                    "bias_mean",
                    "coverage_p10_p90",
                    *strata,
                    "pinball_p10",
                    "pinball_p50",
                    "pinball_p90",
                )
            },
            "baselines": {
                k: v
                for k, v in mean.items()
                if k.split("_wape")[0] in demand_backtest.BASELINES
                or any(k.startswith(b) for b in demand_backtest.BASELINES)
            },
            "wape_change_vs_baselines": summary["wape_change_vs_baselines"],
            "targets": {
                "wape_p50_at_most_0.893": mean["wape"] <= 0.893,
                "wape_p50_below_1_at_every_origin": all(w < 1.0 for w in wapes),
                "bias_mean_within_10pct_at_every_origin": all(abs(b) <= 0.10 for b in biases),
                "coverage_in_0.75_0.85": 0.75 <= mean["coverage_p10_p90"] <= 0.85,
                "coverage_per_stratum_and_sale_in_0.70_0.90": all(
                    0.70 <= mean[k] <= 0.90 for k in strata
                ),
            },
        }
    if args.mlforecast:
        report["mlforecast_comparison"] = run_comparison(
            settings, sales, as_of, args.origins, args.intervals
        )
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
