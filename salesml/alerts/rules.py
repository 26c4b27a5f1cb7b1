"""Alert rules: typed rules from config -> the conditions that hold at `as_of`, as candidates.

Pure functions over polars frames. Each rule reads only what it needs from `AlertFrames` (what
the scoring or forecast run has at hand); a rule whose inputs are absent is *not evaluated* and
says so (`Evaluation.evaluated`), so a run that has no demand frames never resolves the stock
alerts a forecast run opened. Every input is cut at `as_of` (events with ts <= as_of), so a
re-run at a past as_of sees what was known then.

A candidate is (rule_id, kind, subject_type, subject_id, severity, message); the message is
for people and may change from run to run (days in stage grow), the identity never does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from salesml.config import (
    AlertRuleSettings,
    DealHealthRules,
    DemandSettings,
    HealthRedRule,
    NoActivityRule,
    ProbabilityDropRule,
    SignalDropRule,
    StageDwellRule,
    StockPromotionRule,
)
from salesml.contract import label_expr, normalise_label
from salesml.demand.health import latest_on_hand, safety_level, sales_growth
from salesml.timeutil import DATETIME

CANDIDATE_SCHEMA: dict[str, pl.DataType] = {
    "rule_id": pl.String(),
    "kind": pl.String(),
    "subject_type": pl.String(),
    "subject_id": pl.String(),
    "severity": pl.String(),
    "message": pl.String(),
}
"""The columns of `Evaluation.candidates` (one row per rule and subject whose condition holds)."""

MICROS_PER_DAY = 86_400_000_000
WEEK = timedelta(days=7)


@dataclass(frozen=True)
class AlertFrames:
    """What a run has at hand when it evaluates the rules; None = not available in this run.

    deal_scores: this run's scores (deal_id, win_probability, health; stage and days_in_stage
    when present). previous_deal_scores: each deal's previous score (deal_id, win_probability,
    health; an empty frame on the first scoring run); or else deal_score_changes (deal_id,
    previous_probability), which holds the probability but not the health.
    deals / deal_stage_history / activities: the canonical inputs. demand_forecast: this run's
    forecast rows (customer_id, sku, and `mean` or `expected` per bucket over the horizon).
    """

    deal_scores: pl.DataFrame | None = None
    previous_deal_scores: pl.DataFrame | None = None
    deal_score_changes: pl.DataFrame | None = None
    deals: pl.DataFrame | None = None
    deal_stage_history: pl.DataFrame | None = None
    activities: pl.DataFrame | None = None
    demand_forecast: pl.DataFrame | None = None
    sales: pl.DataFrame | None = None
    inventory: pl.DataFrame | None = None
    signals: pl.DataFrame | None = None


@dataclass(frozen=True)
class Evaluation:
    """The candidates of one evaluation and the ids of the rules that could be evaluated."""

    candidates: pl.DataFrame
    evaluated: frozenset[str]


OPEN_SCHEMA: dict[str, pl.DataType] = {"rule_id": pl.String(), "subject_id": pl.String()}
"""The open alerts a rule may need to know about (`evaluate_rules(open_alerts=)`)."""


@dataclass(frozen=True)
class _Context:
    as_of: datetime
    deal_rules: DealHealthRules
    demand: DemandSettings
    open_alerts: pl.DataFrame


def evaluate_rules(
    rules: Sequence[AlertRuleSettings],
    frames: AlertFrames,
    as_of: datetime,
    *,
    deal_rules: DealHealthRules | None = None,
    demand: DemandSettings | None = None,
    open_alerts: pl.DataFrame | None = None,
) -> Evaluation:
    """Every (rule, subject) whose condition holds at `as_of`, one row each (`CANDIDATE_SCHEMA`).

    deal_rules supplies the stage limits and no-activity days the deal health already uses;
    demand the safety-stock definition of `salesml.demand.health` (defaults when None).
    open_alerts: the alerts open before this run (rule_id, subject_id; None = none), for the
    rules whose condition is a change that then holds (health turned red, and is still red).
    """
    opened = pl.DataFrame(schema=OPEN_SCHEMA) if open_alerts is None else open_alerts
    context = _Context(
        as_of,
        deal_rules or DealHealthRules(),
        demand or DemandSettings(),
        opened.select(pl.col(c).cast(d) for c, d in OPEN_SCHEMA.items()),
    )
    found: list[pl.DataFrame] = []
    evaluated: set[str] = set()
    for rule in rules:
        conditions = _CONDITIONS[type(rule)](rule, frames, context)
        if conditions is None:
            continue
        evaluated.add(rule.rule_id)
        found.append(
            conditions.select(
                pl.lit(rule.rule_id).alias("rule_id"),
                pl.lit(rule.kind).alias("kind"),
                pl.col("subject_type").cast(pl.String),
                pl.col("subject_id").cast(pl.String),
                pl.lit(rule.severity).alias("severity"),
                pl.col("message").cast(pl.String),
            )
        )
    candidates = pl.concat(found) if found else pl.DataFrame(schema=CANDIDATE_SCHEMA)
    candidates = candidates.unique(["rule_id", "subject_type", "subject_id"], keep="first")
    return Evaluation(candidates.sort("rule_id", "subject_id"), frozenset(evaluated))


def _pct(expr: pl.Expr) -> pl.Expr:
    return (expr * 100).round(0).cast(pl.Int64).cast(pl.String)


def _whole(expr: pl.Expr) -> pl.Expr:
    return expr.floor().cast(pl.Int64).cast(pl.String)


def _deal_rows(ids: pl.Expr, message: pl.Expr) -> list[pl.Expr]:
    return [pl.lit("deal").alias("subject_type"), ids.alias("subject_id"), message.alias("message")]


def _health_red(rule: HealthRedRule, frames: AlertFrames, ctx: _Context) -> pl.DataFrame | None:
    """A scored deal whose health turned red since its previous score (previous health known
    and not red), and, while it stays red, a deal whose alert is open: opens the run it turns
    red, resolves when it is not. A deal red since its first score opens nothing (alerts are
    for changes; the red deals are in `deals_at_risk` and the report). Not evaluated without
    the previous scores' health.
    """
    scores, previous = frames.deal_scores, frames.previous_deal_scores
    if scores is None or previous is None or "health" not in previous.columns:
        return None
    before = previous.select("deal_id", pl.col("health").alias("_before"))
    still = ctx.open_alerts.filter(pl.col("rule_id") == rule.rule_id).select(
        pl.col("subject_id").alias("deal_id"), pl.lit(True).alias("_open")
    )
    turned = pl.col("_before").is_not_null() & (pl.col("_before") != "red")
    text = pl.format(
        "Deal {} turned red: win probability {}%", "deal_id", _pct(pl.col("win_probability"))
    )
    return (
        scores.join(before, on="deal_id", how="left")
        .join(still.unique("deal_id"), on="deal_id", how="left")
        .filter((pl.col("health") == "red") & (turned | pl.col("_open").fill_null(False)))
        .select(_deal_rows(pl.col("deal_id"), text))
    )


def _probability_drop(
    rule: ProbabilityDropRule, frames: AlertFrames, ctx: _Context
) -> pl.DataFrame | None:
    """Probability now below the deal's previous score by more than `points` (in points)."""
    scores, previous = frames.deal_scores, frames.previous_deal_scores
    if previous is not None:
        before = previous.select("deal_id", pl.col("win_probability").alias("before"))
    elif frames.deal_score_changes is not None:
        changes = frames.deal_score_changes.filter(pl.col("previous_probability").is_not_null())
        before = changes.select("deal_id", pl.col("previous_probability").alias("before"))
    else:
        return None
    if scores is None:
        return None
    joined = scores.select("deal_id", "win_probability").join(before, on="deal_id", how="inner")
    drop = (pl.col("before") - pl.col("win_probability")) * 100
    text = pl.format(
        "Deal {} fell {} points since the previous run ({}% -> {}%)",
        "deal_id",
        drop.round(0).cast(pl.Int64).cast(pl.String),
        _pct(pl.col("before")),
        _pct(pl.col("win_probability")),
    )
    return joined.filter(drop > rule.points + 1e-9).select(_deal_rows(pl.col("deal_id"), text))


