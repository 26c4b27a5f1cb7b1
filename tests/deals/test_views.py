"""Rep and region views: overview sums, at-risk ranking, rep index monotone, time travel."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from salesml import contract
from salesml.config import DealHealthRules
from salesml.deals.snapshots import open_deals
from salesml.deals.views import deals_at_risk, health_overview, rep_health
from salesml.timeutil import DATETIME
from tests.deals.conftest import AS_OF as WORLD_AS_OF
from tests.deals.conftest import cut_at, scramble_future

AS_OF = datetime(2025, 7, 10, tzinfo=UTC)
DAY = timedelta(days=1)
RULES = DealHealthRules()


def _deals() -> pl.DataFrame:
    """R1 and R2 each have two open deals; R1 won 2 and lost 1 recently, R2 lost 2."""
    return pl.DataFrame(
        {
            "deal_id": [f"D{i}" for i in range(1, 10)],
            "owner_id": ["R1", "R1", "R2", "R2", "R1", "R1", "R1", "R2", "R2"],
            "region": ["emea", "apac", "emea", None, "emea", "emea", "emea", "apac", "apac"],
            "amount": [100.0, 200.0, 300.0, None, 50.0, 70.0, 30.0, 40.0, 60.0],
            "created_at": [AS_OF - 50 * DAY] * 9,
            "closed_at": [None] * 4 + [AS_OF - d * DAY for d in (5, 10, 20, 3, 4)],
            "outcome": [None] * 4 + ["won", "won", "lost", "lost", "lost"],
        }
    ).with_columns(pl.col("created_at", "closed_at").cast(DATETIME))


def _scores(probabilities: list[float] | None = None) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "deal_id": ["D1", "D2", "D3", "D4"],
            "win_probability": probabilities or [0.8, 0.3, 0.1, 0.5],
            "health": ["green", "yellow", "red", "yellow"],
            "stage": ["proposal", "discovery", "proposal", "negotiation"],
            "days_in_stage": [30.0, 5.0, 2.0, 40.0],  # D1 and D4 past their limits (21)
        }
    )


def _activities() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "activity_id": ["A1", "A2", "A3"],
            "deal_id": ["D1", "D3", "D3"],
            "account_id": ["X", "Y", "Y"],
            "occurred_at": [AS_OF - 2 * DAY, AS_OF - 10 * DAY, AS_OF + DAY],  # A3 is future
        }
    ).with_columns(pl.col("occurred_at").cast(DATETIME))


def test_overview_counts_and_sums_per_dimension() -> None:
    out = health_overview(_scores(), None, _deals())
    assert out.schema == pl.Schema(contract.row_dtypes("health_overview"))
    total = out.filter(pl.col("dimension") == "all").row(0, named=True)
    assert (total["open_deals"], total["n_red"], total["n_yellow"], total["n_green"]) == (
        4,
        1,
        2,
        1,
    )
    assert total["expected_revenue"] == pytest.approx(100 * 0.8 + 200 * 0.3 + 300 * 0.1)
    assert total["at_risk_value"] == pytest.approx(100 * 0.2 + 200 * 0.7 + 300 * 0.9)
    for dimension in ("region", "owner"):
        part = out.filter(pl.col("dimension") == dimension)
        for column in ("open_deals", "expected_revenue", "at_risk_value", "open_amount"):
            assert part[column].sum() == pytest.approx(total[column])
    assert "unknown" in out.filter(pl.col("dimension") == "region")["member"].to_list()


def test_at_risk_ranks_by_value_lost_since_the_last_run() -> None:
    previous = _scores([0.9, 0.5, 0.1, 0.9]).drop("health")
    out = deals_at_risk(_scores(), previous, _deals())
    assert out.schema == pl.Schema(contract.row_dtypes("deals_at_risk"))
    # D2 lost 0.2 of 200, D1 0.1 of 100; D3 did not move, D4 has no amount
    assert out["deal_id"].to_list() == ["D2", "D1"]
    assert out["rank"].to_list() == [1, 2]
    assert out["value_at_risk"].to_list() == pytest.approx([200 * 0.2, 100 * 0.1])
    assert set(out["risk_basis"]) == {"drop_since_last_run"}
    first = deals_at_risk(_scores(), None, _deals())
    assert first["deal_id"].to_list() == ["D3", "D2", "D1"]
    assert set(first["risk_basis"]) == {"unlikely_to_win"}


def _reps(deals: pl.DataFrame | None = None, **kwargs: object) -> pl.DataFrame:
    tables = {"deals": _deals() if deals is None else deals, "activities": _activities()}
    scores = kwargs.pop("scores", _scores())
    assert isinstance(scores, pl.DataFrame)
    return rep_health(scores, tables, AS_OF, horizon_days=30, rules=RULES, **kwargs)  # type: ignore[arg-type]


def _index(frame: pl.DataFrame, owner: str) -> float:
    return float(frame.filter(pl.col("owner_id") == owner)["health_index"].item())


def test_rep_health_drivers_and_range() -> None:
    out = _reps()
    assert out.schema == pl.Schema(contract.row_dtypes("rep_health"))
    r1 = out.filter(pl.col("owner_id") == "R1").row(0, named=True)
    assert r1["closed_deals"] == 3 and r1["open_deals"] == 2
    assert r1["peer_win_rate"] == pytest.approx(0.0)  # R2 lost both
    assert r1["win_rate"] == pytest.approx(2 / (3 + 5))
    assert r1["won_run_rate"] == pytest.approx((50 + 70) * 30 / 90)
    assert r1["pipeline_coverage"] == pytest.approx((80 + 60) / ((50 + 70) * 30 / 90))
    assert r1["days_since_activity"] == pytest.approx(2.0)
    assert r1["stalled_share"] == pytest.approx(0.5)
    drivers = json.loads(r1["drivers"])
    assert len(drivers) == 4 and drivers[2] == "last activity 2 days ago"
    assert out["health_index"].is_between(0, 100).all()


def test_rep_index_is_monotone_in_its_drivers() -> None:
    base = _index(_reps(), "R1")
    more_wins = _deals().with_columns(
        pl.when(pl.col("deal_id") == "D7")
        .then(pl.lit("won"))
        .otherwise("outcome")
        .alias("outcome"),
        pl.when(pl.col("deal_id") == "D7").then(None).otherwise("amount").alias("amount"),
    )
    assert _index(_reps(more_wins), "R1") > base
    fewer_stalled = _scores().with_columns(pl.lit(1.0).alias("days_in_stage"))
    assert _index(_reps(scores=fewer_stalled), "R1") > base
    more_pipeline = _scores([0.8, 0.9, 0.1, 0.5])
    assert _index(_reps(scores=more_pipeline), "R1") >= base  # coverage 3.5 is capped at 1
    under_target = _index(_reps(target_coverage=10.0), "R1")
    assert _index(_reps(scores=more_pipeline, target_coverage=10.0), "R1") > under_target
    quiet = rep_health(
        _scores(),
        {
            "deals": _deals(),
            "activities": _activities().with_columns(pl.col("occurred_at") - 8 * DAY),
        },
        AS_OF,
        horizon_days=30,
        rules=RULES,
    )
    assert _index(quiet, "R1") < base


def test_views_ignore_rows_after_as_of() -> None:
    future = _deals().with_columns(
        pl.when(pl.col("deal_id") == "D1")
        .then(pl.lit(AS_OF + DAY, DATETIME))
        .otherwise("closed_at")
        .alias("closed_at"),
        pl.when(pl.col("deal_id") == "D1")
        .then(pl.lit("won"))
        .otherwise("outcome")
        .alias("outcome"),
    )
    assert _reps(future).equals(_reps())
    assert health_overview(_scores(), None, future).equals(
        health_overview(_scores(), None, _deals())
    )


def test_views_on_the_deal_world_are_time_travel_safe(small_world: dict[str, pl.DataFrame]) -> None:
    """The shared world cut at as_of and with every later row rewritten gives the same views."""
    scores = open_deals(cut_at(small_world, WORLD_AS_OF)["deals"], WORLD_AS_OF, 0).select(
        "deal_id",
        ((pl.col("deal_id").hash(3) % 1000) / 1000).alias("win_probability"),
        pl.lit("yellow").alias("health"),
    )
    views = []
    for tables in (cut_at(small_world, WORLD_AS_OF), scramble_future(small_world, WORLD_AS_OF)):
        views.append(
            (
                rep_health(scores, tables, WORLD_AS_OF, horizon_days=45, rules=RULES),
                health_overview(scores, None, tables["deals"]),
                deals_at_risk(scores, None, tables["deals"]),
            )
        )
    for now, scrambled in zip(*views, strict=True):
        assert now.equals(scrambled)
    reps = views[0][0]
    assert reps.height > 3 and reps["health_index"].n_unique() > 1
    assert reps["stalled_share"].null_count() == reps.height  # no stage data in these scores


def test_view_outputs_pass_the_contract() -> None:
    stamps = [pl.lit(AS_OF, DATETIME).alias("as_of"), pl.lit("run").alias("run_id")]
    previous = _scores([0.9, 0.5, 0.1, 0.9])
    for table, frame in (
        ("health_overview", health_overview(_scores(), previous, _deals())),
        ("deals_at_risk", deals_at_risk(_scores(), previous, _deals())),
        ("rep_health", _reps()),
    ):
        contract.OUTPUT_SCHEMAS[table].validate(frame.with_columns(stamps), lazy=True)
        assert contract.non_finite(table, frame) is None
