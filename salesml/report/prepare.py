"""Pure frame preparation for the report: at-risk ordering, calibration pairs, bucketed actuals.

No IO and no plotting: each function takes and returns polars frames, so gather (IO) and render
(HTML) stay thin and these are unit-tested on small frames.
"""

from __future__ import annotations

import json
from datetime import datetime

import polars as pl

from salesml.config import DemandSettings
from salesml.demand import buckets
from salesml.timeutil import DATETIME

HEALTH_RANK = {"red": 0, "yellow": 1, "green": 2}
SERIES_KEY = ["customer_id", "sku"]


def _health_rank() -> pl.Expr:
    return pl.col("health").replace_strict(HEALTH_RANK, default=3, return_dtype=pl.Int8)


def deals_at_risk(scores: pl.DataFrame) -> pl.DataFrame:
    """Scored deals, most at risk first: red before yellow before green, then lowest probability."""
    return scores.sort(_health_rank(), "win_probability", "deal_id")


def health_counts(frame: pl.DataFrame) -> dict[str, int]:
    """Rows per health colour (every colour present, 0 when none)."""
    counts = {colour: 0 for colour in HEALTH_RANK}
    for colour, n in frame.group_by("health").len().iter_rows():
        counts[str(colour)] = int(n)
    return counts


def factor_labels(factors: pl.DataFrame) -> pl.DataFrame:
    """Add `label`: the driver's human label, recovered from `text` ("label = value: +0.11").

    Falls back to the feature name with underscores as spaces when there is no usable text.
    """
    fallback = pl.col("feature").str.replace_all("_", " ")
    if "text" not in factors.columns:
        return factors.with_columns(fallback.alias("label"))
    value = pl.col("feature_value").cast(pl.String).fill_null("missing")
    head = pl.col("text").str.replace(r": [^:]*$", "")
    suffix = pl.concat_str(pl.lit(" = "), value)
    label = (
        pl.when(head.str.ends_with(suffix))
        .then(head.str.head(head.str.len_chars() - suffix.str.len_chars()))
        .otherwise(fallback)
    )
    return factors.with_columns(label.fill_null(fallback).alias("label"))


BASE_RATE = "base_rate"
"""`deal_scores.score_basis` of a probability that is the base rate (no model with skill)."""


def score_basis_counts(scores: pl.DataFrame) -> dict[str, int]:
    """Deals per `score_basis` (model / prior / base_rate); {} when the column is absent
    (scores written before it existed)."""
    if "score_basis" not in scores.columns:
        return {}
    counts = scores.group_by("score_basis").len().drop_nulls("score_basis")
    return dict(zip(counts["score_basis"].to_list(), counts["len"].to_list(), strict=True))


def is_base_rate(scores: pl.DataFrame) -> bool:
    """True when no probability of the as_of comes from a model and some are the base rate:
    the inputs gave no model with skill, so there are no drivers to show."""
    counts = score_basis_counts(scores)
    return counts.get(BASE_RATE, 0) > 0 and counts.get("model", 0) == 0


def json_list(text: str | None) -> list[str]:
    """A JSON array of strings as a list; other text as one item; null as []."""
    if text is None or text == "":
        return []
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return [text]
    if isinstance(value, list):
        return [str(item) for item in value]
    return [str(value)]


def calibration_pairs(
    past_scores: pl.DataFrame, deals: pl.DataFrame, as_of: datetime
) -> pl.DataFrame:
    """Past predictions whose deal has closed since: (scored_as_of, deal_id, win_probability, won).

    A score made at `scored_as_of` counts when the deal closed after it and at or before the
    report's `as_of` (outcomes known by then: `deals` must be read as of `as_of`). Rows
    without a probability (deals not scored, e.g. open for less than `deals.min_open_days`)
    or with one outside [0, 1] made no prediction, so they are not pairs.
    """
    at = pl.lit(as_of, DATETIME)
    closed = deals.filter(pl.col("outcome").is_not_null() & (pl.col("closed_at") <= at)).select(
        "deal_id", "closed_at", (pl.col("outcome") == "won").alias("won")
    )
    probability = pl.col("win_probability").cast(pl.Float64)
    predicted = probability.is_not_null() & probability.is_between(0.0, 1.0)
    return (
        past_scores.filter((pl.col("as_of") < at) & predicted.fill_null(False))
        .select(pl.col("as_of").alias("scored_as_of"), "deal_id", "win_probability")
        .join(closed, on="deal_id", how="inner")
        .filter(pl.col("closed_at") > pl.col("scored_as_of"))
        .select("scored_as_of", "deal_id", "win_probability", "won")
        .sort("scored_as_of", "deal_id")
    )


