"""Read canonical input tables as of a point in time, from a folder or a database.

`read(table, settings, as_of)` is the only way salesml reads input data. It
- finds the table: `<sources.path>/<table>.parquet`, `<table>.csv` or a folder `<table>/` of
  Parquet files; or the table `<table>` in `sources.url` (`duckdb:///file.duckdb`, opened
  read-only, or `postgresql://...` through ADBC);
- renames columns with `settings.column_map[table]` ({your column: canonical}); extra columns
  are kept;
- casts to the contract's dtypes with `salesml.validation.conform` (datetimes UTC; naive values
  are wall time in `settings.timezone`; text that does not parse survives for quarantine);
- applies time travel at the source (the predicate is pushed into the scan or the SQL WHERE):
  rows whose event time (`contract.EVENT_TIME`) is after `as_of` are not read, deals closed after
  `as_of` are shown open (outcome and closed_at null), signals after `as_of` are kept only for
  names known in advance (`demand.known_signals`); accounts are static.

A missing optional table gives None; a missing required table raises SourceError.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import polars as pl

from salesml import contract
from salesml.timeutil import DATETIME, parse_as_of
from salesml.validation import DataValidationError, conform

if TYPE_CHECKING:
    from salesml.config import Settings

# Pre-filters on the source's own column types are widened by this margin, so wall-clock
# ambiguities (DST) can never drop a row; the exact cut is applied after conversion to UTC.
_PUSHDOWN_MARGIN = timedelta(days=1)

Query = Callable[[str], pl.DataFrame]


class SourceError(DataValidationError):
    """A source that cannot be read (missing table, file or database); one-line message."""


def read(table: str, settings: Settings, as_of: datetime | None) -> pl.LazyFrame | None:
    """The canonical table as known at `as_of` (None: no time filter), or None if optional
    and absent. Unparsed values are kept in `__raw__<column>` helper columns for validation;
    use `salesml.inputs.load_tables` to get validated frames."""
    contract.input_columns(table)  # unknown table -> KeyError naming the known ones
    when = parse_as_of(as_of, settings.timezone) if as_of is not None else None
    mapping = dict(settings.column_map.get(table, {}))
    if settings.sources.path is not None:
        raw, where = _scan_folder(Path(settings.sources.path), table, mapping, when, settings)
    else:
        assert settings.sources.url is not None
        raw, where = _read_database(settings.sources.url, table, mapping, when, settings)
    if raw is None:
        if table in contract.REQUIRED_INPUTS:
            raise SourceError(
                f"{table}: required table not found in {where} (check: table_present)"
            )
        return None
    frame = conform(raw, table, settings.timezone)
    if when is None:
        return frame
    return _as_of_filter(frame, table, when, settings.demand.known_signals)


# ---------------------------------------------------------------------------------------------
# Time travel
# ---------------------------------------------------------------------------------------------
def _as_of_filter(
    frame: pl.LazyFrame, table: str, as_of: datetime, known_signals: list[str]
) -> pl.LazyFrame:
    """Exact as_of cut on the canonical (UTC) frame. Null times are kept for validation."""
    limit = pl.lit(as_of, dtype=DATETIME)
    column = contract.EVENT_TIME.get(table)
    if column is None:
        return frame
    keep = (pl.col(column) <= limit).fill_null(True)
    if table == "signals":
        keep = keep | pl.col("name").is_in(list(known_signals))
    frame = frame.filter(keep)
    if table == "deals":
        later = (pl.col("closed_at") > limit).fill_null(False)
        frame = frame.with_columns(
            pl.when(later).then(None).otherwise(pl.col("outcome")).alias("outcome"),
            pl.when(later).then(None).otherwise(pl.col("closed_at")).alias("closed_at"),
        )
    return frame


def _local_bound(as_of: datetime, timezone: str) -> datetime:
    """as_of plus the margin, as naive wall time in `timezone` (for naive source columns)."""
    return (as_of + _PUSHDOWN_MARGIN).astimezone(ZoneInfo(timezone)).replace(tzinfo=None)


def _pushdown(
    frame: pl.LazyFrame, table: str, as_of: datetime | None, settings: Settings
) -> pl.LazyFrame:
    """A widened as_of filter on the source's raw column, so the scan skips most future rows."""
    column = contract.EVENT_TIME.get(table)
    if as_of is None or column is None:
        return frame
    schema = frame.collect_schema()
    if column not in schema:
        return frame
    dtype = schema[column]
    bound: pl.Expr
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
        bound = pl.lit(as_of + _PUSHDOWN_MARGIN, dtype=pl.Datetime("us", dtype.time_zone))
    elif isinstance(dtype, pl.Datetime):
        bound = pl.lit(_local_bound(as_of, settings.timezone), dtype=pl.Datetime("us"))
    elif dtype == pl.Date:
        bound = pl.lit(_local_bound(as_of, settings.timezone).date(), dtype=pl.Date)
    else:
        return frame  # text: filtered after parsing
    keep = (pl.col(column) <= bound) | pl.col(column).is_null()
    if table == "signals" and "name" in schema:
        keep = keep | pl.col("name").cast(pl.String).is_in(list(settings.demand.known_signals))
    return frame.filter(keep)


