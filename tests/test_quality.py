"""model_quality rows: backtests as their JSON says, realised checks that never see the future,
and rows of two models (or kinds) at one as_of that do not replace each other."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from salesml import metrics, quality
from salesml.backtest import run_backtest
from salesml.config import DemandSettings
from salesml.deals.deal_win_backtest import score_origin, summarize
from salesml.demand import buckets
from salesml.demand import demand_backtest as demand_evaluate
from salesml.timeutil import DATETIME
from salesml.warehouse import Warehouse

AS_OF = datetime(2025, 6, 1, tzinfo=UTC)
ORIGINS = [AS_OF - timedelta(days=d) for d in (120, 90, 60)]


def _deal_predictions(origin: datetime) -> pl.DataFrame:
    rng = np.random.default_rng(origin.day)
    n = 200
    p = rng.uniform(0.02, 0.9, n)
    y = (rng.uniform(size=n) < p).astype(np.int64)
    return pl.DataFrame(
        {
            "label": y,
            "p_model": p,
            "p_base_rate": np.full(n, y.mean()),
            "p_logistic": np.clip(p + rng.normal(0, 0.2, n), 0.01, 0.99),
        }
    )


def _demand_predictions(origin: datetime) -> pl.DataFrame:
    rng = np.random.default_rng(origin.day)
    n = 300
    mean = rng.gamma(0.6, 2.0, n)
    y = rng.poisson(mean).astype(np.float64)
    return pl.DataFrame(
        {
            "closed": rng.uniform(size=n) < 0.1,
            "y": y,
            "mean": mean,
            "p10": np.floor(mean * 0.3),
            "p50": np.round(mean),
            "p90": np.ceil(mean * 2.0),
            "mase_scale": np.full(n, 1.3),
            "strata": [[0.5, 2.0]] * n,
            "zero": np.zeros(n),
            "median_8w": np.round(mean * 0.8),
            "seasonal_naive": rng.poisson(mean).astype(np.float64),
        }
    )


def _json(summary: dict[str, object]) -> dict[str, object]:
    """What `salesml backtest --json` prints (NaN as null), read back."""
    return json.loads(json.dumps(summary, default=str))


def test_deal_backtest_rows_match_the_json_per_origin() -> None:
    result = run_backtest(ORIGINS, _deal_predictions, score_origin)
    summary = _json(summarize(result, AS_OF))
    rows = quality.backtest_rows(summary, quality.DEAL_WIN, "run-1")
    assert rows.height == len(ORIGINS) * len(quality.DEAL_METRICS)
    assert set(rows["kind"]) == {"backtest"} and set(rows["level"]) == {"deals"}
    for entry in summary["per_origin"]:  # type: ignore[attr-defined]
        at = datetime.fromisoformat(entry["origin"])
        mine = {r["metric"]: r for r in rows.filter(pl.col("origin") == at).iter_rows(named=True)}
        assert mine["brier"]["value"] == pytest.approx(entry["model_brier"])
        assert mine["brier"]["baseline"] == "base_rate"
        assert mine["brier"]["baseline_value"] == pytest.approx(entry["base_rate_brier"])
        assert mine["auc"]["baseline"] == "logistic"
        assert mine["auc"]["baseline_value"] == pytest.approx(entry["logistic_auc"])
        assert mine["log_loss"]["value"] == pytest.approx(entry["model_log_loss"])
        assert mine["ece"]["rows"] == entry["n_rows"]


def test_demand_backtest_rows_take_the_strongest_trivial_baseline() -> None:
    result = run_backtest(ORIGINS, _demand_predictions, demand_evaluate.score)
    summary = _json(demand_evaluate.summary(result))
    rows = quality.backtest_rows(summary, quality.DEMAND, "run-2")
    for entry in summary["per_origin"]:  # type: ignore[attr-defined]
        at = datetime.fromisoformat(entry["origin"])
        mine = {r["metric"]: r for r in rows.filter(pl.col("origin") == at).iter_rows(named=True)}
        trivial = {name: entry[f"{name}_wape"] for name in quality.DEMAND_TRIVIAL}
        best = min(trivial, key=trivial.__getitem__)
        assert mine["wape"]["value"] == pytest.approx(entry["wape"])
        assert (mine["wape"]["baseline"], mine["wape"]["baseline_value"]) == (best, trivial[best])
        assert mine["pinball_p90"]["value"] == pytest.approx(entry["pinball_p90"])
        assert mine["coverage_lt0.5"]["value"] == pytest.approx(entry["coverage_lt0.5"])
        assert mine["coverage_lt0.5"]["rows"] == entry["rows_lt0.5"]
        assert mine["coverage_p10_p90"]["baseline_value"] == quality.NOMINAL_COVERAGE
    assert set(rows["level"]) == {"bottom"}


def test_demand_backtest_levels_are_read_when_present() -> None:
    summary = {
        "per_origin": [],
        "levels": {
            "sku_week": {
                "per_origin": [
                    {"origin": "2025-05-01T00:00:00+00:00", "wape": 0.3, "seasonal_naive_wape": 0.4}
                ]
            },
            "broken": "not a list",
        },
    }
    rows = quality.backtest_rows(summary, quality.DEMAND, "run-3")
    assert rows.select("level", "metric", "value", "baseline", "baseline_value").rows() == [
        ("sku_week", "wape", 0.3, "seasonal_naive", 0.4)
    ]


# --- realised checks: deals -----------------------------------------------------------------

SCORED_AT = AS_OF - timedelta(days=60)
HORIZON = 30


def _deals() -> pl.DataFrame:
    d = lambda days: SCORED_AT + timedelta(days=days)  # noqa: E731
    rows = [  # deal_id, created_at, closed_at, outcome
        ("won_in_time", d(-40), d(10), "won"),
        ("won_late", d(-40), d(45), "won"),
        ("lost", d(-40), d(5), "lost"),
        ("open", d(-40), None, None),
        ("closes_after_as_of", d(-40), AS_OF + timedelta(days=3), "won"),
        ("old_won", d(-80), d(-20), "won"),  # decided before SCORED_AT: base rate only
        ("old_lost", d(-80), d(-10), "lost"),
    ]
    return pl.DataFrame(
        rows,
        schema={
            "deal_id": pl.String,
            "created_at": DATETIME,
            "closed_at": DATETIME,
            "outcome": pl.String,
        },
        orient="row",
    )


def _scores() -> pl.DataFrame:
    ids = ["won_in_time", "won_late", "lost", "open", "closes_after_as_of"]
    probs = [0.7, 0.4, 0.2, 0.1, 0.3]
    early = pl.DataFrame({"deal_id": ids, "win_probability": probs}).with_columns(
        as_of=pl.lit(SCORED_AT, DATETIME)
    )
    recent = early.with_columns(as_of=pl.lit(AS_OF - timedelta(days=5), DATETIME))
    return pl.concat([early, recent])


def test_realised_deal_check_scores_the_matured_run_against_known_outcomes() -> None:
    rows = quality.realised_deal_rows(_scores(), _deals(), AS_OF, HORIZON, "run-4")
    assert set(rows["origin"]) == {SCORED_AT}  # the run 5 days ago has not matured
    y = np.array([1, 0, 0, 0, 0.0])  # only won_in_time was won within 30 days of SCORED_AT
    p = np.array([0.7, 0.4, 0.2, 0.1, 0.3])
    got = {r["metric"]: r for r in rows.iter_rows(named=True)}
    assert got["brier"]["value"] == pytest.approx(metrics.brier(y, p))
    assert got["mean_predicted"]["baseline_value"] == pytest.approx(0.2)
    base, _ = quality.base_rate_at(quality.known_outcomes(_deals(), AS_OF), SCORED_AT, HORIZON)
    assert got["brier"]["baseline"] == "base_rate"
    assert got["brier"]["baseline_value"] == pytest.approx(metrics.brier(y, np.full(5, base)))
    assert rows["kind"].unique().to_list() == ["realised"]


def test_realised_deal_check_ignores_the_future() -> None:
    before = quality.realised_deal_rows(_scores(), _deals(), AS_OF, HORIZON, "run-5")
    future = AS_OF + timedelta(days=1)
    rewritten = _deals().with_columns(
        closed_at=pl.when(pl.col("closed_at") > pl.lit(AS_OF, DATETIME))
        .then(pl.lit(future, DATETIME))
        .otherwise(pl.col("closed_at")),
        outcome=pl.when(pl.col("closed_at") > pl.lit(AS_OF, DATETIME))
        .then(pl.lit("lost"))
        .otherwise(pl.col("outcome")),
    )
    extra = pl.DataFrame(
        {"deal_id": ["new"], "created_at": [future], "closed_at": [future], "outcome": ["won"]},
        schema=rewritten.schema,
    )
    later_scores = _scores().with_columns(as_of=pl.lit(future, DATETIME))
    after = quality.realised_deal_rows(
        pl.concat([_scores(), later_scores]), pl.concat([rewritten, extra]), AS_OF, HORIZON, "run-5"
    )
    assert_frame_equal(before, after)


# --- realised checks: demand ----------------------------------------------------------------

TZ = "Europe/Berlin"
DEMAND = DemandSettings()
FORECAST_AT = datetime(2025, 5, 20, 6, 30, tzinfo=UTC)
CHECK_AT = datetime(2025, 5, 28, 9, 0, tzinfo=UTC)


def _sales() -> pl.DataFrame:
    rng = np.random.default_rng(3)
    hours = np.arange(0, 24 * 30, 1)
    start = datetime(2025, 5, 1, tzinfo=UTC)
    ts = [start + timedelta(hours=int(h), minutes=7) for h in hours]
    return pl.DataFrame(
        {
            "ts": ts,
            "customer_id": ["c1"] * len(ts),
            "sku": ["s1"] * len(ts),
            "quantity": rng.poisson(0.8, len(ts)).astype(np.float64),
        },
        schema_overrides={"ts": DATETIME},
    )


def _forecasts(at: datetime) -> pl.DataFrame:
    first = buckets.origin_bucket(at, TZ, DEMAND.grid.bucket_hours) + 1
    index = pl.Series("b", range(first, first + DEMAND.grid.horizon_buckets), dtype=pl.Int64)
    frame = pl.DataFrame({"b": index}).select(
        pl.lit(at, DATETIME).alias("as_of"),
        pl.lit("c1").alias("customer_id"),
        pl.lit("s1").alias("sku"),
        buckets.bucket_start(pl.col("b"), TZ, DEMAND.grid.bucket_hours).alias("bucket_start"),
        pl.lit(1.0).alias("p10"),
        pl.lit(3.0).alias("p50"),
        pl.lit(6.0).alias("p90"),
        pl.lit(3.2).alias("expected"),
    )
    return frame


def _realised(sales: pl.DataFrame, forecasts: pl.DataFrame) -> pl.DataFrame:
    actuals = quality.demand_actuals(sales, DEMAND, TZ, CHECK_AT)
    return quality.realised_demand_rows(
        forecasts, actuals, CHECK_AT, timezone=TZ, bucket_hours=DEMAND.grid.bucket_hours, run_id="r"
    )


def test_realised_demand_check_matches_the_quantile_report() -> None:
    forecasts = _forecasts(FORECAST_AT)
    rows = _realised(_sales(), forecasts)
    got = {r["metric"]: r for r in rows.iter_rows(named=True)}
    actuals = quality.demand_actuals(_sales(), DEMAND, TZ, CHECK_AT)
    cells = forecasts.with_columns(
        bucket=buckets.bucket_index(pl.col("bucket_start"), TZ, DEMAND.grid.bucket_hours)
    ).join(actuals, on=["customer_id", "sku", "bucket"], how="left")
    y = cells["y"].fill_null(0.0).to_numpy()
    expected = metrics.quantile_report(
        y, cells["expected"], cells["p10"], cells["p50"], cells["p90"]
    )
    assert got["wape"]["value"] == pytest.approx(expected["wape"])
    assert got["pinball_p10"]["value"] == pytest.approx(expected["pinball_p10"])
    assert got["coverage_sale"]["value"] == pytest.approx(expected["coverage_sale"])
    assert got["coverage_ge2"]["rows"] == DEMAND.grid.horizon_buckets
    assert got["wape"]["baseline"] in ("zero", "seasonal_naive")
    assert got["wape"]["baseline_value"] <= 1.0  # zero scores exactly 1
    assert set(rows["origin"]) == {FORECAST_AT}


def test_realised_demand_check_ignores_the_future() -> None:
    forecasts = pl.concat([_forecasts(FORECAST_AT), _forecasts(CHECK_AT - timedelta(days=2))])
    before = _realised(_sales(), forecasts)
    later = _sales().with_columns(
        quantity=pl.when(pl.col("ts") > pl.lit(CHECK_AT, DATETIME))
        .then(pl.col("quantity") * 10 + 5)
        .otherwise(pl.col("quantity"))
    )
    after = _realised(later, pl.concat([forecasts, _forecasts(CHECK_AT + timedelta(hours=8))]))
    assert_frame_equal(before, after)
    # the forecast two days ago counts only its ended buckets
    recent = before.filter(pl.col("origin") == CHECK_AT - timedelta(days=2))
    assert recent.filter(pl.col("metric") == "wape")["rows"].item() < DEMAND.grid.horizon_buckets


# --- the warehouse keeps both models' rows ----------------------------------------------------


def _rows(model: str, kind: str, run_id: str, value: float) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "run_id": [run_id],
            "model": [model],
            "kind": [kind],
            "origin": [SCORED_AT],
            "level": ["deals" if model == quality.DEAL_WIN else "bottom"],
            "metric": ["brier" if model == quality.DEAL_WIN else "wape"],
            "value": [value],
            "baseline": ["base_rate"],
            "baseline_value": [math.pi / 10],
            "rows": [10],
        },
        schema=quality.SCHEMA,
    )


def test_rows_of_two_models_and_kinds_at_one_as_of_coexist(tmp_path: Path) -> None:
    wh = Warehouse(f"duckdb:///{tmp_path / 'wh.duckdb'}")

    def write(model: str, kind: str, run_id: str, value: float) -> None:
        wh.write_batch(
            {"model_quality": _rows(model, kind, run_id, value)},
            as_of=AS_OF,
            run_id=run_id,
            scopes=quality.scope(model, kind),
        )

    write(quality.DEAL_WIN, "backtest", "a", 0.1)
    write(quality.DEMAND, "backtest", "b", 0.9)
    write(quality.DEAL_WIN, "realised", "c", 0.2)
    write(quality.DEAL_WIN, "backtest", "d", 0.15)  # a rerun replaces only its own scope
    found = wh.read("model_quality").sort("run_id")
    assert found.select("run_id", "model", "kind", "value").rows() == [
        ("b", "demand", "backtest", 0.9),
        ("c", "deal_win", "realised", 0.2),
        ("d", "deal_win", "backtest", 0.15),
    ]


# --- the demand gate's scoring rule -----------------------------------------------------------


def test_scaled_pinball_and_the_baseline_check_in_the_gate() -> None:
    from salesml import tracking

    y = np.array([0.0, 2.0, 4.0, 0.0])
    point = np.array([1.0, 1.0, 1.0, 1.0])
    expected = np.mean([metrics.pinball_loss(y, point, q) for q in (0.1, 0.5, 0.9)]) / 1.5
    assert quality.point_scaled_pinball(y, point) == pytest.approx(expected)
    assert math.isnan(quality.scaled_pinball({"pinball_p10": 1.0}, 1.0))  # p50/p90 missing
    worse = tracking.BaselineCheck("pinball_scaled", 0.9, "median_8w", 0.8, required=True)
    passed, reason = tracking.decide("pinball_scaled", "2", None, 0.9, None, False, worse)
    assert not passed and "no skill over median_8w" in reason
    reported = tracking.BaselineCheck("pinball_scaled", 0.9, "median_8w", 0.8)
    passed, reason = tracking.decide("pinball_scaled", "2", "1", 0.9, 0.95, False, reported)
    assert passed and "0.9000 vs median_8w 0.8000" in reason and "not required" in reason
