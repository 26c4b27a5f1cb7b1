"""Coherent aggregates (`demand_forecast_agg`): exact sums, whole ordered quantiles, local days
and ISO weeks across DST, time travel, the forecast job's table and the per-level backtest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from salesml import contract
from salesml.config import Settings, SourcesSettings
from salesml.demand import aggregate, demand_backtest, demand_jobs, forecasting
from salesml.sample import WORLD_END, demand_world
from salesml.warehouse import Warehouse
from tests.demand.conftest import sales_frame, tiny_demand

BERLIN = "Europe/Berlin"


def _bucket(local: datetime, hours: int = 4) -> int:
    """Wall-time bucket number of a naive local datetime."""
    return int((local - datetime(1970, 1, 1)) // timedelta(hours=hours))


def _cells() -> tuple[pl.DataFrame, pl.DataFrame]:
    """Two customers (one without region) x two skus x 24 buckets (4 local days, Fri-Mon)."""
    rng = np.random.default_rng(3)
    first = _bucket(datetime(2026, 3, 27))  # Friday before the DST change in Berlin
    rows = [(c, s, first + k) for c in ("c1", "c2") for s in ("a", "b") for k in range(24)]
    mean = rng.gamma(1.0, 1.5, len(rows))
    frame = pl.DataFrame(
        rows, schema={"customer_id": pl.String, "sku": pl.String, "bucket": pl.Int32}, orient="row"
    ).with_columns(mean=pl.Series(mean), var=pl.Series(mean + 0.4 * mean**2))
    regions = pl.DataFrame({"customer_id": ["c1", "c2"], "region": ["emea", "unknown"]})
    return frame, regions


def test_aggregates_sum_exactly_to_the_bottom_means_at_every_level() -> None:
    frame, regions = _cells()
    agg = aggregate.aggregate_forecast(frame, regions, BERLIN, 4)
    total = frame["mean"].sum()
    for level in aggregate.LEVELS:
        part = agg.filter(pl.col("level") == level)
        assert part.height > 0
        assert part["expected"].sum() == pytest.approx(total, rel=1e-12)
        assert part["buckets"].sum() == frame.height
    sku_day = agg.filter((pl.col("level") == "sku_day") & (pl.col("key") == "a"))
    bottom = frame.filter(pl.col("sku") == "a")
    by_day = bottom.group_by(pl.col("bucket") // 6).agg(pl.col("mean").sum()).sort("bucket")
    assert sku_day["expected"].to_list() == pytest.approx(by_day["mean"].to_list(), rel=1e-12)
    assert set(agg.filter(pl.col("level") == "region_day")["key"]) == {"emea", "unknown"}
    assert set(agg.filter(pl.col("level") == "total_bucket")["key"]) == {"all"}
    contract.OUTPUT_SCHEMAS["demand_forecast_agg"].validate(agg)


def test_quantiles_are_whole_ordered_and_around_the_mean() -> None:
    rng = np.random.default_rng(0)
    mean = np.concatenate([[0.0, 0.01, 0.4], rng.gamma(0.8, 20.0, 500)])
    var = mean * rng.uniform(0.5, 6.0, mean.size)
    p10, p50, p90 = aggregate.nb_interval(mean, var)
    for p in (p10, p50, p90):
        assert np.array_equal(p, np.floor(p)) and (p >= 0).all()
    assert (p10 <= p50).all() and (p50 <= p90).all()
    busy = mean > 5
    assert ((p10[busy] <= mean[busy]) & (mean[busy] <= p90[busy])).all()
    wider = aggregate.nb_interval(mean, var * 4.0)
    # more variance, a wider interval (busy aggregates; near zero more spread means more zeros)
    assert ((wider[2] - wider[0])[busy] >= (p90 - p10)[busy]).all()


def test_days_and_iso_weeks_are_local_across_a_dst_week() -> None:
    frame, regions = _cells()
    agg = aggregate.aggregate_forecast(frame, regions, BERLIN, 4)
    days = agg.filter((pl.col("level") == "customer_day") & (pl.col("key") == "c1"))
    # Fri 27 and Sat 28 March at CET (+1), Sun 29 (the change) and Mon 30 at local midnight
    assert days["period_start"].to_list() == [
        datetime(2026, 3, 26, 23, tzinfo=UTC),
        datetime(2026, 3, 27, 23, tzinfo=UTC),
        datetime(2026, 3, 28, 23, tzinfo=UTC),
        datetime(2026, 3, 29, 22, tzinfo=UTC),
    ]
    assert days["buckets"].to_list() == [12, 12, 12, 12]  # 6 buckets x 2 skus, DST day too
    weeks = agg.filter((pl.col("level") == "sku_week") & (pl.col("key") == "a"))
    # Fri-Sun belong to the ISO week of Monday 23 March (CET), Monday 30 starts a new one (CEST)
    assert weeks["period_start"].to_list() == [
        datetime(2026, 3, 22, 23, tzinfo=UTC),
        datetime(2026, 3, 29, 22, tzinfo=UTC),
    ]
    assert weeks["buckets"].to_list() == [2 * 18, 2 * 6]
    buckets_rows = agg.filter(pl.col("level") == "total_bucket").sort("period_start")
    assert buckets_rows["period_start"][0] == datetime(2026, 3, 26, 23, tzinfo=UTC)


def test_region_map_ignores_sales_after_the_origin() -> None:
    t0 = datetime(2024, 3, 1, tzinfo=UTC)
    past = sales_frame([(t0, "c1", "a", 1.0), (t0, "c2", "a", 1.0)]).with_columns(
        region=pl.Series(["north", None])
    )
    future = sales_frame([(t0 + timedelta(days=9), "c1", "a", 5.0)]).with_columns(
        region=pl.lit("south")
    )
    cut = t0 + timedelta(days=1)
    before = aggregate.region_map(past, cut).sort("customer_id")
    after = aggregate.region_map(pl.concat([past, future]), cut).sort("customer_id")
    assert before.equals(after)
    assert before["region"].to_list() == ["north", "unknown"]


def test_inflation_widens_correlated_cells_and_narrows_over_dispersed_ones() -> None:
    rng = np.random.default_rng(1)
    n_cells, n_days = 40, 60
    shock = np.repeat(rng.lognormal(0.0, 0.5, n_days), n_cells)  # a busy day lifts every cell
    mean = np.full(n_cells * n_days, 2.0)
    rows = pl.DataFrame(
        {
            "customer_id": ["c1"] * mean.size,
            "sku": [f"s{k}" for k in range(n_cells)] * n_days,
            "bucket": np.repeat(np.arange(n_days) * 6, n_cells).astype(np.int32),
            "origin": [0] * mean.size,
            "y": rng.poisson(mean * shock).astype(np.float64),
            "mean": mean,
            "var": mean,  # independent Poisson cells
        }
    )
    regions = pl.DataFrame({"customer_id": ["c1"], "region": ["r"]})
    together = aggregate.calibrate_inflation(rows, regions, "UTC", 4)
    assert together["agg_inflation_customer_day"] > 5.0
    calm = rows.with_columns(y=pl.Series(rng.poisson(mean).astype(np.float64)), var=mean * 4.0)
    apart = aggregate.calibrate_inflation(calm, regions, "UTC", 4)
    assert apart["agg_inflation_customer_day"] < 0.6


def _world(base: Settings, folder: Path) -> tuple[Settings, dict[str, pl.DataFrame]]:
    tables, _ = demand_world(n_series=30, days=49, seed=5)
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.write_parquet(folder / f"{name}.parquet")
    settings = base.model_copy(
        update={"sources": SourcesSettings(path=folder), "demand": tiny_demand()}
    )
    return settings, tables


def test_forecast_job_writes_coherent_aggregates_unmoved_by_the_future(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from salesml import tracking

    local, tables = _world(settings, tmp_path / "src")
    as_of = WORLD_END - timedelta(days=2)
    fitted = forecasting.fit(tables["sales"], local, as_of)
    levels = {k for k in fitted.model.calibration_.metrics if k.startswith("agg_inflation_")}
    assert levels == {f"agg_inflation_{lvl}" for lvl in aggregate.LEVELS}
    served = tracking.LoadedModel(model=fitted.model, version="7", run_id="r7")
    monkeypatch.setattr(tracking, "configure", lambda _settings: None)
    monkeypatch.setattr(tracking, "load_for", lambda _name, _as_of: served)

    report = demand_jobs.forecast(local, as_of)
    wh = Warehouse.from_settings(local)
    agg = wh.read("demand_forecast_agg", as_of=as_of)
    cells = wh.read("demand_forecast", as_of=as_of)
    assert agg.height == report.rows_written["demand_forecast_agg"] > 0
    assert set(agg["level"]) == set(aggregate.LEVELS)
    assert set(agg["model_version"]) == {"7"}
    for level in aggregate.LEVELS:
        part = agg.filter(pl.col("level") == level)
        assert part["expected"].sum() == pytest.approx(cells["expected"].sum(), rel=1e-9)
    whole = agg.select(pl.col("p10", "p50", "p90").round(0) == pl.col("p10", "p50", "p90"))
    assert all(whole.to_series(k).all() for k in range(3))

    # time travel: sales after as_of (other regions, huge quantities) do not move a row
    sales = tables["sales"]
    future = sales.head(200).with_columns(
        ts=pl.col("ts") - pl.col("ts").min() + as_of + timedelta(hours=1),
        quantity=pl.col("quantity") * 50,
        region=pl.lit("x"),
    )
    result = forecasting.forecast(fitted.model, sales, local, as_of)
    moved = forecasting.forecast(fitted.model, pl.concat([sales, future]), local, as_of)
    metrics = fitted.model.calibration_.metrics
    one = aggregate.forecast_agg(result.frame, sales, local, as_of, metrics)
    two = aggregate.forecast_agg(moved.frame, pl.concat([sales, future]), local, as_of, metrics)
    assert one.equals(two)


def test_backtest_reports_each_level_next_to_its_baselines(
    settings: Settings, tmp_path: Path
) -> None:
    local, tables = _world(settings, tmp_path / "src")
    as_of = WORLD_END - timedelta(days=2)
    result = demand_backtest.backtest(tables["sales"], local, as_of, n_origins=1, with_ets=False)
    summary = demand_backtest.summary(result)
    levels = summary["levels"]
    assert isinstance(levels, dict) and set(levels) == set(aggregate.LEVELS)
    for values in levels.values():
        for key in ("wape", "bias", "coverage_p10_p90", "seasonal_naive_wape", "recent_mean_wape"):
            assert values[key] is not None
        assert values["zero_wape"] == pytest.approx(1.0)
        assert values["wape_vs_seasonal_naive"] == pytest.approx(
            values["wape"] / values["seasonal_naive_wape"] - 1.0
        )
    mean = summary["mean"]
    assert isinstance(mean, dict) and "wape" in mean and "seasonal_naive_wape" in mean
