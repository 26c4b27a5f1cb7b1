"""Benchmark the sample worlds at scale: seconds, rows and peak RSS.

    .venv/bin/python benchmarks/bench_sample.py                      # 1M deals; 100k series x 90 days
    .venv/bin/python benchmarks/bench_sample.py --deals 100000 --series 10000 --in-memory

Each world runs in a fresh subprocess so its peak RSS is its own. CPU seconds are printed next
to wall seconds because the machine may be shared (wall time then overstates the cost). By default the world is
written to Parquet chunk by chunk (`write_sample`, what `salesml sample` does) in a temporary
folder; `--in-memory` builds the whole frames instead (`deals_world` / `demand_world`).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run_part(args: argparse.Namespace) -> dict[str, object]:
    import polars as pl

    from salesml.sample import deals_world, demand_world, write_sample

    before = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = before.ru_utime + before.ru_stime
    started = time.perf_counter()
    rows: dict[str, int] = {}
    size = 0
    if args.in_memory:
        if args.part == "deals":
            tables, _ = deals_world(n_deals=args.deals, days=args.deal_days, seed=args.seed)
        else:
            tables, _ = demand_world(n_series=args.series, days=args.days, seed=args.seed)
        rows = {name: frame.height for name, frame in tables.items()}
    else:
        with tempfile.TemporaryDirectory(dir=args.tmp) as out:
            paths = write_sample(
                out,
                deals=args.deals if args.part == "deals" else 0,
                series=args.series if args.part == "demand" else 0,
                days=args.days,
                deal_days=args.deal_days,
                seed=args.seed,
            )
            for name, path in paths.items():
                if path.suffix == ".parquet" and not name.startswith("truth/"):
                    rows[name] = pl.scan_parquet(path).select(pl.len()).collect().item()
            size = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak_mb = usage.ru_maxrss / 1024
    return {
        "part": args.part,
        "seconds": round(seconds, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime - cpu_before, 1),
        "peak_rss_mb": round(peak_mb),
        "rows": rows,
        "disk_mb": round(size / 1e6, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deals", type=int, default=1_000_000)
    parser.add_argument("--deal-days", type=int, default=730)
    parser.add_argument("--series", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--in-memory", action="store_true", help="build frames, do not write")
    parser.add_argument("--tmp", default=None, help="parent folder of the temporary output")
    parser.add_argument("--part", choices=["deals", "demand"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.part:
        print(json.dumps(_run_part(args)))
        return 0

    mode = "in memory" if args.in_memory else "written to Parquet (zstd), chunked"
    print(f"sample worlds, {mode}, seed {args.seed}")
    for part in ("deals", "demand"):
        if (args.deals if part == "deals" else args.series) == 0:
            continue
        command = [sys.executable, __file__, "--part", part, *sys.argv[1:]]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        scale = (
            f"{args.deals:,} deals over {args.deal_days} days"
            if part == "deals"
            else f"{args.series:,} series x {args.days} days"
        )
        print(f"\n{part}: {scale}")
        print(f"  seconds      {result['seconds']} wall, {result['cpu_seconds']} CPU")
        print(f"  peak RSS     {result['peak_rss_mb']} MB")
        if not args.in_memory:
            print(f"  on disk      {result['disk_mb']} MB")
        for name, count in result["rows"].items():
            print(f"  rows {name:<24} {count:>12,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
