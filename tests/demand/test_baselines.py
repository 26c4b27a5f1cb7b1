"""Baselines on a hand-made grid, and the backtest scoring with the shared quantile report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from salesml import metrics
from salesml.config import DemandSettings
from salesml.demand import baselines, demand_backtest
from salesml.demand.features import build_history, origin_rows
from tests.demand.conftest import sales_frame

START = datetime(2024, 4, 1, tzinfo=UTC)  # Monday


def test_zero_median_and_mean_baselines_read_the_same_bucket_of_past_weeks() -> None:
    # one sale every Monday 08:00 UTC: 1, 2, ..., 9 units over nine weeks
    rows = [(START + timedelta(weeks=w, hours=8), "c", "a", float(w + 1)) for w in range(9)]
    sales = sales_frame(rows)
    as_of = START + timedelta(weeks=9)  # the next Monday, 00:00
    demand = DemandSettings(grid={"detect_closed": False})
    history = build_history(sales, demand, "UTC", as_of)
    ahead = origin_rows(history, history.origin)
    naive = baselines.naive_forecasts(history, ahead).sort("h")
    monday_8 = naive.filter(pl.col("h") == 3)  # bucket 08:00-12:00 of the next day
    assert monday_8["zero"].item() == 0.0
    assert monday_8["seasonal_naive"].item() == 9.0
    assert monday_8["recent_mean"].item() == np.mean([6, 7, 8, 9])
    assert monday_8["median_8w"].item() == np.median([2, 3, 4, 5, 6, 7, 8, 9])
    others = naive.filter(pl.col("h") != 3)
    assert (others.select(baselines.NAIVE_BASELINES).to_numpy() == 0).all()


def test_backtest_score_uses_the_shared_quantile_report() -> None:
    """Coverage per stratum comes from `metrics.quantile_report` in backtests and tests."""
    rng = np.random.default_rng(0)
    n = 500
    mean = rng.uniform(0, 4, n)
    y = rng.poisson(mean).astype(float)
    p10 = np.floor(mean * 0.3)
    p50 = np.round(mean)
    p90 = np.ceil(mean * 1.8)
    frame = pl.DataFrame(
        {
            "y": y,
            "mean": mean,
            "p10": p10,
            "p50": p50,
            "p90": p90,
            "closed": np.zeros(n, dtype=bool),
            "mase_scale": np.ones(n),
            **{name: np.zeros(n) for name in baselines.NAIVE_BASELINES},
        }
    )
    scored = demand_backtest.score(frame)
    report = metrics.quantile_report(y, mean, p10, p50, p90)
    for key, value in report.items():
        assert scored[key] == value, key
    stratum = np.digitize(mean, [0.5, 2.0])
    inside = (y >= p10) & (y <= p90)
    assert scored["coverage_0.5to2"] == inside[stratum == 1].mean()
    assert scored["coverage_sale"] == inside[y > 0].mean()
    assert scored["zero_wape"] == 1.0
