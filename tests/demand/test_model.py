"""The demand model: ordered quantiles, calibrated coverage, SHAP in units that add up."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from salesml.demand.model import DemandModel, nb_quantiles, to_unit_contributions


@settings(max_examples=60, deadline=None)
@given(
    means=st.lists(st.floats(min_value=0.0, max_value=500.0), min_size=1, max_size=30),
    inv_size=st.floats(min_value=1e-3, max_value=5.0),
    lower=st.floats(min_value=1e-3, max_value=0.49),
)
def test_quantiles_are_ordered_and_non_negative(
    means: list[float], inv_size: float, lower: float
) -> None:
    p10, p50, p90 = nb_quantiles(np.array(means), inv_size, (lower, 0.5, 1.0 - lower))
    assert np.all(p10 >= 0)
    assert np.all(p10 <= p50 + 1e-12)
    assert np.all(p50 <= p90 + 1e-12)


def test_quantiles_grow_with_the_mean() -> None:
    means = np.linspace(0.01, 40, 200)
    _, p50, p90 = nb_quantiles(means, 0.3, (0.1, 0.5, 0.9))
    assert np.all(np.diff(p50) >= -1e-9) and np.all(np.diff(p90) >= -1e-9)


def test_calibration_reaches_the_target_coverage_on_held_out_counts() -> None:
    rng = np.random.default_rng(0)
    mean = rng.gamma(0.7, 1.0, 40_000)
    size = 2.0  # true 1/size = 0.5
    actual = rng.negative_binomial(size, size / (size + mean)).astype(float)
    model = DemandModel(interval_coverage=0.8)
    model.calibrate(mean, actual)
    assert model.calibration_.inv_size == pytest.approx(0.5, abs=0.1)
    fresh = rng.negative_binomial(size, size / (size + mean)).astype(float)
    p10, _, p90 = model.predict_quantiles(mean)
    coverage = float(np.mean((fresh >= p10) & (fresh <= p90)))
    assert 0.77 <= coverage <= 0.83


def test_fit_predict_and_unit_contributions_add_up() -> None:
    rng = np.random.default_rng(1)
    x = pl.DataFrame({"a": rng.normal(size=3000), "b": rng.integers(0, 2, 3000).astype(float)})
    rate = np.exp(0.3 * x["a"].to_numpy() + 1.0 * x["b"].to_numpy())
    y = rng.poisson(rate)
    model = DemandModel(n_estimators=30, num_leaves=7, num_threads=1).fit(x, y)
    mean = model.predict(x)
    contrib = model.contributions(x)
    assert np.allclose(np.exp(contrib.sum(axis=1)), mean, rtol=1e-6)  # log-space SHAP
    units = to_unit_contributions(contrib)
    assert np.allclose(units.sum(axis=1), mean, rtol=1e-6)  # units add up to the mean
    signs = np.sign(units[:, :-1]) == np.sign(contrib[:, :-1])
    assert signs.all()
    # the promotion-like binary feature pushes demand up where it is 1
    b_on = x["b"].to_numpy() == 1
    assert units[b_on, 1].mean() > 0 > units[~b_on, 1].mean()
