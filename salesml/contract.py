"""The data contract: pandera schemas (polars backend) for every table in SPEC.md.

One declaration per table (`_INPUTS`, `_OUTPUTS`) drives everything else, so the schemas, the
canonical dtypes (`input_dtypes`, `output_dtypes`, from which the warehouse derives its DDL), the
keys and the event-time columns cannot drift apart.

Conventions:
- every datetime is `pl.Datetime("us", "UTC")` (`salesml.timeutil.DATETIME`);
- input schemas describe the *canonical* frame that `salesml.sources` hands to validation
  (after `column_map`); a column marked optional may be absent in a source and is then
  added as nulls by `salesml.validation.conform`;
- output schemas are strict (a column the contract does not declare is refused: the warehouse
  stores exactly the declared columns); the lineage columns `as_of`, `run_id` and
  `model_version` are declared but not required in a frame, because the warehouse stamps them;
- every Float64 column, input or output, carries the `finite` check (NaN and +-inf fail it):
  a non-finite number is never a value, it is a bug upstream or a broken export;
- columns marked `label` hold category names (activity types, contact roles, stages) that
  become feature names and config keys; `normalise_label` gives them one spelling at read time.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime

import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData

from salesml.timeutil import DATETIME

OUTCOMES = ("won", "lost")
HEALTH_VALUES = ("red", "yellow", "green")
DEMAND_AGG_LEVELS = ("sku_day", "sku_week", "customer_day", "region_day", "total_bucket")
SCORE_BASES = ("model", "prior", "base_rate")
FORECAST_BASES = ("model", "cold_start")
RUN_STATUSES = ("running", "succeeded", "failed", "abandoned")
QUALITY_KINDS = ("backtest", "realised")
CHANGE_KINDS = ("new", "up", "down", "unchanged", "closed_won", "closed_lost", "gone")
WATERFALL_STEPS = (
    "start",
    "new",
    "won",
    "lost",
    "slipped_out",
    "pulled_in",
    "score_change",
    "end",
)
VIEW_DIMENSIONS = ("all", "region", "owner")
RISK_BASES = ("drop_since_last_run", "unlikely_to_win")
ALERT_STATUSES = ("open", "resolved")
ALERT_SEVERITIES = ("low", "medium", "high")
ACTION_KINDS = ("action", "warning")


@dataclass(frozen=True)
class ColumnSpec:
    """One column of the contract.

    required: the column must be present in a frame (absent optional input columns are added as
    nulls). nullable: null values are allowed. unique: no two rows share a value. label: a
    category name, normalised by `normalise_label` when read (so `Demo` and `demo ` are one).
    """

    dtype: pl.DataType
    nullable: bool = True
    required: bool = True
    unique: bool = False
    checks: tuple[pa.Check, ...] = field(default_factory=tuple)
    description: str = ""
    label: bool = False
    backfill: str | None = None
    """For a key column added after tables were written: the value older rows get when the
    warehouse rebuilds such a table with the new key (`salesml.migrations.conform_all`)."""
    any_dtype: bool = False
    """The schema accepts any dtype (the warehouse stores and returns the one written, e.g. an
    Enum of stage names); `dtype` is then only the default for DDL and empty frames."""


def _col(
    dtype: pl.DataType,
    *,
    nullable: bool = True,
    required: bool = True,
    unique: bool = False,
    checks: tuple[pa.Check, ...] = (),
    description: str = "",
    label: bool = False,
) -> ColumnSpec:
    return ColumnSpec(dtype, nullable, required, unique, checks, description, label)


def _key(dtype: pl.DataType, description: str = "") -> ColumnSpec:
    """A not-null column that is part of a table's key."""
    return ColumnSpec(dtype, nullable=False, description=description)


# ---------------------------------------------------------------------------------------------
# Category labels
# ---------------------------------------------------------------------------------------------
_LABEL_GAPS = r"[\W_]+"
"""Runs of anything but letters and digits (Unicode-aware): one `_` in a label."""


def normalise_label(text: str) -> str:
    """One spelling of a category name: trimmed, lower-case, runs of spaces and punctuation as
    one `_` (`" Tech-Doc shared"` -> `tech_doc_shared`); letters of any script are kept.

    Activity types, contact roles and stage names become feature names (`n_demo_7d`) and keys
    of config (`role_weights`, `stage_order`), so two spellings of one name must not become two
    categories, and two names must never map to one feature. Idempotent; may return "".
    """
    return re.sub(_LABEL_GAPS, "_", text.strip().lower()).strip("_")


