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
from salesml.deals.snapshots import MICROS_PER_DAY, expected_close_in_force
from salesml.timeutil import DATETIME

UNKNOWN_ROLE = "unknown"
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
    renames spaces, so every character but letters, digits and `_` becomes `_`.
    """
    return re.sub(r"\W", "_", column)


@dataclass(frozen=True)
class Feature:
    """One deal feature declared once: its column, its plain words (reasons, behaviour value),
    the optional table it needs (None: `deals` alone), whether it holds category labels, and
    how it is computed, in the style of mlforecast's lag transforms (`window_count` builds the
    name from its parameters and carries the computation with it).

    `expr` reads the snapshot frame once every table's helper columns are joined (`_`-prefixed,
    null when the table is absent, so the expression gives the feature's no-table value);
    None: the column is taken as joined (deal and account attributes, custom columns). `agg`
    (activity aggregates only) is the aggregation over the snapshot's (snapshot, activity)
    pairs (`_recent_pairs`: `_age` in days, `_decay`, activity_type, contact_role,
    `_role_weight`) whose result `expr` then reads.
    """

    name: str
    label: str
    table: str | None = None
    categorical: bool = False
    expr: pl.Expr | None = field(default=None, compare=False)
    agg: pl.Expr | None = field(default=None, compare=False)


def _days(expr: pl.Expr) -> pl.Expr:
    return expr.dt.total_microseconds() / MICROS_PER_DAY


def _count(helper: str) -> pl.Expr:
    """A joined cumulative count at t (null: none yet) as a float."""
    return pl.col(helper).fill_null(0).cast(pl.Float64)


_ACTIVITIES = "activities"
_T = pl.col("snapshot_at")
_DEAL_AGE = pl.col("_deal_age")
"""Days from the deal's creation to t (a helper column; `age_days` is the feature)."""
_EXPECTED_CLOSE = pl.coalesce("_expected_now", "initial_expected_close_at")
"""The expected close date in force at t (the deal's own one until a change is known)."""

_DEAL_FEATURES = (
    Feature("product", "product", categorical=True),
    Feature("region", "region", categorical=True),
    Feature("age_days", "deal age (days)", expr=_DEAL_AGE),
    Feature("days_to_expected_close", "days to expected close", expr=_days(_EXPECTED_CLOSE - _T)),
)
_CLOSE_DATE_FEATURES = (
    Feature(
        "close_date_slips",
        "times the close date slipped",
        "deal_close_date_history",
        expr=_count("_slips"),
    ),
    Feature(
        "close_date_changes",
        "times the close date changed",
        "deal_close_date_history",
        expr=_count("_date_changes"),
    ),
)
_STAGE_FEATURES = (
    Feature(
        "stage_index",
        "stage (position in the sales process)",
        "deal_stage_history",
        expr=pl.col("_index"),
    ),
    Feature(
        "days_in_stage",
        "days in current stage",
        "deal_stage_history",
        expr=pl.coalesce(_days(_T - pl.col("_entered_at")), _DEAL_AGE),
    ),
    Feature(
        "stage_changes",
        "stage changes so far",
        "deal_stage_history",
        expr=_count("_stage_changes"),
    ),
    Feature(
        "stage_velocity",
        "stages advanced per 30 days",
        "deal_stage_history",
        expr=pl.col("_advance") / pl.max_horizontal(_DEAL_AGE, pl.lit(1.0)) * 30.0,
    ),
)
_ACCOUNT_FEATURES = (
    Feature("account_employees", "account employees", "accounts"),
    Feature("account_annual_revenue", "account annual revenue", "accounts"),
    Feature("account_industry", "account industry", "accounts", categorical=True),
)


def _activity_context(contact_roles: list[str]) -> list[Feature]:
    """Recency, roles engaged, totals since creation, and account-level activities."""
    roles_30 = [_window_name(_role_col(r), 30) for r in contact_roles]
    distinct = (
        pl.sum_horizontal([(pl.col(c).fill_null(0) > 0).cast(pl.Float64) for c in roles_30])
        if roles_30
        else pl.lit(0.0)
    )
    total = _count("_total")
    account = (pl.col("_cum").fill_null(0) - pl.col("_cum_before").fill_null(0)).cast(pl.Float64)
    return [
        Feature(
            "days_since_last_activity",
            "days since last activity",
            _ACTIVITIES,
            expr=_days(_T - pl.col("_last_activity_at")),
        ),
        Feature(
            "distinct_roles_30d", "contact roles engaged, last 30 days", _ACTIVITIES, expr=distinct
        ),
        Feature(
            "activities_total", "activities since the deal was created", _ACTIVITIES, expr=total
        ),
        Feature(
            "activity_rate_30d",
            "activities per 30 days since created",
            _ACTIVITIES,
            expr=total / pl.max_horizontal(_DEAL_AGE, pl.lit(1.0)) * 30.0,
        ),
        Feature(
            "account_activities_30d",
            "account-level activities, last 30 days",
            _ACTIVITIES,
            expr=account,
        ),
    ]


