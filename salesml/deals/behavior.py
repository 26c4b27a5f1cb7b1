"""Behaviour value map: what one activity of each (type, contact role) is worth to a deal.

Every activity feature of the model is a sum over the deal's recent activities: window counts
(all, by type, by role), the decayed per-(type, role) sums (`features.pair_column`) and the
role-weighted behaviour score. For each explained snapshot and activity feature f:

- the feature's "nothing happened" contribution phi0_f is the mean SHAP of f over rows with
  x_f = 0, and delta_f = phi_f - phi0_f is what the row's activities add through f;
- delta_f is shared among the activities behind x_f in proportion to what each put into it
  (its count in the window, its decayed weight, its role weight x decayed weight);
- a (type, role) pair's credit in a row is the sum of its shares over all activity features
  (log-odds), and the calibrated win probability moves from p(raw - credit) to p(raw).

`mean_contribution` = total probability credit / number of the pair's activities in the rows'
longest window: the average SHAP contribution of one such activity to the win probability.
`mean_contribution_log_odds` is the same in log-odds (the model's native space).
`days_since_last_activity` is about timing rather than any one pair and is not shared out.

`occurrences` counts the pair's deal activities known at as_of (occurred_at <= as_of).
Contributions describe the model's associations, not causal effects: a pair common in deals
that were going to win anyway can carry credit it did not earn.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import numpy as np
import polars as pl

from salesml import contract
from salesml.deals.features import (
    UNKNOWN_ROLE,
    FeatureSpec,
    activity_terms,
    pair_column,
    role_column,
    type_column,
    window_column,
)
from salesml.deals.model import DealWinModel
from salesml.timeutil import DATETIME

BEHAVIOR_SCHEMA: dict[str, pl.DataType] = contract.row_dtypes("behavior_value")
"""The contract's `behavior_value` columns without the lineage the warehouse stamps."""


def activity_counts(activities: pl.DataFrame | None, as_of: datetime) -> pl.DataFrame:
    """Deal activities known at `as_of`, counted per (activity_type, contact_role)."""
    if activities is None or activities.height == 0:
        return pl.DataFrame(
            schema={"activity_type": pl.String, "contact_role": pl.String, "occurrences": pl.Int64}
        )
    return (
        activities.filter(
            pl.col("deal_id").is_not_null() & (pl.col("occurred_at") <= pl.lit(as_of, DATETIME))
        )
        .group_by("activity_type", pl.col("contact_role").fill_null(UNKNOWN_ROLE))
        .agg(pl.len().cast(pl.Int64).alias("occurrences"))
    )


def behavior_value(
    features: pl.DataFrame,
    contributions: np.ndarray,
    feature_names: list[str],
    spec: FeatureSpec,
    calibrate: Callable[[np.ndarray], np.ndarray],
    counts: pl.DataFrame,
    terms: pl.DataFrame,
) -> pl.DataFrame:
    """One row per (activity_type, contact_role), most valuable first (schema BEHAVIOR_SCHEMA).

    `features` and `contributions` (n, f + 1, log-odds, base last) describe the same explained
    snapshots; `terms` is `features.activity_terms(features, ...)` for them; `calibrate` maps
    raw log-odds to the calibrated probability; `counts` comes from `activity_counts`.
    """
    raw = contributions.sum(axis=1)
    rows = terms.get_column("row").to_numpy().astype(np.int64)
    longest = max(spec.windows_days)
    share_sources = _share_sources(spec, terms)
    credit = np.zeros(terms.height)
    for name, numerator, mask in share_sources:
        if name not in feature_names:
            continue
        x = features.get_column(name).to_numpy().astype(np.float64)
        phi = contributions[:, feature_names.index(name)]
        zero = x == 0
        phi0 = float(phi[zero].mean()) if zero.any() else 0.0
        delta = np.where(zero, 0.0, phi - phi0)
        fed = np.where(mask, numerator, 0.0)
        total = np.bincount(rows, weights=fed, minlength=x.size)[rows]
        share = np.divide(fed, total, out=np.zeros_like(fed), where=total > 0)
        credit += delta[rows] * share
    probability_credit = calibrate(raw[rows]) - calibrate(raw[rows] - credit)
    values = (
        terms.select("activity_type", "contact_role", pl.col(f"count_{longest}d").alias("_n"))
        .with_columns(pl.Series("_credit", credit), pl.Series("_p_credit", probability_credit))
        .filter(pl.col("_n") > 0)
        .group_by("activity_type", "contact_role")
        .agg(
            (pl.col("_p_credit").sum() / pl.col("_n").sum()).alias("mean_contribution"),
            (pl.col("_credit").sum() / pl.col("_n").sum()).alias("mean_contribution_log_odds"),
            pl.len().cast(pl.Int64).alias("snapshots_with_activity"),
        )
    )
    return (
        counts.join(values, on=["activity_type", "contact_role"], how="full", coalesce=True)
        .with_columns(
            pl.col("occurrences").fill_null(0),
            pl.col("snapshots_with_activity").fill_null(0),
        )
        .select(list(BEHAVIOR_SCHEMA))
        .sort(
            ["mean_contribution", "activity_type", "contact_role"],
            descending=[True, False, False],
            nulls_last=True,
        )
    )


def _share_sources(
    spec: FeatureSpec, terms: pl.DataFrame
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(feature, what each term row put into it, which term rows feed it) for every activity
    feature. A row's delta is shared in proportion to the numerators of its term rows (for the
    count, decayed and behaviour features they add up to the feature's value exactly; the
    engaged-roles, total and rate features are shared by recent activity volume).
    """
    types = terms.get_column("activity_type")
    roles = terms.get_column("contact_role")
    every = np.ones(terms.height, dtype=bool)
    decayed = terms.get_column("decayed").to_numpy()
    longest = max(spec.windows_days)
    sources: list[tuple[str, np.ndarray, np.ndarray]] = []
    for w in spec.windows_days:
        count = terms.get_column(f"count_{w}d").to_numpy()
        sources.append((window_column("activities", w), count, every))
        sources += [
            (window_column(type_column(a), w), count, (types == a).to_numpy())
            for a in spec.activity_types
        ]
        sources += [
            (window_column(role_column(r), w), count, (roles == r).to_numpy())
            for r in spec.contact_roles
        ]
    sources += [
        (pair_column(a, r), decayed, ((types == a) & (roles == r)).to_numpy())
        for a, r in spec.activity_pairs
    ]
    sources.append(("behavior_score", terms.get_column("role_weight").to_numpy() * decayed, every))
    if 30 in spec.windows_days:
        sources.append(("distinct_roles_30d", terms.get_column("count_30d").to_numpy(), every))
    volume = terms.get_column(f"count_{longest}d").to_numpy()
    for name in ("activities_total", "activity_rate_30d"):
        sources.append((name, volume, every))
    return sources


def explain_behavior(
    model: DealWinModel,
    features: pl.DataFrame,
    tables: dict[str, pl.DataFrame],
    as_of: datetime,
    max_rows: int = 20_000,
    seed: int = 42,
) -> pl.DataFrame:
    """The behaviour value map of a fitted model over (a seeded sample of) `features` rows."""
    if model.feature_spec is None:
        raise ValueError("the model has no feature spec")
    if features.height > max_rows:
        features = features.sample(max_rows, seed=seed, shuffle=False)
    return behavior_value(
        features,
        model.contributions(features),
        model.feature_names_,
        model.feature_spec,
        model.calibrate,
        activity_counts(tables.get("activities"), as_of),
        activity_terms(features, tables, model.feature_spec),
    )