# ---------------------------------------------------------------------------------------------
# Column map
# ---------------------------------------------------------------------------------------------
def _rename(frame: pl.LazyFrame, table: str, mapping: dict[str, str]) -> pl.LazyFrame:
    names = frame.collect_schema().names()
    present = {user: canon for user, canon in mapping.items() if user in names and user != canon}
    for user, canon in present.items():
        if canon in names and canon not in present:
            raise SourceError(
                f"{table}: column_map maps '{user}' to '{canon}', but the source already has "
                f"a column '{canon}' (check: column_map)"
            )
    return frame.rename(present) if present else frame


def _source_name(mapping: dict[str, str], canonical: str) -> str:
    """The user's column name for a canonical column."""
    for user, canon in mapping.items():
        if canon == canonical:
            return user
    return canonical


# ---------------------------------------------------------------------------------------------
# Folder source
# ---------------------------------------------------------------------------------------------
def _scan_folder(
    folder: Path, table: str, mapping: dict[str, str], as_of: datetime | None, settings: Settings
) -> tuple[pl.LazyFrame | None, str]:
    where = f"sources.path {folder}"
    if not folder.is_dir():
        raise SourceError(f"{table}: {where} is not a folder (check: source_present)")
    parquet, csv, subdir = folder / f"{table}.parquet", folder / f"{table}.csv", folder / table
    found = [p for p in (parquet, csv) if p.is_file()]
    if len(found) > 1:
        raise SourceError(
            f"{table}: both {parquet.name} and {csv.name} are in {folder}; keep one (check: source_unique)"
        )
    if parquet.is_file():
        frame = pl.scan_parquet(parquet)
    elif csv.is_file():
        frame = _scan_csv(csv, table, mapping)
    elif subdir.is_dir() and any(subdir.rglob("*.parquet")):
        frame = pl.scan_parquet(subdir / "**" / "*.parquet")
    else:
        return None, f"{where} (looked for {parquet.name}, {csv.name}, {table}/*.parquet)"
    frame = _rename(frame, table, mapping)
    return _pushdown(frame, table, as_of, settings), where


def _scan_csv(path: Path, table: str, mapping: dict[str, str]) -> pl.LazyFrame:
    """Scan a CSV; text and datetime columns stay text (ids keep leading zeros; dates are
    parsed by `conform`, which keeps values that do not parse for quarantine)."""
    header = pl.read_csv(path, n_rows=0).columns
    text = [
        _source_name(mapping, name)
        for name, spec in contract.input_columns(table).items()
        if spec.dtype == pl.String or isinstance(spec.dtype, pl.Datetime)
    ]
    overrides: dict[str, pl.DataType] = {name: pl.String() for name in text if name in header}
    return pl.scan_csv(path, schema_overrides=overrides, infer_schema_length=None)


# ---------------------------------------------------------------------------------------------
# Database source
# ---------------------------------------------------------------------------------------------
def duckdb_path(url: str) -> Path:
    """`duckdb:///rel/file.duckdb` -> rel/file.duckdb; `duckdb:////abs/file.duckdb` -> /abs/..."""
    rest = url.split("://", 1)[1]
    return Path(rest[1:] if rest.startswith("/") else rest)


