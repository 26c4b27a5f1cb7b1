"""Which forecast rows get SHAP drivers by default, the cap, and closed-slot rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from salesml.config import DemandSettings
from salesml.demand.drivers import (
    CLOSED_FEATURE,
    explain_rows,
    rows_to_explain,
    selected_open_rows,
)
from salesml.demand.model import DemandModel
from salesml.timeutil import DATETIME

AS_OF = datetime(2024, 6, 10, tzinfo=UTC)


def _frame() -> pl.DataFrame:
    rows = []
    for sku in ("red", "yellow", "green"):
        for h in range(1, 43):
            closed = h % 6 == 1  # one closed bucket a day
            rows.append(("c", sku, AS_OF + timedelta(hours=4 * (h - 1)), closed))
    return pl.DataFrame(
        rows,
        schema={
            "customer_id": pl.String,
            "sku": pl.String,
            "bucket_start": DATETIME,
            "closed": pl.Boolean,
        },
        orient="row",
    )


HEALTH = pl.DataFrame(
    {
        "customer_id": ["c"] * 3,
        "sku": ["red", "yellow", "green"],
        "health": ["red", "yellow", "green"],
    }
)


def test_default_selection_is_next_day_plus_flagged_series() -> None:
    frame = _frame()
    mask = rows_to_explain(frame, DemandSettings(), AS_OF, HEALTH)
    chosen = frame.filter(mask)
    per_sku = dict(chosen.group_by("sku").len().iter_rows())
    assert per_sku == {"red": 42, "yellow": 42, "green": 6}  # green: next 24 h only
    no_health = frame.filter(rows_to_explain(frame, DemandSettings(), AS_OF, None))
    assert no_health.height == 18


def test_cap_keeps_red_first_then_the_next_hours() -> None:
    frame = _frame()
    demand = DemandSettings(explain={"max_rows": 40})
    mask = rows_to_explain(frame, demand, AS_OF, HEALTH)
    chosen = frame.filter(mask & ~frame["closed"])
    assert chosen.height == 40
    assert chosen.filter(pl.col("sku") == "red").height == 35  # all open red rows
    # then the next 24 h of the other series, earliest first
    others = chosen.filter(pl.col("sku") != "red")
    assert all(at < AS_OF + timedelta(hours=24) for at in others["bucket_start"].to_list())
    assert selected_open_rows(frame, demand, AS_OF, HEALTH) == 35 + 35 + 5


def test_closed_rows_get_one_plain_factor_and_open_rows_add_up_in_units() -> None:
    rng = np.random.default_rng(0)
    features = pl.DataFrame({"a": rng.normal(size=2000), "b": rng.normal(size=2000)})
    y = rng.poisson(np.exp(0.5 * features["a"].to_numpy()))
    model = DemandModel(n_estimators=20, num_leaves=7, num_threads=1).fit(features, y)
    frame = _frame()
    x = features.head(frame.height)
    drivers = explain_rows(
        model, frame, x, DemandSettings(explain={"top_k": 2}), pl.Series([True] * frame.height)
    )
    factors = drivers.factors
    closed = factors.filter(pl.col("feature") == CLOSED_FEATURE)
    assert closed.height == frame["closed"].sum()
    assert (closed["rank"] == 1).all()
    open_factors = factors.filter(pl.col("feature") != CLOSED_FEATURE)
    assert set(open_factors.group_by("sku", "bucket_start").len()["len"].to_list()) <= {1, 2}
    assert open_factors["text"].str.ends_with(" units").all()
    assert drivers.rows_explained == int((~frame["closed"]).sum())
