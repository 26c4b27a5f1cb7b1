"""The one configuration object: `Settings`, loaded from YAML by `load(path)`.

Every constant with a meaning (thresholds, windows, decay, bands) lives here with a documented
default, so a run is fully described by its effective config (`salesml config show`).
Unknown keys are an error that names the key; secrets come only from environment variables.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self
from urllib.parse import quote

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from salesml import secrets

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ONLY_ENV_REFS = re.compile(r"(?:\$\{[A-Za-z_][A-Za-z0-9_]*\})+")

_log = logging.getLogger(__name__)

MAX_CONFIG_BYTES = 1 << 20
"""A config file is at most 1 MiB: anything larger is not a hand-written config."""
MAX_CONFIG_VALUES = 100_000
"""Values a config may hold once YAML aliases are expanded (stops "billion laughs" files)."""
MAX_CONFIG_DEPTH = 32
"""Nesting a config may have (the real schema is 4 levels deep)."""


class ConfigError(ValueError):
    """A config that cannot be used; the message is one line naming the problem."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourcesSettings(_Section):
    """Where the canonical input tables come from: a folder (Parquet/CSV) or a database URL."""

    path: Path | None = Field(None, description="Folder holding deals.parquet / deals.csv, ...")
    url: str | None = Field(
        None, description="Database URL: duckdb:///file.duckdb or postgresql://..."
    )
    encoding: str | dict[str, str] = Field(
        "utf-8",
        description="Text encoding of CSV files: one for all (e.g. latin-1, cp1252) or per "
        "table ({deals: latin-1}; tables not named are UTF-8); Parquet and databases ignore it",
    )
    datetime_format: str | dict[str, str] = Field(
        default_factory=dict,
        description="strftime format of text datetimes that are not ISO 8601, for all tables "
        "or per table ({deals: '%d-%m-%Y'} for 02-05-2018); tables not named, and values that "
        "do not match it, are read as ISO 8601 (else quarantined, check parse_datetime)",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> SourcesSettings:
        if (self.path is None) == (self.url is None):
            raise ValueError("sources needs exactly one of 'path' or 'url'")
        return self


class WarehouseSettings(_Section):
    """Where outputs are written. DuckDB file by default; PostgreSQL by URL."""

    url: str = Field(
        "duckdb:///out/warehouse.duckdb",
        description="Warehouse URL: duckdb:///file.duckdb or postgresql://user:${PGPASSWORD}@host/db",
    )
    lock_timeout_seconds: float = Field(
        60.0, ge=0, description="How long a writer waits for another writer before failing"
    )


class MlflowSettings(_Section):
    """Where models are tracked and registered (the registry needs a database store)."""

    tracking_uri: str = Field(
        "sqlite:///out/mlflow.db", description="MLflow tracking and registry URI (sqlite:///...)"
    )
    experiment: str = Field("salesml", description="MLflow experiment the runs are logged to")


class ValidationSettings(_Section):
    """How much bad input a run tolerates, and the plausible ranges of numeric columns."""

    max_bad_share: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Share of bad rows per table under which the run goes on without them; "
        "at or above it the run stops before writing anything",
    )
    example_rows: int = Field(3, ge=1, description="Example rows named in a stopping error")
    max_abs: dict[str, dict[str, float]] = Field(
        default_factory=lambda: {
            "deals": {"amount": 1e12},
            "sales": {"quantity": 1e12, "unit_price": 1e12},
            "inventory": {"on_hand": 1e12},
            "signals": {"value": 1e12},
        },
        description="Per table, per number column, the largest absolute value taken as real; "
        "a row beyond it goes to quarantine (check max_abs). A mapping given in the config "
        "replaces this default as a whole",
    )


class HealthBands(_Section):
    """Probability bands for deal health; versioned with the model that produced the scores."""

    red_below: float = Field(0.2, ge=0, le=1, description="Win probability under this is red")
    green_at_or_above: float = Field(
        0.5, ge=0, le=1, description="Win probability at or above this is green (between: yellow)"
    )

    @model_validator(mode="after")
    def _ordered(self) -> HealthBands:
        if self.red_below > self.green_at_or_above:
            raise ValueError("health bands need red_below <= green_at_or_above")
        return self


class DealHealthRules(_Section):
    """Rules that flag a deal whatever its probability (logged with the health of each run)."""

    stage_limit_days: dict[str, int] = Field(
        default_factory=lambda: {
            "qualification": 30,
            "discovery": 30,
            "proposal": 21,
            "negotiation": 21,
        },
        description="Days in a stage after which the deal is flagged",
    )
    no_activity_days: int = Field(14, ge=1)
    max_close_date_slips: int = Field(2, ge=1)
    red_at_rules: int = Field(
        2, ge=1, description="A deal with this many rules firing is red whatever its probability"
    )


class LeakageSettings(_Section):
    """The leakage screen run before deal-win training (`salesml.deals.leakage`)."""

    max_auc: float = Field(
        0.95,
        gt=0.5,
        le=1,
        description="A feature that alone separates won from lost training snapshots this well "
        "(single-feature AUC, max(AUC, 1 - AUC); of its values, null pattern or per-level win "
        "rate out of fold) stops training as a probable leak",
    )
    allow: list[str] = Field(
        default_factory=list,
        description="Features to train with even when they reach max_auc (each override is "
        "logged with its AUC); names not among the features are ignored",
    )
    folds: int = Field(
        5, ge=2, description="Folds (by deal) of the out-of-fold per-level win rates"
    )
    bins: int = Field(
        20, ge=2, description="Quantile bins of a numeric feature for its per-level win rate"
    )
    max_rows: int = Field(
        200_000, ge=1000, description="Snapshots screened at most (a seeded sample beyond it)"
    )


