"""Scoring open deals: calibrated probability, SHAP drivers in words, health, pipeline forecast.

`score_open_deals(model, tables, as_of, settings)` is pure. Every deal open at `as_of` is either
scored or given a `not_scored_reason` (younger than `min_open_days`), never an invented score.

Contributions (`deal_score_factors.contribution` and the numbers in `top_factors`) are exact
TreeSHAP values in log-odds of the model's raw score, before calibration; positive raises the
win probability. `contribution_unit` says so on every row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from salesml import explain
from salesml.config import DealHealthRules, HealthBands
from salesml.deals.features import build_features, feature_labels
from salesml.deals.health import json_array, rate_health
from salesml.deals.model import DealWinModel
from salesml.deals.pipeline_forecast import pipeline_forecast
from salesml.deals.snapshots import open_deals
from salesml.progress import Progress, report
from salesml.timeutil import DATETIME

CONTRIBUTION_UNIT = "log-odds"


@dataclass
class ScoreResult:
    """Frames for deal_scores, deal_score_factors, pipeline_forecast; unscored deals apart."""

    scores: pl.DataFrame
    factors: pl.DataFrame
    forecast: pl.DataFrame
    not_scored: pl.DataFrame


def score_open_deals(
    model: DealWinModel,
    tables: dict[str, pl.DataFrame],
    as_of: datetime,
    *,
    min_open_days: float,
    rules: DealHealthRules,
    top_k: int = 5,
    n_simulations: int = 1000,
    seed: int = 42,
    timezone: str = "UTC",
    progress: Progress | None = None,
) -> ScoreResult:
    """Score every deal open at `as_of` with `model` (its own feature spec and health bands)."""
    if model.feature_spec is None:
        raise ValueError("the model has no feature spec; it was not trained by salesml")
    spec = model.feature_spec
    report(progress, "open deals", 0.0)
    candidates = open_deals(tables["deals"], as_of, min_open_days)
    to_score = candidates.filter(pl.col("not_scored_reason").is_null())
    not_scored = candidates.filter(pl.col("not_scored_reason").is_not_null()).select(
        "deal_id", "not_scored_reason"
    )
    if to_score.height == 0:
        return _nothing_scored(not_scored)
    report(progress, "features", 0.1)
    features = build_features(to_score, tables, spec)
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
    bands = HealthBands(**(model.health_bands or {}))
    scored = features.with_columns(
        pl.Series("win_probability", probability),
        pl.Series("raw_score", raw),
    )
    rated = rate_health(scored, bands, rules)
    scores = (
        rated.join(top, on="deal_id", how="left")
        .with_columns(
            json_array(pl.col("_texts").fill_null(pl.lit([], pl.List(pl.String)))).alias(
                "top_factors"
            ),
            pl.lit(CONTRIBUTION_UNIT).alias("contribution_unit"),
        )
        .select(
            "deal_id",
            "win_probability",
            "health",
            "health_reasons",
            "top_factors",
            "raw_score",
            "contribution_unit",
            "stage",
            "days_in_stage",
        )
        .sort("deal_id")
    )
    report(progress, "pipeline forecast", 0.9)
    forecast = pipeline_forecast(
        scored.select("deal_id", "region", "amount", "expected_close_at", "win_probability"),
        as_of,
        n_simulations=n_simulations,
        seed=seed,
        timezone=timezone,
    )
    report(progress, "scored", 1.0)
    return ScoreResult(
        scores=scores,
        factors=factor_rows.with_columns(pl.lit(CONTRIBUTION_UNIT).alias("contribution_unit")),
        forecast=forecast,
        not_scored=not_scored,
    )


def _nothing_scored(not_scored: pl.DataFrame) -> ScoreResult:
    """Empty outputs (with their columns) when no open deal can be scored."""
    scores = pl.DataFrame(
        schema={
            "deal_id": pl.String,
            "win_probability": pl.Float64,
            "health": pl.String,
            "health_reasons": pl.String,
            "top_factors": pl.String,
            "raw_score": pl.Float64,
            "contribution_unit": pl.String,
            "stage": pl.String,
            "days_in_stage": pl.Float64,
        }
    )
    factors = pl.DataFrame(
        schema={
            "deal_id": pl.String,
            "rank": pl.Int64,
            "feature": pl.String,
            "feature_value": pl.String,
            "contribution": pl.Float64,
            "text": pl.String,
            "contribution_unit": pl.String,
        }
    )
    forecast = pipeline_forecast(
        pl.DataFrame(
            schema={
                "deal_id": pl.String,
                "region": pl.String,
                "amount": pl.Float64,
                "expected_close_at": DATETIME,
                "win_probability": pl.Float64,
            }
        ),
        datetime(1970, 1, 1, tzinfo=UTC),
    )
    return ScoreResult(scores=scores, factors=factors, forecast=forecast, not_scored=not_scored)
