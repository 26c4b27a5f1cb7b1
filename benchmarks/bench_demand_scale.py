"""Demand at scale on the synthetic world: train + forecast 7 days ahead, time and peak memory.

Run (2 cores):  OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_demand_scale.py
                [--series 10000] [--days 90] [--threads 2] [--backtest N]

Targets (issue "demand"): 10,000 series x 90 days trains and forecasts 7 days ahead in under
2 minutes; 100,000 series under 20 minutes with peak memory under 12 GiB (max RSS of this
process, which also holds the generated world). Generating the world is not timed. "Forecast"
includes SKU health and the default drivers (SHAP for the next `explain_hours_ahead` hours of
every series and for every bucket of series rated red/yellow); the SHAP cost per row is printed.
Issue 10: train + forecast (without drivers) of 10,000 series under 60 s. `--backtest N` runs the
rolling-origin backtest on the generated world instead (held-out WAPE, coverage per stratum).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before LightGBM loads OpenMP

import polars as pl

from salesml.config import DemandSettings, Settings
from salesml.demand import drivers, forecasting, health
from salesml.sample import WORLD_END, demand_world


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def backtest_world(args: argparse.Namespace) -> None:
    """P50 / mean WAPE, bias, pinball and coverage (overall, per stratum, on sale cells) of
    the rolling-origin backtest on the generated world."""
    from salesml.demand import demand_backtest

    tables, _ = demand_world(n_series=args.series, days=args.days, seed=args.seed)
    settings = Settings(demand=DemandSettings(model={"num_threads": args.threads}))
    tick = time.perf_counter()
    result = demand_backtest.backtest(
        tables["sales"], settings, WORLD_END, args.backtest, tables["signals"], with_ets=False
    )
    keys = ("wape", "wape_mean", "bias", "bias_mean", "pinball_p10", "pinball_p50")
    keys += ("pinball_p90", "zero_wape", "median_8w_wape", "seasonal_naive_wape")
    keys += ("recent_mean_wape",)
    mean = result.mean
    out: dict[str, Any] = {"series": args.series, "origins": args.backtest}
    out["seconds"] = round(time.perf_counter() - tick, 1)
    out["mean"] = {k: round(mean[k], 4) for k in keys if k in mean}
    out["coverage"] = {k: round(v, 4) for k, v in mean.items() if k.startswith("coverage")}
    print(json.dumps(out, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--backtest",
        type=int,
        default=0,
        metavar="N",
        help="instead: rolling-origin backtest at N weekly origins (held-out quality)",
    )
    args = parser.parse_args()
    if args.backtest:
        backtest_world(args)
        return

    import lightgbm  # noqa: F401  (import cost is not part of the job)
    import scipy.stats  # noqa: F401

    tick = time.perf_counter()
    tables, _ = demand_world(n_series=args.series, days=args.days, seed=args.seed)
    generate = time.perf_counter() - tick
    settings = Settings(demand=DemandSettings(model={"num_threads": args.threads}))
    as_of = WORLD_END
    sales, signals, inventory = tables["sales"], tables["signals"], tables["inventory"]
    out: dict[str, Any] = {
        "series": args.series,
        "days": args.days,
        "sales_rows": sales.height,
        "signal_rows": signals.height,
        "generate_seconds": round(generate, 1),
        "rss_after_generate_gib": round(_rss_gib(), 2),
    }

    tick = time.perf_counter()
    fitted = forecasting.fit(sales, settings, as_of, signals)
    out["train_seconds"] = round(time.perf_counter() - tick, 1)
    out["train_timings"] = {k: round(v, 1) for k, v in fitted.timings.items()}
    out["train_rows"] = fitted.params["train_rows"]
    out["held_out"] = {k: round(v, 4) for k, v in fitted.metrics.items()}
    out["rss_after_train_gib"] = round(_rss_gib(), 2)

    tick = time.perf_counter()
    result = forecasting.forecast(fitted.model, sales, settings, as_of, signals)
    forecast_seconds = time.perf_counter() - tick
    tick = time.perf_counter()
    rated = health.sku_health(result.frame, inventory, sales, settings.demand, as_of)
    health_seconds = time.perf_counter() - tick
    mask = drivers.rows_to_explain(result.frame, settings.demand, as_of, rated)
    explained = drivers.explain_rows(
        fitted.model, result.frame, result.features, settings.demand, mask
    )
    out["forecast_rows"] = result.frame.height
    out["forecast_seconds"] = round(forecast_seconds, 1)
    out["health_seconds"] = round(health_seconds, 1)
    out["health"] = dict(rated.group_by("health").len().iter_rows())
    out["drivers"] = {
        "rows_explained": explained.rows_explained,
        "open_rows_selected_before_cap": drivers.selected_open_rows(
            result.frame, settings.demand, as_of, rated
        ),
        "explain_max_rows": settings.demand.explain.max_rows,
        "seconds": round(explained.seconds, 1),
        "ms_per_row": round(explained.ms_per_row, 3),
        "factor_rows": explained.factors.height,
    }
    without = out["train_seconds"] + forecast_seconds + health_seconds
    total = without + explained.seconds
    out["train_plus_forecast_seconds_without_drivers"] = round(without, 1)
    out["train_plus_forecast_seconds"] = round(total, 1)
    out["peak_rss_gib"] = round(_rss_gib(), 2)
    limit = 120 if args.series <= 10_000 else 1200
    out["target"] = {"seconds": limit, "met": total < limit and out["peak_rss_gib"] < 12}
    quantiles = result.frame.select(
        ordered=((pl.col("p10") <= pl.col("p50")) & (pl.col("p50") <= pl.col("p90"))).all()
    ).item()
    out["quantiles_ordered"] = bool(quantiles)
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
