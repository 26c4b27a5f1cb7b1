"""Scoring open deals: every open deal is scored or says why not; reasons match SHAP."""

from __future__ import annotations

import json

import numpy as np
import polars as pl

from salesml.config import DealsSettings
from salesml.deals.scoring import score_open_deals
from salesml.deals.snapshots import deals_known_at, open_deals
from salesml.deals.training import TrainingResult
from tests.deals.conftest import AS_OF


def test_every_open_deal_is_scored_or_has_a_reason(
    small_world: dict[str, pl.DataFrame], trained: TrainingResult, fast_settings: DealsSettings
) -> None:
    result = score_open_deals(
        trained.model, small_world, AS_OF, min_open_days=5.0, rules=fast_settings.rules, top_k=3
    )
    open_ids = set(
        deals_known_at(small_world["deals"], AS_OF).filter(pl.col("closed_at").is_null())["deal_id"]
    )
    scored, unscored = set(result.scores["deal_id"]), set(result.not_scored["deal_id"])
    assert scored | unscored == open_ids and not scored & unscored
    assert len(unscored) > 0
    assert result.not_scored["not_scored_reason"].unique().to_list() == ["open less than 5 days"]
    young = open_deals(small_world["deals"], AS_OF, 5.0).filter(
        pl.col("not_scored_reason").is_not_null()
    )
    assert set(young["deal_id"]) == unscored


def test_top_factors_are_the_largest_shap_values_in_log_odds(
    small_world: dict[str, pl.DataFrame], trained: TrainingResult, fast_settings: DealsSettings
) -> None:
    result = score_open_deals(
        trained.model, small_world, AS_OF, min_open_days=2.0, rules=fast_settings.rules, top_k=4
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


def test_no_open_deal_old_enough_gives_empty_outputs(
    small_world: dict[str, pl.DataFrame], trained: TrainingResult, fast_settings: DealsSettings
) -> None:
    result = score_open_deals(
        trained.model, small_world, AS_OF, min_open_days=10_000.0, rules=fast_settings.rules
    )
    assert result.scores.height == 0 and result.factors.height == 0
    assert result.forecast.height == 0
    assert result.not_scored.height > 0