class DealFeatureSettings(_Section):
    """How a deal snapshot becomes features: activity windows, behaviour decay, smoothed rates."""

    activity_windows_days: list[int] = Field(default_factory=lambda: [7, 30, 90])
    decay_hours: float = Field(72.0, gt=0, description="Half-life-like decay of behaviour score")
    decay_horizon_half_lives: float = Field(
        20.0,
        gt=0,
        description="Activities older than this many half-lives drop out of decayed sums",
    )
    role_weights: dict[str, float] = Field(
        default_factory=lambda: {
            "cto": 2.0,
            "ceo": 2.0,
            "vp": 1.5,
            "engineer": 1.0,
            "procurement": 1.2,
            "other": 0.5,
        }
    )
    min_pair_occurrences: int = Field(
        20,
        ge=1,
        description="An (activity type, contact role) pair gets its own feature from this count",
    )
    prior_strength: float = Field(
        10.0, gt=0, description="Pseudo-count for smoothed account/rep win rates"
    )
    custom_features: list[str] = Field(
        default_factory=list, description="Extra deal columns to use as features"
    )


class DealModelSettings(_Section):
    """Hyper-parameters of the deal-win estimator (LightGBM + calibrator), named as its own."""

    n_estimators: int = Field(
        400, ge=1, description="Most boosting rounds; early stopping picks fewer"
    )
    learning_rate: float = Field(0.08, gt=0)
    num_leaves: int = Field(15, ge=2, description="Small trees keep exact TreeSHAP cheap")
    max_depth: int = Field(
        5, ge=-1, description="Tree depth limit (-1: none); TreeSHAP cost grows with depth^2"
    )
    subsample: float = Field(
        0.7, gt=0, le=1, description="Share of rows each tree sees (seeded bagging; 1 = all)"
    )
    max_bin: int = Field(63, ge=4, description="Histogram bins per feature (fewer = faster)")
    min_child_samples: int = Field(40, ge=1)
    early_stopping_rounds: int = Field(30, ge=1)
    calibration: Literal["isotonic", "platt"] = Field(
        "isotonic",
        description="Calibrator fitted on the honest holdout's snapshots (cross-fitted by deal "
        "for the reported metrics)",
    )
    seed: int = Field(42, description="Seed of the model, its bagging and the behaviour value")
    num_threads: int = Field(2, ge=1, le=64)


class DealBacktestSettings(_Section):
    """Rolling-origin backtest of the deal-win model (`salesml backtest deal-win`)."""

    step_days: int = Field(30, ge=1, description="Days between backtest origins")
    follow_up_days: int = Field(
        60,
        ge=0,
        description="Days after an origin's evaluation window before as_of, so most of its "
        "deals have closed (less censoring in the backtest)",
    )


class DealHealthSettings(_Section):
    """Deal health: probability bands and the rules that flag a deal whatever its probability."""

    bands: HealthBands = Field(default_factory=HealthBands)
    rules: DealHealthRules = Field(default_factory=DealHealthRules)


