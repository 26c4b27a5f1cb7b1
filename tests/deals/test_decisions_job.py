"""Hourly scoring through the real score job (issue 13, "Done means"): a deal turns red at the
second run and recovers at the third; one alert opens, reaches a local webhook once and resolves;
deal_score_changes agree with the stored deal_scores; a re-run of an as_of changes nothing.

The world is the small deal world plus one planted deal, DZ-RED: in 'proposal' for 30 days (over
its 21-day limit: one rule), last activity 13 days 23.5 hours before the first run. One hour
later "no activity for 14 days" fires too: two rules make it red (`deals.health.rules.red_at_rules`).
A call logged between the second and the third run clears the quiet rule: yellow again. The
probability bands are set so no deal is red by its probability alone (health by rules only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from salesml import tracking
from salesml.config import (
    AlertsSettings,
    AlertWebhookSettings,
    HealthBands,
    HealthRedRule,
    Settings,
    SourcesSettings,
)
from salesml.deals import deal_win_jobs
from salesml.deals.decisions import DECISION_TABLES, pipeline_origins
from salesml.deals.training import TrainingResult
from salesml.warehouse import Warehouse
from tests.alerts.conftest import Receiver, serving_receiver
from tests.deals.conftest import AS_OF, fast_deal_settings

TARGET = "DZ-RED"
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
HOOK_ENV = "SALESML_TEST_DECISIONS_HOOK"


def _planted(tables: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """The small world plus DZ-RED (see the module docstring), rows in each table's dtypes."""
    deals, activities = tables["deals"], tables["activities"]
    account = str(deals["account_id"][0])

    def one(table: str, row: dict[str, object]) -> pl.DataFrame:
        return pl.concat([tables[table], pl.DataFrame([row], schema=tables[table].schema)])

    target = {
        "deal_id": TARGET,
        "account_id": account,
        "owner_id": str(deals["owner_id"][0]),
        "region": str(deals["region"][0]),
        "product": str(deals["product"][0]),
        "amount": 50_000.0,
        "created_at": AS_OF - 60 * DAY,
        "expected_close_at": AS_OF + 45 * DAY,
        "closed_at": None,
        "outcome": None,
    }
    stages = pl.DataFrame(
        {
            "deal_id": [TARGET, TARGET],
            "stage": ["qualification", "proposal"],
            "entered_at": [AS_OF - 60 * DAY, AS_OF - 30 * DAY],
        },
        schema=tables["deal_stage_history"].schema,
    )
    acts = pl.DataFrame(
        {
            "activity_id": ["AZ-1", "AZ-2"],
            "deal_id": [TARGET, TARGET],
            "account_id": [account, account],
            # quiet 13.98 days at the first run, 14.02 at the second; a call before the third
            "occurred_at": [AS_OF - 14 * DAY + timedelta(minutes=30), AS_OF + 90 * (HOUR / 60)],
            "activity_type": ["email", "call"],
            "contact_role": ["engineer", "cto"],
        },
        schema=activities.schema,
    )
    return {
        **tables,
        "deals": one("deals", target),
        "deal_stage_history": pl.concat([tables["deal_stage_history"], stages]),
        "activities": pl.concat([activities, acts]),
    }


@pytest.fixture
def webhook() -> Iterator[Receiver]:
    """A local HTTP receiver (tests/alerts) that records the notices it accepts."""
    with serving_receiver("/hooks/T0KEN") as found:
        yield found


