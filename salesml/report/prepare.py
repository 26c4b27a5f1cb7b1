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
    (scores written before it existed).
    """
    if "score_basis" not in scores.columns:
        return {}
    counts = scores.group_by("score_basis").len().drop_nulls("score_basis")
    return dict(zip(counts["score_basis"].to_list(), counts["len"].to_list(), strict=True))


def is_base_rate(scores: pl.DataFrame) -> bool:
    """True when no probability of the as_of comes from a model and some are the base rate:
    the inputs gave no model with skill, so there are no drivers to show.
    """
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

    The bins of `metrics.calibration_bins`, the same ones the stated ECE uses.
    """
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
    hours = demand.grid.bucket_hours
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
    Rows: model, kind, metric, origin, value, baseline, baseline_value.
    """
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
    value is defined.
    """
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


def pipeline_regions(frame: pl.DataFrame) -> pl.DataFrame:
    """The 'all' and region rows of pipeline_forecast with a `region` column (rows written
    before the dimension/member key already have one).
    """
    if "dimension" not in frame.columns:
        return frame
    return frame.filter(pl.col("dimension").is_in(["all", "region"])).rename({"member": "region"})


# --- decisions: actions, changes, views, alerts ----------------------------------------------


def actions_by_deal(actions: pl.DataFrame, scores: pl.DataFrame | None, n: int) -> pl.DataFrame:
    """One row per deal: (deal_id, win_probability, health, actions, warnings, best_uplift),
    its actions in rank order and its rule warnings as lists; deals with the largest uplift
    first, then those with warnings only. `scores` (deal_scores) supplies the health badge.
    """
    kind = pl.col("kind") if "kind" in actions.columns else pl.lit("action")
    is_action = kind == "action"
    per_deal = (
        actions.sort("deal_id", "rank")
        .group_by("deal_id", maintain_order=True)
        .agg(
            pl.col("win_probability").drop_nulls().first().alias("_p"),
            pl.col("action").filter(is_action).alias("actions"),
            pl.col("action").filter(~is_action).alias("warnings"),
            pl.col("uplift").filter(is_action).max().alias("best_uplift"),
        )
    )
    known = pl.DataFrame(
        schema={"deal_id": pl.String, "win_probability": pl.Float64, "health": pl.String}
    )
    if scores is not None and "health" in scores.columns:
        known = scores.select("deal_id", "win_probability", "health")
    return (
        per_deal.join(known, on="deal_id", how="left")
        .with_columns(pl.coalesce("win_probability", "_p").alias("win_probability"))
        .sort("best_uplift", "deal_id", descending=[True, False], nulls_last=True)
        .head(n)
        .select("deal_id", "win_probability", "health", "actions", "warnings", "best_uplift")
    )


CHANGE_LABELS = {
    "new": "new",
    "up": "up",
    "down": "down",
    "unchanged": "unchanged",
    "closed_won": "closed won",
    "closed_lost": "closed lost",
    "gone": "gone from the source",
}
MOVED_DRIVERS = pl.List(
    pl.Struct({"feature": pl.String, "before": pl.Float64, "after": pl.Float64})
)
"""`deal_score_changes.moved_drivers` decoded: [{feature, before, after}] (log-odds)."""


def change_counts(changes: pl.DataFrame) -> list[tuple[str, int]]:
    """(change kind label, deals) in the contract's order, kinds with deals only."""
    counts = dict(changes.group_by("change_kind").len().iter_rows())
    return [(label, int(counts[k])) for k, label in CHANGE_LABELS.items() if counts.get(k)]


def biggest_movers(changes: pl.DataFrame, n: int) -> pl.DataFrame:
    """The `n` deals whose probability moved most (up or down) since the previous run, with
    `drivers` decoded from moved_drivers (a list of {feature, before, after}).
    """
    moved = changes.filter(
        pl.col("change_kind").is_in(["up", "down"]) & pl.col("delta").is_not_null()
    )
    return (
        moved.sort(pl.col("delta").abs(), "deal_id", descending=[True, False])
        .head(n)
        .with_columns(
            pl.col("moved_drivers").fill_null("[]").str.json_decode(MOVED_DRIVERS).alias("drivers")
        )
    )


WATERFALL_LABELS = {
    "start": "previous run",
    "new": "new deals",
    "won": "won",
    "lost": "lost",
    "slipped_out": "slipped out",
    "pulled_in": "pulled in",
    "score_change": "score changes",
    "end": "this run",
}


def waterfall_steps(changes: pl.DataFrame, kind: str) -> pl.DataFrame:
    """The steps of one period kind (month / quarter) of `pipeline_changes` in display order,
    with `label` in words: (period, step, label, value, n_deals, previous_as_of).
    """
    return (
        changes.filter(pl.col("period_kind") == kind)
        .sort("step_order")
        .with_columns(
            pl.col("step")
            .replace_strict(WATERFALL_LABELS, default=pl.col("step"), return_dtype=pl.String)
            .alias("label")
        )
        .select("period", "step", "label", "value", "n_deals", "previous_as_of")
    )


def overview_rows(overview: pl.DataFrame, dimension: str) -> pl.DataFrame:
    """health_overview rows of one dimension ('region' with the 'all' total first, or
    'owner'), largest value at risk first.
    """
    wanted = ["all", "region"] if dimension == "region" else [dimension]
    return overview.filter(pl.col("dimension").is_in(wanted)).sort(
        pl.col("dimension") != "all", "at_risk_value", "member", descending=[False, True, False]
    )


SEVERITY_RANK = {"high": 0, "medium": 1, "low": 2}


def alerts_at(alerts: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    """The alerts as they stood at `as_of`: open then (first seen at or before as_of, not
    resolved by then) or resolved at as_of exactly, with `status_at`. The table keeps one row
    per alert (upserted), so an alert resolved after as_of reads as open here; an alert first
    seen after as_of is left out. Open first, then severity, then first seen.
    """
    at = pl.lit(as_of, DATETIME)
    resolved = pl.coalesce(
        "resolved_at",
        pl.when(pl.col("status") == "resolved").then(pl.col("last_seen_as_of")),
    )
    open_then = (pl.col("first_seen_as_of") <= at) & (resolved.is_null() | (resolved > at))
    resolved_now = (resolved == at).fill_null(False)
    return (
        alerts.filter(open_then | resolved_now)
        .with_columns(
            pl.when(open_then).then(pl.lit("open")).otherwise(pl.lit("resolved")).alias("status_at")
        )
        .sort(
            pl.col("status_at") != "open",
            pl.col("severity").replace_strict(SEVERITY_RANK, default=3, return_dtype=pl.Int8),
            "first_seen_as_of",
            "subject_id",
            "alert_key",
        )
    )
