"""Train and forecast the demand model from canonical frames (pure: frames in, frames out).

Training at `as_of` (origin o = last complete bucket):
1. the dense grid of every series up to o (`features.build_history`);
2. `calibration_origins` weekly origins are held out: o - k * horizon for k = n .. 1; the model
   is fitted on targets up to the first of them (each target with a random horizon, features
   as known at its own origin), then predicts every bucket ahead of each held-out origin;
3. those held-out predictions give the per-stratum dispersion and interval levels (Mondrian
   calibration, `DemandModel.learn_calibration`) and the gate metrics (WAPE, coverage per
   stratum, pinball) that the promotion gate compares;
4. the deployed model is a second `fit` that brings the held-out weeks in
   (`refit_after_calibration`): by default ("full") new trees on all targets up to o; "leaves"
   keeps the first model's trees and re-estimates their leaf values on them (LightGBM
   `Booster.refit`, blended by `refit_decay`); "none" keeps the first model's trees as they
   are. It is given the calibration (`fit(calibration=)`) in every case;
5. that `fit` also fits the median model (`median_model`, quantile objective at 0.5) on the
   same rows as the final mean model: P50 = its prediction rounded to whole units.

Forecasting: every active series, buckets o+1 .. o+horizon; slots where the customer is always
closed are 0 (P10 = P50 = P90 = 0).

Multi-horizon strategy: direct (one model, the horizon a feature, each training target drawn
with one random horizon), chosen by measurement (`benchmarks/bench_demand_strategy.py`, same
features and LightGBM settings, 4 weekly origins, WAPE of the mean): pizza year direct 1.211 in
9 s vs recursive 1.253 in 31 s; synthetic 1,000 series direct 0.942 (bias +0.4%) in 37 s vs
recursive 0.937 (bias -31%: fed its own shrunken forecasts, it decays) in 61 s. Direct is as
accurate or better, unbiased, 2-3x faster, and needs one prediction pass (no 42-step loop).

Held-out / refit choice, measured on the pizza year (4 origins 2015-09-01 .. 12-01, bias of
the mean per origin): "none" -10 % / +28 % / -2 % / -26 % (the model misses the last week: a
low week before September, the Thanksgiving spike before December); "leaves" -7 % / +10 % /
-9 % / -13 %; "full" -12 % / -8 % / -12 % / +7 %, and with closure days missing instead of zero
(`features.closure_days`) -12 % / +11 % / 0 % / +3 % (October: the shop was closed on an
unannounced Monday, one day in seven). Hence "full", at the cost of a second fit. A Tweedie
power of 1.5 instead of 1.2 (less weight on the busiest buckets) then gave -8 % / +7 % / -5 % /
-2 % (chosen on these origins; on 4 weekly origins in July 2015, not used to choose, 1.2 gave
-4 % .. +7 % and 1.5 -10 % .. +2 %; on the generated world mean WAPE 0.870 -> 0.864).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl

from salesml import metrics
from salesml.config import DemandSettings, Settings
from salesml.demand import aggregate, buckets, coldstart
from salesml.demand.features import (
    History,
    build_history,
    feature_names,
    make_features,
    origin_rows,
    redundant_features,
    signal_feature_names,
    training_rows,
)
from salesml.demand.model import Calibration, DemandModel
from salesml.progress import Progress, report

MAX_HELD_OUT_ROWS = 200_000
"""Held-out rows used to calibrate and gate (whole series are sampled beyond this)."""


@dataclass
class FitResult:
    """A fitted model with what its training saw: held-out metrics and timings (seconds)."""

    model: DemandModel
    metrics: dict[str, float]
    params: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    calibration: pl.DataFrame | None = None  # held-out rows: series_id, bucket, h, y, mean, p10..
    history: History | None = None
    held_out_rows: pl.DataFrame | None = None  # (row, h) of the held-out rows in `history`
    example: pl.DataFrame | None = None  # a few feature rows (MLflow input example)


def fit(
    sales: pl.DataFrame,
    settings: Settings,
    as_of: datetime,
    signals: pl.DataFrame | None = None,
    progress: Progress | None = None,
    history: History | None = None,
    inventory: pl.DataFrame | None = None,
) -> FitResult:
    """Fit and calibrate the demand model on what was known at `as_of` (see module doc);
    `inventory` (optional) censors stock-out buckets (`features.stockout_buckets`).
    """
    demand = settings.demand
    timings: dict[str, float] = {}
    started = time.perf_counter()
    report(progress, "bucketing sales", 0.0)
    history = history or build_history(sales, demand, settings.timezone, as_of, inventory=inventory)
    if history.series.height == 0:
        raise ValueError("no sales up to as_of: nothing to train the demand model on")
    timings["history"] = time.perf_counter() - started
    held_weeks = range(demand.intervals.calibration_origins, 0, -1)
    cal_origins = [history.origin - k * history.horizon for k in held_weeks]
    report(progress, "building training features", 0.1)
    tick = time.perf_counter()
    signal_cols = signal_feature_names(demand, signals)
    names = [n for n in feature_names(demand, signal_cols) if n not in redundant_features(history)]
    train, train_rows = _training_set(history, cal_origins[0], demand, signals, as_of, names)
    timings["train_features"] = time.perf_counter() - tick
    report(progress, "fitting LightGBM", 0.3)
    tick = time.perf_counter()
    # no median model before the held-out weeks: held-out P50 is the NB median (see below)
    first = DemandModel.from_settings(demand, median_model=False)
    first.fit(train.select(names), train["y"])
    timings["fit"] = time.perf_counter() - tick
    report(progress, "calibrating intervals on held-out weeks", 0.6)
    tick = time.perf_counter()
    inputs = (signals, as_of, names)
    held_out, mean, calibration = _calibrate(first, history, cal_origins, demand, inputs)
    timings["calibrate"] = time.perf_counter() - tick
    scored, held_metrics, calibration = _held_out_metrics(
        held_out, mean, calibration, history, sales, settings, as_of
    )
    report(progress, "refitting on all weeks", 0.7)
    tick = time.perf_counter()
    if demand.model.refit_after_calibration != "none":  # the held-out weeks join the training rows
        train, train_rows = _training_set(history, history.origin, demand, signals, as_of, names)
    model = _final_model(first, calibration, train.select(names), train["y"], demand)
    timings["refit"] = time.perf_counter() - tick  # features, mean and median model
    timings["total"] = time.perf_counter() - started
    report(progress, "trained", 1.0)
    return FitResult(
        model,
        held_metrics,
        model_params(settings, model, signal_cols, train_rows, history),
        timings,
        scored,
        history,
        held_out.select("row", "h"),
        held_out.select(names).head(5),
    )


def _training_set(
    history: History,
    origin: int,
    demand: DemandSettings,
    signals: pl.DataFrame | None,
    as_of: datetime,
    names: list[str],
) -> tuple[pl.DataFrame, int]:
    """(training features with `y`, training rows drawn) of targets up to `origin`; refuses
    when there are none.
    """
    rows = training_rows(history, origin, demand)
    if rows.height == 0:
        raise ValueError(
            "too little sales history before the calibration weeks to train the demand model"
        )
    return make_features(history, rows, demand, signals, as_of, columns=names), rows.height


def _calibrate(
    first: DemandModel,
    history: History,
    origins: list[int],
    demand: DemandSettings,
    inputs: tuple[pl.DataFrame | None, datetime, list[str]],
) -> tuple[pl.DataFrame, np.ndarray, Calibration]:
    """(held-out features, `first`'s mean on them, the interval calibration they give): every
    bucket ahead of each held-out origin (`held_out_features`); event days are left out.
    """
    signals, as_of, names = inputs
    held_out = held_out_features(history, origins, demand, signals, as_of, names)
    mean = first.predict(held_out)
    days = (held_out["bucket"] // history.day).to_numpy()
    return held_out, mean, first.learn_calibration(mean, held_out["y"].to_numpy(), days)


def _held_out_metrics(
    held_out: pl.DataFrame,
    mean: np.ndarray,
    calibration: Calibration,
    history: History,
    sales: pl.DataFrame,
    settings: Settings,
    as_of: datetime,
) -> tuple[pl.DataFrame, dict[str, float], Calibration]:
    """(held-out rows with mean and P10/P50/P90, their gate metrics, the calibration with
    those and the per-level variance inflation of demand_forecast_agg in `metrics`).

    Held-out metrics come from the model fitted before the held-out weeks (`mean`); the
    median model is trained on all weeks, so P50 here is the negative-binomial median
    (honest, and the same construction `score_rows` gives the champion).
    """
    demand = settings.demand
    p10, p50, p90 = calibration.quantiles(mean)
    scored = held_out.select("series_id", "bucket", "h", "y").with_columns(
        mean=pl.Series(mean), p10=pl.Series(p10), p50=pl.Series(p50), p90=pl.Series(p90)
    )
    held_metrics = point_metrics(scored, strata=tuple(demand.intervals.interval_strata))
    held_metrics["dispersion"] = calibration.inv_size
    held_metrics["interval_lower_level"] = calibration.lower_level
    inflation = aggregate.held_out_inflation(
        scored,
        history.series,
        calibration.variance(mean),
        aggregate.region_map(
            sales, buckets.origin_end(as_of, settings.timezone, demand.grid.bucket_hours)
        ),
        settings.timezone,
        demand.grid.bucket_hours,
        demand.intervals.interval_coverage,
    )
    return scored, held_metrics, dataclasses.replace(calibration, metrics=held_metrics | inflation)


def _final_model(
    first: DemandModel,
    calibration: Calibration,
    features: pl.DataFrame,
    target: pl.Series,
    demand: DemandSettings,
) -> DemandModel:
    """The deployed model, fitted on `features` with `calibration` and the median model: the
    held-out weeks brought in as `refit_after_calibration` says ("full": new trees on all
    weeks; "leaves": `first`'s trees, leaf values re-estimated on all weeks; "none": `first`'s
    trees as they are, and `features` are its own training rows).
    """
    mode = demand.model.refit_after_calibration
    overrides = {"refit_decay": 1.0} if mode == "none" else {}
    return DemandModel.from_settings(demand, **overrides).fit(
        features,
        target,
        calibration=calibration,
        trees_from=None if mode == "full" else first,
    )


def held_out_features(
    history: History,
    origins: list[int],
    demand: DemandSettings,
    signals: pl.DataFrame | None,
    as_of: datetime,
    names: list[str],
) -> pl.DataFrame:
    """Every bucket ahead of each held-out origin (open slots), features as known at it; whole
    series are sampled (by hash) down to about MAX_HELD_OUT_ROWS rows.
    """
    rows = pl.concat([origin_rows(history, o, only_active=False) for o in origins])
    if rows.height > MAX_HELD_OUT_ROWS:
        series_of = history.col("series_id").gather(pl.col("row"))
        share = MAX_HELD_OUT_ROWS / rows.height
        rows = rows.filter(series_of.hash(3) % 1_000_000 < int(share * 1_000_000))
    frame = make_features(history, rows, demand, signals, as_of, columns=names)
    return frame.filter(~pl.col("closed") & pl.col("y").is_not_null())


def score_rows(
    model: DemandModel,
    history: History,
    rows: pl.DataFrame,
    settings: Settings,
    signals: pl.DataFrame | None,
    as_of: datetime,
) -> dict[str, float]:
    """Metrics of any fitted model (e.g. the champion) on given rows of `history` (its own
    features and calibration), for a like-for-like comparison with a candidate.
    """
    frame = make_features(
        history, rows, settings.demand, signals, as_of, columns=model.feature_names_
    )
    mean = model.predict(frame)
    p10, p50, p90 = model.predict_quantiles(mean)  # as in `fit`'s held-out metrics
    scored = frame.select("y").with_columns(
        mean=pl.Series(mean), p10=pl.Series(p10), p50=pl.Series(p50), p90=pl.Series(p90)
    )
    return point_metrics(scored.filter(pl.col("y").is_not_null()))


def point_metrics(
    frame: pl.DataFrame, prefix: str = "", strata: Sequence[float] | None = None
) -> dict[str, float]:
    """WAPE and bias of P50 (`wape`, `bias`) and of the mean (`wape_mean`, `bias_mean`), pinball
    of P10/P50/P90, coverage of [P10, P90] overall, per stratum of expected demand and on cells
    with a sale (`metrics.quantile_report`, the one function backtests and tests share).
    """
    if frame.height == 0:
        return {}
    report = metrics.quantile_report(
        frame["y"].to_numpy(),
        frame["mean"].to_numpy(),
        frame["p10"].to_numpy(),
        frame["p50"].to_numpy(),
        frame["p90"].to_numpy(),
        strata=tuple(strata) if strata is not None else metrics.DEMAND_STRATA,
    )
    return {f"{prefix}{k}": v for k, v in report.items()}


def model_params(
    settings: Settings,
    model: DemandModel,
    signal_cols: list[str],
    train_rows: int,
    history: History,
) -> dict[str, Any]:
    """Everything that describes a trained model (logged to MLflow with the run)."""
    demand = settings.demand
    return {
        "timezone": settings.timezone,
        "bucket_hours": demand.grid.bucket_hours,
        "horizon_buckets": demand.grid.horizon_buckets,
        "strategy": "direct (one model, horizon as a feature)",
        "returns": demand.grid.returns,
        "objective": model.objective,
        "lgb_params": model.lgb_params(),
        "n_estimators": model.n_estimators,
        "features": model.feature_names_,
        "signals": signal_cols,
        "signal_weights": {k: dict(v) for k, v in demand.signal_weights.items()},
        "known_signals": demand.known_signals,
        "observed_signals": demand.observed_signals,
        "calibration_origins": demand.intervals.calibration_origins,
        "refit_after_calibration": demand.model.refit_after_calibration,
        "interval_coverage": demand.intervals.interval_coverage,
        "train_rows": train_rows,
        "series": history.series.height,
        "closed_slots": history.closed.height,
        "origin_bucket_start": buckets.bucket_start_value(
            history.origin, history.timezone, history.bucket_hours
        ).isoformat(),
    }


# --- forecasting -----------------------------------------------------------------------------


@dataclass
class Forecast:
    """Forecast rows (one per active series x bucket ahead) and their model features."""

    frame: pl.DataFrame  # series_id, customer_id, sku, bucket, bucket_start, horizon, mean, p10..
    features: pl.DataFrame  # same row order; the model's feature columns
    history: History


def forecast(
    model: DemandModel,
    sales: pl.DataFrame,
    settings: Settings,
    as_of: datetime,
    signals: pl.DataFrame | None = None,
    history: History | None = None,
    origin: int | None = None,
    series_ids: Sequence[int] | None = None,
    inventory: pl.DataFrame | None = None,
) -> Forecast:
    """P10/P50/P90 for each active series and bucket ahead of `as_of`'s origin.

    `origin` (default: the origin at as_of) may be earlier, for a backtest on a history built
    at a later as_of (features still only read up to that origin). `series_ids` (default: all)
    keeps the rows of those series only; as every feature reads the whole history, the rows of
    any partition of the series equal those of the forecast of all series at once.
    `inventory` (optional, when `history` is not given) censors stock-out buckets.
    """
    demand = settings.demand
    history = history or build_history(sales, demand, settings.timezone, as_of, inventory=inventory)
    origin = history.origin if origin is None else origin
    rows = origin_rows(history, origin)
    if series_ids is not None:  # a partition: every feature still reads the whole history
        wanted = pl.Series(list(series_ids), dtype=history.series.schema["series_id"])
        rows = rows.filter(history.col("series_id").gather(pl.col("row")).is_in(wanted.implode()))
    frame = make_features(history, rows, demand, signals, as_of, columns=model.feature_names_)
    mean = model.predict(frame) if frame.height else np.zeros(0)
    closed = frame["closed"].to_numpy()
    mean = np.where(closed, 0.0, mean)
    median = model.predict_median(frame) if frame.height else None
    p10, p50, p90 = model.predict_quantiles(mean, median)
    p10, p50, p90 = (np.where(closed, 0.0, p) for p in (p10, p50, p90))
    keys = history.series.select("series_id", "customer_id", "sku")
    out = (
        frame.select("series_id", "bucket", pl.col("h").alias("horizon"), "closed", "y")
        .with_columns(
            mean=pl.Series(mean),
            var=pl.Series(model.variance(mean)),
            p10=pl.Series(p10),
            p50=pl.Series(p50),
            p90=pl.Series(p90),
            bucket_start=buckets.bucket_start(
                pl.col("bucket"), history.timezone, history.bucket_hours
            ),
        )
        .join(keys, on="series_id", how="left", maintain_order="left")
    )
    return Forecast(out, frame.select(model.feature_names_), history)


def partition_series(history: History, parts: int) -> list[list[int]]:
    """The active series ids of `history` in at most `parts` contiguous, non-empty groups, in
    series order (one empty group when no series is active, so a forecast still runs once).
    """
    ids = history.series.filter(pl.col("active"))["series_id"].to_list()
    if not ids:
        return [[]]
    return [chunk.tolist() for chunk in np.array_split(np.array(ids), min(parts, len(ids)))]


def forecast_table(
    result: Forecast, model_version: str, scenario: str = "baseline"
) -> pl.DataFrame:
    """The `demand_forecast` rows (as_of and run_id are stamped by the warehouse).

    Besides P10/P50/P90 of each bucket, `expected` is the mean: for skewed counts the median
    (P50) is lower, so sums over buckets, SKUs or days should add `expected`, not P50.
    `scenario`: 'baseline' for the normal run, else the what-if's name (`demand.adjust`).
    """
    return result.frame.select(
        "customer_id",
        "sku",
        "bucket_start",
        pl.lit(scenario, dtype=pl.String).alias("scenario"),
        pl.lit(model_version, dtype=pl.String).alias("model_version"),
        pl.col("horizon").cast(pl.Int64),
        pl.col("p10").cast(pl.Float64),
        pl.col("p50").cast(pl.Float64),
        pl.col("p90").cast(pl.Float64),
        pl.col("mean").cast(pl.Float64).alias("expected"),
        pl.lit("model", dtype=pl.String).alias("basis"),
    )


def cold_start_rows(
    history: History,
    sales: pl.DataFrame,
    settings: Settings,
    as_of: datetime,
    inventory: pl.DataFrame | None = None,
) -> pl.DataFrame | None:
    """Forecast rows of the cold series (`salesml.demand.coldstart`), or None when no series
    is cold: customer_id, sku, bucket, bucket_start, horizon, mean, p10, p50, p90, basis.
    """
    demand = settings.demand
    cold = coldstart.cold_series(history, demand, as_of, inventory)
    if cold.height == 0:
        return None
    categories = coldstart.sku_categories(sales, demand.grid.category_column)
    return coldstart.cold_start_forecast(history, cold, categories, demand)


def with_cold_start(table: pl.DataFrame, rows: pl.DataFrame | None) -> pl.DataFrame:
    """`demand_forecast` rows (`forecast_table`) with the cold series' rows replaced by (or, for
    series with stock but no sale, added as) their `cold_start_rows`, basis 'cold_start'. Run
    once over all partitions' rows; lineage columns (scenario, model_version) are copied from
    `table`.
    """
    if rows is None:
        return table
    lineage = {
        name: pl.lit(table[name][0] if table.height else None, dtype=pl.String)
        for name in ("scenario", "model_version")
        if name in table.columns
    }
    added = rows.select(
        "customer_id",
        "sku",
        "bucket_start",
        pl.col("horizon").cast(pl.Int64),
        "p10",
        "p50",
        "p90",
        pl.col("mean").alias("expected"),
        "basis",
        **lineage,
    )
    kept = table.join(rows, on=["customer_id", "sku"], how="anti")
    return pl.concat([kept, added.select(kept.columns)], how="vertical_relaxed")


def with_cold_cells(frame: pl.DataFrame, rows: pl.DataFrame | None) -> pl.DataFrame:
    """The model's cells (customer_id, sku, bucket, mean, var) with the cold series' replaced by
    their cold-start rows (Poisson: var = mean), so aggregates sum what demand_forecast holds.
    """
    if rows is None:
        return frame.select("customer_id", "sku", "bucket", "mean", "var")
    kept = frame.join(rows, on=["customer_id", "sku"], how="anti").select(
        "customer_id", "sku", "bucket", "mean", "var"
    )
    cold = rows.select(
        "customer_id",
        "sku",
        pl.col("bucket").cast(kept.schema["bucket"]),
        pl.col("mean").cast(pl.Float64),
        pl.col("mean").cast(pl.Float64).alias("var"),
    )
    return pl.concat([kept, cold], how="vertical_relaxed")
