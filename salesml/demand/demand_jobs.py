"""Demand jobs: train, forecast, backtest. Thin orchestration over the pure demand functions.

Each job runs inside `salesml.job_lifecycle.job_run`: a `runs` row that ends succeeded or failed (with
a message), the inputs read and validated as of `as_of` (quarantine written), and all outputs
written in one warehouse batch. No printing: progress goes to the `progress` callback.

Lineage: every written row carries `run_id` (the warehouse run), `model_version` (registry
version of `salesml-demand`) and `mlflow_run_id` (the MLflow run that trained it).

Training (`salesml.training_job.train_and_promote`) reconciles what abandoned training runs
left, fits, registers the version (tagged with its as_of), gates and maybe promotes, then closes
its run. Forecasting at `as_of` uses the version that may serve it (`tracking.load_for`): never
a model trained after `as_of`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from salesml import metrics, training_job
from salesml.config import Settings
from salesml.demand.adjust import BASELINE
from salesml.job_lifecycle import JobRun, job_run, with_lineage
from salesml.progress import Progress, report, scaled
from salesml.validation import JOB_INPUTS

MODEL_NAME = "salesml-demand"
INPUTS = list(JOB_INPUTS["demand"])
GATE_METRIC = "pinball_scaled"
"""Gate metric: mean pinball loss over P10/P50/P90 / mean actual (`quality.scaled_pinball`)."""
NO_INVENTORY_NOTE = "no inventory table: sku_health not computed"


@dataclass
class TrainReport(training_job.TrainReport):
    """What `train` did: the registered version, the gate's decision, held-out metrics
    (`training_job.TrainReport`), and what the demand model was trained on.
    """

    series: int
    train_rows: int
    seconds: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for the CLI and the flow summary: the version, its data and its gate."""
        return (
            f"{self.model_name} v{self.model_version} trained on {self.series} series "
            f"({self.train_rows} rows); held-out WAPE {self.metrics.get('wape', math.nan):.3f}, "
            f"P10-P90 coverage {self.metrics.get('coverage_p10_p90', math.nan):.2f}; "
            f"{self.state()}: {self.decision}"
        )


@dataclass
class ForecastReport:
    """What `forecast` wrote and with which model."""

    run_id: str
    as_of: str
    model_version: str
    mlflow_run_id: str
    series: int
    rows_written: dict[str, int]
    health: dict[str, int]
    rows_explained: int
    explain_ms_per_row: float
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    scenario: str = "baseline"  # or the what-if's name (`--scenario`)
    adjustments: list[dict[str, Any]] = field(default_factory=list)  # adjust.LOG_SCHEMA rows

    def describe(self) -> str:
        """One line for the CLI and the flow summary: what was forecast and how it rates."""
        health = ", ".join(f"{k} {v}" for k, v in sorted(self.health.items())) or "not rated"
        return (
            f"forecast {self.series} series x {self.rows_written.get('demand_forecast', 0)} "
            f"rows with {MODEL_NAME} v{self.model_version}; drivers for {self.rows_explained} "
            f"rows ({self.explain_ms_per_row:.2f} ms/row); SKU health: {health}"
        )


def run_params(settings: Settings) -> dict[str, Any]:
    """What a planner can change between runs, recorded with each run (`runs.params`): the
    signals used and the regional signal weights in force.
    """
    demand = settings.demand
    return {
        "known_signals": list(demand.known_signals),
        "observed_signals": list(demand.observed_signals),
        "signal_weights": {k: dict(v) for k, v in demand.signal_weights.items()},
        "explain_hours_ahead": demand.explain.hours_ahead,
        "explain_health": list(demand.explain.health),
        "explain_max_rows": demand.explain.max_rows,
    }


