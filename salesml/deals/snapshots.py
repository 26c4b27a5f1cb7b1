"""Which (deal, time) states the model learns from and scores, and what each is labelled.

Time semantics (SPEC "Time travel"): a deal exists at t when `created_at <= t`, and is open at t
when it is not closed by t (`closed_at` is null or `closed_at > t`). An outcome is known at
`as_of` only when `closed_at <= as_of`.

The event (what a probability means): a deal open at t is "won within H days" when it is won
at or before t + H, H = `deals.label_horizon_days`. `labelled_snapshots` takes a snapshot every
`every_days` back from `as_of` while the deal was open and at least `min_open_days` old, and
labels it 1 iff the deal was won by t + H, using only snapshots with full follow-up
(t + H <= as_of). Censoring method: label horizon with full follow-up. Every deal open at t is
a row, including deals still open at as_of (their snapshot is 0: not won within H), so no open
deal is silently dropped or counted as lost without its H days having passed.

Funnels that never record losses (`lost_after_days` N): an open deal with no outcome N days
after creation counts as lost at created_at + N. That rule depends only on the deal's own
times, so applying it to the raw table and then hiding closes after `as_of` (`deals_known_at`)
is point in time: at an as_of before created_at + N the deal is still open.

`training_snapshots` is the older labelling (eventual outcome of deals closed by as_of); it is
kept for notebooks and the feature tests, and no longer trains the model.

All functions accept tables that still hold rows from after `as_of` and ignore those rows, so a
caller cannot leak the future by handing in too much.
"""

from __future__ import annotations

import math
from datetime import datetime

import polars as pl

from salesml.timeutil import DATETIME

MICROS_PER_DAY = 86_400_000_000


def apply_lost_after(deals: pl.DataFrame, lost_after_days: int | None) -> pl.DataFrame:
    """Deals with the `lost_after_days` rule applied (None: unchanged): a deal not closed by
    created_at + N is lost at created_at + N. Idempotent; independent of any as_of.
    """
    if lost_after_days is None:
        return deals
    deadline = pl.col("created_at") + pl.duration(days=lost_after_days)
    late = pl.col("closed_at").is_null() | (pl.col("closed_at") > deadline)
    return deals.with_columns(
        pl.when(late).then(deadline).otherwise(pl.col("closed_at")).alias("closed_at"),
        pl.when(late).then(pl.lit("lost")).otherwise(pl.col("outcome")).alias("outcome"),
    )


def deals_known_at(
    deals: pl.DataFrame, as_of: datetime, lost_after_days: int | None = None
) -> pl.DataFrame:
    """Deals as seen at `as_of`: created by then; a close after `as_of` is hidden (still open);
    with `lost_after_days`, a deal with no outcome N days after creation is lost then.
    """
    deals = apply_lost_after(deals, lost_after_days)
    hidden = pl.col("closed_at") > pl.lit(as_of, DATETIME)
    return deals.filter(pl.col("created_at") <= pl.lit(as_of, DATETIME)).with_columns(
        pl.when(hidden).then(None).otherwise(pl.col("closed_at")).alias("closed_at"),
        pl.when(hidden).then(None).otherwise(pl.col("outcome")).alias("outcome"),
    )


