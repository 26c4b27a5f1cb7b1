"""The demand jobs end to end on a tiny world: train -> champion -> forecast -> warehouse."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from salesml.config import Settings, SourcesSettings
from salesml.demand import demand_jobs
from salesml.sample import WORLD_END, demand_world
from salesml.warehouse import Warehouse
from tests.demand.conftest import tiny_demand

AS_OF = WORLD_END - timedelta(days=2)


def _settings(
    base: Settings, folder: Path, with_inventory: bool = True, **demand: object
) -> Settings:
    tables, _ = demand_world(n_series=30, days=49, seed=5)
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        if name != "inventory" or with_inventory:
            frame.write_parquet(folder / f"{name}.parquet")
    return base.model_copy(
        update={
            "sources": SourcesSettings(path=folder),
            "demand": tiny_demand(explain={"hours_ahead": 8}, **demand),
        }
    )


def test_train_then_forecast_writes_forecast_drivers_and_health(
    mlflow_settings: Settings, tmp_path: Path
) -> None:
    settings = _settings(mlflow_settings, tmp_path / "src")
    steps: list[str] = []
    trained = demand_jobs.train(settings, AS_OF, progress=lambda step, _: steps.append(step))
    assert trained.promoted and trained.model_version == "1"
    assert 0.6 <= trained.metrics["coverage_p10_p90"] <= 0.95
    assert steps and "trained" in steps

    report = demand_jobs.forecast(settings, AS_OF)
    again = demand_jobs.forecast(settings, AS_OF)  # idempotent: same rows, not twice as many
    assert again.rows_written == report.rows_written
    wh = Warehouse.from_settings(settings)
    forecast = wh.read("demand_forecast", as_of=AS_OF)
    assert forecast.height == report.rows_written["demand_forecast"] > 0
    assert forecast["horizon"].max() == settings.demand.grid.horizon_buckets
    assert (forecast["p10"] <= forecast["p50"]).all() and (forecast["p50"] <= forecast["p90"]).all()
    assert set(forecast["model_version"].unique()) == {"1"}
    assert (forecast["expected"] >= 0).all()  # the mean, for sums over buckets

    factors = wh.read("demand_forecast_factors", as_of=AS_OF)
    assert factors.height > 0 and factors["text"].null_count() == 0
    assert factors["text"].str.contains("units|forecast 0").all()
    health = wh.read("sku_health", as_of=AS_OF)
    assert set(health["health"].unique()) <= {"red", "yellow", "green"}
    assert all(len(json.loads(r)) >= 1 for r in health["reasons"].to_list())
    # every series rated red/yellow is explained for the whole horizon
    flagged = health.filter(pl.col("health") != "green").select("customer_id", "sku")
    if flagged.height:
        explained = factors.join(flagged, on=["customer_id", "sku"]).select(
            "customer_id", "sku", "bucket_start"
        )
        assert explained.unique().height == flagged.height * settings.demand.grid.horizon_buckets


def test_forecast_without_inventory_says_so_in_the_run(
    mlflow_settings: Settings, tmp_path: Path
) -> None:
    weights = {"promotion": {"emea": 1.5}}  # a planner raising a local factor
    settings = _settings(
        mlflow_settings, tmp_path / "src", with_inventory=False, signal_weights=weights
    )
    demand_jobs.train(settings, AS_OF)
    second = demand_jobs.train(settings, AS_OF)  # the gate compares with the champion, same rows
    assert second.champion_version == "1" and second.champion_value is not None
    assert second.promoted == (second.candidate_value <= second.champion_value)  # type: ignore[operator]
    # issue 10: the gate is a proper scoring rule, next to the 8-week same-bucket median
    assert second.gate_metric == "holdout_pinball_scaled" and "median_8w" in second.decision
    gate_run = Warehouse.from_settings(settings).get_run(second.run_id)
    assert gate_run is not None and "holdout_pinball_scaled" in gate_run["message"]
    report = demand_jobs.forecast(settings, AS_OF)
    assert demand_jobs.NO_INVENTORY_NOTE in report.notes
    assert report.health == {}
    runs = Warehouse.from_settings(settings).read("runs")
    forecast_run = runs.filter(pl.col("flow") == "forecast_demand").row(0, named=True)
    assert demand_jobs.NO_INVENTORY_NOTE in forecast_run["message"]
    assert json.loads(forecast_run["params"])["signal_weights"] == weights


def test_backtest_returns_json_with_baselines(settings: Settings, tmp_path: Path) -> None:
    local = _settings(settings, tmp_path / "src")
    result = demand_jobs.backtest(local, AS_OF, n_origins=2)
    text = json.dumps(result, allow_nan=False)
    assert json.loads(text)["n_origins"] == 2
    mean = result["mean"]
    for key in ("wape", "mase", "bias", "pinball_p10", "pinball_p90", "coverage_p10_p90"):
        assert key in mean
    for baseline in ("seasonal_naive", "recent_mean", "ets"):
        assert f"{baseline}_wape" in mean


def test_forecast_needs_a_champion(mlflow_settings: Settings, tmp_path: Path) -> None:
    from salesml.tracking import NoChampionError

    settings = _settings(mlflow_settings, tmp_path / "src")
    with pytest.raises(NoChampionError):
        demand_jobs.forecast(settings, AS_OF)


def test_the_registry_respects_time(mlflow_settings: Settings, tmp_path: Path) -> None:
    """Issue 11: forecasting at an as_of before the champion's silently used it; training at
    an earlier as_of than the champion promoted the older model."""
    from salesml.tracking import NoServableVersionError

    settings = _settings(mlflow_settings, tmp_path / "src", with_inventory=False)
    earlier = AS_OF - timedelta(days=2)
    assert demand_jobs.train(settings, AS_OF).promoted
    older = demand_jobs.train(settings, earlier)
    assert (older.model_version, older.promoted) == ("2", False)
    assert "not promoted: champion v1 was trained as of" in older.decision

    between = demand_jobs.forecast(settings, AS_OF - timedelta(days=1))
    assert between.model_version == "2"
    assert any("champion v1 was trained as of" in note for note in between.notes)
    runs = Warehouse.from_settings(settings).list_runs(flow="forecast_demand")
    assert "used v2" in runs["message"][0]
    with pytest.raises(NoServableVersionError, match=r"v2 as of .*, v1 as of .*; train one"):
        demand_jobs.forecast(settings, AS_OF - timedelta(days=3))
