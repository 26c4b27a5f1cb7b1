"""Alert churn and signal of the deal rules on the sample CRM world (no model needed).

Run (2 cores):  nice -n 10 .venv/bin/python benchmarks/bench_alerts.py [--deals N] [--runs R]
                [--every-hours H] [--seed S]

Runs `evaluate_rules` + `advance` at R as_of dates H hours apart ending at the world's end - 60
days (so outcomes are known), with the default `stage_dwell` and `no_activity` rules (the ones
that need no scores), and prints:
- per run: alerts opened, still open, resolved; and the time of evaluate + advance;
- invariants over the whole sequence: at most one open alert per identity, every key opened
  once, a re-run of the last as_of identical (idempotent);
- signal: the final win rate of the deals open at the last as_of with an open alert of each
  rule next to the deals open without one (an alert worth reading marks deals that win less).
The Maven CRM export has neither an activity log nor a stage history, so neither rule can be
evaluated there (both are skipped, by design, rather than firing on every deal).
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timedelta

import polars as pl

from salesml.alerts.rules import AlertFrames, evaluate_rules
from salesml.alerts.state import IDENTITY, advance
from salesml.config import AlertRuleSettings, NoActivityRule, StageDwellRule
from salesml.sample.deals import WORLD_END, deals_world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=24)
    parser.add_argument("--every-hours", type=float, default=24.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tables, truth = deals_world(args.deals, 365, args.seed)
    frames = AlertFrames(
        deals=tables["deals"],
        deal_stage_history=tables["deal_stage_history"],
        activities=tables["activities"],
    )
    rules: list[AlertRuleSettings] = [StageDwellRule(), NoActivityRule()]
    last_as_of = WORLD_END - timedelta(days=60)
    step = timedelta(hours=args.every_hours)
    alerts: pl.DataFrame | None = None
    print("as_of                      opened  still_open  resolved  seconds")
    for i in range(args.runs):
        as_of = last_as_of - (args.runs - 1 - i) * step
        started = time.perf_counter()
        evaluation = evaluate_rules(rules, frames, as_of)
        alerts = advance(alerts, evaluation.candidates, as_of, evaluation.evaluated)
        seconds = time.perf_counter() - started
        opened = alerts.filter(pl.col("first_seen_as_of") == as_of).height
        still = alerts.filter((pl.col("status") == "open") & (pl.col("first_seen_as_of") < as_of))
        resolved = alerts.filter(pl.col("resolved_at") == as_of).height
        print(
            f"{as_of.isoformat()}  {opened:6d}  {still.height:10d}  {resolved:8d}  {seconds:7.3f}"
        )
    assert alerts is not None
    _invariants(alerts, rules, frames, last_as_of)
    _signal(alerts, tables["deals"], truth, last_as_of)


def _invariants(
    alerts: pl.DataFrame, rules: list[AlertRuleSettings], frames: AlertFrames, as_of: datetime
) -> None:
    open_twice = alerts.filter(pl.col("status") == "open").group_by(IDENTITY).len()
    evaluation = evaluate_rules(rules, frames, as_of)
    rerun = advance(alerts, evaluation.candidates, as_of, evaluation.evaluated)
    print(f"alerts in total: {alerts.height}; keys unique: {alerts['alert_key'].is_unique().all()}")
    print(f"identities open twice: {open_twice.filter(pl.col('len') > 1).height}")
    print(f"re-run of the last as_of identical: {rerun.equals(alerts)}")
    by_rule = alerts.group_by("rule_id").agg(
        pl.len().alias("alerts"), pl.col("occurrence").max().alias("max_occurrence")
    )
    print(by_rule.sort("rule_id"))


def _signal(
    alerts: pl.DataFrame, deals: pl.DataFrame, truth: pl.DataFrame, as_of: datetime
) -> None:
    open_deals = deals.filter(
        (pl.col("created_at") <= as_of)
        & (pl.col("closed_at").is_null() | (pl.col("closed_at") > as_of))
    ).join(truth.select("deal_id", "final_outcome"), on="deal_id", how="left")
    won = (pl.col("final_outcome") == "won").mean()
    base = open_deals.select(won).item()
    print(f"open deals at {as_of}: {open_deals.height}, final win rate {base:.3f}")
    for rule_id in sorted(set(alerts["rule_id"])):
        flagged = alerts.filter((pl.col("rule_id") == rule_id) & (pl.col("status") == "open"))
        ids = flagged["subject_id"]
        hit = open_deals.filter(pl.col("deal_id").is_in(ids.implode()))
        rest = open_deals.filter(~pl.col("deal_id").is_in(ids.implode()))
        print(
            f"{rule_id}: {hit.height} open deals alerted, win rate {hit.select(won).item():.3f} "
            f"vs {rest.select(won).item():.3f} without the alert ({rest.height} deals)"
        )


if __name__ == "__main__":
    main()