def reliability(pairs: pl.DataFrame, bins: int = 10) -> pl.DataFrame:
    """Equal-width bins of predicted probability: (bin, mean_probability, win_rate, n).

    The bins of `metrics.calibration_bins`, the same ones the stated ECE uses."""
    from salesml import metrics  # lazy, like render's: scikit-learn loads only when drawing

    if pairs.height == 0:
        return pl.DataFrame(schema=_RELIABILITY_SCHEMA)
    won = pairs["won"].cast(pl.Float64).to_numpy()
    table = metrics.calibration_bins(won, pairs["win_probability"].to_numpy(), bins)
    return pl.DataFrame(
        {
            "bin": table.bin,
            "mean_probability": table.mean_probability,
            "win_rate": table.observed_rate,
            "n": table.n,
        },
        schema=_RELIABILITY_SCHEMA,
    )


_RELIABILITY_SCHEMA = {
    "bin": pl.Int64(),
    "mean_probability": pl.Float64(),
    "win_rate": pl.Float64(),
    "n": pl.UInt32(),
}


def top_series(forecast: pl.DataFrame, n: int) -> pl.DataFrame:
    """The n customer x SKU series with the largest total forecast P50: (customer_id, sku, volume)."""
    return (
        forecast.group_by(SERIES_KEY)
        .agg(pl.col("p50").sum().alias("volume"))
        .sort(pl.col("volume"), *SERIES_KEY, descending=[True, False, False])
        .head(n)
    )


def bucket_actuals(
    sales: pl.DataFrame,
    series: pl.DataFrame,
    *,
    as_of: datetime,
    first: datetime,
    last: datetime,
    demand: DemandSettings,
    timezone: str,
) -> pl.DataFrame:
    """Actual demand of `series` per bucket from `first` to `last` (zero-filled).

    Returns (customer_id, sku, bucket_start, quantity, after_as_of); quantities follow the
    demand model's rules (`salesml.demand.buckets.bucket_sales`: returns net or ignored).
    after_as_of marks buckets after the forecast origin (the last complete bucket at as_of).
    Buckets after as_of are kept only up to the latest sale in `sales` (any series): past
    that, the source has no data yet, and a zero would read as "sold nothing".
    """
    hours = demand.bucket_hours
    origin = buckets.origin_bucket(as_of, timezone, hours)
    first_bucket = buckets.origin_bucket(first, timezone, hours) + 1
    last_bucket = buckets.origin_bucket(last, timezone, hours)
    observed = sales.select(pl.col("ts").max()).item()
    if observed is None:
        last_bucket = min(last_bucket, origin)
    else:
        observed_bucket = buckets.origin_bucket(observed, timezone, hours) + 1
        last_bucket = min(last_bucket, max(observed_bucket, origin))
    wanted = sales.join(series.select(SERIES_KEY), on=SERIES_KEY, how="semi")
    sold = (
        buckets.bucket_sales(wanted, demand, timezone, last_bucket)
        .filter(pl.col("bucket") >= first_bucket)
        .select(*SERIES_KEY, pl.col("bucket").cast(pl.Int64), pl.col("y").cast(pl.Float64))
        .collect()
    )
    grid = series.select(SERIES_KEY).join(
        pl.DataFrame(
            {"bucket": pl.int_range(first_bucket, last_bucket + 1, eager=True, dtype=pl.Int64)}
        ),
        how="cross",
    )
    return (
        grid.join(sold, on=[*SERIES_KEY, "bucket"], how="left")
        .select(
            *SERIES_KEY,
            buckets.bucket_start(pl.col("bucket"), timezone, hours).alias("bucket_start"),
            pl.col("y").fill_null(0.0).alias("quantity"),
            (pl.col("bucket") > origin).alias("after_as_of"),
        )
        .sort(*SERIES_KEY, "bucket_start")
    )


