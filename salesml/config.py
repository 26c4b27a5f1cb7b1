"""The one configuration object: `Settings`, loaded from YAML by `load(path)`.

Every constant with a meaning (thresholds, windows, decay, bands) lives here with a documented
default, so a run is fully described by its effective config (`salesml config show`).
Unknown keys are an error that names the key; secrets come only from environment variables.
"""

from __future__ import annotations

import os
import re
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_URL_PASSWORD = re.compile(r"^[a-z0-9+]+://[^/:@]+:([^@/]+)@", re.IGNORECASE)


class ConfigError(ValueError):
    """A config that cannot be used; the message is one line naming the problem."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourcesSettings(_Section):
    """Where the canonical input tables come from: a folder (Parquet/CSV) or a database URL."""

    path: Path | None = Field(None, description="Folder holding deals.parquet / deals.csv, ...")
    url: str | None = Field(
        None, description="Database URL: duckdb:///file.duckdb or postgresql://..."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> SourcesSettings:
        if (self.path is None) == (self.url is None):
            raise ValueError("sources needs exactly one of 'path' or 'url'")
        return self


class WarehouseSettings(_Section):
    """Where outputs are written. DuckDB file by default; PostgreSQL by URL."""

    url: str = "duckdb:///out/warehouse.duckdb"
    lock_timeout_seconds: float = Field(
        60.0, ge=0, description="How long a writer waits for another writer before failing"
    )


class MlflowSettings(_Section):
    tracking_uri: str = "sqlite:///out/mlflow.db"
    experiment: str = "salesml"


class ValidationSettings(_Section):
    max_bad_share: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Share of bad rows per table under which the run goes on without them; "
        "at or above it the run stops before writing anything",
    )
    example_rows: int = Field(3, ge=1, description="Example rows named in a stopping error")


class HealthBands(_Section):
    """Probability bands for deal health; versioned with the model that produced the scores."""

    red_below: float = Field(0.2, ge=0, le=1)
    green_at_or_above: float = Field(0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> HealthBands:
        if self.red_below > self.green_at_or_above:
            raise ValueError("health bands need red_below <= green_at_or_above")
        return self


class DealHealthRules(_Section):
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


class DealsSettings(_Section):
    """Deal-win model: snapshots, features, training gate, scoring and health."""

    stage_order: list[str] = Field(
        default_factory=lambda: ["qualification", "discovery", "proposal", "negotiation"]
    )
    snapshot_every_days: int = Field(7, ge=1, description="Cadence of training snapshots")
    activity_windows_days: list[int] = Field(default_factory=lambda: [7, 30, 90])
    decay_hours: float = Field(72.0, gt=0, description="Half-life-like decay of behaviour score")
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
    custom_features: list[str] = Field(
        default_factory=list, description="Extra deal columns to use as features"
    )
    min_won: int = Field(200, ge=1, description="Refuse to train below this many won deals")
    min_lost: int = Field(200, ge=1, description="Refuse to train below this many lost deals")
    min_open_days: float = Field(2.0, ge=0, description="Do not score deals younger than this")
    prior_strength: float = Field(
        10.0, gt=0, description="Pseudo-count for smoothed account/rep win rates"
    )
    top_k: int = Field(5, ge=1)
    bands: HealthBands = Field(default_factory=HealthBands)
    rules: DealHealthRules = Field(default_factory=DealHealthRules)
    seed: int = 42
    history_days: int | None = Field(
        730, ge=1, description="Training snapshots reach this many days back from as_of (None: all)"
    )
    label_horizon_days: int = Field(
        0,
        ge=0,
        description="Training snapshots stop this many days before as_of (less censoring bias)",
    )
    decay_horizon_half_lives: float = Field(
        20.0,
        gt=0,
        description="Activities older than this many half-lives drop out of decayed sums",
    )
    min_pair_occurrences: int = Field(
        20,
        ge=1,
        description="An (activity type, contact role) pair gets its own feature from this count",
    )
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
        description="Calibrator fitted on the latest-closing deals the booster never saw",
    )
    valid_fraction: float = Field(
        0.15, gt=0, lt=0.5, description="Share of snapshots (latest closes) for early stopping"
    )
    calibration_fraction: float = Field(
        0.25, gt=0, lt=0.5, description="Share of snapshots (latest closes) for calibration"
    )
    gate_metric: Literal["auc", "log_loss", "brier"] = Field(
        "auc", description="Metric of the champion gate (both models on the same holdout)"
    )
    backtest_step_days: int = Field(30, ge=1, description="Days between backtest origins")
    backtest_follow_up_days: int = Field(
        60,
        ge=0,
        description="Days after an origin's evaluation window before as_of, so most of its "
        "deals have closed (less censoring in the backtest)",
    )
    forecast_simulations: int = Field(
        1000, ge=100, description="Monte Carlo draws for pipeline P10/P50/P90"
    )
    num_threads: int = Field(2, ge=1, le=64)


HealthColour = Literal["red", "yellow", "green"]


def _red_and_yellow() -> list[HealthColour]:
    return ["red", "yellow"]


class DemandSettings(_Section):
    """4-hour customer x SKU demand model."""

    bucket_hours: Literal[1, 2, 3, 4, 6, 8, 12, 24] = 4
    horizon_buckets: int = Field(42, ge=1, description="Buckets ahead (42 x 4h = 7 days)")
    returns: Literal["net", "ignore"] = Field(
        "net", description="net: returns reduce demand; ignore: only positive quantities count"
    )
    known_signals: list[str] = Field(
        default_factory=lambda: ["price", "promotion"],
        description="Signal names known in advance (used at future values)",
    )
    observed_signals: list[str] = Field(
        default_factory=list, description="Signal names observed only up to as_of"
    )
    signal_weights: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="Per signal, per region multiplier a planner sets (logged with the run)",
    )
    explain_hours_ahead: int = Field(
        24, ge=0, description="Drivers (SHAP) for every series' buckets in the next N hours"
    )
    explain_max_rows: int = Field(
        50_000,
        ge=0,
        description="Cap on explained rows per run (~1 ms each on 2 cores): red series first, "
        "then the next hours, then yellow, earliest buckets first; the run record says when "
        "the cap cut the selection",
    )
    explain_health: list[HealthColour] = Field(
        default_factory=_red_and_yellow,
        description="Series with these SKU health colours get SHAP drivers for every bucket",
    )
    safety_stock_days: float = Field(
        2.0, ge=0, description="Safety stock = this many days of forecast P50 demand"
    )
    growth_threshold: float = Field(
        0.4, ge=0, description="7-day sales growth (0.4 = +40%) that turns low stock red"
    )
    seed: int = 42
    # --- grid and history
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
    holidays: list[date] = Field(
        default_factory=list, description="Local dates flagged as holidays (feature is_holiday)"
    )
    # --- features
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
    # --- model
    objective: Literal["tweedie", "poisson"] = "tweedie"
    tweedie_variance_power: float = Field(1.2, gt=1, lt=2)
    num_leaves: int = Field(
        15, ge=2, description="Lean trees: as accurate here, and SHAP costs ~trees x leaves"
    )
    learning_rate: float = Field(0.1, gt=0)
    n_estimators: int = Field(150, ge=1)
    min_data_in_leaf: int = Field(50, ge=1)
    feature_fraction: float = Field(0.9, gt=0, le=1)
    num_threads: int = Field(2, ge=1, le=64)
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
    interval_coverage: float = Field(
        0.8, gt=0, lt=1, description="Target share of actuals inside [P10, P90]"
    )
    calibration_origins: int = Field(
        1,
        ge=1,
        description="Weekly origins held out before as_of to calibrate P10/P90 (and gate)",
    )
    refit_after_calibration: Literal["none", "leaves", "full"] = Field(
        "none",
        description="After calibrating on the held-out weeks: 'leaves' re-estimates the trees' "
        "leaf values on all weeks (cheap), 'full' refits from scratch (2x training time), "
        "'none' keeps the model trained up to the held-out weeks",
    )
    refit_decay: float = Field(
        0.5, ge=0, lt=1, description="'leaves' refit: weight kept on the old leaf values"
    )
    # --- explanation, health, baselines
    top_k: int = Field(5, ge=1)
    stockout_red_hours: float = Field(
        24.0, ge=0, description="Projected P50 stock-out within this many hours is red"
    )
    ets_max_series: int = Field(
        300, ge=0, description="Backtest the statsmodels ETS baseline only up to this many series"
    )


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
        description="A 'running' run older than this is taken as dead and no longer blocks",
    )


class Settings(_Section):
    """The effective configuration of a salesml run."""

    sources: SourcesSettings = Field(
        default_factory=lambda: SourcesSettings(path=Path("data/sample"))
    )
    warehouse: WarehouseSettings = Field(default_factory=WarehouseSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    timezone: str = "UTC"
    column_map: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Per table, {your column name: canonical name}",
    )
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    deals: DealsSettings = Field(default_factory=DealsSettings)
    demand: DemandSettings = Field(default_factory=DemandSettings)
    compute: ComputeSettings = Field(default_factory=ComputeSettings)

    @model_validator(mode="after")
    def _known_timezone(self) -> Settings:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {self.timezone!r}") from exc
        return self

    def to_yaml(self) -> str:
        """The effective config as YAML, with any password in a URL masked."""
        return yaml.safe_dump(_mask_secrets(self.model_dump(mode="json")), sort_keys=False)


def _mask_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _mask_secrets(v) for k, v in value.items()}
    if isinstance(value, str) and _URL_PASSWORD.match(value):
        start, end = _URL_PASSWORD.match(value).span(1)  # type: ignore[union-attr]
        return value[:start] + "***" + value[end:]
    return value


def _expand_env(value: Any, where: str) -> Any:
    """Replace ${VAR} in strings with the environment's value; a missing variable is an error."""
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, where) for v in value]
    if not isinstance(value, str):
        return value

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"config key '{where}' refers to ${{{name}}}, which is not set")
        return os.environ[name]

    return _ENV_REF.sub(sub, value)


def _reject_literal_secrets(raw: Any, where: str = "") -> None:
    """Passwords belong in environment variables (or PGPASSWORD), never in the YAML."""
    if isinstance(raw, dict):
        for k, v in raw.items():
            _reject_literal_secrets(v, f"{where}.{k}" if where else str(k))
    elif isinstance(raw, str):
        match = _URL_PASSWORD.match(raw)
        if match and not _ENV_REF.fullmatch(match.group(1)):
            raise ConfigError(
                f"config key '{where}' holds a literal password; use ${{VAR}} or PGPASSWORD instead"
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


def load(path: str | Path | None = None) -> Settings:
    """Load the YAML at `path`; with no path, the documented defaults (bundled sample)."""
    if path is None:
        return Settings()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"config file {path} is not valid YAML: {exc}".replace("\n", " ")
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return from_dict(raw)
