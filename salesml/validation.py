"""Validate canonical input frames: good rows go on, bad rows go to quarantine with the check.

SPEC "Bad input": no row is dropped silently. `validate` splits one table into valid rows and
quarantine rows (`table_name, row (JSON), check, reason, column_name`); `enforce_threshold` stops
the run with a one-line `DataValidationError` when a table's share of bad rows reaches
`validation.max_bad_share`; `validate_tables` does both for every table before anything is
written. Problems that make a whole table unusable (a missing required column, an empty required
table, a column whose dtype cannot be cast) raise at once.

Row checks come from the pandera schemas in `salesml.contract` (validated lazily; never
`drop_invalid_rows`), plus rules across columns, rows and tables done in polars. Everything is
vectorised: one pass per check, no Python loops over rows.

Check names: not_null, unique, non_negative, allowed_values, parse_datetime, parse_number,
finite (NaN, +-inf in any float column), max_abs (beyond `validation.max_abs`), well_formed (a
row the source could not read whole, e.g. a ragged or truncated CSV line),
outcome_matches_closed_at, closed_after_created, known_deal, not_after_as_of.

Category labels (`activity_type`, `contact_role`, `stage`) are normalised by `conform` with
`contract.label_expr`, so `Demo`, `demo ` and `DEMO` are one activity type.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import polars as pl
from pandera.errors import SchemaErrors

from salesml import contract
from salesml.config import ConfigError
from salesml.timeutil import DATETIME, parse_as_of

if TYPE_CHECKING:
    from salesml.config import Settings

RAW_PREFIX = "__raw__"
"""Prefix of helper columns that keep the original text of values that failed to parse."""

MALFORMED = "__malformed__"
"""Helper column a source fills with a reason when it could not read a row whole (a ragged or
truncated CSV line); `validate` quarantines such rows with check well_formed."""

LATER_PREFIX = "later:"
"""`validate_tables` key prefix of rows that exist after as_of (`later:deals`: deal_id and
created_at of deals created after it), read only to give rows pointing at them a true reason."""

JOB_INPUTS: dict[str, tuple[str, ...]] = contract.JOB_INPUTS
"""The input tables each job reads; the first one is the one it needs (SPEC "What each job
needs"), the others are optional and may be absent or empty (a CRM export without an activity
log, a shop without inventory). Declared once, in `contract.JOB_INPUTS`."""

JOB_REQUIRED: dict[str, str] = {job: names[0] for job, names in JOB_INPUTS.items()}
"""job -> the one table it cannot run without (deal-win: deals; demand: sales)."""

NEEDED_BY_A_JOB: frozenset[str] = contract.REQUIRED_INPUTS
"""Tables some job cannot run without: by default these must be present and have rows."""

_ROW = "__row_nr"

QUARANTINE_SCHEMA: dict[str, pl.DataType] = contract.row_dtypes("quarantine")
"""The quarantine rows validation returns: the contract's `quarantine` table without the
run_id / as_of the warehouse stamps (table_name, row, check, reason, column_name)."""

_ISSUE_SCHEMA: dict[str, pl.DataType] = {
    _ROW: pl.UInt32(),
    "column_name": pl.String(),
    "check": pl.String(),
    "reason": pl.String(),
}

# ISO 8601 only: other layouts (05/01/2024) are ambiguous and are quarantined, not guessed.
# (format, has an offset). Whole-second forms come before their fractional twins: polars parses
# them several times faster, and the stable sort in `_format_order` keeps that preference.
_FORMATS: tuple[tuple[str, bool], ...] = (
    ("%Y-%m-%d %H:%M:%S", False),
    ("%Y-%m-%dT%H:%M:%S", False),
    ("%Y-%m-%d", False),
    ("%Y-%m-%dT%H:%M:%S%#z", True),
    ("%Y-%m-%d %H:%M:%S%#z", True),
    ("%Y-%m-%d %H:%M:%S%.f", False),
    ("%Y-%m-%dT%H:%M:%S%.f", False),
    ("%Y-%m-%dT%H:%M:%S%.f%#z", True),
    ("%Y-%m-%d %H:%M:%S%.f%#z", True),
    ("%Y-%m-%d %H:%M", False),
    ("%Y-%m-%dT%H:%M", False),
    ("%Y-%m-%dT%H:%M%#z", True),
    ("%Y-%m-%d %H:%M%#z", True),
)
_SNIFF_ROWS = 1000


class DataValidationError(ValueError):
    """Input that cannot be used; the message is one line naming table, column and check.

    `quarantine` holds the rows quarantined before the stop (when there are any), so a job can
    record them even though it writes nothing else.
    """

    def __init__(self, message: str, quarantine: pl.DataFrame | None = None) -> None:
        super().__init__(message)
        self.quarantine = quarantine


@dataclass(frozen=True)
class ValidationResult:
    """Valid rows (canonical columns first, then extras) and their quarantine rows."""

    valid: pl.DataFrame
    quarantine: pl.DataFrame
    n_rows: int
    n_bad_rows: int


def empty_quarantine() -> pl.DataFrame:
    """A quarantine table without rows (QUARANTINE_SCHEMA)."""
    return pl.DataFrame(schema=QUARANTINE_SCHEMA)


# ---------------------------------------------------------------------------------------------
# Conforming a frame to the canonical dtypes
# ---------------------------------------------------------------------------------------------
# A wall time in a DST gap moves to the first minute after the gap. Gaps start and end on a
# quarter hour and last at most two hours in every zone of the tz database.
_GAP_STEP = timedelta(minutes=15)
_GAP_STEPS = 12


def wall_time_to_utc_series(naive: pl.Series, timezone: str) -> pl.Series:
    """Naive wall times in `timezone` -> UTC instants (microseconds).

    An ambiguous time (the repeated hour when clocks go back) is read as its first occurrence.
    A time that does not exist (the hour skipped when clocks go forward, e.g. 02:30 on the
    spring-forward night in Europe/Berlin) is read as the wall time right after the gap (03:00),
    like pandas' `nonexistent="shift_forward"`: such a value is a clock reading rounded into
    the gap, not a bad value, so it is kept rather than quarantined as "not a datetime".
    """
    naive = naive.dt.cast_time_unit("us")
    local = naive.dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
    gap = local.is_null() & naive.is_not_null()
    if gap.any():
        rows = gap.arg_true()
        wall = naive.gather(rows)
        floor = wall.dt.truncate("15m")
        start = pl.select(
            pl.when(floor == wall).then(floor).otherwise(floor + _GAP_STEP)
        ).to_series()
        shifted = pl.select(
            pl.coalesce(
                pl.lit(start + step * _GAP_STEP).dt.replace_time_zone(
                    timezone, ambiguous="earliest", non_existent="null"
                )
                for step in range(_GAP_STEPS + 1)
            )
        ).to_series()
        local = local.scatter(rows, shifted)
    return local.dt.convert_time_zone("UTC")


def wall_time_to_utc(naive: pl.Expr, timezone: str) -> pl.Expr:
    """Expression form of `wall_time_to_utc_series` (elementwise, usable in lazy scans)."""
    return naive.map_batches(
        lambda s: wall_time_to_utc_series(s, timezone), return_dtype=DATETIME, is_elementwise=True
    )


def _to_datetime(text: pl.Series, fmt: str, aware: bool, timezone: str) -> pl.Series:
    if aware:
        return text.str.to_datetime(fmt, time_unit="us", time_zone="UTC", strict=False, cache=False)
    naive = text.str.to_datetime(fmt, time_unit="us", strict=False, cache=False)
    return wall_time_to_utc_series(naive, timezone)


def _format_order(sample: pl.Series, timezone: str) -> list[tuple[str, bool]]:
    """Formats ordered by how many of `sample` they parse (a failed attempt costs as much as
    a parse, so the column's own format must go first).
    """
    hits = [_to_datetime(sample, f, a, timezone).is_not_null().sum() for f, a in _FORMATS]
    order = sorted(range(len(_FORMATS)), key=lambda i: -hits[i])
    return [_FORMATS[i] for i in order]


def parse_datetime_series(text: pl.Series, timezone: str) -> pl.Series:
    """Parse ISO 8601 strings to UTC; naive values are wall time in `timezone`; bad -> null.

    Each format is tried only on the values no earlier one parsed, most frequent first (judged
    on a sample), so a column in one format costs one parse (~0.5 s per million naive values,
    ~1.6 s with offsets) and values in other ISO forms still parse.
    """
    clean = text.cast(pl.String).str.strip_chars()
    out = pl.Series(text.name, [None] * len(text), dtype=DATETIME)
    todo = clean.is_not_null() & (clean != "")
    for fmt, aware in _format_order(clean.filter(todo).head(_SNIFF_ROWS), timezone):
        idx = todo.arg_true()
        if idx.len() == 0:
            break
        parsed = _to_datetime(clean.gather(idx), fmt, aware, timezone)
        ok = parsed.is_not_null()
        done = idx.filter(ok)
        out = out.scatter(done, parsed.filter(ok))
        todo = todo.scatter(done, False)
    return out


def parse_datetime(text: pl.Expr, timezone: str) -> pl.Expr:
    """Expression form of `parse_datetime_series` (elementwise, usable in lazy scans)."""
    return text.map_batches(
        lambda s: parse_datetime_series(s, timezone), return_dtype=DATETIME, is_elementwise=True
    )


def _failed(text: pl.Expr, parsed: pl.Expr) -> pl.Expr:
    """The original text where a non-blank value did not parse, else null (same name as text)."""
    stripped = text.str.strip_chars()
    return pl.when(parsed.is_null() & stripped.is_not_null() & (stripped != "")).then(text)


def _dtype_error(
    table: str, column: str, source: pl.DataType, target: pl.DataType
) -> DataValidationError:
    return DataValidationError(
        f"{table}: column '{column}' has dtype {source}, which cannot be cast to {target} "
        "(check: dtype)"
    )


def _coerce(
    table: str, column: str, source: pl.DataType, target: pl.DataType, timezone: str
) -> tuple[pl.Expr, bool]:
    """Expression casting `column` to `target`, and whether text may fail to parse."""
    col = pl.col(column)
    if source == target:
        return col, False
    if source == pl.Null:
        return col.cast(target), False
    if target == pl.String:
        if isinstance(source, pl.Categorical | pl.Enum) or source.is_integer():
            return col.cast(pl.String), False
        raise _dtype_error(table, column, source, target)
    if isinstance(target, pl.Datetime):
        return _coerce_datetime(table, column, source, target, timezone)
    if target.is_numeric():
        if source.is_numeric():
            return col.cast(target), False
        if source == pl.String:
            return col.str.strip_chars().cast(target, strict=False), True
        raise _dtype_error(table, column, source, target)
    raise _dtype_error(table, column, source, target)


def _coerce_datetime(
    table: str, column: str, source: pl.DataType, target: pl.Datetime, timezone: str
) -> tuple[pl.Expr, bool]:
    """`_coerce` to a datetime target (UTC): naive and date values are wall time
    in `timezone`, text is parsed as ISO 8601 (may fail).
    """
    col = pl.col(column)
    if isinstance(source, pl.Datetime):
        if source.time_zone is None:
            return wall_time_to_utc(col, timezone), False
        return col.dt.convert_time_zone("UTC").dt.cast_time_unit("us"), False
    if source == pl.Date:
        return wall_time_to_utc(col.cast(pl.Datetime("us")), timezone), False
    if source == pl.String:
        return parse_datetime(col, timezone), True
    raise _dtype_error(table, column, source, target)


def conform(frame: pl.DataFrame | pl.LazyFrame, table: str, timezone: str = "UTC") -> pl.LazyFrame:
    """Cast `frame` (canonical column names) to the contract's dtypes, lazily.

    Datetimes become UTC (naive = wall time in `timezone`; strings parsed as ISO 8601). A text
    value that does not parse becomes null and its original text is kept in `__raw__<column>`,
    so `validate` can quarantine that row (check parse_datetime / parse_number) instead of
    failing the table. Category labels (`ColumnSpec.label`) are normalised
    (`contract.label_expr`). Absent optional columns are added as nulls; extra columns are kept
    after the canonical ones, then the helper columns (`__raw__*`, `__malformed__`). Raises
    DataValidationError for a missing required column or a dtype that cannot be cast.
    Idempotent.
    """
    lf = frame.lazy()
    schema = lf.collect_schema()
    specs = contract.input_columns(table)
    missing = [c for c, spec in specs.items() if spec.required and c not in schema]
    if missing:
        raise DataValidationError(
            f"{table}: required column '{missing[0]}' is missing (check: column_present); "
            f"columns found: {', '.join(schema.names()) or 'none'}"
        )
    exprs: list[pl.Expr] = []
    fallible: list[str] = []
    for name, spec in specs.items():
        if name not in schema:
            exprs.append(pl.lit(None, dtype=spec.dtype).alias(name))
            continue
        value, may_fail = _coerce(table, name, schema[name], spec.dtype, timezone)
        if table == "deals" and name == "outcome":
            value = value.str.strip_chars().str.to_lowercase().replace("", None)
        if spec.label:
            value = contract.label_expr(value)
        exprs.append(value.alias(name))
        if may_fail:  # keep the text beside the parsed value (parsed once, never twice)
            exprs.append(pl.col(name).alias(RAW_PREFIX + name))
            fallible.append(name)
    raws = [c for c in schema.names() if c.startswith(RAW_PREFIX)]
    raws += [RAW_PREFIX + n for n in fallible if RAW_PREFIX + n not in raws]
    helpers = [*raws, *([MALFORMED] if MALFORMED in schema else [])]
    extras = [c for c in schema.names() if c not in specs and not _is_helper(c)]
    lf = lf.with_columns(exprs)
    if fallible:
        lf = lf.with_columns(_failed(pl.col(RAW_PREFIX + n), pl.col(n)) for n in fallible)
    return lf.select([*specs, *extras, *helpers])


def _is_helper(column: str) -> bool:
    return column.startswith(RAW_PREFIX) or column == MALFORMED


# ---------------------------------------------------------------------------------------------
# Row checks
# ---------------------------------------------------------------------------------------------
def _issues(
    frame: pl.DataFrame, mask: pl.Expr, column: str | None, check: str, reason: pl.Expr
) -> pl.DataFrame:
    return frame.filter(mask).select(
        pl.col(_ROW),
        pl.lit(column, dtype=pl.String).alias("column_name"),
        pl.lit(check).alias("check"),
        reason.cast(pl.String).alias("reason"),
    )


def _iso(expr: pl.Expr) -> pl.Expr:
    return expr.dt.to_string("%Y-%m-%dT%H:%M:%S%:z")


def _parse_issues(df: pl.DataFrame, table: str) -> list[pl.DataFrame]:
    specs = contract.input_columns(table)
    out = []
    for raw in (c for c in df.columns if c.startswith(RAW_PREFIX)):
        column = raw.removeprefix(RAW_PREFIX)
        is_time = isinstance(specs[column].dtype, pl.Datetime)
        check = "parse_datetime" if is_time else "parse_number"
        wanted = "a datetime (ISO 8601, e.g. 2024-06-01T12:00:00)" if is_time else "a number"
        reason = pl.format("{} '{}' is not {}", pl.lit(column), pl.col(raw), pl.lit(wanted))
        out.append(_issues(df, pl.col(raw).is_not_null(), column, check, reason))
    return out


def _check_names(table: str) -> dict[str, str]:
    """Pandera's failure `check` text -> our check name."""
    names = {"not_nullable": "not_null", "field_uniqueness": "unique"}
    schema = contract.INPUT_SCHEMAS[table]
    for column in schema.columns.values():
        for check in column.checks:
            names[str(check.error)] = str(check.name)
    return names


def _schema_issues(df: pl.DataFrame, table: str) -> list[pl.DataFrame]:
    """Row-level failures of the pandera schema (lazy=True), as issues."""
    try:
        contract.INPUT_SCHEMAS[table].validate(df, lazy=True)
    except SchemaErrors as err:
        cases: pl.DataFrame = err.failure_cases
    else:
        return []
    whole = cases.filter(pl.col("index").is_null())
    if whole.height:
        first = whole.row(0, named=True)
        raise DataValidationError(
            f"{table}: column '{first['column']}' failed {first['check']} "
            f"(found {first['failure_case']}) (check: schema)"
        )
    names = _check_names(table)
    named = pl.col("check").replace_strict(names, default=pl.col("check"))
    # pandera counts NaN as a missing value; a NaN is a non-finite number, not an empty cell
    nan = (named == "not_null") & pl.col("failure_case").is_not_null()
    check = pl.when(nan).then(pl.lit("finite")).otherwise(named)
    value = pl.col("failure_case").fill_null("null")
    reason = (
        pl.when(check == "not_null")
        .then(pl.format("{} is empty", pl.col("column")))
        .when(check == "unique")
        .then(pl.format("{} '{}' appears in more than one row", pl.col("column"), value))
        .when(check == "finite")
        .then(_not_finite_reason(pl.col("column"), value))
        .otherwise(pl.format("{} '{}' {}", pl.col("column"), value, pl.col("check")))
    )
    return [
        cases.select(
            pl.col("index").cast(pl.UInt32).alias(_ROW),
            pl.col("column").alias("column_name"),
            check.alias("check"),
            reason.alias("reason"),
        )
    ]


def _not_finite_reason(column: pl.Expr, value: pl.Expr) -> pl.Expr:
    return pl.format(
        "{} is {}, not a finite number (leave the cell empty for an unknown value)", column, value
    )


def _extra_finite_issues(df: pl.DataFrame, table: str) -> list[pl.DataFrame]:
    """`finite` on float columns the contract does not declare (the schema covers the rest):
    an extra column may be named as a feature, and a NaN or inf there breaks the model.
    """
    declared = contract.input_columns(table)
    floats = [
        c
        for c, dtype in df.schema.items()
        if c not in declared and not _is_helper(c) and dtype in (pl.Float32, pl.Float64)
    ]
    return [
        _issues(
            df,
            ~pl.col(c).is_finite().fill_null(True),
            c,
            "finite",
            _not_finite_reason(pl.lit(c), pl.col(c).cast(pl.String)),
        )
        for c in floats
    ]


def _max_abs_issues(
    df: pl.DataFrame, table: str, max_abs: Mapping[str, float]
) -> list[pl.DataFrame]:
    """Numbers beyond the configured bound: finite, but no real amount or quantity is that
    large (1e308 from a broken export would otherwise become a forecast).
    """
    out = []
    for column, bound in max_abs.items():
        key = f"validation.max_abs.{table}.{column}"
        if column not in df.columns:
            raise ConfigError(f"{key}: {table} has no column '{column}'")
        if not df.schema[column].is_numeric():
            raise ConfigError(f"{key}: {table}.{column} is not a number column")
        if not (math.isfinite(bound) and bound > 0):
            raise ConfigError(f"{key}: the bound must be a positive finite number, not {bound}")
        value = pl.col(column).cast(pl.Float64)
        reason = pl.format(
            "{} {} is beyond {} in absolute value (limit {})",
            pl.lit(column),
            value.cast(pl.String),
            pl.lit(f"{bound:g}"),
            pl.lit(key),
        )
        beyond = (value.abs() > bound) & value.is_finite()
        out.append(_issues(df, beyond.fill_null(False), column, "max_abs", reason))
    return out


def _malformed_issues(df: pl.DataFrame) -> list[pl.DataFrame]:
    if MALFORMED not in df.columns:
        return []
    return [_issues(df, pl.col(MALFORMED).is_not_null(), None, "well_formed", pl.col(MALFORMED))]


def _missing(df: pl.DataFrame, column: str) -> pl.Expr:
    """Null and not because it failed to parse (that row is quarantined for the parse)."""
    raw = RAW_PREFIX + column
    if raw in df.columns:
        return pl.col(column).is_null() & pl.col(raw).is_null()
    return pl.col(column).is_null()


def _deal_rule_issues(df: pl.DataFrame) -> list[pl.DataFrame]:
    outcome, closed, created = pl.col("outcome"), pl.col("closed_at"), pl.col("created_at")
    return [
        _issues(
            df,
            outcome.is_not_null() & _missing(df, "closed_at"),
            "closed_at",
            "outcome_matches_closed_at",
            pl.format("outcome is '{}' but closed_at is empty", outcome),
        ),
        _issues(
            df,
            closed.is_not_null() & _missing(df, "outcome"),
            "outcome",
            "outcome_matches_closed_at",
            pl.format("closed_at is {} but outcome is empty", _iso(closed)),
        ),
        _issues(
            df,
            closed < created,
            "closed_at",
            "closed_after_created",
            pl.format("closed_at {} is before created_at {}", _iso(closed), _iso(created)),
        ),
    ]


def _reference_issues(
    df: pl.DataFrame,
    table: str,
    reference: Mapping[str, pl.DataFrame | pl.LazyFrame] | None,
    later: Mapping[str, pl.DataFrame | pl.LazyFrame],
) -> list[pl.DataFrame]:
    """Rows pointing at a row not among the valid rows of the referenced table.

    The reason says when the referenced row exists but only after as_of (`later`): an
    activity of a deal created in 2200 is not "unknown", its deal is not created yet. Only
    this reason's text looks at rows after as_of; which rows are valid never depends on them.
    """
    if reference is None or table not in contract.REFERENCES:
        return []
    column, ref_table, ref_column = contract.REFERENCES[table]
    if ref_table not in reference:
        return []
    known = reference[ref_table].lazy().select(pl.col(ref_column).unique()).collect().to_series()
    value = pl.col(column)
    singular = ref_table.removesuffix("s")
    bad = df.filter(value.is_not_null() & ~value.is_in(known.implode()))
    reason = pl.format("{} '{}' is not a known valid {}", pl.lit(column), value, pl.lit(singular))
    time_column = contract.EVENT_TIME.get(ref_table)
    if ref_table in later and time_column is not None and bad.height:
        created = (
            later[ref_table]
            .lazy()
            .group_by(pl.col(ref_column).alias(column))
            .agg(pl.col(time_column).min().alias("__later_time"))
            .collect()
        )
        bad = bad.join(created, on=column, how="left").rechunk()  # see `validate`
        reason = (
            pl.when(pl.col("__later_time").is_not_null())
            .then(
                pl.format(
                    "{} '{}' is a {} with {} {}, after as_of: not known yet",
                    pl.lit(column),
                    value,
                    pl.lit(singular),
                    pl.lit(time_column),
                    _iso(pl.col("__later_time")),
                )
            )
            .otherwise(reason)
        )
    return [_issues(bad, pl.lit(True), column, f"known_{singular}", reason)]


def _future_issues(
    df: pl.DataFrame, table: str, as_of: datetime | None, known_signals: Collection[str]
) -> list[pl.DataFrame]:
    if as_of is None:
        return []
    limit = pl.lit(as_of, dtype=DATETIME)
    out = []
    for column in contract.FUTURE_CHECKED.get(table, ()):
        late = pl.col(column) > limit
        if table == "signals":
            late = late & ~pl.col("name").is_in(list(known_signals))
        reason = pl.format(
            "{} {} is after as_of {}", pl.lit(column), _iso(pl.col(column)), _iso(limit)
        )
        out.append(_issues(df, late, column, "not_after_as_of", reason))
    return out


def _row_json(df: pl.DataFrame) -> pl.Expr:
    """The row as JSON, with the original text of values that failed to parse."""
    fields = []
    for name in df.columns:
        if name == _ROW or _is_helper(name):
            continue
        raw = RAW_PREFIX + name
        if raw in df.columns:
            text = (
                _iso(pl.col(name))
                if isinstance(df.schema[name], pl.Datetime)
                else pl.col(name).cast(pl.String)
            )
            fields.append(pl.coalesce(pl.col(raw), text).alias(name))
        else:
            fields.append(pl.col(name))
    return pl.struct(fields).struct.json_encode()


def validate(
    frame: pl.DataFrame | pl.LazyFrame,
    table: str,
    *,
    as_of: datetime | None = None,
    reference: Mapping[str, pl.DataFrame | pl.LazyFrame] | None = None,
    timezone: str = "UTC",
    known_signals: Collection[str] = (),
    max_abs: Mapping[str, float] | None = None,
    later: Mapping[str, pl.DataFrame | pl.LazyFrame] | None = None,
    required: bool | None = None,
) -> ValidationResult:
    """Split `frame` (canonical names) into valid rows and quarantine rows.

    reference: already-validated tables a row may point at (`{"deals": valid_deals}`); a
    pointer to a deal not there is quarantined (known_deal); `later` holds the rows of those
    tables that exist only after as_of, for the reason. as_of: event times after it are
    quarantined (not_after_as_of), except known-in-advance signals (`known_signals`).
    max_abs: {column: bound} for this table (check max_abs). A row may fail several checks and
    then has one quarantine row per check, except a row the source could not read whole
    (well_formed), which has that one. Raises DataValidationError when the table cannot be used
    at all (see `conform`; an empty required table), ConfigError for a bound on no number
    column. required: whether an empty table is refused (check non_empty); default: when
    `table` is one a job cannot run without (`NEEDED_BY_A_JOB`).
    """
    if required is None:
        required = table in NEEDED_BY_A_JOB
    # one chunk per column: polars 2.1 panics in pl.format over a filtered multi-chunk column
    # (as a CSV read in parallel or a multi-row-group Parquet file gives)
    df = conform(frame, table, timezone).collect().rechunk()
    if df.height == 0:
        if required:
            when = f" at or before as_of {as_of.isoformat()}" if as_of is not None else ""
            raise DataValidationError(f"{table}: table has no rows{when} (check: non_empty)")
        return ValidationResult(_public(df), empty_quarantine(), 0, 0)
    if as_of is not None:
        as_of = parse_as_of(as_of, timezone)
    df = df.with_row_index(_ROW)
    issues = _all_issues(df, table, as_of, reference, later or {}, known_signals, max_abs or {})
    if issues.height == 0:
        return ValidationResult(_public(df), empty_quarantine(), df.height, 0)
    bad = issues.get_column(_ROW).unique()
    rows = df.filter(pl.col(_ROW).is_in(bad.implode())).select(_ROW, _row_json(df).alias("row"))
    quarantine = (
        issues.join(rows, on=_ROW, how="left")
        .sort(_ROW, "check", "column_name", maintain_order=True)
        .select(pl.lit(table).alias("table_name"), "row", "check", "reason", "column_name")
    )
    valid = df.filter(~pl.col(_ROW).is_in(bad.implode()))
    return ValidationResult(_public(valid), quarantine, df.height, bad.len())


def _all_issues(
    df: pl.DataFrame,
    table: str,
    as_of: datetime | None,
    reference: Mapping[str, pl.DataFrame | pl.LazyFrame] | None,
    later: Mapping[str, pl.DataFrame | pl.LazyFrame],
    known_signals: Collection[str],
    max_abs: Mapping[str, float],
) -> pl.DataFrame:
    """Every check's issues (`_ISSUE_SCHEMA`), one per row, column and check, with the
    follow-on failures of one cause removed (see `_drop_follow_on`).
    """
    parse = _parse_issues(df, table)
    malformed = _malformed_issues(df)
    found = [
        *parse,
        *malformed,
        *_schema_issues(df, table),
        *_extra_finite_issues(df, table),
        *_max_abs_issues(df, table, max_abs),
        *(_deal_rule_issues(df) if table == "deals" else []),
        *_reference_issues(df, table, reference, later),
        *_future_issues(df, table, as_of, known_signals),
    ]
    issues = pl.concat([pl.DataFrame(schema=_ISSUE_SCHEMA), *found], how="vertical_relaxed")
    issues = issues.unique([_ROW, "column_name", "check"], keep="first", maintain_order=True)
    return _drop_follow_on(issues, parse, malformed)


def _drop_follow_on(
    issues: pl.DataFrame, parse: list[pl.DataFrame], malformed: list[pl.DataFrame]
) -> pl.DataFrame:
    """One reason per cause: a value that failed to parse is null (report the parse, not also
    not_null); a non-finite number fails only `finite` (-inf is also negative, but the cause is
    that it is not a number); a row read in part fails other checks only because of that.
    """
    if parse:
        parsed_away = pl.concat(parse).select(_ROW, "column_name")
        issues = issues.join(
            parsed_away.with_columns(pl.lit("not_null").alias("check")),
            on=[_ROW, "column_name", "check"],
            how="anti",
        )
    non_finite = issues.filter(pl.col("check") == "finite").select(_ROW, "column_name")
    if non_finite.height:
        issues = pl.concat(
            [
                issues.filter(pl.col("check") == "finite"),
                issues.join(non_finite, on=[_ROW, "column_name"], how="anti", nulls_equal=True),
            ]
        )
    if malformed:
        broken = pl.concat(malformed).get_column(_ROW)
        issues = issues.filter(
            (pl.col("check") == "well_formed") | ~pl.col(_ROW).is_in(broken.implode())
        )
    return issues


def _public(df: pl.DataFrame) -> pl.DataFrame:
    return df.select([c for c in df.columns if c != _ROW and not _is_helper(c)])


# ---------------------------------------------------------------------------------------------
# Threshold policy
# ---------------------------------------------------------------------------------------------
def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _example(row_json: str, table: str) -> str:
    try:
        row = json.loads(row_json)
    except (TypeError, ValueError):
        return row_json[:80]
    ids = contract.ID_COLUMNS.get(table, ())
    parts = [f"{c}={row.get(c)}" for c in ids if c in row]
    return " ".join(parts) if parts else row_json[:80]


def enforce_threshold(
    table: str,
    n_rows: int,
    quarantine: pl.DataFrame,
    max_bad_share: float,
    example_rows: int = 3,
    *,
    bad_rows: int | None = None,
) -> None:
    """Stop (DataValidationError) when `table`'s share of bad rows is >= `max_bad_share`.

    max_bad_share 0 stops on any bad row. `bad_rows` is the number of distinct bad rows (from
    ValidationResult); without it the distinct JSON rows of the quarantine are counted. The
    one-line message names the table, the most frequent column and check, and example rows.
    """
    q = quarantine.filter(pl.col("table_name") == table)
    bad = bad_rows if bad_rows is not None else q.get_column("row").n_unique()
    if bad == 0 or n_rows == 0:
        return
    share = bad / n_rows
    if share < max_bad_share:
        return
    if q.height == 0:
        raise DataValidationError(
            f"{table}: {bad} of {n_rows} rows ({share:.1%}) failed validation, at or above "
            f"validation.max_bad_share={max_bad_share:g}"
        )
    if "column_name" not in q.columns:
        q = q.with_columns(pl.lit(None, dtype=pl.String).alias("column_name"))
    counts = (
        q.group_by("column_name", "check", maintain_order=True)
        .agg(
            pl.col("row").n_unique().alias("rows"),
            pl.col("row").head(example_rows),
            pl.first("reason"),
        )
        .sort("rows", descending=True, maintain_order=True)
    )
    top = counts.row(0, named=True)
    examples = "; ".join(_example(r, table) for r in top["row"])
    others = ", ".join(
        f"{r['column_name'] or '-'}/{r['check']} ({r['rows']})"
        for r in counts.slice(1).iter_rows(named=True)
    )
    message = (
        f"{table}: {bad} of {n_rows} rows ({share:.1%}) failed validation, at or above "
        f"validation.max_bad_share={max_bad_share:g}; column '{top['column_name'] or '-'}' "
        f"check '{top['check']}' failed {_rows(top['rows'])}, e.g. {examples} "
        f"({top['reason']})" + (f"; also {others}" if others else "")
    )
    raise DataValidationError(" ".join(message.split()))


def validate_tables(
    tables: Mapping[str, pl.DataFrame | pl.LazyFrame],
    settings: Settings,
    as_of: datetime | None,
    required: Collection[str] | None = None,
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    """Validate every table (deals first) and enforce the threshold for each.

    `tables` may hold `later:<table>` frames (see `LATER_PREFIX`), used only for reasons.
    required: the tables that must have rows (default: those among `tables` some job cannot
    run without, `NEEDED_BY_A_JOB`); any other table may be empty.
    Returns the clean tables and one quarantine frame. Raises DataValidationError before
    returning anything when a table is unusable or too many of its rows are bad, so nothing
    downstream gets written; ConfigError for a `validation.max_abs` naming no input table.
    """
    later = _later_tables(tables)
    bounds = settings.validation.max_abs
    _check_bounds(bounds)
    must_have_rows = NEEDED_BY_A_JOB if required is None else frozenset(required)
    clean: dict[str, pl.DataFrame] = {}
    quarantines = [empty_quarantine()]
    for name in (t for t in contract.INPUT_ORDER if t in tables):
        result = validate(
            tables[name],
            name,
            as_of=as_of,
            reference=clean,
            timezone=settings.timezone,
            known_signals=settings.demand.known_signals,
            max_abs=bounds.get(name, {}),
            later=later,
            required=name in must_have_rows,
        )
        quarantines.append(result.quarantine)
        try:
            enforce_threshold(
                name,
                result.n_rows,
                result.quarantine,
                settings.validation.max_bad_share,
                settings.validation.example_rows,
                bad_rows=result.n_bad_rows,
            )
        except DataValidationError as exc:
            exc.quarantine = pl.concat(quarantines)
            raise
        clean[name] = result.valid
    return clean, pl.concat(quarantines)


def _later_tables(
    tables: Mapping[str, pl.DataFrame | pl.LazyFrame],
) -> dict[str, pl.DataFrame | pl.LazyFrame]:
    """The `later:<table>` frames of `tables` by table name; refuses unknown table names."""
    later = {
        name.removeprefix(LATER_PREFIX): frame
        for name, frame in tables.items()
        if name.startswith(LATER_PREFIX)
    }
    unknown = sorted((set(tables) - set(contract.INPUT_ORDER)) - {LATER_PREFIX + t for t in later})
    unknown += sorted(set(later) - set(contract.INPUT_ORDER))
    if unknown:
        raise ValueError(f"unknown input table(s): {', '.join(unknown)}")
    return later


def _check_bounds(bounds: Mapping[str, Mapping[str, float]]) -> None:
    """`validation.max_abs` may name input tables only (ConfigError naming the stray one)."""
    for table in bounds:
        if table not in contract.INPUT_ORDER:
            raise ConfigError(
                f"validation.max_abs: '{table}' is not an input table; "
                f"known: {', '.join(contract.INPUT_ORDER)}"
            )


# ---------------------------------------------------------------------------------------------
# The input schema in words (README "The data contract")
# ---------------------------------------------------------------------------------------------
_TYPE_WORDS = {pl.String: "text", pl.Float64: "number", pl.Int64: "integer"}


def _type_word(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.Datetime):
        return "datetime"
    return _TYPE_WORDS.get(type(dtype), str(dtype))


def _rule_words(table: str, column: str, spec: contract.ColumnSpec) -> str:
    """A column's rules in words, from its `contract.ColumnSpec` (and the cross-column checks
    `validate` adds), so the README table cannot drift from what is checked.
    """
    words = ["optional column" if not spec.required else "required column"]
    words.append("nullable" if spec.nullable else "not null")
    if spec.unique:
        words.append("unique")
    for check in spec.checks:
        words.append(str(check.error).removeprefix("must be "))
    if spec.dtype == pl.Float64:
        words.append("finite")
    if isinstance(spec.dtype, pl.Datetime) and column in contract.FUTURE_CHECKED.get(table, ()):
        known = " (known-in-advance names, `demand.known_signals`, may be)"
        words.append("not after as_of" + (known if table == "signals" else ""))
    reference = contract.REFERENCES.get(table)
    if reference is not None and reference[0] == column:
        words.append(f"a known {reference[1].removesuffix('s')}")
    if spec.label:
        words.append("label, normalised (`Demo` -> `demo`)")
    if spec.description:
        words.append(spec.description)
    return "; ".join(words)


def input_schema_markdown() -> str:
    """The README table of every input table, column, type and rule, from `salesml.contract`.

    `python -m salesml.validation` prints it; tests/test_validation.py checks the README
    holds exactly this text, so a contract change shows up as a failing test until the README
    is regenerated.
    """
    needed_by = {table: job for job, table in JOB_REQUIRED.items()}
    lines = ["| table | column | type | rule |", "|---|---|---|---|"]
    for table in contract.INPUT_ORDER:
        job = needed_by.get(table)
        need = f"needed by {job} jobs" if job else "optional"
        for i, (column, spec) in enumerate(contract.input_columns(table).items()):
            shown = f"`{table}` ({need})" if i == 0 else ""
            words = _rule_words(table, column, spec)
            lines.append(f"| {shown} | `{column}` | {_type_word(spec.dtype)} | {words} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover - `python -m salesml.validation`
    print(input_schema_markdown(), end="")
