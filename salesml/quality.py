"""The quality history (`model_quality`): backtests and realised checks as rows (pure, frames in).

One row per (run_id, model, origin, level, metric) with the model's `value` next to the
strongest trivial baseline measured on the same rows (`baseline`, `baseline_value`):

- kind `backtest`: a rolling-origin backtest's per-origin metrics, read from the same JSON
  summary that `salesml backtest --json` prints (so the rows and the JSON cannot disagree);
  `origin` is the origin the model was fitted at.
- kind `realised`: what the product wrote at an earlier as_of t (deal_scores, demand_forecast)
  against what was known to have happened by the current `as_of`; `origin` is t. Only outcomes
  known at `as_of` are used: a deal's close counts when closed_at <= as_of, a sale when its
  bucket ended by as_of; rewriting anything after as_of leaves the rows unchanged.

Levels: `deals` (deal-win), `bottom` (demand cells: customer x SKU x bucket) and the demand
backtest's aggregate levels (sku_day, sku_week, ...) when its summary has them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import polars as pl

from salesml import metrics
from salesml.timeutil import DATETIME

if TYPE_CHECKING:
    from salesml.config import DemandSettings

DEAL_WIN = "deal_win"
DEMAND = "demand"
BACKTEST = "backtest"
REALISED = "realised"

NOMINAL_COVERAGE = 0.8
"""Default nominal coverage of [P10, P90] (`demand.intervals.interval_coverage`): a coverage row's
reference (`baseline = 'nominal'`)."""

REALISED_ORIGINS = 4
"""How many of the latest matured earlier runs a realised check covers (older checks are in
the rows earlier runs wrote)."""

SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.String(),
    "model": pl.String(),
    "kind": pl.String(),
    "origin": DATETIME,
    "level": pl.String(),
    "metric": pl.String(),
    "value": pl.Float64(),
    "baseline": pl.String(),
    "baseline_value": pl.Float64(),
    "rows": pl.Int64(),
}
"""Columns of the frames this module returns (the warehouse stamps `as_of`)."""

DEAL_METRICS: dict[str, tuple[str, ...]] = {
    "brier": ("base_rate",),
    "auc": ("logistic", "base_rate"),
    "log_loss": ("logistic", "base_rate"),
    "ece": ("logistic", "base_rate"),
}
"""Deal-win backtest metric -> baselines in order of preference (the first one measured)."""

HIGHER_IS_BETTER = frozenset({"auc"})

DEMAND_TRIVIAL = ("zero", "median_8w", "seasonal_naive")
"""Trivial demand baselines; per metric the strongest (lowest loss) is the row's baseline."""

DEMAND_AGGREGATE_BASELINES = ("zero", "median_8w", "seasonal_naive", "recent_mean", "ets")
"""At aggregate levels the mean-type baselines are the honest ones too (issue 10)."""


def empty() -> pl.DataFrame:
    """No rows, the module's columns."""
    return pl.DataFrame(schema=SCHEMA)


def _frame(records: list[dict[str, Any]]) -> pl.DataFrame:
    if not records:
        return empty()
    cleaned = [
        {
            **record,
            "value": _finite(record.get("value")),
            "baseline_value": _finite(record.get("baseline_value")),
        }
        for record in records
    ]
    return pl.DataFrame(cleaned, schema=SCHEMA, orient="row").select(list(SCHEMA))


