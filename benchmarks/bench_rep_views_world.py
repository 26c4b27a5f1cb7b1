"""Rep health on the generated world (planted rep skill): does the index, and its shrunk win
rate, rank reps by their planted skill better than the raw win rate (trivial baseline)?

    cd /work/main && OMP_WAIT_POLICY=PASSIVE nice -n 10 .venv/bin/python benchmarks/bench_rep_views_world.py
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import polars as pl
from scipy.stats import spearmanr

sys.path.insert(0, str(Path.cwd()))
from salesml.config import DealHealthRules
from salesml.deals.snapshots import deals_known_at, open_deals
from salesml.deals.views import rep_health
from salesml.sample import WORLD_END, deals_world
from salesml.timeutil import DATETIME

tables, truth = deals_world(n_deals=6000, days=400, seed=11)
skill = (
    truth.select("deal_id", "rep_skill")
    .join(tables["deals"].select("deal_id", "owner_id"), on="deal_id")
    .group_by("owner_id")
    .agg(pl.col("rep_skill").first())
)
res = []
for back in (150, 120, 90, 60, 30):
    as_of = WORLD_END - timedelta(days=back)
    p = truth.select("deal_id", pl.col("true_win_probability").alias("win_probability"))
    scores = (
        open_deals(tables["deals"], as_of, 0)
        .join(p, on="deal_id")
        .select("deal_id", "win_probability", pl.lit("yellow").alias("health"))
    )
    reps = rep_health(scores, tables, as_of, horizon_days=45, rules=DealHealthRules())
    known = deals_known_at(tables["deals"], as_of).filter(
        pl.col("closed_at") > pl.lit(as_of - timedelta(days=90), DATETIME)
    )
    raw = known.group_by("owner_id").agg((pl.col("outcome") == "won").mean().alias("raw"))
    j = reps.join(skill, on="owner_id").join(raw, on="owner_id").drop_nulls(["win_rate", "raw"])
    r = [spearmanr(j[c], j["rep_skill"]).statistic for c in ("health_index", "win_rate", "raw")]
    res.append(r)
    print(
        f"as_of {as_of.date()} reps={j.height}: spearman vs planted skill: index {r[0]:.3f}, shrunk win rate {r[1]:.3f}, raw win rate (baseline) {r[2]:.3f}"
    )
m = pl.DataFrame(res, schema=["index", "shrunk", "raw"], orient="row").mean()
print("mean:", m.to_dicts()[0])