def label_expr(text: pl.Expr) -> pl.Expr:
    """`normalise_label` on a String expression; a value with no letter or digit becomes null."""
    lowered = text.str.strip_chars().str.to_lowercase()
    label = lowered.str.replace_all(_LABEL_GAPS, "_").str.strip_chars("_")
    return pl.when(label != "").then(label)


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------
def _finite_values(data: PolarsData) -> pl.LazyFrame:
    """NaN and +-inf fail; nulls are the `nullable` rule's business."""
    return data.lazyframe.select(pl.col(data.key).is_finite().fill_null(True))


FINITE = pa.Check(
    _finite_values, name="finite", error="must be a finite number (not NaN or infinite)"
)


def _non_negative() -> pa.Check:
    return pa.Check.ge(0, name="non_negative", error="must be >= 0")


def _one_of(values: tuple[str, ...]) -> pa.Check:
    return pa.Check.isin(
        list(values), name="allowed_values", error=f"must be one of: {', '.join(values)}"
    )


def _probability() -> pa.Check:
    return pa.Check.in_range(0, 1, name="probability", error="must be between 0 and 1")


def _rank() -> pa.Check:
    return pa.Check.ge(1, name="rank_from_one", error="must be >= 1")


def _quantiles_ordered(data: PolarsData) -> pl.LazyFrame:
    """p10 <= p50 <= p90 (nulls pass), with a tolerance for float rounding."""
    tol = 1e-9
    p10, p50, p90 = pl.col("p10"), pl.col("p50"), pl.col("p90")
    ok = ((p10 <= p50 + tol) & (p50 <= p90 + tol)).fill_null(True)
    return data.lazyframe.select(ok)


QUANTILES_ORDERED = pa.Check(
    _quantiles_ordered, name="quantiles_ordered", error="needs p10 <= p50 <= p90"
)


def _scored_or_reason(data: PolarsData) -> pl.LazyFrame:
    """A deal row has a probability and a health, or else a reason it was not scored."""
    frame = data.lazyframe
    if "not_scored_reason" not in frame.collect_schema():
        return frame.select(
            pl.col("win_probability").is_not_null() & pl.col("health").is_not_null()
        )
    scored = pl.col("win_probability").is_not_null() & pl.col("health").is_not_null()
    return frame.select(scored ^ pl.col("not_scored_reason").is_not_null())


SCORED_OR_REASON = pa.Check(
    _scored_or_reason,
    name="scored_or_reason",
    error="needs win_probability and health, or else a not_scored_reason (not both)",
)

_STR = pl.String()
_F64 = pl.Float64()
_I64 = pl.Int64()

# ---------------------------------------------------------------------------------------------
# Input tables (SPEC "Input tables", plus the team's deal_close_date_history)
# ---------------------------------------------------------------------------------------------
_INPUTS: dict[str, dict[str, ColumnSpec]] = {
    "deals": {
        "deal_id": _col(_STR, nullable=False, unique=True),
        "account_id": _col(_STR, nullable=False),
        "owner_id": _col(_STR, nullable=False, description="sales rep"),
        "region": _col(_STR, required=False),
        "product": _col(_STR, required=False),
        "amount": _col(_F64, required=False, checks=(_non_negative(),)),
        "created_at": _col(DATETIME, nullable=False),
        "expected_close_at": _col(
            DATETIME, required=False, description="expected close as set when the deal was created"
        ),
        "closed_at": _col(DATETIME, description=">= created_at; null while open"),
        "outcome": _col(
            _STR, checks=(_one_of(OUTCOMES),), description="null exactly when closed_at is null"
        ),
    },
    "deal_stage_history": {
        "deal_id": _col(_STR, nullable=False),
        "stage": _col(
            _STR, nullable=False, label=True, description="order set by deals.stage_order"
        ),
        "entered_at": _col(DATETIME, nullable=False),
    },
    "deal_close_date_history": {
        "deal_id": _col(_STR, nullable=False),
        "changed_at": _col(DATETIME, nullable=False),
        "expected_close_at": _col(DATETIME, nullable=False, description="the new expected close"),
    },
    "activities": {
        "activity_id": _col(_STR, nullable=False, unique=True),
        "deal_id": _col(_STR, description="null for an account-level activity"),
        "account_id": _col(_STR, nullable=False),
        "occurred_at": _col(DATETIME, nullable=False),
        "activity_type": _col(
            _STR, nullable=False, label=True, description="email, call, meeting, demo, ..."
        ),
        "contact_role": _col(
            _STR, required=False, label=True, description="cto, engineer, procurement, ..."
        ),
    },
    "accounts": {
        "account_id": _col(_STR, nullable=False, unique=True),
        "industry": _col(_STR, required=False),
        "region": _col(_STR, required=False),
        "employees": _col(_F64, required=False, checks=(_non_negative(),)),
        "annual_revenue": _col(_F64, required=False, checks=(_non_negative(),)),
    },
    "sales": {
        "ts": _col(DATETIME, nullable=False, description="event time of the sale"),
        "customer_id": _col(_STR, nullable=False, description="a customer or a store"),
        "sku": _col(_STR, nullable=False),
        "quantity": _col(_F64, nullable=False, description="negative = return"),
        "unit_price": _col(_F64, required=False, checks=(_non_negative(),)),
        "region": _col(_STR, required=False),
    },
    "signals": {
        "ts": _col(DATETIME, nullable=False),
        "name": _col(_STR, nullable=False, description="known in advance or observed (config)"),
        "value": _col(_F64, nullable=False),
        "sku": _col(_STR, required=False, description="scope; null = all SKUs"),
        "customer_id": _col(_STR, required=False, description="scope; null = all customers"),
        "region": _col(_STR, required=False, description="scope; null = all regions"),
    },
    "inventory": {
        "ts": _col(DATETIME, nullable=False),
        "customer_id": _col(_STR, nullable=False),
        "sku": _col(_STR, nullable=False),
        "on_hand": _col(_F64, nullable=False),
    },
}

