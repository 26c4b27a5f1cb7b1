"""Deal-win jobs: train, score, backtest. Thin orchestration over the pure deals functions.

Each job runs inside `salesml.job_lifecycle.job_run`: a `runs` row that ends succeeded or failed (with
the message), the inputs read and validated as of `as_of` (quarantine written), and all outputs
written in one warehouse batch. No printing: progress goes to the `progress` callback.

Lineage: every written row carries `run_id` (the warehouse run, see `runs`), `model_version`
(registry version of `salesml-deal-win`) and `mlflow_run_id` (the MLflow run that trained it).

Training follows `salesml.training_job.train_and_promote`: reconcile what abandoned training
runs left, fit, register the version (tagged with its as_of), write `behavior_value` (the map of
this newest version), gate and maybe promote, close the run.
Scoring at `as_of` uses the version that may serve it (`tracking.load_for`): never a model
trained after `as_of`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl

from salesml import training_job
from salesml.config import DealsSettings, Settings
from salesml.deals.model import InsufficientDataError
from salesml.job_lifecycle import JobRun, job_run, with_lineage
from salesml.progress import Progress, report, scaled
from salesml.validation import JOB_INPUTS

MODEL_NAME = "salesml-deal-win"
INPUTS = list(JOB_INPUTS["deal-win"])
BEHAVIOR_SAMPLE_ROWS = 20_000


@dataclass
class TrainReport(training_job.TrainReport):
    """What `train` did: the registered version, the gate's decision, the holdout metrics
    (`training_job.TrainReport`), and what the deal-win model was trained on.
    """

    snapshots: int
    won_deals: int
    lost_deals: int
    best_iteration: int
    behavior_pairs: int
    event: str = ""

    def describe(self) -> str:
        """One line for the CLI and the flows: what was trained, its holdout, the decision."""
        m = self.metrics
        nan = float("nan")
        return (
            f"{self.model_name} v{self.model_version} ({self.event}) trained on "
            f"{self.snapshots} snapshots ({self.won_deals} deals with the event / "
            f"{self.lost_deals} without); honest holdout AUC {m.get('auc', nan):.3f}, Brier "
            f"{m.get('brier', nan):.4f} (+/- {m.get('brier_open_se', nan):.4f} on the deals "
            f"open at as_of; base rate {m.get('base_rate_brier', nan):.4f}, "
            f"logistic {m.get('logistic_brier', nan):.4f}), Brier skill "
            f"{m.get('brier_skill', nan):.3f} [{m.get('brier_skill_low', nan):.3f}, "
            f"{m.get('brier_skill_high', nan):.3f}]; {self.state()}: {self.decision}"
        )


@dataclass
class ScoreReport:
    """What `score` wrote and with which model."""

    run_id: str
    as_of: str
    model_version: str | None
    mlflow_run_id: str | None
    scored: int
    bases: dict[str, int] = field(default_factory=dict)
    health: dict[str, int] = field(default_factory=dict)
    rows_written: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    event: str = ""
    not_scored: int = 0
    """Open deals without a probability: always 0 (young deals get the prior); kept for the
    flows' summaries."""
    alerts: dict[str, int] = field(default_factory=dict)
    """What the run did to the alerts (`alerts.jobs.AlertsOutcome`: opened, still_open,
    resolved, written, notices_pending); empty when they were not processed."""

    def describe(self) -> str:
        """One line: how many deals were scored, from what, their health and the alerts."""
        health = ", ".join(f"{k} {v}" for k, v in sorted(self.health.items()))
        bases = ", ".join(f"{k} {v}" for k, v in sorted(self.bases.items()))
        source = (
            f"{MODEL_NAME} v{self.model_version}"
            if self.model_version is not None
            else "the base rate (no deal-win model with skill)"
        )
        alerts = (
            f"; alerts: {self.alerts['opened']} opened, {self.alerts['resolved']} resolved, "
            f"{self.alerts['still_open']} still open"
            if self.alerts
            else ""
        )
        return (
            f"scored {self.scored} open deals ({self.event}) with {source} "
            f"(basis: {bases}; {health}){alerts}"
        )


