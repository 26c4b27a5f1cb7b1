"""What changed since the previous run: deal deltas and kinds, moved drivers, pipeline waterfall."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from salesml import contract
from salesml.deals.changes import (
    close_periods,
    deal_score_changes,
    moved_drivers,
    period_labels,
    pipeline_changes,
)
from salesml.deals.snapshots import open_deals
from salesml.timeutil import DATETIME
from tests.deals.conftest import AS_OF as WORLD_AS_OF
from tests.deals.conftest import cut_at, scramble_future

AS_OF = datetime(2025, 7, 10, tzinfo=UTC)
PREV = AS_OF - timedelta(days=7)


def _deals() -> pl.DataFrame:
    """D1..D4 open throughout; D5 won and D6 lost since PREV; D7 created since PREV."""
    days = timedelta(days=1)
    return pl.DataFrame(
        {
            "deal_id": ["D1", "D2", "D3", "D4", "D5", "D6", "D7"],
            "amount": [100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0],
            "created_at": [AS_OF - 60 * days] * 6 + [AS_OF - 2 * days],
            "expected_close_at": [
                AS_OF + 5 * days,  # July both times
                AS_OF + 10 * days,  # July at PREV, slips to September (history)
                AS_OF + 60 * days,  # September at PREV, pulled into July (history)
                PREV - 1 * days,  # passed: counts in the month of each as_of (July)
                AS_OF + 3 * days,
                AS_OF + 3 * days,
                AS_OF + 4 * days,
            ],
            "closed_at": [None, None, None, None, AS_OF - days, AS_OF - 2 * days, None],
            "outcome": [None, None, None, None, "won", "lost", None],
        }
    ).with_columns(pl.col("created_at", "expected_close_at", "closed_at").cast(DATETIME))


def _history() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "deal_id": ["D2", "D3", "D1"],
            "changed_at": [
                AS_OF - timedelta(days=2),
                AS_OF - timedelta(days=3),
                AS_OF + timedelta(days=1),
            ],
            "expected_close_at": [
                AS_OF + timedelta(days=70),
                AS_OF + timedelta(days=8),
                AS_OF + timedelta(days=90),  # after as_of: must be ignored
            ],
        }
    ).with_columns(pl.col("changed_at", "expected_close_at").cast(DATETIME))


def _scores(pairs: dict[str, float]) -> pl.DataFrame:
    return pl.DataFrame(
        {"deal_id": list(pairs), "win_probability": list(pairs.values())},
        schema={"deal_id": pl.String, "win_probability": pl.Float64},
    )


PREVIOUS = _scores({"D1": 0.5, "D2": 0.4, "D3": 0.3, "D4": 0.2, "D5": 0.6, "D6": 0.7})
CURRENT = _scores({"D1": 0.502, "D2": 0.1, "D3": 0.6, "D4": 0.25, "D7": 0.9})


def _factors(rows: list[tuple[str, str, float]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["deal_id", "feature", "contribution"], orient="row")


def test_delta_is_exact_and_kinds_follow_the_outcomes() -> None:
    empty = _factors([])
    out = deal_score_changes(CURRENT, PREVIOUS, empty, empty, _deals(), AS_OF, PREV)
    assert out.schema == pl.Schema(contract.row_dtypes("deal_score_changes"))
    assert out["deal_id"].to_list() == ["D1", "D2", "D3", "D4", "D5", "D6", "D7"]
    kinds = dict(zip(out["deal_id"], out["change_kind"], strict=True))
    assert kinds == {
        "D1": "unchanged",
        "D2": "down",
        "D3": "up",
        "D4": "up",
        "D5": "closed_won",
        "D6": "closed_lost",
        "D7": "new",
    }
    both = out.filter(pl.col("delta").is_not_null())
    assert both["delta"].to_list() == [0.502 - 0.5, 0.1 - 0.4, 0.6 - 0.3, 0.25 - 0.2]
    assert (
        out.filter(pl.col("change_kind").is_in(["new", "closed_won", "closed_lost"]))[
            "delta"
        ].null_count()
        == 3
    )
    assert out["previous_as_of"].unique().to_list() == [PREV]


def test_a_close_after_as_of_is_not_known_and_a_vanished_deal_is_gone() -> None:
    deals = _deals().with_columns(
        pl.when(pl.col("deal_id") == "D5")
        .then(pl.lit(AS_OF + timedelta(days=1), DATETIME))
        .otherwise(pl.col("closed_at"))
        .alias("closed_at")
    )
    empty = _factors([])
    out = deal_score_changes(CURRENT, PREVIOUS, empty, empty, deals, AS_OF, PREV)
    assert out.filter(pl.col("deal_id") == "D5")["change_kind"].item() == "gone"


def test_first_run_marks_every_deal_new() -> None:
    empty = _factors([])
    out = deal_score_changes(CURRENT, PREVIOUS.clear(), empty, empty, _deals(), AS_OF, None)
    assert out["change_kind"].to_list() == ["new"] * CURRENT.height
    assert out["previous_as_of"].null_count() == CURRENT.height


def test_moved_drivers_keep_the_largest_moves_and_count_absent_as_zero() -> None:
    before = _factors([("D1", "age", 0.5), ("D1", "calls", 0.1), ("D1", "stage", -0.2)])
    after = _factors(
        [("D1", "age", 0.45), ("D1", "calls", 0.9), ("D1", "region", -0.4), ("D1", "stage", -0.2)]
    )
    out = moved_drivers(after, before, top=3)
    drivers = json.loads(out.filter(pl.col("deal_id") == "D1")["moved_drivers"].item())
    assert [d["feature"] for d in drivers] == ["calls", "region", "age"]
    assert drivers[1] == {"feature": "region", "before": 0.0, "after": -0.4}


def test_close_periods_are_point_in_time() -> None:
    tables = {"deals": _deals(), "deal_close_date_history": _history()}
    ids = pl.DataFrame({"deal_id": ["D1", "D2", "D3", "D4"]})
    now = close_periods(ids, tables, AS_OF)
    before = close_periods(ids, tables, PREV)
    assert now["month"].to_list() == ["2025-07", "2025-09", "2025-07", "2025-07"]
    assert before["month"].to_list() == ["2025-07", "2025-07", "2025-09", "2025-07"]
    assert now["quarter"].to_list() == ["2025-Q3", "2025-Q3", "2025-Q3", "2025-Q3"]
    assert period_labels(AS_OF) == ("2025-07", "2025-Q3")


def _waterfall(**kwargs: object) -> pl.DataFrame:
    tables = {"deals": _deals(), "deal_close_date_history": _history()}
    return pipeline_changes(CURRENT, PREVIOUS, tables, AS_OF, PREV, **kwargs)  # type: ignore[arg-type]


def test_waterfall_steps_sum_to_the_end_and_land_where_expected() -> None:
    out = _waterfall()
    assert out.schema == pl.Schema(contract.row_dtypes("pipeline_changes"))
    month = dict(
        zip(*out.filter(pl.col("period") == "2025-07").select("step", "value"), strict=True)
    )
    # July at PREV: D1, D2, D4 (overdue: the month of PREV), D5, D6
    assert month["start"] == pytest.approx(
        100 * 0.5 + 200 * 0.4 + 400 * 0.2 + 500 * 0.6 + 600 * 0.7
    )
    assert month["new"] == pytest.approx(700 * 0.9)
    assert month["won"] == pytest.approx(-500 * 0.6)
    assert month["lost"] == pytest.approx(-600 * 0.7)
    assert month["slipped_out"] == pytest.approx(-200 * 0.4)
    assert month["pulled_in"] == pytest.approx(300 * 0.6)
    assert month["score_change"] == pytest.approx(100 * 0.002 + 400 * 0.05)
    assert month["end"] == pytest.approx(100 * 0.502 + 300 * 0.6 + 400 * 0.25 + 700 * 0.9)
    for _, group in out.group_by("period"):
        part = group.sort("step_order")
        values = part["value"].to_list()
        assert sum(values[:-1]) == pytest.approx(values[-1], rel=1e-12, abs=1e-9)


def test_waterfall_takes_another_probability_and_old_amounts() -> None:
    tables = {"deals": _deals(), "deal_close_date_history": _history()}
    current = CURRENT.with_columns((pl.col("win_probability") / 2).alias("p_in_period"))
    previous = PREVIOUS.with_columns(
        (pl.col("win_probability") / 2).alias("p_in_period"), pl.lit(50.0).alias("amount")
    )
    out = pipeline_changes(
        current, previous, tables, AS_OF, PREV, probability="p_in_period"
    ).filter(pl.col("period_kind") == "month")
    start = out.filter(pl.col("step") == "start")["value"].item()
    assert start == pytest.approx(50.0 * (0.5 + 0.4 + 0.2 + 0.6 + 0.7) / 2)
    assert out["value"].head(7).sum() == pytest.approx(out["value"][7], rel=1e-12)


def test_waterfall_ignores_history_after_as_of_and_is_empty_without_previous_run() -> None:
    later = _history().vstack(
        pl.DataFrame(
            {
                "deal_id": ["D3"],
                "changed_at": [AS_OF + timedelta(hours=1)],
                "expected_close_at": [AS_OF + timedelta(days=200)],
            }
        ).with_columns(pl.col("changed_at", "expected_close_at").cast(DATETIME))
    )
    tables = {"deals": _deals(), "deal_close_date_history": later}
    moved = pipeline_changes(CURRENT, PREVIOUS, tables, AS_OF, PREV)
    assert moved.equals(_waterfall())
    assert pipeline_changes(CURRENT, PREVIOUS, tables, AS_OF, None).height == 0


def _world_scores(world: dict[str, pl.DataFrame], as_of: datetime) -> pl.DataFrame:
    """Every deal open at as_of with a probability that varies by deal and run (no model)."""
    seed = int(as_of.timestamp()) % 1000
    return open_deals(cut_at(world, as_of)["deals"], as_of, min_open_days=0).select(
        "deal_id",
        ((pl.col("deal_id").hash(seed) % 1000) / 1000).alias("win_probability"),
    )


def test_changes_on_the_deal_world_are_consistent_with_both_runs(
    small_world: dict[str, pl.DataFrame],
) -> None:
    """Two runs a week apart over the shared world: every deal of both runs once, delta exact,
    the waterfall adds up."""
    previous_as_of = WORLD_AS_OF - timedelta(days=7)
    runs = [_world_scores(small_world, t) for t in (previous_as_of, WORLD_AS_OF)]
    tables = cut_at(small_world, WORLD_AS_OF)
    empty = _factors([])
    out = deal_score_changes(
        runs[1], runs[0], empty, empty, tables["deals"], WORLD_AS_OF, previous_as_of
    )
    expected_ids = set(runs[0]["deal_id"]) | set(runs[1]["deal_id"])
    assert out["deal_id"].n_unique() == out.height == len(expected_ids)
    assert set(out["deal_id"]) == expected_ids
    assert out.filter(pl.col("change_kind") == "gone").height == 0
    assert out.filter(pl.col("change_kind").str.starts_with("closed")).height > 0
    both = out.join(runs[0].rename({"win_probability": "p0"}), on="deal_id").join(
        runs[1].rename({"win_probability": "p1"}), on="deal_id"
    )
    assert (both["delta"] == both["p1"] - both["p0"]).all()
    waterfall = pipeline_changes(runs[1], runs[0], tables, WORLD_AS_OF, previous_as_of)
    assert waterfall.height == 2 * 8
    future = scramble_future(small_world, WORLD_AS_OF)  # every row after as_of rewritten
    assert pipeline_changes(runs[1], runs[0], future, WORLD_AS_OF, previous_as_of).equals(waterfall)
    again = deal_score_changes(
        runs[1], runs[0], empty, empty, future["deals"], WORLD_AS_OF, previous_as_of
    )
    assert again.equals(out)
    for _, part in waterfall.group_by("period"):
        values = part.sort("step_order")["value"].to_list()
        assert sum(values[:-1]) == pytest.approx(values[-1], rel=1e-12, abs=1e-6)


def test_unchanged_tolerance_is_in_points_and_outputs_pass_the_contract() -> None:
    empty = _factors([])
    args = (CURRENT, PREVIOUS, empty, empty, _deals(), AS_OF, PREV)
    strict = deal_score_changes(*args, unchanged_below_points=0.1)
    assert strict.filter(pl.col("deal_id") == "D1")["change_kind"].item() == "up"
    stamps = [pl.lit(AS_OF, DATETIME).alias("as_of"), pl.lit("run").alias("run_id")]
    for table, frame in (
        ("deal_score_changes", deal_score_changes(*args)),
        ("pipeline_changes", _waterfall()),
    ):
        contract.OUTPUT_SCHEMAS[table].validate(frame.with_columns(stamps), lazy=True)
