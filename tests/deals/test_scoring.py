"""Scoring open deals: every open deal is scored or says why not; reasons match SHAP."""

from __future__ import annotations

import json

import numpy as np
import polars as pl

from salesml.config import DealsSettings
from salesml.deals.scoring import priors_at, score_open_deals
from salesml.deals.snapshots import deals_known_at, open_deals
from salesml.deals.training import TrainingResult
from tests.deals.conftest import AS_OF


def test_every_open_deal_gets_a_probability_young_ones_the_prior(
    small_world: dict[str, pl.DataFrame], trained: TrainingResult, fast_settings: DealsSettings
) -> None:
    priors = priors_at(small_world["deals"], AS_OF, fast_settings)
    result = score_open_deals(
        trained.model,
        small_world,
        AS_OF,
        min_open_days=5.0,
        rules=fast_settings.health.rules,
        priors=priors,
        top_k=3,
    )
    scores = result.scores
    open_ids = set(
        deals_known_at(small_world["deals"], AS_OF).filter(pl.col("closed_at").is_null())["deal_id"]
    )
    assert set(scores["deal_id"]) == open_ids and scores.height == len(open_ids)
    assert scores["win_probability"].null_count() == 0
    young = set(open_deals(small_world["deals"], AS_OF, 5.0).filter("young")["deal_id"])
    prior_rows = scores.filter(pl.col("score_basis") == "prior")
    assert young and set(prior_rows["deal_id"]) == young
    assert prior_rows["win_probability"].unique().to_list() == [priors.young_rate]
    assert (prior_rows["health"].is_not_null()).all()
    assert set(scores["score_basis"]) == {"model", "prior"}
    assert scores["probability_event"].unique().to_list() == ["won within 45 days of as_of"]
    # young deals count in the pipeline forecast too
    total = result.forecast.filter(pl.col("dimension") == "all")
    assert total.height == 4 and total["n_deals"].max() <= len(open_ids)  # 2 months, 2 quarters


def test_without_a_model_every_open_deal_gets_the_base_rate(
    small_world: dict[str, pl.DataFrame], fast_settings: DealsSettings
) -> None:
    priors = priors_at(small_world["deals"], AS_OF, fast_settings)
    result = score_open_deals(
        None,
        small_world,
        AS_OF,
        min_open_days=2.0,
        rules=fast_settings.health.rules,
        priors=priors,
        base_rate_reason="no skill",
    )
    scores = result.scores
    assert scores.height > 0 and result.factors.height == 0
    assert scores["score_basis"].unique().to_list() == ["base_rate"]
    assert scores["basis_reason"].unique().to_list() == ["no skill"]
    assert scores["win_probability"].unique().to_list() == [priors.base_rate]
    assert 0 < priors.base_rate < 1
    # without a feature set only the probability band rates health: no rule reasons
    assert (scores["health_reasons"].str.json_decode(pl.List(pl.String)).list.len() <= 1).all()


def test_base_rate_rows_get_the_health_rules_that_need_no_model(
    small_world: dict[str, pl.DataFrame], fast_settings: DealsSettings, trained: TrainingResult
) -> None:
    """Issue 9: with no model, stage, age, close-date and activity rules still rate health,
    from the features at as_of (point in time), exactly as they do for model rows."""
    priors = priors_at(small_world["deals"], AS_OF, fast_settings)
    common = {"min_open_days": 2.0, "rules": fast_settings.health.rules, "priors": priors}
    plain = score_open_deals(None, small_world, AS_OF, health_spec=trained.spec, **common)
    modelled = score_open_deals(trained.model, small_world, AS_OF, **common).scores
    scores = plain.scores
    assert scores["score_basis"].unique().to_list() == ["base_rate"]
    rules = (
        scores["health_reasons"]
        .str.json_decode(pl.List(pl.String))
        .list.eval(pl.element().filter(~pl.element().str.starts_with("win probability")))
    )
    fired = rules.list.len() > 0
    assert 0 < fired.sum() < scores.height
    both = scores.with_columns(rules.alias("r")).join(
        modelled.filter(pl.col("score_basis") == "model").select(
            "deal_id",
            pl.col("health_reasons")
            .str.json_decode(pl.List(pl.String))
            .list.eval(pl.element().filter(~pl.element().str.starts_with("win probability")))
            .alias("m"),
        ),
        on="deal_id",
    )
    assert both.height > 0 and (both["r"] == both["m"]).all()


def test_top_factors_are_the_largest_shap_values_in_log_odds(
    small_world: dict[str, pl.DataFrame], trained: TrainingResult, fast_settings: DealsSettings
) -> None:
    result = score_open_deals(
        trained.model,
        small_world,
        AS_OF,
        min_open_days=2.0,
        rules=fast_settings.health.rules,
        top_k=4,
    )
    scores, factors = result.scores, result.factors
    assert factors["contribution_unit"].unique().to_list() == ["log-odds"]
    assert factors.group_by("deal_id").len()["len"].max() == 4
    first = scores.row(0, named=True)
    texts = json.loads(first["top_factors"])
    mine = factors.filter(pl.col("deal_id") == first["deal_id"]).sort("rank")
    assert texts == mine["text"].to_list()
    contributions = mine["contribution"].to_numpy()
    assert np.all(np.diff(np.abs(contributions)) <= 1e-12)
    # the reason's number is the signed contribution, e.g. "...: +0.11"
    assert texts[0].endswith(f"{contributions[0]:+.2f}")
    assert set(scores["health"]) <= {"red", "yellow", "green"}
    assert ((scores["win_probability"] > 0) & (scores["win_probability"] < 1)).all()
    assert result.forecast.height > 0


def test_no_open_deal_old_enough_scores_all_with_the_prior(
    small_world: dict[str, pl.DataFrame], trained: TrainingResult, fast_settings: DealsSettings
) -> None:
    result = score_open_deals(
        trained.model, small_world, AS_OF, min_open_days=10_000.0, rules=fast_settings.health.rules
    )
    assert result.scores.height > 0 and result.factors.height == 0
    assert result.scores["score_basis"].unique().to_list() == ["prior"]
    assert result.forecast.height > 0
