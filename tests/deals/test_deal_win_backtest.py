"""Rolling-origin backtest: every predictor on the same rows, one JSON object out."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import polars as pl

from salesml.config import Settings, SourcesSettings
from salesml.deals import deal_win_jobs
from salesml.deals.deal_win_backtest import backtest_origins, evaluation_snapshots
from tests.deals.conftest import AS_OF, fast_deal_settings


def test_evaluation_rows_lie_after_the_origin_and_have_known_outcomes(
    small_world: dict[str, pl.DataFrame],
) -> None:
    settings = fast_deal_settings()
    origins = backtest_origins(AS_OF, 3, settings.backtest.step_days, 45)
    assert origins[-1] < AS_OF and origins == sorted(origins)
    rows = evaluation_snapshots(small_world["deals"], origins[-1], AS_OF, settings)
    assert rows.height > 0
    assert (rows["snapshot_at"] > origins[-1]).all()
    # full follow-up: every label (won within H of the snapshot) is known at as_of
    assert (rows["label_at"] <= AS_OF).all()
    assert rows["label_at"].to_list() == [
        t + timedelta(days=settings.label_horizon_days) for t in rows["snapshot_at"]
    ]


def test_backtest_job_prints_one_json_object(
    settings: Settings, small_world: dict[str, pl.DataFrame], tmp_path: Path
) -> None:
    folder = tmp_path / "crm"
    folder.mkdir()
    for name, frame in small_world.items():
        frame.write_parquet(folder / f"{name}.parquet")
    settings = settings.model_copy(update={"sources": SourcesSettings(path=folder)})
    settings = settings.model_copy(
        update={
            "deals": fast_deal_settings(
                label_horizon_days=30,
                holdout_days=21,
                backtest={"step_days": 14, "follow_up_days": 0},
            )
        }
    )
    result = deal_win_jobs.backtest(settings, AS_OF, n_origins=2)
    text = json.dumps(result, allow_nan=False)
    assert json.loads(text)["n_origins"] == 2
    origin = result["per_origin"][0]
    for predictor in ("model", "base_rate", "logistic"):
        for metric in ("auc", "log_loss", "brier", "ece", "lift_top_decile"):
            assert f"{predictor}_{metric}" in origin
    assert origin["model_auc"] > 0.5
    assert "beats_logistic_auc_every_origin" in result["verdicts"]