def train(settings: Settings, as_of: datetime, progress: Progress | None = None) -> TrainReport:
    """Train on sales known at `as_of`, log and register `salesml-demand` in MLflow, and move
    `@champion` if it is at least as good on the same held-out weeks (scaled pinball loss over
    P10/P50/P90, next to the 8-week same-bucket median's: `_gate_values`; `training_job`).
    """
    job = training_job.TrainingJob(
        model_name=MODEL_NAME,
        flow="train_demand",
        inputs=INPUTS,
        fit=lambda run, tables: _fit(run, tables, settings, as_of, progress),
        run_params=run_params(settings),
    )
    return training_job.train_and_promote(settings, as_of, job, TrainReport, progress)


def _fit(
    run: JobRun,
    tables: dict[str, pl.DataFrame],
    settings: Settings,
    as_of: datetime,
    progress: Progress | None,
) -> training_job.Candidate:
    """Fit the demand model (`pipeline.fit`) and say what the skeleton logs, gates, reports."""
    from salesml.demand import forecasting

    signals = tables.get("signals")
    result = run.step(
        "train",
        forecasting.fit,
        tables["sales"],
        settings,
        as_of,
        signals,
        progress=scaled(progress, 0.05, 0.7),
        inventory=tables.get("inventory"),
    )
    candidate_value, baseline = _gate_values(result, settings)
    return training_job.Candidate(
        model=result.model,
        gate_metric=GATE_METRIC,
        gate_value=candidate_value,
        higher_is_better=False,
        skill=baseline,
        evaluate=lambda model: _reference_loss(model, result, settings, signals, as_of),
        params={"as_of": as_of.isoformat(), **result.params},
        log_metrics={f"holdout_{k}": v for k, v in result.metrics.items()}
        | {f"seconds_{k}": v for k, v in result.timings.items()}
        | {f"holdout_{k}": v for k, v in baseline.to_dict().items() if v is not None},
        metrics=dict(result.metrics),
        write_artifacts=lambda folder: _write_artifacts(folder, result),
        input_example=_input_example(result),
        run_name=f"demand as of {as_of.isoformat()}",
        tags={"salesml.contribution_unit": "units (log-space SHAP rescaled)"},
        extra={
            "series": int(result.params["series"]),
            "train_rows": int(result.params["train_rows"]),
            "seconds": dict(result.timings),
        },
    )


def _reference_loss(
    model: Any, result: Any, settings: Settings, signals: pl.DataFrame | None, as_of: datetime
) -> float:
    """A reference version's scaled pinball loss (`GATE_METRIC`) on the candidate's held-out
    rows, each forecast as known at its origin (`training_job.reference_value` calls it).
    """
    from salesml import quality
    from salesml.demand import forecasting

    scored = forecasting.score_rows(
        model, result.history, result.held_out_rows, settings, signals, as_of
    )
    scale = float(result.calibration["y"].mean())
    return quality.scaled_pinball(scored, scale)


def _gate_values(result: Any, settings: Settings) -> tuple[float, Any]:
    """The candidate's scaled pinball loss on its held-out rows, and the same loss of the
    8-week same-bucket median on those rows (`tracking.BaselineCheck`; blocking only with
    `demand.gate_requires_baseline`). Every forecast is as known at its held-out origin.
    """
    from salesml import quality, tracking
    from salesml.demand import baselines

    held = result.calibration
    value = quality.scaled_pinball(result.metrics, float(held["y"].mean()))
    naive = baselines.naive_forecasts(result.history, result.held_out_rows)
    reference = quality.point_scaled_pinball(held["y"].to_numpy(), naive["median_8w"].to_numpy())
    check = tracking.BaselineCheck(
        GATE_METRIC, value, "median_8w", reference, settings.demand.gate_requires_baseline
    )
    return value, check


