"""Labels of the event "won within H days", full follow-up, and `lost_after_days` point in time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from salesml.deals.snapshots import (
    apply_lost_after,
    deals_known_at,
    event_rates,
    labelled_snapshots,
    open_deals,
)
from salesml.timeutil import DATETIME

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def deals(rows: list[tuple[str, float, float | None, str | None]]) -> pl.DataFrame:
    """(deal_id, created day, closed day or None, outcome or None)."""
    return pl.DataFrame(
        {
            "deal_id": [r[0] for r in rows],
            "created_at": [day(r[1]) for r in rows],
            "closed_at": [None if r[2] is None else day(r[2]) for r in rows],
            "outcome": [r[3] for r in rows],
        },
        schema={
            "deal_id": pl.String,
            "created_at": DATETIME,
            "closed_at": DATETIME,
            "outcome": pl.String,
        },
    )


def test_label_is_won_within_the_horizon_with_full_follow_up_only() -> None:
    table = deals(
        [
            ("fast", 0, 5, "won"),  # won 5 days after creation
            ("slow", 0, 25, "won"),  # won 25 days after creation
            ("lost", 0, 8, "lost"),
            ("open", 0, None, None),  # still open at as_of: not won within H, never dropped
            ("late", 0, 45, "won"),  # won after as_of: hidden, open at as_of
        ]
    )
    snaps = labelled_snapshots(table, day(40), every_days=2, horizon_days=10)
    assert (snaps["label_at"] <= day(40)).all()  # full follow-up
    assert snaps["snapshot_at"].max() == day(30)
    by = {d: snaps.filter(pl.col("deal_id") == d) for d in ("fast", "slow", "lost", "open")}
    assert by["fast"]["label"].to_list() == [1, 1, 1]  # snapshots at days 0, 2 and 4
    slow = dict(zip(by["slow"]["snapshot_at"], by["slow"]["label"], strict=True))
    assert slow[day(14)] == 0 and slow[day(16)] == 1 and slow[day(24)] == 1
    assert by["lost"]["label"].sum() == 0
    assert by["open"].height == 16 and by["open"]["label"].sum() == 0
    late = snaps.filter(pl.col("deal_id") == "late")
    assert late["label"].sum() == 0  # won at day 45 > any t + 10 <= 40


def test_labels_do_not_move_when_the_future_changes() -> None:
    table = deals([("a", 0, 30, "won"), ("b", 1, 50, "won"), ("c", 2, None, None)])
    changed = table.with_columns(
        pl.when(pl.col("deal_id") == "b").then(pl.lit("lost")).otherwise(pl.col("outcome"))
    )
    for frame in (table, changed):
        assert labelled_snapshots(frame, day(40), 3, 7).equals(
            labelled_snapshots(table, day(40), 3, 7)
        )


@pytest.mark.parametrize("as_of_day", [5, 9.5, 10, 10.5, 20, 40])
def test_lost_after_days_is_point_in_time(as_of_day: float) -> None:
    table = deals(
        [
            ("quiet", 0, None, None),  # never closes: lost at day 10
            ("won_early", 0, 6, "won"),  # closes before the deadline: unchanged
            ("won_late", 0, 15, "won"),  # would win at 15, but was lost at 10
        ]
    )
    as_of = day(as_of_day)
    seen = deals_known_at(table, as_of, lost_after_days=10).sort("deal_id")
    # the same view from a source that only shows what was known at as_of
    cut = deals_known_at(table, as_of)
    assert seen.equals(deals_known_at(cut, as_of, lost_after_days=10).sort("deal_id"))
    state = dict(zip(seen["deal_id"], seen["outcome"], strict=True))
    if as_of_day < 10:
        assert state["quiet"] is None and state["won_late"] is None
    else:
        assert state["quiet"] == "lost" and state["won_late"] == "lost"
        assert seen.filter(pl.col("deal_id") == "quiet")["closed_at"].item() == day(10)
    assert state["won_early"] == ("won" if as_of_day >= 6 else None)
    still_open = set(open_deals(table, as_of, 0.0, lost_after_days=10)["deal_id"])
    assert ("quiet" in still_open) == (as_of_day < 10)


def test_lost_after_days_off_by_default_and_idempotent() -> None:
    table = deals([("a", 0, None, None), ("b", 0, 3, "won")])
    assert apply_lost_after(table, None).equals(table)
    once = apply_lost_after(table, 5)
    assert apply_lost_after(once, 5).equals(once)


def test_event_rates_are_the_latest_full_follow_up_rates() -> None:
    rows = [(f"w{i}", float(i), i + 3.0, "won") for i in range(40)]
    rows += [(f"l{i}", float(i), i + 3.0, "lost") for i in range(40)]
    rows += [(f"q{i}", 30.0 + i / 10, None, None) for i in range(10)]  # open: not won in H
    base, young, n_snapshots, n_young = event_rates(deals(rows), day(50), 1, 10, 20)
    # deals created in (20, 40]: 19 won and 19 lost within 3 days, 10 still open
    assert n_young == 48 and young == pytest.approx(19 / 48)
    assert n_snapshots > 0 and 0 < base < 0.5
    few = event_rates(deals(rows), day(50), 1, 10, 5)
    assert few[3] < 30 and few[1] == few[0]  # too few young deals: the base rate
