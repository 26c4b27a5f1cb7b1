"""Next-best actions per open deal (`deal_actions`): which one activity, with whom, the model
rewards most, plus rule-based warnings.

An action is "add ONE activity of type T with contact role R at as_of". For every deal scored
by the model and every feasible (T, R), the deal is re-scored through the same feature code
(`features.build_features`) and the same fitted model with one synthetic activity appended at
`as_of`: each (deal, pair) becomes a copy of the deal under a synthetic id, carrying the deal's
own history (activities, stages, close-date changes) plus the new activity, and all copies are
built and predicted in one pass (no loop over deals). `uplift = win_probability_after -
win_probability` (probability, so 0.06 = 6 points) where `win_probability` is the deal's score
now. Only uplifts above `min_uplift` are recommended, the `top_k` largest per deal.

Part of every uplift is owed to one more activity of any kind (volume and recency features:
activity goes with buyer interest and precedes closes). A placebo copy per deal, one activity
of a type and role no data holds, measures that part; `uplift_over_any_activity` is the rest,
what the type and role add. With `require_over_any_activity` (default) an action must beat the
placebo by `min_uplift` too, so "one more touch" alone is never recommended.

Uplift is what the model associates with such an activity, not a measured causal effect: the
model learned from history where, for instance, activity bursts precede a close, and where the
activity mix goes with buyer interest. On the generated world with planted effects
(`benchmarks/bench_deal_actions.py`) the uplift is 16-19 times the world's causal effect of
the same action on the same deals, and the ranking of pairs comes from that association (the
snapshot labels carry almost no pair-specific signal); on a world whose effects last and whose
activity mix is randomised (`--world experiment`) it is 2-2.6 times, and the ranking is
0.53-0.67 Spearman at 20,000 deals: read it as a ranking signal, not as points a rep will
gain (README, "Next-best actions").

Feasible pairs, known at as_of (occurred_at <= as_of only): (T, R) seen on deal activities at
least `min_pair_occurrences` times, with R a role the deal's account has engaged, or a role
seen at `plausible_role_share` of the accounts with activities (most accounts have a CTO). A
null role is never recommended (no one to contact).

`within_hours` is the activity decay half-life of the model's features (`deals.features.decay_hours`):
the recent-activity features weigh an activity half as much after that long.

Warnings (`kind = 'warning'`, no uplift) apply to every open deal, whatever its score basis,
when the data has an activity log: "single-threaded (one contact)" when exactly one contact
role was engaged on the deal in the last `single_thread_days`; "no senior contact" when none
of `senior_roles` was engaged in the last `no_senior_days` (only for deals at least that old,
and only when the data knows senior roles at all).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl

from salesml import contract
from salesml.config import DealActionSettings
from salesml.deals.features import build_features
from salesml.deals.model import DealWinModel
from salesml.timeutil import DATETIME

ACTION_SCHEMA: dict[str, pl.DataType] = contract.row_dtypes("deal_actions")
"""The contract's `deal_actions` columns without the lineage the job stamps."""
CANDIDATE_SCHEMA: dict[str, pl.DataType] = {
    "deal_id": pl.String(),
    "activity_type": pl.String(),
    "contact_role": pl.String(),
    "win_probability": pl.Float64(),
    "win_probability_after": pl.Float64(),
    "uplift": pl.Float64(),
    "uplift_over_any_activity": pl.Float64(),
}
_COPY_PREFIX = "\x1fnba:"
"""Synthetic deal ids of the re-scored copies (a control character: no real id starts so)."""
_ANY = "\x1fany"
"""Type and role of the placebo activity: names no data holds, so no type, role or pair feature
moves, only what any activity moves (volume, recency, behaviour score at the 'other' weight)."""
_VERBS = {
    "email": "Email {who}",
    "call": "Call {who}",
    "meeting": "Meet {who}",
    "demo": "Give {who} a demo",
    "proposal_sent": "Send a proposal to {who}",
    "tech_doc_shared": "Share a technical document with {who}",
}