def _finite(value: Any) -> float | None:
    """A finite float or None (NaN, inf and missing values are null in the table)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _origin(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def _rows(value: Any) -> int | None:
    number = _finite(value)
    return None if number is None else int(number)


def _best(
    row: Mapping[str, Any], metric: str, names: Sequence[str], prefer_first: bool = False
) -> tuple[str | None, float | None]:
    """(name, value) of the baseline measured for `metric` in `row` (`<name>_<metric>`): the
    first one present when `prefer_first`, else the strongest (lowest; highest for AUC).
    """
    found = [
        (name, value)
        for name in names
        if (value := _finite(row.get(f"{name}_{metric}"))) is not None
    ]
    if not found:
        return None, None
    if prefer_first:
        return found[0]
    higher = metric in HIGHER_IS_BETTER
    return max(found, key=lambda item: item[1]) if higher else min(found, key=lambda item: item[1])


# ---------------------------------------------------------------------------------------------
# Backtests
# ---------------------------------------------------------------------------------------------
def backtest_rows(
    summary: Mapping[str, Any], model: str, run_id: str, nominal: float = NOMINAL_COVERAGE
) -> pl.DataFrame:
    """model_quality rows (kind `backtest`) of a backtest's JSON summary, one per origin, level
    and metric (`deal_win`: `deals.deal_win_backtest.summarize`; `demand`: `demand.demand_backtest.summary`,
    plus the aggregate levels of its optional `levels` entry).
    """
    per_origin = list(summary.get("per_origin") or [])
    if model == DEAL_WIN:
        records = [r for row in per_origin for r in _deal_backtest_records(row)]
    elif model == DEMAND:
        records = [
            r for row in per_origin for r in _demand_backtest_records(row, "bottom", nominal)
        ]
        records += _level_records(summary.get("levels"), nominal)
    else:
        raise ValueError(f"model_quality: unknown model {model!r}; known: {DEAL_WIN}, {DEMAND}")
    return _frame([{**r, "run_id": run_id, "model": model, "kind": BACKTEST} for r in records])


def _deal_backtest_records(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    origin = _origin(row["origin"])
    out = []
    for metric, baselines in DEAL_METRICS.items():
        if f"model_{metric}" not in row:
            continue
        name, value = _best(row, metric, baselines, prefer_first=True)
        out.append(
            {
                "origin": origin,
                "level": "deals",
                "metric": metric,
                "value": row[f"model_{metric}"],
                "baseline": name,
                "baseline_value": value,
                "rows": _rows(row.get("n_rows")),
            }
        )
    return out


def _demand_metric_names(row: Mapping[str, Any]) -> list[str]:
    """The model's metrics in a demand per-origin row: WAPE, pinball, coverage (overall, per
    stratum, on cells with a sale).
    """
    fixed = ["wape", "wape_mean", "pinball_p10", "pinball_p50", "pinball_p90"]
    coverage = [k for k in row if k.startswith("coverage_")]
    return [k for k in fixed if k in row] + coverage


def _demand_backtest_records(
    row: Mapping[str, Any],
    level: str,
    nominal: float,
    baselines: Sequence[str] = DEMAND_TRIVIAL,
) -> list[dict[str, Any]]:
    origin = _origin(row["origin"])
    total_rows = _rows(row.get("rows", row.get("n_rows")))
    out = []
    for metric in _demand_metric_names(row):
        if metric.startswith("coverage_"):
            stratum = metric.removeprefix("coverage_")
            name: str | None = "nominal"
            value: float | None = nominal
            rows = _rows(row[f"rows_{stratum}"]) if f"rows_{stratum}" in row else total_rows
        else:
            point = "wape" if metric == "wape_mean" else metric  # a point baseline is its mean
            name, value = _best(row, point, baselines)
            rows = total_rows
        out.append(
            {
                "origin": origin,
                "level": level,
                "metric": metric,
                "value": row[metric],
                "baseline": name,
                "baseline_value": value,
                "rows": rows,
            }
        )
    return out


def _level_records(levels: Any, nominal: float) -> list[dict[str, Any]]:
    """Rows of the aggregate levels, read defensively: {level: {"per_origin": [...]}} or
    {level: [...]}, each per-origin entry a dict with `origin` and metrics as at the bottom.
    """
    if not isinstance(levels, Mapping):
        return []
    out: list[dict[str, Any]] = []
    for level, entry in levels.items():
        rows = entry.get("per_origin") if isinstance(entry, Mapping) else entry
        if not isinstance(rows, list):
            continue
        for row in rows:
            if isinstance(row, Mapping) and "origin" in row:
                out += _demand_backtest_records(
                    row, str(level), nominal, DEMAND_AGGREGATE_BASELINES
                )
    return out


# ---------------------------------------------------------------------------------------------
# Realised checks: deal scores
# ---------------------------------------------------------------------------------------------
def known_outcomes(deals: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    """deal_id, created_at and the close (closed_at, won) as known at `as_of`: a close after
    as_of is unknown (null), whatever the source holds.
    """
    known = pl.col("closed_at") <= pl.lit(as_of, DATETIME)
    return deals.select(
        "deal_id",
        "created_at",
        pl.when(known).then(pl.col("closed_at")).alias("closed_at"),
        (known & (pl.col("outcome") == "won")).fill_null(False).alias("won"),
    )


def _won_within(start: pl.Expr, end: pl.Expr) -> pl.Expr:
    """Won with a close in (start, end]."""
    return (pl.col("won") & (pl.col("closed_at") > start) & (pl.col("closed_at") <= end)).fill_null(
        False
    )


def base_rate_at(outcomes: pl.DataFrame, at: datetime, horizon_days: int) -> tuple[float, int]:
    """(rate, deals): how often deals open at at - H were won within H days, i.e. by `at`; the
    base rate of the event as known at `at` (only closes <= at count).
    """
    start = at - timedelta(days=horizon_days)
    lo, hi = pl.lit(start, DATETIME), pl.lit(at, DATETIME)
    open_then = outcomes.filter(
        (pl.col("created_at") <= lo) & (pl.col("closed_at").is_null() | (pl.col("closed_at") > lo))
    )
    if open_then.height == 0:
        return math.nan, 0
    rate = open_then.select(_won_within(lo, hi).mean()).item()
    return float(rate), open_then.height


def realised_deal_rows(
    scores: pl.DataFrame,
    deals: pl.DataFrame,
    as_of: datetime,
    horizon_days: int,
    run_id: str,
    max_origins: int = REALISED_ORIGINS,
    base_rate: Callable[[datetime], float] | None = None,
) -> pl.DataFrame:
    """Realised checks (kind `realised`, level `deals`) of deal_scores written at earlier as_of t
    whose event has been decided by `as_of` (t + H <= as_of, H = `horizon_days`; the event is
    "won within H days of t"): Brier, AUC and log loss next to the base rate known at t
    (`base_rate(t)`, e.g. what `score_basis = 'base_rate'` wrote; default `base_rate_at`), and
    the mean probability next to the realised rate. The latest
    `max_origins` such t. `scores` holds as_of, deal_id, win_probability; `deals` the deals
    table as read at as_of (closes after as_of are ignored anyway).
    """
    horizon = timedelta(days=horizon_days)
    matured = (
        (
            scores.filter(
                pl.col("win_probability").is_not_null()
                & (pl.col("as_of") <= pl.lit(as_of - horizon, DATETIME))
            )
            .get_column("as_of")
            .unique()
            .sort()
            .to_list()
        )[-max_origins:]
        if max_origins > 0
        else []
    )
    outcomes = known_outcomes(deals, as_of)
    records: list[dict[str, Any]] = []
    for at in matured:
        rate = (
            base_rate(at) if base_rate is not None else base_rate_at(outcomes, at, horizon_days)[0]
        )
        records += _deal_check(scores, outcomes, at, horizon_days, rate)
    return _frame([{**r, "run_id": run_id, "model": DEAL_WIN, "kind": REALISED} for r in records])


def _deal_check(
    scores: pl.DataFrame, outcomes: pl.DataFrame, at: datetime, horizon_days: int, rate: float
) -> list[dict[str, Any]]:
    end = at + timedelta(days=horizon_days)
    rows = (
        scores.filter(
            (pl.col("as_of") == pl.lit(at, DATETIME)) & pl.col("win_probability").is_not_null()
        )
        .select("deal_id", "win_probability")
        .join(outcomes, on="deal_id", how="inner")
        .with_columns(
            label=_won_within(pl.lit(at, DATETIME), pl.lit(end, DATETIME)).cast(pl.Float64)
        )
    )
    if rows.height == 0:
        return []
    y = rows["label"].to_numpy()
    p = np.clip(rows["win_probability"].to_numpy().astype(np.float64), 0.0, 1.0)
    base = np.full_like(p, rate) if math.isfinite(rate) else None
    out = []
    for metric, score in (
        ("brier", metrics.brier),
        ("auc", metrics.auc),
        ("log_loss", metrics.log_loss),
    ):
        out.append(
            {
                "metric": metric,
                "value": score(y, p),
                "baseline": None if base is None else "base_rate",
                "baseline_value": None if base is None else score(y, base),
            }
        )
    out.append(
        {
            "metric": "mean_predicted",
            "value": float(p.mean()),
            "baseline": "realised_rate",
            "baseline_value": float(y.mean()),
        }
    )
    return [{**r, "origin": at, "level": "deals", "rows": rows.height} for r in out]


# ---------------------------------------------------------------------------------------------
# Realised checks: demand forecasts
# ---------------------------------------------------------------------------------------------
def demand_actuals(
    sales: pl.DataFrame, demand: DemandSettings, timezone: str, as_of: datetime
) -> pl.DataFrame:
    """customer_id, sku, bucket, y: units per complete bucket known at `as_of` (the demand
    model's own bucketing and returns rule, `demand.buckets.bucket_sales`).
    """
    from salesml.demand import buckets

    known = sales.filter(pl.col("ts") <= pl.lit(as_of, DATETIME))
    origin = buckets.origin_bucket(as_of, timezone, demand.grid.bucket_hours)
    return (
        buckets.bucket_sales(known, demand, timezone, origin)
        .select("customer_id", "sku", "bucket", pl.col("y").cast(pl.Float64))
        .collect()
    )


def realised_demand_rows(
    forecasts: pl.DataFrame,
    actuals: pl.DataFrame,
    as_of: datetime,
    *,
    timezone: str,
    bucket_hours: int,
    run_id: str,
    strata: Sequence[float] = metrics.DEMAND_STRATA,
    nominal: float = NOMINAL_COVERAGE,
) -> pl.DataFrame:
    """Realised checks (kind `realised`, level `bottom`) of demand_forecast rows written at
    earlier as_of t whose buckets ended by `as_of`, against `actuals` (`demand_actuals` at
    as_of): WAPE of P50 (and of the mean), pinball at P10/P50/P90, coverage of [P10, P90]
    overall, per stratum of expected demand and on cells with a sale (`metrics.quantile_report`,
    as the backtest). Baselines on the same cells: zero and the seasonal naive known at t (the
    same bucket in the latest complete week before t); per metric the stronger one.

    Cells forecast as surely empty (P90 = 0 and mean 0) that sold nothing are left out, as the
    backtest leaves out closed empty slots. Scenario rows (a `scenario` other than null or
    'baseline') are not checked.
    """
    from salesml.demand import buckets

    week = buckets.per_week(bucket_hours)
    origin_now = buckets.origin_bucket(as_of, timezone, bucket_hours)
    frame = forecasts
    if "scenario" in frame.columns:
        frame = frame.filter(pl.col("scenario").is_null() | (pl.col("scenario") == "baseline"))
    mean = pl.col("expected") if "expected" in frame.columns else pl.col("p50")
    frame = frame.filter(pl.col("as_of") < pl.lit(as_of, DATETIME)).select(
        "as_of",
        "customer_id",
        "sku",
        "p10",
        "p50",
        "p90",
        pl.coalesce(mean, pl.col("p50")).cast(pl.Float64).alias("mean"),
        buckets.bucket_index(pl.col("bucket_start"), timezone, bucket_hours).alias("bucket"),
        (buckets.bucket_index(pl.col("as_of"), timezone, bucket_hours) - 1).alias("origin"),
    )
    frame = frame.filter(pl.col("bucket") <= origin_now)
    if frame.height == 0:
        return empty()
    lag = ((pl.col("bucket") - pl.col("origin") + week - 1) // week).clip(lower_bound=1) * week
    naive = actuals.select(
        "customer_id", "sku", pl.col("bucket").alias("naive_bucket"), pl.col("y").alias("naive")
    )
    cells = (
        frame.with_columns(naive_bucket=(pl.col("bucket") - lag).cast(pl.Int32))
        .join(actuals, on=["customer_id", "sku", "bucket"], how="left")
        .join(naive, on=["customer_id", "sku", "naive_bucket"], how="left")
        .with_columns(pl.col("y").fill_null(0.0), pl.col("naive").fill_null(0.0))
        .filter((pl.col("p90") > 0) | (pl.col("mean") > 0) | (pl.col("y") > 0))
    )
    records: list[dict[str, Any]] = []
    for (at,), part in cells.sort("as_of").group_by("as_of", maintain_order=True):
        records += _demand_check(part, _origin(at), tuple(strata), nominal)
    return _frame([{**r, "run_id": run_id, "model": DEMAND, "kind": REALISED} for r in records])


def _demand_check(
    cells: pl.DataFrame, at: datetime, strata: tuple[float, ...], nominal: float
) -> list[dict[str, Any]]:
    y = cells["y"].to_numpy()
    report = metrics.quantile_report(
        y,
        cells["mean"].to_numpy(),
        cells["p10"].to_numpy(),
        cells["p50"].to_numpy(),
        cells["p90"].to_numpy(),
        strata=strata,
    )
    row: dict[str, Any] = {**report, "origin": at, "rows": float(cells.height)}
    points = {"zero": np.zeros_like(y), "seasonal_naive": cells["naive"].to_numpy()}
    for name, point in points.items():
        row[f"{name}_wape"] = metrics.wape(y, point)
        for q in (10, 50, 90):
            row[f"{name}_pinball_p{q}"] = metrics.pinball_loss(y, point, q / 100)
    return _demand_backtest_records(row, "bottom", nominal, tuple(points))


def scope(model: str, kind: str) -> dict[str, dict[str, str]]:
    """The warehouse write scope of one model's rows of one kind, so a backtest, a realised
    check and the other model's rows written at the same as_of never replace each other.
    """
    return {"model_quality": {"model": model, "kind": kind}}


def matured_as_ofs(
    runs: pl.DataFrame, cutoff: datetime, n: int = REALISED_ORIGINS
) -> list[datetime]:
    """The latest `n` distinct as_of of succeeded `runs` (a `runs` frame of one flow) at or
    before `cutoff`: the earlier runs whose outcomes are all known (cutoff = as_of minus the
    label horizon or the forecast horizon).
    """
    if n <= 0 or runs.height == 0:
        return []
    found = runs.filter(
        (pl.col("status") == "succeeded") & (pl.col("as_of") <= pl.lit(cutoff, DATETIME))
    )
    return found.get_column("as_of").unique().sort().tail(n).to_list()


class RunTables(Protocol):
    """What `read_matured` reads of a `salesml.warehouse.Warehouse` (a Protocol: this pure
    module may not import the warehouse, not even for type checking).
    """

    def tables(self) -> list[str]:
        """Output tables present, sorted."""

    def list_runs(
        self, flow: str | None = None, status: str | None = None, limit: int = 20
    ) -> pl.DataFrame:
        """The latest `limit` runs (newest first), optionally of one flow and/or status."""

    def read(self, table: str, as_of: datetime | None = None) -> pl.DataFrame:
        """Rows of `table` (all, or those of one `as_of`)."""


def read_matured(
    warehouse: RunTables, flow: str, table: str, cutoff: datetime, n: int = REALISED_ORIGINS
) -> pl.DataFrame | None:
    """The rows of `table` that the latest `n` succeeded runs of `flow` at or before `cutoff`
    wrote (`matured_as_ofs`), read from `warehouse` (a `salesml.warehouse.Warehouse`; the one
    reading function here, called by the jobs); None when there are none.
    """
    if table not in warehouse.tables():
        return None
    runs = warehouse.list_runs(flow=flow, status="succeeded", limit=100_000)
    frames = [warehouse.read(table, at) for at in matured_as_ofs(runs, cutoff, n)]
    frames = [frame for frame in frames if frame.height]
    return pl.concat(frames, how="diagonal_relaxed") if frames else None


GATE_QUANTILES = (0.1, 0.5, 0.9)


def scaled_pinball(report: Mapping[str, float], actual_mean: float) -> float:
    """Mean pinball loss over P10/P50/P90 (`metrics.quantile_report` keys pinball_p10, ...)
    divided by the mean actual of the same rows: a proper scoring rule of the whole predictive
    distribution at three levels, unit-free so stores and SKUs of any size compare. NaN when a
    loss is missing or the mean actual is not positive.
    """
    losses = [report.get(f"pinball_p{round(100 * q)}", math.nan) for q in GATE_QUANTILES]
    if not actual_mean > 0:
        return math.nan
    return float(np.mean(losses)) / actual_mean


def point_scaled_pinball(actual: np.ndarray, point: np.ndarray) -> float:
    """`scaled_pinball` of a point forecast used as every quantile (a trivial baseline such as
    the 8-week same-bucket median).
    """
    report = {
        f"pinball_p{round(100 * q)}": metrics.pinball_loss(actual, point, q) for q in GATE_QUANTILES
    }
    return scaled_pinball(report, float(np.mean(actual)))
