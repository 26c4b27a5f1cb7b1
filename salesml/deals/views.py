"""Rep and region views of one scoring run: `health_overview`, `deals_at_risk`, `rep_health`.

Pure functions the score job calls after `scoring.score_open_deals`, with `current` = the
`deal_scores` frame it is about to write (deal_id, win_probability, health; stage and
days_in_stage for the stalled share), `previous` = the previous run's `deal_scores` rows from the
warehouse (None or empty on the first run) and `tables` = the input tables (deals with
`deals.lost_after_days` applied; `activities` optional)::

    overview = health_overview(result.scores, prev_scores, tables["deals"])
    at_risk = deals_at_risk(result.scores, prev_scores, tables["deals"])
    views = settings.deal_views
    reps = rep_health(result.scores, tables, as_of, horizon_days=settings.deals.label_horizon_days,
                      rules=settings.deals.health.rules, window_days=views.rep_window_days,
                      prior_deals=views.rep_prior_deals, target_coverage=views.target_coverage)

Point in time: closes after as_of are hidden (`snapshots.deals_known_at`) and activities after
as_of are ignored, so rewriting the future leaves every view unchanged. Money is in the deals'
amount unit; expected revenue of a deal = amount x win_probability (a null amount counts 0).
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from salesml import contract
from salesml.config import DealHealthRules, DealViewsSettings
from salesml.contract import normalise_label
from salesml.deals.snapshots import MICROS_PER_DAY, deals_known_at
from salesml.jsonutil import json_text
from salesml.timeutil import DATETIME

UNKNOWN = "unknown"
ALL = "all"
_DEFAULTS = DealViewsSettings()
WIN_RATE_WINDOW_DAYS = _DEFAULTS.rep_window_days
"""Rep win rate and won run-rate look at deals closed in the last this many days before as_of."""
PRIOR_DEALS = _DEFAULTS.rep_prior_deals
"""A rep's win rate is shrunk to the peers' by this many pseudo-deals (few closes: near peers)."""
TARGET_COVERAGE = _DEFAULTS.target_coverage
"""Pipeline coverage that scores full marks: expected open revenue equal to the won run-rate."""
OVERVIEW_COLUMNS = contract.row_dtypes("health_overview")
AT_RISK_COLUMNS = contract.row_dtypes("deals_at_risk")
REP_COLUMNS = contract.row_dtypes("rep_health")


def risk_values(
    current: pl.DataFrame, previous: pl.DataFrame | None, deals: pl.DataFrame
) -> pl.DataFrame:
    """Every scored deal with owner_id, region, amount, previous_probability, value_at_risk,
    risk_basis.

    With a previous run: value at risk = amount x probability lost since then (0 for a deal that
    rose or is new); on the first run: amount x (1 - p). Nulls: amount 0, region/owner 'unknown'.
    """
    has_previous = previous is not None and previous.height > 0
    before = (
        previous.select("deal_id", pl.col("win_probability").alias("previous_probability"))
        if previous is not None and has_previous
        else pl.DataFrame(schema={"deal_id": pl.String, "previous_probability": pl.Float64})
    )
    p = pl.col("win_probability")
    amount = pl.col("amount").fill_null(0.0)
    value = (
        amount * (pl.col("previous_probability") - p).clip(lower_bound=0.0).fill_null(0.0)
        if has_previous
        else amount * (1.0 - p)
    )
    drop, unlikely = contract.RISK_BASES
    basis = drop if has_previous else unlikely
    return (
        current.filter(p.is_not_null())
        .select("deal_id", p.cast(pl.Float64), "health")
        .join(before, on="deal_id", how="left")
        .join(_attributes(deals), on="deal_id", how="left")
        .with_columns(
            pl.col("owner_id", "region").fill_null(UNKNOWN),
            pl.col("previous_probability").cast(pl.Float64),
            value.alias("value_at_risk"),
            pl.lit(basis).alias("risk_basis"),
        )
        .sort("deal_id")  # sums in one order, whatever the input order
    )


def _attributes(deals: pl.DataFrame) -> pl.DataFrame:
    return deals.select(
        "deal_id",
        pl.col("owner_id").cast(pl.String),
        (pl.col("region") if "region" in deals.columns else pl.lit(None)).cast(pl.String),
        (pl.col("amount") if "amount" in deals.columns else pl.lit(None)).cast(pl.Float64),
    )


def deals_at_risk(
    current: pl.DataFrame,
    previous: pl.DataFrame | None,
    deals: pl.DataFrame,
    limit: int | None = None,
) -> pl.DataFrame:
    """Deals with a positive value at risk (`risk_values`), rank 1 = largest; ties by deal_id."""
    ranked = (
        risk_values(current, previous, deals)
        .filter(pl.col("value_at_risk") > 0)
        .sort(["value_at_risk", "deal_id"], descending=[True, False])
        .with_row_index("rank", offset=1)
    )
    if limit is not None:
        ranked = ranked.head(limit)
    return ranked.select([pl.col(c).cast(t) for c, t in AT_RISK_COLUMNS.items()])


def health_overview(
    current: pl.DataFrame, previous: pl.DataFrame | None, deals: pl.DataFrame
) -> pl.DataFrame:
    """Counts by colour, open amount, expected revenue and value at risk of the open scored
    deals, for dimension 'all' (member 'all'), each region and each owner.
    """
    values = risk_values(current, previous, deals)
    aggregates = [
        pl.len().cast(pl.Int64).alias("open_deals"),
        *(
            (pl.col("health") == c).sum().cast(pl.Int64).alias(f"n_{c}")
            for c in contract.HEALTH_VALUES
        ),
        pl.col("amount").fill_null(0.0).sum().alias("open_amount"),
        (pl.col("amount").fill_null(0.0) * pl.col("win_probability"))
        .sum()
        .alias("expected_revenue"),
        pl.col("value_at_risk").sum().alias("at_risk_value"),
    ]
    parts = [
        values.group_by(pl.lit(ALL).alias("member"))
        .agg(aggregates)
        .with_columns(pl.lit(ALL).alias("dimension")),
        *(
            values.group_by(pl.col(column).alias("member"))
            .agg(aggregates)
            .with_columns(pl.lit(dimension).alias("dimension"))
            for dimension, column in zip(
                contract.VIEW_DIMENSIONS[1:], ("region", "owner_id"), strict=True
            )
        ),
    ]
    return (
        pl.concat(parts, how="diagonal_relaxed")
        .select([pl.col(c).cast(t) for c, t in OVERVIEW_COLUMNS.items()])
        .sort("dimension", "member")
    )


def rep_health(
    current: pl.DataFrame,
    tables: dict[str, pl.DataFrame],
    as_of: datetime,
    *,
    horizon_days: int,
    rules: DealHealthRules,
    window_days: int = WIN_RATE_WINDOW_DAYS,
    prior_deals: float = PRIOR_DEALS,
    target_coverage: float = TARGET_COVERAGE,
) -> pl.DataFrame:
    """A 0-100 health index per rep (owner) with an open deal now or a close in the window.

    Four driver scores in [0, 1], averaged with equal weights over those that are known:
    win rate vs peers (0.5 + shrunk rate - peers' rate, peers = the other reps, deals closed in
    the last `window_days`); pipeline coverage (open expected revenue / won run-rate, the won
    revenue of the window scaled to `horizon_days`, the horizon of the probabilities; divided by
    `target_coverage`, capped at 1; open pipeline with no wins scores 1); activity recency
    (1 - days since the rep's last activity / `rules.no_activity_days`, floored at 0; unknown
    without an activity log); stalled deals (1 - share of open deals longer in their stage than
    `rules.stage_limit_days`). Each score rises with its driver, so the index does too.
    """
    deals = deals_known_at(tables["deals"], as_of)
    wins = _win_rates(deals, as_of, window_days, prior_deals)
    pipeline = _pipeline(current, deals, rules)
    activity = _last_activity(tables.get("activities"), deals, as_of)
    reps = (
        pl.concat([wins.select("owner_id"), pipeline.select("owner_id")])
        .unique()
        .join(wins, on="owner_id", how="left")
        .join(pipeline, on="owner_id", how="left")
        .join(activity, on="owner_id", how="left")
        .with_columns(
            pl.col("closed_deals", "open_deals").fill_null(0),
            pl.col("won_revenue", "open_expected_revenue").fill_null(0.0),
            pl.col("peer_win_rate").fill_null(
                pl.lit(_overall_rate(deals, as_of, window_days), pl.Float64)
            ),
        )
        .with_columns(
            (pl.col("won_revenue") * horizon_days / window_days).alias("won_run_rate"),
        )
        .with_columns(
            pl.when(pl.col("won_run_rate") > 0)
            .then(pl.col("open_expected_revenue") / pl.col("won_run_rate"))
            .alias("pipeline_coverage")
        )
    )
    index = _health_index(rules.no_activity_days, target_coverage, activity.height > 0)
    return (
        reps.with_columns(index.alias("health_index"), _drivers(window_days).alias("drivers"))
        .select([pl.col(c).cast(t) for c, t in REP_COLUMNS.items()])
        .sort("owner_id")
    )


def _health_index(quiet_days: float, target_coverage: float, activity_log: bool) -> pl.Expr:
    """100 x the mean of the known driver scores in [0, 1] (see `rep_health`)."""
    scores = [
        (0.5 + pl.col("win_rate") - pl.col("peer_win_rate")).clip(0.0, 1.0),
        pl.when(pl.col("pipeline_coverage").is_not_null())
        .then((pl.col("pipeline_coverage") / target_coverage).clip(0.0, 1.0))
        .otherwise((pl.col("open_expected_revenue") > 0).cast(pl.Float64)),
        # with an activity log, a rep with no activity at all scores 0; without one, unknown
        pl.when(pl.lit(activity_log) & pl.col("days_since_activity").is_null())
        .then(0.0)
        .otherwise((1.0 - pl.col("days_since_activity") / quiet_days).clip(0.0, 1.0)),
        1.0 - pl.col("stalled_share"),
    ]
    known = pl.sum_horizontal(s.is_not_null().cast(pl.Float64) for s in scores)
    return 100.0 * pl.sum_horizontal(s.fill_null(0.0) for s in scores) / known


def _closed_in_window(deals: pl.DataFrame, as_of: datetime, window_days: int) -> pl.DataFrame:
    """Deals closed in (as_of - window_days, as_of] with _won (1 won, 0 lost)."""
    start = pl.lit(as_of, DATETIME) - pl.duration(days=window_days)
    return (
        deals.filter(pl.col("closed_at").is_not_null() & (pl.col("closed_at") > start))
        .select(
            "deal_id",
            "owner_id",
            "amount",
            (pl.col("outcome") == "won").cast(pl.Int64).alias("_won"),
        )
        .sort("deal_id")
    )


def _overall_rate(deals: pl.DataFrame, as_of: datetime, window_days: int) -> float | None:
    """Everyone's win rate in the window (the peers of a rep with no close); None if no close."""
    won = _closed_in_window(deals, as_of, window_days).get_column("_won")
    return float(won.mean()) if won.len() else None  # type: ignore[arg-type]