def deal_actions(
    model: DealWinModel | None,
    tables: dict[str, pl.DataFrame],
    scores: pl.DataFrame,
    as_of: datetime,
    settings: DealActionSettings,
) -> pl.DataFrame:
    """The `deal_actions` rows of one scoring run (ACTION_SCHEMA, lineage not stamped).

    model: the fitted DealWinModel that scored the deals (None: no model, warnings only).
    tables: the input tables the score job scored with (`deals`, optional `activities`,
    `deal_stage_history`, `deal_close_date_history`, `accounts`); rows after `as_of` are
    ignored. scores: the run's `deal_scores` rows (deal_id, win_probability, score_basis);
    only `score_basis == 'model'` deals get actions, every deal may get warnings.
    Per deal: actions ranked 1..k by uplift, then warnings.
    """
    missing = [c for c in ("deal_id", "win_probability", "score_basis") if c not in scores]
    if missing:
        raise ValueError(f"deal_actions: scores lack the column '{missing[0]}' (deal_scores)")
    uplifts = candidate_uplifts(model, tables, scores, as_of, settings)
    hours = round(model.feature_spec.decay_hours) if model and model.feature_spec else 0
    actions = rank_actions(uplifts, settings, hours)
    warnings = deal_warnings(tables, scores.select("deal_id", "win_probability"), as_of, settings)
    offset = actions.group_by("deal_id").agg(pl.len().cast(pl.Int64).alias("_n"))
    warnings = (
        warnings.join(offset, on="deal_id", how="left")
        .with_columns((pl.col("rank") + pl.col("_n").fill_null(0)).alias("rank"))
        .drop("_n")
    )
    return (
        pl.concat([actions, warnings.select(list(ACTION_SCHEMA))], how="vertical_relaxed")
        .cast(pl.Schema(ACTION_SCHEMA))
        .sort("deal_id", "rank")
    )


