"""Deal-win jobs end to end: train -> MLflow + gate -> score -> warehouse, with lineage."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from salesml.config import Settings, SourcesSettings
from salesml.deals import deal_win_jobs
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
    mlflow_settings = mlflow_settings.model_copy(update={"sources": SourcesSettings(path=folder)})
    mlflow_settings = mlflow_settings.model_copy(update={"deals": fast_deal_settings()})
    return mlflow_settings


def test_train_gate_score_and_lineage(deal_settings: Settings) -> None:
    from salesml import tracking

    first = deal_win_jobs.train(deal_settings, AS_OF)
    assert first.promoted
    assert first.behavior_pairs > 0

    # a crippled candidate (one stump) is evaluated on the same holdout and kept out
    worse_settings = deal_settings.model_copy(deep=True)
    worse_settings = worse_settings.model_copy(
        update={"deals": fast_deal_settings(model={"n_estimators": 1, "num_leaves": 2})}
    )
    second = deal_win_jobs.train(worse_settings, AS_OF)
    assert not second.promoted
    assert second.champion_version == first.model_version
    assert second.candidate_value is not None and second.champion_value is not None
    assert second.candidate_value < second.champion_value
    assert "worse" in second.decision
    mlflow = tracking.import_mlflow()
    run = mlflow.MlflowClient().get_run(second.mlflow_run_id)
    assert run.data.tags["salesml.promotion.promoted"] == "false"
    assert "holdout_auc" in run.data.metrics
    # the skill gate's numbers are logged with the first model's decision
    first_run = mlflow.MlflowClient().get_run(first.mlflow_run_id)
    for key in ("brier_skill", "brier_skill_low", "logistic_brier", "base_rate_brier"):
        assert f"holdout_{key}" in first_run.data.metrics
    assert float(first_run.data.tags["salesml.skill.brier_skill_low"]) > 0
    assert "skilful: Brier skill vs base rate" in first.decision
    assert "Brier skill" in first.describe()
    assert (
        f"+/- {first.metrics['brier_open_se']:.4f} on the deals open at as_of" in first.describe()
    )
    assert tracking.champion_info(deal_win_jobs.MODEL_NAME).version == first.model_version  # type: ignore[union-attr]

    scored = deal_win_jobs.score(deal_settings, AS_OF)
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
    assert scores.height == scored.scored and scored.not_scored == 0
    assert scores["win_probability"].null_count() == 0  # every open deal has a probability
    # deals.min_open_days 0 (default): the model scores young deals too (prior: test_scoring)
    assert set(scores["score_basis"]) == {"model"}
    assert scores["probability_event"].unique().to_list() == ["won within 45 days of as_of"]
    assert set(scores["health"]) <= {"red", "yellow", "green"}
    assert scores["top_factors"].drop_nulls().str.starts_with("[").all()
    factors = warehouse.read("deal_score_factors", as_of=AS_OF)
    assert factors.group_by("deal_id").len()["len"].max() == deal_settings.deals.top_k
    behavior = warehouse.read("behavior_value", as_of=AS_OF)
    # the behaviour map of the latest training run (the worse candidate) carries its lineage
    assert behavior["model_version"].unique().to_list() == [second.model_version]

    runs = warehouse.read("runs")
    assert runs["status"].to_list() == ["succeeded"] * 3


def test_an_empty_scoring_run_keeps_the_scores_of_that_as_of(
    deal_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11: a zero-row scoring run silently replaced the earlier rows of that as_of. And
    scoring before the only model's as_of is refused: that model saw later outcomes."""
    import dataclasses

    import salesml.deals.scoring
    from salesml.tracking import NoServableVersionError

    deal_win_jobs.train(deal_settings, AS_OF)
    first = deal_win_jobs.score(deal_settings, AS_OF)
    real = salesml.deals.scoring.score_open_deals

    def nothing_open(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        return dataclasses.replace(
            result, **{f.name: getattr(result, f.name).clear() for f in dataclasses.fields(result)}
        )

    monkeypatch.setattr(salesml.deals.scoring, "score_open_deals", nothing_open)
    empty = deal_win_jobs.score(deal_settings, AS_OF)
    assert empty.scored == 0 and empty.rows_written["deal_scores"] == 0
    kept = first.scored + first.not_scored
    assert empty.notes == [
        f"deal_scores: this run produced no rows; kept the {kept} rows an earlier run wrote "
        f"for as_of {AS_OF.isoformat()} (nothing written)"
    ]
    warehouse = Warehouse.from_settings(deal_settings)
    scores = warehouse.read("deal_scores", as_of=AS_OF)
    assert scores.height == kept and scores["run_id"].unique().to_list() == [first.run_id]
    assert warehouse.get_run(empty.run_id)["message"] == empty.notes[0]  # type: ignore[index]

    earlier = AS_OF - timedelta(days=60)
    with pytest.raises(NoServableVersionError) as err:
        deal_win_jobs.score(deal_settings, earlier)
    assert str(err.value).startswith(
        f"no version of {deal_win_jobs.MODEL_NAME} may serve as_of {earlier.isoformat()}: every eligible "
        f"version was trained later (v1 as of {AS_OF.isoformat()} (champion)); train one with"
    )
    failed = warehouse.list_runs(status="failed").row(0, named=True)
    assert failed["message"] == f"NoServableVersionError: {err.value}"


class Killed(BaseException):
    """What kill -9 does to a run, as far as the warehouse can tell: nothing more is written."""


def test_training_killed_after_promotion_is_reconciled_and_time_is_respected(
    deal_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11: a kill right after promotion left @champion moved, the run 'running' and
    behavior_value of the older model; and training at an earlier as_of than the champion
    promoted the older model."""
    from salesml import tracking

    def killed(*args: Any, **kwargs: Any) -> None:
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(Warehouse, "finish_run", killed)  # the process dies before closing
        with pytest.raises(Killed):
            deal_win_jobs.train(deal_settings, AS_OF)
    warehouse = Warehouse.from_settings(deal_settings)
    (dead,) = warehouse.list_runs().rows(named=True)
    assert dead["status"] == "running"
    assert tracking.champion_info(deal_win_jobs.MODEL_NAME).version == "1"  # type: ignore[union-attr]
    behavior = warehouse.read("behavior_value", as_of=AS_OF)  # written before the promotion
    assert behavior["model_version"].unique().to_list() == ["1"]
    _give_run_a_dead_process(warehouse, deal_settings, dead["run_id"])

    earlier = AS_OF - timedelta(days=30)
    older = deal_win_jobs.train(deal_settings, earlier)  # the next run: reconciles, then trains
    reconciled = warehouse.get_run(dead["run_id"])
    assert reconciled is not None and reconciled["status"] == "abandoned"
    assert reconciled["reconciled_at"] is not None and reconciled["model_version"] == "1"
    assert "is gone" in reconciled["message"]
    assert "reconciled: v1 is champion (the run died after promoting it)" in reconciled["message"]
    message = warehouse.get_run(older.run_id)["message"]  # type: ignore[index]
    assert f"marked abandoned: run {dead['run_id']}" in message
    assert f"reconciled abandoned run {dead['run_id']}: v1 is champion" in message

    assert not older.promoted and older.model_version == "2"
    assert "not promoted: champion v1 was trained as of" in older.decision
    assert tracking.champion_info(deal_win_jobs.MODEL_NAME).version == "1"  # type: ignore[union-attr]
    between = deal_win_jobs.score(deal_settings, AS_OF - timedelta(days=10))
    assert between.model_version == "2"  # eligible, trained before; v1 saw later outcomes
    assert any("used v2" in note for note in between.notes)
    assert deal_win_jobs.score(deal_settings, AS_OF).model_version == "1"


def _give_run_a_dead_process(warehouse: Warehouse, settings: Settings, run_id: str) -> None:
    """Point the run's pid at a process that has exited (this test's process lives on)."""
    import subprocess
    import sys

    import duckdb

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    path = settings.warehouse.url.removeprefix("duckdb:///")
    with duckdb.connect(path) as con:
        con.execute("UPDATE runs SET pid = ? WHERE run_id = ?", [child.pid, run_id])


def test_train_refuses_thin_data_and_records_the_failed_run(deal_settings: Settings) -> None:
    deal_settings = deal_settings.model_copy(update={"deals": fast_deal_settings(min_lost=100_000)})
    with pytest.raises(InsufficientDataError, match="refusing to train"):
        deal_win_jobs.train(deal_settings, AS_OF)
    runs = Warehouse.from_settings(deal_settings).read("runs")
    assert runs["status"].to_list() == ["failed"]
    assert "lost" in runs["message"][0]


def test_no_signal_world_gate_refuses_and_score_writes_the_base_rate(
    mlflow_settings: Settings, tmp_path: Path
) -> None:
    """Issue 9: with no skilful model, the gate refuses even a first model, and scoring writes
    the base rate known at as_of with score_basis 'base_rate' and a reason."""
    from salesml import tracking
    from salesml.sample import deals_world

    tables, _ = deals_world(n_deals=1200, days=300, seed=7, signal=False)
    folder = tmp_path / "null"
    folder.mkdir()
    for name, frame in tables.items():
        frame.write_parquet(folder / f"{name}.parquet")
    mlflow_settings = mlflow_settings.model_copy(update={"sources": SourcesSettings(path=folder)})
    mlflow_settings = mlflow_settings.model_copy(update={"deals": fast_deal_settings()})
    trained = deal_win_jobs.train(mlflow_settings, AS_OF)
    assert not trained.promoted
    assert trained.decision.startswith("no skill over the base rate")
    assert tracking.champion_info(deal_win_jobs.MODEL_NAME) is None
    scored = deal_win_jobs.score(mlflow_settings, AS_OF)
    assert scored.model_version is None and scored.bases == {"base_rate": scored.scored}
    warehouse = Warehouse.from_settings(mlflow_settings)
    scores = warehouse.read("deal_scores", as_of=AS_OF)
    assert scores.height == scored.scored > 0
    assert scores["score_basis"].unique().to_list() == ["base_rate"]
    assert scores["basis_reason"].str.starts_with("no deal-win model with skill").all()
    rate = scores["win_probability"].unique().to_list()
    assert len(rate) == 1 and 0 < rate[0] < 1
    assert scores["model_version"].is_null().all()
    message = warehouse.get_run(scored.run_id)["message"]  # type: ignore[index]
    assert "no deal-win model with skill" in message


def test_open_deal_probabilities_match_the_realised_rate_of_the_event(
    small_world: dict[str, pl.DataFrame],
) -> None:
    """Issue 9: on a world with planted time to close, the mean probability written for the
    deals open at as_of is within 20 % of how often they are then won within H days."""
    from salesml.deals.scoring import priors_at, score_open_deals
    from salesml.deals.training import fit_deal_win
    from salesml.sample import deals_world

    _, truth = deals_world(n_deals=1200, days=300, seed=7)
    settings = fast_deal_settings()
    horizon = timedelta(days=settings.label_horizon_days)
    predicted, realised = [], []
    for as_of in (AS_OF - timedelta(days=42), AS_OF - timedelta(days=7)):
        trained = fit_deal_win(small_world, as_of, settings)
        result = score_open_deals(
            trained.model,
            small_world,
            as_of,
            min_open_days=settings.min_open_days,
            rules=settings.health.rules,
            priors=priors_at(small_world["deals"], as_of, settings),
        )
        joined = result.scores.join(truth, on="deal_id")
        assert joined.height == result.scores.height > 50
        won = (pl.col("final_outcome") == "won") & (pl.col("final_closed_at") <= as_of + horizon)
        predicted.append(joined["win_probability"].mean())
        realised.append(joined.select(won.mean()).item())
    mean_p, rate = sum(predicted) / 2, sum(realised) / 2  # type: ignore[arg-type]
    assert abs(mean_p / rate - 1) < 0.2, (predicted, realised)