JOB_INPUTS: dict[str, tuple[str, ...]] = {
    "deal-win": (
        "deals",
        "deal_stage_history",
        "deal_close_date_history",
        "activities",
        "accounts",
    ),
    "demand": ("sales", "signals", "inventory"),
}
"""The input tables each job reads; the first one is the one it needs (SPEC "What each job
needs"), the others are optional and may be absent or empty (a CRM export without an activity
log, a shop without inventory). The one declaration: `validation.JOB_INPUTS`, the jobs'
`INPUTS` and `REQUIRED_INPUTS` are this (declared here, not in validation, because validation
imports this module)."""

REQUIRED_INPUTS: frozenset[str] = frozenset(names[0] for names in JOB_INPUTS.values())
"""Tables some job cannot run without (deals, sales); every other input table is optional."""
OPTIONAL_INPUTS: frozenset[str] = frozenset(_INPUTS) - REQUIRED_INPUTS

# Validation order: deals first so tables that point at deals are checked against valid deals.
INPUT_ORDER: tuple[str, ...] = (
    "deals",
    "deal_stage_history",
    "deal_close_date_history",
    "activities",
    "accounts",
    "sales",
    "signals",
    "inventory",
)

EVENT_TIME: dict[str, str] = {
    "deals": "created_at",
    "deal_stage_history": "entered_at",
    "deal_close_date_history": "changed_at",
    "activities": "occurred_at",
    "sales": "ts",
    "signals": "ts",
    "inventory": "ts",
}
"""The column each input table is filtered on for `as_of` (rows after it are the future).
`accounts` is static and has none. Deals closed after as_of are kept but shown open."""

FUTURE_CHECKED: dict[str, tuple[str, ...]] = {
    **{table: (column,) for table, column in EVENT_TIME.items()},
    "deals": ("created_at", "closed_at"),
}
"""Columns that may not lie after `as_of` in validated data (planned dates such as
expected_close_at may; known-in-advance signals may too)."""

ID_COLUMNS: dict[str, tuple[str, ...]] = {
    "deals": ("deal_id",),
    "deal_stage_history": ("deal_id", "stage", "entered_at"),
    "deal_close_date_history": ("deal_id", "changed_at"),
    "activities": ("activity_id",),
    "accounts": ("account_id",),
    "sales": ("ts", "customer_id", "sku"),
    "signals": ("ts", "name"),
    "inventory": ("ts", "customer_id", "sku"),
}
"""Columns that identify a row in messages (example rows of a failed validation)."""

REFERENCES: dict[str, tuple[str, str, str]] = {
    "deal_stage_history": ("deal_id", "deals", "deal_id"),
    "deal_close_date_history": ("deal_id", "deals", "deal_id"),
    "activities": ("deal_id", "deals", "deal_id"),
}
"""table -> (column, referenced table, referenced column); a non-null value must exist there."""


# ---------------------------------------------------------------------------------------------
# Output tables (SPEC "Output tables")
# ---------------------------------------------------------------------------------------------
def _lineage(model_version: bool = True) -> dict[str, ColumnSpec]:
    cols = {
        "as_of": _col(DATETIME, nullable=False, required=False, description="stamped on write"),
        "run_id": _col(_STR, nullable=False, required=False, description="stamped on write"),
    }
    if model_version:
        cols["model_version"] = _col(_STR, required=False, description="registry version")
        cols["mlflow_run_id"] = _col(
            _STR, required=False, description="the MLflow run that trained the model"
        )
    return cols


