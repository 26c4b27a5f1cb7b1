"""The leakage screen on generated worlds: time, and the largest single-feature AUC it finds.

Run (2 cores):  .venv/bin/python benchmarks/bench_leakage.py [--deals N]

Prints, per world (default and no-signal, plus the default world with a planted post-outcome
column `close_value` = amount if won else 0): training snapshots, seconds to screen, the three
features with the highest AUC, and whether the screen refused (it must refuse only the planted
column; the built-in features stay well under `deals.leakage.max_auc`).
"""

from __future__ import annotations

import argparse
import json
import time

import polars as pl

from salesml.config import DealsSettings
from salesml.deals.features import build_features, learn_spec
from salesml.deals.leakage import LeakageError, screen_training
from salesml.deals.snapshots import training_snapshots
from salesml.sample import WORLD_END, deals_world


def run(n_deals: int, signal: bool, planted: bool) -> dict[str, object]:
    tables, _ = deals_world(n_deals=n_deals, days=365, seed=0, signal=signal)
    custom = []
    if planted:
        won = pl.col("outcome") == "won"
        tables["deals"] = tables["deals"].with_columns(
            pl.when(won).then(pl.col("amount")).otherwise(0.0).alias("close_value")
        )
        custom = ["close_value"]
    settings = DealsSettings(history_days=None, features={"custom_features": custom})
    snaps = training_snapshots(tables["deals"], WORLD_END, settings.snapshot_every_days, 2.0)
    spec = learn_spec(tables, WORLD_END, settings)
    features = build_features(snaps, tables, spec)
    started = time.perf_counter()
    try:
        screen = screen_training(features, tables["deals"], WORLD_END, spec, settings.leakage)
        top = screen.scores.sort("auc", descending=True).head(3)
        outcome = {"top": dict(zip(top["feature"], top["auc"].round(3), strict=True))}
    except LeakageError as error:
        outcome = {"refused": str(error)}
    return {
        "world": ("signal" if signal else "no-signal") + (" + close_value" if planted else ""),
        "snapshots": snaps.height,
        "features": len(spec.feature_names()),
        "seconds": round(time.perf_counter() - started, 2),
        **outcome,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=20_000)
    args = parser.parse_args()
    for signal, planted in [(True, False), (False, False), (True, True)]:
        print(json.dumps(run(args.deals, signal, planted)), flush=True)


if __name__ == "__main__":
    main()
