"""Time to close: when a deal open at as_of will be won, learned from history known at as_of.

Estimator: a grouped empirical cumulative incidence of winning (Aalen-Johansen, competing
risk "lost", daily steps). At every past snapshot time t = as_of - k * `step_days` (k >= 1,
back `history_days`), each deal open at t is a row with its state at t (group) and what
followed, as known at as_of: won on day floor(closed_at - t), lost on that day, or censored
at as_of - t days (still open at as_of, or closed after as_of: hidden). Per group and day j:

    h_won(j) = wins on j / deals at risk on j     (likewise h_lost)
    won_by(d) = sum_{j < d} S(j) * h_won(j),   S(j) = prod_{i < j} (1 - h_won(i) - h_lost(i))

so `won_by(d)` = P(won within d days | open at t, group). On a day with fewer than
MIN_AT_RISK deals at risk, a group takes the hazard of its parent (same `close_window`), and
a thin parent that of all deals pooled, so thin groups neither go flat nor jump.

Groups (state at t, point in time): stage (last `deal_stage_history` row entered by t; 'none'
without one), where the expected close lies (`close_window`: overdue / within 30 days / 30-90
/ beyond 90 / unknown; the latest `deal_close_date_history` change by t, else the deal's
initial expected close), whether it slipped (moved later) by t, and the deal's age at t
(`age_window`: under 30 days / 30-90 / beyond 90). Measured with
`benchmarks/bench_pipeline_forecast.py` (month x region WAPE of the in-period forecast): these
groups 0.284 vs one pooled curve 0.301 on the generated world (coverage 0.70 vs 0.75), 0.524 vs
0.569 on Maven (coverage equal). A LightGBM time-to-close model was not tried.

Quarter phase (`calendar_ratio`, `TimeToClose.calendar`): the ratio of the pooled curve of
deals open at the same point of the quarter as as_of (as_of minus 3, 6, 9, 12 months) to that
of deals open at every week of the quarters that ended there, shrunk to 1 by PHASE_PRIOR
pseudo-deals; snapshots before the first close the data records are left out (left
truncation). Measured with the bench: Maven month x region WAPE 0.524 -> 0.453, coverage 0.750
-> 0.778, bias unchanged (+22.7 %); generated worlds (no quarter pattern planted) 0.284 ->
0.293, 0.242 -> 0.246, 0.200 -> 0.202.

Time travel: closes after as_of are hidden (`snapshots.deals_known_at`), history rows after a
snapshot time are not joined to it, and snapshots are taken strictly before as_of, so rows
changed or added after as_of leave the fit unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl

from salesml.deals.snapshots import MICROS_PER_DAY, deals_known_at, expected_close_in_force
from salesml.timeutil import DATETIME

GROUPS = ("stage", "close_window", "slipped", "age_window")
"""State columns the curves are grouped by (an empty tuple: one pooled curve)."""
MAX_DAYS = 190
"""Longest horizon the curves cover (end of next quarter is at most 184 days away)."""
MIN_AT_RISK = 20
"""Fewer deals at risk on a day than this: the group takes its parent's hazard that day."""
PARENT = "close_window"
"""The coarser group a thin group falls back to (then: all deals pooled)."""
NO_STAGE = "none"
AGE_WINDOWS = (30, 90)
"""Deal age bounds in days at t for `age_window` (<30d, 30-90d, 90d+)."""
CLOSE_WINDOWS = ((0.0, "overdue"), (30.0, "0-30d"), (90.0, "30-90d"))
"""(upper bound in days to the expected close, label); beyond the last: '90d+'."""


@dataclass(frozen=True)
class TimeToClose:
    """Fitted curves: `won_by[curve, d]` = P(won within d days), d = 0..MAX_DAYS; `keys` maps
    group values to `_curve`; the last curve (`pooled`) is the all-deals one.
    """

    groups: tuple[str, ...]
    keys: pl.DataFrame
    won_by: np.ndarray
    snapshots: int
    calendar: np.ndarray | None = None
    """`calendar[d]`: the quarter-phase ratio (`calendar_ratio`), None: not fitted (1)."""

    @property
    def pooled(self) -> int:
        """Row of `won_by` holding the all-deals curve (the last one)."""
        return int(self.won_by.shape[0] - 1)