class DealsSettings(_Section):
    """Deal-win model: the event, snapshots, training gate, features, model, backtest, health."""

    stage_order: list[str] = Field(
        default_factory=lambda: ["qualification", "discovery", "proposal", "negotiation"]
    )
    label_horizon_days: int = Field(
        60,
        ge=1,
        description="The event a probability is about: won within this many days of the score "
        "time (a snapshot at t is labelled 1 iff won by t + H; only snapshots with t + H <= as_of "
        "train or evaluate: full follow-up, no censoring)",
    )
    lost_after_days: int | None = Field(
        None,
        ge=1,
        description="Funnels that never record losses: an open deal with no outcome this many "
        "days after creation counts as lost at created_at + N (None: off)",
    )
    snapshot_every_days: int = Field(7, ge=1, description="Cadence of training snapshots")
    history_days: int | None = Field(
        730, ge=1, description="Training snapshots reach this many days back from as_of (None: all)"
    )
    holdout_days: int = Field(
        42,
        ge=1,
        description="The honest holdout: snapshots in the last this-many days that have full "
        "follow-up (t + H <= as_of); training snapshots end H days before its first snapshot",
    )
    min_open_days: float = Field(
        0.0,
        ge=0,
        description="Deals younger than this get the young-deal prior instead of a model score "
        "(and are left out of training snapshots); 0: the model scores every open deal, so the "
        "honest holdout covers every deal it scores",
    )
    min_won: int = Field(200, ge=1, description="Refuse to train below this many won deals")
    min_lost: int = Field(200, ge=1, description="Refuse to train below this many lost deals")
    gate_metric: Literal["auc", "log_loss", "brier"] = Field(
        "auc", description="Metric of the champion gate (both models on the same holdout)"
    )
    skill_bootstrap: int = Field(
        200,
        ge=20,
        description="Bootstrap resamples (of deals) for the Brier skill score interval of the gate",
    )
    skill_level: float = Field(
        0.95, gt=0.5, lt=1, description="Two-sided level of the skill score's bootstrap interval"
    )
    leakage: LeakageSettings = Field(
        default_factory=LeakageSettings, description="Leakage screen before training"
    )
    top_k: int = Field(5, ge=1, description="Drivers (reasons) stored per scored deal")
    forecast_simulations: int = Field(
        1000, ge=100, description="Monte Carlo draws for pipeline P10/P50/P90"
    )
    features: DealFeatureSettings = Field(default_factory=DealFeatureSettings)
    model: DealModelSettings = Field(default_factory=DealModelSettings)
    backtest: DealBacktestSettings = Field(default_factory=DealBacktestSettings)
    health: DealHealthSettings = Field(default_factory=DealHealthSettings)

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        return _move_flat_keys(data, "deals", DEALS_MOVED)

    if not TYPE_CHECKING:  # old attribute paths, for one release; mypy flags them

        def __getattr__(self, name: str) -> Any:
            if name in DEALS_MOVED:
                return _moved_attribute(self, name, "deals", DEALS_MOVED)
            return super().__getattr__(name)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy; old flat keys in `update` go to their new place (as in the YAML)."""
        return super().model_copy(
            update=_moved_update(self, update, "deals", DEALS_MOVED), deep=deep
        )


HealthColour = Literal["red", "yellow", "green"]


def _red_and_yellow() -> list[HealthColour]:
    return ["red", "yellow"]


class DemandGridSettings(_Section):
    """The customer x SKU x bucket grid: bucket size, horizon, history, and which cells count."""

    bucket_hours: Literal[1, 2, 3, 4, 6, 8, 12, 24] = 4
    horizon_buckets: int = Field(42, ge=1, description="Buckets ahead (42 x 4h = 7 days)")
    returns: Literal["net", "ignore"] = Field(
        "net", description="net: returns reduce demand; ignore: only positive quantities count"
    )
    history_days: int = Field(
        365, ge=7, description="Days of sales history kept per series (bounds memory and time)"
    )
    active_days: int = Field(
        56, ge=1, description="A series with no sale in this many days is not forecast"
    )
    detect_closed: bool = Field(
        True, description="Forecast 0 (and do not train) in slots a business never sold in"
    )
    closed_min_weeks: int = Field(
        4, ge=1, description="Weeks of history a customer needs before a slot counts as closed"
    )
    closure_min_day_share: float = Field(
        0.8,
        gt=0,
        le=1,
        description="A customer that sold on at least this share of its days and sold nothing "
        "on a whole day was closed that day: those buckets are missing, not zero demand "
        "(features skip them, training ignores them); 1 turns this off",
    )
    censor_stockouts: bool = Field(
        True,
        description="With an inventory table: a bucket that started with on_hand <= 0, had no "
        "restock inside and sold nothing is missing, not zero demand",
    )
    cold_start_min_days: int = Field(
        0,
        ge=0,
        description="A series with stock but no sale, or whose first sale is fewer than this "
        "many days before as_of, is forecast from similar series (basis 'cold_start'); 0: only "
        "the former (measured: the model beats the rule from one day of sales on)",
    )
    category_column: str | None = Field(
        None,
        description="Optional sales column grouping SKUs (e.g. 'category'), used for cold starts",
    )


class DemandFeatureSettings(_Section):
    """Features of a (series, origin, horizon) row: lags, rolling windows, holidays."""

    recent_lags: int = Field(3, ge=1, description="Lags of the last buckets before the origin")
    seasonal_lag_weeks: int = Field(
        4, ge=1, description="Weeks in the same-bucket mean / spread (same bucket 1..N weeks back)"
    )
    seasonal_lag_features: int = Field(
        2, ge=0, description="Same bucket 1..N weeks back also as separate features"
    )
    rolling_windows: list[int] = Field(
        default_factory=lambda: [6, 42, 168],
        description="Rolling mean windows in buckets (6 = a day), ending at the origin",
    )
    spread_windows: list[int] = Field(
        default_factory=lambda: [42, 168],
        description="Rolling spread (standard deviation) windows in buckets, ending at the origin",
    )
    holidays: list[date] = Field(
        default_factory=list, description="Local dates flagged as holidays (feature is_holiday)"
    )
    holiday_country: str | None = Field(
        None,
        description="ISO country code (e.g. 'US') whose public holidays (the offline `holidays` "
        "package) are flagged too, union-ed with `holidays`",
    )
    holiday_subdivision: str | None = Field(
        None, description="State / province code within `holiday_country` (e.g. 'NY')"
    )

    @model_validator(mode="after")
    def _known_holiday_calendar(self) -> DemandFeatureSettings:
        if self.holiday_country is None:
            if self.holiday_subdivision is not None:
                raise ValueError(
                    "demand.features.holiday_subdivision needs demand.features.holiday_country"
                )
            return self
        import holidays

        try:
            holidays.country_holidays(self.holiday_country, subdiv=self.holiday_subdivision)
        except NotImplementedError as exc:  # unknown country or subdivision
            raise ValueError(
                f"demand.features.holiday_country / holiday_subdivision: {str(exc).splitlines()[0]}"
            ) from None
        return self


class DemandModelSettings(_Section):
    """The demand estimator (LightGBM mean + median) and how its training rows are sampled."""

    objective: Literal["tweedie", "poisson"] = "tweedie"
    tweedie_variance_power: float = Field(
        1.5,
        gt=1,
        lt=2,
        description="Tweedie power of the mean model; 1.5 kept the mean within +-10 % at every "
        "pizza origin (1.2: -12 % .. +11 %), see benchmarks/bench_demand_peers.py",
    )
    num_leaves: int = Field(
        15, ge=2, description="Lean trees: as accurate here, and SHAP costs ~trees x leaves"
    )
    learning_rate: float = Field(0.1, gt=0)
    n_estimators: int = Field(150, ge=1)
    min_data_in_leaf: int = Field(50, ge=1)
    feature_fraction: float = Field(0.9, gt=0, le=1)
    num_threads: int = Field(2, ge=1, le=64)
    seed: int = 42
    median_model: bool = Field(
        True,
        description="P50 from a LightGBM median (quantile objective) model, rounded to whole "
        "units; off: the whole-unit median of the negative binomial around the mean",
    )
    horizon_samples: int = Field(
        1, ge=1, le=8, description="Horizons drawn per training bucket (direct strategy)"
    )
    min_history_buckets: int = Field(
        0, ge=0, description="History a training row needs at its origin"
    )
    recent_train_weeks: int = Field(
        8, ge=1, description="Training targets in these last weeks are all kept"
    )
    older_rows_share: float = Field(
        0.5, gt=0, le=1, description="Share of older training targets kept (recency sampling)"
    )
    max_train_rows: int = Field(
        400_000, ge=1000, description="Training rows are subsampled to at most this many"
    )
    refit_after_calibration: Literal["none", "leaves", "full"] = Field(
        "full",
        description="After calibrating on the held-out weeks: 'leaves' re-estimates the trees' "
        "leaf values on all weeks (cheap), 'full' refits from scratch (2x training time), "
        "'none' keeps the model trained up to the held-out weeks",
    )
    refit_decay: float = Field(
        0.5, ge=0, lt=1, description="'leaves' refit: weight kept on the old leaf values"
    )


class DemandIntervalSettings(_Section):
    """P10/P90 calibration on held-out weeks: target coverage, strata, bins, event days.

    The `interval_` names are the demand estimator's own parameter names (one set of names for
    config and model, read by `salesml.estimator.params_from_settings`).
    """

    interval_coverage: float = Field(
        0.8, gt=0, lt=1, description="Target share of actuals inside [P10, P90]"
    )
    calibration_origins: int = Field(
        1,
        ge=1,
        description="Weekly origins held out before as_of to calibrate P10/P90 (and gate)",
    )
    interval_strata: list[float] = Field(
        default_factory=lambda: [0.5, 2.0],
        description="Edges (units per bucket) of the expected-demand strata in which P10/P90 "
        "are calibrated and coverage is reported: < 0.5, 0.5-2, >= 2 by default",
    )
    interval_bins: list[float] = Field(
        default_factory=lambda: [0.35],
        description="Extra edges (units per bucket) that split the strata into finer "
        "calibration bins: with 0.35, cells with a 30-40 % chance of a sale get [0, 1]",
    )
    interval_min_rows: int = Field(
        200,
        ge=0,
        description="A calibration bin with fewer held-out rows borrows the rows nearest in "
        "expected demand up to this many",
    )
    interval_event_ratio: float = Field(
        2.0,
        ge=0,
        description="Held-out days whose total sold is over this many times (or under 1/this) "
        "the forecast total are events left out of the interval calibration; <= 1: none",
    )

    @model_validator(mode="after")
    def _increasing_strata(self) -> DemandIntervalSettings:
        edges = self.interval_strata
        if not edges or any(e <= 0 for e in edges) or sorted(set(edges)) != list(edges):
            raise ValueError("demand.intervals.interval_strata must be increasing positive numbers")
        if any(e <= 0 for e in self.interval_bins):
            raise ValueError("demand.intervals.interval_bins must be positive numbers")
        return self


class DemandExplainSettings(_Section):
    """Which forecast rows get SHAP drivers, and how many drivers each."""

    hours_ahead: int = Field(
        24, ge=0, description="Drivers (SHAP) for every series' buckets in the next N hours"
    )
    max_rows: int = Field(
        50_000,
        ge=0,
        description="Cap on explained rows per run (~1 ms each on 2 cores): red series first, "
        "then the next hours, then yellow, earliest buckets first; the run record says when "
        "the cap cut the selection",
    )
    health: list[HealthColour] = Field(
        default_factory=_red_and_yellow,
        description="Series with these SKU health colours get SHAP drivers for every bucket",
    )
    top_k: int = Field(5, ge=1, description="Drivers stored per explained row")


class DemandSettings(_Section):
    """Demand model over customer x SKU buckets: signals, health, gate; grid, features, ..."""

    known_signals: list[str] = Field(
        default_factory=lambda: ["price", "promotion"],
        description="Signal names known in advance (used at future values)",
    )
    observed_signals: list[str] = Field(
        default_factory=list, description="Signal names observed only up to as_of"
    )
    signal_weights: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="Per signal, per region ('*' or 'all': every region) multiplier of "
        "expected units in open cells where the signal is active (value present and not 0), "
        "applied after the model; logged per run (README, 'Planner levers')",
    )
    safety_stock_days: float = Field(
        2.0, ge=0, description="Safety stock = this many days of forecast P50 demand"
    )
    growth_threshold: float = Field(
        0.4, ge=0, description="7-day sales growth (0.4 = +40%) that turns low stock red"
    )
    stockout_red_hours: float = Field(
        24.0, ge=0, description="Projected P50 stock-out within this many hours is red"
    )
    gate_requires_baseline: bool = Field(
        False,
        description="Refuse a candidate whose held-out scaled pinball loss (mean over P10/P50/"
        "P90 / mean actual) is worse than the 8-week same-bucket median's. Off by default: the "
        "comparison is always logged, but demand has no fallback forecast when no model passes",
    )
    ets_max_series: int = Field(
        300, ge=0, description="Backtest the statsmodels ETS baseline only up to this many series"
    )
    grid: DemandGridSettings = Field(default_factory=DemandGridSettings)
    features: DemandFeatureSettings = Field(default_factory=DemandFeatureSettings)
    model: DemandModelSettings = Field(default_factory=DemandModelSettings)
    intervals: DemandIntervalSettings = Field(default_factory=DemandIntervalSettings)
    explain: DemandExplainSettings = Field(default_factory=DemandExplainSettings)

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        return _move_flat_keys(data, "demand", DEMAND_MOVED)

    if not TYPE_CHECKING:  # old attribute paths, for one release; mypy flags them

        def __getattr__(self, name: str) -> Any:
            if name in DEMAND_MOVED:
                return _moved_attribute(self, name, "demand", DEMAND_MOVED)
            return super().__getattr__(name)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy; old flat keys in `update` go to their new place (as in the YAML)."""
        return super().model_copy(
            update=_moved_update(self, update, "demand", DEMAND_MOVED), deep=deep
        )