def candidate_uplifts(
    model: DealWinModel | None,
    tables: dict[str, pl.DataFrame],
    scores: pl.DataFrame,
    as_of: datetime,
    settings: DealActionSettings,
    chunk_deals: int = 2000,
) -> pl.DataFrame:
    """Every feasible (deal, activity type, contact role) of the model-scored deals with its
    re-scored probability and uplift (CANDIDATE_SCHEMA), unfiltered: the benchmark's input.

    `uplift_over_any_activity` = win_probability_after - the probability after one placebo
    activity (a type and role the model has no feature for): the part of the uplift owed to
    this type and role rather than to one more activity of any kind. Deals are re-scored
    `chunk_deals` at a time (memory: each candidate copies its deal's history); the result
    does not depend on the chunk size.
    """
    spec = model.feature_spec if model is not None else None
    activities = tables.get("activities")
    if model is None or spec is None or not spec.uses_activities or activities is None:
        return pl.DataFrame(schema=CANDIDATE_SCHEMA)
    scored = scores.filter(pl.col("score_basis") == "model").select("deal_id", "win_probability")
    deals = scored.join(tables["deals"].select("deal_id", "account_id"), on="deal_id", how="inner")
    candidates = feasible_candidates(deals, activities, as_of, settings)
    chunk = candidates.select(pl.col("deal_id").rank("dense") // max(chunk_deals, 1))
    parts = [
        _rescore(model, tables, candidates.filter(chunk.to_series() == i), scored, as_of)
        for i in chunk.to_series().unique().sort().to_list()
    ]
    return pl.concat([pl.DataFrame(schema=CANDIDATE_SCHEMA), *parts])


def _rescore(
    model: DealWinModel,
    tables: dict[str, pl.DataFrame],
    candidates: pl.DataFrame,
    scored: pl.DataFrame,
    as_of: datetime,
) -> pl.DataFrame:
    """CANDIDATE_SCHEMA rows of `candidates` (deal_id, activity_type, contact_role), with
    one placebo copy per deal, built and predicted in one pass.
    """
    assert model.feature_spec is not None
    placebo = candidates.select("deal_id").unique(maintain_order=True)
    placebo = placebo.with_columns(
        pl.lit(_ANY).alias("activity_type"), pl.lit(_ANY).alias("contact_role")
    )
    everything = pl.concat([candidates, placebo])
    snapshots, copied = _with_one_more_activity(tables, everything, as_of)
    features = build_features(snapshots, copied, model.feature_spec)
    after = np.asarray(model.predict_proba(features)[:, 1], dtype=np.float64)
    rescored = everything.with_columns(pl.Series("win_probability_after", after))
    any_activity = rescored.filter(pl.col("activity_type") == _ANY).select(
        "deal_id", pl.col("win_probability_after").alias("_any")
    )
    return (
        rescored.filter(pl.col("activity_type") != _ANY)
        .join(scored, on="deal_id", how="left")
        .join(any_activity, on="deal_id", how="left")
        .with_columns(
            (pl.col("win_probability_after") - pl.col("win_probability")).alias("uplift"),
            (pl.col("win_probability_after") - pl.col("_any")).alias("uplift_over_any_activity"),
        )
        .select(list(CANDIDATE_SCHEMA))
    )


def feasible_candidates(
    deals: pl.DataFrame, activities: pl.DataFrame, as_of: datetime, settings: DealActionSettings
) -> pl.DataFrame:
    """(deal_id, activity_type, contact_role) per deal of `deals` (deal_id, account_id): pairs
    seen on deal activities at least `min_pair_occurrences` times by as_of, with a role the
    account has engaged or a role common across accounts (`plausible_role_share`).
    """
    known = _known_activities(activities, as_of).filter(pl.col("contact_role").is_not_null())
    pairs = (
        known.filter(pl.col("deal_id").is_not_null())
        .group_by("activity_type", "contact_role")
        .len()
        .filter(pl.col("len") >= settings.min_pair_occurrences)
        .drop("len")
    )
    n_accounts = max(_known_activities(activities, as_of).get_column("account_id").n_unique(), 1)
    common = (
        known.group_by("contact_role")
        .agg(pl.col("account_id").n_unique().alias("_accounts"))
        .filter(pl.col("_accounts") >= settings.plausible_role_share * n_accounts)
        .select("contact_role")
    )
    own = deals.join(
        known.select("account_id", "contact_role").unique(), on="account_id", how="inner"
    ).select("deal_id", "contact_role")
    roles = pl.concat([own, deals.select("deal_id").join(common, how="cross")]).unique()
    return (
        roles.join(pairs, on="contact_role", how="inner")
        .select("deal_id", "activity_type", "contact_role")
        .sort("deal_id", "activity_type", "contact_role")
    )


def _known_activities(activities: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    return activities.filter(
        (pl.col("occurred_at") <= pl.lit(as_of, DATETIME)) & pl.col("activity_type").is_not_null()
    )


def _with_one_more_activity(
    tables: dict[str, pl.DataFrame], candidates: pl.DataFrame, as_of: datetime
) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
    """(snapshots, tables) where candidate i is a copy of its deal under a synthetic id, with
    the deal's history known at as_of plus one activity (type, role) at as_of. Copies are open
    (no outcome), so the account and rep win rates of every deal are unchanged.
    """
    at = pl.lit(as_of, DATETIME)
    ids = candidates.with_row_index("_i").with_columns(
        (pl.lit(_COPY_PREFIX) + pl.col("_i").cast(pl.String)).alias("_copy")
    )
    deal_map = ids.select("deal_id", "_copy")
    deals = tables["deals"]
    copies = _copy(deals, deal_map).with_columns(
        pl.lit(None, DATETIME).alias("closed_at"), pl.lit(None, pl.String).alias("outcome")
    )
    activities = tables["activities"].filter(pl.col("occurred_at") <= at)
    added = ids.join(deals.select("deal_id", "account_id"), on="deal_id", how="left").select(
        pl.col("_copy").alias("activity_id"),
        pl.col("_copy").alias("deal_id"),
        "account_id",
        at.alias("occurred_at"),
        "activity_type",
        "contact_role",
    )
    out = {
        **tables,
        "deals": pl.concat([deals, copies.select(deals.columns)], how="vertical_relaxed"),
        "activities": pl.concat(
            [activities.filter(pl.col("deal_id").is_null()), _copy(activities, deal_map), added],
            how="diagonal_relaxed",
        ),
    }
    for name, time in (
        ("deal_stage_history", "entered_at"),
        ("deal_close_date_history", "changed_at"),
    ):
        if tables.get(name) is not None:
            out[name] = _copy(tables[name].filter(pl.col(time) <= at), deal_map)
    snapshots = ids.select(pl.col("_copy").alias("deal_id"), at.alias("snapshot_at"))
    return snapshots, out


def _copy(table: pl.DataFrame, deal_map: pl.DataFrame) -> pl.DataFrame:
    """The rows of `table` of each mapped deal, once per copy, under the copy's id."""
    return (
        table.join(deal_map, on="deal_id", how="inner")
        .with_columns(pl.col("_copy").alias("deal_id"))
        .select(table.columns)
    )


def rank_actions(
    uplifts: pl.DataFrame, settings: DealActionSettings, within_hours: int
) -> pl.DataFrame:
    """The `top_k` candidates per deal with uplift (and, with `require_over_any_activity`, the
    uplift over any activity) above `min_uplift`, largest first (ties by type, role), as
    `deal_actions` rows with the action in plain words.
    """
    over_any = pl.col("uplift_over_any_activity") > settings.min_uplift
    kept = (
        uplifts.filter(
            (pl.col("uplift") > settings.min_uplift)
            & (over_any if settings.require_over_any_activity else pl.lit(True))
        )
        .sort(
            ["deal_id", "uplift", "activity_type", "contact_role"],
            descending=[False, True, False, False],
        )
        .with_columns(pl.int_range(1, pl.len() + 1).over("deal_id").cast(pl.Int64).alias("rank"))
        .filter(pl.col("rank") <= settings.top_k)
    )
    phrases = _phrases(kept.select("activity_type", "contact_role").unique())
    return (
        kept.join(phrases, on=["activity_type", "contact_role"], how="left")
        .with_columns(
            pl.lit("action").alias("kind"),
            pl.lit(within_hours, pl.Int64).alias("within_hours"),
            pl.format(
                "{} within {} h: {} pts ({} over any activity)",
                "_phrase",
                pl.lit(within_hours),
                _points("uplift"),
                _points("uplift_over_any_activity"),
            ).alias("action"),
        )
        .select(list(ACTION_SCHEMA))
    )


def _points(column: str) -> pl.Expr:
    """Probability difference as signed points in words ("+6", "-0.4"): one decimal below 10
    points, whole from there.
    """
    points = pl.col(column) * 100
    size = points.abs()
    number = (
        pl.when(size >= 9.95)
        .then(size.round(0).cast(pl.Int64).cast(pl.String))
        .otherwise(size.round(1).cast(pl.String))
    )
    return pl.when(points < 0).then(pl.lit("-") + number).otherwise(pl.lit("+") + number)


def _phrases(pairs: pl.DataFrame) -> pl.DataFrame:
    """The action of each (type, role) in words ("Share a technical document with the CTO")."""
    rows = pairs.rows()
    texts = [
        _VERBS.get(kind, "Log a " + kind.replace("_", " ") + " with {who}").format(who=_who(role))
        for kind, role in rows
    ]
    return pairs.with_columns(pl.Series("_phrase", texts, dtype=pl.String))


def _who(role: str) -> str:
    if role == "other":
        return "another contact"
    if role == "procurement":
        return "procurement"
    return "the " + (role.upper() if len(role) <= 3 else role.replace("_", " "))


def deal_warnings(
    tables: dict[str, pl.DataFrame],
    deals: pl.DataFrame,
    as_of: datetime,
    settings: DealActionSettings,
) -> pl.DataFrame:
    """Warning rows for `deals` (deal_id, win_probability): single-threaded, no senior contact
    (see module docstring); rank 1, 2 within a deal's warnings. None without an activity log.
    """
    activities = tables.get("activities")
    empty = pl.DataFrame(schema=ACTION_SCHEMA)
    if activities is None or deals.height == 0:
        return empty
    known = _known_activities(activities, as_of).filter(pl.col("deal_id").is_not_null())
    if known.height == 0:
        return empty
    at = pl.lit(as_of, DATETIME)
    single = _single_threaded(known, deals, at, settings.single_thread_days)
    senior = _no_senior_contact(known, deals, tables["deals"], at, settings)
    return (
        pl.concat([single, senior], how="vertical_relaxed")
        .sort("deal_id", "_order")
        .with_columns(pl.int_range(1, pl.len() + 1).over("deal_id").cast(pl.Int64).alias("rank"))
        .with_columns(
            pl.lit("warning").alias("kind"),
            pl.lit(None, pl.String).alias("activity_type"),
            pl.lit(None, pl.Int64).alias("within_hours"),
            pl.lit(None, pl.Float64).alias("uplift"),
            pl.lit(None, pl.Float64).alias("uplift_over_any_activity"),
            pl.lit(None, pl.Float64).alias("win_probability_after"),
        )
        .select(list(ACTION_SCHEMA))
    )


def _single_threaded(
    known: pl.DataFrame, deals: pl.DataFrame, at: pl.Expr, days: int
) -> pl.DataFrame:
    """Deals with exactly one contact role engaged in (as_of - days, as_of] (roles stand in
    for contacts: the activity log names roles, not people).
    """
    recent = known.filter(
        (pl.col("occurred_at") > at - timedelta(days=days)) & pl.col("contact_role").is_not_null()
    )
    roles = recent.group_by("deal_id").agg(pl.col("contact_role").unique().alias("_roles"))
    words = {role: _who(role) for role in recent.get_column("contact_role").unique().to_list()}
    return (
        deals.join(roles, on="deal_id", how="inner")
        .filter(pl.col("_roles").list.len() == 1)
        .with_columns(pl.col("_roles").list.first().alias("contact_role"))
        .with_columns(
            pl.format(
                "single-threaded (one contact): only {} engaged in the last {} days",
                pl.col("contact_role").replace_strict(words, return_dtype=pl.String),
                pl.lit(days),
            ).alias("action"),
            pl.lit(0).alias("_order"),
        )
        .select("deal_id", "win_probability", "contact_role", "action", "_order")
    )


def _no_senior_contact(
    known: pl.DataFrame,
    deals: pl.DataFrame,
    all_deals: pl.DataFrame,
    at: pl.Expr,
    settings: DealActionSettings,
) -> pl.DataFrame:
    """Deals at least `no_senior_days` old with no senior-role activity in that window; none
    when the activity log never names a senior role (a CRM without roles).
    """
    senior = pl.col("contact_role").is_in(settings.senior_roles)
    days = settings.no_senior_days
    if known.filter(senior).height == 0:
        return pl.DataFrame(
            schema={
                "deal_id": pl.String,
                "win_probability": pl.Float64,
                "contact_role": pl.String,
                "action": pl.String,
                "_order": pl.Int32,
            }
        )
    engaged = known.filter(senior & (pl.col("occurred_at") > at - timedelta(days=days)))
    old_enough = all_deals.filter(pl.col("created_at") <= at - timedelta(days=days))
    roles = ", ".join(r.upper() if len(r) <= 3 else r for r in settings.senior_roles)
    return (
        deals.join(old_enough.select("deal_id"), on="deal_id", how="semi")
        .join(engaged.select("deal_id").unique(), on="deal_id", how="anti")
        .select(
            "deal_id",
            "win_probability",
            pl.lit(None, pl.String).alias("contact_role"),
            pl.lit(f"no senior contact ({roles}) in the last {days} days").alias("action"),
            pl.lit(1).alias("_order"),
        )
    )