def deal_states(tables: dict[str, pl.DataFrame], at: pl.DataFrame) -> pl.DataFrame:
    """`at` (deal_id, at) plus stage, close_window, slipped: each deal's state at its `at`,
    from history rows at or before it (rows after `at` are never joined).
    """
    deals = tables["deals"].select(
        "deal_id",
        pl.col("expected_close_at").alias("_initial"),
        pl.col("created_at").alias("_created"),
    )
    frame = at.join(deals, on="deal_id", how="left").sort("deal_id", "at")
    stages = tables.get("deal_stage_history")
    if stages is not None and stages.height:
        history = stages.select("deal_id", "stage", "entered_at").sort("deal_id", "entered_at")
        frame = frame.join_asof(
            history, left_on="at", right_on="entered_at", by="deal_id", check_sortedness=False
        ).drop("entered_at")
    else:
        frame = frame.with_columns(pl.lit(None, pl.String).alias("stage"))
    frame = _close_state(frame, tables.get("deal_close_date_history"))
    days = (pl.col("_expected") - pl.col("at")).dt.total_microseconds() / MICROS_PER_DAY
    (b0, l0), (b1, l1), (b2, l2) = CLOSE_WINDOWS
    window = (
        pl.when(pl.col("_expected").is_null())
        .then(pl.lit("unknown"))
        .when(days < b0)
        .then(pl.lit(l0))
        .when(days < b1)
        .then(pl.lit(l1))
        .when(days < b2)
        .then(pl.lit(l2))
    )
    age = (pl.col("at") - pl.col("_created")).dt.total_microseconds() / MICROS_PER_DAY
    age_window = (
        pl.when(age < AGE_WINDOWS[0])
        .then(pl.lit(f"<{AGE_WINDOWS[0]}d"))
        .when(age < AGE_WINDOWS[1])
        .then(pl.lit(f"{AGE_WINDOWS[0]}-{AGE_WINDOWS[1]}d"))
        .otherwise(pl.lit(f"{AGE_WINDOWS[1]}d+"))
    )
    return frame.with_columns(
        pl.col("stage").fill_null(NO_STAGE),
        window.otherwise(pl.lit("90d+")).alias("close_window"),
        age_window.alias("age_window"),
    ).drop("_initial", "_expected", "_created")


def _close_state(frame: pl.DataFrame, history: pl.DataFrame | None) -> pl.DataFrame:
    """`_expected` (expected close in force at `at`: `expected_close_in_force`) and `slipped`
    (moved later than initially by `at`).
    """
    changes = None
    if history is not None and history.height:
        changes = history.select("deal_id", "changed_at", "expected_close_at").with_columns(
            pl.col("expected_close_at")
            .cum_max()
            .over("deal_id", order_by="changed_at")
            .alias("_latest")
        )
    joined = expected_close_in_force(
        frame, changes, time="at", initial="_initial", alias="_expected", carry=("_latest",)
    )
    return joined.with_columns(
        (pl.col("_latest") > pl.col("_initial")).fill_null(False).alias("slipped")
    ).drop("_latest")


