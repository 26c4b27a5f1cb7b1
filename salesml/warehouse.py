"""The warehouse: SPEC "Output tables" on a DuckDB file (default) or PostgreSQL (by URL).

Contract:
- `write_batch` is idempotent per (table, as_of): one transaction deletes every row of that
  `as_of` and inserts the new frame, for all tables of the batch at once. Running a job twice
  leaves exactly one row per key and no stale rows; any failure rolls the whole batch back, so
  the previous rows stay intact. Frames are checked (output schema, key present / not null /
  unique, tz-aware datetimes) before the transaction opens.
- The contract drives the layout: a table it declares is created on first write with exactly
  its columns and a PRIMARY KEY on its key (`salesml.migrations.contract_ddl`), and a frame with
  a column it does not declare is refused in one line naming table and column. A stored
  warehouse is brought to the layout by versioned steps (`salesml.migrations`), applied in one
  transaction the first time a `Warehouse` opens it. A table the contract does not declare (a
  notebook's own) is created from its first frame's dtypes and keeps those columns.
- A table whose key lacks `as_of` (alerts, keyed by alert_key) is upserted by key when written
  without a scope: rows with the frame's keys are replaced, every other row is kept.
- Datetimes are stored as TIMESTAMPTZ and read back as `pl.Datetime("us", "UTC")`; reads return
  the contract's dtypes (an Enum written to an any-dtype column such as `stage` reads back as
  String). List and struct columns of undeclared tables are stored as JSON text.
- Connections live for one operation. DuckDB lets one process at a time hold the file (even a
  reader blocks a writer), so opening retries with backoff for `lock_timeout_seconds`, then fails
  with a one-line `WarehouseLockedError`. PostgreSQL writers serialise on a transaction-level
  advisory lock per schema, waiting at most as long. A file that cannot be opened or created
  (unwritable folder, not a DuckDB file) is a one-line `WarehouseError` naming it.
- `runs` rows record the process that owns them (host, pid, process start) and a heartbeat.
  Starting a run first marks `abandoned` every `running` row whose process is gone (same host:
  pid not alive, or reused by another process) or whose heartbeat is older than the timeout
  (another host), so a killed run never blocks the next one for long.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

import polars as pl

from salesml.errors import first_line
from salesml.jsonutil import json_text
from salesml.secrets import redact
from salesml.sqlutil import quote_identifier as _q
from salesml.timeutil import DATETIME
from salesml.urls import POSTGRES_DIALECTS, dialect, duckdb_path, postgres_uri, split_url

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from salesml.config import Settings

RUNS = "runs"
QUARANTINE = "quarantine"
_STAGED = "_salesml_staged"  # the frame being written, as a registered view / temp table


_TABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
_INTERNAL = "_salesml"  # prefix of bookkeeping tables (schema versions)


class WarehouseError(RuntimeError):
    """A write or read the warehouse refused; the message is one line naming the problem."""


class WarehouseLockedError(WarehouseError):
    """Another salesml run held the warehouse for longer than `lock_timeout_seconds`."""


class RunConflictError(WarehouseError):
    """A run of the same flow and as_of is still running (see `Warehouse.open_run`);
    `abandoned` lists the dead runs the refused start marked on its way.
    """

    abandoned: list[AbandonedRun] = []  # noqa: RUF012 - replaced per instance, never mutated


# ---------------------------------------------------------------------------------------------
# Public API


class Warehouse:
    """Output tables of one warehouse URL; every method opens and closes its own connection."""

    def __init__(self, url: str, lock_timeout_seconds: float = 60.0) -> None:
        self.url = url
        self.lock_timeout_seconds = lock_timeout_seconds
        self._backend = _backend_for(url)
        self._current = False  # the stored schema version is known to be the latest

    @classmethod
    def from_settings(cls, settings: Settings) -> Warehouse:
        """The warehouse of `settings.warehouse` (URL and lock timeout)."""
        return cls(
            settings.warehouse.url, lock_timeout_seconds=settings.warehouse.lock_timeout_seconds
        )

    def __repr__(self) -> str:
        return f"Warehouse({self._backend.display!r})"

    # -- runs ------------------------------------------------------------------------------

    def start_run(
        self,
        flow: str,
        as_of: datetime,
        params: Mapping[str, Any] | None = None,
        **policy: Any,
    ) -> str:
        """Insert a 'running' row in `runs` and return its run_id (see `open_run`)."""
        return self.open_run(flow, as_of, params, **policy).run_id

    def open_run(
        self,
        flow: str,
        as_of: datetime,
        params: Mapping[str, Any] | None = None,
        *,
        exclusive: bool = False,
        heartbeat_timeout_seconds: float | None = None,
        stale_after_seconds: float | None = None,
    ) -> OpenedRun:
        """Mark dead runs abandoned, then insert a 'running' row owned by this process.

        Dead runs (see `why_dead`): same host and the process is gone; another host and no
        heartbeat for `heartbeat_timeout_seconds`; no heartbeat at all (a row of an older
        salesml) and started more than `stale_after_seconds` ago. exclusive: refuse with
        RunConflictError while a live run of the same flow and as_of is 'running'. The sweep,
        the check and the insert share the writer lock, so two racing starts cannot both pass;
        the sweep is committed even when the start is refused.
        `params` are stored as JSON with secrets redacted.
        """
        run_id = uuid.uuid4().hex
        now = datetime.now(UTC)
        as_of = _utc(as_of)
        owner = current_owner()
        text = json.dumps(dict(params or {}), sort_keys=True, default=str)
        row = {
            "run_id": run_id,
            "flow": flow,
            "as_of": as_of,
            "started_at": now,
            "status": "running",
            "params": redact(text),
            "host": owner.host,
            "pid": owner.pid,
            "process_start": owner.process_start,
            "heartbeat_at": now,
        }
        frame = pl.DataFrame([row], schema=_runs_schema())
        with self._transaction() as session:
            _ensure_table(session, RUNS, frame.schema)
            abandoned = _sweep(
                session,
                owner,
                now,
                f"by a {flow} run starting as pid {owner.pid} on {owner.host}",
                heartbeat_timeout_seconds=heartbeat_timeout_seconds,
                stale_after_seconds=stale_after_seconds,
            )
            conflict = _live_run(session, flow, as_of) if exclusive else None
            if conflict is None:
                self._replace(session, RUNS, frame, key=["run_id"], scope=None)
        if conflict is not None:  # raised after the commit: the sweep's marks are kept
            error = RunConflictError(conflict)
            error.abandoned = abandoned
            raise error
        return OpenedRun(run_id, abandoned)

    def heartbeat(self, run_id: str) -> str:
        """Refresh `heartbeat_at` of a running run; returns the run's status (a run someone
        marked 'abandoned' meanwhile is left as it is).
        """
        with self._transaction() as session:
            status = _run_status(session, run_id, self._backend.display)
            if status == "running":
                session.execute(
                    f"UPDATE {_q(RUNS)} SET heartbeat_at = $1 WHERE run_id = $2",
                    [datetime.now(UTC), run_id],
                )
        return status

    def finish_run(
        self,
        run_id: str,
        status: str,
        model_version: str | None = None,
        row_counts: Mapping[str, int] | None = None,
        message: str | None = None,
    ) -> None:
        """Close a run: status 'succeeded' or 'failed'; None arguments keep what is stored.

        The message is stored with secrets redacted. A run another run marked 'abandoned'
        while it was alive still gets its final status; its message says it had been marked.
        """
        if status not in ("succeeded", "failed"):
            raise ValueError(f"run status must be 'succeeded' or 'failed', not {status!r}")
        counts = None if row_counts is None else json.dumps(dict(row_counts), sort_keys=True)
        with self._transaction() as session:
            _ensure_table(session, RUNS, _runs_schema())
            found = session.fetch(
                f"SELECT status, message FROM {_q(RUNS)} WHERE run_id = $1", [run_id]
            )
            if found.height == 0:
                raise WarehouseError(f"unknown run_id {run_id!r} in {self._backend.display}")
            if found["status"][0] == "abandoned":
                earlier = found["message"][0] or "marked abandoned"
                message = f"{message or status} (it had been marked abandoned: {earlier})"
            session.execute(
                f"UPDATE {_q(RUNS)} SET finished_at = $1, status = $2, "
                "model_version = COALESCE($3, model_version), "
                "row_counts = COALESCE($4, row_counts), message = COALESCE($5, message) "
                "WHERE run_id = $6",
                [
                    datetime.now(UTC),
                    status,
                    model_version,
                    counts,
                    None if message is None else redact(message),
                    run_id,
                ],
            )

    def abandon_run(self, run_id: str, reason: str) -> AbandonedRun:
        """Mark a 'running' run abandoned (e.g. `salesml runs abandon`); refuses any other."""
        with self._transaction() as session:
            _ensure_table(session, RUNS, _runs_schema())
            found = session.fetch(
                f"SELECT run_id, flow, as_of, status FROM {_q(RUNS)} WHERE run_id = $1", [run_id]
            )
            if found.height == 0:
                raise WarehouseError(f"unknown run_id {run_id!r} in {self._backend.display}")
            if found["status"][0] != "running":
                raise WarehouseError(
                    f"run {run_id} is {found['status'][0]}, not running: nothing to abandon"
                )
            as_of = _restore(found, {"as_of": DATETIME})["as_of"][0]
            _mark_abandoned(session, run_id, datetime.now(UTC), reason)
        return AbandonedRun(run_id, str(found["flow"][0]), as_of, reason)

    def abandoned_to_reconcile(self, flow: str) -> list[str]:
        """Run ids of `flow` marked abandoned whose leftovers were not reconciled yet."""
        if not self._backend.exists():
            return []
        with self._session(write=False) as session:
            if not session.has_table(RUNS):
                return []
            found = session.fetch(
                f"SELECT run_id FROM {_q(RUNS)} WHERE flow = $1 AND status = 'abandoned' "
                "AND reconciled_at IS NULL ORDER BY started_at",
                [flow],
            )
        return [str(r) for r in found["run_id"]]

    def mark_reconciled(self, run_id: str, message: str, model_version: str | None) -> None:
        """Record what reconciling an abandoned run did (appended to its message)."""
        with self._transaction() as session:
            found = session.fetch(f"SELECT message FROM {_q(RUNS)} WHERE run_id = $1", [run_id])
            if found.height == 0:
                raise WarehouseError(f"unknown run_id {run_id!r} in {self._backend.display}")
            earlier = found["message"][0]
            text = redact(f"{earlier}; {message}" if earlier else message)
            session.execute(
                f"UPDATE {_q(RUNS)} SET reconciled_at = $1, message = $2, "
                "model_version = COALESCE($3, model_version) WHERE run_id = $4",
                [datetime.now(UTC), text, model_version, run_id],
            )

    def list_runs(
        self, flow: str | None = None, status: str | None = None, limit: int = 20
    ) -> pl.DataFrame:
        """The latest `limit` runs (newest first), optionally of one flow and/or status."""
        runs_schema = _runs_schema()
        empty = pl.DataFrame(schema=runs_schema)
        if not self._backend.exists():
            return empty
        where, params = [], []
        for column, value in (("flow", flow), ("status", status)):
            if value is not None:
                params.append(value)
                where.append(f"{column} = ${len(params)}")
        sql = f"SELECT * FROM {_q(RUNS)}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY started_at DESC LIMIT {max(0, int(limit))}"
        with self._session(write=False) as session:
            if not session.has_table(RUNS):
                return empty
            raw = session.fetch(sql, params)
        found = _restore(raw, runs_schema)
        missing = [
            pl.lit(None, d).alias(c) for c, d in runs_schema.items() if c not in found.columns
        ]
        return found.with_columns(missing) if missing else found

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """The `runs` row of `run_id` as a dict, or None when there is no such run."""
        if not self._backend.exists():
            return None
        with self._session(write=False) as session:
            if not session.has_table(RUNS):
                return None
            raw = session.fetch(f"SELECT * FROM {_q(RUNS)} WHERE run_id = $1", [run_id])
        found = _restore(raw, _runs_schema())
        return found.row(0, named=True) if found.height else None

    def count_rows(self, table: str, as_of: datetime) -> int:
        """Rows of `table` at `as_of` (0 when the warehouse or the table does not exist)."""
        _check_table_name(table)
        if not self._backend.exists():
            return 0
        with self._session(write=False) as session:
            if not session.has_table(table):
                return 0
            found = session.fetch(
                f"SELECT count(*) AS n FROM {_q(table)} WHERE as_of = $1", [_utc(as_of)]
            )
        return int(found["n"][0])

    # -- writes ------------------------------------------------------------------------------

    def write_batch(
        self,
        frames: Mapping[str, pl.DataFrame],
        *,
        as_of: datetime,
        run_id: str,
        model_version: str | None = None,
        scopes: Mapping[str, Mapping[str, str]] | None = None,
    ) -> dict[str, int]:
        """Replace each table's rows for `as_of` by its frame, all tables in one transaction.

        A frame without `as_of` gets it; one with `as_of` must hold only this value. A frame
        without `run_id` (or `model_version`, when given) gets it stamped. Returns rows per table.

        `scopes` narrows what a table's frame replaces: {table: {column: value}} replaces only
        the rows of this as_of whose columns hold those values (e.g. one scenario of
        demand_forecast, one model's rows of model_quality), so writers that share a table and
        an as_of never delete each other's rows. The frame gets the values stamped where it
        lacks the column and must hold only them where it has it. A table whose key lacks
        `as_of` (alerts) written without a scope is upserted by key: nothing else is deleted.
        """
        as_of = _utc(as_of)
        stamps = {"run_id": run_id, "model_version": model_version}
        scopes = scopes or {}
        prepared = [
            self._prepare(table, _scoped(table, frame, scopes.get(table, {})), as_of, stamps)
            for table, frame in frames.items()
        ]
        with self._transaction() as session:
            for item in prepared:
                stored = _ensure_table(session, item.table, item.frame.schema)
                frame = _conform(item.table, item.frame, stored)
                scope = _write_scope(item.key, as_of, scopes.get(item.table, {}))
                self._replace(session, item.table, frame, key=item.key, scope=scope)
        return {item.table: item.frame.height for item in prepared}

    def write_quarantine(self, run_id: str, frame: pl.DataFrame) -> int:
        """Replace the quarantined rows of `run_id` by `frame` (table_name, row, check, reason).

        `as_of` is taken from the run's row in `runs` when the frame does not carry it.
        """
        required = _quarantine_columns()
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise WarehouseError(f"quarantine frame lacks columns {missing}")
        frame = _validate_output(
            QUARANTINE, _normalize(QUARANTINE, frame.drop("run_id", strict=False))
        )
        with self._transaction() as session:
            if "as_of" not in frame.columns:
                frame = frame.with_columns(as_of=_run_as_of(session, run_id))
            frame = frame.select(
                pl.lit(run_id, pl.String).alias("run_id"),
                "as_of",
                *required,
                pl.exclude("as_of", *required),
            )
            stored = _ensure_table(session, QUARANTINE, frame.schema)
            frame = _conform(QUARANTINE, frame, stored)
            self._replace(session, QUARANTINE, frame, key=None, scope={"run_id": run_id})
        return frame.height

    # -- reads -------------------------------------------------------------------------------

    def read(self, table: str, as_of: datetime | None = None) -> pl.DataFrame:
        """Rows of `table` (all, or those of one `as_of`), sorted by key, with the written dtypes."""
        _check_table_name(table)
        with self._session(write=False) as session:
            if table.startswith(_INTERNAL) or not session.has_table(table):
                raise WarehouseError(f"warehouse {self._backend.display} has no table {table!r}")
            sql, params = f"SELECT * FROM {_q(table)}", []
            if as_of is not None:
                sql, params = f"{sql} WHERE as_of = $1", [_utc(as_of)]
            order = _key_for(table) or (["run_id"] if table == QUARANTINE else [])
            if order:
                sql += " ORDER BY " + ", ".join(_q(c) for c in order)
            raw = session.fetch(sql, params)
        return _restore(raw, _declared_dtypes(table))

    def tables(self) -> list[str]:
        """Output tables present (internal bookkeeping tables excluded), sorted."""
        if not self._backend.exists():
            return []
        with self._session(write=False) as session:
            found = session.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_type = "
                "'BASE TABLE' AND table_schema = current_schema() "
                "AND table_catalog = current_database()"
            )
        return sorted(str(t) for t in found["table_name"] if not str(t).startswith(_INTERNAL))

    def latest_as_of(self, table: str) -> datetime | None:
        """The most recent `as_of` written to `table`, or None when it is absent or empty."""
        _check_table_name(table)
        if not self._backend.exists():
            return None
        with self._session(write=False) as session:
            if not session.has_table(table):
                return None
            out = session.fetch(f"SELECT max(as_of) AS latest FROM {_q(table)}")
        value = _restore(out, {"latest": DATETIME})["latest"][0]
        return value if isinstance(value, datetime) else None

    # -- internals ---------------------------------------------------------------------------

    def _session(self, *, write: bool) -> AbstractContextManager[_Session]:
        if write:
            return self._transaction()
        if not self._backend.exists():
            raise WarehouseError(f"warehouse {self._backend.display} does not exist yet")
        if not self._current:
            with self._backend.session(write=False, timeout=self.lock_timeout_seconds) as s:
                behind = _migrations().schema_version(s) < _migrations().LATEST
            if behind:  # a warehouse of an older salesml: upgrade it before reading
                with self._transaction():
                    pass
            self._current = True
        return self._backend.session(write=False, timeout=self.lock_timeout_seconds)

    @contextmanager
    def _transaction(self) -> Iterator[_Session]:
        """A write session: one transaction, committed on success, rolled back on any error.
        The first one of this Warehouse applies the pending schema migrations in it.
        """
        with self._backend.session(write=True, timeout=self.lock_timeout_seconds) as session:
            if not self._current:
                try:
                    _migrations().upgrade(session, self._backend.display)
                except _migrations().MigrationError as exc:
                    raise WarehouseError(f"warehouse {self._backend.display}: {exc}") from None
            yield session
        self._current = True

    def _replace(
        self,
        session: _Session,
        table: str,
        frame: pl.DataFrame,
        *,
        key: list[str] | None,
        scope: Mapping[str, Any] | None,
    ) -> None:
        """Make `frame` the rows of `table` where every `scope` column = its value, in the open
        transaction.

        Rows of the scope not in `frame` are deleted and the frame's rows inserted; `frame`
        carries every column of the table (absent ones as nulls), so a kept key is fully
        replaced. Tests patch this method to inject a failure part-way through a batch.
        """
        session.stage(_to_storage(frame))
        columns = ", ".join(_q(c) for c in frame.columns)
        upsert = bool(key) and session.upsert
        if scope:
            where = " AND ".join(f"{_q(c)} = ${i}" for i, c in enumerate(scope, start=1))
            sql = f"DELETE FROM {_q(table)} WHERE {where}"
            if key and upsert:
                same = " AND ".join(f"s.{_q(k)} = {_q(table)}.{_q(k)}" for k in key)
                sql += f" AND NOT EXISTS (SELECT 1 FROM {_STAGED} AS s WHERE {same})"
            session.execute(sql, list(scope.values()))
        elif key and not upsert:  # an upsert by key without ON CONFLICT: delete, then insert
            same = " AND ".join(f"s.{_q(k)} = {_q(table)}.{_q(k)}" for k in key)
            session.execute(
                f"DELETE FROM {_q(table)} WHERE EXISTS (SELECT 1 FROM {_STAGED} AS s WHERE {same})"
            )
        sql = f"INSERT INTO {_q(table)} ({columns}) SELECT {columns} FROM {_STAGED}"
        if key and upsert:
            updates = [f"{_q(c)} = EXCLUDED.{_q(c)}" for c in frame.columns if c not in key]
            action = f"UPDATE SET {', '.join(updates)}" if updates else "NOTHING"
            sql += f" ON CONFLICT ({', '.join(_q(k) for k in key)}) DO {action}"
        session.execute(sql)
        session.unstage()

    def _prepare(
        self, table: str, frame: pl.DataFrame, as_of: datetime, stamps: Mapping[str, str | None]
    ) -> _Prepared:
        _check_table_name(table)
        if table in (RUNS, QUARANTINE):
            raise WarehouseError(f"{table!r} is written by start_run/finish_run/write_quarantine")
        if "as_of" in frame.columns:
            frame = _normalize(table, frame)
            wrong = frame.filter(pl.col("as_of") != as_of).height + frame["as_of"].null_count()
            if wrong:
                raise WarehouseError(
                    f"{table}: {wrong} rows have an as_of other than {as_of.isoformat()}"
                )
        else:
            frame = _normalize(table, frame.with_columns(as_of=pl.lit(as_of, DATETIME)))
        frame = _validate_output(table, frame)
        key = _key_for(table)
        if key:
            _check_key(table, frame, key)
        declared = _declared_dtypes(table)
        frame = frame.with_columns(
            pl.lit(value, pl.String).alias(name)
            for name, value in stamps.items()
            if value is not None
            and name not in frame.columns
            and (not declared or name in declared)
        )
        return _Prepared(table, frame, key)


def _ensure_table(
    session: _Session, table: str, schema: pl.Schema | Mapping[str, pl.DataType]
) -> dict[str, pl.DataType]:
    """Create `table` when absent and return the dtype of each stored column.

    A contract table is created with the contract's columns and key, and a stored one must
    have exactly them (the migrations saw to it; otherwise a one-line error names what
    differs). A table the contract does not declare is created from the frame's `schema`, and
    later frames may carry only its columns.
    """
    declared = _declared_dtypes(table)
    migrations = _migrations()
    if not session.has_table(table):
        columns = declared or dict(schema)
        try:
            ddl = migrations.create_table_sql(table, columns, _key_for(table))
        except migrations.MigrationError as exc:
            raise WarehouseError(str(exc)) from None
        session.execute(ddl)
        return columns
    stored = session.fetch(f"SELECT * FROM {_q(table)} LIMIT 0").schema
    if declared:
        problem = migrations.layout_problem(table, list(stored))
        if problem:
            raise WarehouseError(
                f"warehouse table {problem}: it does not match the contract and no migration "
                "step upgrades it"
            )
        return declared
    extra = [c for c in schema if c not in stored]
    if extra:
        raise WarehouseError(
            f"{table} has no column {extra[0]!r}; a table the contract does not declare keeps "
            "the columns of its first write"
        )
    return dict(stored)


def _write_scope(
    key: list[str] | None, as_of: datetime, scope: Mapping[str, str]
) -> dict[str, Any] | None:
    """The rows a write replaces: those of its as_of (and scope); None for an upsert by key
    (a table whose key lacks as_of, written without a scope).
    """
    if key and "as_of" not in key and not scope:
        return None
    return {"as_of": as_of, **scope}


def _run_as_of(session: _Session, run_id: str) -> pl.Expr:
    """The as_of of a run as a literal (null when the run is unknown)."""
    if not session.has_table(RUNS):
        return pl.lit(None, DATETIME)
    found = session.fetch(f"SELECT as_of FROM {_q(RUNS)} WHERE run_id = $1", [run_id])
    if found.height == 0:
        return pl.lit(None, DATETIME)
    return pl.lit(_restore(found, {"as_of": DATETIME})["as_of"][0], DATETIME)


def _live_run(session: _Session, flow: str, as_of: datetime) -> str | None:
    """Why a run of `flow` at `as_of` cannot start now: one is still 'running' (the caller
    swept dead runs first, so what is left is alive or not yet known to be dead).
    """
    live = session.fetch(
        f"SELECT run_id, started_at, host, pid FROM {_q(RUNS)} WHERE flow = $1 AND as_of = $2 "
        "AND status = 'running' ORDER BY started_at LIMIT 1",
        [flow, as_of],
    )
    if live.height:
        row = _restore(live, {"started_at": DATETIME}).row(0, named=True)
        where = f", pid {row['pid']} on {row['host']}" if row["host"] else ""
        return (
            f"{flow} for as_of {as_of.isoformat()} is already running "
            f"(run_id {row['run_id']}, started {row['started_at']:%Y-%m-%d %H:%M:%S} UTC{where})"
        )
    return None


def _run_status(session: _Session, run_id: str, display: str) -> str:
    found = session.fetch(f"SELECT status FROM {_q(RUNS)} WHERE run_id = $1", [run_id])
    if found.height == 0:
        raise WarehouseError(f"unknown run_id {run_id!r} in {display}")
    return str(found["status"][0])


def _mark_abandoned(session: _Session, run_id: str, now: datetime, reason: str) -> None:
    session.execute(
        f"UPDATE {_q(RUNS)} SET status = 'abandoned', finished_at = $1, message = $2 "
        "WHERE run_id = $3 AND status = 'running'",
        [now, redact(reason), run_id],
    )


def _sweep(
    session: _Session,
    owner: RunOwner,
    now: datetime,
    by: str,
    *,
    heartbeat_timeout_seconds: float | None,
    stale_after_seconds: float | None,
) -> list[AbandonedRun]:
    """Mark every dead 'running' run abandoned (see `why_dead`); returns what was marked."""
    running = session.fetch(
        "SELECT run_id, flow, as_of, started_at, host, pid, process_start, heartbeat_at "
        f"FROM {_q(RUNS)} WHERE status = 'running'"
    )
    if running.height == 0:
        return []
    running = _restore(
        running, {"as_of": DATETIME, "started_at": DATETIME, "heartbeat_at": DATETIME}
    )
    marked = []
    for row in running.iter_rows(named=True):
        reason = why_dead(
            row,
            owner,
            now,
            heartbeat_timeout_seconds=heartbeat_timeout_seconds,
            stale_after_seconds=stale_after_seconds,
        )
        if reason is not None:
            _mark_abandoned(session, row["run_id"], now, f"abandoned: {reason}; marked {by}")
            marked.append(AbandonedRun(row["run_id"], row["flow"], row["as_of"], reason))
    return marked


# ---------------------------------------------------------------------------------------------
# Who owns a run: host, process and its start; is that process still there?


@dataclass(frozen=True)
class RunOwner:
    """The process running a job. `process_start` tells a reused pid from the original
    process (Linux: start time in clock ticks since boot; None where that is unknown).
    """

    host: str
    pid: int
    process_start: str | None


@dataclass(frozen=True)
class OpenedRun:
    """A run just started, and the dead runs its start marked abandoned."""

    run_id: str
    abandoned: list[AbandonedRun]


@dataclass(frozen=True)
class AbandonedRun:
    """A run marked 'abandoned' and why (one line)."""

    run_id: str
    flow: str
    as_of: datetime
    reason: str

    def describe(self) -> str:
        """One line: which run was abandoned and why."""
        return f"run {self.run_id} ({self.flow}, as_of {self.as_of.isoformat()}): {self.reason}"


def current_owner() -> RunOwner:
    """The current process as the owner of the runs it starts."""
    pid = os.getpid()
    stat = _proc_stat(pid)
    return RunOwner(socket.gethostname(), pid, None if stat is None else stat[1])


def why_dead(
    row: Mapping[str, Any],
    owner: RunOwner,
    now: datetime,
    *,
    heartbeat_timeout_seconds: float | None,
    stale_after_seconds: float | None,
) -> str | None:
    """Why the 'running' run `row` (host, pid, process_start, heartbeat_at, started_at) is
    dead, seen from `owner` at `now`, or None while it may be alive.

    Same host: its process is gone, or its pid now belongs to another process (decided at
    once; another container with the same host name would look dead: give each a hostname).
    Another host: no heartbeat for `heartbeat_timeout_seconds`. No heartbeat recorded at all
    (started by an older salesml): started more than `stale_after_seconds` ago.
    """
    host, pid = row.get("host"), row.get("pid")
    if host == owner.host and pid is not None:
        if pid == owner.pid and row.get("process_start") == owner.process_start:
            return None
        if process_is_gone(int(pid), row.get("process_start")):
            return f"its process {pid} on {host} is gone"
        return None
    beat = row.get("heartbeat_at")
    if beat is not None:
        if heartbeat_timeout_seconds is not None and (
            now - beat > timedelta(seconds=heartbeat_timeout_seconds)
        ):
            return (
                f"no heartbeat from pid {pid} on {host} since {beat:%Y-%m-%d %H:%M:%S} UTC "
                f"(compute.heartbeat_timeout_seconds = {heartbeat_timeout_seconds:g})"
            )
        return None
    started = row.get("started_at")
    if (
        stale_after_seconds is not None
        and isinstance(started, datetime)
        and now - started > timedelta(seconds=stale_after_seconds)
    ):
        return (
            f"started {started:%Y-%m-%d %H:%M:%S} UTC without a heartbeat, longer ago "
            "than compute.stale_run_minutes"
        )
    return None


def process_is_gone(pid: int, process_start: str | None) -> bool:
    """True when no live process has `pid`, or the one that has it started at another time
    than `process_start`. False when this cannot be told (not POSIX, no such info).
    """
    if os.name != "posix" or pid <= 0:
        return False  # os.kill(pid, 0) would terminate the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, owned by another user
    except OSError:
        return False
    stat = _proc_stat(pid)
    if stat is None:
        return False
    state, started = stat
    if state in ("Z", "X"):  # a zombie finished; only its exit status is left
        return True
    return process_start is not None and started != process_start


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) from /proc/PID/stat; None without /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()  # the command name may hold spaces and ')'
    if len(fields) < 20:
        return None
    return fields[0], fields[19]  # fields 3 and 22 of proc(5)


def _scoped(table: str, frame: pl.DataFrame, scope: Mapping[str, str]) -> pl.DataFrame:
    """`frame` with the scope's values stamped where absent; refuses rows outside the scope."""
    for column, value in scope.items():
        _check_table_name(column)
        if column not in frame.columns:
            frame = frame.with_columns(pl.lit(value, pl.String).alias(column))
            continue
        outside = frame.filter(pl.col(column).ne_missing(pl.lit(value))).height
        if outside:
            raise WarehouseError(
                f"{table}: {outside} rows have {column} other than {value!r} (the write's scope)"
            )
    return frame


@dataclass(frozen=True)
class _Prepared:
    table: str
    frame: pl.DataFrame
    key: list[str] | None


# ---------------------------------------------------------------------------------------------
# Frames: validation and the logical <-> stored form


def _contract() -> ModuleType:
    """salesml.contract, imported on first use (it imports pandera, which is slow to load)."""
    from salesml import contract

    return contract


def _migrations() -> ModuleType:
    """salesml.migrations, imported on first use (it imports the contract)."""
    from salesml import migrations

    return migrations


def _runs_schema() -> pl.Schema:
    """The `runs` table's columns and dtypes, as the contract declares them."""
    return pl.Schema(_contract().output_dtypes(RUNS))


def _quarantine_columns() -> tuple[str, ...]:
    """Columns a quarantine frame must carry (table_name, row, check, reason): the contract's
    required ones (run_id and as_of are stamped here).
    """
    columns: tuple[str, ...] = _contract().required_columns(QUARANTINE)
    return columns


def _declared_dtypes(table: str) -> dict[str, pl.DataType]:
    """The contract's dtypes of an output table ({} for a table the contract does not know)."""
    try:
        return dict(_contract().output_dtypes(table))
    except KeyError:
        return {}


def _key_for(table: str) -> list[str] | None:
    return list(_contract().OUTPUT_KEYS.get(table, [])) or None


def _validate_output(table: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Check `frame` against the contract's pandera schema for `table`, when there is one."""
    schema = _contract().OUTPUT_SCHEMAS.get(table)
    if schema is None:
        return frame
    declared = _declared_dtypes(table)
    undeclared = [c for c in frame.columns if c not in declared]
    if undeclared:
        more = f" (and {len(undeclared) - 1} more)" if len(undeclared) > 1 else ""
        raise WarehouseError(
            f"{table}: column {undeclared[0]!r}{more} is not declared in the contract "
            "(salesml/contract.py); declare it there to store it"
        )
    non_finite = _contract().non_finite(table, frame)  # names the row by its key
    if non_finite is not None:
        raise WarehouseError(f"{table} does not match its output schema: {non_finite}")
    import pandera.errors

    try:
        validated = schema.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        raise WarehouseError(
            f"{table} does not match its output schema: {_summarize(exc.failure_cases)}"
        ) from None
    except pandera.errors.SchemaError as exc:
        raise WarehouseError(
            f"{table} does not match its output schema: {first_line(exc)}"
        ) from None
    return validated if isinstance(validated, pl.DataFrame) else frame


def _summarize(failure_cases: pl.DataFrame, limit: int = 3) -> str:
    """'column x: check (n rows, e.g. v)' for the first few failed checks, on one line."""
    groups = (
        failure_cases.group_by("schema_context", "column", "check", maintain_order=True)
        .agg(pl.len().alias("n"), pl.col("failure_case").first().alias("example"))
        .head(limit)
    )
    parts = []
    for g in groups.iter_rows(named=True):
        if g["schema_context"] == "DataFrameSchema":  # e.g. column_in_dataframe: 'top_factors'
            parts.append(f"{g['check']}: {g['example']!r}")
        else:
            parts.append(
                f"column {g['column']!r}: {g['check']} ({g['n']} rows, e.g. {g['example']!r})"
            )
    return "; ".join(parts)


def _check_key(table: str, frame: pl.DataFrame, key: list[str]) -> None:
    missing = [c for c in key if c not in frame.columns]
    if missing:
        raise WarehouseError(f"{table} lacks key columns {missing}")
    nulls = [c for c in key if frame[c].null_count()]
    if nulls:
        raise WarehouseError(f"{table} has null values in key columns {nulls}")
    dupes = frame.group_by(key).len().filter(pl.col("len") > 1)
    if dupes.height:
        example = dupes.drop("len").head(1).to_dicts()[0]
        raise WarehouseError(
            f"{table} has {dupes.height} duplicated keys ({', '.join(key)}), e.g. {example}"
        )


def _normalize(table: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Datetimes to UTC microseconds (naive is refused), arrays to lists, all-null columns to
    their contract dtype (String when undeclared).
    """
    declared = _declared_dtypes(table)
    exprs = []
    for name, dtype in frame.schema.items():
        if '"' in name or not 0 < len(name.encode()) <= 63:
            raise WarehouseError(f"{table}: column name {name!r} cannot be stored")
        if isinstance(dtype, pl.Datetime):
            if dtype.time_zone is None:
                raise WarehouseError(
                    f"{table}.{name} is a naive datetime; salesml writes tz-aware UTC datetimes"
                )
            exprs.append(pl.col(name).dt.convert_time_zone("UTC").dt.cast_time_unit("us"))
        elif isinstance(dtype, pl.Array):
            exprs.append(pl.col(name).cast(pl.List(dtype.inner)))
        elif dtype == pl.Null:
            exprs.append(pl.col(name).cast(declared.get(name, pl.String())))
    return frame.with_columns(exprs) if exprs else frame


def _conform(table: str, frame: pl.DataFrame, recorded: Mapping[str, pl.DataType]) -> pl.DataFrame:
    """Cast columns to the dtype of the stored column (or fail naming the column), and add the
    table's columns the frame lacks as nulls, so a write replaces whole rows.
    """
    exprs = [
        pl.lit(None, dtype).alias(name)
        for name, dtype in recorded.items()
        if name not in frame.columns
    ]
    storage = _migrations().storage_dtype
    for name, dtype in frame.schema.items():
        want = recorded.get(name)
        if want is None or storage(dtype) == storage(want):
            continue
        try:
            frame.select(pl.col(name).cast(want, strict=True))
        except Exception:
            raise WarehouseError(
                f"{table}.{name} is {dtype} but the warehouse column holds {want}"
            ) from None
        exprs.append(pl.col(name).cast(want))
    return frame.with_columns(exprs) if exprs else frame


def _to_storage(frame: pl.DataFrame) -> pl.DataFrame:
    exprs = []
    for name, dtype in frame.schema.items():
        if _migrations().is_nested(dtype):
            exprs.append(json_text(pl.col(name)).alias(name))
        elif isinstance(dtype, pl.Categorical | pl.Enum):
            exprs.append(pl.col(name).cast(pl.String))
        elif dtype == pl.UInt64:
            exprs.append(pl.col(name).cast(pl.Int64, strict=True))
    return frame.with_columns(exprs) if exprs else frame


def _restore(raw: pl.DataFrame, recorded: Mapping[str, pl.DataType]) -> pl.DataFrame:
    """Stored form -> the recorded polars dtypes; datetimes always come back UTC-aware."""
    exprs = []
    for name, dtype in raw.schema.items():
        want = recorded.get(name)
        if isinstance(want, pl.Datetime) or (want is None and isinstance(dtype, pl.Datetime)):
            col = pl.col(name)
            if isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
                col = col.dt.replace_time_zone("UTC")  # a TIMESTAMP column made outside salesml
            exprs.append(col.dt.convert_time_zone("UTC").dt.cast_time_unit("us"))
        elif want is not None and _migrations().is_nested(want):
            exprs.append(pl.col(name).str.json_decode(want))
        elif want is not None and dtype != want:
            exprs.append(pl.col(name).cast(want))
    return raw.with_columns(exprs) if exprs else raw


# ---------------------------------------------------------------------------------------------
# SQL helpers shared by both backends ($n parameters, quoted identifiers)


def _check_table_name(table: str) -> None:
    if not _TABLE_NAME.match(table):
        raise WarehouseError(f"{table!r} is not a valid warehouse table name")


def _utc(value: datetime) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise WarehouseError(f"as_of must be a tz-aware datetime, not {value!r}")
    return value.astimezone(UTC)


# ---------------------------------------------------------------------------------------------
# Backends: the only code that knows DuckDB from PostgreSQL


class _Session(Protocol):
    """One connection (inside a transaction when writing); SQL uses $1.. parameters."""

    upsert: bool  # replace kept keys in place (ON CONFLICT) instead of delete + insert

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...
    def fetch(self, sql: str, params: Sequence[Any] = ()) -> pl.DataFrame: ...
    def has_table(self, table: str) -> bool: ...
    def stage(self, frame: pl.DataFrame) -> None:
        """Make `frame` readable as the table `_STAGED` until `unstage()`."""

    def unstage(self) -> None: ...


class _Backend(Protocol):
    display: str

    def exists(self) -> bool: ...
    def session(self, *, write: bool, timeout: float) -> AbstractContextManager[_Session]: ...


def _backend_for(url: str) -> _Backend:
    scheme, rest = split_url(url)
    if scheme == "duckdb":
        if not rest.startswith("/") or rest in ("/", "/:memory:"):
            raise WarehouseError(f"warehouse url {url!r} must name a file: duckdb:///path.duckdb")
        return _DuckDBBackend(duckdb_path(url))  # duckdb:///rel/x.duckdb, duckdb:////abs/x.duckdb
    if dialect(url) in POSTGRES_DIALECTS:
        return _PostgresBackend(postgres_uri(url))
    raise WarehouseError(
        f"unsupported warehouse url {redact(url)!r}: use duckdb:///file.duckdb or postgresql://..."
    )


_PROCESS_LOCKS: dict[str, threading.RLock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()


def _process_lock(key: str) -> threading.RLock:
    """DuckDB shares one database per file inside a process: serialise our own threads on it."""
    with _PROCESS_LOCKS_GUARD:
        return _PROCESS_LOCKS.setdefault(key, threading.RLock())


class _DuckDBSession:
    # DuckDB: deleting and re-inserting 100k keys of a PRIMARY KEY in one transaction took
    # ~11 s at commit; deleting only the dropped keys and upserting the rest took ~1 s.
    upsert = True

    def __init__(self, con: Any) -> None:
        self._con = con
        self._tables: set[str] | None = None  # cached until the next CREATE / DROP

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        if sql.lstrip()[:6].upper() in ("CREATE", "DROP T"):
            self._tables = None
        self._con.execute(sql, list(params))

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> pl.DataFrame:
        frame: pl.DataFrame = self._con.sql(sql, params=list(params) or None).pl()
        return frame

    def has_table(self, table: str) -> bool:
        """From DuckDB's catalog (~7 ms per connection, then cached): probing the table with a
        failing query would abort the open transaction.
        """
        if self._tables is None:
            found = self._con.sql(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = "
                "current_database() AND schema_name = current_schema()"
            ).fetchall()
            self._tables = {str(row[0]) for row in found}
        return table in self._tables

    def stage(self, frame: pl.DataFrame) -> None:
        self._con.register(_STAGED, frame.to_arrow())

    def unstage(self) -> None:
        self._con.unregister(_STAGED)


class _DuckDBBackend:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.display = str(path)

    def exists(self) -> bool:
        return self.path.exists()

    @contextmanager
    def session(self, *, write: bool, timeout: float) -> Iterator[_Session]:
        """One connection; any DuckDB error (a full disk, a file turned unwritable) becomes
        a one-line WarehouseError naming the file, after the transaction rolled back.
        """
        import duckdb

        with _process_lock(str(self.path.resolve())):
            con = self._connect(read_only=not write, timeout=timeout)
            try:
                con.execute("SET TimeZone = 'UTC'")
                if not write:
                    yield _DuckDBSession(con)
                    return
                con.begin()
                try:
                    yield _DuckDBSession(con)
                except BaseException:
                    with suppress(duckdb.Error):
                        con.rollback()
                    raise
                con.commit()
            except duckdb.Error as exc:
                raise WarehouseError(f"warehouse {self.path}: {_duckdb_message(exc)}") from None
            finally:
                con.close()

    def _connect(self, *, read_only: bool, timeout: float) -> Any:
        """Open the file, retrying with backoff while another process holds its lock; a file
        or folder that cannot be opened is a one-line WarehouseError.
        """
        import duckdb

        if not read_only:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise WarehouseError(
                    f"cannot create the warehouse folder {self.path.parent}: "
                    f"{exc.strerror or exc}; point warehouse.url at a writable folder"
                ) from None
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.Error as exc:
                if not isinstance(exc, duckdb.IOException) or "lock" not in str(exc).lower():
                    raise WarehouseError(
                        f"cannot open warehouse {self.path}: {_duckdb_message(exc)}; "
                        "warehouse.url must name a DuckDB file in a writable folder"
                    ) from None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WarehouseLockedError(
                        f"warehouse {self.path} is locked by another salesml run; "
                        f"waited {timeout:g} s"
                    ) from None
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 1.0)


def _duckdb_message(exc: BaseException) -> str:
    """DuckDB's first line without its 'IO Error: ' style prefix."""
    return re.sub(r"^[A-Za-z ]*Error: ", "", first_line(exc))


class _PostgresSession:
    upsert = False  # delete + insert measured ~2x faster than ON CONFLICT on 100k rows

    def __init__(self, con: Any) -> None:
        self._cur = con.cursor()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._cur.execute(sql, parameters=tuple(params) or None)

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> pl.DataFrame:
        self._cur.execute(sql, parameters=tuple(params) or None)
        out = pl.from_arrow(self._cur.fetch_arrow_table())
        assert isinstance(out, pl.DataFrame)
        return out

    def has_table(self, table: str) -> bool:
        found = self.fetch(
            "SELECT 1 AS x FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_name = $1",
            [table],
        )
        return found.height > 0

    def stage(self, frame: pl.DataFrame) -> None:
        """Arrow binary COPY into a temp table (ADBC ingest), inside our transaction."""
        self._cur.adbc_ingest(_STAGED, frame.to_arrow(), mode="create", temporary=True)

    def unstage(self) -> None:
        self._cur.execute(f"DROP TABLE {_STAGED}")


class _PostgresBackend:
    def __init__(self, url: str) -> None:
        self.url = url
        self.display = redact(url)

    def exists(self) -> bool:
        return True

    @contextmanager
    def session(self, *, write: bool, timeout: float) -> Iterator[_Session]:
        import adbc_driver_postgresql.dbapi as pg

        try:
            con = pg.connect(self.url)
        except Exception as exc:
            raise WarehouseError(
                f"cannot connect to warehouse {self.display}: {first_line(exc)}"
            ) from None
        try:
            session = _PostgresSession(con)
            if write:
                self._lock(session, timeout)
            try:
                yield session
            except BaseException:
                con.rollback()
                raise
            if write:
                con.commit()
        finally:
            with suppress(Exception):
                con.close()

    def _lock(self, session: _PostgresSession, timeout: float) -> None:
        """One writer per schema at a time, like DuckDB; waits at most `timeout` seconds."""
        millis = f"{max(1, round(timeout * 1000))}ms"
        session.fetch("SELECT set_config('lock_timeout', $1, true) AS t", [millis])
        try:
            session.fetch(
                "SELECT CAST(pg_advisory_xact_lock(hashtextextended("
                "'salesml warehouse ' || current_schema(), 0)) AS TEXT) AS locked"
            )
        except Exception as exc:
            if "55P03" in str(exc) or "lock timeout" in str(exc):
                raise WarehouseLockedError(
                    f"warehouse {self.display} is locked by another salesml run; "
                    f"waited {timeout:g} s"
                ) from None
            raise
