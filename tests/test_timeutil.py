"""Time conventions: as_of parsing and UTC normalisation."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from salesml.timeutil import DATETIME, ensure_utc, parse_as_of


def test_bare_date_is_midnight_in_config_timezone() -> None:
    assert parse_as_of("2025-01-15", "Europe/Berlin") == datetime(2025, 1, 14, 23, tzinfo=UTC)
    assert parse_as_of("2025-07-15", "Europe/Berlin") == datetime(2025, 7, 14, 22, tzinfo=UTC)


def test_aware_as_of_keeps_its_offset() -> None:
    assert parse_as_of("2025-01-15T10:00:00+02:00", "UTC") == datetime(2025, 1, 15, 8, tzinfo=UTC)
    assert parse_as_of("2025-01-15T10:00:00Z", "Asia/Tokyo") == datetime(
        2025, 1, 15, 10, tzinfo=UTC
    )


def test_bad_as_of_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not an ISO date"):
        parse_as_of("yesterday", "UTC")


def test_naive_columns_are_read_in_timezone_and_aware_ones_converted() -> None:
    frame = pl.DataFrame(
        {
            "naive": [datetime(2025, 3, 30, 1, 30)],
            "aware": [datetime(2025, 3, 30, 1, 30, tzinfo=UTC)],
            "day": [datetime(2025, 3, 30).date()],
        }
    ).with_columns(pl.col("aware").dt.convert_time_zone("America/New_York"))
    out = ensure_utc(frame, ["naive", "aware", "day"], "Europe/Berlin").collect()
    assert out.schema["naive"] == DATETIME and out.schema["aware"] == DATETIME
    assert out["naive"][0] == datetime(2025, 3, 30, 0, 30, tzinfo=UTC)
    assert out["aware"][0] == datetime(2025, 3, 30, 1, 30, tzinfo=UTC)
    assert out["day"][0] == datetime(2025, 3, 29, 23, tzinfo=UTC)


def test_nonexistent_local_time_becomes_null_not_a_shifted_value() -> None:
    # 02:30 on the spring-forward day does not exist in Berlin.
    frame = pl.DataFrame({"ts": [datetime(2025, 3, 30, 2, 30)]})
    out = ensure_utc(frame, ["ts"], "Europe/Berlin").collect()
    assert out["ts"][0] is None


@pytest.mark.parametrize(
    "value",
    ["9999-12-31", "9999-12-31T23:59:59+00:00", "3000-01-01", "1899-12-31", "0001-01-01"],
)
def test_as_of_outside_the_supported_years_is_refused_not_an_overflow(value: str) -> None:
    with pytest.raises(ValueError, match="out of range: use a date from 1900-01-01 to 2999-12-31"):
        parse_as_of(value, "Pacific/Kiritimati")


def test_as_of_at_the_bounds_is_accepted_and_arithmetic_is_safe() -> None:
    from datetime import timedelta

    last = parse_as_of("2999-12-31T23:59", "Pacific/Kiritimati")
    first = parse_as_of("1900-01-01", "UTC")
    assert last + timedelta(days=3650) > last and first - timedelta(days=3650) < first
    with pytest.raises(ValueError, match="out of range"):
        parse_as_of(datetime(9999, 12, 31, tzinfo=UTC))