def _win_rate_vs_all(prefix: str, words: str, prior_strength: float) -> Feature:
    """`{prefix}_win_rate_vs_all` from the joined cumulative wins and losses (`_join_win_history`):
    the smoothed win rate of the account's (rep's) deals closed by t minus all deals' rate.
    """
    won = _count(f"_{prefix}_won")
    lost = _count(f"_{prefix}_lost")
    all_won = pl.col("_g_won").fill_null(0)
    global_rate = (all_won + 1.0) / (all_won + pl.col("_g_lost").fill_null(0) + 2.0)
    rate = (won + prior_strength * global_rate) / (won + lost + prior_strength)
    return Feature(
        f"{prefix}_win_rate_vs_all",
        f"{words} win rate minus all deals' (smoothed)",
        expr=rate - global_rate,
    )


def _aggregate(name: str, label: str, agg: pl.Expr) -> Feature:
    """An activity aggregate: `agg` over the pairs, 0 for a snapshot without any."""
    return Feature(
        name, label, _ACTIVITIES, expr=pl.col(name).cast(pl.Float64).fill_null(0.0), agg=agg
    )


def window_count(
    window_days: int, activity_type: str | None = None, contact_role: str | None = None
) -> Feature:
    """Activities with t - w < occurred_at <= t (w = `window_days`): all of them, or those of
    one type, or those with one contact role.
    """
    inside = pl.col("_age") < window_days
    if activity_type is not None:
        prefix, words = _type_col(activity_type), _plural(activity_type)
        inside = inside & (pl.col("activity_type") == activity_type)
    elif contact_role is not None:
        prefix, words = _role_col(contact_role), f"activities with {_role_words(contact_role)}"
        inside = inside & (pl.col("contact_role") == contact_role)
    else:
        prefix, words = "activities", "activities"
    name = _window_name(prefix, window_days)
    return _aggregate(name, f"{words}, last {window_days} days", inside.sum())


def decayed_pair(activity_type: str, contact_role: str, decay_hours: float) -> Feature:
    """The decayed count of one (activity type, contact role) pair: 0.5 ** (hours ago /
    decay_hours) summed over the pair's activities in the decay horizon.
    """
    words = f"{_plural(activity_type)} with {_role_words(contact_role)}"
    pair = (pl.col("activity_type") == activity_type) & (pl.col("contact_role") == contact_role)
    return _aggregate(
        _pair_col(activity_type, contact_role),
        f"{words}, recent ({decay_hours:g}h half-life)",
        pl.col("_decay").filter(pair).sum(),
    )


