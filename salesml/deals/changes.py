"""What changed since the previous scoring run: per deal (`deal_score_changes`) and per period
(`pipeline_changes`, a waterfall of expected revenue).

Both are pure functions the score job calls after `scoring.score_open_deals`, with:

- `current`: the `deal_scores` frame it is about to write (deal_id, win_probability);
- `previous`: the `deal_scores` rows of the previous run (the latest as_of before this one with
  a score), read from the warehouse; `previous_as_of` that run's as_of (None: no previous run);
- `current_factors` / `previous_factors`: `deal_score_factors` of both runs (deal_id, feature,
  contribution);
- `tables`: the input tables as the job has them (deals with `deals.lost_after_days` applied;
  `deal_close_date_history` optional). Rows after as_of are ignored (`snapshots.deals_known_at`,
  history changes after each run's as_of), so nothing after as_of is read.

Call (in the score job, once the previous run's rows are read)::

    views = settings.deal_views
    changes = deal_score_changes(result.scores, prev_scores, result.factors, prev_factors,
                                 tables["deals"], as_of, prev_as_of,
                                 unchanged_below_points=views.unchanged_below_points,
                                 top_drivers=views.moved_drivers)
    waterfall = pipeline_changes(result.scores, prev_scores, tables, as_of, prev_as_of,
                                 timezone=settings.timezone)

Probabilities are fractions (0..1); `delta` is in the same unit (0.05 = 5 points).
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from salesml import contract
from salesml.config import DealViewsSettings
from salesml.deals.snapshots import deals_known_at, expected_close_in_force
from salesml.jsonutil import json_text
from salesml.timeutil import DATETIME

_DEFAULTS = DealViewsSettings()
UNCHANGED_BELOW_POINTS = _DEFAULTS.unchanged_below_points
"""|delta| below this many probability points is 'unchanged' (default half a point: smaller
moves come from a re-fitted base rate or calibration, not from the deal)."""
TOP_MOVED_DRIVERS = _DEFAULTS.moved_drivers
CHANGE_KINDS = contract.CHANGE_KINDS
"""'gone': scored in the previous run, but neither open nor closed now (the deal left the source)."""
WATERFALL_STEPS = contract.WATERFALL_STEPS
"""Waterfall steps in display order; start + the six middle steps == end (up to float rounding)."""
CHANGE_COLUMNS = contract.row_dtypes("deal_score_changes")
WATERFALL_COLUMNS = contract.row_dtypes("pipeline_changes")


def deal_score_changes(
    current: pl.DataFrame,
    previous: pl.DataFrame,
    current_factors: pl.DataFrame,
    previous_factors: pl.DataFrame,
    deals: pl.DataFrame,
    as_of: datetime,
    previous_as_of: datetime | None,
    *,
    unchanged_below_points: float = UNCHANGED_BELOW_POINTS,
    top_drivers: int = TOP_MOVED_DRIVERS,
) -> pl.DataFrame:
    """One row per deal scored now or in the previous run (CHANGE_COLUMNS).

    delta = win_probability - previous_probability exactly (null for new and closed deals);
    up / down / unchanged by `unchanged_below_points` (|delta| * 100); a previously scored deal that is not scored now
    is closed_won / closed_lost from `deals` (closed_at <= as_of), else 'gone'.
    Rows of `previous` with a null probability are not scores and are ignored. moved_drivers
    compares both runs' factors (`moved_drivers`); a new deal lists its largest factors now,
    a closed one its largest before (the other side counts 0), base-rate deals '[]'.
    """
    now = current.filter(pl.col("win_probability").is_not_null()).select(
        "deal_id", pl.col("win_probability").cast(pl.Float64)
    )
    before = previous.filter(pl.col("win_probability").is_not_null()).select(
        "deal_id", pl.col("win_probability").cast(pl.Float64).alias("previous_probability")
    )
    closed = deals_known_at(deals, as_of).select("deal_id", "outcome")
    delta = pl.col("win_probability") - pl.col("previous_probability")
    kind = (
        pl.when(pl.col("previous_probability").is_null())
        .then(pl.lit("new"))
        .when(pl.col("win_probability").is_null() & (pl.col("outcome") == "won"))
        .then(pl.lit("closed_won"))
        .when(pl.col("win_probability").is_null() & (pl.col("outcome") == "lost"))
        .then(pl.lit("closed_lost"))
        .when(pl.col("win_probability").is_null())
        .then(pl.lit("gone"))
        .when(delta.abs() * 100 < unchanged_below_points)
        .then(pl.lit("unchanged"))
        .when(delta > 0)
        .then(pl.lit("up"))
        .otherwise(pl.lit("down"))
    )
    moved = moved_drivers(current_factors, previous_factors, top_drivers)
    return (
        now.join(before, on="deal_id", how="full", coalesce=True)
        .join(closed, on="deal_id", how="left")
        .join(moved, on="deal_id", how="left")
        .with_columns(
            pl.lit(previous_as_of, DATETIME).alias("previous_as_of"),
            delta.alias("delta"),
            kind.alias("change_kind"),
            pl.col("moved_drivers").fill_null("[]"),
        )
        .select([pl.col(c).cast(t) for c, t in CHANGE_COLUMNS.items()])
        .sort("deal_id")
    )


def moved_drivers(
    current_factors: pl.DataFrame, previous_factors: pl.DataFrame, top: int = TOP_MOVED_DRIVERS
) -> pl.DataFrame:
    """(deal_id, moved_drivers): JSON array of the `top` features whose SHAP contribution moved
    most, [{"feature", "before", "after"}] in the factors' unit (log-odds).

    A feature absent from one run's factors counts as 0 there (the factor tables keep only each
    deal's top k, so 'absent' means 'small'). Ties go to the feature name; unmoved features are
    left out.
    """

    def side(frame: pl.DataFrame, name: str) -> pl.DataFrame:
        return frame.group_by(
            pl.col("deal_id").cast(pl.String), pl.col("feature").cast(pl.String)
        ).agg(pl.col("contribution").cast(pl.Float64).sum().alias(name))

    both = side(previous_factors, "before").join(
        side(current_factors, "after"), on=["deal_id", "feature"], how="full", coalesce=True
    )
    return (
        both.with_columns(pl.col("before").fill_null(0.0), pl.col("after").fill_null(0.0))
        .with_columns((pl.col("after") - pl.col("before")).abs().alias("_moved"))
        .filter(pl.col("_moved") > 0)
        .sort(["deal_id", "_moved", "feature"], descending=[False, True, False])
        .group_by("deal_id", maintain_order=True)
        .agg(pl.struct("feature", "before", "after").head(top).alias("_drivers"))
        .select("deal_id", json_text(pl.col("_drivers")).alias("moved_drivers"))
    )


def period_labels(as_of: datetime, timezone: str = "UTC") -> tuple[str, str]:
    """(month, quarter) labels of `as_of` in `timezone`, e.g. ('2024-07', '2024-Q3')."""
    frame = pl.DataFrame({"t": [as_of]}, schema={"t": DATETIME}).select(
        _month(pl.col("t"), timezone), _quarter(pl.col("t"), timezone)
    )
    month, quarter = frame.row(0)
    return str(month), str(quarter)


def _month(local_time: pl.Expr, timezone: str) -> pl.Expr:
    return local_time.dt.convert_time_zone(timezone).dt.strftime("%Y-%m").alias("month")


def _quarter(local_time: pl.Expr, timezone: str) -> pl.Expr:
    local = local_time.dt.convert_time_zone(timezone)
    return pl.format("{}-Q{}", local.dt.year(), local.dt.quarter()).alias("quarter")


def expected_close_at(
    deal_ids: pl.DataFrame, tables: dict[str, pl.DataFrame], at: datetime
) -> pl.DataFrame:
    """(deal_id, expected_close_at) as known at `at`: the latest `deal_close_date_history`
    change at or before `at` (several at one instant: the latest date), else the deal's
    `deals.expected_close_at`: `snapshots.expected_close_in_force`, the features' rule.
    """
    known = deal_ids.select(pl.col("deal_id").cast(pl.String)).join(
        tables["deals"].select("deal_id", pl.col("expected_close_at").cast(DATETIME)),
        on="deal_id",
        how="left",
    )
    return expected_close_in_force(
        known.with_columns(pl.lit(at, DATETIME).alias("_at")),
        tables.get("deal_close_date_history"),
        time="_at",
        initial="expected_close_at",
    ).select("deal_id", "expected_close_at")


def close_periods(
    deal_ids: pl.DataFrame, tables: dict[str, pl.DataFrame], at: datetime, timezone: str = "UTC"
) -> pl.DataFrame:
    """(deal_id, month, quarter) of each deal's expected close as known at `at`
    (`expected_close_at`); a passed or unknown close counts in the month of `at` (the deal is
    open and overdue), as in `pipeline_forecast`. Labels as `pipeline_forecast`'s periods.
    """
    t = pl.lit(at, DATETIME)
    close = pl.col("expected_close_at")
    when = pl.when(close.is_null() | (close < t)).then(t).otherwise(close)
    return expected_close_at(deal_ids, tables, at).select(
        "deal_id", _month(when, timezone), _quarter(when, timezone)
    )


def pipeline_changes(
    current: pl.DataFrame,
    previous: pl.DataFrame,
    tables: dict[str, pl.DataFrame],
    as_of: datetime,
    previous_as_of: datetime | None,
    *,
    probability: str = "win_probability",
    timezone: str = "UTC",
) -> pl.DataFrame:
    """Waterfall of expected revenue (WATERFALL_COLUMNS) for the month and the quarter of as_of.

    Expected revenue of a deal = amount x `probability` (a fraction; default the deal-win
    probability, or a per-deal in-period probability column present in both frames), counted in
    the period its expected close falls in at that run (`close_periods`, point in time at each
    as_of). Both runs are measured on the same period (the one of `as_of`). The amount is
    `previous['amount']` when given, else `deals.amount` (the deals table has no amount history),
    so amount changes land in 'score_change' only when the caller passes the old amount.
    Empty when there is no previous run.
    """
    if previous_as_of is None:
        return pl.DataFrame(schema=WATERFALL_COLUMNS)
    per_deal = _waterfall_deals(
        current, previous, tables, as_of, previous_as_of, probability, timezone
    )
    month, quarter = period_labels(as_of, timezone)
    parts = [
        _waterfall(per_deal, kind, label)
        for kind, label in (("month", month), ("quarter", quarter))
    ]
    return (
        pl.concat(parts)
        .with_columns(pl.lit(previous_as_of, DATETIME).alias("previous_as_of"))
        .select([pl.col(c).cast(t) for c, t in WATERFALL_COLUMNS.items()])
        .sort("period_kind", "step_order")
    )


def _waterfall_deals(
    current: pl.DataFrame,
    previous: pl.DataFrame,
    tables: dict[str, pl.DataFrame],
    as_of: datetime,
    previous_as_of: datetime,
    probability: str,
    timezone: str,
) -> pl.DataFrame:
    """Per deal of either run: periods, expected revenue at each run, outcome now."""
    amounts = tables["deals"].select("deal_id", pl.col("amount").cast(pl.Float64))
    now = (
        current.filter(pl.col(probability).is_not_null())
        .select("deal_id", pl.col(probability).cast(pl.Float64).alias("_p_now"))
        .join(amounts, on="deal_id", how="left")
    )
    old_amount = pl.col("amount") if "amount" in previous.columns else pl.lit(None, pl.Float64)
    before = previous.filter(pl.col(probability).is_not_null()).select(
        "deal_id",
        pl.col(probability).cast(pl.Float64).alias("_p_before"),
        old_amount.cast(pl.Float64).alias("_amount_before"),
    )
    before = before.join(amounts, on="deal_id", how="left").select(
        "deal_id", "_p_before", pl.coalesce("_amount_before", "amount").alias("_amount_before")
    )
    periods_now = close_periods(now, tables, as_of, timezone).rename(
        {"month": "_month_now", "quarter": "_quarter_now"}
    )
    periods_before = close_periods(before, tables, previous_as_of, timezone).rename(
        {"month": "_month_before", "quarter": "_quarter_before"}
    )
    outcome = deals_known_at(tables["deals"], as_of).select("deal_id", "outcome")
    return (
        now.join(periods_now, on="deal_id", how="left")
        .join(
            before.join(periods_before, on="deal_id", how="left"),
            on="deal_id",
            how="full",
            coalesce=True,
        )
        .join(outcome, on="deal_id", how="left")
        .with_columns(
            (pl.col("amount").fill_null(0.0) * pl.col("_p_now")).alias("_e_now"),
            (pl.col("_amount_before").fill_null(0.0) * pl.col("_p_before")).alias("_e_before"),
        )
        .sort("deal_id")  # sums in one order: the same inputs give the same bits
    )


def _waterfall(per_deal: pl.DataFrame, kind: str, label: str) -> pl.DataFrame:
    """The steps of one period: each deal lands in one middle step (or none)."""
    scored_now = pl.col("_p_now").is_not_null()
    scored_before = pl.col("_p_before").is_not_null()
    in_now = scored_now & (pl.col(f"_{kind}_now") == label).fill_null(False)
    in_before = scored_before & (pl.col(f"_{kind}_before") == label).fill_null(False)
    e_now = pl.when(in_now).then(pl.col("_e_now")).otherwise(0.0)
    e_before = pl.when(in_before).then(pl.col("_e_before")).otherwise(0.0)
    step = (
        pl.when(scored_now & ~scored_before & in_now)
        .then(pl.lit("new"))
        .when(~scored_now & in_before & (pl.col("outcome") == "won"))
        .then(pl.lit("won"))
        .when(~scored_now & in_before)
        .then(pl.lit("lost"))  # closed lost, or gone from the source
        .when(scored_now & in_before & ~in_now)
        .then(pl.lit("slipped_out"))
        .when(scored_now & scored_before & ~in_before & in_now)
        .then(pl.lit("pulled_in"))
        .when(in_now & in_before)
        .then(pl.lit("score_change"))
    )
    flows = (
        per_deal.select(step.alias("step"), (e_now - e_before).alias("value"))
        .drop_nulls("step")
        .group_by("step")
        .agg(pl.col("value").sum(), pl.len().cast(pl.Int64).alias("n_deals"))
    )
    ends = per_deal.select(
        pl.lit("start").alias("step"),
        e_before.sum().alias("value"),
        in_before.sum().cast(pl.Int64).alias("n_deals"),
    ).vstack(
        per_deal.select(
            pl.lit("end").alias("step"),
            e_now.sum().alias("value"),
            in_now.sum().cast(pl.Int64).alias("n_deals"),
        )
    )
    order = pl.DataFrame(
        {"step": list(WATERFALL_STEPS), "step_order": list(range(len(WATERFALL_STEPS)))},
        schema={"step": pl.String, "step_order": pl.Int64},
    )
    return order.join(
        pl.concat([ends, flows], how="vertical_relaxed"), on="step", how="left"
    ).with_columns(
        pl.col("value").fill_null(0.0),
        pl.col("n_deals").fill_null(0),
        pl.lit(label).alias("period"),
        pl.lit(kind).alias("period_kind"),
    )
