"""Scoring open deals: calibrated probability, SHAP drivers in words, health, pipeline forecast.

`score_open_deals(model, tables, as_of, ...)` is pure. Every deal open at `as_of` gets a
probability of one event, "won within H days of as_of" (H = the model's `label_horizon_days`,
`probability_event` on every row), and `score_basis` says where it came from:

- `model`: the deal is at least `min_open_days` old and a model with skill serves as_of;
- `prior`: the deal is younger than `min_open_days` (too little history for the model): the
  rate of the event among deals created in the latest window with full follow-up;
- `base_rate`: no model with skill serves as_of (`model` is None): the rate of the event among
  the latest snapshots with full follow-up, known at as_of; `basis_reason` says why.

Contributions (`deal_score_factors.contribution` and the numbers in `top_factors`) are exact
TreeSHAP values in log-odds of the model's raw score, before calibration; positive raises the
win probability. `contribution_unit` says so on every row. Only `model` rows have factors.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import polars as pl

from salesml import contract, explain
from salesml.config import DealHealthRules, DealsSettings, HealthBands
from salesml.deals.features import FeatureSpec, build_features, feature_labels
from salesml.deals.health import rate_health
from salesml.deals.model import DealWinModel
from salesml.deals.revenue_forecast import pipeline_forecast
from salesml.deals.snapshots import event_rates, open_deals
from salesml.jsonutil import json_text
from salesml.progress import Progress, report

CONTRIBUTION_UNIT = "log-odds"


@dataclass
class ScoreResult:
    """Frames for deal_scores (every open deal), deal_score_factors, pipeline_forecast."""

    scores: pl.DataFrame
    factors: pl.DataFrame
    forecast: pl.DataFrame


@dataclass(frozen=True)
class Priors:
    """What a deal gets without a model score, known at as_of (see `snapshots.event_rates`)."""

    base_rate: float
    young_rate: float
    horizon_days: int
    base_rate_snapshots: int = 0
    young_deals: int = 0


def priors_at(deals: pl.DataFrame, as_of: datetime, settings: DealsSettings) -> Priors:
    """The base rate and young-deal prior of the event known at `as_of`."""
    base, young, n_snapshots, n_young = event_rates(
        deals,
        as_of,
        settings.snapshot_every_days,
        settings.label_horizon_days,
        settings.holdout_days,
        settings.min_open_days,
        settings.lost_after_days,
    )
    return Priors(base, young, settings.label_horizon_days, n_snapshots, n_young)


def event_text(horizon_days: int) -> str:
    """The event a probability is about, in words (stored on every deal_scores row)."""
    return f"won within {horizon_days} days of as_of"


SCORE_COLUMNS = [c for c in contract.row_dtypes("deal_scores") if c != "not_scored_reason"]
"""The `deal_scores` columns scoring writes, in contract order (`not_scored_reason` is legacy:
rows written before every deal got a score)."""
HEALTH_INPUTS = {
    "stage": pl.String,
    "days_in_stage": pl.Float64,
    "days_since_last_activity": pl.Float64,
    "age_days": pl.Float64,
    "days_to_expected_close": pl.Float64,
    "close_date_slips": pl.Float64,
}
"""Feature columns the health rules read; null (no rule fires) for rows without features."""


def score_open_deals(
    model: DealWinModel | None,
    tables: dict[str, pl.DataFrame],
    as_of: datetime,
    *,
    min_open_days: float,
    rules: DealHealthRules,
    bands: HealthBands | None = None,
    priors: Priors | None = None,
    base_rate_reason: str = "no deal-win model with skill serves this as_of",
    health_spec: FeatureSpec | None = None,
    top_k: int = 5,
    n_simulations: int = 1000,
    seed: int = 42,
    timezone: str = "UTC",
    progress: Progress | None = None,
) -> ScoreResult:
    """Score every deal open at `as_of` (see module docstring); `model` None = base rate.

    `rules` and `bands` (default `HealthBands()`): the health policy of the current settings
    (`deals.health.rules`, `deals.health.bands`), applied to every row whatever model scored it.
    `priors` default: computed from `tables` with the default settings and `min_open_days`.
    `health_spec` (used when `model` is None, e.g. `features.learn_spec` at as_of): the feature
    set whose stage, age, close-date and activity columns feed the health rules of base-rate
    rows, so the rules that need no model still fire; None: those rows get the band only.
    Deals in `tables` are taken as given (apply `deals.lost_after_days` before calling).
    """
    report(progress, "open deals", 0.0)
    if priors is None:
        priors = priors_at(tables["deals"], as_of, DealsSettings(min_open_days=min_open_days))
    horizon = priors.horizon_days
    if model is not None:
        if model.feature_spec is None:
            raise ValueError("the model has no feature spec; it was not trained by salesml")
        horizon = getattr(model, "label_horizon_days", None) or horizon
    candidates = open_deals(tables["deals"], as_of, min_open_days)
    to_model, others = _by_basis(model, candidates, priors, min_open_days, base_rate_reason)
    modelled, factor_rows = _model_scores(model, to_model, tables, top_k, progress)
    plain = _plain_scores(others, tables, health_spec if model is None else None)
    scored = pl.concat([modelled, plain], how="diagonal_relaxed")
    spec = model.feature_spec if model is not None else health_spec
    activity_log = spec is None or spec.uses_activities
    rated = rate_health(scored, bands or HealthBands(), rules, activity_log=activity_log)
    scores = _score_rows(rated, horizon)
    report(progress, "pipeline forecast", 0.9)
    forecast = pipeline_forecast(
        scored.select("deal_id", "win_probability"),
        tables,
        as_of,
        horizon_days=horizon,
        n_simulations=n_simulations,
        seed=seed,
        timezone=timezone,
    )
    report(progress, "scored", 1.0)
    return ScoreResult(scores=scores, factors=factor_rows, forecast=forecast)


def _by_basis(
    model: DealWinModel | None,
    candidates: pl.DataFrame,
    priors: Priors,
    min_open_days: float,
    base_rate_reason: str,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(open deals the model scores, the others with score_basis, win_probability and
    basis_reason): without a model every deal gets the base rate; with one, young deals get
    the young-deal prior.
    """
    if model is None:
        return candidates.clear(), candidates.with_columns(
            pl.lit("base_rate").alias("score_basis"),
            pl.lit(priors.base_rate).alias("win_probability"),
            pl.lit(base_rate_reason).alias("basis_reason"),
        )
    return candidates.filter(~pl.col("young")), candidates.filter(pl.col("young")).with_columns(
        pl.lit("prior").alias("score_basis"),
        pl.lit(priors.young_rate).alias("win_probability"),
        pl.lit(f"open less than {min_open_days:g} days: young-deal prior").alias("basis_reason"),
    )


