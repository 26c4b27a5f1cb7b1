"""Metrics against scikit-learn and hand computations."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from sklearn import metrics as skm

from salesml import metrics


@pytest.fixture
def binary() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    prob = rng.uniform(0.01, 0.99, size=300)
    label = (rng.uniform(size=300) < prob).astype(int)
    return label, np.round(prob, 2)  # rounding creates ties for the AUC


def test_classification_metrics_match_sklearn(binary: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = binary
    assert metrics.auc(y, p) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert metrics.log_loss(y, p) == pytest.approx(skm.log_loss(y, p), abs=1e-12)
    assert metrics.brier(y, p) == pytest.approx(skm.brier_score_loss(y, p), abs=1e-12)


def test_metrics_accept_polars_series(binary: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = binary
    assert metrics.auc(pl.Series(y), pl.Series(p)) == metrics.auc(y, p)


def test_auc_is_nan_with_one_class_and_rejects_non_binary_labels() -> None:
    assert math.isnan(metrics.auc([1, 1, 1], [0.1, 0.5, 0.9]))
    with pytest.raises(ValueError, match="only 0 and 1"):
        metrics.auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="differ in length"):
        metrics.brier([0, 1], [0.1])


def test_expected_calibration_error_by_hand() -> None:
    # bin [0.1, 0.2): p = 0.1, 0.1 with 1 of 2 won -> |0.5 - 0.1| = 0.4, weight 2/4
    # bin [0.9, 1.0]: p = 0.9, 1.0 with 2 of 2 won -> |1.0 - 0.95| = 0.05, weight 2/4
    y = [0, 1, 1, 1]
    p = [0.1, 0.1, 0.9, 1.0]
    assert metrics.expected_calibration_error(y, p) == pytest.approx(0.5 * 0.4 + 0.5 * 0.05)
    assert metrics.expected_calibration_error([0, 1], [0.0, 1.0]) == 0.0


def test_lift_top_decile_by_hand() -> None:
    y = np.array([1, 0] + [0] * 8 + [1] * 2 + [0] * 8)  # 20 rows, 3 wins, base rate 0.15
    score = np.linspace(1.0, 0.0, 20)  # the top decile = the first 2 rows, 1 win
    assert metrics.lift_top_decile(y, score) == pytest.approx(0.5 / 0.15)
    assert math.isnan(metrics.lift_top_decile([0, 0], [0.3, 0.2]))


def test_regression_metrics_by_hand_and_vs_sklearn() -> None:
    actual = np.array([10.0, 0.0, 5.0, 5.0])
    forecast = np.array([8.0, 1.0, 5.0, 7.0])
    assert metrics.wape(actual, forecast) == pytest.approx(5.0 / 20.0)
    assert metrics.bias(actual, forecast) == pytest.approx(1.0 / 20.0)
    assert metrics.mase(actual, forecast, scale=2.0) == pytest.approx(1.25 / 2.0)
    assert math.isnan(metrics.mase(actual, forecast, scale=0.0))
    assert math.isnan(metrics.wape([0.0, 0.0], [1.0, 0.0]))
    for q in (0.1, 0.5, 0.9):
        expected = skm.mean_pinball_loss(actual, forecast, alpha=q)
        assert metrics.pinball_loss(actual, forecast, q) == pytest.approx(expected)
    assert metrics.interval_coverage(actual, actual - 1, actual + np.array([0, 0, 0, -1])) == 0.75
    with pytest.raises(ValueError, match="strictly between"):
        metrics.pinball_loss(actual, forecast, 1.0)


def test_sklearn_wrappers_keep_the_edge_cases_callers_rely_on() -> None:
    # clipped at eps = 1e-15 as before (sklearn alone clips at machine epsilon, ~2.2e-16)
    assert metrics.log_loss([1, 0], [0.0, 0.0]) == pytest.approx(-math.log(1e-15) / 2)
    # one class in a backtest origin: defined for log loss and Brier (sklearn needs labels)
    assert metrics.log_loss([1, 1], [0.9, 0.8]) == pytest.approx(-np.mean(np.log([0.9, 0.8])))
    assert metrics.brier([1, 1], [0.9, 0.8]) == pytest.approx(0.025)
    assert metrics.brier([0, 0], [0.1, 0.2]) == pytest.approx(0.025)
    # undefined -> NaN, never an exception that stops a backtest
    assert math.isnan(metrics.auc([0, 1], [np.nan, 0.2]))
    assert math.isnan(metrics.brier([0, 1], [np.nan, 0.2]))
    assert math.isnan(metrics.pinball_loss([1.0, np.nan], [1.0, 2.0], 0.5))
