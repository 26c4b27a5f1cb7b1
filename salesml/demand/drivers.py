"""The drivers of demand forecasts: which rows are explained, and their top SHAP factors in units.

Cost: exact TreeSHAP costs ~trees x leaves x depth^2 per row, far more than a prediction, so not
every row ahead is explained. By default: every open bucket in the next `explain_hours_ahead`
hours (24 h = the next 6 buckets) for every series, plus every bucket ahead of the series whose
SKU health is in `explain_health` (red, yellow). Closed-slot buckets get one factor saying so.

Unit: LightGBM's SHAP for a Tweedie/Poisson model is in log space (log of the mean). Factors are
converted to expected units per bucket with `model.to_unit_contributions` (each row's log
contributions scaled by the logarithmic mean of prediction and base, so they add up exactly to
mean - base units); the text reads e.g. "same bucket last week = 0: -0.80 units". They explain
the mean forecast, not P10/P90.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from salesml import explain
from salesml.config import DemandSettings
from salesml.demand.features import feature_labels
from salesml.demand.model import DemandModel, to_unit_contributions

CLOSED_FEATURE = "closed_slot"
CLOSED_TEXT = "the business has never sold in this slot of the week: forecast 0"
FACTOR_COLUMNS = [
    "customer_id",
    "sku",
    "bucket_start",
    "rank",
    "feature",
    "feature_value",
    "contribution",
    "text",
]


@dataclass
class Drivers:
    """Top per-row drivers (`factors`, FACTOR_COLUMNS) and what explaining them cost."""

    factors: pl.DataFrame
    rows_explained: int
    seconds: float

    @property
    def ms_per_row(self) -> float:
        """Milliseconds of explanation per row explained (0 when none were)."""
        return 1000.0 * self.seconds / self.rows_explained if self.rows_explained else 0.0


def rows_to_explain(
    frame: pl.DataFrame,
    demand: DemandSettings,
    as_of: datetime,
    health: pl.DataFrame | None = None,
    max_rows: int | None = None,
) -> pl.Series:
    """Boolean mask over forecast rows: within the next explain_hours_ahead, or a series rated
    in explain_health; at most `explain_max_rows` (or `max_rows`) open rows, by priority: red
    series, then the next hours, then other flagged series; earliest buckets first. Closed-slot
    rows in the selection are always kept (they cost nothing).
    """
    cap = demand.explain.max_rows if max_rows is None else max_rows
    soon = pl.col("bucket_start") < as_of + timedelta(hours=demand.explain.hours_ahead)
    marked = frame.select("customer_id", "sku", "bucket_start", "closed")
    if health is not None and health.height and demand.explain.health:
        flagged = health.filter(pl.col("health").is_in(list(demand.explain.health))).select(
            "customer_id", "sku", pl.col("health").alias("_health")
        )
        marked = marked.join(flagged, on=["customer_id", "sku"], how="left", maintain_order="left")
    else:
        marked = marked.with_columns(pl.lit(None, pl.String).alias("_health"))
    priority = (
        pl.when(pl.col("_health") == "red")
        .then(0)
        .when(soon)
        .then(1)
        .when(pl.col("_health").is_not_null())
        .then(2)
    )
    ranked = marked.with_columns(_priority=priority).with_row_index("_i")
    chosen = ranked.filter(pl.col("_priority").is_not_null())
    open_rows = chosen.filter(~pl.col("closed")).sort("_priority", "bucket_start", "_i")
    keep = pl.concat(
        [open_rows.head(cap).select("_i"), chosen.filter(pl.col("closed")).select("_i")]
    )
    return ranked.select(pl.col("_i").is_in(keep["_i"].implode())).to_series()


def selected_open_rows(
    frame: pl.DataFrame, demand: DemandSettings, as_of: datetime, health: pl.DataFrame | None
) -> int:
    """How many open rows the configured selection holds before the `explain_max_rows` cap."""
    mask = rows_to_explain(frame, demand, as_of, health, max_rows=frame.height)
    return int((mask & ~frame["closed"]).sum())


def explain_rows(
    model: DemandModel,
    frame: pl.DataFrame,
    features: pl.DataFrame,
    demand: DemandSettings,
    mask: pl.Series,
) -> Drivers:
    """Top-k factors (units) for the masked forecast rows (schema: FACTOR_COLUMNS)."""
    started = time.perf_counter()
    keys = frame.select("customer_id", "sku", "bucket_start", "closed")
    chosen = keys.with_columns(features).filter(mask)
    open_rows = chosen.filter(~pl.col("closed"))
    closed = chosen.filter(pl.col("closed"))
    parts = []
    if open_rows.height:
        parts.append(_open_factors(model, open_rows, demand))
    if closed.height:
        parts.append(_closed_factors(closed))
    out = (
        pl.concat(parts, how="vertical_relaxed").sort("customer_id", "sku", "bucket_start", "rank")
        if parts
        else pl.DataFrame(schema=_factor_schema(frame.schema["bucket_start"]))
    )
    return Drivers(out, open_rows.height, time.perf_counter() - started)


def _open_factors(
    model: DemandModel, open_rows: pl.DataFrame, demand: DemandSettings
) -> pl.DataFrame:
    """The top `demand.explain.top_k` SHAP factors of each open row, in expected units per bucket."""
    x = open_rows.select(model.feature_names_)
    contrib = to_unit_contributions(model.contributions(x))
    labels = feature_labels(demand, model.feature_names_)
    factors = explain.top_factors(
        contrib, model.feature_names_, x, labels=labels, k=demand.explain.top_k, unit="units"
    )
    ids = open_rows.select("customer_id", "sku", "bucket_start").with_row_index("row_idx")
    return factors.join(ids, on="row_idx", how="left").select(
        "customer_id",
        "sku",
        "bucket_start",
        pl.col("rank").cast(pl.Int64),
        "feature",
        "feature_value",
        "contribution",
        "text",
    )


def _closed_factors(closed: pl.DataFrame) -> pl.DataFrame:
    """One factor per closed-slot row: the slot is closed, so the forecast is 0."""
    return closed.select(
        "customer_id",
        "sku",
        "bucket_start",
        pl.lit(1, dtype=pl.Int64).alias("rank"),
        pl.lit(CLOSED_FEATURE).alias("feature"),
        pl.lit("yes").alias("feature_value"),
        pl.lit(0.0).alias("contribution"),
        pl.lit(CLOSED_TEXT).alias("text"),
    )


def _factor_schema(bucket_start: pl.DataType) -> dict[str, pl.DataType]:
    """FACTOR_COLUMNS with their types (`bucket_start` typed as the forecast frame's)."""
    return {
        "customer_id": pl.String(),
        "sku": pl.String(),
        "bucket_start": bucket_start,
        "rank": pl.Int64(),
        "feature": pl.String(),
        "feature_value": pl.String(),
        "contribution": pl.Float64(),
        "text": pl.String(),
    }
