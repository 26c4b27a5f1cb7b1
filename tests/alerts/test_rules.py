"""Alert rules on small hand-built frames: each rule fires where it should and nowhere else,
rules without their inputs are not evaluated, and rows after as_of change nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from salesml.alerts.rules import CANDIDATE_SCHEMA, AlertFrames, evaluate_rules
from salesml.config import (
    AlertRuleSettings,
    AlertsSettings,
    DealHealthRules,
    DemandSettings,
    HealthRedRule,
    NoActivityRule,
    ProbabilityDropRule,
    SignalDropRule,
    StageDwellRule,
    StockPromotionRule,
)
from salesml.timeutil import DATETIME

AS_OF = datetime(2024, 6, 10, 12, tzinfo=UTC)
DEMAND = DemandSettings()
HORIZON_DAYS = DEMAND.grid.horizon_buckets * DEMAND.grid.bucket_hours / 24


def _t(day: int, hour: int = 0, month: int = 6) -> datetime:
    return datetime(2024, month, day, hour, tzinfo=UTC)


def _frames() -> AlertFrames:
    deals = pl.DataFrame(
        {
            "deal_id": ["D1", "D2", "D3", "D4"],
            "created_at": [_t(1, month=5), _t(5), _t(1, month=5), _t(1, month=5)],
            "closed_at": [None, None, _t(1), _t(11)],  # D3 closed; D4 closes after as_of
            "outcome": [None, None, "won", "lost"],
        },
        schema_overrides={"created_at": DATETIME, "closed_at": DATETIME},
    )
    history = pl.DataFrame(
        {
            "deal_id": ["D1", "D2", "D3", "D4", "D4"],
            "stage": ["Waiting for feedback", "proposal", "negotiation", "negotiation", "won"],
            "entered_at": [_t(1), _t(6), _t(1, month=5), _t(1, month=5), _t(11)],
        },
        schema_overrides={"entered_at": DATETIME},
    )
    activities = pl.DataFrame(
        {
            "deal_id": ["D1", "D4", "D3"],
            "occurred_at": [_t(20, month=5), _t(9), _t(1, month=5)],
        },
        schema_overrides={"occurred_at": DATETIME},
    )
    scores = pl.DataFrame(
        {"deal_id": ["D1", "D2"], "win_probability": [0.12, 0.55], "health": ["red", "green"]}
    )
    previous = pl.DataFrame(
        {"deal_id": ["D1", "D2"], "win_probability": [0.30, 0.60], "health": ["yellow", "green"]}
    )
    return AlertFrames(
        deal_scores=scores,
        previous_deal_scores=previous,
        deals=deals,
        deal_stage_history=history,
        activities=activities,
        **_demand_frames(),
    )


def _demand_frames() -> dict[str, pl.DataFrame]:
    buckets = DEMAND.grid.horizon_buckets
    per_bucket = 10 * HORIZON_DAYS / buckets  # 10 units a day -> safety 20 (2 days)
    forecast = pl.DataFrame(
        {
            "customer_id": ["C1"] * (2 * buckets),
            "sku": ["S1"] * buckets + ["S2"] * buckets,
            "mean": [per_bucket] * (2 * buckets),
        }
    )
    inventory = pl.DataFrame(
        {
            "ts": [_t(9), _t(9)],
            "customer_id": ["C1", "C1"],
            "sku": ["S1", "S2"],
            "on_hand": [5.0, 5.0],
        },
        schema_overrides={"ts": DATETIME},
    )
    # S1: 10 units the week before, 15 this week (+50 %); S2: 10 then 13 (+30 %)
    sales = pl.DataFrame(
        {
            "ts": [_t(1), _t(8), _t(1), _t(8)],
            "customer_id": ["C1"] * 4,
            "sku": ["S1", "S1", "S2", "S2"],
            "quantity": [10.0, 15.0, 10.0, 13.0],
        },
        schema_overrides={"ts": DATETIME},
    )
    # scans: S1 100 -> 80 (-20 %), S2 100 -> 90 (-10 %)
    signals = pl.DataFrame(
        {
            "ts": [_t(1), _t(8), _t(1), _t(8)],
            "name": ["scans"] * 4,
            "value": [100.0, 80.0, 100.0, 90.0],
            "sku": ["S1", "S1", "S2", "S2"],
        },
        schema_overrides={"ts": DATETIME},
    )
    return {"demand_forecast": forecast, "inventory": inventory, "sales": sales, "signals": signals}


RULES: list[AlertRuleSettings] = [
    HealthRedRule(),
    ProbabilityDropRule(points=10),
    StageDwellRule(stage_limit_days={"Waiting for feedback": 5}),
    NoActivityRule(),
    StockPromotionRule(),
    SignalDropRule(),
]


def _fired(frames: AlertFrames) -> set[tuple[str, str]]:
    found = evaluate_rules(RULES, frames, AS_OF, deal_rules=DealHealthRules(), demand=DEMAND)
    return set(found.candidates.select("rule_id", "subject_id").iter_rows())


def test_each_rule_fires_exactly_where_its_condition_holds() -> None:
    assert _fired(_frames()) == {
        ("health_red", "D1"),
        ("probability_drop", "D1"),  # 30 % -> 12 %: 18 points; D2 fell 5
        ("stage_dwell", "D1"),  # 9.5 days in waiting_for_feedback, limit 5 (the rule's)
        (
            "stage_dwell",
            "D4",
        ),  # 40 days in negotiation, limit 21 (deals.health.rules); closes later
        ("no_activity", "D1"),  # last activity 21 days ago; D2 is 5 days old, D4 active
        ("stock_promotion", "C1/S1"),  # 5 < safety 20, sales +50 %; S2 only +30 %
        ("signal_drop", "scans|S1"),  # -20 %; S2 -10 %
    }


def test_candidates_carry_severity_and_plain_messages() -> None:
    found = evaluate_rules(RULES, _frames(), AS_OF, demand=DEMAND).candidates
    assert found.schema == pl.Schema(CANDIDATE_SCHEMA)
    rows = {(r["rule_id"], r["subject_id"]): r for r in found.iter_rows(named=True)}
    assert rows[("health_red", "D1")]["severity"] == "high"
    assert rows[("probability_drop", "D1")]["message"] == (
        "Deal D1 fell 18 points since the previous run (30% -> 12%)"
    )
    assert rows[("stage_dwell", "D1")]["message"] == (
        "Deal D1 has been in stage Waiting for feedback for 9 days (limit 5)"
    )
    assert "start a promotion" in rows[("stock_promotion", "C1/S1")]["message"]
    assert "down 20% week on week" in rows[("signal_drop", "scans|S1")]["message"]


def test_rules_without_their_inputs_are_not_evaluated() -> None:
    frames = _frames()
    only_scores = AlertFrames(deal_scores=frames.deal_scores)
    assert evaluate_rules(RULES, only_scores, AS_OF).evaluated == frozenset()
    with_previous = AlertFrames(
        deal_scores=frames.deal_scores, previous_deal_scores=frames.previous_deal_scores
    )
    found = evaluate_rules(RULES, with_previous, AS_OF)
    assert found.evaluated == frozenset({"health_red", "probability_drop"})
    assert found.candidates["rule_id"].to_list() == ["health_red", "probability_drop"]


def test_health_red_opens_on_a_turn_and_holds_while_its_alert_is_open() -> None:
    scores = pl.DataFrame(
        {
            "deal_id": ["D1", "D2", "D3", "D4"],
            "win_probability": [0.1, 0.1, 0.1, 0.1],
            "health": ["red"] * 4,
        }
    )
    # D1 was yellow (turned); D2 red before with its alert open (holds); D3 red before and
    # never alerted (red since its first score); D4 new this run (no previous score)
    previous = pl.DataFrame(
        {"deal_id": ["D1", "D2", "D3"], "win_probability": [0.3, 0.1, 0.1]},
    ).with_columns(pl.Series("health", ["yellow", "red", "red"]))
    open_alerts = pl.DataFrame({"rule_id": ["health_red"], "subject_id": ["D2"]})
    frames = AlertFrames(deal_scores=scores, previous_deal_scores=previous)
    found = evaluate_rules([HealthRedRule()], frames, AS_OF, open_alerts=open_alerts)
    assert found.candidates["subject_id"].to_list() == ["D1", "D2"]
    assert found.candidates["message"][0] == "Deal D1 turned red: win probability 10%"
    first_run = AlertFrames(deal_scores=scores, previous_deal_scores=previous.clear())
    assert evaluate_rules([HealthRedRule()], first_run, AS_OF).candidates.height == 0


def _with_future(frames: AlertFrames) -> AlertFrames:
    """Every event table gets rows after as_of that would fire (or silence) rules if read."""
    later = AS_OF + timedelta(hours=1)

    def add(frame: pl.DataFrame | None, row: dict[str, object]) -> pl.DataFrame:
        assert frame is not None
        extra = pl.DataFrame([row], schema={c: frame.schema[c] for c in row})
        return pl.concat([frame, extra], how="diagonal_relaxed")

    return AlertFrames(
        deal_scores=frames.deal_scores,
        previous_deal_scores=frames.previous_deal_scores,
        deals=add(
            frames.deals, {"deal_id": "D9", "created_at": _t(1, month=1) + timedelta(days=200)}
        ),
        deal_stage_history=add(
            frames.deal_stage_history, {"deal_id": "D1", "stage": "proposal", "entered_at": later}
        ),
        activities=add(frames.activities, {"deal_id": "D1", "occurred_at": later}),
        demand_forecast=frames.demand_forecast,
        sales=add(frames.sales, {"ts": later, "customer_id": "C1", "sku": "S2", "quantity": 99.0}),
        inventory=add(
            frames.inventory, {"ts": later, "customer_id": "C1", "sku": "S1", "on_hand": 500.0}
        ),
        signals=add(frames.signals, {"ts": later, "name": "scans", "value": 1e6, "sku": "S1"}),
    )


def test_rows_after_as_of_change_nothing() -> None:
    now = evaluate_rules(RULES, _frames(), AS_OF, demand=DEMAND).candidates
    future = evaluate_rules(RULES, _with_future(_frames()), AS_OF, demand=DEMAND).candidates
    assert_frame_equal(now, future)


def test_default_rules_are_on_and_rule_ids_must_be_unique() -> None:
    kinds = [rule.kind for rule in AlertsSettings().rules]
    assert kinds == [
        "health_red",
        "probability_drop",
        "stage_dwell",
        "no_activity",
        "stock_promotion",
        "signal_drop",
    ]
    with pytest.raises(ValueError, match="repeated"):
        AlertsSettings(rules=[HealthRedRule(), HealthRedRule()])


def test_probability_drop_reads_deal_score_changes_when_no_previous_scores() -> None:
    frames = _frames()
    changes = pl.DataFrame(
        {"deal_id": ["D1", "D2"], "previous_probability": [0.30, None]},
        schema={"deal_id": pl.String, "previous_probability": pl.Float64},
    )
    only_changes = AlertFrames(deal_scores=frames.deal_scores, deal_score_changes=changes)
    found = evaluate_rules([ProbabilityDropRule(points=10)], only_changes, AS_OF)
    assert found.candidates.select("subject_id").to_series().to_list() == ["D1"]
    assert found.evaluated == frozenset({"probability_drop"})


def test_no_activity_is_not_evaluated_without_an_activity_log() -> None:
    frames = _frames()
    empty = frames.activities.clear() if frames.activities is not None else None
    for activities in (None, empty):
        crm_only = AlertFrames(deals=frames.deals, activities=activities)
        found = evaluate_rules([NoActivityRule()], crm_only, AS_OF)
        assert found.evaluated == frozenset() and found.candidates.height == 0
