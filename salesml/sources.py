"""Read canonical input tables as of a point in time, from a folder or a database.

`read(table, settings, as_of)` is the only way salesml reads input data. It
- finds the table: `<sources.path>/<table>.parquet`, `<table>.csv` or a folder `<table>/` of
  Parquet files; or the table `<table>` in `sources.url` (`duckdb:///file.duckdb`, opened
  read-only, or `postgresql://...` through ADBC);
- renames columns with `settings.column_map[table]` ({your column: canonical}, or a list of
  canonical columns to copy one column into several: `Lead ID: [deal_id, account_id]`); extra
  columns are kept;
- casts to the contract's dtypes with `salesml.validation.conform` (datetimes UTC; naive values
  are wall time in `settings.timezone`; text that does not parse survives for quarantine);
- applies time travel at the source (the predicate is pushed into the scan or the SQL WHERE):
  rows whose event time (`contract.EVENT_TIME`) is after `as_of` are not read, deals closed after
  `as_of` are shown open (outcome and closed_at null), signals after `as_of` are kept only for
  names known in advance (`demand.known_signals`); accounts are static.

A missing table gives None, unless it is required (by default: a table some job cannot run
without, deals or sales), which raises SourceError.

Hostile files give one line naming the file, or a quarantined row, never a traceback: a 0-byte
CSV, a CSV not in its configured encoding (`sources.encoding`), a `.parquet` that is not
Parquet, two `column_map` entries onto one column raise SourceError; a CSV line with too few or
too many fields (a truncated last line) is read as far as it goes and marked for quarantine
(check well_formed, `validation.MALFORMED`). `collect_tables` turns errors polars meets while
collecting (corrupt pages, panics) into SourceError naming the table and file.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import polars as pl

from salesml import contract
from salesml.errors import first_line
from salesml.secrets import redact
from salesml.sqlutil import quote_identifier
from salesml.timeutil import DATETIME, parse_as_of
from salesml.urls import POSTGRES_DIALECTS, dialect, duckdb_path, postgres_uri
from salesml.validation import MALFORMED, NEEDED_BY_A_JOB, DataValidationError, conform

if TYPE_CHECKING:
    from salesml.config import Settings

# Pre-filters on the source's own column types are widened by this margin, so wall-clock
# ambiguities (DST) can never drop a row; the exact cut is applied after conversion to UTC.
_PUSHDOWN_MARGIN = timedelta(days=1)

Query = Callable[[str, Sequence[str]], pl.DataFrame]
"""Runs SQL with `$1, $2, ...` parameters bound to the given values (never spliced in)."""

# What polars may raise on a file it cannot read. PanicException (a Rust assertion) derives
# from BaseException, so `except Exception` would let it through as a traceback.
_READ_ERRORS: tuple[type[BaseException], ...] = (
    pl.exceptions.PolarsError,
    pl.exceptions.PanicException,
    OSError,
    ValueError,
)


class SourceError(DataValidationError):
    """A source that cannot be read (missing table, file or database); one-line message."""


def read(
    table: str, settings: Settings, as_of: datetime | None, *, required: bool | None = None
) -> pl.LazyFrame | None:
    """The canonical table as known at `as_of` (None: no time filter), or None if absent and
    not required. Unparsed values are kept in `__raw__<column>` helper columns for validation;
    use `salesml.inputs.load_tables` to get validated frames.

    required: whether an absent table raises SourceError; default: when some job cannot run
    without it (`validation.NEEDED_BY_A_JOB`: deals, sales).
    """
    contract.input_columns(table)  # unknown table -> KeyError naming the known ones
    when = parse_as_of(as_of, settings.timezone) if as_of is not None else None
    if required is None:
        required = table in NEEDED_BY_A_JOB
    frame = _read_conformed(table, settings, when, required=required)
    if frame is None or when is None:
        return frame
    return _as_of_filter(frame, table, when, settings.demand.known_signals)


def read_later(table: str, settings: Settings, as_of: datetime) -> pl.LazyFrame | None:
    """The identifying columns and event time of `table`'s rows after `as_of`, or None.

    Never data for a job: validation uses it only to say why a row points at something not
    there yet (an activity of a deal created in 2200). None for a table without event time
    or an absent optional table.
    """
    column = contract.EVENT_TIME.get(table)
    if column is None:
        return None
    when = parse_as_of(as_of, settings.timezone)
    frame = _read_conformed(table, settings, None)
    if frame is None:
        return None
    ids = [c for c in contract.ID_COLUMNS[table] if c != column]
    return frame.filter(pl.col(column) > pl.lit(when, dtype=DATETIME)).select(*ids, column)


def collect_tables(
    frames: Mapping[str, pl.LazyFrame], settings: Settings
) -> dict[str, pl.DataFrame]:
    """Collect `frames` together; a table polars cannot read raises SourceError naming it.

    Errors of lazy scans surface only here (a Parquet file with a valid footer and corrupt
    pages, a panic in a reader), so they are caught here and traced back to their table.
    """
    try:
        return dict(zip(frames, pl.collect_all(list(frames.values())), strict=True))
    except _READ_ERRORS:
        pass
    out = {}
    for name, frame in frames.items():  # which table was it?
        try:
            out[name] = frame.collect()
        except _READ_ERRORS as exc:
            raise SourceError(
                f"{name}: cannot read it from {_location(name, settings)}: "
                f"{redact(first_line(exc))} (check: readable)"
            ) from None
    return out


def _location(table: str, settings: Settings) -> str:
    """Where `table` is read from, in words for an error message."""
    if settings.sources.path is None:
        return f"the sources.url database (table {table})"
    folder = Path(settings.sources.path)
    for candidate in (folder / f"{table}.parquet", folder / f"{table}.csv", folder / table):
        if candidate.exists():
            return str(candidate)
    return f"sources.path {folder}"


def _read_conformed(
    table: str, settings: Settings, when: datetime | None, *, required: bool = False
) -> pl.LazyFrame | None:
    """The table conformed to the contract, with only the source-side (widened) as_of
    pre-filter; None for an absent table that is not required.
    """
    mapping = settings.column_map.get(table, {})
    _check_column_map(table, mapping)
    if settings.sources.path is not None:
        raw, where = _scan_folder(Path(settings.sources.path), table, mapping, when, settings)
    else:
        assert settings.sources.url is not None
        raw, where = _read_database(settings.sources.url, table, mapping, when, settings)
    if raw is None:
        if required:
            raise SourceError(
                f"{table}: required table not found in {where} (check: table_present)"
            )
        return None
    fmt = _datetime_format(table, settings)
    if fmt is not None:
        raw = _to_iso(raw, table, fmt)
    return conform(raw, table, settings.timezone)


def _datetime_format(table: str, settings: Settings) -> str | None:
    """`sources.datetime_format` for `table` (one for all tables, or per table), or None."""
    setting = settings.sources.datetime_format
    return setting if isinstance(setting, str) else setting.get(table)


def _to_iso(frame: pl.LazyFrame, table: str, fmt: str) -> pl.LazyFrame:
    """Text datetime columns in `fmt` rewritten as ISO 8601, which `conform` then parses.

    A value that does not match `fmt` is left as it is: ISO text still parses, anything else
    is quarantined by validation with its original text (check parse_datetime).
    """
    schema = frame.collect_schema()
    columns = [
        name
        for name, spec in contract.input_columns(table).items()
        if isinstance(spec.dtype, pl.Datetime) and schema.get(name) == pl.String
    ]
    aware = any(zone in fmt for zone in ("%z", "%:z", "%#z"))
    iso = "%Y-%m-%dT%H:%M:%S%.f" + ("%:z" if aware else "")
    return frame.with_columns(
        pl.coalesce(
            pl.col(name)
            .str.strip_chars()
            .str.to_datetime(fmt, time_unit="us", time_zone="UTC" if aware else None, strict=False)
            .dt.to_string(iso),
            pl.col(name),
        ).alias(name)
        for name in columns
    )


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
ColumnMap = Mapping[str, str | list[str]]
"""One table's `column_map`: {your column: canonical column, or a list of canonical columns}."""