def train(settings: Settings, as_of: datetime, progress: Progress | None = None) -> TrainReport:
    """Train on data known at `as_of`, log and register in MLflow, gate `@champion`, and write
    the behaviour value map (`behavior_value`) of the new model (`training_job`).
    """
    job = training_job.TrainingJob(
        model_name=MODEL_NAME,
        flow="train_deal_win",
        inputs=INPUTS,
        fit=lambda run, tables: _fit(run, tables, settings, as_of, progress),
    )
    return training_job.train_and_promote(settings, as_of, job, TrainReport, progress)


def _fit(
    run: JobRun,
    tables: dict[str, pl.DataFrame],
    settings: Settings,
    as_of: datetime,
    progress: Progress | None,
) -> training_job.Candidate:
    """Fit the deal-win model and its behaviour value map; notes on inputs and leakage."""
    from salesml.deals.training import fit_deal_win

    deals_settings = settings.deals
    trained = run.step(
        "fit", fit_deal_win, tables, as_of, deals_settings, scaled(progress, 0.05, 0.6)
    )
    if trained.spec.inputs_note:
        run.notes.append(trained.spec.inputs_note)
    for name, auc in trained.leakage_allowed.items():
        run.notes.append(f"leakage screen: {name} (AUC {auc:.3f}) allowed by deals.leakage.allow")
    report(progress, "behaviour value", 0.6)
    behavior = run.step(
        "behavior value", _behavior, trained, tables, as_of, deals_settings.model.seed
    )
    return _candidate(trained, behavior, tables, settings, as_of, progress)


def _candidate(
    trained: Any,
    behavior: pl.DataFrame,
    tables: dict[str, pl.DataFrame],
    settings: Settings,
    as_of: datetime,
    progress: Progress | None,
) -> training_job.Candidate:
    """What the skeleton logs, gates and reports for the fitted deal-win model."""
    from salesml.deals.scoring import event_text
    from salesml.deals.training import METRIC_DIRECTION, evaluate_model

    deals_settings = settings.deals
    metric = deals_settings.gate_metric

    return training_job.Candidate(
        model=trained.model,
        gate_metric=metric,
        gate_value=trained.metrics[metric],
        higher_is_better=METRIC_DIRECTION[metric],
        skill=skill_check(trained.metrics),
        evaluate=lambda model: evaluate_model(model, trained.holdout, tables, metric),
        params=_params(settings, trained, as_of),
        log_metrics=_log_metrics(trained),
        metrics=dict(trained.metrics),
        write_artifacts=partial(_artifacts, trained, behavior, deals_settings),
        input_example=_input_example(trained),
        run_name=f"deal-win as of {as_of.isoformat()}",
        tags={
            f"salesml.leakage.allowed.{name}": f"{auc:.4f}"
            for name, auc in trained.leakage_allowed.items()
        },
        on_registered=partial(_write_behavior, behavior, progress),
        extra={
            "snapshots": trained.snapshots.height,
            "won_deals": trained.won_deals,
            "lost_deals": trained.lost_deals,
            "best_iteration": trained.model.best_iteration_,
            "behavior_pairs": behavior.height,
            "event": event_text(deals_settings.label_horizon_days),
        },
    )


def _artifacts(trained: Any, behavior: pl.DataFrame, deals: Any, folder: Path) -> dict[str, str]:
    """The model's MLflow artifacts written into `folder` (`deals.model_files`): {name: path}."""
    from salesml.deals.model_files import write_artifacts

    paths = write_artifacts(
        folder,
        trained.model,
        trained.features,
        trained.holdout,
        behavior,
        seed=deals.model.seed,
        health_bands=deals.health.bands.model_dump(),
    )
    return {name: str(path) for name, path in paths.items()}


