"""Flows running at the same time: two runs of one flow and as_of never overlap, and a score
run reads one champion version even when training moves @champion while it runs."""

from __future__ import annotations

import threading
from typing import Any

import polars as pl
import pytest

from pipelines import flows
from salesml.config import load
from salesml.warehouse import Warehouse
from tests.pipelines.conftest import AS_OF, WHEN, MakeConfig


def test_two_score_runs_for_the_same_as_of_run_one_after_the_other(
    make_config: MakeConfig,
) -> None:
    config = make_config()
    barrier = threading.Barrier(2)
    results: list[Any] = []

    def run() -> None:
        barrier.wait()
        results.append(flows.score_deals(config=config, as_of=AS_OF, return_state=True))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [state.is_completed() for state in results] == [True, True]

    wh = Warehouse.from_settings(load(config))
    runs = wh.read("runs").sort("started_at")
    assert runs["status"].to_list() == ["succeeded", "succeeded"]
    assert runs["started_at"][1] >= runs["finished_at"][0]  # the second waited for the first
    scores = wh.read("deal_scores", as_of=WHEN)
    assert scores.height == scores["deal_id"].n_unique() > 0
    assert scores["run_id"].unique().to_list() == [runs["run_id"][1]]


def test_score_uses_one_champion_version_even_if_it_moves_mid_run(
    make_config: MakeConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    import salesml.deals.scoring
    from salesml import tracking
    from salesml.deals.deal_win_jobs import MODEL_NAME

    config = make_config()
    settings = load(config)
    tracking.configure(settings)
    champion = tracking.load_champion(MODEL_NAME)
    newer = tracking.log_and_register(
        model_name=MODEL_NAME, model=champion.model, params={}, metrics={}, run_name="newer"
    )
    mlflow = tracking.import_mlflow()
    real = salesml.deals.scoring.score_open_deals

    def training_promotes_meanwhile(*args: Any, **kwargs: Any) -> Any:
        mlflow.MlflowClient().set_registered_model_alias(
            MODEL_NAME, tracking.CHAMPION_ALIAS, newer.version
        )
        return real(*args, **kwargs)

    monkeypatch.setattr(salesml.deals.scoring, "score_open_deals", training_promotes_meanwhile)
    summary = flows.score_deals(config=config, as_of=AS_OF)

    assert tracking.champion_info(MODEL_NAME).version == newer.version  # type: ignore[union-attr]
    assert summary["model_version"] == champion.version != newer.version
    wh = Warehouse.from_settings(settings)
    runs = wh.read("runs")
    assert runs["model_version"].to_list() == [champion.version]
    for table in ("deal_scores", "deal_score_factors", "pipeline_forecast"):
        versions = wh.read(table, as_of=WHEN)["model_version"]
        assert versions.len() > 0 and versions.unique().to_list() == [champion.version], table


def test_bucket_flows_of_different_as_of_do_not_block_each_other(
    make_config: MakeConfig,
) -> None:
    """Only the same flow and as_of is exclusive: a forecast for another bucket starts at once
    even while a run of this one is marked running."""
    config = make_config(compute={"run_wait_seconds": 0})
    settings = load(config)
    wh = Warehouse.from_settings(settings)
    blocking = wh.start_run("forecast_demand", load_as_of("2025-06-30T20:00:00+00:00"))
    summary = flows.forecast_demand(config=config, as_of=AS_OF)
    assert summary["status"] == "succeeded"
    state = flows.forecast_demand(
        config=config, as_of="2025-06-30T20:00:00+00:00", return_state=True
    )
    assert state.is_failed()
    assert "already running" in str(state.result(raise_on_failure=False))
    statuses = wh.read("runs").filter(pl.col("run_id") != blocking)["status"].to_list()
    assert statuses == ["succeeded"]


def load_as_of(text: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(text)
