"""Slice G on real data (Maven CRM, read in place): does the rep health index known at as_of
rank reps by their realised win rate over the next 90 days better than the trivial baseline
(the rep's raw win rate over the last 90 days)? Plus: deal_score_changes / pipeline_changes
consistency between weekly runs. Probabilities are the base rate known at each as_of
(no model), so only the rep drivers (win rate, coverage, stalled, recency) are tested.

    cd /work/main && OMP_WAIT_POLICY=PASSIVE nice -n 10 .venv/bin/python benchmarks/bench_rep_views_maven.py
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
from scipy.stats import spearmanr

sys.path.insert(0, str(Path.cwd()))
sys.path.insert(0, str(Path.cwd() / "benchmarks"))
from maven_crm import MAVEN, map_deals

from salesml.config import DealHealthRules
from salesml.deals.changes import deal_score_changes, pipeline_changes
from salesml.deals.snapshots import deals_known_at, event_rates, open_deals
from salesml.deals.views import health_overview, rep_health
from salesml.timeutil import DATETIME

SOURCE = MAVEN
H, WINDOW = 60, 90
raw, _ = map_deals(SOURCE)
deals = raw.select(
    pl.col("opportunity_id").alias("deal_id"),
    pl.col("account").alias("account_id"),
    pl.col("sales_agent").alias("owner_id"),
    pl.col("regional_office").alias("region"),
    pl.col("list_price").alias("amount"),
    pl.col("engage_date")
    .str.to_datetime("%Y-%m-%d")
    .dt.replace_time_zone("UTC")
    .cast(DATETIME)
    .alias("created_at"),
    pl.lit(None, DATETIME).alias("expected_close_at"),
    pl.col("close_date")
    .str.to_datetime("%Y-%m-%d")
    .dt.replace_time_zone("UTC")
    .cast(DATETIME)
    .alias("closed_at"),
    pl.col("deal_stage").str.to_lowercase().alias("outcome"),
)
rules = DealHealthRules()


def scores_at(as_of: datetime) -> pl.DataFrame:
    base, *_ = event_rates(deals, as_of, 7, H, 28)
    return open_deals(deals, as_of, 0).select(
        "deal_id", pl.lit(base).alias("win_probability"), pl.lit("yellow").alias("health")
    )


rows = []
for as_of in [datetime(2017, m, 1, tzinfo=UTC) for m in (4, 5, 6, 7, 8, 9)]:
    reps = rep_health(
        scores_at(as_of), {"deals": deals}, as_of, horizon_days=H, rules=rules, window_days=WINDOW
    )
    known = deals_known_at(deals, as_of)
    past = (
        known.filter(pl.col("closed_at") > pl.lit(as_of - timedelta(days=WINDOW), DATETIME))
        .group_by("owner_id")
        .agg((pl.col("outcome") == "won").mean().alias("raw_rate"))
    )
    future = deals.filter(
        pl.col("closed_at").is_between(
            pl.lit(as_of, DATETIME), pl.lit(as_of + timedelta(days=90), DATETIME), closed="right"
        )
    )
    real = future.group_by("owner_id").agg(
        (pl.col("outcome") == "won").mean().alias("realised"), pl.len().alias("n")
    )
    j = (
        reps.join(real, on="owner_id")
        .join(past, on="owner_id", how="left")
        .filter(pl.col("n") >= 10)
        .drop_nulls(["raw_rate"])
    )
    rho_index = spearmanr(j["health_index"], j["realised"]).statistic
    rho_win = spearmanr(j["win_rate"], j["realised"]).statistic
    rho_raw = spearmanr(j["raw_rate"], j["realised"]).statistic
    rows.append((as_of.date(), j.height, rho_index, rho_win, rho_raw))
    print(
        f"{as_of.date()} reps={j.height} spearman(index)={rho_index:.3f} spearman(shrunk win rate)={rho_win:.3f} baseline spearman(raw win rate)={rho_raw:.3f}"
    )
m = pl.DataFrame(rows, schema=["as_of", "reps", "index", "shrunk", "raw"], orient="row")
print(
    "mean spearman: index {:.3f}, shrunk win rate {:.3f}, raw win rate (baseline) {:.3f}".format(
        m["index"].mean(), m["shrunk"].mean(), m["raw"].mean()
    )
)

# weekly runs: changes and waterfall consistency
prev_at, prev = None, pl.DataFrame(schema={"deal_id": pl.String, "win_probability": pl.Float64})
worst, checked, n_rows = 0.0, 0, 0
empty = pl.DataFrame(
    schema={"deal_id": pl.String, "feature": pl.String, "contribution": pl.Float64}
)
t = datetime(2017, 6, 1, tzinfo=UTC)
while t <= datetime(2017, 9, 1, tzinfo=UTC):
    cur = scores_at(t)
    ch = deal_score_changes(cur, prev, empty, empty, deals, t, prev_at)
    ids = set(cur["deal_id"]) | set(prev["deal_id"])
    assert ch.height == len(ids) == ch["deal_id"].n_unique()
    wf = pipeline_changes(cur, prev, {"deals": deals}, t, prev_at)
    for _, part in wf.group_by("period"):
        v = part.sort("step_order")["value"].to_list()
        worst = max(worst, abs(sum(v[:-1]) - v[-1]) / max(1.0, abs(v[-1])))
        checked += 1
    n_rows += ch.height
    prev_at, prev = t, cur
    t += timedelta(days=7)
print(
    f"weekly runs 2017-06-01..09-01: {n_rows} change rows, every deal of both runs once; {checked} waterfalls, max |start+steps-end|/|end| = {worst:.2e}"
)
print(ch.group_by("change_kind").len().sort("change_kind"))
print(health_overview(cur, None, deals).filter(pl.col("dimension") != "owner"))