def _pairs(mapping: ColumnMap) -> list[tuple[str, str]]:
    """(your column, canonical column) pairs; one source column may feed several."""
    return [
        (user, canon)
        for user, target in mapping.items()
        for canon in ([target] if isinstance(target, str) else target)
    ]


def _check_column_map(table: str, mapping: ColumnMap) -> None:
    """Two of the user's columns onto one canonical column would leave it ambiguous; one
    column onto several canonical ones (`Lead ID: [deal_id, account_id]`) is fine.
    """
    seen: dict[str, str] = {}
    for user, canon in _pairs(mapping):
        if canon in seen:
            if seen[canon] == user:
                raise SourceError(
                    f"column_map.{table} maps '{user}' to '{canon}' twice; name it once "
                    "(check: column_map)"
                )
            raise SourceError(
                f"column_map.{table} maps both '{seen[canon]}' and '{user}' to '{canon}'; "
                "map only one of them (check: column_map)"
            )
        seen[canon] = user


def _rename(frame: pl.LazyFrame, table: str, mapping: ColumnMap) -> pl.LazyFrame:
    """Rename the user's columns; a column mapped to several canonical ones is copied to each
    (and its own name is gone unless one of them is that name).
    """
    names = frame.collect_schema().names()
    pairs = [(user, canon) for user, canon in _pairs(mapping) if user in names and user != canon]
    staying = {user for user, canon in _pairs(mapping) if user == canon}
    renamed = {user for user, _ in pairs} - staying
    for user, canon in pairs:
        if canon in names and canon not in renamed:
            raise SourceError(
                f"{table}: column_map maps '{user}' to '{canon}', but the source already has "
                f"a column '{canon}' (check: column_map)"
            )
    if not pairs:
        return frame
    kept = [c for c in names if c not in renamed]
    copies = [pl.col(user).alias(canon) for user, canon in pairs]
    return frame.select(*[pl.col(c) for c in kept], *copies)


