"""Alert lifecycle: open once, stay open while the condition holds, resolve when it stops.

Pure functions over polars frames. An alert's identity is (rule_id, kind, subject_type,
subject_id); its key (`alert_key`) is a hash of that identity and the occurrence number, never
of the message or of as_of, so hourly runs update one row instead of piling up duplicates.

Re-opening (decided): once resolved, an alert row stays resolved for good. If the condition
comes back later, that is a new occurrence (occurrence + 1) with its own key and its own
notices, and the resolved row keeps the history of the first one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from datetime import datetime

import polars as pl

from salesml.contract import row_dtypes
from salesml.timeutil import DATETIME

ALERT_SCHEMA: dict[str, pl.DataType] = row_dtypes("alerts")
"""The contract's `alerts` columns without the lineage (as_of, run_id) the warehouse stamps."""

IDENTITY = ["rule_id", "kind", "subject_type", "subject_id"]
"""What one alert is about; with `occurrence` it makes the key."""

OPEN, RESOLVED = "open", "resolved"


def alert_key(rule_id: str, kind: str, subject_type: str, subject_id: str, occurrence: int) -> str:
    """Stable key of one occurrence: sha256 of the identity and occurrence, 24 hex digits.

    hashlib rather than polars' `hash`, which may change between polars versions.
    """
    text = "\x1f".join([rule_id, kind, subject_type, subject_id, str(occurrence)])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _keys(identity_and_occurrence: pl.Series) -> pl.Series:
    """alert_key over a struct Series of (rule_id, kind, subject_type, subject_id, occurrence):
    only the newly opened alerts of a run are hashed, a handful per run.
    """
    values = [alert_key(**row) for row in identity_and_occurrence.to_list()]
    return pl.Series(values, dtype=pl.String)


def conform(previous: pl.DataFrame | None) -> pl.DataFrame:
    """The stored alerts in `ALERT_SCHEMA` (lineage dropped, columns an older table lacks null)."""
    if previous is None or previous.height == 0:
        return pl.DataFrame(schema=ALERT_SCHEMA)
    return previous.select(
        pl.col(c).cast(d) if c in previous.columns else pl.lit(None, d).alias(c)
        for c, d in ALERT_SCHEMA.items()
    )


def advance(
    previous: pl.DataFrame | None,
    candidates: pl.DataFrame,
    as_of: datetime,
    evaluated: Collection[str] | None = None,
) -> pl.DataFrame:
    """The alerts after the run at `as_of` (every row, `ALERT_SCHEMA`).

    previous: the stored alerts; candidates: `rules.Evaluation.candidates`; evaluated: ids of
    the rules this run could evaluate (None: all). An open alert whose rule was not evaluated is
    left as it is: no evidence is not evidence that the condition stopped. Running the same
    as_of twice gives the same rows (idempotent). Raises ValueError for an as_of before the
    last run that touched the alerts (the lifecycle only moves forward).
    """
    prev = conform(previous)
    latest = prev.select(pl.max_horizontal(pl.col("last_seen_as_of"), pl.col("resolved_at")).max())
    last = latest.item()
    if last is not None and as_of < last:
        raise ValueError(
            f"alerts: as_of {as_of.isoformat()} is before the last alert run "
            f"{last.isoformat()}; alerts only advance forward in time"
        )
    rule_scope = pl.lit(True) if evaluated is None else pl.col("rule_id").is_in(list(evaluated))
    live = (pl.col("status") == OPEN) & rule_scope
    open_prev, untouched = prev.filter(live), prev.filter(~live)
    current = candidates.unique(IDENTITY, keep="first").select(
        *IDENTITY, pl.col("severity").alias("_severity"), pl.col("message").alias("_message")
    )
    return pl.concat(
        [untouched, _carry(open_prev, current, as_of), _opened(prev, open_prev, current, as_of)]
    ).sort("first_seen_as_of", "alert_key")