@contextmanager
def _duckdb(url: str) -> Iterator[Query]:
    import duckdb

    path = duckdb_path(url)
    if not path.is_file():
        raise SourceError(f"sources.url: DuckDB file {path} does not exist (check: source_present)")
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:  # e.g. another process holds the write lock
        raise SourceError(
            f"sources.url: cannot open DuckDB file {path}: {_first_line(exc)}"
        ) from None
    try:
        yield lambda sql: con.sql(sql).pl()
    finally:
        con.close()


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def postgres_uri(url: str) -> str:
    """libpq URI for ADBC: `postgresql+psycopg://...` and `postgres://...` become postgresql://."""
    return re.sub(r"^postgres(?:ql)?(?:\+\w+)?://", "postgresql://", url)


@contextmanager
def _postgres(url: str) -> Iterator[Query]:
    from adbc_driver_postgresql import dbapi

    try:
        con = dbapi.connect(postgres_uri(url))
    except Exception as exc:  # the driver's errors vary; the URL (with secrets) is not printed
        raise SourceError(
            f"sources.url: cannot connect to PostgreSQL: {_first_line(exc)}"
        ) from None
    try:
        yield lambda sql: pl.read_database(sql, con)
    finally:
        con.close()


def _connect(url: str) -> Callable[[str], AbstractContextManager[Query]]:
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme == "duckdb":
        return _duckdb
    if scheme in ("postgresql", "postgres"):
        return _postgres
    raise SourceError(
        f"sources.url scheme '{scheme}' is not supported; use duckdb:///file.duckdb or "
        "postgresql://... (check: source_url)"
    )


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_bound(data_type: str, as_of: datetime, timezone: str) -> str | None:
    """A SQL literal of the widened as_of bound matching the column's type, or None (text)."""
    kind = data_type.upper()
    if kind in ("TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE"):
        return (
            f"CAST({_sql_text((as_of + _PUSHDOWN_MARGIN).isoformat())} AS TIMESTAMP WITH TIME ZONE)"
        )
    if kind.startswith("TIMESTAMP"):
        return f"CAST({_sql_text(_local_bound(as_of, timezone).isoformat())} AS TIMESTAMP)"
    if kind == "DATE":
        local: date = _local_bound(as_of, timezone).date()
        return f"CAST({_sql_text(local.isoformat())} AS DATE)"
    return None


def _select_sql(
    table: str,
    types: dict[str, str],
    mapping: dict[str, str],
    as_of: datetime | None,
    settings: Settings,
) -> str:
    sql = f"SELECT * FROM {_quote(table)}"
    column = contract.EVENT_TIME.get(table)
    if as_of is None or column is None:
        return sql
    name = _source_name(mapping, column)
    bound = _sql_bound(types.get(name, ""), as_of, settings.timezone)
    if bound is None:
        return sql
    keep = f"{_quote(name)} <= {bound} OR {_quote(name)} IS NULL"
    known = settings.demand.known_signals
    signal_name = _source_name(mapping, "name")
    if table == "signals" and known and signal_name in types:
        keep += f" OR {_quote(signal_name)} IN ({', '.join(_sql_text(k) for k in known)})"
    return f"{sql} WHERE {keep}"


def _read_database(
    url: str, table: str, mapping: dict[str, str], as_of: datetime | None, settings: Settings
) -> tuple[pl.LazyFrame | None, str]:
    where = f"sources.url database (table {table})"
    with _connect(url)(url) as query:
        listing = query(
            "SELECT CAST(column_name AS VARCHAR) AS column_name, CAST(data_type AS VARCHAR) AS "
            f"data_type FROM information_schema.columns WHERE table_name = {_sql_text(table)} "
            "AND table_schema = current_schema() ORDER BY ordinal_position"
        )
        if listing.height == 0:
            return None, where
        types = dict(zip(listing["column_name"], listing["data_type"], strict=True))
        frame = query(_select_sql(table, types, mapping, as_of, settings))
    return _rename(frame.lazy(), table, mapping), where