def behavior_score(decay_hours: float) -> Feature:
    """Every activity's decay weight times its contact role's weight (`deals.features.role_weights`)."""
    return _aggregate(
        "behavior_score",
        f"behaviour score (role-weighted, {decay_hours:g}h half-life)",
        (pl.col("_decay") * pl.col("_role_weight")).sum(),
    )


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
        """JSON-ready form (activity pairs as lists), read back by `from_dict`."""
        data = asdict(self)
        data["activity_pairs"] = [list(p) for p in self.activity_pairs]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        """The spec saved by `to_dict` (activity pairs back to tuples)."""
        values = dict(data)
        values["activity_pairs"] = [tuple(p) for p in values.get("activity_pairs", [])]
        return cls(**values)

    @property
    def categorical(self) -> list[str]:
        """Feature columns holding category labels (strings) rather than numbers: the built-in
        ones, then the custom ones.
        """
        custom = [custom_feature_name(c) for c in self.custom_categorical]
        built_in = [f.name for f in self.features() if f.categorical and f.name not in custom]
        return [*built_in, *custom]

    @property
    def inputs_note(self) -> str | None:
        """What the model does without, in plain words for the job's messages (None: nothing
        missing).
        """
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
        """Days of history before as_of the features read: the longest window or decay lookback."""
        return float(max([*self.windows_days, self.decay_lookback_days]))

    def uses(self, table: str | None) -> bool:
        """Whether the features needing `table` are in the set (None: `deals` alone, always)."""
        flags = {
            "activities": self.uses_activities,
            "accounts": self.uses_accounts,
            "deal_stage_history": self.uses_stage_history,
            "deal_close_date_history": self.uses_close_date_history,
        }
        return table is None or flags[table]

    def features(self, every: bool = False) -> list[Feature]:
        """Every feature, declared once, in column order; those needing a table the spec does
        not use are left out unless `every`.
        """
        declared = [
            Feature("amount", "deal amount"),
            *self.custom_features(),
            *_DEAL_FEATURES,
            *_CLOSE_DATE_FEATURES,
            *_STAGE_FEATURES,
            *self.activity_aggregates(),
            *_activity_context(self.contact_roles),
            _win_rate_vs_all("account", "account's", self.prior_strength),
            *_ACCOUNT_FEATURES,
            _win_rate_vs_all("rep", "rep's", self.prior_strength),
        ]
        return [f for f in declared if every or self.uses(f.table)]

    def feature_names(self) -> list[str]:
        """The feature columns `build_features` returns, in order."""
        return [f.name for f in self.features()]

    def activity_aggregates(self) -> list[Feature]:
        """The features aggregated over each snapshot's recent activities, in column order:
        window counts (all, by type, by role), decayed pairs, the behaviour score.
        """
        windows = self.windows_days
        return [
            *[window_count(w) for w in windows],
            *[window_count(w, activity_type=a) for a in self.activity_types for w in windows],
            *[window_count(w, contact_role=r) for r in self.contact_roles for w in windows],
            *[decayed_pair(a, r, self.decay_hours) for a, r in self.activity_pairs],
            behavior_score(self.decay_hours),
        ]

    def custom_features(self) -> list[Feature]:
        """Custom deal columns: LightGBM-safe names, the user's column name as the label."""
        return [
            Feature(
                custom_feature_name(c),
                c.replace("_", " "),
                categorical=c in self.custom_categorical,
            )
            for c in [*self.custom_numeric, *self.custom_categorical]
        ]


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
    attributes only, and `inputs_note` says so.
    """
    known = _deal_activities_known(tables.get("activities"), as_of)
    types, roles, pairs = _activity_vocabulary(known, settings.features.min_pair_occurrences)
    numeric, categorical = _custom_kinds(tables["deals"], settings.features.custom_features)
    spec = FeatureSpec(
        stage_order=_normalised_list("deals.stage_order", settings.stage_order),
        windows_days=sorted(settings.features.activity_windows_days),
        decay_hours=settings.features.decay_hours,
        decay_lookback_days=settings.features.decay_hours
        * settings.features.decay_horizon_half_lives
        / 24.0,
        role_weights=_normalised_keys(
            "deals.features.role_weights", settings.features.role_weights
        ),
        prior_strength=settings.features.prior_strength,
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
    _check_custom_names(spec, settings.features.custom_features)
    _check_unique_names(spec)
    return spec


def _deal_activities_known(activities: pl.DataFrame | None, as_of: datetime) -> pl.DataFrame | None:
    """Deal activities with a type known at `as_of`, the role filled ('unknown'); None without
    an activity log.
    """
    known = _known(activities, "occurred_at", as_of)
    if known is None:
        return None
    return known.filter(
        pl.col("deal_id").is_not_null() & pl.col("activity_type").is_not_null()
    ).with_columns(_role_expr().alias("contact_role"))


def _activity_vocabulary(
    known: pl.DataFrame | None, min_pair_occurrences: int
) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """(activity types, contact roles, (type, role) pairs seen at least `min_pair_occurrences`
    times), each sorted: which activity features exist.
    """
    if known is None:
        return [], [], []
    types = sorted(known.get_column("activity_type").unique().to_list())
    roles = sorted(known.get_column("contact_role").unique().to_list())
    counts = known.group_by("activity_type", "contact_role").len()
    frequent = counts.filter(pl.col("len") >= min_pair_occurrences).sort(
        "activity_type", "contact_role"
    )
    pairs = list(
        zip(frequent["activity_type"].to_list(), frequent["contact_role"].to_list(), strict=True)
    )
    return types, roles, pairs


def _custom_kinds(deals: pl.DataFrame, columns: list[str]) -> tuple[list[str], list[str]]:
    """(numeric, categorical) custom deal columns (booleans count as numeric); a column that
    deals lacks is refused by name.
    """
    numeric: list[str] = []
    categorical: list[str] = []
    for name in columns:
        if name not in deals.columns:
            raise ConfigError(
                f"deals.features.custom_features: '{name}' is not a column of deals; "
                f"columns: {', '.join(deals.columns)}"
            )
        dtype = deals.schema[name]
        (numeric if dtype.is_numeric() or dtype == pl.Boolean else categorical).append(name)
    return numeric, categorical


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
    (closed_at, outcome: the label) or another custom feature; refused by name.
    """
    built_in = replace(spec, custom_numeric=[], custom_categorical=[])
    taken = {*built_in.feature_names(), *input_columns("deals"), *_RESERVED}
    seen: dict[str, str] = {}
    for column in columns:
        name = custom_feature_name(column)
        if name in taken or name.startswith("_"):
            raise ConfigError(
                f"deals.features.custom_features: '{column}' is the name of a built-in feature or of a "
                "column salesml uses; drop it from custom_features, or give the column another "
                "name with column_map"
            )
        if name in seen:
            raise ConfigError(
                f"deals.features.custom_features: '{seen[name]}' and '{column}' both become the feature "
                f"'{name}'; rename one with column_map"
            )
        seen[name] = column