def _win_rates(
    deals: pl.DataFrame, as_of: datetime, window_days: int, prior_deals: float
) -> pl.DataFrame:
    """Per owner with a close in the window: closed_deals, won_revenue, win_rate shrunk to
    peer_win_rate (the other reps' rate; everyone's when the rep is alone).
    """
    closed = _closed_in_window(deals, as_of, window_days)
    per_rep = closed.group_by(pl.col("owner_id").cast(pl.String).fill_null(UNKNOWN)).agg(
        pl.len().cast(pl.Int64).alias("closed_deals"),
        pl.col("_won").sum().alias("_won"),
        (pl.col("amount").cast(pl.Float64).fill_null(0.0) * pl.col("_won"))
        .sum()
        .alias("won_revenue"),
    )
    total_won, total_closed = pl.col("_won").sum(), pl.col("closed_deals").sum()
    others = total_closed - pl.col("closed_deals")
    peers = (
        pl.when(others > 0)
        .then((total_won - pl.col("_won")) / others)
        .otherwise(total_won / total_closed)
    )
    return (
        per_rep.with_columns(peers.alias("peer_win_rate"))
        .with_columns(
            (
                (pl.col("_won") + prior_deals * pl.col("peer_win_rate"))
                / (pl.col("closed_deals") + prior_deals)
            ).alias("win_rate")
        )
        .drop("_won")
    )