def past_snapshots(
    deals: pl.DataFrame, as_of: datetime, step_days: int, history_days: int
) -> pl.DataFrame:
    """(deal_id, at, last_day, won, lost): deals open at t = as_of - k * step_days (k >= 1,
    k * step_days <= history_days) and what followed as known at as_of. `last_day` is the day
    index of the close (won or lost) or, when censored, the last fully observed day.
    """
    known = deals_known_at(deals, as_of)
    as_of_us = pl.lit(as_of, DATETIME).dt.epoch("us")
    step = step_days * MICROS_PER_DAY
    created = pl.col("created_at").dt.epoch("us")
    closed = pl.col("closed_at").dt.epoch("us")
    k_first = pl.when(closed.is_null()).then(1).otherwise(((as_of_us - closed) // step + 1).clip(1))
    k_last = pl.min_horizontal((as_of_us - created) // step, pl.lit(history_days // step_days))
    t_us = as_of_us - pl.col("_k") * step
    follow_days = pl.col("_k") * step_days
    return (
        known.select(
            "deal_id", "closed_at", "outcome", pl.int_ranges(k_first, k_last + 1).alias("_k")
        )
        .explode("_k")
        .drop_nulls("_k")
        .select(
            "deal_id",
            t_us.cast(pl.Datetime("us")).dt.replace_time_zone("UTC").alias("at"),
            *_follow_up(t_us, follow_days),
        )
        .sort("at", "deal_id")
    )


def _follow_up(t_us: pl.Expr, follow_days: pl.Expr) -> list[pl.Expr]:
    """last_day, won, lost of a deal open at t (epoch us) followed `follow_days` whole days:
    the day index of its close, or when censored the last fully observed day.
    """
    closed = pl.col("closed_at").dt.epoch("us")
    close_day = (closed - t_us) // MICROS_PER_DAY
    seen = closed.is_not_null() & (close_day < follow_days)
    return [
        pl.when(seen).then(close_day).otherwise(follow_days - 1).alias("last_day"),
        (seen & (pl.col("outcome") == "won")).alias("won"),
        (seen & (pl.col("outcome") != "won")).alias("lost"),
    ]


def _after_first_close(known: pl.DataFrame) -> pl.Expr:
    """Snapshot times at or after the first close known at as_of. Before it the data cannot
    show a close, so deals open then look as if none ever closed soon (left truncation: an
    export that starts recording closes at some date, like Maven's March 2017).
    """
    first = known["closed_at"].min()
    return pl.lit(True) if first is None else pl.col("at") >= pl.lit(first, DATETIME)


def fit_time_to_close(
    tables: dict[str, pl.DataFrame],
    as_of: datetime,
    *,
    step_days: int = 7,
    history_days: int = 365,
    groups: tuple[str, ...] = GROUPS,
    calendar: bool = True,
) -> TimeToClose:
    """The curves of the module docstring from data known at `as_of` (see there); with
    `calendar`, also the quarter-phase ratio (`calendar_ratio`).
    """
    snaps = past_snapshots(tables["deals"], as_of, step_days, history_days)
    if groups:
        snaps = snaps.join(deal_states(tables, snaps.select("deal_id", "at")), on=["deal_id", "at"])
    keys = snaps.select(groups).unique().sort(groups) if groups else pl.DataFrame({"_": [0]})
    keys = keys.with_row_index("_curve")
    parent = PARENT if PARENT in groups and groups != (PARENT,) else None
    parents = keys.select(parent).unique().sort(parent) if parent else keys.select("_curve").head(1)
    parents = parents.with_row_index("_parent").select("_parent", *([parent] if parent else []))
    keys = (
        keys.join(parents, on=parent, how="left")
        if parent
        else keys.with_columns(pl.lit(0, pl.UInt32).alias("_parent"))
    )
    rows = (
        snaps.join(keys, on=list(groups), how="left")
        if groups
        else snaps.with_columns(pl.lit(0, pl.UInt32).alias("_curve"))
    )
    day = np.minimum(rows["last_day"].to_numpy().astype(np.int64), MAX_DAYS)
    won, lost = rows["won"].to_numpy(), rows["lost"].to_numpy()
    curve = rows["_curve"].to_numpy().astype(np.int64)
    of_parent = keys.sort("_curve")["_parent"].to_numpy().astype(np.int64)
    pooled = _hazards(np.zeros_like(curve), day, won, lost, 1, None)
    middle = _hazards(of_parent[curve], day, won, lost, parents.height, pooled)
    if parent is None:
        middle = (np.tile(pooled[0], (parents.height, 1)), np.tile(pooled[1], (parents.height, 1)))
    h_won, h_lost = _hazards(
        curve, day, won, lost, keys.height, (middle[0][of_parent], middle[1][of_parent])
    )
    won_by = _cumulative_wins(np.vstack([h_won, pooled[0]]), np.vstack([h_lost, pooled[1]]))
    ratio = calendar_ratio(tables["deals"], as_of, history_days) if calendar else None
    return TimeToClose(groups, keys.drop("_parent"), won_by, snaps.height, ratio)


PHASE_MONTHS = 3
"""Calendar cycle of `calendar_ratio`: a quarter (sales targets and pushes run on quarters)."""
PHASE_PRIOR = 3000
"""Pseudo-deals of the all-snapshots curve that `calendar_ratio` shrinks the phase curve with."""


def snapshots_at(deals: pl.DataFrame, as_of: datetime, times: pl.Series) -> pl.DataFrame:
    """`past_snapshots` rows (deal_id, at, last_day, won, lost) at the given past `times`
    (Datetime UTC, before as_of): deals open at each, what followed as known at as_of.
    """
    known = deals_known_at(deals, as_of)
    t_us, as_of_us = pl.col("at").dt.epoch("us"), pl.lit(as_of, DATETIME).dt.epoch("us")
    follow_days = (as_of_us - t_us) // MICROS_PER_DAY
    open_at = (pl.col("created_at") <= pl.col("at")) & (
        pl.col("closed_at").is_null() | (pl.col("closed_at") > pl.col("at"))
    )
    return (
        known.join(pl.DataFrame({"at": times.cast(DATETIME)}), how="cross")
        .filter(open_at & _after_first_close(known))
        .select("deal_id", "at", *_follow_up(t_us, follow_days))
        .sort("at", "deal_id")
    )


def phase_times(as_of: datetime, history_days: int, weeks: int = 0) -> pl.Series:
    """T = as_of minus k * PHASE_MONTHS calendar months (k >= 1, within `history_days`), and
    with `weeks`, also each t minus 1..weeks weeks (the quarter that ends at t).
    """
    n = max(1, history_days * 12 // (365 * PHASE_MONTHS))
    months = pl.select(
        pl.lit(as_of, DATETIME).dt.offset_by(f"-{k * PHASE_MONTHS}mo").alias(str(k))
        for k in range(1, n + 1)
    ).row(0)
    return pl.Series(
        "at", [t - timedelta(weeks=j) for t in months for j in range(weeks + 1)], DATETIME
    )


def _pooled_curve(snaps: pl.DataFrame) -> np.ndarray:
    day = np.minimum(snaps["last_day"].to_numpy().astype(np.int64), MAX_DAYS)
    won, lost = snaps["won"].to_numpy(), snaps["lost"].to_numpy()
    curves = _cumulative_wins(*_hazards(np.zeros_like(day), day, won, lost, 1, None))
    return np.asarray(curves[0], dtype=np.float64)


def calendar_ratio(deals: pl.DataFrame, as_of: datetime, history_days: int = 365) -> np.ndarray:
    """ratio[d] = P(won within d days | open at the same point of the quarter as as_of) /
    P(won within d days | open at a weekly snapshot of the quarter that ended there), both
    over the past quarters (era-matched, so a trend in win rates cancels). Wins bunch at
    quarter ends, so a deal open on 1 July wins less by 31 July and more by 30 September
    than the deal model and the curves, blind to the calendar, say. The phase curve is shrunk
    to the quarter curve with PHASE_PRIOR pseudo-deals; 1 where the quarter curve is 0.
    Known at as_of (past snapshots, closes up to as_of).
    """
    phase = snapshots_at(deals, as_of, phase_times(as_of, history_days))
    quarter = snapshots_at(deals, as_of, phase_times(as_of, history_days, weeks=12))
    if phase.height == 0:
        return np.ones(MAX_DAYS + 1)
    w_phase, w_quarter = _pooled_curve(phase), _pooled_curve(quarter)
    shrunk = (phase.height * w_phase + PHASE_PRIOR * w_quarter) / (phase.height + PHASE_PRIOR)
    return np.where(w_quarter > 0, shrunk / np.maximum(w_quarter, 1e-300), 1.0)


def _hazards(
    curve: np.ndarray,
    day: np.ndarray,
    won: np.ndarray,
    lost: np.ndarray,
    n_curves: int,
    fallback: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Daily hazards (won, lost) per curve: counts / at risk where at least MIN_AT_RISK deals
    are at risk that day, else the `fallback` hazards (None: counts / max(at risk, 1)).
    """
    cells = n_curves * (MAX_DAYS + 1)
    flat = curve * (MAX_DAYS + 1) + day
    exits, wins, losses = (
        np.bincount(flat, weights=weight, minlength=cells).reshape(n_curves, MAX_DAYS + 1)
        for weight in (None, won.astype(np.float64), lost.astype(np.float64))
    )
    at_risk = exits[:, ::-1].cumsum(axis=1)[:, ::-1]  # deals with last_day >= j
    safe = np.maximum(at_risk, 1.0)
    if fallback is None:
        return wins / safe, losses / safe
    enough = at_risk >= MIN_AT_RISK
    return np.where(enough, wins / safe, fallback[0]), np.where(enough, losses / safe, fallback[1])


def _cumulative_wins(h_won: np.ndarray, h_lost: np.ndarray) -> np.ndarray:
    """won_by[curve, d] = P(won on a day j < d) (Aalen-Johansen) from daily hazards."""
    survive = np.cumprod(np.clip(1.0 - h_won - h_lost, 0.0, 1.0), axis=1)
    before = np.concatenate([np.ones((survive.shape[0], 1)), survive[:, :-1]], axis=1)
    daily = before * h_won
    return np.concatenate([np.zeros((daily.shape[0], 1)), daily.cumsum(axis=1)[:, :-1]], axis=1)


def won_by_days(
    model: TimeToClose, tables: dict[str, pl.DataFrame], at: pl.DataFrame, days: np.ndarray
) -> np.ndarray:
    """(rows of `at`, len(days)): P(won within each of `days` (floats, >= 0) of the row's `at`)
    from the curve of the deal's group at `at`; groups unseen in the fit use the pooled curve.
    """
    index = np.clip(np.floor(days).astype(np.int64), 0, MAX_DAYS)
    if not model.groups:
        return np.tile(model.won_by[0, index], (at.height, 1))
    states = deal_states(tables, at.select("deal_id", "at"))
    curves = (
        at.select("deal_id", "at")
        .join(states, on=["deal_id", "at"], how="left", maintain_order="left")
        .join(model.keys, on=list(model.groups), how="left", maintain_order="left")["_curve"]
        .fill_null(model.pooled)
        .to_numpy()
        .astype(np.int64)
    )
    chosen: np.ndarray = model.won_by[curves][:, index]
    return chosen
