"""Deal health: bands and each rule, with its plain reason."""

from __future__ import annotations

import json

import polars as pl
import pytest

from salesml.config import DealHealthRules, HealthBands
from salesml.deals.health import rate_health
from salesml.deals.scoring import score_open_deals
from salesml.deals.training import TrainingResult
from tests.deals.conftest import AS_OF

QUIET = {
    "stage": "discovery",
    "days_in_stage": 3.0,
    "days_since_last_activity": 1.0,
    "age_days": 10.0,
    "days_to_expected_close": 20.0,
    "close_date_slips": 0.0,
}


def rate(
    p: float | None, rules: DealHealthRules | None = None, **changes: object
) -> tuple[str, list[str]]:
    row = {"win_probability": p, **QUIET, **changes}
    frame = pl.DataFrame([row], schema_overrides={"win_probability": pl.Float64})
    out = rate_health(
        frame, HealthBands(red_below=0.2, green_at_or_above=0.5), rules or DealHealthRules()
    )
    health, reasons = out.row(0)[-3], out.row(0)[-2]
    return health, json.loads(reasons) if reasons is not None else []


@pytest.mark.parametrize(
    ("p", "health"),
    [(0.1, "red"), (0.2, "yellow"), (0.49, "yellow"), (0.5, "green"), (0.9, "green")],
)
def test_bands_alone(p: float, health: str) -> None:
    got, reasons = rate(p)
    assert got == health
    assert (reasons == []) == (health == "green")


def test_days_in_stage_over_its_limit() -> None:
    health, reasons = rate(0.8, stage="proposal", days_in_stage=23.4)
    assert health == "yellow"
    assert reasons == ["in proposal 23 days (limit 21)"]
    assert rate(0.8, stage="proposal", days_in_stage=21.0)[0] == "green"
    assert rate(0.8, stage="unlisted stage", days_in_stage=500.0)[0] == "green"


def test_no_activity_for_n_days_counts_from_creation_without_any_activity() -> None:
    assert rate(0.8, days_since_last_activity=16.7)[1] == ["no activity for 16 days"]
    assert rate(0.8, days_since_last_activity=None, age_days=30.0)[1] == ["no activity for 30 days"]
    assert rate(0.8, days_since_last_activity=13.9)[0] == "green"


def test_expected_close_date_passed() -> None:
    assert rate(0.8, days_to_expected_close=-4.2)[1] == ["expected close date passed 5 days ago"]
    assert rate(0.8, days_to_expected_close=-0.5)[1] == ["expected close date passed 1 day ago"]


def test_close_date_slipped_too_often() -> None:
    assert rate(0.8, close_date_slips=2.0)[1] == ["close date slipped 2 times"]
    assert rate(0.8, close_date_slips=1.0)[0] == "green"
    strict = DealHealthRules(max_close_date_slips=1)
    assert rate(0.8, strict, close_date_slips=1.0)[0] == "yellow"


def test_enough_rules_make_a_deal_red_and_reasons_start_with_the_band() -> None:
    health, reasons = rate(0.35, close_date_slips=3.0, days_to_expected_close=-2.0)
    assert health == "red"
    assert reasons[0] == "win probability 35% (green from 50%)"
    assert len(reasons) == 3
    assert (
        rate(
            0.9, DealHealthRules(red_at_rules=3), close_date_slips=3.0, days_to_expected_close=-2.0
        )[0]
        == "yellow"
    )


def test_unscored_deal_has_no_health() -> None:
    assert rate(None) == (None, [])


def test_without_an_activity_log_no_activity_never_fires() -> None:
    """CRM-only exports have no activities: "no activity for N days" would fire on every old
    deal's age, so it is off; the other rules still fire."""
    frame = pl.DataFrame(
        {
            "win_probability": [0.6],
            "stage": ["proposal"],
            "days_in_stage": [40.0],
            "days_since_last_activity": [None],
            "age_days": [90.0],
            "days_to_expected_close": [5.0],
            "close_date_slips": [0],
        },
        schema_overrides={"days_since_last_activity": pl.Float64},
    )
    bands, rules = HealthBands(), DealHealthRules()
    with_log = rate_health(frame, bands, rules)["health_reasons"][0]
    without = rate_health(frame, bands, rules, activity_log=False)["health_reasons"][0]
    assert "no activity for" in with_log
    assert "no activity for" not in without
    assert "in proposal" in without


def test_scoring_applies_the_bands_of_the_settings_not_of_the_model(
    small_world: dict[str, pl.DataFrame], trained: TrainingResult
) -> None:
    """Bands are policy: the same model rates its deals by whatever bands scoring is given."""
    no_red_rule = DealHealthRules(red_at_rules=99)
    strict = HealthBands(red_below=0.999, green_at_or_above=0.9995)
    lenient = HealthBands(red_below=0.0, green_at_or_above=0.001)
    rated = {}
    for name, bands in (("strict", strict), ("lenient", lenient), ("default", None)):
        scores = score_open_deals(
            trained.model, small_world, AS_OF, min_open_days=5.0, rules=no_red_rule, bands=bands
        ).scores
        rated[name] = scores.filter(pl.col("score_basis") == "model")
    assert rated["strict"].height > 0
    assert (rated["strict"]["health"] == "red").all()
    # no rule is red on its own here: only the bands decide between red and the rest
    assert (rated["lenient"]["health"] != "red").all()
    default = HealthBands()
    p = rated["default"]["win_probability"]
    assert ((rated["default"]["health"] == "red") == (p < default.red_below)).all()