def _write_artifacts(folder: Path, result: Any) -> dict[str, str]:
    importance = folder / "feature_importance.csv"
    result.model.feature_importance().write_csv(importance)
    held_out = folder / "held_out_predictions.parquet"
    if result.calibration is not None:
        result.calibration.write_parquet(held_out)
    calibration = folder / "calibration.json"
    cal = result.model.calibration_
    calibration.write_text(
        json.dumps(
            {
                "negative_binomial_inv_size": cal.inv_size,
                "interval_lower_level": cal.lower_level,
                "interval_upper_level": 1.0 - cal.lower_level,
                "held_out_coverage": cal.coverage,
                "held_out_rows": cal.rows,
                "strata": [
                    {
                        "stratum": metrics.stratum_label(k, cal.edges),
                        "inv_size": inv,
                        "lower_level": level,
                        "held_out_coverage": cover if math.isfinite(cover) else None,
                        "rows": rows,
                    }
                    for k, (inv, level, cover, rows) in enumerate(
                        zip(
                            cal.inv_sizes,
                            cal.lower_levels,
                            cal.coverages,
                            cal.stratum_rows,
                            strict=True,
                        )
                    )
                ],
                "metrics": {k: v for k, v in cal.metrics.items() if math.isfinite(v)},
            },
            indent=2,
        )
    )
    paths = {"feature_importance.csv": str(importance), "calibration.json": str(calibration)}
    if held_out.exists():
        paths["held_out_predictions.parquet"] = str(held_out)
    return paths


def _input_example(result: Any) -> Any:
    example = result.example
    return None if example is None else example.to_pandas()


@dataclass
class ForecastPart:
    """Forecast rows, SKU health and drivers of some series (see `forecast_series`)."""

    frame: pl.DataFrame  # pipeline.Forecast.frame: keys, bucket, closed, mean, var, p10..p90
    table: pl.DataFrame  # demand_forecast rows
    health: pl.DataFrame | None  # sku_health rows (None without an inventory table)
    factors: pl.DataFrame  # demand_forecast_factors of the explained rows
    seconds: dict[str, float] = field(default_factory=dict)
    adjustments: pl.DataFrame | None = None  # what each signal weight did (adjust.LOG_SCHEMA)


def forecast_series(
    series_ids: list[int],
    *,
    model: Any,
    model_version: str,
    history: Any,
    tables: dict[str, pl.DataFrame],
    settings: Settings,
    as_of: datetime,
    scenario: Any = None,
) -> ForecastPart:
    """Forecast, rate and explain the series `series_ids` of `history` (pure).

    Signal weights (the scenario's, else `demand.signal_weights`) adjust the model's forecast
    (`demand.adjust`) before health and drivers; drivers explain the model's own mean. A
    scenario (`adjust.Scenario`) gets forecast rows only: no health, no drivers.

    Every row reads the whole history, so forecast rows and health do not depend on how the
    series are partitioned. Drivers are computed for the partition's own selection (at most
    `explain_max_rows` rows); `combine_parts` then keeps the global selection, which is always
    inside the union of the partitions' selections (same priority order, a partition's rows
    keep their relative order).
    """
    from salesml.demand import drivers, forecasting, health

    demand = settings.demand
    seconds: dict[str, float] = {}
    tick = time.perf_counter()
    result = forecasting.forecast(
        model,
        tables["sales"],
        settings,
        as_of,
        tables.get("signals"),
        history=history,
        series_ids=series_ids,
    )
    seconds["forecast"] = time.perf_counter() - tick
    weights = demand.signal_weights if scenario is None else scenario.weights
    log = None
    if weights:
        tick = time.perf_counter()
        result, log = _adjusted(result, model, weights, tables, settings, as_of)
        seconds["adjust"] = time.perf_counter() - tick
    rated: pl.DataFrame | None = None
    inventory = tables.get("inventory") if scenario is None else None
    if inventory is not None:
        tick = time.perf_counter()
        rated = health.sku_health(result.frame, inventory, tables["sales"], demand, as_of)
        seconds["health"] = time.perf_counter() - tick
    mask = drivers.rows_to_explain(result.frame, demand, as_of, rated)
    if scenario is not None:
        mask = pl.repeat(False, result.frame.height, eager=True)
    explained = drivers.explain_rows(model, result.frame, result.features, demand, mask)
    seconds["drivers"] = explained.seconds
    name = BASELINE if scenario is None else scenario.name
    table = forecasting.forecast_table(result, model_version, name)
    return ForecastPart(result.frame, table, rated, explained.factors, seconds, log)