def _write_behavior(
    behavior: pl.DataFrame, progress: Progress | None, run: JobRun, version: Any
) -> None:
    """Write `behavior_value` with the just-registered version's lineage (before the gate)."""
    report(progress, "write behaviour value", 0.85)
    run.write(
        {"behavior_value": with_lineage(behavior, version.version, version.run_id)},
        main="behavior_value",
    )


def _log_metrics(trained: Any) -> dict[str, float]:
    """MLflow metrics: the holdout's (`holdout_` prefix) and the training counts."""
    return {f"holdout_{k}": v for k, v in trained.metrics.items()} | {
        "snapshots": float(trained.snapshots.height),
        "won_deals": float(trained.won_deals),
        "lost_deals": float(trained.lost_deals),
        "best_iteration": float(trained.model.best_iteration_),
    }


def skill_check(metrics: dict[str, float]) -> Any:
    """The gate's skill numbers (`tracking.SkillCheck`) from the honest holdout's metrics."""
    from salesml import tracking

    return tracking.SkillCheck(
        brier_skill=metrics["brier_skill"],
        brier_skill_low=metrics["brier_skill_low"],
        brier_skill_high=metrics["brier_skill_high"],
        brier=metrics["brier"],
        logistic_brier=metrics["logistic_brier"],
    )


def _behavior(
    trained: Any, tables: dict[str, pl.DataFrame], as_of: datetime, seed: int
) -> pl.DataFrame:
    from salesml.deals.behavior import explain_behavior

    return explain_behavior(
        trained.model, trained.features, tables, as_of, BEHAVIOR_SAMPLE_ROWS, seed
    )


def _params(settings: Settings, trained: Any, as_of: datetime) -> dict[str, Any]:
    deals = settings.deals
    model = trained.model
    return {
        "as_of": as_of.isoformat(),
        **model.tracking_params(),
        "snapshot_every_days": deals.snapshot_every_days,
        "history_days": deals.history_days,
        "min_open_days": deals.min_open_days,
        "label_horizon_days": deals.label_horizon_days,
        "holdout_days": deals.holdout_days,
        "lost_after_days": deals.lost_after_days,
        "event": f"won within {deals.label_horizon_days} days of the score time",
        "activity_windows_days": deals.features.activity_windows_days,
        "decay_hours": deals.features.decay_hours,
        "role_weights": deals.features.role_weights,
        "custom_features": deals.features.custom_features,
        "prior_strength": deals.features.prior_strength,
        "health_bands": deals.health.bands.model_dump(),
        "health_rules": deals.health.rules.model_dump(),
        "gate_metric": deals.gate_metric,
        "n_features": len(model.feature_names_),
        "activity_pairs": len(trained.spec.activity_pairs),
        "holdout_rows": model.slices_.holdout_rows,
        "train_rows": model.slices_.train_rows,
        "contribution_unit": "log-odds",
    }


def _input_example(trained: Any) -> Any:
    return trained.features.select(trained.model.feature_names_).head(5).to_pandas()