def _check_unique_names(spec: FeatureSpec) -> None:
    """Category names of the data may still clash as feature names (`with_cto` as an activity
    type and `cto` as a role both give `n_with_cto_7d`); say so instead of failing later.
    """
    names = spec.feature_names()
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash is not None:
        raise FeatureNameError(
            f"activities: two activity types or contact roles give the feature name '{clash}'; "
            "rename one of them in the data"
        )


def build_features(
    snapshots: pl.DataFrame, tables: dict[str, pl.DataFrame], spec: FeatureSpec
) -> pl.DataFrame:
    """Features for each (deal_id, snapshot_at) row, returned in the input order.

    Output: deal_id, snapshot_at, the CONTEXT columns (stage name, expected close at t), then
    `spec.feature_names()`, then the HEALTH_CONTEXT columns that are not features. Categorical
    features are strings (the model encodes them); numeric features are Float64 with null
    where unknown. Each table's join adds `_` helper columns; the declared features
    (`FeatureSpec.features`) are then computed from them in one pass.
    """
    deals = tables["deals"]
    frame = _base(snapshots, deals, spec)
    # integer deal keys make the range join with activities cheap
    keys = frame.select("deal_id", "_deal").unique()
    activities = _used(tables, "activities", spec)
    frame = _join_close_dates(frame, _used(tables, "deal_close_date_history", spec))
    frame = _join_stages(frame, _used(tables, "deal_stage_history", spec), spec)
    frame = _join_activity_summary(frame, activities, keys, spec)
    frame = _join_account_activities(frame, activities)
    frame = _join_win_history(frame, deals, "account_id", "account")
    frame = _join_win_history(frame, deals, "owner_id", "rep")
    frame = _join_overall_wins(frame, deals)
    frame = _account_attributes(frame, _used(tables, "accounts", spec))
    frame = frame.with_columns(
        *[f.expr.alias(f.name) for f in spec.features(every=True) if f.expr is not None],
        pl.col("_stage").alias("stage"),
        _EXPECTED_CLOSE.alias("expected_close_at"),
    )
    names = spec.feature_names()
    categorical = set(spec.categorical)  # once: each call declares every feature afresh
    numeric = [n for n in names if n not in categorical]
    return frame.sort("_row").select(
        "deal_id",
        "snapshot_at",
        *CONTEXT,
        *[pl.col(n).cast(pl.Float64) if n in numeric else pl.col(n).cast(pl.String) for n in names],
        *[pl.col(n).cast(pl.Float64) for n in HEALTH_CONTEXT if n not in names],
    )


def _base(snapshots: pl.DataFrame, deals: pl.DataFrame, spec: FeatureSpec) -> pl.DataFrame:
    """The snapshot rows (`_row` = input position) with the deal's static attributes, its
    integer key `_deal` and its age at t in days (`_deal_age`).
    """
    return (
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
        .with_columns(
            pl.col("deal_id").rank("dense").cast(pl.UInt32).alias("_deal"),
            _days(_T - pl.col("created_at")).alias("_deal_age"),
        )
    )


def _used(tables: dict[str, pl.DataFrame], table: str, spec: FeatureSpec) -> pl.DataFrame | None:
    """An optional table if the spec's features use it, else None (its features are left out,
    and scoring ignores a table that appeared after training).
    """
    return tables.get(table) if spec.uses(table) else None


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


