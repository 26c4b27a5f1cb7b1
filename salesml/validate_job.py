"""Jobs that are not about one model: validating the inputs.

Model jobs live beside their models (`salesml.deals.deal_win_jobs`, `salesml.demand.demand_jobs`); all of them
run inside `salesml.job_lifecycle.job_run`, so each leaves a `runs` record and its quarantine.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from salesml.config import Settings
from salesml.contract import INPUT_ORDER
from salesml.inputs import JOB_INPUTS, JOB_REQUIRED, check_some_job_can_run
from salesml.job_lifecycle import job_run


def validate_inputs(
    settings: Settings, as_of: datetime, names: list[str] | None = None, job: str | None = None
) -> dict[str, Any]:
    """Validate the input tables present as of `as_of`; quarantined rows go to the warehouse.

    job: "deal-win" or "demand": also require what that job needs (`inputs.JOB_INPUTS`: its
    first table present and with rows). Without a job, the tables present are checked and at
    least one job must be able to run. Absent and empty optional tables are fine; the summary
    lists them. Returns the rows kept per table and the quarantined rows.
    """
    if job is not None and job not in JOB_INPUTS:
        raise ValueError(f"unknown job '{job}'; known: {', '.join(JOB_INPUTS)}")
    required = [JOB_REQUIRED[job]] if job is not None else []
    wanted = names or list(INPUT_ORDER)
    with job_run(settings, flow="validate", as_of=as_of, params={"job": job}) as run:
        tables = run.load(wanted, required)
        ready = [job] if job is not None else check_some_job_can_run(tables, _where(settings))
        quarantined = run.row_counts.get("quarantine", 0)
        summary: dict[str, Any] = {
            "run_id": run.run_id,
            "as_of": as_of.isoformat(),
            "jobs": ", ".join(ready),
            "rows": {name: frame.height for name, frame in tables.items()},
            "quarantined_rows": quarantined,
            "warehouse": settings.warehouse.url,
        }
        absent = [n for n in wanted if n not in tables]
        if absent:
            summary["absent"] = ", ".join(absent)
    return summary


def _where(settings: Settings) -> str:
    """The source, in words, for an error message."""
    if settings.sources.path is not None:
        return f"sources.path {settings.sources.path}"
    return "the sources.url database"