def score(
    settings: Settings,
    as_of: datetime,
    progress: Progress | None = None,
) -> ScoreReport:
    """Give every deal open at `as_of` a probability of the event (won within H days): from
    the version that may serve it (`@champion` unless trained after `as_of`), the young-deal
    prior for deals younger than `min_open_days`, or, when no version passed the skill gate or
    none exists at all (training refused or never ran), the base rate known at as_of
    (`score_basis`, `basis_reason`; health from the rules that need no model). Refuses in one
    line when not even the base rate is known (no deal open H days before as_of). Writes
    deal_scores, deal_score_factors, pipeline_forecast and the decision frames against the
    previous scoring run (`_score_frames`) in one batch; then, once committed, the alerts
    (`_alerts`). No open deal to score while an earlier run wrote scores for this as_of: those
    are kept, and the run says so.
    """
    from salesml import tracking
    from salesml.deals.scoring import event_text
    from salesml.deals.training import with_lost_after

    deals_settings = settings.deals
    with job_run(settings, flow="score_deals", as_of=as_of) as run:
        report(progress, "load champion", 0.0)
        tracking.configure(settings)
        loaded, reason = run.step(
            "load champion", _load_or_base_rate, as_of, run.warehouse, io=True
        )
        version = None if loaded is None else loaded.version
        mlflow_run_id = None if loaded is None else loaded.run_id
        run.model_version = version
        if loaded is not None and loaded.note:
            run.notes.append(loaded.note)
        if reason:
            run.notes.append(reason)
        report(progress, "load inputs", 0.1)
        tables = with_lost_after(run.load(INPUTS), deals_settings)
        result = _score_open(run, loaded, reason, tables, progress)
        report(progress, "read the previous run's scores", 0.65)
        previous = run.step("previous scores", _read_previous, run.warehouse, as_of, io=True)
        frames = _score_frames(run, loaded, result, previous, tables, progress)
        report(progress, "write", 0.9)
        run.write(frames, main="deal_scores", scopes=_REALISED_SCOPE)
        alerts = _alerts(run, frames, previous, tables, progress)
        bases = result.scores.group_by("score_basis").len().rows()
        health = result.scores.group_by("health").len().rows()
        report(progress, "done", 1.0)
        horizon = getattr(loaded.model, "label_horizon_days", None) if loaded else None
        return ScoreReport(
            run_id=run.run_id,
            as_of=as_of.isoformat(),
            model_version=version,
            mlflow_run_id=mlflow_run_id,
            scored=result.scores.height,
            bases={str(k): int(v) for k, v in bases},
            health={str(k): int(v) for k, v in health},
            rows_written={name: run.row_counts.get(name, 0) for name in frames},
            notes=list(run.notes),
            event=event_text(horizon or deals_settings.label_horizon_days),
            alerts=alerts,
        )
    raise AssertionError("unreachable")  # pragma: no cover


def _score_frames(
    run: JobRun,
    loaded: Any,
    result: Any,
    previous: Any,
    tables: dict[str, pl.DataFrame],
    progress: Progress | None,
) -> dict[str, pl.DataFrame]:
    """Everything one scoring run writes in its one batch, stamped with the model's lineage:
    the scores, factors and pipeline forecast, the decision frames against the previous run
    (`deals.decisions`: what changed, rep / region views, next-best actions) and the realised
    checks of earlier scores (`model_quality`).
    """
    from salesml.deals import decisions

    as_of, settings = run.as_of, run.settings
    frames = {
        "deal_scores": result.scores,
        "deal_score_factors": result.factors,
        "pipeline_forecast": result.forecast,
    }
    report(progress, "what changed since the previous run", 0.72)
    frames |= run.step(
        "what changed",
        decisions.changes,
        result.scores,
        result.factors,
        previous,
        tables,
        as_of,
        settings,
    )
    report(progress, "rep and region views", 0.75)
    frames |= run.step("views", decisions.views, result.scores, previous, tables, as_of, settings)
    report(progress, "next-best actions", 0.78)
    model = None if loaded is None else loaded.model
    frames |= run.step(
        "next-best actions", decisions.actions, model, result.scores, tables, as_of, settings
    )
    version = None if loaded is None else loaded.version
    mlflow_run_id = None if loaded is None else loaded.run_id
    stamped = {name: with_lineage(f, version, mlflow_run_id) for name, f in frames.items()}  # type: ignore[arg-type]
    stamped["model_quality"] = _realised_checks(run, tables)
    return stamped


PREVIOUS_LOOKBACK = 5
"""Earlier succeeded scoring runs tried, newest first, for one with deal_scores rows."""