# --- old flat keys (one release) -------------------------------------------------------------

DEALS_MOVED: dict[str, tuple[str, str]] = {
    **{
        key: ("features", key)
        for key in (
            "activity_windows_days",
            "decay_hours",
            "decay_horizon_half_lives",
            "role_weights",
            "min_pair_occurrences",
            "prior_strength",
            "custom_features",
        )
    },
    **{key: ("model", key) for key in DealModelSettings.model_fields},
    "backtest_step_days": ("backtest", "step_days"),
    "backtest_follow_up_days": ("backtest", "follow_up_days"),
    "bands": ("health", "bands"),
    "rules": ("health", "rules"),
}
"""Old flat `deals` key -> (sub-section, key there); read with a deprecation for one release."""

DEMAND_MOVED: dict[str, tuple[str, str]] = {
    **{key: ("grid", key) for key in DemandGridSettings.model_fields},
    **{key: ("features", key) for key in DemandFeatureSettings.model_fields},
    **{key: ("model", key) for key in DemandModelSettings.model_fields},
    **{key: ("intervals", key) for key in DemandIntervalSettings.model_fields},
    **{f"explain_{key}": ("explain", key) for key in ("hours_ahead", "max_rows", "health")},
    "top_k": ("explain", "top_k"),
}
"""Old flat `demand` key -> (sub-section, key there); read with a deprecation for one release."""