def _open_deals(deals: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    """Deals created by as_of and not closed by then (a later close is the future)."""
    return deals.filter(
        (pl.col("created_at") <= as_of)
        & (pl.col("closed_at").is_null() | (pl.col("closed_at") > as_of))
    )


def _days_since(column: str, as_of: datetime) -> pl.Expr:
    micros = (pl.lit(as_of, DATETIME) - pl.col(column)).dt.total_microseconds()
    return micros / MICROS_PER_DAY


def _current_stage(frames: AlertFrames, as_of: datetime) -> pl.DataFrame | None:
    """(deal_id, stage, days_in_stage) of open deals at as_of: from the stage history when the
    run has it, else from this run's deal_scores (which computed the same at as_of).
    """
    history, deals = frames.deal_stage_history, frames.deals
    if history is not None and deals is not None:
        known = history.filter(pl.col("entered_at") <= as_of).sort("entered_at")
        last = known.group_by("deal_id").agg(pl.col("stage").last(), pl.col("entered_at").last())
        open_ids = _open_deals(deals, as_of).select("deal_id")
        return last.join(open_ids, on="deal_id", how="inner").select(
            "deal_id", "stage", _days_since("entered_at", as_of).alias("days_in_stage")
        )
    scores = frames.deal_scores
    if scores is not None and {"stage", "days_in_stage"} <= set(scores.columns):
        return scores.select("deal_id", pl.col("stage").cast(pl.String), "days_in_stage")
    return None


def _stage_dwell(rule: StageDwellRule, frames: AlertFrames, ctx: _Context) -> pl.DataFrame | None:
    """Days in the current stage over its limit (deals.health.rules.stage_limit_days + the rule's)."""
    stages = _current_stage(frames, ctx.as_of)
    if stages is None:
        return None
    limits = {normalise_label(k): float(v) for k, v in ctx.deal_rules.stage_limit_days.items()}
    limits.update({normalise_label(k): float(v) for k, v in rule.stage_limit_days.items()})
    table = pl.DataFrame(
        {"stage_key": list(limits), "limit_days": list(limits.values())},
        schema={"stage_key": pl.String, "limit_days": pl.Float64},
    )
    text = pl.format(
        "Deal {} has been in stage {} for {} days (limit {})",
        "deal_id",
        "stage",
        _whole(pl.col("days_in_stage")),
        pl.col("limit_days").round(1).cast(pl.String).str.strip_suffix(".0"),
    )
    return (
        stages.with_columns(stage_key=label_expr(pl.col("stage").cast(pl.String)))
        .join(table, on="stage_key", how="inner")
        .filter(pl.col("days_in_stage") > pl.col("limit_days"))
        .select(_deal_rows(pl.col("deal_id"), text))
    )


def _no_activity(rule: NoActivityRule, frames: AlertFrames, ctx: _Context) -> pl.DataFrame | None:
    """Days since the last activity on an open deal (since creation when none) over `days`.

    Not evaluated without an activity log (absent, or nothing logged by as_of): a CRM export
    without one would otherwise flag every deal older than `days`.
    """
    deals, acts = frames.deals, frames.activities
    if deals is None or acts is None:
        return None
    known = acts.filter(pl.col("occurred_at") <= ctx.as_of)
    if known.height == 0:
        return None
    limit = rule.days if rule.days is not None else float(ctx.deal_rules.no_activity_days)
    open_deals = _open_deals(deals, ctx.as_of).select("deal_id", "created_at")
    last = (
        known.filter(pl.col("deal_id").is_not_null())
        .group_by("deal_id")
        .agg(pl.col("occurred_at").max().alias("last_at"))
    )
    quiet = open_deals.join(last, on="deal_id", how="left").with_columns(
        since=pl.coalesce("last_at", "created_at")
    )
    days = _days_since("since", ctx.as_of)
    text = pl.format(
        "Deal {}: no activity for {} days (limit {})", "deal_id", _whole(days), pl.lit(f"{limit:g}")
    )
    return quiet.filter(days > limit).select(_deal_rows(pl.col("deal_id"), text))


def _stock_promotion(
    rule: StockPromotionRule, frames: AlertFrames, ctx: _Context
) -> pl.DataFrame | None:
    """On hand < safety level while 7-day sales rose >= min_growth over the 7 days before.

    Safety level as `salesml.demand.health` defines it: safety_stock_days x the mean daily
    forecast demand over the horizon (sum of the bucket means / horizon days). Growth needs
    sales in the week before (from nothing to something is not a rate).
    """
    forecast, inventory, sales = frames.demand_forecast, frames.inventory, frames.sales
    if forecast is None or inventory is None or sales is None:
        return None
    mean = "mean" if "mean" in forecast.columns else "expected"
    safety = forecast.group_by("customer_id", "sku").agg(
        safety_level(pl.col(mean).sum(), ctx.demand).alias("safety")
    )
    stock = latest_on_hand(inventory, ctx.as_of).drop("on_hand_at")
    growth = pl.col("growth")
    rows = (
        stock.join(safety, on=["customer_id", "sku"], how="inner")
        .join(sales_growth(sales, ctx.as_of), on=["customer_id", "sku"], how="inner")
        .filter(
            (pl.col("on_hand") < pl.col("safety"))
            & (pl.col("sold_before") > 0)
            & (growth >= rule.min_growth - 1e-12)
        )
    )
    subject = pl.format("{}/{}", "customer_id", "sku")
    text = pl.format(
        "SKU {} at {}: stock {} below safety level {} while 7-day sales rose {}% -> start a "
        "promotion",
        "sku",
        "customer_id",
        pl.col("on_hand").round(1).cast(pl.String),
        pl.col("safety").round(1).cast(pl.String),
        _pct(growth),
    )
    return rows.select(
        pl.lit("sku").alias("subject_type"), subject.alias("subject_id"), text.alias("message")
    )


def _signal_drop(rule: SignalDropRule, frames: AlertFrames, ctx: _Context) -> pl.DataFrame | None:
    """A signal's 7-day sum fell by >= min_drop vs the 7 days before, per scope (sku, customer,
    region; '*' where the signal is not scoped). Only values with ts <= as_of count (a planned,
    known-in-advance signal's future values are not observations).
    """
    signals = frames.signals
    if signals is None:
        return None
    scope = [c for c in ("sku", "customer_id", "region") if c in signals.columns]
    window = signals.filter(
        (pl.col("name") == rule.signal)
        & (pl.col("ts") > ctx.as_of - 2 * WEEK)
        & (pl.col("ts") <= ctx.as_of)
    ).with_columns(pl.col(c).cast(pl.String).fill_null("*") for c in scope)
    recent = pl.col("ts") > ctx.as_of - WEEK
    sums = window.group_by(scope or pl.lit("*").alias("_all")).agg(
        pl.col("value").filter(recent).sum().alias("recent"),
        pl.col("value").filter(~recent).sum().alias("before"),
    )
    change = pl.col("recent") / pl.col("before") - 1.0
    where = pl.concat_str([pl.lit(rule.signal), *(pl.col(c) for c in scope)], separator="|")
    text = pl.format(
        "Signal {} ({}) down {}% week on week ({} -> {})",
        pl.lit(rule.signal),
        pl.concat_str([pl.col(c) for c in scope], separator=", ") if scope else pl.lit("all"),
        _pct(-change),
        pl.col("before").round(1).cast(pl.String),
        pl.col("recent").round(1).cast(pl.String),
    )
    return sums.filter((pl.col("before") > 0) & (change <= -rule.min_drop + 1e-12)).select(
        pl.lit("signal").alias("subject_type"), where.alias("subject_id"), text.alias("message")
    )


_Condition = Callable[[object, AlertFrames, _Context], pl.DataFrame | None]
_CONDITIONS: dict[type, _Condition] = {
    HealthRedRule: _health_red,  # type: ignore[dict-item]
    ProbabilityDropRule: _probability_drop,  # type: ignore[dict-item]
    StageDwellRule: _stage_dwell,  # type: ignore[dict-item]
    NoActivityRule: _no_activity,  # type: ignore[dict-item]
    StockPromotionRule: _stock_promotion,  # type: ignore[dict-item]
    SignalDropRule: _signal_drop,  # type: ignore[dict-item]
}
"""Rule class -> its condition. Returns None when the run lacks the rule's inputs."""
