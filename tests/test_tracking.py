"""MLflow tracking: registration, the promotion gate, loading @champion (real SQLite store)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytest

from salesml import tracking

if TYPE_CHECKING:
    from salesml.config import Settings

MODEL = "salesml-deal-win"


def _data(seed: int = 0, n: int = 400) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = pd.DataFrame(rng.normal(size=(n, 3)), columns=["meetings_7d", "days_in_stage", "x"])
    label = features["meetings_7d"] - features["days_in_stage"] + rng.normal(size=n) > 0
    return features, label.to_numpy().astype(int)


def _booster(seed: int = 0, rounds: int = 5) -> Any:
    import lightgbm as lgb

    features, label = _data(seed)
    params = {
        "objective": "binary",
        "num_leaves": 4,
        "verbose": -1,
        "num_threads": 1,
        "deterministic": True,
        "force_col_wise": True,
        "seed": seed,
    }
    return lgb.train(params, lgb.Dataset(features, label), num_boost_round=rounds)


class CalibratedBooster:
    """A composite like the deal-win model: booster + Platt scaling on its raw score."""

    def __init__(self, booster: Any, slope: float, intercept: float) -> None:
        self.booster_ = booster
        self.slope = slope
        self.intercept = intercept

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        raw = self.booster_.predict(features, raw_score=True)
        return np.asarray(1.0 / (1.0 + np.exp(-(self.slope * raw + self.intercept))))


def _register(booster: Any, auc: float, **kwargs: Any) -> tracking.RegisteredVersion:
    features, _ = _data()
    return tracking.log_and_register(
        model_name=MODEL,
        model=booster,
        params={"num_leaves": 4, "windows": [7, 30]},
        metrics={"auc": auc},
        input_example=features.head(3),
        **kwargs,
    )


def _run_tags(run_id: str) -> dict[str, str]:
    mlflow = tracking.import_mlflow()
    return dict(mlflow.MlflowClient().get_run(run_id).data.tags)


def test_configure_creates_experiment_with_artifacts_beside_the_db(
    mlflow_settings: Settings, tmp_path: Path
) -> None:
    mlflow = tracking.import_mlflow()
    experiment = mlflow.get_experiment_by_name(mlflow_settings.mlflow.experiment)
    assert experiment is not None
    assert experiment.artifact_location == (tmp_path / "mlflow" / "mlartifacts").as_uri()
    assert tracking.configure(mlflow_settings) == experiment.experiment_id  # idempotent


def test_no_champion_is_a_clear_error(mlflow_settings: Settings) -> None:
    with pytest.raises(tracking.NoChampionError, match=r"run `salesml train deal-win` first"):
        tracking.load_champion(MODEL)
    assert tracking.champion_info(MODEL) is None


def test_first_model_becomes_champion_and_loads_as_booster(
    mlflow_settings: Settings, tmp_path: Path
) -> None:
    import lightgbm as lgb

    report = tmp_path / "calibration.png"
    report.write_bytes(b"not really a png")
    booster = _booster()
    version = _register(
        booster, 0.8, artifacts={"plots/calibration.png": report}, run_name="t", tags={"k": "v"}
    )
    assert version.version == "1"

    decision = tracking.promote_if_better(MODEL, version, "auc", 0.8, None)
    assert decision.promoted
    assert "no champion" in decision.reason

    loaded = tracking.load_champion(MODEL)
    assert isinstance(loaded.model, lgb.Booster)
    assert (loaded.version, loaded.run_id) == ("1", version.run_id)
    features, _ = _data(seed=1)
    np.testing.assert_array_equal(loaded.model.predict(features), booster.predict(features))

    info = tracking.champion_info(MODEL)
    assert info is not None
    assert info.metrics["auc"] == pytest.approx(0.8)
    assert json.loads(info.params["windows"]) == [7, 30]

    mlflow = tracking.import_mlflow()
    files = {f.path for f in mlflow.MlflowClient().list_artifacts(version.run_id, "plots")}
    assert files == {"plots/calibration.png"}
    assert _run_tags(version.run_id)["k"] == "v"


def test_gate_keeps_a_worse_model_out_and_lets_an_equal_one_in(mlflow_settings: Settings) -> None:
    first = _register(_booster(seed=0), 0.80)
    tracking.promote_if_better(MODEL, first, "auc", 0.80, None)

    worse = _register(_booster(seed=1), 0.75)
    kept_out = tracking.promote_if_better(MODEL, worse, "auc", 0.75, 0.80)
    assert not kept_out.promoted
    assert kept_out.champion_version == "1"
    assert tracking.load_champion(MODEL).version == "1"
    tags = _run_tags(worse.run_id)
    assert tags["salesml.promotion.promoted"] == "false"
    assert float(tags["salesml.promotion.candidate_value"]) == 0.75
    assert float(tags["salesml.promotion.champion_value"]) == 0.80
    assert "worse" in tags["salesml.promotion.reason"]

    equal = _register(_booster(seed=2), 0.80)
    let_in = tracking.promote_if_better(MODEL, equal, "auc", 0.80, 0.80)
    assert let_in.promoted
    assert _run_tags(equal.run_id)["salesml.promotion.promoted"] == "true"
    assert tracking.load_champion(MODEL).version == equal.version == "3"


@pytest.mark.parametrize(
    ("candidate", "champion", "higher_is_better", "promoted"),
    [
        (0.31, 0.30, False, False),  # lower is better: more error stays out
        (0.29, 0.30, False, True),
        (0.30, 0.30, False, True),  # ties promote
        (float("nan"), 0.30, True, False),
        (0.50, float("nan"), True, True),
        (0.90, None, True, False),  # a champion nobody evaluated is not replaced
    ],
)
def test_decide_rule(
    candidate: float, champion: float | None, higher_is_better: bool, promoted: bool
) -> None:
    decision, reason = tracking.decide("m", "2", "1", candidate, champion, higher_is_better)
    assert decision is promoted, reason
    assert tracking.decide("m", "1", None, 0.1, None)[0]  # no champion: first model promotes


def test_gate_refuses_when_the_champion_moved_since_it_was_evaluated(
    mlflow_settings: Settings,
) -> None:
    booster = _booster()
    first = _register(booster, 0.8)
    tracking.promote_if_better(MODEL, first, "auc", 0.8, None)
    second, third = _register(booster, 0.85), _register(booster, 0.9)
    tracking.promote_if_better(MODEL, third, "auc", 0.9, 0.8, champion_version="1")
    stale = tracking.promote_if_better(MODEL, second, "auc", 0.85, 0.8, champion_version="1")
    assert not stale.promoted
    assert "moved from v1" in stale.reason
    assert tracking.load_champion(MODEL).version == "3"
    assert _run_tags(second.run_id)["salesml.promotion.promoted"] == "false"


def test_composite_model_round_trips_as_the_original_object(mlflow_settings: Settings) -> None:
    import polars as pl

    composite = CalibratedBooster(_booster(), slope=0.7, intercept=-0.1)
    features, _ = _data(seed=3)
    version = tracking.log_and_register(
        MODEL, composite, {}, {"auc": 0.8}, input_example=pl.from_pandas(features.head(3))
    )
    tracking.promote_if_better(MODEL, version, "auc", 0.8, None)

    loaded = tracking.load_champion(MODEL)
    assert isinstance(loaded.model, CalibratedBooster)
    np.testing.assert_allclose(loaded.model.predict(features), composite.predict(features))

    mlflow = tracking.import_mlflow()  # generic MLflow tools can use it too
    generic = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    np.testing.assert_allclose(generic.predict(features), composite.predict(features))
    assert generic.metadata.get_input_schema().input_names() == list(features.columns)


def test_missing_artifact_fails_before_any_run(mlflow_settings: Settings, tmp_path: Path) -> None:
    mlflow = tracking.import_mlflow()
    with pytest.raises(FileNotFoundError, match=r"nope\.png"):
        _register(_booster(), 0.8, artifacts={"plot.png": tmp_path / "nope.png"})
    assert mlflow.search_runs(output_format="list") == []


def test_load_champion_loads_the_version_it_resolved(
    mlflow_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A promotion between resolving the alias and loading must not mix versions."""
    first_booster, second_booster = _booster(seed=0), _booster(seed=5, rounds=8)
    first = _register(first_booster, 0.8)
    tracking.promote_if_better(MODEL, first, "auc", 0.8, None)
    second = _register(second_booster, 0.9)

    real_load_version = tracking.load_version

    def promote_meanwhile(name: str, version: str) -> tracking.LoadedModel:
        tracking.promote_if_better(MODEL, second, "auc", 0.9, 0.8)
        return real_load_version(name, version)

    monkeypatch.setattr(tracking, "load_version", promote_meanwhile)
    loaded = tracking.load_champion(MODEL)
    features, _ = _data(seed=4)
    assert (loaded.version, loaded.run_id) == ("1", first.run_id)
    np.testing.assert_array_equal(loaded.model.predict(features), first_booster.predict(features))
    monkeypatch.undo()
    assert tracking.load_champion(MODEL).version == "2"


def test_sqlite_path_reads_relative_and_absolute_uris() -> None:
    assert tracking.sqlite_path("sqlite:///out/mlflow.db") == Path("out/mlflow.db")
    assert tracking.sqlite_path("sqlite:////tmp/x/mlflow.db?timeout=5") == Path("/tmp/x/mlflow.db")
    assert tracking.sqlite_path("postgresql://u@h/db") is None