def _read_previous(warehouse: Any, as_of: datetime) -> Any:
    """`decisions.Previous`: the deal_scores and deal_score_factors rows of the latest as_of
    strictly before `as_of` at which a succeeded score_deals run left deal_scores rows (a re-run
    of the same as_of compares with the run before it, so it writes the same rows).
    """
    from salesml.deals.decisions import Previous
    from salesml.timeutil import DATETIME

    present = warehouse.tables()
    if "deal_scores" not in present:
        return Previous()
    runs = warehouse.list_runs(flow="score_deals", status="succeeded", limit=100_000)
    earlier = (
        runs.filter(pl.col("as_of") < pl.lit(as_of, DATETIME))
        .get_column("as_of")
        .unique()
        .sort(descending=True)
    )
    for at in earlier.head(PREVIOUS_LOOKBACK).to_list():
        scores = warehouse.read("deal_scores", at)
        if scores.height:
            if "deal_score_factors" not in present:
                return Previous(at, scores)
            return Previous(at, scores, warehouse.read("deal_score_factors", at))
    return Previous()


def _alerts(
    run: JobRun,
    frames: dict[str, pl.DataFrame],
    previous: Any,
    tables: dict[str, pl.DataFrame],
    progress: Progress | None,
) -> dict[str, int]:
    """After the batch is committed: the deal alert rules on this run's scores
    (`alerts.jobs.after_write`; a failure is a run note, never a failed run). Not run when
    this run scored no deal (an empty run keeps the earlier rows, and the alerts with them).
    """
    from dataclasses import asdict

    from salesml.alerts.jobs import after_write
    from salesml.deals.decisions import alert_frames

    if frames["deal_scores"].height == 0:
        return {}
    report(progress, "alerts", 0.95)
    inputs = alert_frames(frames["deal_scores"], previous, frames["deal_score_changes"], tables)
    outcome = after_write(run, inputs)
    return {} if outcome is None else {k: int(v) for k, v in asdict(outcome).items()}


def _score_open(
    run: JobRun,
    loaded: Any,
    reason: str | None,
    tables: dict[str, pl.DataFrame],
    progress: Progress | None,
) -> Any:
    """Score the deals open at the run's as_of (`scoring.score_open_deals`) with `loaded`'s
    model, or, when `loaded` is None, the base rate (refused when even that is unknown).
    """
    from salesml.deals.features import learn_spec
    from salesml.deals.scoring import priors_at, score_open_deals

    settings, as_of = run.settings, run.as_of
    deals_settings = settings.deals
    priors = run.step("priors", priors_at, tables["deals"], as_of, deals_settings)
    if loaded is None:
        _check_base_rate(priors.base_rate, as_of, deals_settings.label_horizon_days, reason)
    health_spec = (
        run.step("health features", learn_spec, tables, as_of, deals_settings)
        if loaded is None
        else None
    )
    return run.step(
        "score",
        score_open_deals,
        None if loaded is None else loaded.model,
        tables,
        as_of,
        min_open_days=deals_settings.min_open_days,
        rules=deals_settings.health.rules,
        bands=deals_settings.health.bands,
        priors=priors,
        base_rate_reason=reason or "",
        health_spec=health_spec,
        top_k=deals_settings.top_k,
        n_simulations=deals_settings.forecast_simulations,
        seed=deals_settings.model.seed,
        timezone=settings.timezone,
        progress=scaled(progress, 0.2, 0.7),
    )


