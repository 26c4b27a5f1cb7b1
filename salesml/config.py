"""The one configuration object: `Settings`, loaded from YAML by `load(path)`.

Every constant with a meaning (thresholds, windows, decay, bands) lives here with a documented
default, so a run is fully described by its effective config (`salesml config show`).
Unknown keys are an error that names the key; secrets come only from environment variables.
"""

from __future__ import annotations

import os
import re
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
    explain_hours_ahead: int = Field(24, ge=0)
    explain_health: list[Literal["red", "yellow", "green"]] = Field(
        default_factory=lambda: ["red", "yellow"]
    )
    safety_stock_days: float = Field(2.0, ge=0)
    growth_threshold: float = Field(0.4, ge=0)
    seed: int = 42


class ComputeSettings(_Section):
    dask: str | None = Field(None, description="Dask scheduler address or 'local-cluster'")


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
