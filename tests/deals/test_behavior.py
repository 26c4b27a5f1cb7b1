"""Behaviour value map: on the sample world it ranks the planted activity effects."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from salesml.config import DealsSettings
from salesml.deals.behavior import BEHAVIOR_SCHEMA, explain_behavior
from salesml.deals.training import fit_deal_win
from salesml.sample import PLANTED_ACTIVITY_EFFECTS, WORLD_END, deals_world


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks_a = pl.Series(a).rank("average").to_numpy()
    ranks_b = pl.Series(b).rank("average").to_numpy()
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


@pytest.fixture(scope="module")
def behavior() -> pl.DataFrame:
    tables, _ = deals_world(n_deals=5000, days=365, seed=0)
    settings = DealsSettings(num_threads=1, min_won=100, min_lost=100)
    trained = fit_deal_win(tables, WORLD_END, settings)
    return explain_behavior(trained.model, trained.features, tables, WORLD_END, max_rows=8000)


def test_behavior_value_ranks_the_planted_effects(behavior: pl.DataFrame) -> None:
    planted = pl.DataFrame(
        [
            {"activity_type": t, "contact_role": r, "planted": v}
            for (t, r), v in PLANTED_ACTIVITY_EFFECTS.items()
        ]
    )
    joined = behavior.join(planted, on=["activity_type", "contact_role"]).drop_nulls(
        "mean_contribution"
    )
    assert joined.height >= 30
    rho = _spearman(joined["mean_contribution"].to_numpy(), joined["planted"].to_numpy())
    assert rho >= 0.5, f"Spearman {rho:.2f}"
    top_planted = max(PLANTED_ACTIVITY_EFFECTS, key=lambda pair: PLANTED_ACTIVITY_EFFECTS[pair])
    ranked = joined.sort("mean_contribution", descending=True)
    pairs = list(zip(ranked["activity_type"], ranked["contact_role"], strict=True))
    assert pairs.index(top_planted) < 3


def test_behavior_value_table_shape(behavior: pl.DataFrame) -> None:
    assert dict(behavior.schema) == BEHAVIOR_SCHEMA
    assert behavior.select("activity_type", "contact_role").is_unique().all()
    assert (behavior["occurrences"] >= 0).all()
    assert "unknown" in behavior["contact_role"].to_list()  # null roles get their own row
