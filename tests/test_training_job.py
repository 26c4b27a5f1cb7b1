"""The shared training skeleton (`salesml.training_job`): a reference version that cannot be
evaluated is recorded the same way for every model (NaN, a run note, the decision says so),
and the steps run in order around a real `runs` row (MLflow replaced by fakes)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from salesml import tracking, training_job
from salesml.config import from_dict
from salesml.job_lifecycle import JobRun
from salesml.warehouse import Warehouse

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
AS_OF = datetime(2025, 6, 1, tzinfo=UTC)
MODEL = "salesml-unit"


def _broken(model: Any) -> float:
    raise ValueError("incompatible release\nsecond line " + "x" * 500)


def _fake_registry(monkeypatch: pytest.MonkeyPatch, calls: list[str]) -> None:
    """A registry whose reference is v3 (loadable) and whose gate is `tracking.decide`."""
    info = tracking.VersionInfo(version="3", run_id="r3", as_of=AS_OF, eligible=True)
    monkeypatch.setattr(tracking, "configure", lambda settings: calls.append("configure"))
    monkeypatch.setattr(tracking, "reference_version", lambda name, as_of: info)
    monkeypatch.setattr(
        tracking, "load_version", lambda name, version: tracking.LoadedModel("old", version, "r3")
    )

    def register(**kwargs: Any) -> tracking.RegisteredVersion:
        calls.append(f"register {sorted(kwargs['artifacts'])} {kwargs['tags']}")
        return tracking.RegisteredVersion(kwargs["model_name"], "4", "mlflow-run-4")

    def promote(name: str, candidate: Any, **kw: Any) -> tracking.PromotionDecision:
        calls.append("gate")
        passed, reason = tracking.decide(
            kw["metric"], candidate.version, "3", kw["candidate_value"], kw["champion_value"], False
        )
        return tracking.PromotionDecision(
            passed, reason, name, candidate.version, kw["metric"], kw["candidate_value"],
            kw["champion_value"], "3", False,
        )  # fmt: skip

    monkeypatch.setattr(tracking, "log_and_register", register)
    monkeypatch.setattr(tracking, "promote_if_better", promote)


@dataclass
class UnitReport(training_job.TrainReport):
    rows: int


def test_no_reference_version_means_nothing_to_compare(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracking, "reference_version", lambda name, as_of: None)
    assert training_job.reference_value(MODEL, AS_OF, _broken) == (None, None, None)


def test_a_reference_that_fails_is_nan_with_a_one_line_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_registry(monkeypatch, [])
    value, version, problem = training_job.reference_value(MODEL, AS_OF, _broken)
    assert value is not None and math.isnan(value) and version == "3"
    assert problem is not None and "\n" not in problem and len(problem) <= 300
    assert problem.startswith("v3 could not be evaluated (ValueError: incompatible release")
    ok = training_job.reference_value(MODEL, AS_OF, lambda model: 0.25 if model == "old" else 0)
    assert ok == (0.25, "3", None)


def test_train_and_promote_records_a_failed_reference_in_notes_and_decision(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[str] = []
    _fake_registry(monkeypatch, calls)
    settings = from_dict(
        {
            "sources": {"path": str(SAMPLE)},
            "warehouse": {"url": f"duckdb:///{tmp_path / 'wh.duckdb'}"},
        }
    )

    def fit(run: JobRun, tables: dict[str, Any]) -> training_job.Candidate:
        calls.append(f"fit {sorted(tables)}")
        run.notes.append("fit note")
        return training_job.Candidate(
            model="new",
            gate_metric="loss",
            gate_value=0.5,
            higher_is_better=False,
            skill=None,
            evaluate=_broken,
            params={"as_of": AS_OF.isoformat()},
            log_metrics={"holdout_loss": 0.5},
            metrics={"loss": 0.5},
            write_artifacts=lambda folder: {"a.txt": str(folder / "a.txt")},
            input_example=None,
            run_name="unit",
            tags={"salesml.unit": "yes"},
            on_registered=lambda run, version: calls.append(
                f"registered v{version.version} as run model v{run.model_version}"
            ),
            extra={"rows": 12},
        )

    job = training_job.TrainingJob(MODEL, "train_unit", [], fit)
    done = training_job.train_and_promote(settings, AS_OF, job, UnitReport)
    assert calls == [
        "configure",
        "fit []",
        f"register ['a.txt'] {{'salesml.warehouse_run_id': '{done.run_id}', 'salesml.unit': 'yes'}}",
        "registered v4 as run model v4",
        "gate",
    ]
    assert isinstance(done, UnitReport) and done.rows == 12 and done.model_version == "4"
    assert done.gate_metric == "holdout_loss" and done.champion_version == "3"
    assert done.promoted and done.champion_value is not None and math.isnan(done.champion_value)
    assert done.decision == "champion v3 holdout_loss is NaN on this backtest"
    row = Warehouse.from_settings(settings).get_run(done.run_id)
    assert row is not None and row["status"] == "succeeded" and row["model_version"] == "4"
    message = str(row["message"])
    assert message.index("fit note") < message.index("v3 could not be evaluated")
    assert message.index("could not be evaluated") < message.index(done.decision)
