"""Multi-horizon strategy, measured: direct (horizon as a feature) vs recursive (one-step model
fed its own forecasts), same features, same LightGBM settings, same data and origins.

Run (2 cores):  OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_demand_strategy.py
                [--data pizza|synthetic] [--origins 4] [--series 500]

Both strategies use `salesml.demand.features` unchanged. Direct: `pipeline.fit` as shipped
(training rows carry a random horizon 1..42; one model; forecasting is one pass). Recursive: the
model is trained on horizon-1 rows only (origin = the previous bucket), and the forecast walks
42 steps, writing each step's predicted mean into the grid before computing the next step's
features. Printed: WAPE of the mean forecast (P50 is derived from it identically in both), MASE,
bias, by horizon band, and the fit + forecast seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import polars as pl

from salesml import metrics
from salesml.config import Settings
from salesml.demand import buckets, demand_backtest, pizza
from salesml.demand.features import (
    History,
    build_history,
    make_features,
    origin_rows,
    training_rows,
    with_running_sums,
)
from salesml.demand.forecasting import fit, forecast
from salesml.demand.model import DemandModel
from salesml.sample import WORLD_END, demand_world


def _recursive(
    history: History, settings: Settings, signals: pl.DataFrame | None, as_of: datetime
) -> pl.DataFrame:
    demand = settings.demand
    rows = training_rows(history, history.origin, demand)
    rows = rows.with_columns(h=pl.lit(1, pl.Int32)).unique(maintain_order=True)
    starts = pl.lit(history.series["start_row"]).gather(
        history.col("series_id").gather(pl.col("row"))
    )
    rows = rows.filter(pl.col("row") - 1 >= starts)
    train = make_features(history, rows, demand, signals, as_of)
    names = [
        c
        for c in train.columns
        if c not in {"row", "series_id", "bucket", "origin_bucket", "h", "y", "closed"}
    ]
    model = DemandModel.from_settings(demand).fit(train.select(names), train["y"])
    ahead = origin_rows(history, history.origin)
    grid = history.grid
    out = []
    for step in range(1, history.horizon + 1):
        step_rows = ahead.filter(pl.col("h") == step).with_columns(h=pl.lit(1, pl.Int32))
        current = replace(history, grid=with_running_sums(grid).collect())
        frame = make_features(current, step_rows, demand, signals, as_of, columns=names)
        mean = np.where(frame["closed"].to_numpy(), 0.0, model.predict(frame))
        grid = grid.with_columns(
            y=grid["y"].scatter(frame["row"].to_numpy(), mean.astype(np.float32))
        )
        out.append(
            frame.select("series_id", "bucket", "closed").with_columns(
                mean=pl.Series(mean), horizon=pl.lit(step)
            )
        )
    return pl.concat(out)


def _score(frame: pl.DataFrame) -> dict[str, float]:
    rows = frame.filter(~pl.col("closed") | (pl.col("y") > 0))
    y = rows["y"].to_numpy()
    mean = rows["mean"].to_numpy()
    out = {"wape_mean": metrics.wape(y, mean), "bias_mean": metrics.bias(y, mean)}
    for lo, hi in ((1, 6), (7, 18), (19, 42)):
        band = rows.filter(pl.col("horizon").is_between(lo, hi))
        out[f"wape_h{lo}_{hi}"] = metrics.wape(band["y"].to_numpy(), band["mean"].to_numpy())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["pizza", "synthetic"], default="pizza")
    parser.add_argument("--origins", type=int, default=4)
    parser.add_argument("--series", type=int, default=500)
    args = parser.parse_args()
    import lightgbm  # noqa: F401
    import scipy.stats  # noqa: F401

    if args.data == "pizza":
        tz = "America/New_York"
        settings = Settings(timezone=tz)
        sales, signals = pizza.load_sales(timezone=tz), None
        as_of = datetime(2016, 1, 1, tzinfo=ZoneInfo(tz))
    else:
        settings = Settings()
        tables, _ = demand_world(n_series=args.series, days=90, seed=1)
        sales, signals = tables["sales"], tables["signals"]
        as_of = WORLD_END
    demand = settings.demand
    full = buckets.origin_bucket(as_of, settings.timezone, demand.grid.bucket_hours)
    actuals = (
        buckets.bucket_sales(sales, demand, settings.timezone, full)
        .select("customer_id", "sku", "bucket", "y")
        .collect()
    )
    results: dict[str, Any] = {}
    for strategy in ("direct", "recursive"):
        seconds = 0.0
        frames = []
        for origin_at in demand_backtest.origins(settings, as_of, args.origins):
            history = build_history(sales, demand, settings.timezone, origin_at)
            tick = time.perf_counter()
            if strategy == "direct":
                fitted = fit(sales, settings, origin_at, signals, history=history)
                result = forecast(
                    fitted.model, sales, settings, origin_at, signals, history=history
                )
                frame = result.frame.select("series_id", "bucket", "closed", "mean", "horizon")
            else:
                frame = _recursive(history, settings, signals, origin_at)
            seconds += time.perf_counter() - tick
            keys = history.series.select("series_id", "customer_id", "sku")
            frames.append(
                frame.join(keys, on="series_id")
                .join(actuals, on=["customer_id", "sku", "bucket"], how="left")
                .with_columns(pl.col("y").fill_null(0.0))
            )
        results[strategy] = {
            **_score(pl.concat(frames, how="vertical_relaxed")),
            "seconds": seconds,
        }
    print(json.dumps({"data": args.data, "origins": args.origins, **results}, indent=2))


if __name__ == "__main__":
    main()
