"""Bucketing: midnight alignment in the configured timezone, DST days, zero-fill, closed slots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from salesml.config import DemandSettings
from salesml.demand import buckets
from salesml.demand.features import build_history
from salesml.timeutil import DATETIME
from tests.demand.conftest import sales_frame

DEMAND = DemandSettings()


def _index(ts: datetime, tz: str) -> int:
    frame = pl.DataFrame({"ts": [ts]}, schema={"ts": DATETIME})
    return int(frame.select(buckets.bucket_index(pl.col("ts"), tz, 4)).item())


def _start(index: int, tz: str) -> datetime:
    return buckets.bucket_start_value(index, tz, 4)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_buckets_align_to_local_midnight() -> None:
    tz = "America/New_York"  # UTC-4 in July
    late = _index(utc(2024, 7, 2, 3, 59), tz)  # 23:59 local on July 1
    early = _index(utc(2024, 7, 2, 4, 1), tz)  # 00:01 local on July 2
    assert early == late + 1
    assert _start(early, tz) == utc(2024, 7, 2, 4)  # local midnight
    assert _start(late, tz) == utc(2024, 7, 2, 0)  # 20:00 local
    frame = pl.DataFrame({"b": [early]}, schema={"b": pl.Int64})
    assert frame.select(buckets.bucket_of_day(pl.col("b"), 4)).item() == 0
    assert frame.select(buckets.weekday(pl.col("b"), 4)).item() == 1  # Tuesday


@pytest.mark.parametrize(
    ("tz", "day", "first_end_utc", "hours"),
    [
        # spring forward: the 00:00-04:00 bucket lasts 3 hours
        ("Europe/Berlin", (2024, 3, 31), utc(2024, 3, 31, 2), 3),
        ("America/New_York", (2024, 3, 10), utc(2024, 3, 10, 8), 3),
        # fall back: it lasts 5 hours
        ("Europe/Berlin", (2024, 10, 27), utc(2024, 10, 27, 3), 5),
        ("America/New_York", (2024, 11, 3), utc(2024, 11, 3, 9), 5),
    ],
)
def test_dst_days_keep_six_buckets_aligned_to_wall_time(
    tz: str, day: tuple[int, int, int], first_end_utc: datetime, hours: int
) -> None:
    from zoneinfo import ZoneInfo

    midnight = datetime(*day, tzinfo=ZoneInfo(tz)).astimezone(UTC)
    first = _index(midnight, tz)
    assert _start(first, tz) == midnight
    assert _start(first + 1, tz) == first_end_utc
    assert (first_end_utc - midnight) == timedelta(hours=hours)
    # the day still has exactly 6 buckets and the next day starts at local midnight
    next_midnight = datetime(*day, tzinfo=ZoneInfo(tz)).astimezone(UTC) + timedelta(
        hours=24 + (hours - 4)
    )
    assert _start(first + 6, tz) == next_midnight
    # a sale inside the odd-length bucket lands in it
    inside = first_end_utc - timedelta(minutes=1)
    assert _index(inside, tz) == first
    assert _index(first_end_utc, tz) == first + 1


@settings(max_examples=200, deadline=None)
@given(
    seconds=st.integers(min_value=1_500_000_000, max_value=1_900_000_000),
    tz=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Sydney"]),
    hours=st.sampled_from([1, 2, 4, 6, 24]),
)
def test_every_instant_lies_in_its_bucket(seconds: int, tz: str, hours: int) -> None:
    ts = datetime.fromtimestamp(seconds, tz=UTC)
    frame = pl.DataFrame({"ts": [ts]}, schema={"ts": DATETIME})
    index = frame.select(buckets.bucket_index(pl.col("ts"), tz, hours)).item()
    start = buckets.bucket_start_value(index, tz, hours)
    end = buckets.bucket_start_value(index + 1, tz, hours)
    assert start <= ts < end


def test_origin_is_last_complete_bucket() -> None:
    tz = "UTC"
    on_boundary = utc(2024, 5, 1, 8)
    inside = utc(2024, 5, 1, 9, 30)
    assert buckets.origin_end(on_boundary, tz, 4) == on_boundary
    assert buckets.origin_end(inside, tz, 4) == on_boundary  # the 08-12 bucket is partial


def test_grid_zero_fills_between_sales_and_starts_at_first_sale() -> None:
    sales = sales_frame(
        [
            (utc(2024, 5, 1, 1), "c", "a", 2.0),
            (utc(2024, 5, 1, 21), "c", "a", 3.0),
            (utc(2024, 5, 1, 9), "c", "b", 1.0),
            (utc(2024, 4, 30, 9), "c", "b", -1.0),  # a return before b's first sale: no row
        ]
    )
    history = build_history(
        sales, DemandSettings(grid={"detect_closed": False}), "UTC", utc(2024, 5, 2), horizon=2
    )
    grid = history.grid.join(history.series.select("series_id", "sku"), on="series_id")
    a = grid.filter(pl.col("sku") == "a").sort("bucket")
    assert a["y"].to_list() == [2.0, 0.0, 0.0, 0.0, 0.0, 3.0, None, None]  # 2 future buckets
    b = grid.filter(pl.col("sku") == "b").sort("bucket")
    assert b["y"].to_list() == [1.0, 0.0, 0.0, 0.0, None, None]  # starts at its first sale
    assert a["unit_price"].to_list() == [1.0] * 8  # last price carried forward
    assert b["unit_price"].to_list() == [1.0] * 6


@pytest.mark.parametrize(("mode", "expected"), [("net", [1.0, 0.0]), ("ignore", [3.0, 2.0])])
def test_returns_net_or_ignored(mode: str, expected: list[float]) -> None:
    sales = sales_frame(
        [
            (utc(2024, 5, 1, 1), "c", "a", 3.0),
            (utc(2024, 5, 1, 2), "c", "a", -2.0),
            (utc(2024, 5, 1, 5), "c", "a", 2.0),
            (utc(2024, 5, 1, 6), "c", "a", -5.0),  # more returned than sold: demand 0, not -3
        ]
    )
    demand = DemandSettings(grid={"returns": mode})  # type: ignore[arg-type]
    sold = buckets.bucket_sales(sales, demand, "UTC", origin=10**9).collect()
    assert sold.sort("bucket")["y"].to_list() == expected


def test_always_closed_slots_are_detected_per_customer() -> None:
    start = utc(2024, 4, 1)  # Monday
    rows = []
    for d in range(42):
        day = start + timedelta(days=d)
        rows.append((day.replace(hour=10), "shop", "a", 1.0))  # 08-12 every day
        if day.weekday() != 6:
            rows.append((day.replace(hour=14), "shop", "a", 1.0))  # 12-16, not on Sundays
        rows.append((day.replace(hour=2), "late", "a", 1.0))  # a night shop
    sales = sales_frame(rows)
    demand = DemandSettings(grid={"closed_min_weeks": 4})
    origin = buckets.origin_bucket(start + timedelta(days=42), "UTC", 4)
    closed = buckets.closed_slots(
        buckets.bucket_sales(sales, demand, "UTC", origin), demand, origin
    )
    shop = set(closed.filter(pl.col("customer_id") == "shop")["slot"].to_list())
    # shop sells only in slot 2 each day and slot 3 Monday-Saturday
    expected = {d * 6 + b for d in range(7) for b in range(6) if b not in (2, 3)} | {6 * 6 + 3}
    assert shop == expected
    assert 0 not in set(closed.filter(pl.col("customer_id") == "late")["slot"].to_list())


def test_short_history_has_no_closed_slots() -> None:
    start = utc(2024, 4, 1)
    sales = sales_frame([(start + timedelta(days=d, hours=10), "c", "a", 1.0) for d in range(14)])
    demand = DemandSettings(grid={"closed_min_weeks": 4})
    origin = buckets.origin_bucket(start + timedelta(days=14), "UTC", 4)
    sold = buckets.bucket_sales(sales, demand, "UTC", origin)
    assert buckets.closed_slots(sold, demand, origin).height == 0
