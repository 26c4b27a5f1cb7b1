"""Top-k factors: ordering, ties, text, additivity with LightGBM's TreeSHAP."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pytest

from salesml import explain

NAMES = ["meetings_cto_7d", "days_in_stage", "is_renewal", "segment"]
LABELS = {"meetings_cto_7d": "meetings with CTO, last 7 days"}


def _values() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "meetings_cto_7d": [2.0, None, 0.5],
            "days_in_stage": [21, 3, 40],
            "is_renewal": [True, False, None],
            "segment": ["enterprise", "smb", "mid"],
            "unused": [1, 2, 3],
        }
    )


def test_top_factors_orders_by_absolute_contribution_with_name_ties() -> None:
    contrib = np.array(
        [
            [0.11, -0.30, 0.05, 0.0, -1.0],  # |-0.30| > 0.11 > 0.05; segment 0 dropped
            [0.2, 0.2, -0.2, 0.1, 0.5],  # three-way tie -> alphabetical
            [0.0, 0.0, 0.0, 0.0, 0.2],  # nothing moved this prediction
        ]
    )
    out = explain.top_factors(contrib, NAMES, _values(), LABELS, k=3)
    assert out.schema == pl.Schema(explain.FACTOR_SCHEMA)
    row0 = out.filter(pl.col("row_idx") == 0)
    assert row0["feature"].to_list() == ["days_in_stage", "meetings_cto_7d", "is_renewal"]
    assert row0["rank"].to_list() == [1, 2, 3]
    assert row0["contribution"].to_list() == [-0.30, 0.11, 0.05]
    assert row0["text"].to_list() == [
        "days in stage = 21: -0.30",
        "meetings with CTO, last 7 days = 2: +0.11",
        "is renewal = yes: +0.05",
    ]
    row1 = out.filter(pl.col("row_idx") == 1)
    assert row1["feature"].to_list() == ["days_in_stage", "is_renewal", "meetings_cto_7d"]
    assert row1["feature_value"].to_list() == ["3", "no", "missing"]
    assert out.filter(pl.col("row_idx") == 2).is_empty()


def test_top_factors_units_text_and_k_larger_than_features() -> None:
    contrib = np.array([[1.234, 0.0, 0.0, -0.5, 10.0]])
    values = _values().head(1)
    out = explain.top_factors(contrib, NAMES, values, k=10, unit="units", drop_zero=False)
    assert out.height == 4
    assert out["text"][0] == "meetings cto 7d = 2: +1.23 units"
    assert out["text"][1] == "segment = enterprise: -0.50 units"


def test_top_factors_rejects_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="features \\+ 1 base value"):
        explain.top_factors(np.zeros((3, 4)), NAMES, _values())
    with pytest.raises(ValueError, match="lacks columns"):
        explain.top_factors(np.zeros((3, 5)), NAMES, _values().drop("segment"))
    with pytest.raises(ValueError, match="rows"):
        explain.top_factors(np.zeros((2, 5)), NAMES, _values())


def test_summarize_joins_texts_in_rank_order() -> None:
    contrib = np.array([[0.11, -0.30, 0.0, 0.0, -1.0]])
    factors = explain.top_factors(contrib, NAMES, _values().head(1), LABELS, k=2)
    summary = explain.summarize(factors)
    assert summary["top_factors"].to_list() == [
        "days in stage = 21: -0.30; meetings with CTO, last 7 days = 2: +0.11"
    ]


def _binary_booster() -> tuple[Any, np.ndarray]:
    import lightgbm as lgb

    rng = np.random.default_rng(3)
    features = rng.normal(size=(300, 4))
    label = (features[:, 0] - 0.5 * features[:, 1] + rng.normal(size=300) > 0).astype(int)
    params = {"objective": "binary", "num_leaves": 7, "verbose": -1, "num_threads": 1, "seed": 1}
    return lgb.train(params, lgb.Dataset(features, label), num_boost_round=20), features


def test_shap_contributions_add_up_to_the_raw_score() -> None:
    booster, features = _binary_booster()
    contrib = explain.shap_contributions(booster, features)
    assert contrib.shape == (300, 5)
    raw = booster.predict(features, raw_score=True)
    assert explain.additivity_error(contrib, raw) < 1e-6

    probability = explain.to_probability_contributions(contrib)
    assert explain.additivity_error(probability, booster.predict(features)) < 1e-9
    assert (np.sign(probability[:, :-1]) == np.sign(contrib[:, :-1])).all()

    names = ["f0", "f1", "f2", "f3"]
    factors = explain.top_factors(
        contrib, names, pl.DataFrame(features, schema=names), k=4, drop_zero=False
    )
    # every row lists all 4 contributions: their sum + base value is the raw score again
    per_row = factors.group_by("row_idx").agg(pl.col("contribution").sum()).sort("row_idx")
    rebuilt = per_row["contribution"].to_numpy() + contrib[:, -1]
    np.testing.assert_allclose(rebuilt, raw, atol=1e-6)


def test_signed_number_formats_fixed_decimals() -> None:
    values = pl.Series([0.1, -1.0, 12.3456, 0.0])
    out = pl.select(explain.signed_number(pl.lit(values), 2)).to_series().to_list()
    assert out == ["+0.10", "-1.00", "+12.35", "+0.00"]
