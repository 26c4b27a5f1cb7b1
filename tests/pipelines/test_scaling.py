"""Dask scale-out: `JobRun.map` fans out to a 2-worker LocalCluster through Prefect's
DaskTaskRunner (paths, not frames, between tasks), and the demand forecast split into
partitions of series equals the single-process forecast."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from pipelines import flows
from pipelines.tasks import prefect_executor
from salesml.config import from_dict, load
from salesml.job_lifecycle import JobRun
from salesml.warehouse import Warehouse
from tests.pipelines.conftest import AS_OF, WHEN, MakeConfig, task_runs

LOCAL_CLUSTER = {"dask": "local-cluster", "dask_workers": 2, "dask_processes": False}
TOLERANCE = 1e-9
"""Relative tolerance between the partitioned and single-process forecasts. Every row is
computed from the same history by the same model, so they match to float rounding (in
practice exactly)."""


def scale(item: int, *, factor: pl.DataFrame) -> dict[str, Any]:
    """A partition task for the machinery test: returns a frame and where it ran."""
    return {
        "frame": factor.with_columns(pl.col("x") * item),
        "thread": threading.current_thread().name,
        "pid": os.getpid(),
    }


def test_map_fans_out_to_dask_and_passes_files(prefect_harness: None, tmp_path: Path) -> None:
    from prefect import flow

    settings = from_dict({"compute": {**LOCAL_CLUSTER, "scratch_dir": str(tmp_path)}})
    executor = prefect_executor(settings)
    assert executor.partitions == 8

    @flow
    def fan_out() -> list[dict[str, Any]]:
        run = JobRun(
            settings, None, "r", "unit", datetime(2025, 1, 1, tzinfo=UTC), executor=executor
        )
        return run.map("scale", scale, [1, 2, 3, 4], factor=pl.DataFrame({"x": [1.0, 2.0]}))

    out = fan_out()
    assert [part["frame"]["x"].to_list() for part in out] == [[1, 2], [2, 4], [3, 6], [4, 8]]
    assert len({part["thread"] for part in out}) == 2  # both workers took partitions
    assert list(tmp_path.iterdir()) == []  # the scratch files are gone


def test_no_dask_means_one_partition_in_place() -> None:
    executor = prefect_executor(from_dict({"compute": {"partitions": 8}}))
    assert executor.partitions == 1 and executor.task_runner is None
    remote = prefect_executor(from_dict({"compute": {"dask": "tcp://10.0.0.5:8786"}}))
    assert remote.task_runner is not None and remote.task_runner.address == "tcp://10.0.0.5:8786"


def _demand_fans_out() -> bool:
    from salesml.demand import forecasting

    return hasattr(forecasting, "partition_series")


def _outputs(config: str) -> dict[str, pl.DataFrame]:
    wh = Warehouse.from_settings(load(config))
    keys = {
        "demand_forecast": ["customer_id", "sku", "bucket_start"],
        "demand_forecast_factors": ["customer_id", "sku", "bucket_start", "rank"],
        "sku_health": ["customer_id", "sku"],
    }
    return {
        table: wh.read(table, as_of=WHEN).drop("run_id").sort(key) for table, key in keys.items()
    }


@pytest.mark.skipif(
    not _demand_fans_out(),
    reason="salesml.demand does not split its forecast by series yet "
    "(needs pipeline.partition_series and jobs.forecast_series: see README 'Scaling out on Dask')",
)
def test_forecast_on_a_local_cluster_equals_the_single_process_forecast(
    make_config: MakeConfig,
) -> None:
    capped = {"explain": {"max_rows": 60}}  # fewer than selected: the global cap decides which
    single = make_config(demand=capped)
    flows.forecast_demand(config=single, as_of=AS_OF)
    scaled = make_config(demand=capped, compute={**LOCAL_CLUSTER, "partitions": 3})
    state = flows.forecast_demand(config=scaled, as_of=AS_OF, return_state=True)
    assert state.is_completed()
    assert "explain_max_rows=60" in (state.result()["message"] or "")

    names = [run.name.rsplit("-", 1)[0] for run in task_runs(str(state.state_details.flow_run_id))]
    assert names.count("forecast") == 3  # one task per partition of series
    expected, got = _outputs(single), _outputs(scaled)
    factors = expected["demand_forecast_factors"].filter(pl.col("feature") != "closed_slot")
    assert factors.select("customer_id", "sku", "bucket_start").n_unique() == 60
    for table, frame in expected.items():
        assert frame.height > 0, table
        assert_frame_equal(got[table], frame, check_exact=False, rel_tol=TOLERANCE, abs_tol=0)
