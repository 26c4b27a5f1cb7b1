"""Small deal worlds and a fast model configuration shared by the deal-win tests."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import polars as pl
import pytest

from salesml.config import DealsSettings
from salesml.deals.training import TrainingResult, fit_deal_win
from salesml.sample import WORLD_END, deals_world
from tests.fast_models import merged

AS_OF = WORLD_END - timedelta(days=40)
"""Tests train and score 40 days before the world's end, so there is a future to hide."""


def fast_deal_settings(**overrides: Any) -> DealsSettings:
    """Few, small trees on one thread; low sufficiency minimums for small worlds.

    Overrides use the nested keys; a sub-section (`model={...}`) merges into the fast one.
    """
    values: dict[str, Any] = {
        "model": {
            "num_threads": 1,
            "n_estimators": 80,
            "learning_rate": 0.15,
            "num_leaves": 7,
            "min_child_samples": 20,
            "early_stopping_rounds": 10,
        },
        "min_won": 30,
        "min_lost": 30,
        "history_days": None,
        "forecast_simulations": 200,
        "label_horizon_days": 45,
        "holdout_days": 28,
        "skill_bootstrap": 50,
    }
    return DealsSettings.model_validate(merged(values, overrides))


@pytest.fixture(scope="session")
def small_world() -> dict[str, pl.DataFrame]:
    tables, _ = deals_world(n_deals=1200, days=300, seed=7)
    return tables


@pytest.fixture(scope="session")
def fast_settings() -> DealsSettings:
    return fast_deal_settings()


@pytest.fixture(scope="session")
def trained(small_world: dict[str, pl.DataFrame], fast_settings: DealsSettings) -> TrainingResult:
    return fit_deal_win(small_world, AS_OF, fast_settings)


def cut_at(tables: dict[str, pl.DataFrame], as_of: datetime) -> dict[str, pl.DataFrame]:
    """What a source shows at as_of: future rows deleted, later closes hidden (deals open)."""
    at = pl.lit(as_of)
    deals = tables["deals"].filter(pl.col("created_at") <= at)
    hidden = pl.col("closed_at") > at
    return {
        "deals": deals.with_columns(
            pl.when(hidden).then(None).otherwise(pl.col("closed_at")).alias("closed_at"),
            pl.when(hidden).then(None).otherwise(pl.col("outcome")).alias("outcome"),
        ),
        "deal_stage_history": tables["deal_stage_history"].filter(pl.col("entered_at") <= at),
        "deal_close_date_history": tables["deal_close_date_history"].filter(
            pl.col("changed_at") <= at
        ),
        "activities": tables["activities"].filter(pl.col("occurred_at") <= at),
        "accounts": tables["accounts"],
    }


def scramble_future(tables: dict[str, pl.DataFrame], as_of: datetime) -> dict[str, pl.DataFrame]:
    """Change every row after as_of: flip later outcomes, move later events, rewrite activities."""
    at = pl.lit(as_of)
    later = pl.col("closed_at") > at
    deals = tables["deals"].with_columns(
        pl.when(later)
        .then(pl.when(pl.col("outcome") == "won").then(pl.lit("lost")).otherwise(pl.lit("won")))
        .otherwise(pl.col("outcome"))
        .alias("outcome"),
        pl.when(later)
        .then(pl.col("closed_at") + timedelta(days=3))
        .otherwise(pl.col("closed_at"))
        .alias("closed_at"),
    )
    activities = tables["activities"]
    future = activities.filter(pl.col("occurred_at") > at)
    rewritten = future.with_columns(
        pl.lit("demo").alias("activity_type"),
        pl.lit("cto").alias("contact_role"),
        (pl.col("occurred_at") - timedelta(hours=1)).clip(lower_bound=as_of + timedelta(seconds=1)),
    )
    return {
        "deals": deals,
        "deal_stage_history": tables["deal_stage_history"].filter(
            (pl.col("entered_at") <= at) | (pl.col("stage") != "negotiation")
        ),
        "deal_close_date_history": tables["deal_close_date_history"].with_columns(
            pl.when(pl.col("changed_at") > at)
            .then(pl.col("expected_close_at") + timedelta(days=30))
            .otherwise(pl.col("expected_close_at"))
            .alias("expected_close_at")
        ),
        "activities": pl.concat([activities.filter(pl.col("occurred_at") <= at), rewritten]),
        "accounts": tables["accounts"],
    }