_LOGGED_MOVES: set[tuple[str, str]] = set()


class ConfigKeyMoved(DeprecationWarning):
    """An old flat `deals` / `demand` key (YAML, keyword or attribute) was read at its new place."""


def _warn_moved(section: str, old: str, new: tuple[str, str]) -> None:
    message = (
        f"config key '{section}.{old}' is now '{section}.{new[0]}.{new[1]}'; "
        "the old key is read for one more release"
    )
    warnings.warn(message, ConfigKeyMoved, stacklevel=4)
    if (section, old) not in _LOGGED_MOVES:  # once per process: the log is for people
        _LOGGED_MOVES.add((section, old))
        _log.warning(message)


def _move_flat_keys(data: Any, section: str, moved: dict[str, tuple[str, str]]) -> Any:
    """A `deals` / `demand` mapping with each old flat key moved into its sub-section."""
    if not isinstance(data, dict) or not moved.keys() & data.keys():
        return data
    out = dict(data)
    for old in [key for key in out if key in moved]:
        group, key = moved[old]
        value = out.pop(old)
        nested = out.get(group, {})
        if isinstance(nested, BaseModel):
            nested = {name: getattr(nested, name) for name in type(nested).model_fields}
        if not isinstance(nested, dict):
            return data  # the sub-section itself is malformed: pydantic names it
        if key in nested:
            raise ValueError(
                f"{section}.{old} and {section}.{group}.{key} are the same setting; keep the second"
            )
        _warn_moved(section, old, (group, key))
        out[group] = {**nested, key: value}
    return out


def _moved_attribute(
    model: BaseModel, name: str, section: str, moved: dict[str, tuple[str, str]]
) -> Any:
    """The value of an old flat attribute (`deals.num_leaves`) at its new place."""
    _warn_moved(section, name, moved[name])
    group, key = moved[name]
    return getattr(getattr(model, group), key)


def _moved_update(
    model: BaseModel,
    update: Mapping[str, Any] | None,
    section: str,
    moved: dict[str, tuple[str, str]],
) -> dict[str, Any] | None:
    """`model_copy(update=...)` with old flat keys as copies of their sub-sections.

    pydantic does not validate `update`: an old key would be stored beside the field it
    names, and the field silently keep its value. Unknown keys are refused the same way.
    """
    if not update:
        return None if update is None else dict(update)
    out = {key: value for key, value in update.items() if key not in moved}
    for old in [key for key in update if key in moved]:
        group, key = moved[old]
        _warn_moved(section, old, (group, key))
        base = out.get(group, getattr(model, group))
        out[group] = base.model_copy(update={key: update[old]})
    unknown = sorted(set(out) - set(type(model).model_fields))
    if unknown:
        raise ValueError(f"{section}.model_copy: unknown key '{unknown[0]}'")
    return out


class ComputeSettings(_Section):
    """How jobs run: retries of IO steps, concurrent runs, and the optional Dask scale-out."""

    dask: str | None = Field(None, description="Dask scheduler address or 'local-cluster'")
    dask_workers: int = Field(2, ge=1, description="Workers of a 'local-cluster'")
    dask_processes: bool = Field(
        True, description="'local-cluster' workers are processes (False: threads of this process)"
    )
    partitions: int = Field(
        8, ge=1, description="Series partitions a forecast fans out to when `dask` is set"
    )
    scratch_dir: Path | None = Field(
        None,
        description="Folder every Dask worker can read, for the frames passed between tasks "
        "(default: the system temp folder, fine for 'local-cluster' only)",
    )
    io_retries: int = Field(
        3, ge=0, description="Retries of an IO step (read inputs, load model, write) in a flow"
    )
    io_retry_backoff_seconds: float = Field(
        2.0, ge=0, description="First retry delay of an IO step; doubles at each retry"
    )
    run_wait_seconds: float = Field(
        300.0,
        ge=0,
        description="A run of the same flow and as_of as a running one waits this long, then fails",
    )
    stale_run_minutes: float = Field(
        360.0,
        gt=0,
        description="A 'running' run without heartbeat (older salesml) older than this is "
        "taken as dead (marked 'abandoned') and no longer blocks",
    )
    heartbeat_seconds: float = Field(
        30.0, gt=0, description="A running job refreshes runs.heartbeat_at this often"
    )
    heartbeat_timeout_seconds: float = Field(
        300.0,
        gt=0,
        description="A run on another host without a heartbeat for this long is marked "
        "'abandoned' (on the same host, a run whose process is gone is marked at once)",
    )


