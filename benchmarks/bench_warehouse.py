"""Time one batch of deal_scores rows written to the warehouse (DuckDB, and PostgreSQL if given).

    .venv/bin/python benchmarks/bench_warehouse.py [--rows 100000] [--pg-url postgresql://...]

The PostgreSQL URL defaults to $SALESML_TEST_PG_URL; the benchmark works in a fresh schema it
drops afterwards. Prints seconds for: the first write (creates the table), a rewrite of the
same as_of (delete + insert, the idempotent path), and a read of that as_of.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

import salesml.contract  # noqa: F401  (pandera's import cost stays out of the timings)
from salesml.warehouse import Warehouse

AS_OF = datetime(2024, 6, 1, tzinfo=UTC)


def deal_scores(rows: int, seed: int = 0) -> pl.DataFrame:
    """Rows shaped like the scorer's output: JSON text for reasons and top factors."""
    rng = np.random.default_rng(seed)
    prob = rng.uniform(0, 1, rows)
    factors = json.dumps(
        [{"feature": "cto_meetings_30d", "contribution": 0.12, "text": "+0.12 CTO meeting"}] * 5
    )
    return pl.DataFrame(
        {
            "deal_id": [f"D{i:08d}" for i in range(rows)],
            "win_probability": prob,
            "health": np.where(prob < 0.2, "red", np.where(prob < 0.5, "yellow", "green")),
            "health_reasons": ['["no activity for 14 days", "slipped twice"]'] * rows,
            "top_factors": [factors] * rows,
            "model_version": ["3"] * rows,
        }
    )


def timed(label: str, fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    seconds = time.perf_counter() - started
    print(f"  {label:<28} {seconds:7.2f} s")
    return seconds


def bench(url: str, frame: pl.DataFrame) -> None:
    wh = Warehouse(url)
    run_id = wh.start_run("bench", AS_OF)
    batch = {"deal_scores": frame}
    timed("first write (create table)", lambda: wh.write_batch(batch, as_of=AS_OF, run_id=run_id))
    timed("rewrite same as_of", lambda: wh.write_batch(batch, as_of=AS_OF, run_id=run_id))
    timed("read as_of", lambda: wh.read("deal_scores", as_of=AS_OF))
    assert wh.read("deal_scores", as_of=AS_OF).height == frame.height


def pg_schema(base: str, sql: str) -> None:
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(base, autocommit=True) as con, con.cursor() as cur:
        cur.execute(sql)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--pg-url", default=os.environ.get("SALESML_TEST_PG_URL"))
    args = parser.parse_args()
    frame = deal_scores(args.rows)
    print(f"deal_scores: {args.rows:,} rows in one batch")

    with tempfile.TemporaryDirectory() as tmp:
        print("DuckDB")
        bench(f"duckdb:///{Path(tmp) / 'bench.duckdb'}", frame)

    if not args.pg_url:
        print("PostgreSQL: skipped (no --pg-url or SALESML_TEST_PG_URL)")
        return
    schema = f"salesml_bench_{uuid.uuid4().hex[:8]}"
    pg_schema(args.pg_url, f'CREATE SCHEMA "{schema}"')
    try:
        sep = "&" if "?" in args.pg_url else "?"
        print("PostgreSQL")
        bench(f"{args.pg_url}{sep}options=-csearch_path%3D{schema}", frame)
    finally:
        pg_schema(args.pg_url, f'DROP SCHEMA "{schema}" CASCADE')


if __name__ == "__main__":
    main()