def _nulls(frame: pl.DataFrame, dtypes: dict[str, pl.DataType]) -> pl.DataFrame:
    """Typed null helper columns: what a join adds when its table is absent or empty."""
    return frame.with_columns([pl.lit(None, dtype).alias(name) for name, dtype in dtypes.items()])


def _join_close_dates(frame: pl.DataFrame, history: pl.DataFrame | None) -> pl.DataFrame:
    """Helpers `_expected_now` (expected close in force at t: `expected_close_in_force`),
    `_slips` (changes to a later date) and `_date_changes` (all changes), from the changes
    known at t.
    """
    if history is None or history.height == 0:
        frame = _nulls(frame, {"_slips": pl.Int32(), "_date_changes": pl.Int64()})
        return _close_in_force(frame, None)
    initial = frame.select("deal_id", "initial_expected_close_at").unique("deal_id")
    changes = (
        history.select("deal_id", "changed_at", "expected_close_at")
        .join(initial, on="deal_id", how="inner")
        .sort("deal_id", "changed_at", "expected_close_at", maintain_order=True)
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
            pl.int_range(1, pl.len() + 1).over("deal_id").alias("_date_changes"),
        )
    )
    return _close_in_force(frame, changes, ("_slips", "_date_changes"))


def _close_in_force(
    frame: pl.DataFrame, history: pl.DataFrame | None, carry: tuple[str, ...] = ()
) -> pl.DataFrame:
    return expected_close_in_force(
        frame,
        history,
        time="snapshot_at",
        initial="initial_expected_close_at",
        alias="_expected_now",
        carry=carry,
    )


