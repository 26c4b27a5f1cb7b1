"""Signal weights as post-model adjustments: cost, and whether the log tells the truth.

Run (2 cores):  OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_demand_adjust.py [N]

Generated world (signals price and promotion), N series (default 2,000), 91 days: fit the default
demand model, forecast the week after as_of, then time `adjust.signal_values` + `adjust.adjust`
with weights promotion x1.5 everywhere and price x0.9 in emea, and compare the units the
log says each weight added with the change in summed `expected`. Printed: timings, the log, the
change, rows touched, and the consistency of the adjusted whole-unit quantiles.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before LightGBM loads OpenMP

from salesml.config import Settings
from salesml.demand import adjust, forecasting
from salesml.sample import WORLD_END, demand_world

WEIGHTS = {"promotion": {"*": 1.5}, "price": {"emea": 0.9}}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    tables, _ = demand_world(n_series=n, days=91, seed=3)
    as_of = WORLD_END - timedelta(days=7)
    settings = Settings()
    demand = settings.demand.model_copy(
        update={"model": settings.demand.model.model_copy(update={"num_threads": 2})}
    )
    settings = settings.model_copy(update={"demand": demand})
    tick = time.perf_counter()
    fit = forecasting.fit(tables["sales"], settings, as_of, tables["signals"])
    print(f"fit {time.perf_counter() - tick:.1f} s; series {fit.params['series']}")
    tick = time.perf_counter()
    fc = forecasting.forecast(
        fit.model, tables["sales"], settings, as_of, tables["signals"], history=fit.history
    )
    print(f"forecast {time.perf_counter() - tick:.1f} s; rows {fc.frame.height}")
    tick = time.perf_counter()
    cells = adjust.signal_values(
        fc.history, fc.frame, demand, tables["signals"], as_of, list(WEIGHTS)
    )
    mid = time.perf_counter()
    done = adjust.adjust(fc.frame, cells, WEIGHTS, fit.model, demand)
    end = time.perf_counter()
    print(f"signal_values {mid - tick:.2f} s, adjust {end - mid:.2f} s")
    print(done.log)
    before, after = float(fc.frame["mean"].sum()), float(done.frame["mean"].sum())
    logged = float(done.log["units_added"].sum())
    print(
        f"sum expected before {before:.1f} after {after:.1f}; change {after - before:+.3f}; "
        f"logged {logged:+.3f}"
    )
    touched = done.frame["mean"] != fc.frame["mean"]
    same = done.frame.filter(~touched).equals(fc.frame.filter(~touched))
    print(f"rows touched {int(touched.sum())} of {fc.frame.height}; untouched identical: {same}")
    q = done.frame
    whole = ((q["p10"] % 1 == 0) & (q["p50"] % 1 == 0) & (q["p90"] % 1 == 0)).all()
    ordered = ((q["p10"] <= q["p50"]) & (q["p50"] <= q["p90"])).all()
    inside = ((q["p10"] <= q["mean"]) & (q["mean"] < q["p90"] + 1)).all()
    print(f"quantiles whole: {whole}, ordered: {ordered}, p10 <= expected < p90 + 1: {inside}")


if __name__ == "__main__":
    main()