class Settings(_Section):
    """The effective configuration of a salesml run."""

    sources: SourcesSettings = Field(
        default_factory=lambda: SourcesSettings(path=Path("data/sample"))
    )
    warehouse: WarehouseSettings = Field(default_factory=WarehouseSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    timezone: str = Field(
        "UTC",
        description="IANA zone: naive input times are wall time here; 4-hour buckets align to "
        "its midnight",
    )
    column_map: dict[str, dict[str, str | list[str]]] = Field(
        default_factory=dict,
        description="Per table, {your column name: canonical name}; a list of canonical names "
        "copies one column into several ({Lead ID: [deal_id, account_id]}); two of your "
        "columns onto one canonical name are refused",
    )
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    deals: DealsSettings = Field(default_factory=DealsSettings)
    demand: DemandSettings = Field(default_factory=DemandSettings)
    compute: ComputeSettings = Field(default_factory=ComputeSettings)
    alerts: AlertsSettings = Field(
        default_factory=lambda: AlertsSettings(),  # noqa: PLW0108 (defined below Settings)
        description="Alert rules and delivery (README, 'Alerts')",
    )
    deal_actions: DealActionSettings = Field(
        default_factory=lambda: DealActionSettings(),  # noqa: PLW0108 (defined below Settings)
        description="Next-best actions and warnings per open deal",
    )
    deal_views: DealViewsSettings = Field(
        default_factory=lambda: DealViewsSettings(),  # noqa: PLW0108 (defined below Settings)
        description="What changed since the last run, rep health and at-risk views",
    )

    @model_validator(mode="after")
    def _known_timezone(self) -> Settings:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {self.timezone!r}") from exc
        return self

    def to_yaml(self, describe: bool = False) -> str:
        """The effective config as YAML, with any password in a URL masked.

        describe: each key preceded by a `# comment` with its description (the Field's), so
        the output is still YAML a user can copy from.
        """
        dumped = _mask_secrets(self.model_dump(mode="json"))
        if not describe:
            return yaml.safe_dump(dumped, sort_keys=False)
        return "".join(_described(type(self), dumped, indent=""))


def describe_keys(model: type[BaseModel] | None = None) -> dict[str, str]:
    """Every config key (dotted, e.g. `sources.encoding`) -> its description ("" if none)."""
    out: dict[str, str] = {}
    for name, info in (model or Settings).model_fields.items():
        section = _section_type(info.annotation)
        if section is not None:
            out.update({f"{name}.{k}": v for k, v in describe_keys(section).items()})
        else:
            out[name] = " ".join((info.description or "").split())
    return out


def _section_type(annotation: Any) -> type[BaseModel] | None:
    """The nested section class of a field, or None for a leaf value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _described(model: type[BaseModel], values: dict[str, Any], indent: str) -> list[str]:
    """YAML lines of `values` (a dumped `model`), each leaf key after its description."""
    lines: list[str] = []
    for name, info in model.model_fields.items():
        section = _section_type(info.annotation)
        text = " ".join((info.description or (section.__doc__ if section else "") or "").split())
        if text:
            lines.append(f"{indent}# {text}\n")
        if section is not None:
            lines.append(f"{indent}{name}:\n")
            lines.extend(_described(section, values[name], indent + "  "))
            continue
        value = yaml.safe_dump(values[name], default_flow_style=True, width=10**6, sort_keys=False)
        value = value.strip().removesuffix("...").strip()
        lines.append(f"{indent}{name}: {value}\n")
    return lines


def _mask_secrets(value: Any) -> Any:
    """Every string of the dumped config through `secrets.redact` (URL passwords, ${VAR} values)."""
    if isinstance(value, dict):
        return {_mask_secrets(k): _mask_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_secrets(v) for v in value]
    if isinstance(value, str):
        return secrets.redact(value)
    return value


def _expand_env(value: Any, where: str) -> Any:
    """Replace ${VAR} in strings with the environment's value; a missing variable is an error."""
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, where) for v in value]
    if not isinstance(value, str) or "${" not in value:
        return value
    return _expand_string(value, where)


def _expand_string(value: str, where: str) -> str:
    """Expand ${VAR}s; a value landing in a password position is remembered as a secret.

    Inside a URL that value is percent-encoded, so a password holding `/`, `@`, `:` or `?`
    keeps the URL readable (libpq and SQLAlchemy decode it again): the variable holds the
    password as is, like PGPASSWORD. Passwords a variable brings in whole (`${DATABASE_URL}`)
    are remembered too, so `secrets.redact` masks them in any text.
    """
    in_url = secrets.is_url(value)
    spans = secrets.password_spans(value)

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"config key '{where}' refers to ${{{name}}}, which is not set")
        expanded = os.environ[name]
        if any(start <= match.start() and match.end() <= end for start, end in spans):
            secrets.remember(expanded)
            return quote(expanded, safe="") if in_url else expanded
        return expanded

    result = _ENV_REF.sub(sub, value)
    for password in secrets.passwords(result):
        secrets.remember(password)
    return result


def _reject_literal_secrets(raw: Any, where: str = "") -> None:
    """Passwords belong in environment variables (or PGPASSWORD), never in the YAML.

    Any password a URL or connection string holds (userinfo, `?password=`, `password=`) must
    be entirely `${VAR}` references, in every way the URL can be read.
    """
    if isinstance(raw, dict):
        for k, v in raw.items():
            _reject_literal_secrets(v, f"{where}.{k}" if where else str(k))
    elif isinstance(raw, list):
        for v in raw:
            _reject_literal_secrets(v, where)
    elif isinstance(raw, str) and any(
        not _ONLY_ENV_REFS.fullmatch(p) for p in secrets.passwords(raw)
    ):
        raise ConfigError(
            f"config key '{where}' holds a literal password; write ${{VAR}} in its place "
            "(postgresql://app:${PGPASSWORD}@db/sales) or let libpq read PGPASSWORD"
        )


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"unknown config key '{key}'"
    msg = err["msg"].removeprefix("Value error, ")
    return f"config key '{key}': {msg}" if key else msg


def from_dict(raw: dict[str, Any]) -> Settings:
    """Build Settings from a plain mapping (as parsed from YAML)."""
    _reject_literal_secrets(raw)
    try:
        return Settings.model_validate(_expand_env(raw, ""))
    except ValidationError as exc:
        raise ConfigError(_first_error(exc)) from None


class _RefusedYaml(Exception):
    """A YAML document the config loader will not build (the message names the key)."""


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that checks the composed document before building any Python object.

    Aliases are shared nodes until construction, so the expanded size is counted on the node
    graph (memoised per node: linear in the file) and a file that would expand beyond
    MAX_CONFIG_VALUES, nest beyond MAX_CONFIG_DEPTH, refer to itself, or repeat a key in a
    mapping is refused before it costs time or memory.
    """

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        """Count nesting while composing, so a deep file stops before Python's recursion limit."""
        self._depth += 1
        try:
            if self._depth > MAX_CONFIG_DEPTH:
                line = self.peek_event().start_mark.line + 1  # type: ignore[no-untyped-call]
                raise _RefusedYaml(f"nested deeper than {MAX_CONFIG_DEPTH} levels at line {line}")
            node: yaml.Node | None = super().compose_node(parent, index)
            return node
        finally:
            self._depth -= 1

    def compose_document(self) -> yaml.Node | None:
        node = super().compose_document()
        if node is not None:
            _check_node(self, node, "", 0, {}, set())
        return node


