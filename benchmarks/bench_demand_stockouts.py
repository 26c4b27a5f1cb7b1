"""Stock-outs censored vs read as zero demand, on the generated world (it plants stock-outs).

Run (2 cores):  OMP_WAIT_POLICY=PASSIVE nice -n 10 .venv/bin/python \
                    benchmarks/bench_demand_stockouts.py [--series 300] [--days 120]

The real sets have no inventory (pizza is a till export), so the generated world is the judge:
its stores run out of stock (failed weekly deliveries) and sell nothing while out. At 4 weekly
origins, the same model is trained and forecast twice: with `inventory` (stock-out buckets
censored: missing, not zero) and without it (zeros read as demand). Scored on the week ahead's
buckets that were in stock (where a sale is demand; the stock status of the future is read from
the full inventory for scoring only): P50 WAPE and bias of the mean per origin, next to the zero
forecast (WAPE 1.0) and the 8-week same-bucket median (`baselines`, the strongest trivial one).
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import timedelta

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before LightGBM loads OpenMP

import polars as pl

from salesml.config import Settings
from salesml.demand import baselines, forecasting
from salesml.demand.features import build_history, origin_rows, stockout_buckets
from salesml.sample.demand import demand_world


def _score(frame: pl.DataFrame, point: str, mean: str) -> tuple[float, float]:
    y = frame["y"].sum()
    wape = float((frame[point] - frame["y"]).abs().sum() / y)
    bias = float(frame[mean].sum() / y - 1.0)
    return wape, bias


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=300)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--cold-start", action="store_true", help="young series instead")
    parser.add_argument("--known-days", type=int, nargs="+", default=[3, 7, 13])
    args = parser.parse_args()
    if args.cold_start:
        cold_start(args)
        return
    tables, truth = demand_world(n_series=args.series, days=args.days, seed=3)
    sales, inventory, signals = tables["sales"], tables["inventory"], tables["signals"]
    settings = Settings()
    demand = settings.demand
    end = sales["ts"].max()
    assert end is not None
    last = end.replace(hour=0, minute=0, second=0, microsecond=0)  # type: ignore[union-attr]
    origins = [last - timedelta(days=7 * k) for k in (4, 3, 2, 1)]
    print(
        f"generated world: {args.series} series x {args.days} days, "
        f"censored units {truth['censored_units'].sum():.0f} of "
        f"{sales.filter(pl.col('quantity') > 0)['quantity'].sum():.0f} sold"
    )
    print(f"{'origin':12s} {'method':26s} {'P50 WAPE':>9s} {'bias':>8s}")
    for as_of in origins:
        full = build_history(sales, demand, settings.timezone, as_of + timedelta(days=7))
        out = stockout_buckets(
            inventory, settings.timezone, demand.grid.bucket_hours, end, full.origin
        ).with_columns(out=pl.lit(True))
        truth_rows = (
            full.grid.join(full.series.select("series_id", "customer_id", "sku"), on="series_id")
            .filter(pl.col("bucket") > full.origin - full.horizon)
            .select("customer_id", "sku", "bucket", pl.col("y").alias("actual"))
        )
        results = {}
        for name, inv in (("censored (inventory)", inventory), ("zeros as demand", None)):
            tick = time.perf_counter()
            fitted = forecasting.fit(sales, settings, as_of, signals, inventory=inv)
            fc = forecasting.forecast(fitted.model, sales, settings, as_of, signals, inventory=inv)
            results[name] = (fc.frame, time.perf_counter() - tick)
        history = build_history(sales, demand, settings.timezone, as_of, inventory=inventory)
        median = (
            baselines.naive_forecasts(history, origin_rows(history, history.origin))
            .with_columns(
                series_id=history.col("series_id").gather(pl.col("row")),
                bucket=history.col("bucket").gather(pl.col("row")),
            )
            .select("series_id", "bucket", pl.col("median_8w").alias("median"))
        )
        for name, (frame, seconds) in results.items():
            scored = (
                frame.join(truth_rows, on=["customer_id", "sku", "bucket"])
                .join(out, on=["customer_id", "sku", "bucket"], how="left")
                .filter(
                    pl.col("out").is_null() & pl.col("actual").is_not_null() & ~pl.col("closed")
                )
                .with_columns(y=pl.col("actual"))
            )
            wape, bias = _score(scored, "p50", "mean")
            print(f"{as_of.date()!s:12s} {name:26s} {wape:9.3f} {bias:+8.3f}   ({seconds:.0f} s)")
            if name.startswith("censored"):
                base = scored.join(median, on=["series_id", "bucket"], how="left").with_columns(
                    pl.col("median").fill_null(0.0)
                )
                m_wape, m_bias = _score(base, "median", "median")
                print(f"{'':12s} {'median_8w':26s} {m_wape:9.3f} {m_bias:+8.3f}")
                print(f"{'':12s} {'zero':26s} {1.0:9.3f} {-1.0:+8.3f}")


def cold_start(args: argparse.Namespace) -> None:
    """Young series: for every 5th series, sales before `known` days before as_of are dropped
    (0: none left, a SKU on the shelf that never sold); their week ahead from the model (trained
    on everything else too) vs the cold-start rule vs zero, on in-stock buckets;
    `--known-days` varies how young."""
    tables, _ = demand_world(n_series=args.series, days=args.days, seed=3)
    sales, inventory, signals = tables["sales"], tables["inventory"], tables["signals"]
    settings = Settings(demand={"cold_start_min_days": 14})  # the rule for young series too
    demand = settings.demand
    end = sales["ts"].max()
    assert end is not None
    as_of = end.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=7)  # type: ignore[union-attr]
    keys = sales.select("customer_id", "sku").unique().sort("customer_id", "sku")
    young = keys.gather_every(5)
    print(f"as_of {as_of.date()}, young series {young.height} of {keys.height}")
    print(f"{'known days':10s} {'method':12s} {'P50 WAPE':>9s} {'bias':>8s}")
    for known in args.known_days:
        marked = sales.join(
            young.with_columns(young=pl.lit(True)), on=["customer_id", "sku"], how="left"
        )
        cut = pl.col("young").fill_null(False) & (pl.col("ts") < as_of - timedelta(days=known))
        world = marked.filter(~cut).drop("young")
        fitted = forecasting.fit(world, settings, as_of, signals, inventory=inventory)
        fc = forecasting.forecast(
            fitted.model, world, settings, as_of, signals, inventory=inventory
        )
        table = forecasting.forecast_table(fc, "bench")
        cold = forecasting.cold_start_rows(fc.history, world, settings, as_of, inventory)
        mixed = forecasting.with_cold_start(table, cold)
        full = build_history(sales, demand, settings.timezone, as_of + timedelta(days=7))
        out = stockout_buckets(
            inventory, settings.timezone, demand.grid.bucket_hours, end, full.origin
        ).with_columns(out=pl.lit(True), bucket_start=_start(full))
        actual = (
            full.grid.join(full.series.select("series_id", "customer_id", "sku"), on="series_id")
            .filter(pl.col("bucket") > full.origin - full.horizon)
            .with_columns(bucket_start=_start(full))
            .select("customer_id", "sku", "bucket_start", pl.col("y"))
        )
        on = ["customer_id", "sku", "bucket_start"]
        for name, rows in (("model", table), ("cold_start", mixed)):
            scored = (
                rows.join(young, on=["customer_id", "sku"], how="semi")
                .join(actual, on=on)
                .join(out.select(*on, "out"), on=on, how="left")
                .filter(pl.col("out").is_null() & pl.col("y").is_not_null())
            )
            if scored.height == 0:  # no history at all: the model has no row for them
                continue
            wape, bias = _score(scored, "p50", "expected")
            print(f"{known:<10d} {name:12s} {wape:9.3f} {bias:+8.3f}")
        print(f"{known:<10d} {'zero':12s} {1.0:9.3f} {-1.0:+8.3f}")


def _start(history: object) -> pl.Expr:
    from salesml.demand import buckets

    h = history  # type: ignore[assignment]
    return buckets.bucket_start(pl.col("bucket"), h.timezone, h.bucket_hours)  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
