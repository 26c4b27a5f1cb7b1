"""model_quality on the real pizza-shop year: backtest rows vs the backtest JSON, realised checks
of the forecasts written at each origin, and the demand gate's numbers.

Run (2 cores):  OMP_WAIT_POLICY=PASSIVE nice -n 10 .venv/bin/python benchmarks/bench_model_quality.py
                [--timezone America/New_York]

Data: ../shared/datasets/pizza (read in place), one shop x 91 SKUs, 4-hour buckets, 42 ahead;
origins 2015-09-01, 10-01, 11-01, 12-01 local midnight (issue 10).

1. `evaluate.backtest` at those origins -> `quality.backtest_rows`: every row's value must equal
   the per-origin JSON figure (prints the largest difference; 0 expected).
2. At each origin t the model is fitted on sales <= t and forecasts the next 42 buckets (the
   `demand_forecast` rows a forecast run writes); at as_of = t + 7 days
   `quality.realised_demand_rows` checks them against the sales known then. Printed next to the
   backtest's figures for the same origin: what the product reported about itself vs what it
   then achieved (the two evaluate slightly different cells: the backtest leaves out closed
   empty slots, the realised check cells forecast as surely empty that sold nothing).
3. The demand gate at 2015-12-01: the candidate's held-out scaled pinball loss next to the
   8-week same-bucket median's on the same rows.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before LightGBM loads OpenMP

import polars as pl

from salesml import quality
from salesml.config import Settings
from salesml.demand import demand_backtest, demand_jobs, pizza
from salesml.demand.forecasting import fit, forecast, forecast_table
from salesml.timeutil import DATETIME

MONTHS = (9, 10, 11, 12)
SHOWN = ("wape", "pinball_p50", "coverage_p10_p90", "coverage_sale")


def backtest_part(settings: Settings, sales: pl.DataFrame, origins: list[datetime]) -> pl.DataFrame:
    as_of = max(origins) + timedelta(days=8)
    result = demand_backtest.backtest(sales, settings, as_of, at=origins)
    summary = json.loads(json.dumps(demand_backtest.summary(result), default=str))
    rows = quality.backtest_rows(
        summary, quality.DEMAND, "bench", settings.demand.intervals.interval_coverage
    )
    worst = 0.0
    for entry in summary["per_origin"]:
        at = datetime.fromisoformat(entry["origin"])
        for row in rows.filter(pl.col("origin") == at).iter_rows(named=True):
            if row["value"] is not None and entry[row["metric"]] is not None:
                worst = max(worst, abs(row["value"] - entry[row["metric"]]))
    print(f"backtest: {rows.height} model_quality rows; largest |row - JSON| = {worst:.3g}")
    return rows


def realised_part(settings: Settings, sales: pl.DataFrame, origins: list[datetime]) -> pl.DataFrame:
    demand = settings.demand
    parts = []
    for at in origins:
        known = sales.filter(pl.col("ts") <= pl.lit(at, DATETIME))
        fitted = fit(known, settings, at)
        table = forecast_table(forecast(fitted.model, known, settings, at), "bench")
        written = table.with_columns(as_of=pl.lit(at, DATETIME))
        check_at = at + timedelta(days=7)
        actuals = quality.demand_actuals(sales, demand, settings.timezone, check_at)
        parts.append(
            quality.realised_demand_rows(
                written,
                actuals,
                check_at,
                timezone=settings.timezone,
                bucket_hours=demand.grid.bucket_hours,
                run_id="bench",
                strata=tuple(demand.intervals.interval_strata),
                nominal=demand.intervals.interval_coverage,
            )
        )
    return pl.concat(parts)


def gate_part(settings: Settings, sales: pl.DataFrame, at: datetime) -> None:
    known = sales.filter(pl.col("ts") <= pl.lit(at, DATETIME))
    fitted = fit(known, settings, at)
    _, check = demand_jobs._gate_values(fitted, settings)
    print(f"gate at {at.date()}: {check.verdict()[1]} (held-out WAPE {fitted.metrics['wape']:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timezone", default="America/New_York")
    args = parser.parse_args()
    settings = Settings(timezone=args.timezone)
    sales = pizza.load_sales(timezone=args.timezone)
    tz = ZoneInfo(args.timezone)
    origins = [datetime(2015, m, 1, tzinfo=tz).astimezone(ZoneInfo("UTC")) for m in MONTHS]
    started = time.perf_counter()
    backtest = backtest_part(settings, sales, origins)
    realised = realised_part(settings, sales, origins)
    keys = ["origin", "metric"]
    joined = (
        backtest.filter(pl.col("metric").is_in(SHOWN))
        .select(
            *keys,
            pl.col("value").alias("backtest"),
            pl.col("baseline").alias("bt_base"),
            pl.col("baseline_value").alias("bt_base_value"),
        )
        .join(
            realised.select(
                *keys,
                pl.col("value").alias("realised"),
                pl.col("baseline").alias("re_base"),
                pl.col("baseline_value").alias("re_base_value"),
                "rows",
            ),
            on=keys,
            how="left",
        )
        .sort(keys)
    )
    with pl.Config(tbl_rows=40, tbl_cols=10, tbl_width_chars=160, float_precision=3):
        print(joined)
    gate_part(settings, sales, origins[-1])
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