def _pipeline(current: pl.DataFrame, deals: pl.DataFrame, rules: DealHealthRules) -> pl.DataFrame:
    """Per owner with an open scored deal: open_deals, open_expected_revenue, stalled_share
    (null when the scores carry no stage or days_in_stage).
    """
    limits = {normalise_label(k): float(v) for k, v in rules.stage_limit_days.items()}
    has_stage = {"stage", "days_in_stage"} <= set(current.columns)
    stalled = (
        (
            pl.col("days_in_stage")
            > pl.col("stage")
            .cast(pl.String)
            .replace_strict(limits, default=None, return_dtype=pl.Float64)
        ).fill_null(False)
        if has_stage
        else pl.lit(None, pl.Boolean)
    )
    return (
        current.filter(pl.col("win_probability").is_not_null())
        .join(_attributes(deals), on="deal_id", how="left")
        .group_by(pl.col("owner_id").fill_null(UNKNOWN))
        .agg(
            pl.len().cast(pl.Int64).alias("open_deals"),
            (pl.col("amount").fill_null(0.0) * pl.col("win_probability"))
            .sum()
            .alias("open_expected_revenue"),
            stalled.cast(pl.Float64).mean().alias("stalled_share"),
        )
    )


def _last_activity(
    activities: pl.DataFrame | None, deals: pl.DataFrame, as_of: datetime
) -> pl.DataFrame:
    """(owner_id, days_since_activity): days from the rep's latest activity on any of their
    deals (at or before as_of) to as_of; no row without an activity log.
    """
    if activities is None or activities.height == 0:
        return pl.DataFrame(schema={"owner_id": pl.String, "days_since_activity": pl.Float64})
    at = pl.lit(as_of, DATETIME)
    return (
        activities.filter(pl.col("occurred_at") <= at)
        .join(deals.select("deal_id", pl.col("owner_id").cast(pl.String)), on="deal_id")
        .group_by("owner_id")
        .agg(pl.col("occurred_at").max().alias("_last"))
        .select(
            "owner_id",
            ((at - pl.col("_last")).dt.total_microseconds() / MICROS_PER_DAY).alias(
                "days_since_activity"
            ),
        )
    )


