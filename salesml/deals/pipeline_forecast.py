"""Pipeline revenue forecast: expected won revenue and P10/P50/P90 per month and region.

Each open deal is an independent Bernoulli(win_probability) bet worth its amount; the
probability is of the deal-win event (won within `deals.label_horizon_days` of as_of), so the
revenue is what is won within that horizon. Every open deal has a probability (model, young-deal
prior or base rate: `deal_scores.score_basis`). The
expected revenue of a group is exact (sum p * amount); the quantiles come from a Monte Carlo
simulation with a fixed seed over deals sorted by deal_id, so the same inputs always give the
same numbers. Deals are simulated together, so the 'all' region of a period is the sum of the
same draws as its regions (its quantiles are not the sum of theirs).

Period = calendar month ('YYYY-MM', in `timezone`) of the deal's expected close at as_of; a deal
whose expected close has passed (or is unknown) is counted in the month of as_of, since it is
still open and overdue. A null region is 'unknown'; a null amount counts as 0 revenue.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl

from salesml.timeutil import DATETIME

ALL_REGIONS = "all"
UNKNOWN_REGION = "unknown"
CHUNK_CELLS = 2_000_000
"""Deals x simulations drawn at once (bounded memory)."""


def pipeline_forecast(
    scored: pl.DataFrame,
    as_of: datetime,
    n_simulations: int = 2000,
    seed: int = 42,
    timezone: str = "UTC",
) -> pl.DataFrame:
    """(period, region, expected_revenue, p10, p50, p90, n_deals) from open scored deals.

    Input columns: deal_id, region, amount, expected_close_at, win_probability (null = not
    scored; such deals are left out).
    """
    at = pl.lit(as_of, DATETIME)
    close = pl.col("expected_close_at")
    month_at = pl.when(close.is_null() | (close < at)).then(at).otherwise(close)
    deals = (
        scored.filter(pl.col("win_probability").is_not_null())
        .select(
            "deal_id",
            month_at.dt.convert_time_zone(timezone).dt.strftime("%Y-%m").alias("period"),
            pl.col("region").fill_null(UNKNOWN_REGION),
            pl.col("amount").fill_null(0.0).cast(pl.Float64),
            pl.col("win_probability").cast(pl.Float64),
        )
        .sort("deal_id")
    )
    schema = {
        "period": pl.String,
        "region": pl.String,
        "expected_revenue": pl.Float64,
        "p10": pl.Float64,
        "p50": pl.Float64,
        "p90": pl.Float64,
        "n_deals": pl.Int64,
    }
    if deals.height == 0:
        return pl.DataFrame(schema=schema)
    groups = deals.select("period", "region").unique().sort("period", "region").with_row_index("_g")
    periods = groups.select("period").unique().sort("period").with_row_index("_p")
    deals = deals.join(groups, on=["period", "region"]).join(periods, on="period").sort("deal_id")
    revenue = _simulate(
        deals["win_probability"].to_numpy(),
        deals["amount"].to_numpy(),
        deals["_g"].to_numpy().astype(np.int64),
        groups.height,
        n_simulations,
        seed,
    )
    group_period = groups.join(periods, on="period")["_p"].to_numpy().astype(np.int64)
    per_period = np.zeros((periods.height, n_simulations))
    np.add.at(per_period, group_period, revenue)
    exact = deals.group_by("_g").agg(
        (pl.col("win_probability") * pl.col("amount")).sum().alias("expected_revenue"),
        pl.len().cast(pl.Int64).alias("n_deals"),
    )
    detail = groups.join(exact, on="_g").sort("_g")
    totals = (
        detail.group_by("period")
        .agg(pl.col("expected_revenue").sum(), pl.col("n_deals").sum())
        .join(periods, on="period")
        .sort("_p")
        .with_columns(pl.lit(ALL_REGIONS).alias("region"))
    )
    out = pl.concat(
        [
            _with_quantiles(detail, revenue),
            _with_quantiles(totals, per_period),
        ],
        how="diagonal_relaxed",
    )
    return out.select(list(schema)).sort("period", "region")


def _with_quantiles(frame: pl.DataFrame, draws: np.ndarray) -> pl.DataFrame:
    q = np.quantile(draws, [0.1, 0.5, 0.9], axis=1)
    return frame.with_columns(
        pl.Series("p10", q[0]), pl.Series("p50", q[1]), pl.Series("p90", q[2])
    )


def _simulate(
    probability: np.ndarray,
    amount: np.ndarray,
    group: np.ndarray,
    n_groups: int,
    n_simulations: int,
    seed: int,
) -> np.ndarray:
    """(n_groups, n_simulations) simulated won revenue; deterministic for a seed and deal order.

    Group by group (few groups: months x regions), in chunks of deals: uniform draws below the
    probability say which deals are won; a matrix-vector product sums their amounts.
    """
    rng = np.random.default_rng(seed)
    out = np.zeros((n_groups, n_simulations))
    step = max(1, CHUNK_CELLS // n_simulations)
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(n_groups + 1))
    for g in range(n_groups):
        members = order[bounds[g] : bounds[g + 1]]
        for start in range(0, len(members), step):
            rows = members[start : start + step]
            p = probability[rows].astype(np.float32)
            won = rng.random((len(rows), n_simulations), dtype=np.float32) < p[:, None]
            out[g] += amount[rows] @ won
    return out
