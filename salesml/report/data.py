"""What a report is made of: `ReportData` (gathered by `gather`, rendered by `render`).

Kept free of IO and of heavy imports so both sides (and tests) can build one cheaply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import polars as pl

DEAL_TABLES = ("deal_scores", "deal_score_factors", "pipeline_forecast")
DEMAND_TABLES = ("demand_forecast", "demand_forecast_factors", "sku_health")
DECISION_TABLES = (
    "deal_actions",
    "deal_score_changes",
    "pipeline_changes",
    "health_overview",
    "rep_health",
    "deals_at_risk",
)
"""Decision tables written per scoring as_of (alerts are keyed by alert_key: see gather)."""
OUTPUT_TABLES = (
    *DEAL_TABLES,
    "behavior_value",
    *DEMAND_TABLES,
    *DECISION_TABLES,
    "quarantine",
    "runs",
)

PRODUCING_COMMAND: dict[str, str] = {
    "deal_scores": "salesml score deals",
    "deal_score_factors": "salesml score deals",
    "pipeline_forecast": "salesml score deals",
    "behavior_value": "salesml train deal-win",
    "demand_forecast": "salesml forecast demand",
    "demand_forecast_factors": "salesml forecast demand",
    "sku_health": "salesml forecast demand",
    "quarantine": "salesml validate",
    "runs": "salesml validate",
    "model_quality": "salesml backtest deal-win|demand",
    **dict.fromkeys(DECISION_TABLES, "salesml score deals"),
    "alerts": "salesml score deals|forecast demand",
}
"""The command that writes each output table (named in the note of a section without data)."""

LATEST_BEFORE_TABLES = ("behavior_value",)
"""Tables written by training, not scoring: the report shows their latest as_of <= the report's."""


@dataclass(frozen=True)
class ReportOptions:
    """How much the report shows. Defaults fit a screen; sizes bound the file size."""

    at_risk_cards: int = 8
    """Deals at risk shown with their driver chart."""
    at_risk_table: int = 30
    """Further deals at risk listed in a table under the cards."""
    demand_series: int = 6
    """Customer x SKU series (largest forecast P50 volume) shown as forecast-vs-actuals panels."""
    history_days: int = 7
    """Days of actual sales shown before as_of in the demand panels."""
    global_drivers: int = 15
    """Features in the global demand driver chart."""
    sku_health_rows: int = 40
    """Rows of the SKU health table (red first, then soonest stock-out)."""
    quarantine_examples: int = 1
    """Example reasons per (table, check) in the data-quality section."""
    calibration_bins: int = 10
    """Equal-width probability bins of the reliability curve."""
    quality_points: int = 4
    """Latest origins summed up in each model-quality sentence ("over the last 4 checks")."""
    action_deals: int = 20
    """Deals listed with their next-best actions (largest uplift first)."""
    movers: int = 15
    """Deals whose probability moved most since the previous run, with their moved drivers."""
    rep_rows: int = 30
    """Reps in the rep health table (weakest health index first)."""
    alert_rows: int = 50
    """Alerts listed (open first, then by severity)."""


@dataclass(frozen=True)
class ReportData:
    """Everything `render` needs; frames follow `salesml.contract` output schemas.

    tables: output tables read for `as_of` (behavior_value: its latest as_of <= `as_of`).
        An absent key means the table does not exist in the warehouse. `alerts` (keyed by
        alert_key) holds the alerts open at as_of or resolved at it, with `status_at`.
    notes: per table (or section key), a sentence saying why data is missing or where it
        comes from; shown in place of / under the section.
    deal_info: deals as known at `as_of` (deal_id, account_id, owner_id, region, product,
        amount, expected_close_at), to describe the deals at risk; None when unreadable.
    calibration: past predictions whose deal closed since (scored_as_of < closed_at <= as_of):
        (scored_as_of, deal_id, win_probability, won: bool). None when not available.
    holdout_calibration_png: the champion model's holdout calibration plot (PNG bytes),
        used only when `calibration` is empty; `holdout_calibration_label` says which model.
    actuals: bucketed actual sales of the demand series shown: (customer_id, sku,
        bucket_start, quantity, after_as_of). Rows with after_as_of=True were read from the
        source after as_of for display only (a past as_of); no output used them.
    deal_gate: the promotion (skill) gate of the deal-win version that wrote the scores, or
        of the newest one trained at or before as_of when the scores come from no model:
        label -> value as shown ("decision", "brier_skill", ...). None when not available.
    demand_gate: the same for the demand version that wrote the forecast (scaled pinball
        loss next to the 8-week same-bucket median's). None when not available.
    model_quality: the quality history (`model_quality` rows of every as_of <= `as_of`:
        backtests and realised checks), for the trend section; None when the table is absent.
    """

    as_of: datetime
    generated_at: datetime
    timezone: str = "UTC"
    warehouse: str = ""
    bucket_hours: int = 4
    tables: Mapping[str, pl.DataFrame] = field(default_factory=dict)
    notes: Mapping[str, str] = field(default_factory=dict)
    deal_info: pl.DataFrame | None = None
    calibration: pl.DataFrame | None = None
    holdout_calibration_png: bytes | None = None
    holdout_calibration_label: str | None = None
    actuals: pl.DataFrame | None = None
    deal_gate: Mapping[str, str] | None = None
    demand_gate: Mapping[str, str] | None = None
    model_quality: pl.DataFrame | None = None
    options: ReportOptions = field(default_factory=ReportOptions)

    def table(self, name: str) -> pl.DataFrame | None:
        """The table's rows, or None when the table is absent or has no row for this as_of."""
        frame = self.tables.get(name)
        if frame is None or frame.height == 0:
            return None
        return frame


def missing_note(table: str, exists: bool, as_of: datetime, latest: datetime | None) -> str:
    """The sentence shown where a table has no data for `as_of`."""
    command = PRODUCING_COMMAND.get(table, "salesml")
    if not exists:
        return f"no data: run `{command}` (the warehouse has no table {table} yet)"
    where = f"; latest as_of in the warehouse: {latest.isoformat()}" if latest else ""
    return (
        f"no data for as_of {as_of.isoformat()}: run `{command} --as-of {as_of.isoformat()}`{where}"
    )
