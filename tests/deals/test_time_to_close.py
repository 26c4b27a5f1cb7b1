"""Time to close: the curves are cumulative probabilities, follow the history, and use nothing
after as_of."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from salesml.deals import time_to_close
from salesml.deals.snapshots import expected_close_in_force
from salesml.deals.time_to_close import (
    MAX_DAYS,
    calendar_ratio,
    deal_states,
    fit_time_to_close,
    past_snapshots,
    phase_times,
    snapshots_at,
    won_by_days,
)
from salesml.timeutil import DATETIME

AS_OF = datetime(2025, 7, 1, tzinfo=UTC)


def _deals(n: int = 200) -> pl.DataFrame:
    """Deals created daily from 300 days before as_of, all won exactly 30 days after creation
    (expected close on day 30), except every fourth one, lost on day 10."""
    created = [AS_OF - timedelta(days=300 - i) for i in range(n)]
    return pl.DataFrame(
        {
            "deal_id": [f"D{i:03d}" for i in range(n)],
            "created_at": created,
            "expected_close_at": [c + timedelta(days=30) for c in created],
            "closed_at": [
                c + timedelta(days=10 if i % 4 == 0 else 30) for i, c in enumerate(created)
            ],
            "outcome": ["lost" if i % 4 == 0 else "won" for i in range(n)],
        }
    ).with_columns(pl.col("created_at", "expected_close_at", "closed_at").cast(DATETIME))


def test_curves_are_cumulative_probabilities_that_follow_history() -> None:
    model = fit_time_to_close({"deals": _deals()}, AS_OF, groups=())
    curve = model.won_by[model.pooled]
    assert curve.shape == (MAX_DAYS + 1,)
    assert curve[0] == 0.0 and (np.diff(curve) >= -1e-12).all() and curve[-1] <= 1.0
    # 3 in 4 deals are won: P(won eventually | open at a snapshot) is at least that
    assert curve[-1] > 0.7
    # nobody is won more than 30 days after any snapshot
    assert curve[31] == curve[-1]


def test_states_take_only_history_up_to_each_time() -> None:
    deals = _deals(3)
    stages = pl.DataFrame(
        {
            "deal_id": ["D000", "D000"],
            "stage": ["discovery", "proposal"],
            "entered_at": [AS_OF - timedelta(days=300), AS_OF - timedelta(days=285)],
        }
    ).with_columns(pl.col("entered_at").cast(DATETIME))
    slips = pl.DataFrame(
        {
            "deal_id": ["D000"],
            "changed_at": [AS_OF - timedelta(days=284)],
            "expected_close_at": [AS_OF - timedelta(days=200)],
        }
    ).with_columns(pl.col("changed_at", "expected_close_at").cast(DATETIME))
    tables = {"deals": deals, "deal_stage_history": stages, "deal_close_date_history": slips}
    at = pl.DataFrame(
        {
            "deal_id": ["D000", "D000"],
            "at": [AS_OF - timedelta(days=290), AS_OF - timedelta(days=280)],
        }
    ).with_columns(pl.col("at").cast(DATETIME))
    states = deal_states(tables, at).sort("at")
    assert states["stage"].to_list() == ["discovery", "proposal"]
    assert states["slipped"].to_list() == [False, True]
    assert states["close_window"].to_list() == ["0-30d", "30-90d"]


def test_fit_uses_nothing_after_as_of() -> None:
    deals = _deals()
    as_of = AS_OF - timedelta(days=60)
    before = fit_time_to_close({"deals": deals}, as_of)
    # rewrite the future: every close after as_of becomes a loss a day later, add new deals
    later = pl.col("closed_at") > pl.lit(as_of, DATETIME)
    rewritten = deals.with_columns(
        pl.when(later)
        .then(pl.col("closed_at") + pl.duration(days=1))
        .otherwise(pl.col("closed_at"))
        .alias("closed_at"),
        pl.when(later).then(pl.lit("lost")).otherwise(pl.col("outcome")).alias("outcome"),
    )
    extra = rewritten.tail(5).with_columns(
        (pl.col("deal_id") + "x").alias("deal_id"), pl.lit(AS_OF, DATETIME).alias("created_at")
    )
    after = fit_time_to_close({"deals": pl.concat([rewritten, extra])}, as_of)
    np.testing.assert_array_equal(before.won_by, after.won_by)
    assert before.keys.equals(after.keys)
    # the snapshots never reach past as_of
    snaps = past_snapshots(deals, as_of, 7, 365)
    assert snaps["at"].max() < as_of  # type: ignore[operator]


def test_unseen_group_uses_the_pooled_curve() -> None:
    deals = _deals()
    model = fit_time_to_close({"deals": deals}, AS_OF)
    at = pl.DataFrame({"deal_id": ["nobody"], "at": [AS_OF]}).with_columns(
        pl.col("at").cast(DATETIME)
    )
    got = won_by_days(model, {"deals": deals}, at, np.array([0.0, 15.5, 400.0]))
    pooled = model.won_by[model.pooled]
    np.testing.assert_allclose(got[0], [pooled[0], pooled[15], pooled[MAX_DAYS]])


def _quarter_end_world(as_of: datetime = AS_OF) -> pl.DataFrame:
    """A deal created every day for two years before as_of (2025-07-01, a quarter start), each
    won on the 15th of the last month of the first quarter that ends 20+ days after creation:
    wins bunch at quarter ends, so nobody open on a quarter's first day wins that month."""
    created = [as_of - timedelta(days=730 - i) for i in range(730)]

    def won_on(c: datetime) -> datetime:
        t = c + timedelta(days=20)
        last = 3 * ((t.month - 1) // 3) + 3
        won = t.replace(month=last, day=15)
        return won if won >= t else (won + timedelta(days=92)).replace(day=15)

    return pl.DataFrame(
        {
            "deal_id": [f"Q{i:03d}" for i in range(730)],
            "created_at": created,
            "expected_close_at": [None] * 730,
            "closed_at": [won_on(c) for c in created],
            "outcome": ["won"] * 730,
        }
    ).with_columns(pl.col("created_at", "expected_close_at", "closed_at").cast(DATETIME))


def test_calendar_ratio_moves_wins_to_the_quarter_end(monkeypatch: pytest.MonkeyPatch) -> None:
    deals = _quarter_end_world()
    monkeypatch.setattr(time_to_close, "PHASE_PRIOR", 0)
    raw = calendar_ratio(deals, AS_OF)
    # open on 1 July (and on 1 April, 1 January, ... before it): nothing is won by 31 July
    assert raw[30] == 0.0
    # ... while deals open at any week of a quarter win within 30 days now and then; all of
    # them are won on 15 September (day 76), so by day 77 the phase has caught up and more
    assert raw[77] >= 1.0
    monkeypatch.undo()
    shrunk = calendar_ratio(deals, AS_OF)
    assert 0.0 < shrunk[30] < 1.0  # shrunk towards 1 by PHASE_PRIOR pseudo-deals


def test_calendar_ratio_uses_nothing_after_as_of_nor_before_the_first_close() -> None:
    deals = _quarter_end_world()
    as_of = datetime(2025, 4, 1, tzinfo=UTC)
    before = calendar_ratio(deals, as_of, history_days=730)
    later = pl.col("closed_at") > pl.lit(as_of, DATETIME)
    rewritten = deals.with_columns(
        pl.when(later).then(pl.lit(as_of + timedelta(days=1), DATETIME)).otherwise("closed_at")
    )
    np.testing.assert_array_equal(before, calendar_ratio(rewritten, as_of, history_days=730))
    first = deals["closed_at"].min()
    times = phase_times(as_of, 730, weeks=12)
    assert times.min() < first  # type: ignore[operator]
    snaps = snapshots_at(deals, as_of, times)
    assert snaps["at"].min() >= first  # type: ignore[operator]
    assert snaps["at"].max() < as_of  # type: ignore[operator]


def _reference_in_force(frame: pl.DataFrame, history: pl.DataFrame) -> list[datetime | None]:
    """Row by row: the latest change at or before t (ties: the latest date), else initial."""
    out = []
    for deal, t, initial in frame.select("deal_id", "at", "initial").iter_rows():
        known = history.filter((pl.col("deal_id") == deal) & (pl.col("changed_at") <= t))
        if known.height == 0:
            out.append(initial)
            continue
        last = known.filter(pl.col("changed_at") == known["changed_at"].max())
        out.append(last["expected_close_at"].max())
    return out


def test_expected_close_in_force_matches_a_row_by_row_reference() -> None:
    rng = np.random.default_rng(7)
    base = datetime(2025, 1, 1, tzinfo=UTC)
    day = [base + timedelta(days=int(d)) for d in range(40)]
    history = pl.DataFrame(
        {
            "deal_id": [f"D{i}" for i in rng.integers(0, 5, 60)],
            "changed_at": [day[i] for i in rng.integers(0, 20, 60)],  # with ties at an instant
            "expected_close_at": [day[i] for i in rng.integers(10, 40, 60)],
        }
    ).with_columns(pl.col("changed_at", "expected_close_at").cast(DATETIME))
    frame = pl.DataFrame(
        {
            "deal_id": [f"D{i}" for i in rng.integers(0, 6, 50)],  # D5 has no change
            "at": [day[i] for i in rng.integers(0, 25, 50)],
            "initial": [day[i] for i in rng.integers(0, 40, 50)],
        }
    ).with_columns(pl.col("at", "initial").cast(DATETIME))
    got = expected_close_in_force(frame, history, time="at", initial="initial")
    assert got.select(frame.columns).equals(frame)  # row order kept
    assert got["expected_close_at"].to_list() == _reference_in_force(frame, history)
    none = expected_close_in_force(frame, None, time="at", initial="initial")
    assert none["expected_close_at"].equals(frame["initial"], check_names=False)
