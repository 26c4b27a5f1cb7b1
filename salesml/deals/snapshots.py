"""Which (deal, time) states the model learns from and scores, and what each is labelled.

Time semantics (SPEC "Time travel"): a deal exists at t when `created_at <= t`, and is open at t
when it is not closed by t (`closed_at` is null or `closed_at > t`). An outcome is known at
`as_of` only when `closed_at <= as_of`.

Training snapshots: every `every_days` step back from `as_of` (t = as_of - k * every, k >= 1)
while the deal was open and at least `min_open_days` old, labelled with the deal's eventual
outcome (1 = won). Only deals whose outcome is known by `as_of` are labelled.

Censoring: deals still open at `as_of` have no known outcome, so none of their snapshots enter
the training set (they are neither wins nor losses). The cost is a mild bias towards deals that
close quickly among the most recent snapshots (a snapshot a week before `as_of` is labelled only
if its deal closed within that week); `history_days` bounds how far back snapshots reach, and the
backtest measures the model on exactly the deals it would have scored, so the bias shows up in
the metrics rather than hiding. A deal that closed before its first snapshot time contributes no
row (it was never open at a snapshot instant).

All functions accept tables that still hold rows from after `as_of` and ignore those rows, so a
caller cannot leak the future by handing in too much.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from salesml.timeutil import DATETIME

MICROS_PER_DAY = 86_400_000_000


def deals_known_at(deals: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    """Deals as seen at `as_of`: created by then; a close after `as_of` is hidden (still open)."""
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


def open_deals(deals: pl.DataFrame, as_of: datetime, min_open_days: float) -> pl.DataFrame:
    """Every deal open at `as_of` (deal_id, snapshot_at=as_of, not_scored_reason).

    A deal younger than `min_open_days` gets a reason instead of a score: its features hold too
    little history for a probability to mean anything.
    """
    known = deals_known_at(deals, as_of).filter(pl.col("closed_at").is_null())
    age_days = (pl.lit(as_of, DATETIME) - pl.col("created_at")).dt.total_microseconds() / (
        MICROS_PER_DAY
    )
    return known.select(
        "deal_id",
        pl.lit(as_of, DATETIME).alias("snapshot_at"),
        pl.when(age_days < min_open_days)
        .then(pl.lit(f"open less than {min_open_days:g} days"))
        .otherwise(None)
        .cast(pl.String)
        .alias("not_scored_reason"),
    ).sort("deal_id")