def _adjusted(
    result: Any,
    model: Any,
    weights: Any,
    tables: dict[str, pl.DataFrame],
    settings: Settings,
    as_of: datetime,
) -> tuple[Any, pl.DataFrame]:
    """`result` (pipeline.Forecast) with `weights` applied after the model, and their log."""
    from dataclasses import replace

    from salesml.demand import adjust

    cells = adjust.signal_values(
        result.history, result.frame, settings.demand, tables.get("signals"), as_of, list(weights)
    )
    done = adjust.adjust(result.frame, cells, weights, model, settings.demand)
    return replace(result, frame=done.frame), done.log


def combine_parts(
    parts: list[ForecastPart], settings: Settings, as_of: datetime
) -> tuple[ForecastPart, int, int]:
    """The parts as one forecast (in series order), drivers cut to the global selection;
    returns it with the open rows explained and the open rows the selection wanted.
    """
    from salesml.demand import drivers

    demand = settings.demand
    frame = pl.concat([p.frame for p in parts])
    healths = [p.health for p in parts if p.health is not None]
    rated = pl.concat(healths) if healths else None
    mask = drivers.rows_to_explain(frame, demand, as_of, rated)
    keys = ["customer_id", "sku", "bucket_start"]
    chosen = frame.filter(mask).select(keys)
    factors = pl.concat([p.factors for p in parts]).join(chosen, on=keys, how="semi")
    seconds: dict[str, float] = {}
    for part in parts:
        for key, value in part.seconds.items():
            seconds[key] = seconds.get(key, 0.0) + value
    combined = ForecastPart(frame, pl.concat([p.table for p in parts]), rated, factors, seconds)
    explained = int((mask & ~frame["closed"]).sum())
    wanted = drivers.selected_open_rows(frame, demand, as_of, rated)
    return combined, explained, wanted


def forecast(
    settings: Settings,
    as_of: datetime,
    progress: Progress | None = None,
    scenario: Any = None,
) -> ForecastReport:
    """Forecast every active series' buckets ahead with the version that may serve `as_of`
    (`@champion` unless it was trained after `as_of`); write demand_forecast,
    demand_forecast_agg, demand_forecast_factors and (with an inventory table) sku_health in one
    batch. An empty forecast never replaces the rows an earlier run wrote for this as_of (the
    run says so).

    The active series are forecast in `run.partitions` parts (1 unless the executor set by
    `job_lifecycle.use_executor` scales out, e.g. on Dask); the result does not depend on the number
    of parts.

    `scenario` (`adjust.Scenario`, a what-if): its weights replace the configured ones and
    only its demand_forecast rows are written (scenario = its name; no agg, drivers, health),
    never touching the baseline's rows (the write is scoped to the scenario, as the normal
    run's is to 'baseline'). Each run's notes log what every signal weight did.
    """
    name = BASELINE if scenario is None else scenario.name
    params = run_params(settings)
    if scenario is not None:
        params |= {"scenario": name, "signal_weights": scenario.weights}
    with job_run(
        settings,
        flow="forecast_demand",
        as_of=as_of,
        params=params,
    ) as run:
        loaded, tables, history, seconds = _load_and_history(run, progress)
        report(progress, "forecast, SKU health, drivers (SHAP)", 0.3)
        result, explained, log, cold = _forecast_all(run, loaded, history, tables, scenario)
        seconds.update(result.seconds)
        frames = _forecast_frames(run, result, cold, loaded, tables, scenario)
        report(progress, "write", 0.9)
        scopes = {"demand_forecast": {"scenario": name}, **_REALISED_SCOPE}
        run.write(frames, main="demand_forecast", scopes=scopes)
        _alerts(run, frames, tables, scenario, progress)
        counts = result.health.group_by("health").len().rows() if result.health is not None else []
        report(progress, "done", 1.0)
        return ForecastReport(
            run_id=run.run_id,
            as_of=as_of.isoformat(),
            model_version=loaded.version,
            mlflow_run_id=loaded.run_id,
            series=int(result.frame["series_id"].n_unique()),
            rows_written={name: run.row_counts.get(name, 0) for name in frames},
            health={str(k): int(v) for k, v in counts},
            rows_explained=explained,
            explain_ms_per_row=1000.0 * seconds.get("drivers", 0.0) / explained
            if explained
            else 0.0,
            notes=list(run.notes),
            seconds=seconds,
            scenario=name,
            adjustments=log.to_dicts(),
        )
    raise AssertionError("unreachable")  # pragma: no cover


