"""Red / yellow / green deal health: probability bands plus hygiene rules, each with a reason.

The bands (`HealthBands`) and the rules (`DealHealthRules`) are policy, not model: both come
from the current settings (`deals.health.bands`, `deals.health.rules`) at scoring time, whatever model
produced the probability (models no longer carry bands; a model pickled with them loads
without). The bands a training run was configured with are logged with its run
(`health_bands` param and artifact).

Rating: the band gives red (p < red_below), yellow, or green (p >= green_at_or_above). Then
each rule that fires is a reason: one or more rules firing caps the rating at yellow, and
`red_at_rules` or more make it red. Reasons are plain sentences in a JSON array, band reason
first ("win probability 14% (red below 20%)", "in proposal 23 days (limit 21)",
"no activity for 16 days", "expected close date passed 5 days ago",
"close date slipped 2 times").

Input columns (from `features.build_features` plus the score): win_probability, stage,
days_in_stage, days_since_last_activity, age_days, days_to_expected_close, close_date_slips.
"""

from __future__ import annotations

import polars as pl

from salesml.config import DealHealthRules, HealthBands
from salesml.contract import normalise_label
from salesml.jsonutil import json_text


def _percent(expr: pl.Expr) -> pl.Expr:
    return (expr * 100).round(0).cast(pl.Int64).cast(pl.String) + pl.lit("%")


def _whole(expr: pl.Expr) -> pl.Expr:
    return expr.floor().cast(pl.Int64).cast(pl.String)


def _days(count: pl.Expr) -> pl.Expr:
    """'1 day' / '16 days' for a whole number of days."""
    return pl.when(count == 1).then(pl.lit("1 day")).otherwise(count.cast(pl.String) + " days")


def band_level(probability: pl.Expr, bands: HealthBands) -> pl.Expr:
    """0 = red, 1 = yellow, 2 = green, from the probability alone."""
    return (
        pl.when(probability < bands.red_below)
        .then(0)
        .when(probability >= bands.green_at_or_above)
        .then(2)
        .otherwise(1)
    )


def rule_reasons(rules: DealHealthRules, activity_log: bool = True) -> list[pl.Expr]:
    """One expression per rule: its sentence when it fires, else null.

    Without an activity log (`activity_log=False`, a CRM-only export) "no activity for N days"
    cannot be known, so that rule never fires rather than firing on every deal's age.
    """
    by_stage = {normalise_label(k): v for k, v in rules.stage_limit_days.items()}  # as in data
    limits = pl.DataFrame(
        {
            "stage": list(by_stage),
            "limit": list(by_stage.values()),
        },
        schema={"stage": pl.String, "limit": pl.Int64},
    )
    limit = pl.col("stage").replace_strict(
        limits["stage"], limits["limit"], default=None, return_dtype=pl.Int64
    )
    days_quiet = pl.coalesce(pl.col("days_since_last_activity"), pl.col("age_days"))
    stage_rule = (
        pl.when(pl.col("days_in_stage") > limit)
        .then(
            pl.format(
                "in {} {} (limit {})",
                pl.col("stage"),
                _days(pl.col("days_in_stage").floor().cast(pl.Int64)),
                limit,
            )
        )
        .otherwise(None)
    )
    quiet_rule = (
        pl.when(days_quiet >= rules.no_activity_days)
        .then(pl.format("no activity for {}", _days(days_quiet.floor().cast(pl.Int64))))
        .otherwise(None)
    )
    passed_rule = (
        pl.when(pl.col("days_to_expected_close") < 0)
        .then(
            pl.format(
                "expected close date passed {} ago",
                _days((-pl.col("days_to_expected_close")).ceil().cast(pl.Int64)),
            )
        )
        .otherwise(None)
    )
    slip_rule = (
        pl.when(pl.col("close_date_slips") >= rules.max_close_date_slips)
        .then(pl.format("close date slipped {} times", _whole(pl.col("close_date_slips"))))
        .otherwise(None)
    )
    if not activity_log:
        return [stage_rule, passed_rule, slip_rule]
    return [stage_rule, quiet_rule, passed_rule, slip_rule]


def rate_health(
    frame: pl.DataFrame, bands: HealthBands, rules: DealHealthRules, activity_log: bool = True
) -> pl.DataFrame:
    """`frame` plus health (red/yellow/green), health_reasons (JSON array), rules_fired.

    activity_log: whether the inputs had an activity log (see `rule_reasons`).

    Rows with a null win_probability (not scored) get null health and null reasons.
    """
    p = pl.col("win_probability")
    band = band_level(p, bands)
    band_reason = (
        pl.when(band == 0)
        .then(
            pl.format(
                "win probability {} (red below {})", _percent(p), _percent(pl.lit(bands.red_below))
            )
        )
        .when(band == 1)
        .then(
            pl.format(
                "win probability {} (green from {})",
                _percent(p),
                _percent(pl.lit(bands.green_at_or_above)),
            )
        )
        .otherwise(None)
    )
    rule_exprs = rule_reasons(rules, activity_log)
    fired = pl.sum_horizontal([r.is_not_null().cast(pl.Int64) for r in rule_exprs])
    level = (
        pl.when(fired >= rules.red_at_rules)
        .then(0)
        .when(fired >= 1)
        .then(pl.min_horizontal(band, pl.lit(1)))
        .otherwise(band)
    )
    reasons = pl.concat_list([band_reason, *rule_exprs]).list.drop_nulls()
    scored = p.is_not_null()
    return frame.with_columns(
        pl.when(scored)
        .then(level.replace_strict({0: "red", 1: "yellow", 2: "green"}, return_dtype=pl.String))
        .otherwise(None)
        .alias("health"),
        pl.when(scored).then(json_text(reasons)).otherwise(None).alias("health_reasons"),
        fired.cast(pl.Int64).alias("rules_fired"),
    )