def _percent(expr: pl.Expr) -> pl.Expr:
    return (expr * 100).round(0).cast(pl.Int64).cast(pl.String) + pl.lit("%")


def _drivers(window_days: int) -> pl.Expr:
    """The four drivers in plain words, as a JSON array (always four sentences)."""
    win = (
        pl.when(pl.col("closed_deals") > 0)
        .then(
            pl.format(
                "win rate {} over the last {} days vs {} for peers ({} deals closed)",
                _percent(pl.col("win_rate")),
                pl.lit(window_days),
                _percent(pl.col("peer_win_rate")),
                pl.col("closed_deals"),
            )
        )
        .otherwise(pl.lit(f"no deals closed in the last {window_days} days"))
    )
    coverage = (
        pl.when(pl.col("pipeline_coverage").is_not_null())
        .then(
            pl.format(
                "pipeline coverage {}x the won run-rate",
                pl.col("pipeline_coverage").round(1).cast(pl.String),
            )
        )
        .when(pl.col("open_expected_revenue") > 0)
        .then(pl.lit(f"open pipeline but no won revenue in the last {window_days} days"))
        .otherwise(pl.lit("no open pipeline"))
    )
    days = pl.col("days_since_activity").floor().cast(pl.Int64)
    recency = (
        pl.when(days.is_null())
        .then(pl.lit("no activity recorded"))
        .when(days == 1)
        .then(pl.lit("last activity 1 day ago"))
        .otherwise(pl.format("last activity {} days ago", days))
    )
    stalled = (
        pl.when(pl.col("open_deals") == 0)
        .then(pl.lit("no open deals"))
        .when(pl.col("stalled_share").is_null())
        .then(pl.lit("stalled deals unknown (no stage data)"))
        .otherwise(
            pl.format(
                "{} of {} open deals stalled past their stage limit",
                (pl.col("stalled_share") * pl.col("open_deals")).round(0).cast(pl.Int64),
                pl.col("open_deals"),
            )
        )
    )
    return json_text(pl.concat_list([win, coverage, recency, stalled]))
