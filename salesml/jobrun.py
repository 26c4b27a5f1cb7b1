"""The life of one batch job: a `runs` record, validated inputs, one write, a final status.

Every job (validate, train, score, forecast, backtest) goes through `job_run` so that each
leaves the same trace: a row in `runs` that ends `succeeded` or `failed` with a message, the
quarantined rows of its inputs, and outputs written in one transaction (or not at all).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from salesml.config import Settings


@dataclass
class JobRun:
    """Handle a job uses to read its inputs and write its outputs."""

    settings: Settings
    warehouse: Any  # salesml.warehouse.Warehouse (kept Any to avoid importing it at start-up)
    run_id: str
    flow: str
    as_of: datetime
    model_version: str | None = None
    row_counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def load(self, names: list[str]) -> dict[str, pl.DataFrame]:
        """Read and validate `names` as of `as_of` (see `validate`)."""
        from salesml.inputs import read_tables

        return self.validate(read_tables(self.settings, self.as_of, names))

    def validate(self, raw: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
        """Validate raw input frames; quarantined rows are written at once.

        Raises DataValidationError (after recording the quarantine) when a table's bad
        share is at or over the configured threshold.
        """
        from salesml.validation import DataValidationError, validate_tables

        try:
            tables, quarantine = validate_tables(raw, self.settings, self.as_of)
        except DataValidationError as exc:
            if exc.quarantine is not None and exc.quarantine.height:
                self.warehouse.write_quarantine(self.run_id, exc.quarantine)
            raise
        if quarantine.height:
            self.warehouse.write_quarantine(self.run_id, quarantine)
        self.row_counts["quarantine"] = self.row_counts.get("quarantine", 0) + quarantine.height
        for name, frame in tables.items():
            self.row_counts[f"input_{name}"] = frame.height
        return tables

    def write(self, frames: dict[str, pl.DataFrame]) -> None:
        """Write all `frames` in one transaction, replacing earlier rows of this as_of."""
        self.warehouse.write_batch(
            frames, as_of=self.as_of, run_id=self.run_id, model_version=self.model_version
        )
        for name, frame in frames.items():
            self.row_counts[name] = frame.height


@contextmanager
def job_run(
    settings: Settings, flow: str, as_of: datetime, params: dict[str, Any] | None = None
) -> Iterator[JobRun]:
    """Open a `runs` record for `flow` at `as_of`; close it as succeeded or failed."""
    from salesml.warehouse import Warehouse

    warehouse = Warehouse.from_settings(settings)
    run_id = warehouse.start_run(flow=flow, as_of=as_of, params=params)
    run = JobRun(settings=settings, warehouse=warehouse, run_id=run_id, flow=flow, as_of=as_of)
    try:
        yield run
    except BaseException as exc:
        message = f"{type(exc).__name__}: {exc}".splitlines()[0][:1000]
        warehouse.finish_run(
            run_id,
            status="failed",
            model_version=run.model_version,
            row_counts=run.row_counts,
            message=message,
        )
        raise
    warehouse.finish_run(
        run_id,
        status="succeeded",
        model_version=run.model_version,
        row_counts=run.row_counts,
        message="; ".join(run.notes) or None,
    )
