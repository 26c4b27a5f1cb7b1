"""MLflow tracking: registration, the promotion gate, loading @champion (real SQLite store)."""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from salesml import tracking
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


# --- time: scoring never uses a model trained after its as_of ---------------------------------

JAN, MAR, JUN, JUL = (
    datetime(2025, m, d, tzinfo=UTC) for m, d in ((1, 1), (3, 1), (6, 15), (7, 1))
)


def _version(version: str, as_of: datetime | None, eligible: bool = True) -> tracking.VersionInfo:
    return tracking.VersionInfo(version, f"run{version}", as_of, eligible)


@pytest.mark.parametrize(
    ("as_of", "expected", "noted"),
    [
        (JUL, "3", False),  # the champion, trained at or before as_of
        (JUN, "2", True),  # champion trained later: the newest eligible one before
        (MAR, "1", True),  # v4 (Feb) never passed the gate
    ],
)
def test_choose_version_at_an_as_of(as_of: datetime, expected: str, noted: bool) -> None:
    versions = [
        _version("1", JAN),
        _version("2", JUN),
        _version("3", JUL),
        _version("4", datetime(2025, 2, 1, tzinfo=UTC), eligible=False),
    ]
    chosen, note = tracking.choose_version(MODEL, versions, "3", as_of)
    assert chosen.version == expected
    assert (note is not None) == noted
    if note:
        assert f"champion v3 was trained as of {JUL.isoformat()}, after as_of" in note


def test_choose_version_refuses_naming_the_versions() -> None:
    versions = [_version("1", JUN), _version("2", JUL)]
    with pytest.raises(tracking.NoServableVersionError) as err:
        tracking.choose_version(MODEL, versions, "2", MAR)
    assert str(err.value) == (
        f"no version of {MODEL} may serve as_of {MAR.isoformat()}: every eligible version was "
        f"trained later (v2 as of {JUL.isoformat()} (champion), v1 as of {JUN.isoformat()}); "
        f"train one with `salesml train deal-win --as-of {MAR.isoformat()}`"
    )
    # a champion without a recorded as_of cannot be checked: it serves (legacy registries)
    assert tracking.choose_version(MODEL, [_version("1", None)], "1", MAR)[0].version == "1"
    with pytest.raises(tracking.NoChampionError, match="run `salesml train deal-win` first"):
        tracking.choose_version(MODEL, versions, None, MAR)


def test_older_than_champion_rule() -> None:
    assert tracking.older_than_champion(JUN, "1", JUL) is not None
    assert tracking.older_than_champion(JUL, "1", JUL) is None  # same as_of: retraining
    assert tracking.older_than_champion(JUL, "1", JUN) is None
    assert tracking.older_than_champion(JUN, "1", None) is None  # unknown: never blocks
    assert tracking.older_than_champion(None, "1", JUL) is None


def test_registry_respects_time(mlflow_settings: Settings) -> None:
    """train at JUL, then at JUN (better): JUN never replaces the JUL champion, but serves
    as_ofs between them; an as_of before both is refused, naming the versions."""
    newer = _register(_booster(seed=0), 0.80, as_of=JUL)
    assert tracking.promote_if_better(MODEL, newer, "auc", 0.80, None, as_of=JUL).promoted
    older = _register(_booster(seed=1), 0.95, as_of=JUN)
    reference = tracking.reference_version(MODEL, JUN)
    assert reference is None  # nothing trained at or before JUN to compare with
    decision = tracking.promote_if_better(MODEL, older, "auc", 0.95, None, as_of=JUN)
    assert not decision.promoted and decision.passed_gate
    assert "not promoted: champion v1 was trained as of 2025-07-01" in decision.reason
    assert "never replaces it" in decision.reason
    assert tracking.load_champion(MODEL).version == "1"
    tags = _run_tags(older.run_id)
    assert (tags["salesml.gate.passed"], tags["salesml.promotion.promoted"]) == ("true", "false")
    assert tags["salesml.as_of"] == JUN.isoformat()

    at_jun = tracking.load_for(MODEL, datetime(2025, 6, 20, tzinfo=UTC))
    assert (at_jun.version, at_jun.trained_as_of) == ("2", JUN)
    assert at_jun.note is not None and "used v2" in at_jun.note
    at_jul = tracking.load_for(MODEL, JUL)
    assert (at_jul.version, at_jul.note) == ("1", None)
    with pytest.raises(tracking.NoServableVersionError, match=r"v2 as of 2025-06-15.*v1 as of"):
        tracking.load_for(MODEL, MAR)

    # a later candidate at JUN is gated against v2 (what serves JUN), not the JUL champion
    worse = _register(_booster(seed=2), 0.90, as_of=JUN)
    gated = tracking.promote_if_better(
        MODEL, worse, "auc", 0.90, 0.95, champion_version="2", as_of=JUN
    )
    assert not gated.promoted and not gated.passed_gate and "worse" in gated.reason
    assert tracking.load_for(MODEL, JUN).version == "2"


def test_versions_without_the_tag_read_as_of_from_their_run(mlflow_settings: Settings) -> None:
    legacy = _register(_booster(), 0.8, tags={"salesml.as_of": JUN.isoformat()})
    tracking.promote_if_better(MODEL, legacy, "auc", 0.8, None)
    (info,) = tracking.list_versions(MODEL)
    assert (info.version, info.as_of, info.eligible) == ("1", JUN, True)
    with pytest.raises(tracking.NoServableVersionError):
        tracking.load_for(MODEL, MAR)