def _carry(open_prev: pl.DataFrame, current: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    """Open alerts: kept (last seen now, message and severity refreshed) or resolved now."""
    holds = pl.col("_message").is_not_null()
    at = pl.lit(as_of, DATETIME)
    return (
        open_prev.join(current, on=IDENTITY, how="left")
        .with_columns(
            last_seen_as_of=pl.when(holds).then(at).otherwise(pl.col("last_seen_as_of")),
            message=pl.coalesce("_message", "message"),
            severity=pl.coalesce("_severity", "severity"),
            status=pl.when(holds).then(pl.lit(OPEN)).otherwise(pl.lit(RESOLVED)),
            resolved_at=pl.when(holds).then(pl.lit(None, DATETIME)).otherwise(at),
        )
        .select(list(ALERT_SCHEMA))
    )


def _opened(
    prev: pl.DataFrame, open_prev: pl.DataFrame, current: pl.DataFrame, as_of: datetime
) -> pl.DataFrame:
    """Conditions with no open alert: a new occurrence (1, or one after the last resolved)."""
    fresh = current.join(open_prev.select(IDENTITY), on=IDENTITY, how="anti")
    seen = prev.group_by(IDENTITY).agg(pl.col("occurrence").max().alias("_last"))
    at = pl.lit(as_of, DATETIME)
    rows = fresh.join(seen, on=IDENTITY, how="left").with_columns(
        occurrence=(pl.col("_last").fill_null(0) + 1).cast(pl.Int64)
    )
    keys = pl.struct(*IDENTITY, "occurrence").map_batches(_keys, return_dtype=pl.String)
    made = rows.select(
        keys.alias("alert_key"),
        *IDENTITY,
        "occurrence",
        pl.col("_severity").alias("severity"),
        pl.col("_message").alias("message"),
        at.alias("first_seen_as_of"),
        at.alias("last_seen_as_of"),
        pl.lit(OPEN).alias("status"),
        pl.lit(0, pl.Int64).alias("attempts"),
    )
    return made.select(
        pl.col(c).cast(d) if c in made.columns else pl.lit(None, d).alias(c)
        for c, d in ALERT_SCHEMA.items()
    )


def pending(notify_resolved: bool = True) -> tuple[pl.Expr, pl.Expr]:
    """(opening notice pending, resolution notice pending) as expressions over alert rows."""
    opening = pl.col("delivered_at").is_null()
    resolution = (
        (pl.col("status") == RESOLVED) & pl.col("resolved_delivered_at").is_null()
        if notify_resolved
        else pl.lit(False)
    )
    return opening, resolution


def rows_to_write(
    alerts: pl.DataFrame,
    previous: pl.DataFrame | None,
    as_of: datetime,
    *,
    evaluated: Collection[str] | None = None,
    delivering: bool = True,
    notify_resolved: bool = True,
) -> pl.DataFrame:
    """The rows a run at `as_of` writes: open ones, those resolved now, those with a notice
    still to deliver (when a channel is configured), and any an earlier attempt at this as_of
    wrote (the warehouse replaces the rows of one as_of, so a re-run must write them again).
    Resolved rows of earlier runs with nothing to send are left alone: the table is not
    rewritten every hour. Only rows of the `evaluated` rules (None: all) are chosen: a run
    writes what it decided, never a stale copy of what another flow's run owns.
    """
    opening, resolution = pending(notify_resolved)
    chosen = (pl.col("status") == OPEN) | (pl.col("resolved_at") == as_of)
    if delivering:
        chosen = chosen | opening | resolution
    if evaluated is not None:
        chosen = chosen & pl.col("rule_id").is_in(list(evaluated))
    same_as_of: list[str] = []
    if previous is not None and "as_of" in previous.columns:
        same_as_of = previous.filter(pl.col("as_of") == as_of)["alert_key"].to_list()
    return alerts.filter(chosen | pl.col("alert_key").is_in(same_as_of))
