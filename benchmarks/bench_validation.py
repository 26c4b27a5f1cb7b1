"""Time `salesml.validation.validate` on synthetic deals (default 1,000,000 rows).

Usage: .venv/bin/python benchmarks/bench_validation.py [n_rows]
Prints seconds for typed input (Parquet/DB-like) and for text datetimes (CSV-like), each with
~0.3% bad rows spread over several checks.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from salesml.timeutil import DATETIME
from salesml.validation import validate

AS_OF = datetime(2025, 1, 1, tzinfo=UTC)


def synthetic_deals(n: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    start = datetime(2020, 1, 1, tzinfo=UTC)
    created = pl.Series([start]).cast(DATETIME).item()
    created_s = rng.integers(0, 4 * 365 * 86400, n)
    duration_s = rng.integers(86400, 200 * 86400, n)
    closed = rng.random(n) < 0.7
    won = pl.Series(rng.random(n) < 0.4)
    outcome = pl.select(
        pl.when(pl.Series(closed)).then(pl.when(won).then(pl.lit("won")).otherwise(pl.lit("lost")))
    ).to_series()
    frame = pl.DataFrame(
        {
            "deal_id": pl.int_range(n, eager=True).cast(pl.String).str.pad_start(8, "0"),
            "account_id": rng.integers(0, n // 20 + 1, n).astype(str),
            "owner_id": rng.integers(0, 300, n).astype(str),
            "region": rng.choice(["emea", "amer", "apac"], n),
            "amount": rng.gamma(2.0, 20_000.0, n),
            "created_s": created_s,
            "closed_s": np.where(closed, created_s + duration_s, -1),
            "outcome": outcome,
        }
    )
    base = pl.lit(created)
    frame = frame.with_columns(
        (base + pl.duration(seconds=pl.col("created_s"))).alias("created_at"),
        pl.when(pl.col("closed_s") >= 0)
        .then(base + pl.duration(seconds=pl.col("closed_s")))
        .alias("closed_at"),
    ).drop("created_s", "closed_s")
    bad = pl.int_range(pl.len())
    return frame.with_columns(
        pl.when(bad % 1000 == 1).then(-1.0).otherwise("amount").alias("amount"),
        pl.when(bad % 1000 == 2).then(pl.lit("maybe")).otherwise("outcome").alias("outcome"),
        pl.when(bad % 1000 == 3).then(pl.lit("00000000")).otherwise("deal_id").alias("deal_id"),
    )


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    typed = synthetic_deals(n)
    text = typed.with_columns(
        pl.col("created_at").dt.to_string("%Y-%m-%d %H:%M:%S"),
        pl.col("closed_at").dt.to_string("%Y-%m-%dT%H:%M:%S%:z"),
    )
    for label, frame in (("typed datetimes", typed), ("text datetimes", text)):
        t0 = time.perf_counter()
        result = validate(frame, "deals", as_of=AS_OF + timedelta(days=3650))
        seconds = time.perf_counter() - t0
        print(
            f"validate deals, {label}: {n:,} rows in {seconds:.2f} s "
            f"({result.n_bad_rows:,} bad rows, {result.quarantine.height:,} quarantine rows)"
        )


if __name__ == "__main__":
    main()
