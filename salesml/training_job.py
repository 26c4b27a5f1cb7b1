"""The training-job skeleton shared by the deal-win and demand jobs (`train_and_promote`).

One order for every model, so a crash at any point leaves a state the next run can explain:
reconcile what abandoned training runs left, load the inputs known at `as_of`, fit (the job's
own callable), evaluate the version serving `as_of` on the candidate's holdout, log and register
the candidate in MLflow (tagged with its as_of), run the job's post-registration writes, gate and
maybe promote `@champion`, and report. A reference version that cannot be evaluated is never a
crash and never silent: it gets NaN (the gate treats it as beaten; the decision says so) and the
reason is a run note (the `runs` row's message).

IO goes through `salesml.job_lifecycle` (the `runs` row, inputs, writes) and `salesml.tracking` (MLflow).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import polars as pl

from salesml.config import Settings
from salesml.job_lifecycle import JobRun, job_run
from salesml.progress import Progress, report

if TYPE_CHECKING:
    import pandas as pd

    from salesml.tracking import BaselineCheck, RegisteredVersion, SkillCheck


@dataclass
class TrainReport:
    """What a training job did: the registered version, the gate's decision, the holdout
    metrics. Each job's report extends it with its own counts (fields after these twelve).
    """

    run_id: str
    as_of: str
    model_name: str
    model_version: str
    mlflow_run_id: str
    promoted: bool
    decision: str
    gate_metric: str
    candidate_value: float | None
    champion_value: float | None
    champion_version: str | None
    metrics: dict[str, float]

    def state(self) -> str:
        """The gate's outcome in words, as `describe` ends: '<state>: <decision>'."""
        return "promoted to champion" if self.promoted else "not promoted"


R = TypeVar("R", bound=TrainReport)


@dataclass
class Candidate:
    """A fitted model as the skeleton needs it; built by the job's `fit` callable.

    `gate_metric` is the holdout metric's name without the `holdout_` prefix; `evaluate`
    computes it for another (reference) model on this candidate's holdout rows;
    `write_artifacts` writes files into a temporary folder and returns {name: path};
    `on_registered` runs after registration and before the gate (e.g. writing outputs that
    carry the new version); `extra` holds the job report's own fields.
    """

    model: Any
    gate_metric: str
    gate_value: float
    higher_is_better: bool
    skill: SkillCheck | BaselineCheck
    evaluate: Callable[[Any], float]
    params: dict[str, Any]
    log_metrics: dict[str, float]
    metrics: dict[str, float]
    write_artifacts: Callable[[Path], dict[str, str]]
    input_example: pd.DataFrame | pl.DataFrame | None
    run_name: str
    tags: dict[str, str] = field(default_factory=dict)
    on_registered: Callable[[JobRun, RegisteredVersion], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


Fit = Callable[[JobRun, dict[str, pl.DataFrame]], Candidate]


@dataclass(frozen=True)
class TrainingJob:
    """One model's training job: registry name, `runs` flow, inputs, and how to fit."""

    model_name: str
    flow: str
    inputs: list[str]
    fit: Fit
    run_params: dict[str, Any] | None = None


def train_and_promote(
    settings: Settings,
    as_of: datetime,
    job: TrainingJob,
    report_type: type[R],
    progress: Progress | None = None,
) -> R:
    """Run `job` at `as_of` inside one `runs` row (see the module docstring for the order);
    returns `report_type` built from the twelve shared fields and the candidate's `extra`.
    """
    from salesml import tracking

    with job_run(settings, flow=job.flow, as_of=as_of, params=job.run_params) as run:
        report(progress, "load inputs", 0.0)
        tracking.configure(settings)
        run.step("reconcile", run.reconcile_training, job.model_name, io=True)
        candidate = job.fit(run, run.load(job.inputs))
        report(progress, "champion comparison", 0.7)
        champion_value, champion_version, problem = reference_value(
            job.model_name, as_of, candidate.evaluate
        )
        if problem:
            run.notes.append(problem)
        report(progress, "log model", 0.75)
        version = _log_and_register(run, job.model_name, candidate, as_of)
        run.model_version = version.version
        if candidate.on_registered is not None:
            candidate.on_registered(run, version)
        report(progress, "promotion gate", 0.9)
        decision = tracking.promote_if_better(
            job.model_name,
            candidate=version,
            metric=f"holdout_{candidate.gate_metric}",
            candidate_value=candidate.gate_value,
            champion_value=champion_value,
            higher_is_better=candidate.higher_is_better,
            champion_version=champion_version,
            as_of=as_of,
            skill=candidate.skill,
        )
        run.notes.append(decision.reason)
        report(progress, "done", 1.0)
        return report_type(
            run_id=run.run_id,
            as_of=as_of.isoformat(),
            model_name=job.model_name,
            model_version=version.version,
            mlflow_run_id=version.run_id,
            promoted=decision.promoted,
            decision=decision.reason,
            gate_metric=f"holdout_{candidate.gate_metric}",
            candidate_value=decision.candidate_value,
            champion_value=decision.champion_value,
            champion_version=champion_version,
            metrics=dict(candidate.metrics),
            **candidate.extra,
        )
    raise AssertionError("unreachable")  # pragma: no cover - job_run re-raises


def _log_and_register(
    run: JobRun, model_name: str, candidate: Candidate, as_of: datetime
) -> RegisteredVersion:
    """Log the candidate (params, metrics, artifacts, example) and register it; the MLflow run
    carries the warehouse run's id (`tracking.WAREHOUSE_RUN_TAG`).
    """
    from salesml import tracking

    with tempfile.TemporaryDirectory(prefix=f"{model_name}-") as folder:
        return tracking.log_and_register(
            model_name=model_name,
            model=candidate.model,
            params=candidate.params,
            metrics=candidate.log_metrics,
            artifacts=candidate.write_artifacts(Path(folder)),
            input_example=candidate.input_example,
            run_name=candidate.run_name,
            tags={tracking.WAREHOUSE_RUN_TAG: run.run_id} | candidate.tags,
            as_of=as_of,
        )


def reference_value(
    model_name: str, as_of: datetime, evaluate: Callable[[Any], float]
) -> tuple[float | None, str | None, str | None]:
    """The reference version's gate value (`evaluate(model)`), its version, and why it could
    not be evaluated. (None, None, None): nothing to compare with. The reference is the version
    serving `as_of` (`tracking.reference_version`): the champion, unless trained after `as_of`.

    A reference that cannot be evaluated here (e.g. a model from an incompatible release) gets
    NaN, which the gate treats as beaten, so a broken champion does not block every new model;
    the reason (one line, at most 300 characters) is returned for the run's notes.
    """
    from salesml import tracking

    info = tracking.reference_version(model_name, as_of)
    if info is None:
        return None, None, None
    try:
        loaded = tracking.load_version(model_name, info.version)
        return evaluate(loaded.model), info.version, None
    except Exception as exc:  # any failure means "no valid comparison", never a crash
        return math.nan, info.version, evaluation_problem(info.version, exc)


def evaluation_problem(version: str, exc: BaseException) -> str:
    """Why version `version` could not be evaluated, in one line of at most 300 characters."""
    reason = f"v{version} could not be evaluated ({type(exc).__name__}: {exc})"
    return reason.splitlines()[0][:300]
