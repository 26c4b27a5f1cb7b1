"""The decision frames of one scoring run: what changed, rep / region views, next-best actions.

Pure: the score job reads the previous run's rows (`Previous`, IO in the job), scores, then
hands everything here and writes what comes back in the same batch as `deal_scores`:

- `changes`: deal_score_changes (every deal scored now or in the previous run, once) and
  pipeline_changes (the expected-revenue waterfall of the month and quarter of as_of; empty on
  the first run) (`salesml.deals.changes`);
- `views`: health_overview, deals_at_risk, rep_health (`salesml.deals.views`);
- `actions`: deal_actions (`salesml.deals.actions`: re-scores copies of the model-scored deals
  with one more activity; warnings for every deal).

`scores` / `factors` are the frames the job is about to write (deal_scores, deal_score_factors
rows without lineage); `tables` the inputs as the job scored them (deals with
`deals.lost_after_days` applied). Every function reads only what was known at as_of: the
previous run is strictly earlier, and the domain functions cut their inputs at as_of.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import polars as pl

from salesml import contract
from salesml.alerts.rules import AlertFrames
from salesml.config import Settings
from salesml.deals.actions import deal_actions
from salesml.deals.changes import deal_score_changes, pipeline_changes
from salesml.deals.model import DealWinModel
from salesml.deals.revenue_forecast import BACKTEST_MONTHS, forecast_periods
from salesml.deals.views import deals_at_risk, health_overview, rep_health

CHANGE_TABLES = ("deal_score_changes", "pipeline_changes")
VIEW_TABLES = ("health_overview", "deals_at_risk", "rep_health")
ACTION_TABLES = ("deal_actions",)
DECISION_TABLES = CHANGE_TABLES + VIEW_TABLES + ACTION_TABLES
"""Every table the score job writes beside deal_scores, deal_score_factors, pipeline_forecast."""


def _empty(table: str) -> pl.DataFrame:
    return pl.DataFrame(schema=contract.row_dtypes(table))


@dataclass(frozen=True)
class Previous:
    """The previous scoring run: the latest as_of strictly before this one with deal_scores
    rows (None on the first run), with its deal_scores and deal_score_factors rows.
    """

    as_of: datetime | None = None
    scores: pl.DataFrame = field(default_factory=lambda: _empty("deal_scores"))
    factors: pl.DataFrame = field(default_factory=lambda: _empty("deal_score_factors"))


def changes(
    scores: pl.DataFrame,
    factors: pl.DataFrame,
    previous: Previous,
    tables: dict[str, pl.DataFrame],
    as_of: datetime,
    settings: Settings,
) -> dict[str, pl.DataFrame]:
    """deal_score_changes and pipeline_changes against `previous` (all 'new' and an empty
    waterfall when there is none). Probabilities and deltas are fractions (0.05 = 5 points).
    """
    views = settings.deal_views
    return {
        "deal_score_changes": deal_score_changes(
            scores,
            previous.scores,
            factors,
            previous.factors,
            tables["deals"],
            as_of,
            previous.as_of,
            unchanged_below_points=views.unchanged_below_points,
            top_drivers=views.moved_drivers,
        ),
        "pipeline_changes": pipeline_changes(
            scores, previous.scores, tables, as_of, previous.as_of, timezone=settings.timezone
        ),
    }


def views(
    scores: pl.DataFrame,
    previous: Previous,
    tables: dict[str, pl.DataFrame],
    as_of: datetime,
    settings: Settings,
) -> dict[str, pl.DataFrame]:
    """health_overview, deals_at_risk (value at risk: amount x probability lost since the
    previous run, or amount x (1 - p) on the first run) and rep_health, in the deals' amount
    unit; rep_health's run-rate is per `deals.label_horizon_days`, the probabilities' horizon.
    """
    before = previous.scores if previous.as_of is not None else None
    config = settings.deal_views
    return {
        "health_overview": health_overview(scores, before, tables["deals"]),
        "deals_at_risk": deals_at_risk(scores, before, tables["deals"]),
        "rep_health": rep_health(
            scores,
            tables,
            as_of,
            horizon_days=settings.deals.label_horizon_days,
            rules=settings.deals.health.rules,
            window_days=config.rep_window_days,
            prior_deals=config.rep_prior_deals,
            target_coverage=config.target_coverage,
        ),
    }


def actions(
    model: DealWinModel | None,
    scores: pl.DataFrame,
    tables: dict[str, pl.DataFrame],
    as_of: datetime,
    settings: Settings,
) -> dict[str, pl.DataFrame]:
    """deal_actions: the top actions of model-scored deals (uplift in probability, what the
    model associates with the activity, not a measured effect) and rule warnings; `model`
    None (base rate): warnings only.
    """
    return {"deal_actions": deal_actions(model, tables, scores, as_of, settings.deal_actions)}


def alert_frames(
    scores: pl.DataFrame,
    previous: Previous,
    score_changes: pl.DataFrame,
    tables: dict[str, pl.DataFrame],
) -> AlertFrames:
    """What the deal alert rules read after a scoring run: this run's scores, the previous
    run's (probability and health; empty on the first run), deal_score_changes and the inputs
    cut at as_of. The demand frames are absent, so the demand rules are not evaluated (their
    alerts stay as they are).
    """
    return AlertFrames(
        deal_scores=scores,
        previous_deal_scores=previous.scores,
        deal_score_changes=score_changes,
        deals=tables["deals"],
        deal_stage_history=tables.get("deal_stage_history"),
        activities=tables.get("activities"),
    )


def pipeline_origins(as_of: datetime, n: int, timezone: str = "UTC") -> list[datetime]:
    """The latest `n` month starts (calendar, in `timezone`; UTC instants), oldest first, whose
    backtested months (the origin's month and the next: `BACKTEST_MONTHS`) have ended by
    `as_of`, so every revenue the pipeline backtest compares with is known at as_of.
    """
    starts = [forecast_periods(as_of, timezone)[0].start]
    for _ in range(BACKTEST_MONTHS + n - 1):
        before = starts[-1] - timedelta(microseconds=1)
        starts.append(forecast_periods(before, timezone)[0].start)
    return sorted(starts[BACKTEST_MONTHS:])