def _source_name(mapping: ColumnMap, canonical: str) -> str:
    """The user's column name for a canonical column."""
    for user, canon in _pairs(mapping):
        if canon == canonical:
            return user
    return canonical


# ---------------------------------------------------------------------------------------------
# Folder source
# ---------------------------------------------------------------------------------------------
def _scan_folder(
    folder: Path, table: str, mapping: ColumnMap, as_of: datetime | None, settings: Settings
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
        frame = _scan_parquet(parquet, parquet, table)
    elif csv.is_file():
        frame = _read_csv(csv, table, settings)
    elif subdir.is_dir() and any(subdir.rglob("*.parquet")):
        frame = _scan_parquet(subdir / "**" / "*.parquet", subdir, table)
    else:
        return None, f"{where} (looked for {parquet.name}, {csv.name}, {table}/*.parquet)"
    frame = _rename(frame, table, mapping)
    return _pushdown(frame, table, as_of, settings), where


def _scan_parquet(source: Path, shown: Path, table: str) -> pl.LazyFrame:
    """Scan Parquet, reading its footer now so a file that is not Parquet is named at once."""
    try:
        frame = pl.scan_parquet(source)
        frame.collect_schema()
    except _READ_ERRORS as exc:
        raise SourceError(
            f"{table}: {shown} is not a readable Parquet file ({first_line(exc)}); "
            "re-export it as Parquet or CSV (check: parquet)"
        ) from None
    return frame


# ---------------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------------
def _encoding(table: str, settings: Settings) -> str:
    """`sources.encoding` for `table` (one name for all tables, or per table; UTF-8 default)."""
    setting = settings.sources.encoding
    name = setting if isinstance(setting, str) else setting.get(table, "utf-8")
    try:
        codecs.lookup(name)
    except LookupError:
        raise SourceError(
            f"sources.encoding '{name}' for {table} is not a known text encoding; use e.g. "
            "utf-8, latin-1 or cp1252 (check: encoding)"
        ) from None
    return name


def _csv_text(path: Path, table: str, settings: Settings) -> str:
    """The file's text in its configured encoding; a byte-order mark is dropped."""
    encoding = _encoding(table, settings)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceError(f"{table}: cannot read {path}: {exc.strerror or exc}") from None
    if not data.strip():
        raise SourceError(
            f"{table}: {path} is empty; write at least its header line, or remove the file "
            "(check: csv_header)"
        )
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SourceError(
            f"{table}: {path} is not {encoding} text (byte 0x{data[exc.start]:02x} on line "
            f"{line}); set sources.encoding to the file's encoding, e.g. "
            f"sources.encoding: {{{table}: latin-1}} (check: encoding)"
        ) from None
    return text.removeprefix("\ufeff")


def _read_csv(path: Path, table: str, settings: Settings) -> pl.LazyFrame:
    """Read a CSV whole, as text, robustly; extra columns get numeric types where they fit.

    Canonical columns stay text and are cast by `conform`, which keeps values that do not
    parse for quarantine (ids keep leading zeros). A line whose field count differs from the
    header's (a truncated last line, a stray comma) is kept with what it has and a reason in
    `__malformed__`, so it is quarantined rather than crashing the reader or being padded
    silently. Quote-free files (the common case) are split by polars string kernels; files
    with quotes go through Python's C csv reader, which handles quoted commas and newlines.
    """
    text = _csv_text(path, table, settings)
    parse = _parse_quoted_csv if '"' in text else _parse_plain_csv
    try:
        frame = parse(text, path, table)
    except SourceError:
        raise
    except _READ_ERRORS as exc:  # e.g. a file beyond what one polars string can hold
        raise SourceError(
            f"{table}: cannot read {path}: {first_line(exc)} (check: readable)"
        ) from None
    declared = set(contract.input_columns(table)) | set(settings.column_map.get(table, {}))
    return frame.with_columns(
        _infer_text(frame.get_column(c))
        for c in frame.columns
        if c not in declared and c != MALFORMED
    ).lazy()


def _header(fields: list[str], path: Path, table: str) -> list[str]:
    names = [name.strip() or f"column_{i + 1}" for i, name in enumerate(fields)]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise SourceError(
            f"{table}: {path} has the column '{duplicated[0]}' twice in its header; rename one "
            "(check: csv_header)"
        )
    return names


def _ragged(line: pl.Expr, fields: pl.Expr, expected: int) -> pl.Expr:
    return pl.format(
        "line {} has {} fields where the header has {} (a truncated or ragged line)",
        line,
        fields,
        pl.lit(expected),
    )


def _parse_plain_csv(text: str, path: Path, table: str) -> pl.DataFrame:
    """A CSV without quote characters: each line is a row, fields split at commas."""
    lines = (
        pl.Series("text", [text])
        .str.split("\n")
        .explode()
        .str.strip_suffix("\r")
        .to_frame()
        .with_row_index("line", offset=1)
    )
    names = _header(lines.item(0, "text").split(","), path, table)
    body = lines.slice(1).filter(pl.col("text") != "")  # blank lines are not rows
    fields = pl.col("text").str.split(",")
    count = fields.list.len()
    return body.select(
        *[_cell(fields.list.get(i, null_on_oob=True)).alias(n) for i, n in enumerate(names)],
        pl.when(count != len(names))
        .then(_ragged(pl.col("line"), count, len(names)))
        .alias(MALFORMED),
    )


def _parse_quoted_csv(text: str, path: Path, table: str) -> pl.DataFrame:
    """A CSV with quotes, through Python's csv reader (strict: bad quoting is an error).

    A record that cannot be parsed is kept, empty, with the reason; a quote left open at the
    end of the file is quarantined when it holds only the last line (a truncated file), and
    is an error otherwise, since it would swallow every line after it.
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    lines = text.splitlines()
    rows: list[list[str]] = []
    problems: list[str | None] = []
    names: list[str] | None = None
    while True:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            end = reader.line_num
            if names is None or (str(exc) == "unexpected end of data" and end > start):
                raise SourceError(
                    f"{table}: {path} line {start}: {exc} (a quote opened there is never "
                    f"closed, so lines {start}-{end} cannot be read); fix the quoting "
                    "(check: csv_quotes)"
                ) from None
            snippet = " ".join(lines[start - 1 : end])[:80]
            rows.append([])
            problems.append(f"line {start} is not valid CSV ({exc}): {snippet}")
            continue
        if names is None:
            names = _header(record, path, table)
        elif record:  # blank lines are not rows
            rows.append(record)
            problems.append(
                None
                if len(record) == len(names)
                else f"line {start} has {len(record)} fields where the header has "
                f"{len(names)} (a truncated or ragged line)"
            )
    if names is None:
        raise SourceError(f"{table}: {path} has no header line (check: csv_header)")
    width = len(names)
    cells = [(row + [""] * width)[:width] for row in rows]
    frame = pl.DataFrame(cells, schema=dict.fromkeys(names, pl.String), orient="row")
    return frame.select(_cell(pl.col(n)) for n in names).with_columns(
        pl.Series(MALFORMED, problems, dtype=pl.String)
    )


def _cell(value: pl.Expr) -> pl.Expr:
    """An empty field is a missing value (as polars' CSV reader has it)."""
    return pl.when(value != "").then(value)


def _infer_text(column: pl.Series) -> pl.Series:
    """An extra column's type from its text: integer, float, boolean, else text."""
    values = column.str.strip_chars()
    present = values.is_not_null().sum()
    if present == 0:
        return column
    for dtype in (pl.Int64, pl.Float64):
        cast = values.cast(dtype, strict=False)
        if cast.is_not_null().sum() == present:
            return cast
    lowered = values.str.to_lowercase()
    if lowered.drop_nulls().is_in(["true", "false"]).all():
        return (lowered == "true").alias(column.name)
    return column


# ---------------------------------------------------------------------------------------------
# Database source
# ---------------------------------------------------------------------------------------------
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
            f"sources.url: cannot open DuckDB file {path}: {first_line(exc)}"
        ) from None
    try:
        yield lambda sql, params: con.sql(sql, params=list(params) or None).pl()
    finally:
        con.close()


@contextmanager
def _postgres(url: str) -> Iterator[Query]:
    from adbc_driver_postgresql import dbapi

    try:
        con = dbapi.connect(postgres_uri(url))
    except Exception as exc:  # the driver's errors vary; the URL (with secrets) is not printed
        raise SourceError(
            f"sources.url: cannot connect to PostgreSQL: {redact(first_line(exc))}"
        ) from None
    try:
        yield lambda sql, params: pl.read_database(
            sql, con, execute_options={"parameters": tuple(params)} if params else None
        )
    finally:
        con.close()


def _connect(url: str) -> Callable[[str], AbstractContextManager[Query]]:
    scheme = dialect(url)
    if scheme == "duckdb":
        return _duckdb
    if scheme in POSTGRES_DIALECTS:
        return _postgres
    raise SourceError(
        f"sources.url scheme '{scheme}' is not supported; use duckdb:///file.duckdb or "
        "postgresql://... (check: source_url)"
    )


def _sql_bound(data_type: str, as_of: datetime, timezone: str) -> tuple[str, str] | None:
    """(SQL type, ISO text) of the widened as_of bound matching the column's type, or None for
    a text column; the text is bound as a parameter and cast to that type in SQL.
    """
    kind = data_type.upper()
    if kind in ("TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE"):
        return "TIMESTAMP WITH TIME ZONE", (as_of + _PUSHDOWN_MARGIN).isoformat()
    if kind.startswith("TIMESTAMP"):
        return "TIMESTAMP", _local_bound(as_of, timezone).isoformat()
    if kind == "DATE":
        local: date = _local_bound(as_of, timezone).date()
        return "DATE", local.isoformat()
    return None


def _select_sql(
    table: str,
    types: dict[str, str],
    mapping: ColumnMap,
    as_of: datetime | None,
    settings: Settings,
) -> tuple[str, list[str]]:
    """The SELECT reading `table` with the widened as_of pre-filter, and its parameters
    (`$1` the bound, then the signal names known in advance).
    """
    sql = f"SELECT * FROM {quote_identifier(table)}"
    column = contract.EVENT_TIME.get(table)
    if as_of is None or column is None:
        return sql, []
    name = _source_name(mapping, column)
    bound = _sql_bound(types.get(name, ""), as_of, settings.timezone)
    if bound is None:
        return sql, []
    cast, text = bound
    params = [text]
    keep = f"{quote_identifier(name)} <= CAST($1 AS {cast}) OR {quote_identifier(name)} IS NULL"
    known = list(settings.demand.known_signals)
    signal_name = _source_name(mapping, "name")
    if table == "signals" and known and signal_name in types:
        slots = ", ".join(f"${i}" for i in range(2, len(known) + 2))
        keep += f" OR {quote_identifier(signal_name)} IN ({slots})"
        params += known
    return f"{sql} WHERE {keep}", params


def _read_database(
    url: str, table: str, mapping: ColumnMap, as_of: datetime | None, settings: Settings
) -> tuple[pl.LazyFrame | None, str]:
    where = f"sources.url database (table {table})"
    with _connect(url)(url) as query:
        listing = query(
            "SELECT CAST(column_name AS VARCHAR) AS column_name, CAST(data_type AS VARCHAR) AS "
            "data_type FROM information_schema.columns WHERE table_name = $1 "
            "AND table_schema = current_schema() ORDER BY ordinal_position",
            [table],
        )
        if listing.height == 0:
            return None, where
        types = dict(zip(listing["column_name"], listing["data_type"], strict=True))
        frame = query(*_select_sql(table, types, mapping, as_of, settings))
    return _rename(frame.lazy(), table, mapping), where
