"""Point-in-time features of a deal at a snapshot instant, built in bulk with polars.

`build_features(snapshots, tables, spec)` takes rows (deal_id, snapshot_at) and returns one row
of features per snapshot, in the same order. Every feature of a snapshot at t uses only events
with time <= t (t is itself <= as_of): stage and close-date history through backward as-of joins,
activities through a bounded range join (occurred_at in (t - lookback, t]), and account / rep
win rates from outcomes closed at or before t (the deal itself is open at t, so its own outcome
never counts). No feature counts events since the start of the data: such counts grow with the
calendar and act as a time proxy, so history enters as rates (smoothed win rates, activities per
30 days of deal age).

Only `deals` is required: an optional table (activities, accounts, stage or close-date history)
that is absent or has no row known at `as_of` leaves its features out of the spec
(`FeatureSpec.uses_*`, `inputs_note`).

`learn_spec(tables, as_of, settings)` fixes everything about the feature set that depends on
data (activity types, contact roles, the (type, role) pairs with enough occurrences) from data
<= as_of only; the spec travels with the model so scoring builds exactly the columns it was
trained on.

Static attributes (amount, product, region, custom deal columns, account size and industry) are
taken as they are in the source: the canonical tables hold no history of them.

Names: activity types, contact roles and stages arrive normalised (`contract.normalise_label`),
and config keys naming them (`stage_order`, `role_weights`) are normalised the same way here. A
custom feature keeps the user's column name for display (`feature_labels`) but gets a name
LightGBM accepts (`custom_feature_name`: no JSON punctuation such as `:{}[],"`); one that would
collide with a built-in feature or a column salesml uses is refused by name.

Units: every `*_days` feature is in days (float); counts are activities; the decayed features
weigh an activity by 0.5 ** (hours since it happened / decay_hours), i.e. `decay_hours` is a
half-life.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

import polars as pl

from salesml.config import ConfigError, DealsSettings
from salesml.contract import input_columns, normalise_label
from salesml.deals.snapshots import MICROS_PER_DAY
from salesml.timeutil import DATETIME

UNKNOWN_ROLE = "unknown"
BASE_CATEGORICAL = ["product", "region", "account_industry"]
CONTEXT = ["stage", "expected_close_at"]
"""Columns `build_features` returns besides the features: what health rules and reasons need."""
HEALTH_CONTEXT = ["days_in_stage", "days_since_last_activity", "close_date_slips"]
"""Columns the health rules read that are features only when their table is used; otherwise
`build_features` returns them after the features (days in stage = the deal's age, no known last
activity = null, no slips)."""
_RESERVED = {"deal_id", "snapshot_at", "initial_expected_close_at", *CONTEXT}
"""Names `build_features` uses besides the features (internal ones also start with `_`)."""


class FeatureNameError(ValueError):
    """Data whose category names would give two features one name; one-line message."""


def custom_feature_name(column: str) -> str:
    """The feature name of a custom deal column: LightGBM refuses JSON punctuation in names and
    renames spaces, so every character but letters, digits and `_` becomes `_`."""
    return re.sub(r"\W", "_", column)


@dataclass(frozen=True)
class FeatureSpec:
    """Everything that decides which feature columns exist and how they are computed."""

    stage_order: list[str]
    windows_days: list[int]
    decay_hours: float
    decay_lookback_days: float
    role_weights: dict[str, float]
    prior_strength: float
    activity_types: list[str] = field(default_factory=list)
    contact_roles: list[str] = field(default_factory=list)
    activity_pairs: list[tuple[str, str]] = field(default_factory=list)
    custom_numeric: list[str] = field(default_factory=list)
    custom_categorical: list[str] = field(default_factory=list)
    uses_activities: bool = True
    uses_accounts: bool = True
    uses_stage_history: bool = True
    uses_close_date_history: bool = True

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["activity_pairs"] = [list(p) for p in self.activity_pairs]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        values = dict(data)
        values["activity_pairs"] = [tuple(p) for p in values.get("activity_pairs", [])]
        return cls(**values)

    @property
    def categorical(self) -> list[str]:
        """Feature columns holding category labels (strings) rather than numbers."""
        base = [c for c in BASE_CATEGORICAL if self.uses_accounts or c != "account_industry"]
        return [*base, *map(custom_feature_name, self.custom_categorical)]

    @property
    def inputs_note(self) -> str | None:
        """What the model does without, in plain words for the job's messages (None: nothing
        missing)."""
        missing = [
            words
            for used, words in (
                (self.uses_activities, "no activity log"),
                (self.uses_accounts, "no accounts table"),
                (self.uses_stage_history, "no stage history"),
                (self.uses_close_date_history, "no close-date history"),
            )
            if not used
        ]
        if not missing:
            return None
        used = ["deal and account attributes" if self.uses_accounts else "deal attributes"]
        used += ["stage history"] if self.uses_stage_history else []
        used += ["close-date history"] if self.uses_close_date_history else []
        used += ["activities"] if self.uses_activities else []
        listed = used[0] if len(used) == 1 else f"{', '.join(used[:-1])} and {used[-1]}"
        return f"{', '.join(missing)}: the model uses {listed} only"

    @property
    def lookback_days(self) -> float:
        return float(max([*self.windows_days, self.decay_lookback_days]))

    def feature_names(self) -> list[str]:
        """The feature columns `build_features` returns, in order."""
        custom = [*self.custom_numeric, *self.custom_categorical]
        names = ["amount", *map(custom_feature_name, custom), "product", "region"]
        names += ["age_days", "days_to_expected_close"]
        if self.uses_close_date_history:
            names += ["close_date_slips", "close_date_changes"]
        if self.uses_stage_history:
            names += ["stage_index", "days_in_stage", "stage_changes", "stage_velocity"]
        if self.uses_activities:
            names += self._activity_feature_names()
        names += ["account_win_rate_vs_all"]
        if self.uses_accounts:
            names += ["account_employees", "account_annual_revenue", "account_industry"]
        names += ["rep_win_rate_vs_all"]
        return names

    def _activity_feature_names(self) -> list[str]:
        names = [_window_name("activities", w) for w in self.windows_days]
        names += [
            _window_name(_type_col(a), w) for a in self.activity_types for w in self.windows_days
        ]
        names += [
            _window_name(_role_col(r), w) for r in self.contact_roles for w in self.windows_days
        ]
        names += [_pair_col(a, r) for a, r in self.activity_pairs]
        names += ["behavior_score", "days_since_last_activity", "distinct_roles_30d"]
        names += ["activities_total", "activity_rate_30d"]
        names += ["account_activities_30d"]
        return names


def _slug(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_") or "x"


def _type_col(activity_type: str) -> str:
    return f"n_{_slug(activity_type)}"


def _role_col(role: str) -> str:
    return f"n_with_{_slug(role)}"


def _window_name(prefix: str, window: int) -> str:
    return f"{prefix}_{window}d"


def _pair_col(activity_type: str, role: str) -> str:
    return f"recent_{_slug(activity_type)}__{_slug(role)}"


def pair_column(activity_type: str, role: str) -> str:
    """Name of the decayed feature for one (activity type, contact role) pair."""
    return _pair_col(activity_type, role)


def type_column(activity_type: str) -> str:
    """Prefix of the window-count features of one activity type (`window_column` adds days)."""
    return _type_col(activity_type)


def role_column(role: str) -> str:
    """Prefix of the window-count features of one contact role."""
    return _role_col(role)


def window_column(prefix: str, window_days: int) -> str:
    """Name of a window-count feature: prefix plus the window in days."""
    return _window_name(prefix, window_days)


def _role_expr() -> pl.Expr:
    return pl.col("contact_role").fill_null(UNKNOWN_ROLE)


def learn_spec(
    tables: dict[str, pl.DataFrame], as_of: datetime, settings: DealsSettings
) -> FeatureSpec:
    """Fix the data-dependent parts of the feature set from rows known at `as_of`.

    An optional table that is absent, empty, or holds no row known at `as_of` leaves its
    features out (`uses_activities`, ...): with no activity log the model uses deal and account
    attributes only, and `inputs_note` says so."""
    activities = tables.get("activities")
    types: list[str] = []
    roles: list[str] = []
    pairs: list[tuple[str, str]] = []
    known = _known(activities, "occurred_at", as_of)
    if known is not None:
        known = known.filter(
            pl.col("deal_id").is_not_null() & pl.col("activity_type").is_not_null()
        ).with_columns(_role_expr().alias("contact_role"))
        types = sorted(known.get_column("activity_type").unique().to_list())
        roles = sorted(known.get_column("contact_role").unique().to_list())
        counts = known.group_by("activity_type", "contact_role").len()
        frequent = counts.filter(pl.col("len") >= settings.min_pair_occurrences).sort(
            "activity_type", "contact_role"
        )
        pairs = list(
            zip(
                frequent["activity_type"].to_list(), frequent["contact_role"].to_list(), strict=True
            )
        )
    deals = tables["deals"]
    numeric: list[str] = []
    categorical: list[str] = []
    for name in settings.custom_features:
        if name not in deals.columns:
            raise ConfigError(
                f"deals.custom_features: '{name}' is not a column of deals; "
                f"columns: {', '.join(deals.columns)}"
            )
        dtype = deals.schema[name]
        (numeric if dtype.is_numeric() or dtype == pl.Boolean else categorical).append(name)
    spec = FeatureSpec(
        stage_order=_normalised_list("deals.stage_order", settings.stage_order),
        windows_days=sorted(settings.activity_windows_days),
        decay_hours=settings.decay_hours,
        decay_lookback_days=settings.decay_hours * settings.decay_horizon_half_lives / 24.0,
        role_weights=_normalised_keys("deals.role_weights", settings.role_weights),
        prior_strength=settings.prior_strength,
        activity_types=types,
        contact_roles=roles,
        activity_pairs=pairs,
        custom_numeric=numeric,
        custom_categorical=categorical,
        uses_activities=known is not None and known.height > 0,
        uses_accounts=bool(tables.get("accounts") is not None and tables["accounts"].height),
        uses_stage_history=_has_rows(tables.get("deal_stage_history"), "entered_at", as_of),
        uses_close_date_history=_has_rows(
            tables.get("deal_close_date_history"), "changed_at", as_of
        ),
    )
    _check_custom_names(spec, settings.custom_features)
    _check_unique_names(spec)
    return spec


def _known(table: pl.DataFrame | None, time: str, as_of: datetime) -> pl.DataFrame | None:
    """The rows of an optional event table with `time` <= as_of (None when it is absent)."""
    if table is None:
        return None
    return table.filter(pl.col(time) <= pl.lit(as_of, DATETIME))


def _has_rows(table: pl.DataFrame | None, time: str, as_of: datetime) -> bool:
    known = _known(table, time, as_of)
    return known is not None and known.height > 0


def _normalised_list(key: str, values: list[str]) -> list[str]:
    """Config names spelt as the data's labels are (`Proposal ` -> `proposal`), once each."""
    out: list[str] = []
    for value in values:
        label = normalise_label(value)
        if label in out:
            raise ConfigError(f"{key}: '{value}' is listed twice (names ignore case and spaces)")
        out.append(label)
    return out


