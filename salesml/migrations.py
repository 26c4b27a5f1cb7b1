"""The warehouse's layout, derived from the contract, and the versioned steps that bring a
stored warehouse to it.

Layout: every table the contract declares (`contract.output_dtypes`, `contract.OUTPUT_KEYS`) is
created with exactly the contract's columns, SQL types from their polars dtypes, and a PRIMARY
KEY on the table's key (`contract_ddl`). Nothing is added on write: a column reaches a stored
table through a migration step, never through the frame that happens to carry it.

Versions: `_salesml_schema` holds one row per applied step (version, description, applied_at,
notes). `upgrade` runs the steps above the stored version in order, inside the caller's
transaction (one transaction with the writer lock held, on DuckDB and PostgreSQL alike), so a
failing step leaves the warehouse as it was, and two processes never upgrade at once. A step is
idempotent: it looks at what is stored and changes only what differs. After the steps, every
stored contract table must have the contract's columns, or the upgrade fails naming the table.

To change a stored table's layout: change the contract, then append a step (often
`Migration(n, "...", conform_all)`, which rebuilds every table that differs, or a step with
`fills` saying how older rows get a new key column).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import polars as pl

from salesml import contract
from salesml.sqlutil import quote_identifier as _q

SCHEMA_TABLE = "_salesml_schema"
OLD_CATALOG = "_salesml_columns"
"""The dtype catalog salesml kept before versioned migrations (dropped by step 1)."""

_log = logging.getLogger(__name__)

_SQL_TYPES: dict[type[pl.DataType], str] = {
    pl.Boolean: "BOOLEAN",
    pl.Int8: "SMALLINT",
    pl.Int16: "SMALLINT",
    pl.Int32: "INTEGER",
    pl.Int64: "BIGINT",
    pl.UInt8: "SMALLINT",
    pl.UInt16: "INTEGER",
    pl.UInt32: "BIGINT",
    pl.Float32: "REAL",
    pl.Float64: "DOUBLE PRECISION",
    pl.String: "TEXT",
    pl.Date: "DATE",
    pl.Time: "TIME",
    pl.Datetime: "TIMESTAMPTZ",
}


class MigrationError(RuntimeError):
    """A stored table that cannot be brought to the contract's layout; one line naming it."""


class SqlSession(Protocol):
    """One open connection (inside the caller's transaction); SQL uses $1.. parameters."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one statement that returns no rows."""

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> pl.DataFrame:
        """Run one query and return its rows."""

    def has_table(self, table: str) -> bool:
        """Whether `table` exists in the warehouse."""


# ---------------------------------------------------------------------------------------------
# Layout: DDL from the contract


def is_nested(dtype: pl.DataType) -> bool:
    """Whether `dtype` is a list, array or struct (stored as JSON text)."""
    return isinstance(dtype, pl.List | pl.Array | pl.Struct)


def storage_dtype(dtype: pl.DataType) -> pl.DataType:
    """The dtype a column is stored as: nested and categorical columns as text (JSON for
    nested), UInt64 as Int64 (no unsigned 64-bit type in PostgreSQL).
    """
    if is_nested(dtype) or isinstance(dtype, pl.Categorical | pl.Enum):
        return pl.String()
    if dtype == pl.UInt64:
        return pl.Int64()
    return dtype


def sql_type(table: str, column: str, dtype: pl.DataType) -> str:
    """The SQL column type storing `dtype`; MigrationError names the column if none can."""
    sql = _SQL_TYPES.get(storage_dtype(dtype).base_type())
    if sql is None:
        raise MigrationError(
            f"{table}.{column} has dtype {dtype}, which the warehouse cannot store"
        )
    return sql


def create_table_sql(
    table: str, columns: Mapping[str, pl.DataType], key: Sequence[str] | None
) -> str:
    """CREATE TABLE for `columns` (polars dtypes), with a PRIMARY KEY on `key` when given."""
    parts = [f"{_q(c)} {sql_type(table, c, d)}" for c, d in columns.items()]
    if key:
        parts.append(f"PRIMARY KEY ({', '.join(_q(c) for c in key)})")
    return f"CREATE TABLE {_q(table)} ({', '.join(parts)})"


def contract_ddl(table: str) -> str:
    """CREATE TABLE of an output table of the contract: its columns, types and key."""
    return create_table_sql(table, contract.output_dtypes(table), contract.OUTPUT_KEYS[table])


def stored_columns(session: SqlSession, table: str) -> list[str]:
    """The columns of a stored table, in stored order (an empty query: cheap on both backends)."""
    return session.fetch(f"SELECT * FROM {_q(table)} LIMIT 0").columns


def layout_problem(table: str, stored: Sequence[str]) -> str | None:
    """How the stored columns of contract table `table` differ from the contract, or None."""
    declared = list(contract.output_dtypes(table))
    missing = [c for c in declared if c not in stored]
    extra = [c for c in stored if c not in declared]
    if not missing and not extra:
        return None
    parts = [f"lacks {missing}" if missing else "", f"has undeclared {extra}" if extra else ""]
    return f"{table} " + " and ".join(p for p in parts if p)


# ---------------------------------------------------------------------------------------------
# Rebuilding a table into the contract's layout