def _join_stages(
    frame: pl.DataFrame, history: pl.DataFrame | None, spec: FeatureSpec
) -> pl.DataFrame:
    """Helpers of the stage at t: `_stage`, `_entered_at`, `_index` (position in the
    configured order), `_stage_changes` and `_advance` (positions advanced since the first
    recorded stage). Without stage history the deal has no stage and `days_in_stage` is its
    age.
    """
    if history is None or history.height == 0:
        return _nulls(
            frame,
            {
                "_stage": pl.String(),
                "_entered_at": frame.schema["snapshot_at"],
                "_index": pl.Float64(),
                "_stage_changes": pl.Int64(),
                "_advance": pl.Float64(),
            },
        )
    order = pl.DataFrame(
        {"_stage": spec.stage_order, "_index": list(range(len(spec.stage_order)))},
        schema={"_stage": pl.String, "_index": pl.Float64},
    )
    stages = (
        history.select("deal_id", pl.col("stage").alias("_stage"), "entered_at")
        .join(frame.select("deal_id").unique(), on="deal_id", how="semi")
        .join(order, on="_stage", how="left")
        .sort("deal_id", "entered_at", "_index", nulls_last=True)
        .with_columns(
            pl.int_range(0, pl.len()).over("deal_id").alias("_stage_changes"),
            (pl.col("_index") - pl.col("_index").first().over("deal_id")).alias("_advance"),
        )
        .unique(["deal_id", "entered_at"], keep="last", maintain_order=True)
        .rename({"entered_at": "_entered_at"})
    )
    return _asof(frame, stages, "snapshot_at", "_entered_at", "deal_id")


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
    age in days (`_age`) and decay weight (`_decay`, 0 beyond the decay horizon).
    """
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


def _join_activity_summary(
    frame: pl.DataFrame,
    activities: pl.DataFrame | None,
    keys: pl.DataFrame,
    spec: FeatureSpec,
) -> pl.DataFrame:
    """The activity aggregates of each snapshot (`FeatureSpec.activity_aggregates`: null for a
    snapshot without activities in its lookback), and helpers `_last_activity_at` and `_total`
    (the deal's activities up to t).

    A range join pairs each snapshot with its deal's activities in (t - lookback, t]; the
    lookback covers the longest window and `decay_horizon_half_lives` half-lives (older
    activities weigh < 2**-horizon and are dropped from the decayed sums). A window of w days
    holds activities with t - w < occurred_at <= t.
    """
    aggregates = spec.activity_aggregates()
    if activities is None or activities.height == 0:
        helpers = {"_last_activity_at": frame.schema["snapshot_at"], "_total": pl.UInt32()}
        return _nulls(frame, {**{f.name: pl.Float64() for f in aggregates}, **helpers})
    acts = _deal_activities(activities, keys, spec)
    pairs = _recent_pairs(frame.select("_row", "_deal", "snapshot_at"), acts, spec)
    summary = pairs.group_by("_row").agg(
        f.agg.alias(f.name) for f in aggregates if f.agg is not None
    )
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
    out = frame.join(summary, on="_row", how="left")
    return _asof(out, cumulative, "snapshot_at", "_last_activity_at", "_deal")


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


def _join_account_activities(frame: pl.DataFrame, activities: pl.DataFrame | None) -> pl.DataFrame:
    """Helpers `_cum` and `_cum_before`: the account-level activities (no deal) up to t and up
    to t - 30 days, whose difference is the account's activities in the 30 days to t.
    """
    if activities is None or activities.height == 0:
        return _nulls(frame, {"_cum": pl.UInt32(), "_cum_before": pl.UInt32()})
    cumulative = (
        activities.filter(pl.col("deal_id").is_null())
        .group_by("account_id", "occurred_at")
        .len()
        .sort("account_id", "occurred_at")
        .with_columns(pl.col("len").cum_sum().over("account_id").alias("_cum"))
        .select("account_id", "occurred_at", "_cum")
    )
    now = _asof(frame, cumulative, "snapshot_at", "occurred_at", "account_id").drop("occurred_at")
    return _asof(
        now.with_columns((pl.col("snapshot_at") - pl.duration(days=30)).alias("_from")),
        cumulative.rename({"_cum": "_cum_before"}),
        "_from",
        "occurred_at",
        "account_id",
    ).drop("occurred_at", "_from")


def _closed_deals(deals: pl.DataFrame) -> pl.DataFrame:
    return deals.filter(
        pl.col("closed_at").is_not_null() & pl.col("outcome").is_in(["won", "lost"])
    )


_WON = (pl.col("outcome") == "won").cast(pl.Int64)


def _join_win_history(
    frame: pl.DataFrame, deals: pl.DataFrame, key: str, prefix: str
) -> pl.DataFrame:
    """Helpers `_{prefix}_won` / `_{prefix}_lost`: the account's (or rep's, by `key`) deals
    won / lost with closed_at <= t (the deal itself is open at t, so never counts).

    `{prefix}_win_rate_vs_all` turns them into a smoothed win rate relative to all deals': a
    rate, not counts, so it does not move with the calendar (counts of earlier deals grow with
    it; the raw win rate of the deals closed so far drifts with it, early on only the fast
    closers are known), a time proxy that would not hold for the deals it scores.
    """
    per_key = (
        _closed_deals(deals)
        .group_by(key, "closed_at")
        .agg(_WON.sum().alias("_won"), (1 - _WON).sum().alias("_lost"))
        .sort(key, "closed_at")
        .select(
            key,
            pl.col("closed_at").alias("_closed_at"),
            pl.col("_won").cum_sum().over(key).alias(f"_{prefix}_won"),
            pl.col("_lost").cum_sum().over(key).alias(f"_{prefix}_lost"),
        )
    )
    return _asof(frame, per_key, "snapshot_at", "_closed_at", key).drop("_closed_at")


def _join_overall_wins(frame: pl.DataFrame, deals: pl.DataFrame) -> pl.DataFrame:
    """Helpers `_g_won` / `_g_lost`: all deals won / lost with closed_at <= t (the prior
    p0 = (won + 1) / (closed + 2) of the win-rate features, `prior_strength` pseudo-deals).
    """
    overall = (
        _closed_deals(deals)
        .group_by("closed_at")
        .agg(_WON.sum().alias("_w"), (1 - _WON).sum().alias("_l"))
        .sort("closed_at")
        .select(
            pl.col("closed_at").alias("_g_closed_at"),
            pl.col("_w").cum_sum().alias("_g_won"),
            pl.col("_l").cum_sum().alias("_g_lost"),
        )
    )
    return (
        frame.sort("snapshot_at")
        .join_asof(overall, left_on="snapshot_at", right_on="_g_closed_at", strategy="backward")
        .drop("_g_closed_at")
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
    """Plain words for every feature, as shown in reasons ("meetings with CTO, recent"); also
    for the features of tables the spec does not use (health context reads them).
    """
    labels = {f.name: f.label for f in spec.features(every=True)}
    labels.update({f.name: f.label for f in spec.custom_features()})
    return labels


def _plural(activity_type: str) -> str:
    words = activity_type.replace("_", " ")
    return words if words.endswith("s") else f"{words}s"


def _role_words(role: str) -> str:
    if role == UNKNOWN_ROLE:
        return "unknown role"
    return role.upper() if len(role) <= 3 else role.replace("_", " ")
