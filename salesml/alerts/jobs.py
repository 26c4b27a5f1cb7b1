"""The alerts step of a scoring or forecast run: evaluate, advance, write, deliver, record.

Outbox order: the advanced alerts are written (one committed transaction) before any notice
is sent; the confirmed sends are written in a second transaction. A crash between the two
leaves the notices unrecorded, so the next run sends them again with the same ids
(`salesml.alerts.delivery`); a failed send stays pending and is retried on the next run.

Warehouse interface used: `tables()`, `read("alerts")` and `write_batch({"alerts": frame},
as_of=..., run_id=...)`. The `alerts` key is `alert_key` alone, so a row written by an earlier
run is replaced in place (an upsert by key); a run writes only the rows it touched
(`state.rows_to_write`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import polars as pl

from salesml.alerts.delivery import RetryPolicy, channels, deliver
from salesml.alerts.rules import AlertFrames, evaluate_rules
from salesml.alerts.state import OPEN, RESOLVED, advance, conform, rows_to_write

if TYPE_CHECKING:
    from salesml.config import Settings
    from salesml.job_lifecycle import JobRun
    from salesml.warehouse import Warehouse

TABLE = "alerts"


@dataclass(frozen=True)
class AlertsOutcome:
    """What one run did to the alerts (counts), for the run record and the log."""

    opened: int
    still_open: int
    resolved: int
    written: int
    notices_pending: int


def read_alerts(warehouse: Warehouse) -> pl.DataFrame | None:
    """Every stored alert, or None before the first alerts run."""
    return warehouse.read(TABLE) if TABLE in warehouse.tables() else None


def process_alerts(
    settings: Settings,
    warehouse: Warehouse,
    frames: AlertFrames,
    as_of: datetime,
    run_id: str,
    *,
    environ: Mapping[str, str] | None = None,
    policy: RetryPolicy | None = None,
    clock: Callable[[], datetime] | None = None,
) -> AlertsOutcome:
    """Evaluate `settings.alerts.rules` on `frames` at `as_of`, advance the stored alerts, write
    them, then deliver their pending notices and record the deliveries.

    Channels are resolved first, so an unset secret variable stops the run before it writes
    (ConfigError naming the key). environ / policy / clock are for tests (defaults: os.environ,
    the config's retries with real sleeps, wall time in UTC).
    """
    config = settings.alerts
    to = channels(config, environ)
    previous = read_alerts(warehouse)
    evaluation = evaluate_rules(
        config.rules,
        frames,
        as_of,
        deal_rules=settings.deals.health.rules,
        demand=settings.demand,
        open_alerts=_open_alerts(previous),
    )
    alerts = advance(previous, evaluation.candidates, as_of, evaluation.evaluated)
    rows = rows_to_write(
        alerts,
        previous,
        as_of,
        evaluated=evaluation.evaluated,
        delivering=bool(to),
        notify_resolved=config.notify_resolved,
    )
    _write(warehouse, rows, as_of, run_id)  # committed before anything is sent
    if to:
        policy = policy or RetryPolicy(config.max_attempts, config.backoff_seconds)
        now = (clock or (lambda: datetime.now(UTC)))()
        sent = deliver(rows, to, now, policy=policy, notify_resolved=config.notify_resolved)
        if not sent.equals(rows):
            _write(warehouse, sent, as_of, run_id)
        rows = sent
    return _outcome(rows, as_of, config.notify_resolved, bool(to))


def _open_alerts(previous: pl.DataFrame | None) -> pl.DataFrame | None:
    """(rule_id, subject_id) of the alerts open before this run."""
    if previous is None:
        return None
    return conform(previous).filter(pl.col("status") == OPEN).select("rule_id", "subject_id")


def _write(warehouse: Warehouse, rows: pl.DataFrame, as_of: datetime, run_id: str) -> None:
    frame = rows.drop("as_of", "run_id", strict=False)
    warehouse.write_batch({TABLE: frame}, as_of=as_of, run_id=run_id)


def _outcome(
    rows: pl.DataFrame, as_of: datetime, notify_resolved: bool, delivering: bool
) -> AlertsOutcome:
    opened = rows.filter((pl.col("status") == OPEN) & (pl.col("first_seen_as_of") == as_of))
    still = rows.filter((pl.col("status") == OPEN) & (pl.col("first_seen_as_of") < as_of))
    resolved = rows.filter((pl.col("status") == RESOLVED) & (pl.col("resolved_at") == as_of))
    waiting = rows.filter(pl.col("delivered_at").is_null()).height
    if notify_resolved:
        waiting += rows.filter(
            (pl.col("status") == RESOLVED) & pl.col("resolved_delivered_at").is_null()
        ).height
    return AlertsOutcome(
        opened=opened.height,
        still_open=still.height,
        resolved=resolved.height,
        written=rows.height,
        notices_pending=waiting if delivering else 0,
    )


def after_write(run: JobRun, frames: AlertFrames) -> AlertsOutcome | None:
    """The alerts step of a scoring or forecast job, once its batch is committed: evaluate,
    advance, write and deliver (`process_alerts`) at the run's as_of, under its run_id.

    Never fails the job (its outputs are written): a failure, e.g. an unset secret variable or
    a warehouse that refuses the write, becomes a run note and None, and the next run evaluates
    the rules again; notices not delivered are a note too (retried next run). The alerts rows
    written are counted in the run's `row_counts`.
    """
    from salesml.errors import first_line

    args = (run.settings, run.warehouse, frames, run.as_of, run.run_id)
    try:
        outcome = run.step("alerts", process_alerts, *args)
    except Exception as exc:
        run.notes.append(f"alerts not processed: {first_line(exc)} (outputs written)")
        return None
    run.row_counts[TABLE] = outcome.written
    if outcome.notices_pending:
        run.notes.append(
            f"alerts: {outcome.notices_pending} notices not delivered yet (retried next run)"
        )
    return outcome