def training_snapshots(
    deals: pl.DataFrame,
    as_of: datetime,
    every_days: int,
    min_open_days: float = 0.0,
    history_days: int | None = None,
    label_horizon_days: int = 0,
) -> pl.DataFrame:
    """Labelled snapshots (deal_id, snapshot_at, label, closed_at) for training at `as_of`.

    Snapshots are taken at least `label_horizon_days` before as_of (rounded up to whole steps),
    so that most deals open at a snapshot have closed by as_of (less censoring bias).

    `label` is 1 for won and 0 for lost; `closed_at` is kept so the model can split slices by
    when outcomes became known. Rows are sorted by (snapshot_at, deal_id), so the output does not
    depend on the input's row order.
    """
    known = deals_known_at(deals, as_of).filter(
        pl.col("closed_at").is_not_null() & pl.col("outcome").is_in(["won", "lost"])
    )
    step = every_days * MICROS_PER_DAY
    as_of_us = pl.lit(as_of, DATETIME).dt.epoch("us")
    created_us = pl.col("created_at").dt.epoch("us") + int(min_open_days * MICROS_PER_DAY)
    closed_us = pl.col("closed_at").dt.epoch("us")
    # open at t = as_of - k*step  <=>  created + min_open <= t < closed
    first_step = max(1, -(-label_horizon_days * MICROS_PER_DAY // step))
    k_first = ((as_of_us - closed_us) // step + 1).clip(lower_bound=first_step)
    k_last = (as_of_us - created_us) // step
    if history_days is not None:
        k_last = pl.min_horizontal(k_last, pl.lit(history_days * MICROS_PER_DAY // step))
    return (
        known.select(
            "deal_id",
            "closed_at",
            (pl.col("outcome") == "won").cast(pl.Int8).alias("label"),
            pl.int_ranges(k_first, k_last + 1).alias("_k"),
        )
        .explode("_k")
        .drop_nulls("_k")
        .with_columns(
            (as_of_us - pl.col("_k") * step)
            .cast(pl.Datetime("us"))
            .dt.replace_time_zone("UTC")
            .alias("snapshot_at")
        )
        .select("deal_id", "snapshot_at", "label", "closed_at")
        .sort("snapshot_at", "deal_id")
    )


def labelled_snapshots(
    deals: pl.DataFrame,
    as_of: datetime,
    every_days: int,
    horizon_days: int,
    min_open_days: float = 0.0,
    history_days: int | None = None,
    lost_after_days: int | None = None,
) -> pl.DataFrame:
    """Snapshots with full follow-up (deal_id, snapshot_at, label, label_at) at `as_of`.

    t = as_of - k * every_days (k >= 1) with t + horizon_days <= as_of; the deal open at t and
    at least `min_open_days` old; `label` = 1 iff won at or before `label_at` = t + horizon.
    `history_days` bounds how far back t reaches. Sorted by (snapshot_at, deal_id).
    """
    known = deals_known_at(deals, as_of, lost_after_days)
    step = every_days * MICROS_PER_DAY
    horizon = horizon_days * MICROS_PER_DAY
    as_of_us = pl.lit(as_of, DATETIME).dt.epoch("us")
    created_us = pl.col("created_at").dt.epoch("us") + int(min_open_days * MICROS_PER_DAY)
    closed_us = pl.col("closed_at").dt.epoch("us")
    # full follow-up: k * step >= horizon; open at t: created + min_open <= t < closed
    k_follow = max(1, -(-horizon // step))
    k_first = (
        pl.when(closed_us.is_null())
        .then(pl.lit(k_follow))
        .otherwise(((as_of_us - closed_us) // step + 1).clip(lower_bound=k_follow))
    )
    k_last = (as_of_us - created_us) // step
    if history_days is not None:
        k_last = pl.min_horizontal(k_last, pl.lit(history_days * MICROS_PER_DAY // step))
    t_us = as_of_us - pl.col("_k") * step
    return (
        known.select(
            "deal_id",
            "outcome",
            closed_us.alias("_closed"),
            pl.int_ranges(k_first, k_last + 1).alias("_k"),
        )
        .explode("_k")
        .drop_nulls("_k")
        .select(
            "deal_id",
            _as_time(t_us).alias("snapshot_at"),
            ((pl.col("outcome") == "won") & (pl.col("_closed") <= t_us + horizon))
            .fill_null(False)
            .cast(pl.Int8)
            .alias("label"),
            _as_time(t_us + horizon).alias("label_at"),
        )
        .sort("snapshot_at", "deal_id")
    )


def _as_time(epoch_us: pl.Expr) -> pl.Expr:
    return epoch_us.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def event_rates(
    deals: pl.DataFrame,
    as_of: datetime,
    every_days: int,
    horizon_days: int,
    window_days: int,
    min_open_days: float = 0.0,
    lost_after_days: int | None = None,
) -> tuple[float, float, int, int]:
    """(base rate, young-deal rate, snapshots, young deals) known at `as_of`.

    Base rate: the event's rate among the latest snapshots with full follow-up (snapshot_at in
    the last `window_days` before as_of - H): what `score_basis = 'base_rate'` writes. Young
    rate: among deals created in that window, the share won within H days of creation: the
    prior for deals younger than `min_open_days` (`score_basis = 'prior'`), or the base rate
    when fewer than `MIN_PRIOR_DEALS` deals were created there. NaN when nothing is labelled.
    """
    snaps = labelled_snapshots(
        deals, as_of, every_days, horizon_days, min_open_days, None, lost_after_days
    )
    last = snaps.get_column("snapshot_at").max()
    recent = (
        snaps.filter(pl.col("snapshot_at") > pl.lit(last) - pl.duration(days=window_days))
        if last is not None
        else snaps
    )
    base = float(recent.get_column("label").mean()) if recent.height else math.nan  # type: ignore[arg-type]
    known = deals_known_at(deals, as_of, lost_after_days)
    end = pl.lit(as_of, DATETIME) - pl.duration(days=horizon_days)
    young = known.filter(
        (pl.col("created_at") <= end) & (pl.col("created_at") > end - pl.duration(days=window_days))
    ).select(
        (
            (pl.col("outcome") == "won")
            & (pl.col("closed_at") <= pl.col("created_at") + pl.duration(days=horizon_days))
        ).fill_null(False)
    )
    n_young = young.height
    rate = float(young.to_series().mean()) if n_young >= MIN_PRIOR_DEALS else base  # type: ignore[arg-type]
    return base, rate, recent.height, n_young


MIN_PRIOR_DEALS = 30
"""Young-deal prior: below this many deals created in the window, use the base rate."""


def open_deals(
    deals: pl.DataFrame, as_of: datetime, min_open_days: float, lost_after_days: int | None = None
) -> pl.DataFrame:
    """Every deal open at `as_of` (deal_id, snapshot_at=as_of, young).

    A deal younger than `min_open_days` is `young`: its features hold too little history for
    the model, so it gets the young-deal prior (`event_rates`) instead of a model score.
    """
    known = deals_known_at(deals, as_of, lost_after_days).filter(pl.col("closed_at").is_null())
    age_days = (pl.lit(as_of, DATETIME) - pl.col("created_at")).dt.total_microseconds() / (
        MICROS_PER_DAY
    )
    return known.select(
        "deal_id",
        pl.lit(as_of, DATETIME).alias("snapshot_at"),
        (age_days < min_open_days).alias("young"),
    ).sort("deal_id")


def expected_close_in_force(
    frame: pl.DataFrame,
    history: pl.DataFrame | None,
    *,
    time: str,
    initial: str,
    alias: str = "expected_close_at",
    carry: tuple[str, ...] = (),
) -> pl.DataFrame:
    """`frame` plus `alias`: each row's expected close in force at its `time` (point in time),
    the one rule for features, time-to-close states and score changes. The latest
    `deal_close_date_history` change with changed_at <= time (several at one instant: the
    latest date), else the deal's initial expected close (`frame[initial]`). `carry`: extra
    columns of `history` (computed per change, e.g. slip counts) joined from that same change
    (null when none is in force). Changes after `time` are never joined; row order is kept.
    """
    if history is None or history.height == 0:
        return frame.with_columns(
            pl.col(initial).alias(alias), *[pl.lit(None).alias(c) for c in carry]
        )
    changes = (
        history.select(
            "deal_id",
            pl.col("changed_at").cast(frame.schema[time]),
            pl.col("expected_close_at").cast(frame.schema[initial]).alias("_in_force"),
            *carry,
        )
        .sort("deal_id", "changed_at", "_in_force", maintain_order=True)
        .unique(["deal_id", "changed_at"], keep="last", maintain_order=True)
    )
    joined = (
        frame.with_row_index("_order")
        .sort("deal_id", time)
        .join_asof(
            changes,
            left_on=time,
            right_on="changed_at",
            by="deal_id",
            strategy="backward",
            check_sortedness=False,
        )
    )
    return (
        joined.with_columns(pl.coalesce("_in_force", initial).alias(alias))
        .sort("_order")
        .drop("_order", "changed_at", "_in_force")
    )
