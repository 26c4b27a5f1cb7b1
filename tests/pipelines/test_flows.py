"""Every flow under one Prefect test harness on a tiny world: steps as tasks, retries only for IO,
summaries and artifacts, and the as_of defaults."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from pipelines import flows
from salesml.config import load
from salesml.warehouse import Warehouse
from tests.pipelines.conftest import AS_OF, Champions, MakeConfig, task_runs


def _run(flow: Any, **params: Any) -> tuple[Any, str]:
    """Call a flow; return (its final state, its flow run id)."""
    state = flow(**params, return_state=True)
    return state, str(state.state_details.flow_run_id)


def test_train_flows_register_champions_and_summarise(champions: Champions) -> None:
    for summary in (champions.deal_win, champions.demand):
        assert summary["status"] == "succeeded"
        assert summary["model_version"] == "1"
        assert summary["report"]["promoted"] is True
        assert summary["metrics"]
    assert champions.deal_win["row_counts"]["behavior_value"] > 0
    assert champions.deal_win["row_counts"]["input_deals"] > 1000


def test_score_deals_runs_each_step_as_a_task_and_publishes_a_summary(
    make_config: MakeConfig,
) -> None:
    config = make_config()
    state, flow_run_id = _run(flows.score_deals, config=config, as_of=AS_OF)
    summary = state.result()
    assert summary["status"] == "succeeded"
    assert summary["model_version"] == "1"
    counts = summary["row_counts"]
    scored, unscored = summary["metrics"]["scored"], summary["metrics"]["not_scored"]
    assert counts["deal_scores"] == scored + unscored and scored > 0
    assert counts["deal_score_factors"] > 0 and counts["pipeline_forecast"] > 0

    names = [run.name.rsplit("-", 1)[0] for run in task_runs(flow_run_id)]
    assert {"pull", "validate", "write"} <= set(names)
    assert names.index("pull") < names.index("validate") < names.index("write")

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts()
    by_key = {a.key: a for a in artifact}
    assert "score-deals" in by_key
    text = str(by_key["score-deals"].data)
    assert "## Rows" in text and "deal_scores" in text


def test_forecast_demand_writes_forecasts(make_config: MakeConfig) -> None:
    summary = flows.forecast_demand(config=make_config(), as_of=AS_OF)
    assert summary["status"] == "succeeded"
    rows = summary["row_counts"]["demand_forecast"]
    assert rows > 0 and rows % 42 == 0
    assert summary["row_counts"]["demand_forecast_factors"] > 0


def test_backtest_flow_runs_both_models(make_config: MakeConfig) -> None:
    summaries = flows.backtest(config=make_config(), as_of=AS_OF, n_origins=2)
    assert set(summaries) == {"deal_win", "demand"}
    for summary in summaries.values():
        assert summary["status"] == "succeeded"
        assert summary["report"]["n_origins"] == 2
    assert "model_auc" in summaries["deal_win"]["metrics"]
    assert "wape" in summaries["demand"]["metrics"]


def test_a_flaky_read_is_retried_and_the_flow_succeeds(
    make_config: MakeConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    import salesml.inputs

    real = salesml.inputs.read_tables
    calls: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("source briefly unreachable")
        return real(*args, **kwargs)

    monkeypatch.setattr(salesml.inputs, "read_tables", flaky)
    state, flow_run_id = _run(flows.score_deals, config=make_config(), as_of=AS_OF)
    assert state.is_completed()
    assert len(calls) == 2
    pulls = [run for run in task_runs(flow_run_id) if run.name.startswith("pull")]
    assert len(pulls) == 1 and pulls[0].run_count == 2


def test_bad_input_fails_validation_at_once_without_retry(
    make_config: MakeConfig, world: Path, tmp_path: Path
) -> None:
    from salesml.validation import DataValidationError

    data = tmp_path / "bad"
    shutil.copytree(world, data)
    deals = pl.read_parquet(data / "deals.parquet")
    deals.with_columns(
        pl.when(pl.int_range(pl.len()) < 100).then(-1.0).otherwise(pl.col("amount")).alias("amount")
    ).write_parquet(data / "deals.parquet")
    config = make_config(data=data)

    state, flow_run_id = _run(flows.score_deals, config=config, as_of=AS_OF)
    assert state.is_failed()
    assert isinstance(state.result(raise_on_failure=False), DataValidationError)
    runs = {run.name.rsplit("-", 1)[0]: run for run in task_runs(flow_run_id)}
    assert runs["validate"].state.is_failed() and runs["validate"].run_count == 1
    assert "write" not in runs
    record = Warehouse.from_settings(load(config)).read("runs")
    assert record["status"].to_list() == ["failed"]
    assert "DataValidationError" in record["message"][0]


def test_forecast_as_of_defaults_to_the_latest_bucket_boundary() -> None:
    from pipelines.params import resolve_as_of, resolve_bucket_as_of
    from salesml.config import Settings

    settings = Settings(timezone="America/New_York")
    before = datetime.now(UTC)
    boundary = resolve_bucket_as_of(None, settings)
    local = boundary.astimezone(ZoneInfo("America/New_York"))
    assert boundary <= before and (before - boundary).total_seconds() < 4 * 3600 + 60
    assert local.hour % 4 == 0 and (local.minute, local.second) == (0, 0)
    assert resolve_bucket_as_of("2025-07-01T05:30", settings) == datetime(
        2025, 7, 1, 9, 30, tzinfo=UTC
    )
    assert abs((resolve_as_of(None, settings) - before).total_seconds()) < 60
