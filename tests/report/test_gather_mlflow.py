"""The report's MLflow reads (holdout calibration plot, gate numbers) through `salesml.tracking`.

`gather` swallows any MLflow problem (the section just goes missing), so these tests assert the
values come back, on a real SQLite store with one registered deal-win version.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from salesml import tracking
from salesml.config import Settings
from salesml.report import gather

AS_OF = datetime(2026, 3, 2, tzinfo=UTC)
PNG = b"\x89PNG not really"


def _booster() -> object:
    import lightgbm as lgb

    rng = np.random.default_rng(0)
    features = pd.DataFrame(rng.normal(size=(200, 2)), columns=["a", "b"])
    label = (features["a"] + rng.normal(size=200) > 0).astype(int)
    params = {"objective": "binary", "num_leaves": 4, "verbose": -1, "num_threads": 1}
    return lgb.train(params, lgb.Dataset(features, label), num_boost_round=3)


@pytest.fixture
def registered(mlflow_settings: Settings, tmp_path: Path) -> tracking.RegisteredVersion:
    png = tmp_path / "calibration.png"
    png.write_bytes(PNG)
    version = tracking.log_and_register(
        model_name=gather.DEAL_MODEL,
        model=_booster(),
        params={"num_leaves": 4},
        metrics={"auc": 0.8125, "brier_skill": 0.25, "rows": 7.0},
        artifacts={gather.HOLDOUT_CALIBRATION_ARTIFACT: png},
        as_of=datetime(2026, 3, 1, tzinfo=UTC),
    )
    tracking.promote_if_better(gather.DEAL_MODEL, version, "auc", 0.8125, None)
    return version


def test_tracking_reads_the_run_behind_a_version(
    registered: tracking.RegisteredVersion, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tracking.version_run_id(gather.DEAL_MODEL, "1") == registered.run_id
    run = tracking.version_run(gather.DEAL_MODEL, "1")
    assert run.run_id == registered.run_id
    assert run.metrics == {"auc": 0.8125, "brier_skill": 0.25, "rows": 7.0}
    assert run.tags[tracking.GATE_TAG] == "true"
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "true")
    assert tracking.read_artifact(registered.run_id, "calibration.png") == PNG
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "true"  # restored


def test_report_shows_the_calibration_plot_and_gate_of_the_scoring_version(
    mlflow_settings: Settings, registered: tracking.RegisteredVersion
) -> None:
    scores = pl.DataFrame({"model_version": ["1"], "win_probability": [0.5]})
    png, label = gather._holdout_calibration(mlflow_settings, scores)
    assert (png, label) == (PNG, "salesml-deal-win v1")
    # no version on the scores: the champion's plot
    assert gather._holdout_calibration(mlflow_settings, scores.drop("model_version"))[0] == PNG

    gate = gather._deal_gate(mlflow_settings, scores, AS_OF)
    assert gate is not None
    assert gate["model version"] == "v1"
    assert (gate["promoted"], gate["passed the gate"]) == ("true", "true")
    assert (gate["auc"], gate["brier_skill"]) == ("0.8125", "0.2500")
    assert "rows" not in gate  # not a gate metric
    # scores without a version: the newest version trained at or before as_of
    unversioned = gather._deal_gate(mlflow_settings, scores.drop("model_version"), AS_OF)
    assert unversioned == gate
    early = datetime(2026, 2, 1, tzinfo=UTC)
    assert gather._deal_gate(mlflow_settings, scores.drop("model_version"), early) is None
