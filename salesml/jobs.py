"""Jobs that are not about one model: validating the inputs.

Model jobs live beside their models (`salesml.deals.jobs`, `salesml.demand.jobs`); all of them
run inside `salesml.jobrun.job_run`, so each leaves a `runs` record and its quarantine.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from salesml.config import Settings
from salesml.contract import INPUT_ORDER
from salesml.jobrun import job_run


def validate_inputs(
    settings: Settings, as_of: datetime, names: list[str] | None = None
) -> dict[str, Any]:
    """Validate every input table as of `as_of`; quarantined rows go to the warehouse.

    Returns the rows kept per table and the quarantined rows per table and check.
    """
    with job_run(settings, flow="validate", as_of=as_of) as run:
        tables = run.load(names or list(INPUT_ORDER))
        quarantined = run.row_counts.get("quarantine", 0)
        summary: dict[str, Any] = {
            "run_id": run.run_id,
            "as_of": as_of.isoformat(),
            "rows": {name: frame.height for name, frame in tables.items()},
            "quarantined_rows": quarantined,
            "warehouse": settings.warehouse.url,
        }
    return summary
