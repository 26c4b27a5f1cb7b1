"""Time conventions shared by every module.

Inside salesml every datetime is timezone-aware UTC (`pl.Datetime("us", "UTC")`); naive input
is interpreted in the configured timezone. `as_of` is the instant the world is seen from: an
event with time <= as_of is known, anything later is the future and must not be read.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import polars as pl

DATETIME = pl.Datetime("us", "UTC")

# The as_of values salesml accepts. Jobs add and subtract years of history and horizons to
# as_of; far from these bounds Python's datetime overflows (year 9999 + 4 hours) and polars'
# microsecond range is near, so an as_of outside them is refused up front, in one line.
AS_OF_MIN = date(1900, 1, 1)
AS_OF_MAX = date(2999, 12, 31)


def parse_as_of(text: str | datetime | None, timezone: str = "UTC") -> datetime:
    """Parse `--as-of` (ISO date or datetime); a naive value is read in `timezone`.

    None means now. A bare date means midnight at the start of that day in `timezone`.
    Raises ValueError (one line) for text that is not ISO, or a value outside
    AS_OF_MIN..AS_OF_MAX, where date arithmetic on as_of would overflow.
    """
    if text is None:
        return datetime.now(UTC).replace(microsecond=0)
    if isinstance(text, datetime):
        value = text
    else:
        try:
            value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"--as-of {text!r} is not an ISO date or datetime (e.g. 2024-06-01T12:00)"
            ) from None
    if not AS_OF_MIN <= value.date() <= AS_OF_MAX:
        shown = text if isinstance(text, str) else value.isoformat()
        raise ValueError(
            f"--as-of {shown!r} is out of range: use a date from {AS_OF_MIN} to {AS_OF_MAX}"
        )
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(timezone))
    return value.astimezone(UTC)


def to_utc(column: pl.Expr, timezone: str) -> pl.Expr:
    """Cast a datetime expression to UTC; naive values are taken as wall time in `timezone`.

    Works on both naive and aware columns because the caller checks the dtype first.
    """
    return column.dt.replace_time_zone(
        timezone, ambiguous="earliest", non_existent="null"
    ).dt.convert_time_zone("UTC")


def ensure_utc(
    frame: pl.LazyFrame | pl.DataFrame, columns: list[str], timezone: str
) -> pl.LazyFrame:
    """Return `frame` with the datetime `columns` as UTC-aware microsecond datetimes."""
    lf = frame.lazy()
    schema = lf.collect_schema()
    exprs = []
    for name in columns:
        if name not in schema:
            continue
        dtype = schema[name]
        if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
            exprs.append(pl.col(name).dt.convert_time_zone("UTC").dt.cast_time_unit("us"))
        elif isinstance(dtype, pl.Datetime):
            exprs.append(to_utc(pl.col(name).dt.cast_time_unit("us"), timezone))
        elif dtype == pl.Date:
            exprs.append(to_utc(pl.col(name).cast(pl.Datetime("us")), timezone))
    return lf.with_columns(exprs) if exprs else lf
