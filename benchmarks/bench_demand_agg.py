"""salesml's coherent aggregates (`demand_forecast_agg`) next to each level's baselines, on pizza.

Run (2 cores):  OMP_WAIT_POLICY=PASSIVE nice -n 10 .venv/bin/python benchmarks/bench_demand_agg.py
                [--timezone America/New_York] [--no-ets] [--json] [--world N]

One rolling-origin backtest (`salesml.demand.demand_backtest.backtest`, the whole training replayed at
each origin): origins 2015-09-01, 10-01, 11-01, 12-01 (local midnight), 42 buckets (7 days)
ahead. All cells of each origin are summed to sku_day, sku_week, customer_day, region_day and
total_bucket (`evaluate.score_levels`). Per level and origin: WAPE of salesml's summed mean
next to the level's seasonal naive (same period last week), 4-week mean, zero and 8-week median
(summed bottom-up) and ETS (summed), bias of the mean, and P10-P90 coverage of the aggregate
interval (negative binomial on summed variances x the level's held-out inflation). The pizza
shop has one customer and no region: customer_day and region_day are the shop's day.
`--world N`: the same on the generated world (N store x SKU series, regions), 2 weekly origins.
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

import polars as pl

from salesml.config import Settings
from salesml.demand import aggregate, demand_backtest, pizza
from salesml.sample import WORLD_END, demand_world

ORIGIN_MONTHS = (9, 10, 11, 12)
SHOWN = ("seasonal_naive", "recent_mean", "zero", "median_8w", "ets")


def level_rows(per_origin: pl.DataFrame) -> list[dict[str, Any]]:
    """One row per level: per-origin and mean WAPE of salesml and each baseline, bias,
    coverage, inflation-free facts (rows)."""
    out = []
    for level in aggregate.LEVELS:
        prefix = f"agg_{level}_"
        if prefix + "wape" not in per_origin.columns:
            continue
        row: dict[str, Any] = {"level": level}
        for name, col in [("salesml", "wape"), *((b, f"{b}_wape") for b in SHOWN)]:
            if prefix + col in per_origin.columns:
                values = per_origin[prefix + col].to_list()
                row[name] = [round(v, 3) for v in values]
        row["bias"] = [round(v, 3) for v in per_origin[prefix + "bias"].to_list()]
        row["coverage"] = [round(v, 3) for v in per_origin[prefix + "coverage_p10_p90"].to_list()]
        row["wape_p50"] = [round(v, 3) for v in per_origin[prefix + "wape_p50"].to_list()]
        row["rows"] = [int(v) for v in per_origin[prefix + "rows"].to_list()]
        row["inflation"] = [round(v, 3) for v in per_origin[prefix + "inflation"].to_list()]
        sal = row["salesml"]
        row["beats_seasonal_naive"] = all(
            s <= b for s, b in zip(sal, row["seasonal_naive"], strict=True)
        )
        row["beats_recent_mean"] = all(s <= b for s, b in zip(sal, row["recent_mean"], strict=True))
        out.append(row)
    return out


def _print(rows: list[dict[str, Any]], origins: list[str]) -> None:
    print("WAPE per origin (" + ", ".join(origins) + ") and mean")
    for row in rows:
        print(f"\n{row['level']}  ({' / '.join(str(r) for r in row['rows'])} aggregates)")
        for name in ("salesml", *SHOWN):
            if name in row:
                vals = row[name]
                mean = sum(vals) / len(vals)
                print(f"  {name:16s} " + " ".join(f"{v:.3f}" for v in vals) + f"   {mean:.3f}")
        print("  salesml bias     " + " ".join(f"{v:+.3f}" for v in row["bias"]))
        print("  P50 WAPE (agg)   " + " ".join(f"{v:.3f}" for v in row["wape_p50"]))
        print("  P10-P90 coverage " + " ".join(f"{v:.2f}" for v in row["coverage"]))
        print("  var. inflation   " + " ".join(f"{v:.2f}" for v in row["inflation"]))
        print(
            f"  at every origin: <= seasonal naive {row['beats_seasonal_naive']}, "
            f"<= 4-week mean {row['beats_recent_mean']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timezone", default="America/New_York")
    parser.add_argument("--no-ets", action="store_true", help="skip the ETS baseline")
    parser.add_argument("--json", action="store_true", help="print the table as JSON too")
    parser.add_argument(
        "--world",
        type=int,
        default=0,
        help="instead of pizza: the generated world with this many series (90 days, seed 0), "
        "2 weekly origins before its end",
    )
    args = parser.parse_args()
    tick = time.perf_counter()
    if args.world:
        tables, _ = demand_world(n_series=args.world, days=90, seed=0)
        settings = Settings()
        result = demand_backtest.backtest(
            tables["sales"], settings, WORLD_END, 2, tables["signals"], with_ets=not args.no_ets
        )
        points = result.per_origin["origin"].to_list()
    else:
        if not pizza.available():
            raise SystemExit(f"pizza dataset not found at {pizza.default_path()}")
        tz = args.timezone
        settings = Settings(timezone=tz)
        sales = pizza.load_sales(timezone=tz)
        points = [datetime(2015, m, 1, tzinfo=ZoneInfo(tz)) for m in ORIGIN_MONTHS]
        as_of = datetime(2016, 1, 1, tzinfo=ZoneInfo(tz))
        result = demand_backtest.backtest(
            sales, settings, as_of, at=points, with_ets=not args.no_ets
        )
    seconds = time.perf_counter() - tick
    rows = level_rows(result.per_origin)
    _print(rows, [f"{p:%Y-%m-%d}" for p in points])
    print(f"\nseconds: salesml backtest ({len(points)} origins) {seconds:.1f}")
    print(
        "every level <= its seasonal naive and 4-week mean at every origin: "
        f"{all(r['beats_seasonal_naive'] and r['beats_recent_mean'] for r in rows)}"
    )
    if args.json:
        print(json.dumps({"levels": rows, "seconds": seconds}, indent=2))


if __name__ == "__main__":
    main()