def _load_or_base_rate(as_of: datetime, warehouse: Any) -> tuple[Any, str | None]:
    """(the version that may serve `as_of`, None), or (None, why the base rate is written):
    when versions were trained but none has a champion (none passed the skill gate), or when
    no version exists at all (training never ran, or refused, e.g. history too short; the
    reason names the last failed training run). With versions trained only after as_of it
    refuses as `load_for` does (`tracking.NoServableVersionError`): train one for that as_of.
    """
    from salesml import tracking

    try:
        return tracking.load_for(MODEL_NAME, as_of), None
    except tracking.NoServableVersionError:
        raise
    except tracking.NoChampionError:
        versions = tracking.list_versions(MODEL_NAME)
        if not versions:
            return None, f"no trained model: {_why_no_model(warehouse)}; {BASE_RATE_WRITTEN}"
        return None, (
            f"no deal-win model with skill: none of the {len(versions)} trained versions passed "
            "the skill gate (Brier skill over the base rate and the logistic baseline on the "
            f"honest holdout); {BASE_RATE_WRITTEN}"
        )


BASE_RATE_WRITTEN = "wrote the base rate known at as_of"


def _why_no_model(warehouse: Any) -> str:
    """Why no deal-win version exists, in words: the last failed training run's message, or
    that training never ran.
    """
    failed = warehouse.list_runs(flow="train_deal_win", status="failed", limit=1)
    if failed.height == 0 or not failed["message"][0]:
        return "no deal-win model was ever trained (`salesml train deal-win`)"
    line = str(failed["message"][0]).splitlines()[0][:300]
    return f"the last training run ({failed['as_of'][0]:%Y-%m-%d}) failed: {line}"


def _check_base_rate(
    base_rate: float, as_of: datetime, horizon_days: int, reason: str | None
) -> None:
    """Refuse (one line) to write base-rate scores when even the base rate is unknown at as_of:
    no snapshot with full follow-up (a deal open at least H days before as_of) exists.
    """
    if not math.isnan(base_rate):
        return
    why = (reason or "no deal-win model").removesuffix(f"; {BASE_RATE_WRITTEN}")
    raise InsufficientDataError(
        f"cannot score deals as of {as_of.isoformat()}: {why}, and no "
        f"base rate is known either (no deal was open {horizon_days} days or more before as_of: "
        "deals.label_horizon_days); score a later as_of or with a trained model"
    )


_REALISED_SCOPE = {"model_quality": {"model": "deal_win", "kind": "realised"}}


