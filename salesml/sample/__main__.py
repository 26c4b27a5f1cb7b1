"""`python -m salesml.sample --out DIR ...`: write a sample world (also `salesml sample`).

The bundled sample in data/sample was made with:
    python -m salesml.sample --out data/sample --deals 3500 --deal-days 730 --series 80 --days 120
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Console entry: write the sample tables to `--out`; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m salesml.sample", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder to write Parquet files to")
    parser.add_argument("--deals", type=int, default=5000, help="number of deals (0 = none)")
    parser.add_argument("--deal-days", type=int, default=730, help="days over which deals start")
    parser.add_argument("--series", type=int, default=200, help="store x SKU series (0 = none)")
    parser.add_argument("--days", type=int, default=120, help="days of demand history")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="write even beside other input tables")
    args = parser.parse_args(argv)

    from salesml.sample import write_sample

    started = time.perf_counter()
    try:
        paths = write_sample(
            args.out,
            deals=args.deals,
            series=args.series,
            days=args.days,
            deal_days=args.deal_days,
            seed=args.seed,
            force=args.force,
        )
    except ValueError as exc:  # a bad argument or a folder it must not write into
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, path in paths.items():
        print(f"{name}: {path}")
    print(f"done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