# --- faults: one line, never a traceback ------------------------------------------------------


def test_a_store_that_is_not_sqlite_is_one_line(tmp_path: Path) -> None:
    from salesml.config import MlflowSettings

    db = tmp_path / "mlflow.db"
    db.write_text("<html>this is not a database</html>" * 20)
    settings = Settings(mlflow=MlflowSettings(tracking_uri=f"sqlite:///{db}"))
    with pytest.raises(tracking.TrackingError) as err:
        tracking.configure(settings)
    assert str(err.value) == (
        f"the MLflow store {db} (mlflow.tracking_uri) is not an SQLite database; move it "
        "away or point mlflow.tracking_uri at another file"
    )
    db.unlink()
    db.mkdir()
    with pytest.raises(tracking.TrackingError, match="is a folder"):
        tracking.configure(settings)


def test_a_store_that_fails_to_open_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from salesml.config import MlflowSettings

    def broken(settings: Any, uri: str) -> str:
        raise RuntimeError("(sqlite3.DatabaseError) database disk image is malformed\n[SQL: ...]")

    monkeypatch.setattr(tracking, "_configure", broken)
    uri = "postgresql://ml:hunter2@db/mlflow"
    with pytest.raises(tracking.TrackingError) as err:
        tracking.configure(Settings(mlflow=MlflowSettings(tracking_uri=uri)))
    assert str(err.value) == (
        "cannot use the MLflow store postgresql://ml:***@db/mlflow (mlflow.tracking_uri): "
        "(sqlite3.DatabaseError) database disk image is malformed"
    )


def test_missing_model_artifacts_are_one_line(mlflow_settings: Settings, tmp_path: Path) -> None:
    version = _register(_booster(), 0.8, as_of=JUN)
    tracking.promote_if_better(MODEL, version, "auc", 0.8, None, as_of=JUN)
    shutil.rmtree(tmp_path / "mlflow" / "mlartifacts")
    with pytest.raises(tracking.ModelArtifactsMissingError) as err:
        tracking.load_for(MODEL, JUL)
    text = str(err.value)
    assert "\n" not in text and err.value.__suppress_context__
    assert text.startswith(f"cannot load {MODEL} v1 (MLflow run {version.run_id}): its model")
    assert text.endswith("restore them or train a new version with `salesml train deal-win`")


def test_params_and_tags_are_redacted(mlflow_settings: Settings) -> None:
    url = "postgresql://app:hunter2@db/sales"
    version = tracking.log_and_register(
        MODEL, _booster(), {"source": url}, {"auc": 0.8}, tags={"where": url}
    )
    mlflow = tracking.import_mlflow()
    run = mlflow.MlflowClient().get_run(version.run_id)
    assert run.data.params["source"] == run.data.tags["where"] == "postgresql://app:***@db/sales"


# --- reconciling what a dead training run left ------------------------------------------------


def test_reconcile_a_run_that_died_at_each_step(mlflow_settings: Settings) -> None:
    mlflow = tracking.import_mlflow()
    client = mlflow.MlflowClient()
    ids = [uuid.uuid4().hex for _ in range(4)]

    def registered(warehouse_run_id: str) -> tracking.RegisteredVersion:
        return _register(
            _booster(), 0.8, as_of=JUN, tags={tracking.WAREHOUSE_RUN_TAG: warehouse_run_id}
        )

    champion = registered(ids[0])  # died after promoting
    tracking.promote_if_better(MODEL, champion, "auc", 0.8, None, as_of=JUN)
    before_gate = registered(ids[1])  # died between registering and the gate
    mid_gate = registered(ids[2])  # died between recording the decision and moving the alias
    client.set_model_version_tag(MODEL, mid_gate.version, "salesml.promotion.promoted", "true")
    client.set_model_version_tag(MODEL, mid_gate.version, tracking.GATE_TAG, "true")
    experiment = mlflow.get_experiment_by_name(mlflow_settings.mlflow.experiment)
    logging = client.create_run(experiment.experiment_id, tags={tracking.WAREHOUSE_RUN_TAG: ids[3]})

    outcomes = [tracking.reconcile_run(MODEL, run_id) for run_id in ids]
    assert outcomes[0] == tracking.Reconciled(
        "v1 is champion (the run died after promoting it); nothing to undo", "1"
    )
    assert outcomes[1].version == before_gate.version and "never gated" in outcomes[1].message
    assert outcomes[2].version == "3" and "@champion never moved to it" in outcomes[2].message
    assert outcomes[3].message == (
        f"MLflow run {logging.info.run_id} ended as KILLED; no model version was registered"
    )
    assert client.get_run(logging.info.run_id).info.status == "KILLED"
    tags = {str(v.version): v.tags for v in client.search_model_versions(f"name='{MODEL}'")}
    assert tags["2"]["salesml.promotion.promoted"] == "false"
    assert tags["2"][tracking.GATE_TAG] == "false"  # never eligible
    assert tags["3"]["salesml.promotion.promoted"] == "false"
    assert tags["3"][tracking.GATE_TAG] == "true"  # passed: may serve past as_ofs
    assert tracking.load_champion(MODEL).version == "1"
    assert tracking.reconcile_run(MODEL, ids[1]).version == "2"  # idempotent
