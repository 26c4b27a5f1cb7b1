"""Forecast-demand flow: one process vs a Dask LocalCluster (partitions of series).

Prints wall seconds of each flow run and whether the outputs match. Usage:
    .venv/bin/python benchmarks/bench_flows_dask.py [--series 300] [--days 120] [--workers 2]
        [--partitions 4] [--threads]

Needs the demand forecast split by series (salesml.demand.forecasting.partition_series); without it
both runs are single-process. Starts a temporary Prefect server (~20 s, not counted).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import yaml

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--series", type=int, default=300)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--threads", action="store_true", help="workers as threads, not processes")
    args = parser.parse_args()

    from polars.testing import assert_frame_equal
    from prefect.testing.utilities import prefect_test_harness

    from pipelines import flows
    from salesml.config import load
    from salesml.sample import WORLD_END, write_sample
    from salesml.warehouse import Warehouse

    root = Path(tempfile.mkdtemp(prefix="bench-flows-dask-"))
    write_sample(root / "data", deals=0, series=args.series, days=args.days, seed=1)
    base = {
        "sources": {"path": str(root / "data")},
        "mlflow": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}"},
        "demand": {"model": {"num_threads": 1}},
    }

    def config(name: str, compute: dict[str, object]) -> str:
        raw = {**base, "warehouse": {"url": f"duckdb:///{root / name}.duckdb"}}
        raw["compute"] = compute
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return str(path)

    single = config("single", {})
    dask = config(
        "dask",
        {
            "dask": "local-cluster",
            "dask_workers": args.workers,
            "partitions": args.partitions,
            "dask_processes": not args.threads,
        },
    )
    as_of = WORLD_END.isoformat()
    with prefect_test_harness(server_startup_timeout=180):
        tick = time.perf_counter()
        flows.train_demand(config=single, as_of=as_of)
        print(f"train (single process): {time.perf_counter() - tick:.1f} s")
        for name, path in (("single process", single), (f"dask x{args.workers}", dask)):
            tick = time.perf_counter()
            summary = flows.forecast_demand(config=path, as_of=as_of)
            seconds = time.perf_counter() - tick
            print(
                f"forecast ({name}): {seconds:.1f} s wall; "
                f"{summary['row_counts'].get('demand_forecast')} forecast rows, "
                f"{summary['report']['rows_explained']} rows explained; "
                f"step seconds {summary['report']['seconds']}"
            )
    keys = ["customer_id", "sku", "bucket_start"]
    one = Warehouse.from_settings(load(single)).read("demand_forecast", as_of=WORLD_END)
    two = Warehouse.from_settings(load(dask)).read("demand_forecast", as_of=WORLD_END)
    assert_frame_equal(one.drop("run_id").sort(keys), two.drop("run_id").sort(keys))
    print("outputs equal: yes")


if __name__ == "__main__":
    main()