_OUTPUTS: dict[str, dict[str, ColumnSpec]] = {
    "deal_scores": {
        **_lineage(),
        "deal_id": _key(_STR),
        "win_probability": _col(
            _F64,
            checks=(_probability(),),
            description="probability of `probability_event`; every open deal has one",
        ),
        "score_basis": _col(
            _STR,
            required=False,
            checks=(_one_of(SCORE_BASES),),
            description="model, prior (younger than deals.min_open_days) or base_rate (no "
            "model with skill)",
        ),
        "basis_reason": _col(_STR, required=False, description="why prior or base_rate"),
        "probability_event": _col(
            _STR, required=False, description="the event, e.g. 'won within 90 days of as_of'"
        ),
        "health": _col(_STR, checks=(_one_of(HEALTH_VALUES),)),
        "not_scored_reason": _col(
            _STR, required=False, description="legacy: rows written before every deal got a score"
        ),
        "health_reasons": _col(_STR, description="JSON array of plain-language reasons"),
        "top_factors": _col(_STR, description="JSON array of the top drivers in plain words"),
        "raw_score": _col(
            _F64, required=False, description="the model's log-odds; null unless basis is model"
        ),
        "contribution_unit": _col(
            _STR, required=False, description="unit of the factors' contributions (log-odds)"
        ),
        "stage": ColumnSpec(
            _STR,
            required=False,
            any_dtype=True,  # String, or an Enum of stage names: stored as written
            description="the deal's stage at as_of",
        ),
        "days_in_stage": _col(
            _F64, required=False, description="days in the current stage at as_of"
        ),
    },
    "deal_score_factors": {
        **_lineage(),
        "deal_id": _key(_STR),
        "rank": _col(_I64, nullable=False, checks=(_rank(),)),
        "feature": _col(_STR, nullable=False),
        "feature_value": _col(_STR, description="the feature's value, as text"),
        "contribution": _col(_F64, nullable=False, description="SHAP, log-odds"),
        "text": _col(_STR, required=False, description="the driver in plain words"),
        "contribution_unit": _col(
            _STR, required=False, description="unit of `contribution` (log-odds)"
        ),
    },
    "pipeline_forecast": {
        **_lineage(),
        "period": _key(_STR, "calendar period label, e.g. '2024-07' or '2024-Q3'"),
        "dimension": _key(_STR, "'all', 'region', 'owner' or 'team' (when the deals have one)"),
        "member": _key(_STR, "the region / owner / team; 'all' for dimension 'all'"),
        "expected_revenue": _col(
            _F64,
            nullable=False,
            checks=(_non_negative(),),
            description="revenue won with a close inside the period by deals open at as_of",
        ),
        "p10": _col(_F64, checks=(_non_negative(),)),
        "p50": _col(_F64, checks=(_non_negative(),)),
        "p90": _col(_F64, checks=(_non_negative(),)),
        "n_deals": _col(
            _I64,
            required=False,
            checks=(_non_negative(),),
            description="open deals with a chance to be won inside the period",
        ),
    },
    "demand_forecast": {
        **_lineage(),
        "customer_id": _key(_STR),
        "sku": _key(_STR),
        "bucket_start": _key(DATETIME, "start of the bucket, aligned to midnight in timezone"),
        "scenario": ColumnSpec(
            _STR,
            nullable=False,
            required=False,  # stamped by the warehouse's scoped write; a key column
            description="'baseline' (the normal run) or a what-if's name (`--scenario`)",
            backfill="baseline",  # rows written before scenarios existed
        ),
        "horizon": _col(_I64, nullable=False, checks=(_rank(),), description="buckets ahead"),
        "p10": _col(_F64, nullable=False, description="whole units; P10 <= expected"),
        "p50": _col(_F64, nullable=False, description="whole-unit median"),
        "p90": _col(_F64, nullable=False, description="whole units; expected < P90 + 1"),
        "expected": _col(
            _F64, required=False, description="mean demand (P50 is the median; sum means)"
        ),
        "basis": _col(
            _STR,
            required=False,
            checks=(_one_of(FORECAST_BASES),),
            description="'model', or 'cold_start' (too little history: from similar series); "
            "null on rows written before it existed",
        ),
    },
    "demand_forecast_agg": {
        **_lineage(),
        "level": _col(_STR, nullable=False, checks=(_one_of(DEMAND_AGG_LEVELS),)),
        "key": _key(_STR, "the sku, customer_id or region ('unknown' if none); 'all' for total"),
        "period_start": _key(
            DATETIME, "local start of the bucket, day or ISO week (Monday) in timezone"
        ),
        "buckets": _col(
            _I64, checks=(_rank(),), description="forecast buckets summed (partial first/last)"
        ),
        "expected": _col(_F64, nullable=False, description="sum of the cell means (coherent)"),
        "p10": _col(_F64, nullable=False, checks=(_non_negative(),), description="whole units"),
        "p50": _col(_F64, nullable=False, description="whole-unit median"),
        "p90": _col(_F64, nullable=False, description="whole units"),
    },
    "demand_forecast_factors": {
        **_lineage(),
        "customer_id": _key(_STR),
        "sku": _key(_STR),
        "bucket_start": _key(DATETIME),
        "rank": _col(_I64, nullable=False, checks=(_rank(),)),
        "feature": _col(_STR, nullable=False),
        "feature_value": _col(_STR, required=False),
        "contribution": _col(_F64, nullable=False, description="SHAP, expected units per bucket"),
        "text": _col(_STR, required=False),
    },
    "sku_health": {
        **_lineage(),
        "customer_id": _key(_STR),
        "sku": _key(_STR),
        "health": _col(_STR, nullable=False, checks=(_one_of(HEALTH_VALUES),)),
        "reasons": _col(_STR, description="JSON array of plain-language reasons"),
        "on_hand": _col(_F64),
        "projected_stockout_at": _col(DATETIME),
    },
    "deal_actions": {
        **_lineage(),
        "deal_id": _key(_STR),
        "rank": _col(_I64, nullable=False, checks=(_rank(),), description="actions first"),
        "kind": _col(
            _STR,
            nullable=False,
            checks=(_one_of(ACTION_KINDS),),
            description="action (model re-score) or warning (a rule; no uplift)",
        ),
        "action": _col(_STR, nullable=False, description="the action or warning in plain words"),
        "activity_type": _col(_STR, description="the activity to add; null for most warnings"),
        "contact_role": _col(_STR, description="with whom; null for most warnings"),
        "within_hours": _col(_I64, description="do it within (the activity decay half-life)"),
        "win_probability": _col(
            _F64, checks=(_probability(),), description="the deal's probability now"
        ),
        "uplift": _col(
            _F64,
            description="win_probability_after - win_probability (0.06 = 6 probability points) "
            "if done at as_of; the model's association, not a measured causal effect",
        ),
        "uplift_over_any_activity": _col(
            _F64,
            description="win_probability_after - the probability after one activity of no "
            "particular type or role: what this type and role add over any touch",
        ),
        "win_probability_after": _col(
            _F64, checks=(_probability(),), description="re-scored with the activity added"
        ),
    },
    "behavior_value": {
        **_lineage(),
        "activity_type": _key(_STR),
        "contact_role": _key(_STR, "'unknown' when the activity had no role"),
        "occurrences": _col(_I64, nullable=False, checks=(_non_negative(),)),
        "mean_contribution": _col(
            _F64, description="average SHAP contribution of one such activity to win probability"
        ),
        "mean_contribution_log_odds": _col(
            _F64, required=False, description="the same average in log-odds (model units)"
        ),
        "snapshots_with_activity": _col(
            _I64,
            required=False,
            checks=(_non_negative(),),
            description="training snapshots with at least one such activity",
        ),
    },
    "alerts": {
        **_lineage(model_version=False),  # as_of / run_id: the run that last wrote the row
        "alert_key": _key(_STR, "hash of rule_id, kind, subject and occurrence (salesml.alerts)"),
        "rule_id": _col(_STR, nullable=False, description="the config rule that raised it"),
        "kind": _col(_STR, nullable=False, description="health_red, stage_dwell, ..."),
        "subject_type": _col(_STR, nullable=False, description="deal, sku or signal"),
        "subject_id": _col(_STR, nullable=False, description="deal_id, customer_id/sku, ..."),
        "occurrence": _col(
            _I64, nullable=False, checks=(_rank(),), description="1, then 2 after a re-open"
        ),
        "severity": _col(_STR, nullable=False, checks=(_one_of(ALERT_SEVERITIES),)),
        "message": _col(_STR, nullable=False, description="plain words, as last seen"),
        "first_seen_as_of": _col(DATETIME, nullable=False),
        "last_seen_as_of": _col(DATETIME, nullable=False),
        "status": _col(_STR, nullable=False, checks=(_one_of(ALERT_STATUSES),)),
        "resolved_at": _col(DATETIME, description="the as_of at which the condition stopped"),
        "delivered_at": _col(
            DATETIME, description="wall time the opening notice reached every channel"
        ),
        "resolved_delivered_at": _col(
            DATETIME, description="wall time the resolution notice reached every channel"
        ),
        "deliveries": _col(
            _STR, description="JSON {channel: {notice: wall time}} of confirmed sends"
        ),
        "attempts": _col(_I64, description="runs whose delivery failed (retried next run)"),
        "last_error": _col(_STR, description="the last delivery failure, secrets redacted"),
    },
    "deal_score_changes": {
        **_lineage(),
        "deal_id": _key(_STR),
        "previous_as_of": _col(
            DATETIME, description="as_of of the previous run with a score; null on the first run"
        ),
        "previous_probability": _col(_F64, checks=(_probability(),)),
        "win_probability": _col(_F64, checks=(_probability(),), description="null once closed"),
        "delta": _col(
            _F64,
            description="win_probability - previous_probability (0.05 = 5 points); null for "
            "new and closed deals",
        ),
        "change_kind": _col(_STR, nullable=False, checks=(_one_of(CHANGE_KINDS),)),
        "moved_drivers": _col(
            _STR,
            description="JSON array [{feature, before, after}]: the SHAP contributions "
            "(log-odds) that moved most; a feature absent in one run counts as 0",
        ),
    },
    "pipeline_changes": {
        **_lineage(),
        "period": _key(_STR, "the month ('2024-07') or quarter ('2024-Q3') of as_of"),
        "period_kind": _col(_STR, nullable=False, checks=(_one_of(("month", "quarter")),)),
        "step": _key(_STR, "start, new, won, lost, slipped_out, pulled_in, score_change, end"),
        "step_order": _col(_I64, nullable=False, checks=(_non_negative(),)),
        "previous_as_of": _col(DATETIME, description="as_of of the run compared with"),
        "value": _col(
            _F64,
            nullable=False,
            description="expected revenue (amount x probability); start + steps = end",
        ),
        "n_deals": _col(_I64, nullable=False, checks=(_non_negative(),)),
    },
    "health_overview": {
        **_lineage(),
        "dimension": _col(
            _STR,
            nullable=False,
            checks=(_one_of(VIEW_DIMENSIONS),),
            description="key: all, region or owner",
        ),
        "member": _key(_STR, "the region or owner_id ('unknown' if none); 'all' for the total"),
        "open_deals": _col(_I64, nullable=False, checks=(_non_negative(),)),
        "n_red": _col(_I64, nullable=False, checks=(_non_negative(),)),
        "n_yellow": _col(_I64, nullable=False, checks=(_non_negative(),)),
        "n_green": _col(_I64, nullable=False, checks=(_non_negative(),)),
        "open_amount": _col(_F64, nullable=False, checks=(_non_negative(),)),
        "expected_revenue": _col(
            _F64, nullable=False, checks=(_non_negative(),), description="sum amount x p"
        ),
        "at_risk_value": _col(
            _F64,
            nullable=False,
            checks=(_non_negative(),),
            description="sum of deals_at_risk.value_at_risk",
        ),
    },
    "rep_health": {
        **_lineage(),
        "owner_id": _key(_STR),
        "health_index": _col(
            _F64, nullable=False, description="0-100: weighted mean of the driver scores"
        ),
        "win_rate": _col(_F64, description="won / closed in the window, shrunk to peers"),
        "peer_win_rate": _col(_F64, description="all reps' won / closed in the window"),
        "closed_deals": _col(_I64, nullable=False, checks=(_non_negative(),)),
        "open_deals": _col(_I64, nullable=False, checks=(_non_negative(),)),
        "open_expected_revenue": _col(_F64, nullable=False, checks=(_non_negative(),)),
        "won_run_rate": _col(
            _F64, nullable=False, description="won revenue in the window, per horizon"
        ),
        "pipeline_coverage": _col(_F64, description="open expected revenue / won run-rate"),
        "days_since_activity": _col(_F64, description="null without an activity log"),
        "stalled_share": _col(_F64, description="share of open deals over their stage limit"),
        "drivers": _col(_STR, description="JSON array of plain-language drivers"),
    },
    "deals_at_risk": {
        **_lineage(),
        "deal_id": _key(_STR),
        "rank": _col(_I64, nullable=False, checks=(_rank(),), description="1 = most at risk"),
        "owner_id": _col(_STR),
        "region": _col(_STR),
        "amount": _col(_F64),
        "win_probability": _col(_F64, checks=(_probability(),)),
        "previous_probability": _col(_F64, checks=(_probability(),)),
        "value_at_risk": _col(
            _F64,
            nullable=False,
            checks=(_non_negative(),),
            description="amount x probability lost since the last run, or amount x (1 - p) "
            "without a previous run",
        ),
        "risk_basis": _col(_STR, nullable=False, checks=(_one_of(RISK_BASES),)),
        "health": _col(_STR, checks=(_one_of(HEALTH_VALUES),)),
    },
    "model_quality": {
        "as_of": _col(DATETIME, nullable=False, required=False, description="stamped on write"),
        "run_id": _key(_STR, "the warehouse run that measured it"),
        "model": _key(_STR, "deal_win or demand"),
        "origin": _key(
            DATETIME,
            "backtest: the origin the model was fitted at; realised: the as_of of the scores "
            "or forecasts checked",
        ),
        "level": _key(_STR, "what was scored: deals, bottom (cells), or an aggregate level"),
        "metric": _key(_STR, "e.g. brier, auc, wape, pinball_p50, coverage_p10_p90"),
        "kind": _col(
            _STR,
            nullable=False,
            checks=(_one_of(QUALITY_KINDS),),
            description="backtest (rolling origin) or realised (the past against what happened)",
        ),
        "value": _col(_F64, description="the model's value; null when undefined (one class)"),
        "baseline": _col(_STR, description="name of the strongest trivial baseline compared"),
        "baseline_value": _col(_F64, description="the baseline's value on the same rows"),
        "rows": _col(_I64, description="rows (snapshots, deals or cells) behind the value"),
        "model_version": _col(
            _STR, required=False, description="registry version of the run, stamped on write"
        ),
    },
    "quarantine": {
        "run_id": _col(_STR, nullable=False, required=False, description="stamped on write"),
        "as_of": _col(DATETIME, required=False, description="the run's as_of, stamped on write"),
        "table_name": _col(_STR, nullable=False),
        "row": _col(_STR, nullable=False, description="JSON of the original row"),
        "check": _col(_STR, nullable=False),
        "reason": _col(_STR, nullable=False, description="plain words"),
        "column_name": _col(_STR, required=False, description="the column that failed, if one"),
    },
    "runs": {
        "run_id": _col(_STR, nullable=False, unique=True),
        "flow": _col(_STR, nullable=False),
        "as_of": _col(DATETIME, nullable=False),
        "started_at": _col(DATETIME, nullable=False),
        "finished_at": _col(DATETIME),
        "status": _col(_STR, nullable=False, checks=(_one_of(RUN_STATUSES),)),
        "model_version": _col(_STR),
        "row_counts": _col(_STR, description="JSON object {table: rows written}"),
        "params": _col(_STR, required=False, description="JSON object, secrets redacted"),
        "message": _col(_STR, required=False, description="why a run failed"),
        "host": _col(_STR, required=False, description="host name of the owning process"),
        "pid": _col(_I64, required=False, description="process id of the owning process"),
        "process_start": _col(
            _STR, required=False, description="start token of the process (tells a reused pid)"
        ),
        "heartbeat_at": _col(DATETIME, required=False, description="refreshed while it runs"),
        "reconciled_at": _col(
            DATETIME,
            required=False,
            description="when the leftovers of an abandoned run were put in order",
        ),
    },
}

