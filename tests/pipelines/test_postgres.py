"""The score and forecast flows against a real PostgreSQL warehouse (a fresh schema per test):
idempotent re-runs, and a failure inside the write step that leaves the previous rows intact."""

from __future__ import annotations

from typing import Any

import pytest
from polars.testing import assert_frame_equal

from pipelines import flows
from salesml.config import load
from salesml.warehouse import Warehouse
from tests.pipelines.conftest import AS_OF, WHEN, MakeConfig, task_runs

KEYS = {
    "deal_scores": ["deal_id"],
    "deal_score_factors": ["deal_id", "rank"],
    "pipeline_forecast": ["period", "dimension", "member"],
    "demand_forecast": ["scenario", "customer_id", "sku", "bucket_start"],
}


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres), "duckdb"])
def warehouse_url(request: pytest.FixtureRequest) -> str | None:
    """A fresh PostgreSQL schema, or None (make_config's own DuckDB file)."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return None


@pytest.mark.postgres
def test_score_and_forecast_flows_rerun_into_postgres_idempotently(
    make_config: MakeConfig, pg_url: str
) -> None:
    """Warehouse = a fresh schema of the test server (search_path in the URL)."""
    config = make_config(warehouse_url=pg_url)
    for _ in range(2):
        scored = flows.score_deals(config=config, as_of=AS_OF)
        forecast = flows.forecast_demand(config=config, as_of=AS_OF)
    wh = Warehouse(pg_url)
    for table, key in KEYS.items():
        frame = wh.read(table, as_of=WHEN)
        assert frame.height > 0
        assert frame.select(key).is_unique().all(), f"{table} has duplicated keys"
    assert wh.read("deal_scores").height == scored["row_counts"]["deal_scores"]
    assert wh.read("demand_forecast").height == forecast["row_counts"]["demand_forecast"]
    runs = wh.read("runs")
    assert runs.height == 4 and set(runs["status"]) == {"succeeded"}
    latest = wh.read("deal_scores")["run_id"].unique().to_list()
    assert latest == [scored["run_id"]]


def test_a_failure_mid_write_keeps_the_previous_rows_and_records_a_failed_run(
    make_config: MakeConfig, warehouse_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(warehouse_url=warehouse_url, compute={"io_retries": 1})
    first = flows.score_deals(config=config, as_of=AS_OF)
    wh = Warehouse.from_settings(load(config))
    before = {table: wh.read(table, as_of=WHEN) for table in list(KEYS)[:3]}

    real = Warehouse._replace
    attempts: list[str] = []

    def fail_on_second_table(self: Warehouse, session: Any, table: str, *a: Any, **k: Any) -> Any:
        if table == "deal_score_factors":
            attempts.append(table)
            raise RuntimeError("injected failure between two tables of one batch")
        return real(self, session, table, *a, **k)

    monkeypatch.setattr(Warehouse, "_replace", fail_on_second_table)
    state = flows.score_deals(config=config, as_of=AS_OF, return_state=True)
    monkeypatch.undo()

    assert state.is_failed()
    assert len(attempts) == 2  # the write step was retried once (io_retries=1), then gave up
    flow_run_id = str(state.state_details.flow_run_id)
    writes = [r for r in task_runs(flow_run_id) if r.name.startswith("write")]
    assert len(writes) == 1 and writes[0].run_count == 2 and writes[0].state.is_failed()
    for table, frame in before.items():
        assert_frame_equal(wh.read(table, as_of=WHEN), frame)
        assert frame["run_id"].unique().to_list() == [first["run_id"]]
    runs = wh.read("runs").sort("started_at")
    assert runs["status"].to_list() == ["succeeded", "failed"]
    assert "injected failure" in runs["message"][1]


def test_the_keys_checked_here_are_the_contract_keys() -> None:
    """The keys above are the contract's (so the uniqueness checks test the real keys)."""
    from salesml import contract

    for table, key in KEYS.items():
        assert set(contract.OUTPUT_KEYS[table]) == {"as_of", *key}