def _load_and_history(
    run: Any, progress: Progress | None
) -> tuple[Any, dict[str, pl.DataFrame], Any, dict[str, float]]:
    """The version serving the run's as_of (`tracking.load_for`), the inputs, the series
    history as known at as_of (`pipeline.build_history`) and its build time in seconds.
    """
    from salesml import tracking
    from salesml.demand import features

    settings, as_of = run.settings, run.as_of
    report(progress, "load champion", 0.0)
    tracking.configure(settings)
    loaded = run.step("load champion", tracking.load_for, MODEL_NAME, as_of, io=True)
    run.model_version = loaded.version
    if loaded.note:
        run.notes.append(loaded.note)
    report(progress, "load inputs", 0.1)
    tables = run.load(INPUTS)
    report(progress, "history", 0.2)
    tick = time.perf_counter()
    history = run.step(
        "history",
        features.build_history,
        tables["sales"],
        settings.demand,
        settings.timezone,
        as_of,
        inventory=tables.get("inventory"),
    )
    return loaded, tables, history, {"history": time.perf_counter() - tick}


def _forecast_all(
    run: Any,
    loaded: Any,
    history: Any,
    tables: dict[str, pl.DataFrame],
    scenario: Any,
) -> tuple[ForecastPart, int, pl.DataFrame, Any]:
    """Forecast every series in `run.partitions` parts and combine them, cold starts added;
    returns (combined part, open rows explained, signal-weight log, cold-start rows) and notes
    what the weights did, a missing inventory and drivers cut by `explain_max_rows`.
    """
    from salesml.demand import adjust, forecasting

    settings, as_of = run.settings, run.as_of
    parts = run.map(
        "forecast",
        forecast_series,
        forecasting.partition_series(history, run.partitions),
        model=loaded.model,
        model_version=loaded.version,
        history=history,
        tables=tables,
        settings=settings,
        as_of=as_of,
        scenario=scenario,
    )
    result, explained, wanted = combine_parts(parts, settings, as_of)
    cold = forecasting.cold_start_rows(  # once over all parts: basis 'cold_start'
        history, tables["sales"], settings, as_of, tables.get("inventory")
    )
    result.table = forecasting.with_cold_start(result.table, cold)
    log = adjust.combine_logs([p.adjustments for p in parts if p.adjustments is not None])
    run.notes.extend(adjust.describe_log(log))
    if scenario is not None:
        explained = wanted = 0
    elif result.health is None:
        run.notes.append(NO_INVENTORY_NOTE)
    if wanted > explained:
        run.notes.append(
            f"drivers for {explained} of {wanted} selected rows "
            f"(explain_max_rows={settings.demand.explain.max_rows})"
        )
    return result, explained, log, cold


def _forecast_frames(
    run: Any,
    result: ForecastPart,
    cold: Any,
    loaded: Any,
    tables: dict[str, pl.DataFrame],
    scenario: Any,
) -> dict[str, pl.DataFrame]:
    """The tables `forecast` writes, with lineage: a what-if writes only its demand_forecast
    rows; the baseline adds factors, agg, sku_health (with inventory) and realised checks.
    """
    from salesml.demand import aggregate, forecasting

    settings, as_of = run.settings, run.as_of
    frames = {"demand_forecast": result.table}
    if scenario is None:
        frames["demand_forecast_factors"] = result.factors
        if result.health is not None:
            frames["sku_health"] = result.health
        frames["demand_forecast_agg"] = aggregate.forecast_agg(
            forecasting.with_cold_cells(result.frame, cold),
            tables["sales"],
            settings,
            as_of,
            loaded.model.calibration_.metrics,
        )
    frames = {
        table: with_lineage(frame, loaded.version, loaded.run_id) for table, frame in frames.items()
    }
    if scenario is None:
        frames["model_quality"] = _realised_checks(run, tables)
    return frames