@pytest.fixture
def hourly_settings(
    mlflow_settings: Settings,
    small_world: dict[str, pl.DataFrame],
    trained: TrainingResult,
    tmp_path: Path,
    webhook: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    """The planted world as a Parquet source, fast deal settings, health by rules only, one
    alert rule (health turned red) delivered to the local webhook. The model that serves the
    runs is the session's small-world model trained at AS_OF (`tracking.load_for` answers with
    it: registering one through `jobs.train` costs ~10 s of MLflow logging and plots)."""
    loaded = tracking.LoadedModel(trained.model, "1", "trained-in-session", trained_as_of=AS_OF)
    monkeypatch.setattr(tracking, "load_for", lambda name, as_of: loaded)
    folder = tmp_path / "crm"
    folder.mkdir()
    for name, frame in _planted(small_world).items():
        frame.write_parquet(folder / f"{name}.parquet")
    monkeypatch.setenv(HOOK_ENV, webhook.url)
    deals = fast_deal_settings(health={"bands": HealthBands(red_below=0.0, green_at_or_above=0.5)})
    alerts = AlertsSettings(
        rules=[HealthRedRule()],
        webhook=AlertWebhookSettings(url_env=HOOK_ENV),
        max_attempts=2,
        backoff_seconds=0,
    )
    return mlflow_settings.model_copy(
        update={"sources": SourcesSettings(path=folder), "deals": deals, "alerts": alerts}
    )


def _table(warehouse: Warehouse, table: str, as_of: object) -> pl.DataFrame:
    return warehouse.read(table, as_of=as_of).drop("run_id")  # type: ignore[arg-type]


def test_hourly_scoring_opens_delivers_and_resolves_one_alert(
    hourly_settings: Settings, webhook: Receiver
) -> None:
    runs = [deal_win_jobs.score(hourly_settings, AS_OF + k * HOUR) for k in range(3)]
    warehouse = Warehouse.from_settings(hourly_settings)
    health = [
        warehouse.read("deal_scores", as_of=AS_OF + k * HOUR)
        .filter(pl.col("deal_id") == TARGET)["health"]
        .item()
        for k in range(3)
    ]
    assert health == ["yellow", "red", "yellow"]
    opened = [r.alerts["opened"] for r in runs]
    resolved = [r.alerts["resolved"] for r in runs]
    assert opened[1:] == [1, 0] and resolved[1:] == [0, 1]
    alerts = warehouse.read("alerts").filter(pl.col("first_seen_as_of") > AS_OF)
    assert alerts.height == 1
    row = alerts.row(0, named=True)
    assert (row["subject_id"], row["kind"], row["status"]) == (TARGET, "health_red", "resolved")
    assert (row["first_seen_as_of"], row["resolved_at"]) == (AS_OF + HOUR, AS_OF + 2 * HOUR)
    assert row["delivered_at"] is not None and row["resolved_delivered_at"] is not None
    mine = [body["id"] for body in webhook.accepted if TARGET in body["text"]]
    assert mine == [f"{row['alert_key']}.opened", f"{row['alert_key']}.resolved"]
    assert all("alerts" not in note for r in runs for note in r.notes)

    # (b) deal_score_changes agree with the two runs' stored deal_scores
    first, second, third = (warehouse.read("deal_scores", as_of=AS_OF + k * HOUR) for k in range(3))
    changes = warehouse.read("deal_score_changes", as_of=AS_OF + 2 * HOUR)
    assert changes["deal_id"].n_unique() == changes.height
    assert set(changes["deal_id"]) == set(second["deal_id"]) | set(third["deal_id"])
    assert changes["previous_as_of"].unique().to_list() == [AS_OF + HOUR]
    both = (
        third.select("deal_id", "win_probability")
        .join(second.select("deal_id", p_before="win_probability"), on="deal_id")
        .join(changes.select("deal_id", "delta", "previous_probability"), on="deal_id")
    )
    assert both.height == third.height
    assert (both["delta"] == both["win_probability"] - both["p_before"]).all()
    assert (both["previous_probability"] == both["p_before"]).all()
    assert set(warehouse.read("deal_score_changes", as_of=AS_OF)["change_kind"]) == {
        "new"
    }  # the first run has no previous run
    assert warehouse.read("pipeline_changes", as_of=AS_OF).height == 0
    assert warehouse.read("pipeline_changes", as_of=AS_OF + HOUR).height > 0
    assert first.height > 0
    for table in DECISION_TABLES:  # same batch, same lineage as deal_scores
        rows = warehouse.read(table, as_of=AS_OF + HOUR)
        assert rows.height > 0, table
        assert rows["run_id"].unique().to_list() == [runs[1].run_id], table
        assert rows["model_version"].unique().to_list() == [runs[1].model_version], table

    # (c) a re-run of the same as_of writes the same rows, no new alert, no second notice
    before = {t: _table(warehouse, t, AS_OF + 2 * HOUR) for t in DECISION_TABLES}
    stored_alerts = warehouse.read("alerts").drop("run_id", "as_of")
    sent = len(webhook.requests)
    again = deal_win_jobs.score(hourly_settings, AS_OF + 2 * HOUR)
    assert again.alerts["opened"] == 0
    for table, frame in before.items():
        assert _table(warehouse, table, AS_OF + 2 * HOUR).equals(frame), table
    assert warehouse.read("alerts").drop("run_id", "as_of").equals(stored_alerts)
    assert len(webhook.requests) == sent


def test_backtest_writes_the_pipeline_backtest_beside_the_deal_win_rows(
    settings: Settings, small_world: dict[str, pl.DataFrame], tmp_path: Path
) -> None:
    """Issue 13 item 3: the in-period pipeline backtest lands in model_quality (model
    'pipeline', kind 'backtest') next to the deal-win backtest rows of the same run."""
    folder = tmp_path / "crm"
    folder.mkdir()
    for name, frame in small_world.items():
        frame.write_parquet(folder / f"{name}.parquet")
    deals = fast_deal_settings(
        label_horizon_days=30, holdout_days=21, backtest={"step_days": 14, "follow_up_days": 0}
    )
    local = settings.model_copy(update={"sources": SourcesSettings(path=folder), "deals": deals})
    summary = deal_win_jobs.backtest(local, AS_OF, n_origins=1)
    origins = summary["pipeline"]["origins"]
    assert origins == [pipeline_origins(AS_OF, 1)[0].isoformat()] == ["2025-03-01T00:00:00+00:00"]
    assert set(summary["pipeline"]["month_region"]) >= {"coverage_p10_p90", "bias", "wape"}
    rows = Warehouse.from_settings(local).read("model_quality", as_of=AS_OF)
    assert set(rows["run_id"]) == {summary["run_id"]}
    pipeline = rows.filter(pl.col("model") == "pipeline")
    assert set(pipeline["kind"]) == {"backtest"}
    assert set(pipeline["level"]) == {"month_all", "month_region"}
    assert set(pipeline["metric"]) == {"coverage_p10_p90", "bias", "wape"}
    assert [o.isoformat() for o in pipeline["origin"].unique()] == origins
    assert rows.filter(pl.col("model") == "deal_win").height > 0  # not replaced by the scope


def test_the_demo_scores_twice_and_says_where_each_table_is(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`salesml demo` scores a week before as_of and at as_of with the model trained at the
    earlier one (so changes, the waterfall and alerts have a previous run), and its summary
    names each table with its rows at as_of."""
    from salesml import demo
    from salesml.demand import demand_jobs

    calls: list[tuple[str, object]] = []

    def record(name: str) -> Callable[..., object]:
        def job(settings: Settings, when: datetime, *args: object, **kwargs: object) -> object:
            calls.append((name, when))
            return {"n_origins": args[0]} if name.endswith("backtest") else name

        return job

    for module, name in (
        (deal_win_jobs, "train"),
        (deal_win_jobs, "score"),
        (deal_win_jobs, "backtest"),
    ):
        monkeypatch.setattr(module, name, record(f"{module.__name__}.{name}"))
    monkeypatch.setattr(demand_jobs, "train", record("demand.train"))
    monkeypatch.setattr(demand_jobs, "forecast", record("demand.forecast"))
    earlier = AS_OF - demo.EARLIER_SCORE
    steps = demo._model_steps(settings, AS_OF, None)
    assert calls == [
        ("salesml.deals.deal_win_jobs.train", earlier),
        ("salesml.deals.deal_win_jobs.score", earlier),
        ("salesml.deals.deal_win_jobs.score", AS_OF),
        (
            "salesml.deals.deal_win_jobs.backtest",
            AS_OF,
        ),  # deal-win and in-period pipeline backtests
        ("demand.train", AS_OF),
        ("demand.forecast", AS_OF),
    ]
    assert f"over {demo.DEMO_BACKTEST_ORIGINS} origins" in steps["backtest deal-win and pipeline"]

    scores = pl.DataFrame(
        {
            "deal_id": ["D1", "D2"],
            "win_probability": [0.5, 0.25],
            "health": ["yellow", "yellow"],
            "health_reasons": ["[]", "[]"],
            "top_factors": ["[]", "[]"],
        }
    )
    behavior = pl.DataFrame(
        {
            "activity_type": ["call"],
            "contact_role": ["cto"],
            "occurrences": [3],
            "mean_contribution": [0.01],
        }
    )
    warehouse = Warehouse.from_settings(settings)
    batch = {"deal_scores": scores, "behavior_value": behavior}
    warehouse.write_batch(batch, as_of=earlier, run_id="r0")
    warehouse.write_batch({"deal_scores": scores.head(1)}, as_of=AS_OF, run_id="r1")
    rows = demo.table_rows(settings, AS_OF)
    assert rows == {
        "behavior_value": f"1 rows at {earlier.isoformat()}",  # trained at the earlier as_of
        "deal_scores": "1 rows",
    }
    result = demo.DemoResult(
        workdir=Path("w"),
        config_path=Path("c"),
        data_dir=Path("d"),
        warehouse_url=settings.warehouse.url,
        mlflow_uri="m",
        as_of=AS_OF.isoformat(),
        tables=rows,
    )
    assert result.summary_lines()[-3:] == [
        f"tables in the warehouse ({settings.warehouse.url}), rows at as_of:",
        f"  behavior_value: 1 rows at {earlier.isoformat()}",
        "  deal_scores: 1 rows",
    ]


def test_the_forecast_job_raises_demand_alerts_after_its_write_and_never_fails_on_them(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13 item 4 in the forecast job: the demand rules run on the written forecast (a
    what-if raises none); a delivery that cannot start (secret variable unset) is a run note."""
    from salesml.demand import demand_jobs
    from salesml.job_lifecycle import JobRun
    from tests.alerts.test_rules import AS_OF as RULES_AS_OF
    from tests.alerts.test_rules import _demand_frames

    demand = _demand_frames()
    frames = {"demand_forecast": demand["demand_forecast"]}
    tables = {name: demand[name] for name in ("sales", "inventory", "signals")}
    warehouse = Warehouse.from_settings(settings)
    run = JobRun(settings, warehouse, "f1", "forecast_demand", RULES_AS_OF)
    demand_jobs._alerts(run, frames, tables, scenario="what-if", progress=None)
    assert "alerts" not in warehouse.tables()
    demand_jobs._alerts(run, frames, tables, scenario=None, progress=None)
    stored = warehouse.read("alerts")
    assert set(zip(stored["kind"], stored["subject_id"], strict=True)) == {
        ("stock_promotion", "C1/S1"),
        ("signal_drop", "scans|S1"),
    }
    assert run.row_counts["alerts"] == 2 and run.notes == []

    monkeypatch.delenv("SALESML_TEST_UNSET_HOOK", raising=False)
    hook = AlertWebhookSettings(url_env="SALESML_TEST_UNSET_HOOK")
    broken = settings.model_copy(update={"alerts": AlertsSettings(webhook=hook)})
    later = JobRun(broken, warehouse, "f2", "forecast_demand", RULES_AS_OF + 4 * HOUR)
    demand_jobs._alerts(later, frames, tables, scenario=None, progress=None)
    assert len(later.notes) == 1 and later.notes[0].startswith("alerts not processed: ")
    assert "SALESML_TEST_UNSET_HOOK" in later.notes[0]