def _normalised_keys(key: str, mapping: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in mapping.items():
        label = normalise_label(name)
        if label in out:
            raise ConfigError(f"{key}: '{name}' is given twice (names ignore case and spaces)")
        out[label] = value
    return out


def _check_custom_names(spec: FeatureSpec, columns: list[str]) -> None:
    """A custom feature may not shadow a built-in feature, a column salesml reads for itself
    (closed_at, outcome: the label) or another custom feature; refused by name."""
    built_in = replace(spec, custom_numeric=[], custom_categorical=[])
    taken = {*built_in.feature_names(), *input_columns("deals"), *_RESERVED}
    seen: dict[str, str] = {}
    for column in columns:
        name = custom_feature_name(column)
        if name in taken or name.startswith("_"):
            raise ConfigError(
                f"deals.custom_features: '{column}' is the name of a built-in feature or of a "
                "column salesml uses; drop it from custom_features, or give the column another "
                "name with column_map"
            )
        if name in seen:
            raise ConfigError(
                f"deals.custom_features: '{seen[name]}' and '{column}' both become the feature "
                f"'{name}'; rename one with column_map"
            )
        seen[name] = column


def _check_unique_names(spec: FeatureSpec) -> None:
    """Category names of the data may still clash as feature names (`with_cto` as an activity
    type and `cto` as a role both give `n_with_cto_7d`); say so instead of failing later."""
    names = spec.feature_names()
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash is not None:
        raise FeatureNameError(
            f"activities: two activity types or contact roles give the feature name '{clash}'; "
            "rename one of them in the data"
        )


def _days(expr: pl.Expr) -> pl.Expr:
    return expr.dt.total_microseconds() / MICROS_PER_DAY


def build_features(
    snapshots: pl.DataFrame, tables: dict[str, pl.DataFrame], spec: FeatureSpec
) -> pl.DataFrame:
    """Features for each (deal_id, snapshot_at) row, returned in the input order.

    Output: deal_id, snapshot_at, the CONTEXT columns (stage name, expected close at t), then
    `spec.feature_names()`, then the HEALTH_CONTEXT columns that are not features. Categorical features are strings
    (the model encodes them); numeric features are Float64 with null where unknown.
    """
    deals = tables["deals"]
    base = (
        snapshots.select("deal_id", "snapshot_at")
        .with_row_index("_row")
        .join(
            deals.select(
                "deal_id",
                "account_id",
                "owner_id",
                "created_at",
                pl.col("expected_close_at").alias("initial_expected_close_at"),
                pl.col("amount").cast(pl.Float64),
                pl.col("product").cast(pl.String),
                pl.col("region").cast(pl.String),
                *[
                    pl.col(c).cast(pl.Float64).alias(custom_feature_name(c))
                    for c in spec.custom_numeric
                ],
                *[
                    pl.col(c).cast(pl.String).alias(custom_feature_name(c))
                    for c in spec.custom_categorical
                ],
            ),
            on="deal_id",
            how="left",
        )
    )
    # integer deal keys make the range join with activities cheap
    base = base.with_columns(pl.col("deal_id").rank("dense").cast(pl.UInt32).alias("_deal"))
    keys = base.select("deal_id", "_deal").unique()
    frame = base.with_columns(_days(pl.col("snapshot_at") - pl.col("created_at")).alias("age_days"))
    frame = _close_date_features(frame, _used(tables, "deal_close_date_history", spec))
    frame = _stage_features(frame, _used(tables, "deal_stage_history", spec), spec)
    if spec.uses_activities:
        frame = _activity_features(frame, tables.get("activities"), keys, spec)
        frame = _account_activity_features(frame, tables.get("activities"))
    else:
        frame = frame.with_columns(pl.lit(None, pl.Float64).alias("days_since_last_activity"))
    frame = _history_features(frame, deals, "account_id", "account", spec.prior_strength)
    frame = _history_features(frame, deals, "owner_id", "rep", spec.prior_strength)
    frame = _account_attributes(frame, _used(tables, "accounts", spec))
    names = spec.feature_names()
    numeric = [n for n in names if n not in spec.categorical]
    return frame.sort("_row").select(
        "deal_id",
        "snapshot_at",
        *CONTEXT,
        *[pl.col(n).cast(pl.Float64) if n in numeric else pl.col(n).cast(pl.String) for n in names],
        *[pl.col(n).cast(pl.Float64) for n in HEALTH_CONTEXT if n not in names],
    )


def _used(tables: dict[str, pl.DataFrame], table: str, spec: FeatureSpec) -> pl.DataFrame | None:
    """An optional table if the spec's features use it, else None (its features are left out,
    and scoring ignores a table that appeared after training)."""
    uses = {
        "activities": spec.uses_activities,
        "accounts": spec.uses_accounts,
        "deal_stage_history": spec.uses_stage_history,
        "deal_close_date_history": spec.uses_close_date_history,
    }
    return tables.get(table) if uses[table] else None


def _asof(
    left: pl.DataFrame,
    right: pl.DataFrame,
    left_on: str,
    right_on: str,
    by: str,
) -> pl.DataFrame:
    """Backward as-of join (right time <= left time) with both sides sorted explicitly."""
    return left.sort(by, left_on).join_asof(
        right.sort(by, right_on),
        left_on=left_on,
        right_on=right_on,
        by=by,
        strategy="backward",
        check_sortedness=False,
    )


def _close_date_features(frame: pl.DataFrame, history: pl.DataFrame | None) -> pl.DataFrame:
    """Expected close at t, and how often it moved later (slipped) or changed up to t."""
    t = pl.col("snapshot_at")
    if history is None or history.height == 0:
        return frame.with_columns(
            pl.col("initial_expected_close_at").alias("expected_close_at"),
            _days(pl.col("initial_expected_close_at") - t).alias("days_to_expected_close"),
            pl.lit(0.0).alias("close_date_slips"),
            pl.lit(0.0).alias("close_date_changes"),
        )
    initial = frame.select("deal_id", "initial_expected_close_at").unique("deal_id")
    changes = (
        history.select("deal_id", "changed_at", "expected_close_at")
        .join(initial, on="deal_id", how="inner")
        .sort("deal_id", "changed_at", "expected_close_at")
        .with_columns(
            pl.col("expected_close_at")
            .shift(1)
            .over("deal_id")
            .fill_null(pl.col("initial_expected_close_at"))
            .alias("_previous")
        )
        .with_columns(
            (pl.col("expected_close_at") > pl.col("_previous")).fill_null(False).alias("_slip")
        )
        .with_columns(
            pl.col("_slip").cast(pl.Int32).cum_sum().over("deal_id").alias("_slips"),
            pl.int_range(1, pl.len() + 1).over("deal_id").alias("_changes"),
        )
        # several changes at one instant: the last one (in sorted order) is the state
        .unique(["deal_id", "changed_at"], keep="last", maintain_order=True)
        .select(
            "deal_id",
            "changed_at",
            pl.col("expected_close_at").alias("_expected_now"),
            "_slips",
            "_changes",
        )
    )
    joined = _asof(frame, changes, "snapshot_at", "changed_at", "deal_id")
    expected = pl.coalesce("_expected_now", "initial_expected_close_at")
    return joined.with_columns(
        expected.alias("expected_close_at"),
        _days(expected - t).alias("days_to_expected_close"),
        pl.col("_slips").fill_null(0).cast(pl.Float64).alias("close_date_slips"),
        pl.col("_changes").fill_null(0).cast(pl.Float64).alias("close_date_changes"),
    ).drop("changed_at", "_expected_now", "_slips", "_changes")


def _stage_features(
    frame: pl.DataFrame, history: pl.DataFrame | None, spec: FeatureSpec
) -> pl.DataFrame:
    """Stage at t (its position in the configured order), days in it, changes and velocity.

    Velocity = stage positions advanced since the first recorded stage, per 30 days of age.
    Without stage history the deal has no stage and `days_in_stage` is its age.
    """
    if history is None or history.height == 0:
        return frame.with_columns(
            pl.lit(None, pl.Float64).alias("stage_index"),
            pl.col("age_days").alias("days_in_stage"),
            pl.lit(0.0).alias("stage_changes"),
            pl.lit(None, pl.Float64).alias("stage_velocity"),
            pl.lit(None, pl.String).alias("stage"),
        )
    order = pl.DataFrame(
        {"stage": spec.stage_order, "_index": list(range(len(spec.stage_order)))},
        schema={"stage": pl.String, "_index": pl.Float64},
    )
    stages = (
        history.select("deal_id", "stage", "entered_at")
        .join(frame.select("deal_id").unique(), on="deal_id", how="semi")
        .join(order, on="stage", how="left")
        .sort("deal_id", "entered_at", "_index", nulls_last=True)
        .with_columns(
            pl.int_range(0, pl.len()).over("deal_id").alias("_changes"),
            (pl.col("_index") - pl.col("_index").first().over("deal_id")).alias("_advance"),
        )
        .unique(["deal_id", "entered_at"], keep="last", maintain_order=True)
    )
    joined = _asof(frame, stages, "snapshot_at", "entered_at", "deal_id")
    return joined.with_columns(
        pl.col("_index").alias("stage_index"),
        pl.coalesce(_days(pl.col("snapshot_at") - pl.col("entered_at")), pl.col("age_days")).alias(
            "days_in_stage"
        ),
        pl.col("_changes").fill_null(0).cast(pl.Float64).alias("stage_changes"),
        (pl.col("_advance") / pl.max_horizontal(pl.col("age_days"), pl.lit(1.0)) * 30.0).alias(
            "stage_velocity"
        ),
    ).drop("entered_at", "_index", "_changes", "_advance")


def _deal_activities(
    activities: pl.DataFrame, keys: pl.DataFrame, spec: FeatureSpec
) -> pl.DataFrame:
    """Deal-linked activities with integer deal keys, role filled ('unknown') and role weight."""
    return (
        activities.filter(pl.col("deal_id").is_not_null())
        .join(keys, on="deal_id", how="inner")
        .select("_deal", "occurred_at", "activity_type", _role_expr().alias("contact_role"))
        .with_columns(
            pl.col("contact_role")
            .replace_strict(
                spec.role_weights,
                default=spec.role_weights.get("other", 0.0),
                return_dtype=pl.Float64,
            )
            .alias("_role_weight")
        )
    )


def _recent_pairs(snaps: pl.DataFrame, acts: pl.DataFrame, spec: FeatureSpec) -> pl.DataFrame:
    """(snapshot row, activity) pairs with occurred_at in (t - lookback, t], with the activity's
    age in days (`_age`) and decay weight (`_decay`, 0 beyond the decay horizon)."""
    lookback = pl.duration(microseconds=int(spec.lookback_days * MICROS_PER_DAY))
    return (
        snaps.join(acts, on="_deal", how="inner")
        .filter(
            (pl.col("occurred_at") <= pl.col("snapshot_at"))
            & (pl.col("occurred_at") > pl.col("snapshot_at") - lookback)
        )
        .with_columns(_days(pl.col("snapshot_at") - pl.col("occurred_at")).alias("_age"))
        .with_columns(
            pl.when(pl.col("_age") <= spec.decay_lookback_days)
            .then(0.5 ** (pl.col("_age") * 24.0 / spec.decay_hours))
            .otherwise(0.0)
            .alias("_decay")
        )
    )


def _activity_features(
    frame: pl.DataFrame,
    activities: pl.DataFrame | None,
    keys: pl.DataFrame,
    spec: FeatureSpec,
) -> pl.DataFrame:
    """Window counts by type and role, decayed per-(type, role) sums, behaviour score, recency,
    and the deal's activity total and rate since creation.

    A range join pairs each snapshot with its deal's activities in (t - lookback, t]; the
    lookback covers the longest window and `decay_horizon_half_lives` half-lives (older
    activities weigh < 2**-horizon and are dropped from the decayed sums). A window of w days
    holds activities with t - w < occurred_at <= t.
    """
    count_names = [_window_name("activities", w) for w in spec.windows_days]
    count_names += [
        _window_name(_type_col(a), w) for a in spec.activity_types for w in spec.windows_days
    ]
    count_names += [
        _window_name(_role_col(r), w) for r in spec.contact_roles for w in spec.windows_days
    ]
    decayed_names = [_pair_col(a, r) for a, r in spec.activity_pairs] + ["behavior_score"]
    roles_30 = [_window_name(_role_col(r), 30) for r in spec.contact_roles]
    if activities is None or activities.height == 0:
        zeros = [pl.lit(0.0).alias(n) for n in [*count_names, *decayed_names]]
        return frame.with_columns(
            *zeros,
            pl.lit(None, pl.Float64).alias("days_since_last_activity"),
            pl.lit(0.0).alias("distinct_roles_30d"),
            pl.lit(0.0).alias("activities_total"),
            pl.lit(0.0).alias("activity_rate_30d"),
        )
    acts = _deal_activities(activities, keys, spec)
    pairs = _recent_pairs(frame.select("_row", "_deal", "snapshot_at"), acts, spec)
    aggs: list[pl.Expr] = []
    for w in spec.windows_days:
        inside = pl.col("_age") < w
        aggs.append(inside.sum().alias(_window_name("activities", w)))
        aggs += [
            (inside & (pl.col("activity_type") == a)).sum().alias(_window_name(_type_col(a), w))
            for a in spec.activity_types
        ]
        aggs += [
            (inside & (pl.col("contact_role") == r)).sum().alias(_window_name(_role_col(r), w))
            for r in spec.contact_roles
        ]
    aggs += [
        pl.col("_decay")
        .filter((pl.col("activity_type") == a) & (pl.col("contact_role") == r))
        .sum()
        .alias(_pair_col(a, r))
        for a, r in spec.activity_pairs
    ]
    aggs.append((pl.col("_decay") * pl.col("_role_weight")).sum().alias("behavior_score"))
    summary = pairs.group_by("_row").agg(aggs)
    cumulative = (
        acts.group_by("_deal", "occurred_at")
        .len()
        .sort("_deal", "occurred_at")
        .select(
            "_deal",
            pl.col("occurred_at").alias("_last_activity_at"),
            pl.col("len").cum_sum().over("_deal").alias("_total"),
        )
    )
    out = frame.join(summary, on="_row", how="left").with_columns(
        [pl.col(n).cast(pl.Float64).fill_null(0.0) for n in [*count_names, *decayed_names]]
    )
    out = _asof(out, cumulative, "snapshot_at", "_last_activity_at", "_deal")
    distinct = (
        pl.sum_horizontal([(pl.col(c) > 0).cast(pl.Float64) for c in roles_30])
        if roles_30
        else pl.lit(0.0)
    )
    total = pl.col("_total").fill_null(0).cast(pl.Float64)
    return out.with_columns(
        _days(pl.col("snapshot_at") - pl.col("_last_activity_at")).alias(
            "days_since_last_activity"
        ),
        distinct.alias("distinct_roles_30d"),
        total.alias("activities_total"),
        (total / pl.max_horizontal(pl.col("age_days"), pl.lit(1.0)) * 30.0).alias(
            "activity_rate_30d"
        ),
    ).drop("_last_activity_at", "_total")


def activity_terms(
    rows: pl.DataFrame, tables: dict[str, pl.DataFrame], spec: FeatureSpec
) -> pl.DataFrame:
    """Per (row, activity type, contact role): what the row's activities put into its features.

    `rows` has deal_id and snapshot_at (e.g. a features frame); the output has `row` (0-based
    position in `rows`), activity_type, contact_role, `count_{w}d` per window and `decayed` (the
    pair's decayed sum), for pairs with an activity in the lookback (none when the spec uses no
    activities). Used to apportion SHAP
    values of activity features to the activities behind them (`behavior.behavior_value`).
    """
    activities = tables.get("activities")
    schema = {
        "row": pl.UInt32,
        "activity_type": pl.String,
        "contact_role": pl.String,
        **{f"count_{w}d": pl.Float64 for w in spec.windows_days},
        "decayed": pl.Float64,
        "role_weight": pl.Float64,
    }
    if not spec.uses_activities or activities is None or activities.height == 0:
        return pl.DataFrame(schema=schema)
    snaps = (
        rows.select("deal_id", "snapshot_at")
        .with_row_index("_row")
        .with_columns(pl.col("deal_id").rank("dense").cast(pl.UInt32).alias("_deal"))
    )
    keys = snaps.select("deal_id", "_deal").unique()
    acts = _deal_activities(activities, keys, spec)
    pairs = _recent_pairs(snaps.select("_row", "_deal", "snapshot_at"), acts, spec)
    return (
        pairs.group_by("_row", "activity_type", "contact_role")
        .agg(
            *[
                (pl.col("_age") < w).sum().cast(pl.Float64).alias(f"count_{w}d")
                for w in spec.windows_days
            ],
            pl.col("_decay").sum().alias("decayed"),
            pl.col("_role_weight").first().alias("role_weight"),
        )
        .rename({"_row": "row"})
        .sort("row", "activity_type", "contact_role")
        .select(list(schema))
    )


def _account_activity_features(
    frame: pl.DataFrame, activities: pl.DataFrame | None
) -> pl.DataFrame:
    """Account-level activities (no deal) in the 30 days to t, via cumulative counts."""
    if activities is None or activities.height == 0:
        return frame.with_columns(pl.lit(0.0).alias("account_activities_30d"))
    cumulative = (
        activities.filter(pl.col("deal_id").is_null())
        .group_by("account_id", "occurred_at")
        .len()
        .sort("account_id", "occurred_at")
        .with_columns(pl.col("len").cum_sum().over("account_id").alias("_cum"))
        .select("account_id", "occurred_at", "_cum")
    )
    now = _asof(frame, cumulative, "snapshot_at", "occurred_at", "account_id").drop("occurred_at")
    before = _asof(
        now.with_columns((pl.col("snapshot_at") - pl.duration(days=30)).alias("_from")),
        cumulative.rename({"_cum": "_cum_before"}),
        "_from",
        "occurred_at",
        "account_id",
    ).drop("occurred_at", "_from")
    return before.with_columns(
        (pl.col("_cum").fill_null(0) - pl.col("_cum_before").fill_null(0))
        .cast(pl.Float64)
        .alias("account_activities_30d")
    ).drop("_cum", "_cum_before")


def _history_features(
    frame: pl.DataFrame,
    deals: pl.DataFrame,
    key: str,
    prefix: str,
    prior_strength: float,
) -> pl.DataFrame:
    """`{prefix}_win_rate_vs_all`: the account's (or rep's) smoothed win rate over its deals
    closed at or before t, minus the win rate of all deals closed by t (win-rate points).

    rate = (won + a * p0) / (closed + a), a beta prior of `prior_strength` pseudo-deals at p0, the
    (Laplace-smoothed) win rate of all deals closed by t: a new account starts at 0. Relative,
    and a rate rather than counts, so it does not move with the calendar: counts of earlier deals
    grow with it, and the win rate of the deals closed so far drifts with it (early on, only the
    fast closers are known). Either would let the model learn *when* a snapshot was taken, a time
    proxy that does not hold for the deals it scores.
    """
    closed = deals.filter(
        pl.col("closed_at").is_not_null() & pl.col("outcome").is_in(["won", "lost"])
    )
    won = (pl.col("outcome") == "won").cast(pl.Int64)
    per_key = (
        closed.group_by(key, "closed_at")
        .agg(won.sum().alias("_won"), (1 - won).sum().alias("_lost"))
        .sort(key, "closed_at")
        .with_columns(
            pl.col("_won").cum_sum().over(key).alias("_cum_won"),
            pl.col("_lost").cum_sum().over(key).alias("_cum_lost"),
        )
        .select(key, pl.col("closed_at").alias("_closed_at"), "_cum_won", "_cum_lost")
    )
    overall = (
        closed.group_by("closed_at")
        .agg(won.sum().alias("_w"), (1 - won).sum().alias("_l"))
        .sort("closed_at")
        .select(
            pl.col("closed_at").alias("_g_closed_at"),
            pl.col("_w").cum_sum().alias("_g_won"),
            pl.col("_l").cum_sum().alias("_g_lost"),
        )
    )
    joined = _asof(frame, per_key, "snapshot_at", "_closed_at", key).drop("_closed_at")
    joined = joined.sort("snapshot_at").join_asof(
        overall, left_on="snapshot_at", right_on="_g_closed_at", strategy="backward"
    )
    prior_won = pl.col("_cum_won").fill_null(0).cast(pl.Float64)
    prior_lost = pl.col("_cum_lost").fill_null(0).cast(pl.Float64)
    global_rate = (pl.col("_g_won").fill_null(0) + 1.0) / (
        pl.col("_g_won").fill_null(0) + pl.col("_g_lost").fill_null(0) + 2.0
    )
    rate = (prior_won + prior_strength * global_rate) / (prior_won + prior_lost + prior_strength)
    return joined.with_columns((rate - global_rate).alias(f"{prefix}_win_rate_vs_all")).drop(
        "_cum_won", "_cum_lost", "_g_closed_at", "_g_won", "_g_lost"
    )


def _account_attributes(frame: pl.DataFrame, accounts: pl.DataFrame | None) -> pl.DataFrame:
    """Static account attributes: employees, annual revenue, industry (null when unknown)."""
    columns = {
        "employees": ("account_employees", pl.Float64),
        "annual_revenue": ("account_annual_revenue", pl.Float64),
        "industry": ("account_industry", pl.String),
    }
    if accounts is None:
        return frame.with_columns(
            [pl.lit(None, dtype).alias(name) for name, dtype in columns.values()]
        )
    select = [pl.col("account_id")]
    for source, (name, dtype) in columns.items():
        expr = pl.col(source).cast(dtype) if source in accounts.columns else pl.lit(None, dtype)
        select.append(expr.alias(name))
    table = accounts.select(select).unique("account_id", keep="first")
    return frame.join(table, on="account_id", how="left")


def feature_labels(spec: FeatureSpec) -> dict[str, str]:
    """Plain words for every feature, as shown in reasons ("meetings with CTO, recent")."""
    labels = {
        "amount": "deal amount",
        "product": "product",
        "region": "region",
        "age_days": "deal age (days)",
        "days_to_expected_close": "days to expected close",
        "close_date_slips": "times the close date slipped",
        "close_date_changes": "times the close date changed",
        "stage_index": "stage (position in the sales process)",
        "days_in_stage": "days in current stage",
        "stage_changes": "stage changes so far",
        "stage_velocity": "stages advanced per 30 days",
        "behavior_score": f"behaviour score (role-weighted, {spec.decay_hours:g}h half-life)",
        "days_since_last_activity": "days since last activity",
        "distinct_roles_30d": "contact roles engaged, last 30 days",
        "activities_total": "activities since the deal was created",
        "activity_rate_30d": "activities per 30 days since created",
        "account_activities_30d": "account-level activities, last 30 days",
        "account_win_rate_vs_all": "account's win rate minus all deals' (smoothed)",
        "account_employees": "account employees",
        "account_annual_revenue": "account annual revenue",
        "account_industry": "account industry",
        "rep_win_rate_vs_all": "rep's win rate minus all deals' (smoothed)",
    }
    for c in [*spec.custom_numeric, *spec.custom_categorical]:
        labels[custom_feature_name(c)] = c.replace("_", " ")
    for w in spec.windows_days:
        labels[_window_name("activities", w)] = f"activities, last {w} days"
        for a in spec.activity_types:
            labels[_window_name(_type_col(a), w)] = f"{_plural(a)}, last {w} days"
        for r in spec.contact_roles:
            labels[_window_name(_role_col(r), w)] = (
                f"activities with {_role_words(r)}, last {w} days"
            )
    for a, r in spec.activity_pairs:
        labels[_pair_col(a, r)] = (
            f"{_plural(a)} with {_role_words(r)}, recent ({spec.decay_hours:g}h half-life)"
        )
    return labels


def _plural(activity_type: str) -> str:
    words = activity_type.replace("_", " ")
    return words if words.endswith("s") else f"{words}s"


def _role_words(role: str) -> str:
    if role == UNKNOWN_ROLE:
        return "unknown role"
    return role.upper() if len(role) <= 3 else role.replace("_", " ")