def _check_node(
    loader: _ConfigLoader,
    node: yaml.Node,
    where: str,
    depth: int,
    sizes: dict[int, int],
    open_nodes: set[int],
) -> int:
    """Expanded size of `node`; raises _RefusedYaml on the first rule it breaks."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    name = f"key '{where}'" if where else "the top level"
    if key in open_nodes:
        raise _RefusedYaml(f"{name} contains itself through a YAML alias")
    if depth > MAX_CONFIG_DEPTH:
        raise _RefusedYaml(f"{name} is nested deeper than {MAX_CONFIG_DEPTH} levels")
    open_nodes.add(key)
    size = 1
    if isinstance(node, yaml.MappingNode):
        _check_duplicate_keys(loader, node, where)
        for key_node, value_node in node.value:
            label = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            child = f"{where}.{label}" if where else str(label)
            if key_node.tag == "tag:yaml.org,2002:merge":
                child = where
            size += _check_node(loader, key_node, child, depth + 1, sizes, open_nodes)
            size += _check_node(loader, value_node, child, depth + 1, sizes, open_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = f"{where}[{i}]"
            size += _check_node(loader, item, child, depth + 1, sizes, open_nodes)
    open_nodes.discard(key)
    if size > MAX_CONFIG_VALUES:
        raise _RefusedYaml(
            f"{name} expands to more than {MAX_CONFIG_VALUES} values (each use of a YAML "
            "alias counts in full); write the values out"
        )
    sizes[key] = size
    return size


def _check_duplicate_keys(loader: _ConfigLoader, node: yaml.MappingNode, where: str) -> None:
    """YAML would keep the last of two equal keys silently; a config must not."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
            continue
        try:
            key = loader.construct_object(key_node)
            hash(key)
        except (yaml.YAMLError, TypeError):
            continue  # construction reports it later with its own message
        line = key_node.start_mark.line + 1
        if key in seen:
            dotted = f"{where}.{key_node.value}" if where else str(key_node.value)
            lines = f"on line {line}" if line == seen[key] else f"lines {seen[key]} and {line}"
            raise _RefusedYaml(f"key '{dotted}' appears twice ({lines}); keep one")
        seen[key] = line


def _yaml_problem(exc: yaml.YAMLError, text: str) -> str:
    """One line: what the parser found and where (line and column, 1-based)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        return f"{exc.problem}{where}"
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character
        code = char if isinstance(char, int) else ord(char) if len(char) == 1 else 0
        return f"unacceptable character #x{code:04x} on line {line}: {exc.reason}"
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _read_text(path: Path) -> str:
    """The file as UTF-8 text, refusing what is too large, binary or not UTF-8."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config file {path} is larger than {MAX_CONFIG_BYTES / 2**20:g} MiB; "
            "is it the right file?"
        )
    if b"\x00" in data:
        raise ConfigError(f"config file {path} is binary, not YAML text; is it the right file?")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start}); save it as UTF-8"
        ) from None


def parse_yaml(text: str, source: str = "config") -> dict[str, Any]:
    """Parse a config document safely: size, aliases, nesting and duplicate keys checked."""
    if not text.strip():
        raise ConfigError(f"{source} is empty; start from configs/minimal.yaml")
    try:
        raw = yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader subclass
    except _RefusedYaml as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {_yaml_problem(exc, text)}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested deeper than {MAX_CONFIG_DEPTH} levels") from None
    if raw is None:
        raise ConfigError(f"{source} holds no settings; start from configs/minimal.yaml")
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must hold a mapping at the top level")
    return raw


def load(path: str | Path | None = None) -> Settings:
    """Load the YAML at `path`; with no path, the documented defaults (bundled sample).

    The file must be UTF-8 YAML of at most MAX_CONFIG_BYTES, with no repeated key and no
    alias expansion beyond MAX_CONFIG_VALUES; every failure is a one-line ConfigError.
    """
    if path is None:
        return Settings()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    return from_dict(parse_yaml(_read_text(path), f"config file {path}"))


class DealActionSettings(_Section):
    """Next-best actions and rule-based warnings per open deal (`salesml.deals.actions`)."""

    top_k: int = Field(3, ge=1, description="Actions recommended per deal, largest uplift first")
    min_pair_occurrences: int = Field(
        20,
        ge=1,
        description="An (activity type, contact role) pair is a candidate action once it occurred "
        "this many times on deals before as_of",
    )
    plausible_role_share: float = Field(
        0.1,
        ge=0,
        le=1,
        description="A contact role seen on at least this share of the accounts with activities "
        "counts as plausible at every account; rarer roles only where the account has one",
    )
    min_uplift: float = Field(
        0.001,
        ge=0,
        description="Only actions whose uplift (win probability after - now) is above this are "
        "recommended (0.001 = 0.1 probability points)",
    )
    require_over_any_activity: bool = Field(
        True,
        description="Recommend only actions whose uplift over one activity of no particular type "
        "or role is above min_uplift too (one more touch of any kind is not an action)",
    )
    single_thread_days: int = Field(
        30, ge=1, description="Warn 'single-threaded' when one contact role engaged in these days"
    )
    senior_roles: list[str] = Field(
        default_factory=lambda: ["cto", "ceo", "vp"],
        description="Contact roles that count as senior for 'no senior contact'",
    )
    no_senior_days: int = Field(
        30, ge=1, description="Warn 'no senior contact' when none engaged in these days"
    )


# ---------------------------------------------------------------------------------------------
# Alerts (issue 13 item 4): typed rules, delivery channels. Secrets are never in the YAML: the
# YAML names the environment variable that holds them (`url_env`, `password_env`).
AlertSeverity = Literal["low", "medium", "high"]