OUTPUT_KEYS: dict[str, list[str]] = {
    "deal_scores": ["as_of", "deal_id"],
    "deal_score_factors": ["as_of", "deal_id", "rank"],
    "pipeline_forecast": ["as_of", "period", "dimension", "member"],
    "demand_forecast": ["as_of", "scenario", "customer_id", "sku", "bucket_start"],
    "demand_forecast_agg": ["as_of", "level", "key", "period_start"],
    "demand_forecast_factors": ["as_of", "customer_id", "sku", "bucket_start", "rank"],
    "sku_health": ["as_of", "customer_id", "sku"],
    "behavior_value": ["as_of", "activity_type", "contact_role"],
    "deal_actions": ["as_of", "deal_id", "rank"],
    "deal_score_changes": ["as_of", "deal_id"],
    "pipeline_changes": ["as_of", "period", "step"],
    "health_overview": ["as_of", "dimension", "member"],
    "rep_health": ["as_of", "owner_id"],
    "deals_at_risk": ["as_of", "deal_id"],
    "model_quality": ["run_id", "model", "origin", "level", "metric"],
    "quarantine": [],
    "alerts": ["alert_key"],
    "runs": ["run_id"],
}

_DATAFRAME_CHECKS: dict[str, list[pa.Check]] = {
    "deal_scores": [SCORED_OR_REASON],
    "pipeline_forecast": [QUANTILES_ORDERED],
    "demand_forecast": [QUANTILES_ORDERED],
    "demand_forecast_agg": [QUANTILES_ORDERED],
}