def rebuild(
    session: SqlSession,
    table: str,
    fills: Mapping[str, str] | None = None,
    params: Sequence[Any] = (),
) -> str | None:
    """Rebuild stored `table` with the contract's columns and key, keeping its rows.

    Columns the contract declares and the table lacks are taken from `fills` (SQL expressions
    over the old columns, with `params` for $n), else null; undeclared columns are dropped.
    Returns a note of what changed, or None when the table needed nothing or cannot be rebuilt
    yet (a missing not-null column without a fill: a later step provides it).
    """
    fills = dict(fills or {})
    stored = stored_columns(session, table)
    specs = contract.output_columns(table)
    key = contract.OUTPUT_KEYS[table]
    if layout_problem(table, stored) is None and not fills:
        return None
    exprs = []
    for column, spec in specs.items():
        if column in fills:
            source = fills[column]
        elif column in stored:
            source = _q(column)
        elif spec.nullable and column not in key:
            source = "NULL"
        else:
            return None
        exprs.append(f"CAST({source} AS {sql_type(table, column, spec.dtype)})")
    copy = f"{table}__salesml_old"
    session.execute(f"CREATE TABLE {_q(copy)} AS SELECT * FROM {_q(table)}")
    session.execute(f"DROP TABLE {_q(table)}")
    session.execute(contract_ddl(table))
    names = ", ".join(_q(c) for c in specs)
    session.execute(
        f"INSERT INTO {_q(table)} ({names}) SELECT {', '.join(exprs)} FROM {_q(copy)}", params
    )
    session.execute(f"DROP TABLE {_q(copy)}")
    return layout_problem(table, stored) or f"{table} rebuilt"


def _backfills(table: str, stored: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Fills ($n parameters) for key columns the table lacks that declare a backfill value."""
    fills, params = {}, []
    for column, value in contract.key_backfills(table).items():
        if column not in stored:
            params.append(value)
            fills[column] = f"${len(params)}"
    return fills, params


def conform_all(session: SqlSession) -> list[str]:
    """Rebuild every stored contract table whose columns differ from the contract's (new key
    columns at their `ColumnSpec.backfill`, e.g. demand_forecast's scenario 'baseline').
    """
    notes = []
    for table in contract.OUTPUT_KEYS:
        if not session.has_table(table):
            continue
        stored = stored_columns(session, table)
        if layout_problem(table, stored) is None:
            continue
        fills, params = _backfills(table, stored)
        note = rebuild(session, table, fills, params)
        if note is not None:
            notes.append(note)
    return notes


# ---------------------------------------------------------------------------------------------
# The steps


def _contract_layout(session: SqlSession) -> list[str]:
    """Step 1: the warehouse of salesml 43db3ae (dtype catalog, schema-on-write columns)."""
    notes = conform_all(session)
    if session.has_table(OLD_CATALOG):
        session.execute(f"DROP TABLE {_q(OLD_CATALOG)}")
        notes.append(f"dropped {OLD_CATALOG}")
    return notes


def _pipeline_dimensions(session: SqlSession) -> list[str]:
    """Step 2: pipeline_forecast rows per (dimension, member) instead of per region."""
    table = "pipeline_forecast"
    if "dimension" not in contract.output_columns(table) or not session.has_table(table):
        return []
    stored = stored_columns(session, table)
    if "region" not in stored or "dimension" in stored:
        return []
    fills = {
        "dimension": "CASE WHEN region = 'all' THEN 'all' ELSE 'region' END",
        "member": "region",
    }
    note = rebuild(session, table, fills)
    return [] if note is None else [note]


@dataclass(frozen=True)
class Migration:
    """One numbered step: `apply` changes what differs and returns notes for the log."""

    version: int
    description: str
    apply: Callable[[SqlSession], list[str]]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "the contract drives the layout: contract tables get exactly its columns and key "
        "(undeclared columns dropped, new ones null or at their backfill); the "
        "_salesml_columns catalog is dropped",
        _contract_layout,
    ),
    Migration(
        2,
        "pipeline_forecast keyed by (as_of, period, dimension, member): region 'all' -> "
        "('all', 'all'), any other region -> ('region', region)",
        _pipeline_dimensions,
    ),
)
LATEST = MIGRATIONS[-1].version


def schema_version(session: SqlSession) -> int:
    """The latest step applied to the warehouse; 0 for a new one or one from before steps."""
    if not session.has_table(SCHEMA_TABLE):
        return 0
    found = session.fetch(f"SELECT max(version) AS v FROM {_q(SCHEMA_TABLE)}")
    value = found["v"][0]
    return 0 if value is None else int(value)


def upgrade(session: SqlSession, where: str) -> list[Migration]:
    """Apply the steps above the stored version, in order, in the caller's transaction; log
    each; check every stored contract table has the contract's columns. Returns the steps.
    """
    if not session.has_table(SCHEMA_TABLE):
        session.execute(
            f"CREATE TABLE {_q(SCHEMA_TABLE)} (version BIGINT PRIMARY KEY, description TEXT, "
            "applied_at TIMESTAMPTZ, notes TEXT)"
        )
    current = schema_version(session)
    pending = [m for m in MIGRATIONS if m.version > current]
    for step in pending:
        notes = step.apply(session)
        session.execute(
            f"INSERT INTO {_q(SCHEMA_TABLE)} VALUES ($1, $2, $3, $4)",
            [step.version, step.description, datetime.now(UTC), json.dumps(notes)],
        )
        _log.info("warehouse %s: schema version %d (%s)", where, step.version, "; ".join(notes))
    if pending:
        for table in contract.OUTPUT_KEYS:
            problem = session.has_table(table) and layout_problem(
                table, stored_columns(session, table)
            )
            if problem:
                raise MigrationError(f"{problem}, and no migration step upgrades it")
    return pending