class _AlertRule(_Section):
    id: str | None = Field(
        None,
        description="Stable rule id (part of every alert's key); defaults to the kind. Two "
        "rules of one kind need distinct ids",
    )
    severity: AlertSeverity = Field("medium", description="low, medium or high")

    @property
    def rule_id(self) -> str:
        return self.id or str(getattr(self, "kind", ""))


class HealthRedRule(_AlertRule):
    """An open deal's health turned red since its previous score: opens the run it turns red,
    stays open while it is red, resolves when it is not (a deal red since its first score, or
    red at the first scoring run, opens nothing: it is in `deals_at_risk` and the report).
    """

    kind: Literal["health_red"] = "health_red"
    severity: AlertSeverity = "high"


class ProbabilityDropRule(_AlertRule):
    """Win probability fell by more than `points` since the deal's previous score."""

    kind: Literal["probability_drop"] = "probability_drop"
    points: float = Field(
        10.0,
        gt=0,
        le=100,
        description="Drop in probability points (10 = 0.10) since the previous run; holds for "
        "the run that saw the drop, resolves at the next run without one",
    )


class StageDwellRule(_AlertRule):
    """An open deal has been in its stage longer than the stage's limit."""

    kind: Literal["stage_dwell"] = "stage_dwell"
    stage_limit_days: dict[str, float] = Field(
        default_factory=dict,
        description="Days per stage (normalised stage names, e.g. waiting_for_feedback: 5); "
        "added to, and overriding, deals.rules.stage_limit_days",
    )


class NoActivityRule(_AlertRule):
    """No activity logged on an open deal for `days` (since creation when it has none)."""

    kind: Literal["no_activity"] = "no_activity"
    severity: AlertSeverity = "low"
    days: float | None = Field(
        None, gt=0, description="Days without activity; null: deals.rules.no_activity_days"
    )


class StockPromotionRule(_AlertRule):
    """Stock under its safety level while 7-day sales rose: 'start a promotion' (or reorder)."""

    kind: Literal["stock_promotion"] = "stock_promotion"
    severity: AlertSeverity = "high"
    min_growth: float = Field(
        0.4, ge=0, description="7-day sales growth (0.4 = +40%) over the 7 days before, at least"
    )


class SignalDropRule(_AlertRule):
    """A signal (e.g. scans) summed over the last 7 days fell by `min_drop` week on week."""

    kind: Literal["signal_drop"] = "signal_drop"
    signal: str = Field("scans", description="Signal name (signals.name)")
    min_drop: float = Field(
        0.15, gt=0, le=1, description="Fall of the 7-day sum vs the 7 days before (0.15 = 15%)"
    )


AlertRuleSettings = Annotated[
    HealthRedRule
    | ProbabilityDropRule
    | StageDwellRule
    | NoActivityRule
    | StockPromotionRule
    | SignalDropRule,
    Field(discriminator="kind"),
]


def _default_alert_rules() -> list[AlertRuleSettings]:
    return [
        HealthRedRule(),
        ProbabilityDropRule(),
        StageDwellRule(),
        NoActivityRule(),
        StockPromotionRule(),
        SignalDropRule(),
    ]


class AlertWebhookSettings(_Section):
    """A Slack-compatible incoming webhook: POST {"text": ...} as JSON."""

    url_env: str = Field(
        ..., description="Environment variable holding the webhook URL (it carries the token)"
    )
    timeout_seconds: float = Field(10.0, gt=0, description="Per request")


class AlertSmtpSettings(_Section):
    """An SMTP server that takes the alert emails."""

    host: str = Field(..., description="SMTP host name")
    port: int = Field(587, ge=1, le=65535)
    from_address: str = Field(..., alias="from", description="Sender address")
    to: list[str] = Field(..., min_length=1, description="Recipient addresses")
    username: str | None = Field(None, description="Login name; null: no login")
    password_env: str | None = Field(
        None, description="Environment variable holding the SMTP password"
    )
    starttls: bool = Field(False, description="Upgrade the connection with STARTTLS")
    timeout_seconds: float = Field(10.0, gt=0)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class AlertsSettings(_Section):
    """Alerts: rules evaluated by the scoring and forecast runs, delivered by webhook / email.

    Rules are on by default; delivery is off until a channel (webhook or smtp) is configured.
    """

    rules: list[AlertRuleSettings] = Field(
        default_factory=_default_alert_rules,
        description="Typed rules (kind: health_red, probability_drop, stage_dwell, "
        "no_activity, stock_promotion, signal_drop); a list given replaces the defaults",
    )
    webhook: AlertWebhookSettings | None = Field(None, description="Slack-compatible webhook")
    smtp: AlertSmtpSettings | None = Field(None, description="Email through SMTP")
    notify_resolved: bool = Field(True, description="Also send a notice when an alert resolves")
    max_attempts: int = Field(
        4, ge=1, le=20, description="Tries per notice and channel in one run (then next run)"
    )
    backoff_seconds: float = Field(
        1.0, ge=0, description="Wait before the 2nd try; doubles for each further try"
    )

    @model_validator(mode="after")
    def _unique_rule_ids(self) -> AlertsSettings:
        ids = [rule.rule_id for rule in self.rules]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"alerts.rules: rule ids must be unique; repeated: {repeated}")
        return self


class DealViewsSettings(_Section):
    """What changed since the last scoring run and the rep / region views
    (`salesml.deals.changes`, `salesml.deals.views`).
    """

    unchanged_below_points: float = Field(
        0.5,
        ge=0,
        description="A deal whose probability moved by less than this many points (0.5 = half a "
        "point) since the last run is 'unchanged'",
    )
    moved_drivers: int = Field(
        3, ge=1, description="SHAP drivers listed per deal in deal_score_changes.moved_drivers"
    )
    rep_window_days: int = Field(
        90,
        ge=1,
        description="Rep win rate and won run-rate use deals closed this many days before as_of",
    )
    rep_prior_deals: float = Field(
        5.0, ge=0, description="A rep's win rate is shrunk to the peers' by this many pseudo-deals"
    )
    target_coverage: float = Field(
        1.0,
        gt=0,
        description="Pipeline coverage (open expected revenue / won run-rate) with full marks",
    )