def _checks(spec: ColumnSpec) -> list[pa.Check]:
    """The column's declared checks, with `finite` first on every float column."""
    finite = [FINITE] if spec.dtype == pl.Float64 else []
    return [*finite, *spec.checks]


def _schema(name: str, columns: dict[str, ColumnSpec], *, strict: bool) -> pa.DataFrameSchema:
    return pa.DataFrameSchema(
        {
            col: pa.Column(
                None if spec.any_dtype else spec.dtype,
                nullable=spec.nullable,
                unique=spec.unique,
                required=spec.required,
                checks=_checks(spec),
                description=spec.description or None,
            )
            for col, spec in columns.items()
        },
        checks=_DATAFRAME_CHECKS.get(name, []),
        name=name,
        strict=strict,
        coerce=False,
    )


INPUT_SCHEMAS: dict[str, pa.DataFrameSchema] = {
    t: _schema(t, c, strict=False) for t, c in _INPUTS.items()
}
OUTPUT_SCHEMAS: dict[str, pa.DataFrameSchema] = {
    t: _schema(t, c, strict=True) for t, c in _OUTPUTS.items()
}


def non_finite(table: str, frame: pl.DataFrame) -> str | None:
    """Where output `frame` holds NaN or +-inf in a float column, in words, or None.

    The pandera schema rejects such values too, but names only the column; this names the row
    by the table's key (`column 'p90' is inf in the row deal_id=D1`), so the input that led to
    it can be found. Columns the contract does not declare float are checked when they are.
    """
    floats = [c for c, dtype in frame.schema.items() if dtype in (pl.Float32, pl.Float64)]
    if not floats or frame.height == 0:
        return None
    bad = frame.select(pl.any_horizontal(~pl.col(c).is_finite().fill_null(True) for c in floats))
    rows = bad.to_series().arg_true()
    if rows.len() == 0:
        return None
    first = frame.row(int(rows[0]), named=True)
    column = next(c for c in floats if first[c] is not None and not math.isfinite(first[c]))
    key = [c for c in OUTPUT_KEYS.get(table, []) if c in frame.columns] or frame.columns[:1]
    where = ", ".join(f"{c}={_key_text(first[c])}" for c in key)
    more = f" (and {rows.len() - 1} more rows)" if rows.len() > 1 else ""
    return (
        f"column '{column}' is {first[column]} in the row {where}{more}; "
        "a non-finite number is never written (check: finite)"
    )