def _alerts(
    run: Any,
    frames: dict[str, pl.DataFrame],
    tables: dict[str, pl.DataFrame],
    scenario: Any,
    progress: Progress | None,
) -> None:
    """After the batch is committed: the demand alert rules (stock under safety while sales
    rose, signals down week on week) on this forecast and the inputs known at as_of
    (`alerts.jobs.after_write`; a failure is a run note, never a failed run). Not for a
    what-if (a scenario is not what will happen) nor an empty forecast (nothing written).
    """
    from salesml.alerts.jobs import after_write
    from salesml.alerts.rules import AlertFrames

    if scenario is not None or frames["demand_forecast"].height == 0:
        return
    report(progress, "alerts", 0.95)
    inputs = AlertFrames(
        demand_forecast=frames["demand_forecast"],
        sales=tables["sales"],
        inventory=tables.get("inventory"),
        signals=tables.get("signals"),
    )
    after_write(run, inputs)


_REALISED_SCOPE = {"model_quality": {"model": "demand", "kind": "realised"}}


def _realised_checks(run: Any, tables: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """model_quality rows: the forecasts of earlier runs whose whole horizon has ended by now
    against the sales known at as_of (`quality.realised_demand_rows`).
    """
    from datetime import timedelta

    from salesml import quality

    settings = run.settings
    demand = settings.demand
    cutoff = run.as_of - timedelta(hours=demand.grid.horizon_buckets * demand.grid.bucket_hours)
    forecasts = run.step(
        "read earlier forecasts",
        quality.read_matured,
        run.warehouse,
        "forecast_demand",
        "demand_forecast",
        cutoff,
        io=True,
    )
    if forecasts is None:
        return quality.empty()
    if "scenario" in forecasts.columns:  # what-ifs sit beside the forecast; check the baseline
        forecasts = forecasts.filter(pl.col("scenario").fill_null(BASELINE) == BASELINE)
    actuals = quality.demand_actuals(tables["sales"], demand, settings.timezone, run.as_of)
    rows: pl.DataFrame = run.step(
        "realised checks",
        quality.realised_demand_rows,
        forecasts,
        actuals,
        run.as_of,
        timezone=settings.timezone,
        bucket_hours=demand.grid.bucket_hours,
        run_id=run.run_id,
        strata=tuple(demand.intervals.interval_strata),
        nominal=demand.intervals.interval_coverage,
    )
    return rows


def backtest(
    settings: Settings,
    as_of: datetime,
    n_origins: int = 4,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Rolling-origin backtest of the demand model and its baselines (JSON-serialisable)."""
    from salesml import quality
    from salesml.demand import demand_backtest

    with job_run(
        settings,
        flow="backtest_demand",
        as_of=as_of,
        params={"n_origins": n_origins},
    ) as run:
        report(progress, "load inputs", 0.0)
        tables = run.load(INPUTS)
        result = run.step(
            "backtest",
            demand_backtest.backtest,
            tables["sales"],
            settings,
            as_of,
            n_origins,
            tables.get("signals"),
            progress=scaled(progress, 0.05, 1.0),
            inventory=tables.get("inventory"),
        )
        summary = demand_backtest.summary(result)
        summary["as_of"] = as_of.isoformat()
        summary["run_id"] = run.run_id
        summary["model"] = MODEL_NAME
        nominal = settings.demand.intervals.interval_coverage
        rows = quality.backtest_rows(summary, quality.DEMAND, run.run_id, nominal)
        run.write({"model_quality": rows}, scopes=quality.scope(quality.DEMAND, "backtest"))
        return summary
    raise AssertionError("unreachable")  # pragma: no cover