def _plain_scores(
    others: pl.DataFrame, tables: dict[str, pl.DataFrame], spec: FeatureSpec | None
) -> pl.DataFrame:
    """Rows scored without the model: health inputs (`_health_inputs`), the deal attributes
    the forecast reads, and no raw score or factors.
    """
    attributes = tables["deals"].select("deal_id", "region", "amount", "expected_close_at")
    return (
        _health_inputs(others, tables, spec)
        .join(attributes, on="deal_id", how="left")
        .with_columns(
            pl.lit(None, pl.Float64).alias("raw_score"),
            pl.lit(None, pl.String).alias("top_factors"),
        )
        .with_columns(pl.col("win_probability").cast(pl.Float64))
    )


def _score_rows(rated: pl.DataFrame, horizon: int) -> pl.DataFrame:
    """The `deal_scores` rows (SCORE_COLUMNS, by deal_id) of rated scores."""
    return (
        rated.with_columns(
            pl.col("top_factors").fill_null("[]"),
            pl.lit(CONTRIBUTION_UNIT).alias("contribution_unit"),
            pl.lit(event_text(horizon)).alias("probability_event"),
            pl.col("basis_reason").cast(pl.String),
        )
        .select(SCORE_COLUMNS)
        .sort("deal_id")
    )


def _health_inputs(
    rows: pl.DataFrame, tables: dict[str, pl.DataFrame], spec: FeatureSpec | None
) -> pl.DataFrame:
    """`rows` plus the HEALTH_INPUTS columns at their snapshot_at: from `spec`'s features
    (point in time, as for model rows), or null (no rule fires) without a spec.
    """
    if spec is None or rows.height == 0:
        return rows.with_columns(
            *(pl.lit(None, dtype).alias(name) for name, dtype in HEALTH_INPUTS.items())
        )
    features = build_features(rows.select("deal_id", "snapshot_at"), tables, spec)
    health = features.select(
        "deal_id",
        *(
            (pl.col(name) if name in features.columns else pl.lit(None)).cast(dtype).alias(name)
            for name, dtype in HEALTH_INPUTS.items()
        ),
    )
    return rows.join(health, on="deal_id", how="left")


def _model_scores(
    model: DealWinModel | None,
    to_score: pl.DataFrame,
    tables: dict[str, pl.DataFrame],
    top_k: int,
    progress: Progress | None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(features + win_probability, raw_score, top_factors, score_basis; factor rows)."""
    if model is None or to_score.height == 0:
        # the scored part is a partial frame (concatenated with the others), not a table shape
        empty = pl.DataFrame(schema={"deal_id": pl.String, "win_probability": pl.Float64})
        return empty, pl.DataFrame(schema=contract.row_dtypes("deal_score_factors"))
    spec = model.feature_spec
    assert spec is not None
    report(progress, "features", 0.1)
    features = build_features(to_score.select("deal_id", "snapshot_at"), tables, spec)
    report(progress, "predict and explain", 0.4)
    probability, raw, contrib = model.predict_with_contributions(features)
    report(progress, "reasons", 0.8)
    factors = explain.top_factors(
        contrib,
        model.feature_names_,
        features,
        labels=feature_labels(spec),
        k=top_k,
        unit="log-odds",
    )
    ids = features.select("deal_id").with_row_index("row_idx")
    factor_rows = (
        factors.join(ids, on="row_idx")
        .select(
            "deal_id",
            pl.col("rank").cast(pl.Int64),
            "feature",
            "feature_value",
            "contribution",
            "text",
        )
        .sort("deal_id", "rank")
    )
    top = factor_rows.group_by("deal_id").agg(pl.col("text").sort_by("rank").alias("_texts"))
    scored = (
        features.with_columns(
            pl.Series("win_probability", probability),
            pl.Series("raw_score", raw),
            pl.lit("model").alias("score_basis"),
            pl.lit(None, pl.String).alias("basis_reason"),
        )
        .join(top, on="deal_id", how="left")
        .with_columns(
            json_text(pl.col("_texts").fill_null(pl.lit([], pl.List(pl.String)))).alias(
                "top_factors"
            )
        )
        .drop("_texts")
    )
    return scored, factor_rows.with_columns(pl.lit(CONTRIBUTION_UNIT).alias("contribution_unit"))