def global_drivers(factors: pl.DataFrame, n: int) -> pl.DataFrame:
    """Mean |contribution| per feature over the explained forecasts: (feature, mean_abs, share).

    Only each forecast's top-k drivers are stored, so a feature outside a forecast's top k
    counts 0 there; `share` is the fraction of explained forecasts with the feature in the top k.
    """
    explained = factors.select(["customer_id", "sku", "bucket_start"]).n_unique()
    if explained == 0:
        return pl.DataFrame(
            schema={"feature": pl.String, "mean_abs": pl.Float64, "share": pl.Float64}
        )
    return (
        factors.group_by("feature")
        .agg(
            (pl.col("contribution").abs().sum() / explained).alias("mean_abs"),
            (pl.len() / explained).alias("share"),
        )
        .sort(pl.col("mean_abs"), pl.col("feature"), descending=[True, False])
        .head(n)
    )


def sku_health_order(frame: pl.DataFrame) -> pl.DataFrame:
    """Red first, then yellow, then green; within a colour the soonest projected stock-out."""
    return frame.sort(
        _health_rank(), "projected_stockout_at", "customer_id", "sku", nulls_last=True
    )


def quarantine_summary(quarantine: pl.DataFrame, examples: int = 1) -> pl.DataFrame:
    """Quarantined rows per (table_name, check): (table_name, check, rows, example)."""
    return (
        quarantine.group_by("table_name", "check")
        .agg(
            pl.len().alias("rows"),
            pl.col("reason")
            .unique(maintain_order=True)
            .head(examples)
            .str.join("; ")
            .alias("example"),
        )
        .sort(pl.col("rows"), "table_name", "check", descending=[True, False, False])
    )


QUALITY_SHOWN: dict[str, tuple[str, ...]] = {
    "deal_win": ("brier", "auc"),
    "demand": ("wape", "pinball_p50", "coverage_p10_p90"),
}
"""model_quality metrics charted per model (bottom level); the table holds more."""
QUALITY_LEVELS = ("deals", "bottom")
METRIC_LABELS = {
    "brier": "Brier",
    "auc": "AUC",
    "log_loss": "log loss",
    "wape": "WAPE of P50",
    "pinball_p50": "pinball loss at P50",
    "coverage_p10_p90": "P10–P90 coverage",
}
BASELINE_LABELS = {
    "base_rate": "base rate",
    "logistic": "logistic",
    "realised_rate": "realised rate",
    "zero": "zero",
    "median_8w": "8-week median",
    "seasonal_naive": "seasonal naive",
    "nominal": "nominal",
}


def quality_points(history: pl.DataFrame) -> pl.DataFrame:
    """The charted model_quality series: one row per (model, kind, metric, origin), the value
    measured at the latest as_of (a later run re-measures an origin with more data), sorted.
    Rows: model, kind, metric, origin, value, baseline, baseline_value."""
    shown = pl.any_horizontal(
        (pl.col("model") == model) & pl.col("metric").is_in(list(metrics))
        for model, metrics in QUALITY_SHOWN.items()
    )
    keys = ["model", "kind", "metric", "origin"]
    return (
        history.filter(shown & pl.col("level").is_in(QUALITY_LEVELS))
        .sort("as_of")
        .unique(subset=keys, keep="last")
        .select(*keys, "value", "baseline", "baseline_value")
        .sort(keys)
    )


def quality_sentence(points: pl.DataFrame, last: int = 4) -> str | None:
    """'realised Brier 0.118 vs base rate 0.137 over the last 4 checks': the mean value and
    baseline over the latest `last` origins of one (model, kind, metric) series; None when no
    value is defined."""
    tail = points.sort("origin").tail(last)
    values = tail["value"].drop_nulls()
    if values.len() == 0:
        return None
    kind = str(tail["kind"][0])
    metric = str(tail["metric"][0])
    text = f"{kind} {METRIC_LABELS.get(metric, metric)} {_mean(values):.3f}"
    references = tail["baseline_value"].drop_nulls()
    names = tail["baseline"].drop_nulls().unique(maintain_order=True).to_list()
    if references.len() and names:
        named = " / ".join(BASELINE_LABELS.get(n, n) for n in names)
        text += f" vs {named} {_mean(references):.3f}"
    noun = "check" if kind == "realised" else "backtest origin"
    count = tail.height
    return f"{text} over the last {count} {noun}{'s' if count != 1 else ''}"


def _mean(values: pl.Series) -> float:
    return float(values.cast(pl.Float64).mean())  # type: ignore[arg-type]