def _realised_checks(run: JobRun, tables: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """model_quality rows: the deal scores of earlier runs whose event is decided by now
    (as_of - label horizon or earlier) against the outcomes known at as_of
    (`quality.realised_deal_rows`).
    """
    from datetime import timedelta

    from salesml import quality
    from salesml.deals.scoring import priors_at

    horizon = run.settings.deals.label_horizon_days
    cutoff = run.as_of - timedelta(days=horizon)
    scores = run.step(
        "read earlier scores",
        quality.read_matured,
        run.warehouse,
        "score_deals",
        "deal_scores",
        cutoff,
        io=True,
    )
    if scores is None:
        return quality.empty()
    settings = run.settings.deals
    return run.step(
        "realised checks",
        quality.realised_deal_rows,
        scores,
        tables["deals"],
        run.as_of,
        horizon,
        run.run_id,
        base_rate=lambda at: priors_at(tables["deals"], at, settings).base_rate,
    )


def backtest(
    settings: Settings,
    as_of: datetime,
    n_origins: int = 4,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Rolling-origin backtest of the deal-win model and its baselines (JSON-serialisable)."""
    from salesml import quality
    from salesml.deals.deal_win_backtest import backtest_deal_win, summarize

    with job_run(
        settings,
        flow="backtest_deal_win",
        as_of=as_of,
        params={"n_origins": n_origins},
    ) as run:
        report(progress, "load inputs", 0.0)
        tables = run.load(INPUTS)
        result = run.step(
            "backtest",
            backtest_deal_win,
            tables,
            as_of,
            settings.deals,
            n_origins,
            progress=scaled(progress, 0.05, 1.0),
        )
        summary = summarize(result, as_of)
        summary["run_id"] = run.run_id
        rows = quality.backtest_rows(summary, quality.DEAL_WIN, run.run_id)
        run.write({"model_quality": rows}, scopes=quality.scope(quality.DEAL_WIN, "backtest"))
        summary["pipeline"] = _pipeline_backtest(run, tables, n_origins, progress)
        return summary
    raise AssertionError("unreachable")  # pragma: no cover


def _pipeline_backtest(
    run: JobRun, tables: dict[str, pl.DataFrame], n_origins: int, progress: Progress | None
) -> dict[str, Any]:
    """Backtest the in-period pipeline forecast (`pipeline_forecast.pipeline_backtest`) at
    `n_origins` monthly origins whose forecast months have ended by as_of; write its rows to
    model_quality (model 'pipeline', kind 'backtest', in their own scope and transaction) and
    return the pooled metrics per level (coverage of [P10, P90], bias, WAPE, next to the
    trailing baseline). An origin without probabilities (no deal open there, or neither a model
    nor a base rate known) is left out, and the run's notes say so.
    """
    from salesml import quality
    from salesml.deals import decisions
    from salesml.deals.revenue_forecast import PIPELINE, pipeline_backtest
    from salesml.deals.training import with_lost_after

    settings, deals = run.settings, run.settings.deals
    origins = decisions.pipeline_origins(run.as_of, n_origins, settings.timezone)
    probabilities = {}
    for done, origin in enumerate(origins):
        report(progress, f"pipeline origin {origin:%Y-%m-%d}", 0.6 + 0.35 * done / len(origins))
        found, _ = run.step("pipeline origin", origin_probabilities, tables, origin, deals)
        if found.height:
            probabilities[origin] = found
        else:
            run.notes.append(f"pipeline backtest: no probabilities at origin {origin:%Y-%m-%d}")
    if not probabilities:
        return {}
    result = run.step(
        "pipeline backtest",
        pipeline_backtest,
        with_lost_after(tables, deals),
        probabilities,
        horizon_days=deals.label_horizon_days,
        n_simulations=deals.forecast_simulations,
        seed=deals.model.seed,
        timezone=settings.timezone,
        run_id=run.run_id,
    )
    run.write({"model_quality": result.quality}, scopes=quality.scope(PIPELINE, "backtest"))
    pooled = {
        level: {k: v if math.isfinite(v) else None for k, v in metrics.items()}
        for level, metrics in result.summary.items()
    }  # JSON: an undefined metric (no revenue realised) is null
    return {"origins": [o.isoformat() for o in probabilities], **pooled}


def origin_probabilities(
    tables: dict[str, pl.DataFrame], origin: datetime, settings: DealsSettings
) -> tuple[pl.DataFrame, str]:
    """(deal_id, win_probability) of every deal open at `origin`, as the score job would have
    written them there, and the basis ('model', 'base_rate', or 'none': no base rate known, no
    rows): a model fitted on what was known at origin when it has skill (the gate's skill
    check), else the base rate known there (also when training refuses). The pipeline
    backtest (here and in benchmarks/bench_pipeline_forecast.py) replays these origins.
    """
    from salesml.deals.scoring import priors_at, score_open_deals
    from salesml.deals.training import fit_deal_win, with_lost_after

    known = with_lost_after(tables, settings)
    priors = priors_at(known["deals"], origin, settings)
    model = None
    try:
        trained = fit_deal_win(tables, origin, settings)
        model = trained.model if skill_check(trained.metrics).verdict()[0] else None
    except InsufficientDataError:
        pass
    if model is None and math.isnan(priors.base_rate):
        return pl.DataFrame(schema={"deal_id": pl.String, "win_probability": pl.Float64}), "none"
    result = score_open_deals(
        model,
        known,
        origin,
        min_open_days=settings.min_open_days,
        rules=settings.health.rules,
        priors=priors,
        top_k=1,
        n_simulations=1,
    )
    basis = "model" if model is not None else "base_rate"
    return result.scores.select("deal_id", "win_probability"), basis
