"""In-period pipeline forecast: exact expectation, ordered seeded quantiles, one set of draws for
every dimension, periods, time travel, and the backtest's model_quality rows."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from salesml.deals.revenue_forecast import (
    cumulative_at_edges,
    forecast_periods,
    open_deal_frame,
    pipeline_backtest,
    pipeline_forecast,
    shock_sigma,
    simulate_periods,
)
from salesml.deals.time_to_close import MAX_DAYS, fit_time_to_close
from salesml.timeutil import DATETIME

AS_OF = datetime(2025, 7, 10, tzinfo=UTC)
START = datetime(2024, 6, 1, tzinfo=UTC)


def _history(n: int = 240) -> pl.DataFrame:
    """Closed deals before as_of: short ones (40 days) and long ones (150 days), each closing
    exactly on its expected close; every other one won."""
    created = [START + timedelta(days=int(d)) for d in np.linspace(0, 240, n)]
    cycle = [40 if i % 2 else 150 for i in range(n)]
    return pl.DataFrame(
        {
            "deal_id": [f"H{i:03d}" for i in range(n)],
            "owner_id": [f"o{i % 3}" for i in range(n)],
            "region": [["emea", "apac"][i % 4 // 2] for i in range(n)],
            "amount": [100.0] * n,
            "created_at": created,
            "expected_close_at": [
                c + timedelta(days=d) for c, d in zip(created, cycle, strict=True)
            ],
            "closed_at": [c + timedelta(days=d) for c, d in zip(created, cycle, strict=True)],
            "outcome": ["won" if i % 4 < 2 else "lost" for i in range(n)],
        }
    )


def _open() -> pl.DataFrame:
    created = AS_OF - timedelta(days=20)
    closes = [5, 12, 40, 102, -10, 30]  # days after as_of; O3 is expected next quarter
    return pl.DataFrame(
        {
            "deal_id": [f"O{i}" for i in range(6)],
            "owner_id": ["o0", "o1", "o1", "o2", "o0", "o2"],
            "region": ["emea", "emea", "apac", "apac", None, "emea"],
            "amount": [100.0, 200.0, 50.0, 1000.0, 10.0, None],
            "created_at": [created] * 6,
            "expected_close_at": [AS_OF + timedelta(days=d) for d in closes],
            "closed_at": [None] * 6,
            "outcome": [None] * 6,
        }
    )


def _tables() -> dict[str, pl.DataFrame]:
    deals = pl.concat([_history(), _open()], how="vertical_relaxed").with_columns(
        pl.col("created_at", "expected_close_at", "closed_at").cast(DATETIME)
    )
    return {"deals": deals}


def _probabilities() -> pl.DataFrame:
    return pl.DataFrame(
        {"deal_id": [f"O{i}" for i in range(6)], "win_probability": [0.5, 0.9, 0.3, 0.6, 0.2, 0.4]}
    )


def test_periods_are_this_and_next_month_and_quarter() -> None:
    labels = [p.label for p in forecast_periods(AS_OF)]
    assert labels == ["2025-07", "2025-08", "2025-Q3", "2025-Q4"]
    december = [
        p.label for p in forecast_periods(datetime(2025, 12, 31, 23, tzinfo=UTC), "Asia/Tokyo")
    ]
    assert december == ["2026-01", "2026-02", "2026-Q1", "2026-Q2"]  # already January in Tokyo


def test_expected_is_exact_and_quantiles_are_ordered() -> None:
    out = pipeline_forecast(_probabilities(), _tables(), AS_OF, n_simulations=400, seed=1)
    assert set(out["dimension"]) == {"all", "region", "owner"}
    assert (out["p10"] <= out["p50"]).all() and (out["p50"] <= out["p90"]).all()
    assert (out["expected_revenue"] >= 0).all()
    for period in out["period"].unique():
        rows = out.filter(pl.col("period") == period)
        total = rows.filter(pl.col("dimension") == "all")["expected_revenue"].item()
        for dimension in ("region", "owner"):
            part = rows.filter(pl.col("dimension") == dimension)["expected_revenue"].sum()
            assert part == pytest.approx(total)
    # a month lies inside its quarter: never more revenue expected in the month
    july = out.filter((pl.col("period") == "2025-07") & (pl.col("dimension") == "all"))
    q3 = out.filter((pl.col("period") == "2025-Q3") & (pl.col("dimension") == "all"))
    assert july["expected_revenue"].item() <= q3["expected_revenue"].item() + 1e-9
    assert "unknown" in out.filter(pl.col("dimension") == "region")["member"].to_list()


def test_a_deal_expected_next_quarter_adds_nothing_to_this_month() -> None:
    """History: deals close on their expected date, so one expected in 102 days cannot win
    in July; the same deal expected in 12 days can."""
    only = _probabilities().filter(pl.col("deal_id") == "O3")
    out = pipeline_forecast(only, _tables(), AS_OF, n_simulations=200)
    month = out.filter((pl.col("period") == "2025-07") & (pl.col("dimension") == "all"))
    assert month["expected_revenue"].item() == 0.0 and month["p90"].item() == 0.0
    assert month["n_deals"].item() == 0
    august = out.filter((pl.col("period") == "2025-08") & (pl.col("dimension") == "all"))
    assert august["expected_revenue"].item() == 0.0
    q4 = out.filter((pl.col("period") == "2025-Q4") & (pl.col("dimension") == "all"))
    assert q4["expected_revenue"].item() > 0  # history: such deals are won on day 102
    soon = pipeline_forecast(
        _probabilities().filter(pl.col("deal_id") == "O1"), _tables(), AS_OF, n_simulations=200
    )
    assert (
        soon.filter((pl.col("period") == "2025-07") & (pl.col("dimension") == "all"))[
            "expected_revenue"
        ].item()
        > 0
    )


def test_same_seed_same_numbers_whatever_the_row_order() -> None:
    first = pipeline_forecast(_probabilities(), _tables(), AS_OF, n_simulations=300, seed=5)
    tables = {"deals": _tables()["deals"].reverse()}
    again = pipeline_forecast(_probabilities().reverse(), tables, AS_OF, n_simulations=300, seed=5)
    assert_frame_equal(first, again)


def test_all_is_the_sum_of_the_same_draws() -> None:
    rng = np.random.default_rng(0)
    n = 50
    steps = np.sort(rng.uniform(0, 0.3, (n, 3)), axis=1)
    cumulative = np.hstack([np.zeros((n, 1)), steps])
    region = rng.integers(0, 3, n)
    everyone = np.zeros(n, dtype=np.int64)
    spans = [(0, 1), (1, 2), (0, 3)]
    total, regions = simulate_periods(
        cumulative, rng.uniform(1, 9, n), spans, [everyone, region], 300, 7
    )
    np.testing.assert_allclose(total[0], regions.sum(axis=0))
    # the month-like span (0, 1) and the quarter-like (0, 3) use the same draws
    assert (total[0, 0] <= total[0, 2] + 1e-9).all()


def test_rows_after_as_of_do_not_move_the_forecast() -> None:
    tables = _tables()
    before = pipeline_forecast(_probabilities(), tables, AS_OF, n_simulations=200)
    later = AS_OF + timedelta(days=3)
    future = tables["deals"].with_columns(
        pl.when(pl.col("deal_id").is_in(["O0", "O1"]))
        .then(pl.lit(later, DATETIME))
        .otherwise(pl.col("closed_at"))
        .alias("closed_at"),
        pl.when(pl.col("deal_id").is_in(["O0", "O1"]))
        .then(pl.lit("won"))
        .otherwise(pl.col("outcome"))
        .alias("outcome"),
    )
    extra = future.head(1).with_columns(
        pl.lit("NEW").alias("deal_id"), pl.lit(later, DATETIME).alias("created_at")
    )
    after = pipeline_forecast(
        _probabilities(), {"deals": pl.concat([future, extra])}, AS_OF, n_simulations=200
    )
    assert_frame_equal(before, after)


def test_nothing_scored_gives_an_empty_forecast() -> None:
    empty = _probabilities().with_columns(pl.lit(None, pl.Float64).alias("win_probability"))
    assert pipeline_forecast(empty, _tables(), AS_OF).height == 0


def test_backtest_rows_have_the_model_quality_shape() -> None:
    tables = _tables()
    origin = datetime(2024, 12, 1, tzinfo=UTC)
    open_then = tables["deals"].filter(
        (pl.col("created_at") <= origin) & (pl.col("closed_at") > origin)
    )
    probabilities = open_then.select("deal_id", pl.lit(0.4).alias("win_probability"))
    result = pipeline_backtest(tables, {origin: probabilities}, n_simulations=200, run_id="r1")
    q = result.quality
    assert set(q["level"]) == {"month_all", "month_region"}
    assert set(q["metric"]) == {"coverage_p10_p90", "bias", "wape"}
    assert (q["model"] == "pipeline").all() and (q["kind"] == "backtest").all()
    cells = result.cells.filter(pl.col("dimension") == "all")
    assert cells.height == 2  # this month and the next
    realised = (
        tables["deals"]
        .filter(
            (pl.col("created_at") <= origin)
            & (pl.col("closed_at") >= origin)
            & (pl.col("closed_at") < datetime(2025, 1, 1, tzinfo=UTC))
            & (pl.col("outcome") == "won")
        )["amount"]
        .sum()
    )
    assert cells.filter(pl.col("period") == "2024-12")["realised"].item() == pytest.approx(realised)
    assert fit_time_to_close(tables, origin).snapshots > 0


def test_shared_shock_widens_ranges_but_keeps_the_expectation() -> None:
    kwargs = {"n_simulations": 400, "seed": 3}
    shocked = pipeline_forecast(_probabilities(), _tables(), AS_OF, **kwargs)  # type: ignore[arg-type]
    plain = pipeline_forecast(_probabilities(), _tables(), AS_OF, shared_shocks=False, **kwargs)  # type: ignore[arg-type]
    assert_frame_equal(shocked.drop("p10", "p50", "p90"), plain.drop("p10", "p50", "p90"))
    assert shock_sigma(_tables(), AS_OF, fit_time_to_close(_tables(), AS_OF)) >= 0.0


def test_calendar_ratio_scales_the_chances_and_keeps_them_cumulative() -> None:
    tables = _tables()
    model = fit_time_to_close(tables, AS_OF, calendar=False)
    deals = open_deal_frame(_probabilities(), tables, AS_OF)
    edges = np.array([0.0, 21.0, 52.0, 82.0, 174.0])
    plain = cumulative_at_edges(deals, tables, AS_OF, model, edges, 60)
    ratio = np.ones(MAX_DAYS + 1)
    ratio[21:52] = 0.25  # few wins by the end of this month, many by the end of the next
    ratio[52:] = 3.0
    scaled = cumulative_at_edges(deals, tables, AS_OF, replace(model, calendar=ratio), edges, 60)
    assert plain[:, 1].max() > 0 and plain[:, 2].max() > 0
    np.testing.assert_allclose(scaled[:, 1], plain[:, 1] * 0.25)
    np.testing.assert_allclose(scaled[:, 2], np.minimum(plain[:, 2] * 3.0, 1.0))
    assert (np.diff(scaled, axis=1) >= 0).all() and scaled.max() <= 1.0 and scaled[:, 0].max() == 0
