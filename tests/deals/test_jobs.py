"""Deal-win jobs end to end: train -> MLflow + gate -> score -> warehouse, with lineage."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from salesml.config import Settings, SourcesSettings
from salesml.deals import jobs
from salesml.deals.model import InsufficientDataError
from salesml.warehouse import Warehouse
from tests.deals.conftest import AS_OF, fast_deal_settings


@pytest.fixture
def deal_settings(
    mlflow_settings: Settings, small_world: dict[str, pl.DataFrame], tmp_path: Path
) -> Settings:
    folder = tmp_path / "crm"
    folder.mkdir()
    for name, frame in small_world.items():
        frame.write_parquet(folder / f"{name}.parquet")
    mlflow_settings.sources = SourcesSettings(path=folder)
    mlflow_settings.deals = fast_deal_settings()
    return mlflow_settings


def test_train_gate_score_and_lineage(deal_settings: Settings) -> None:
    from salesml import tracking

    first = jobs.train(deal_settings, AS_OF)
    assert first.promoted
    assert first.behavior_pairs > 0

    # a crippled candidate (one stump) is evaluated on the same holdout and kept out
    worse_settings = deal_settings.model_copy(deep=True)
    worse_settings.deals = fast_deal_settings(n_estimators=1, num_leaves=2)
    second = jobs.train(worse_settings, AS_OF)
    assert not second.promoted
    assert second.champion_version == first.model_version
    assert second.candidate_value is not None and second.champion_value is not None
    assert second.candidate_value < second.champion_value
    assert "worse" in second.decision
    mlflow = tracking.import_mlflow()
    run = mlflow.MlflowClient().get_run(second.mlflow_run_id)
    assert run.data.tags["salesml.promotion.promoted"] == "false"
    assert "holdout_auc" in run.data.metrics
    assert tracking.champion_info(jobs.MODEL_NAME).version == first.model_version  # type: ignore[union-attr]

    scored = jobs.score(deal_settings, AS_OF)
    assert scored.model_version == first.model_version
    assert scored.scored > 0

    warehouse = Warehouse.from_settings(deal_settings)
    for table in ("deal_scores", "deal_score_factors", "pipeline_forecast"):
        rows = warehouse.read(table, as_of=AS_OF)
        assert rows.height > 0, table
        assert rows["model_version"].unique().to_list() == [first.model_version]
        assert rows["mlflow_run_id"].unique().to_list() == [first.mlflow_run_id]
        assert rows["run_id"].unique().to_list() == [scored.run_id]
    scores = warehouse.read("deal_scores", as_of=AS_OF)
    assert scores.height == scored.scored + scored.not_scored
    unscored = scores.filter(pl.col("win_probability").is_null())
    assert unscored.height == scored.not_scored
    assert unscored["not_scored_reason"].is_not_null().all()
    assert unscored["health"].is_null().all()
    assert set(scores["health"].drop_nulls()) <= {"red", "yellow", "green"}
    assert scores["top_factors"].drop_nulls().str.starts_with("[").all()
    factors = warehouse.read("deal_score_factors", as_of=AS_OF)
    assert factors.group_by("deal_id").len()["len"].max() == deal_settings.deals.top_k
    behavior = warehouse.read("behavior_value", as_of=AS_OF)
    # the behaviour map of the latest training run (the worse candidate) carries its lineage
    assert behavior["model_version"].unique().to_list() == [second.model_version]

    runs = warehouse.read("runs")
    assert runs["status"].to_list() == ["succeeded"] * 3


def test_train_refuses_thin_data_and_records_the_failed_run(deal_settings: Settings) -> None:
    deal_settings.deals = fast_deal_settings(min_lost=100_000)
    with pytest.raises(InsufficientDataError, match="refusing to train"):
        jobs.train(deal_settings, AS_OF)
    runs = Warehouse.from_settings(deal_settings).read("runs")
    assert runs["status"].to_list() == ["failed"]
    assert "lost" in runs["message"][0]