def _key_text(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def input_columns(table: str) -> dict[str, ColumnSpec]:
    """The canonical columns of input `table`, in contract order."""
    try:
        return dict(_INPUTS[table])
    except KeyError:
        raise KeyError(f"unknown input table {table!r}; known: {', '.join(_INPUTS)}") from None


def output_columns(table: str) -> dict[str, ColumnSpec]:
    """The columns of output `table` (lineage first), in contract order."""
    try:
        return dict(_OUTPUTS[table])
    except KeyError:
        raise KeyError(f"unknown output table {table!r}; known: {', '.join(_OUTPUTS)}") from None


STAMPED_COLUMNS = ("as_of", "run_id", "model_version", "mlflow_run_id")
"""Columns the warehouse (or the job) stamps on an output row; producers do not compute them."""


def row_dtypes(table: str) -> dict[str, pl.DataType]:
    """Dtypes of output `table` without the stamped lineage columns, in contract order: the
    shape of the frame a producer (scoring, health, behaviour) returns before the write.
    """
    return {
        name: spec.dtype
        for name, spec in output_columns(table).items()
        if name not in STAMPED_COLUMNS
    }


def required_columns(table: str) -> tuple[str, ...]:
    """Columns output `table` requires in every written frame, in contract order."""
    return tuple(name for name, spec in output_columns(table).items() if spec.required)


def input_dtypes(table: str) -> dict[str, pl.DataType]:
    """Canonical polars dtypes of input `table` (every declared column, optional ones too)."""
    return {name: spec.dtype for name, spec in input_columns(table).items()}


def key_backfills(table: str) -> dict[str, str]:
    """Key columns of an output table that older tables may lack, with their backfill value."""
    columns = _OUTPUTS.get(table, {})
    return {
        name: spec.backfill
        for name in OUTPUT_KEYS.get(table, [])
        if (spec := columns.get(name)) is not None and spec.backfill is not None
    }


def output_dtypes(table: str) -> dict[str, pl.DataType]:
    """Canonical polars dtypes of output `table`: every declared column, for DDL."""
    return {name: spec.dtype for name, spec in output_columns(table).items()}


def empty_frame(table: str) -> pl.DataFrame:
    """An empty frame with the canonical columns of an input or output table."""
    dtypes = output_dtypes(table) if table in _OUTPUTS else input_dtypes(table)
    return pl.DataFrame(schema=dtypes)
