"""Pipeline revenue forecast: revenue won with a close INSIDE each period, by deals open at as_of.

Periods (calendar, in `timezone`): the month of as_of ('YYYY-MM'), the next month, the quarter
of as_of ('YYYY-Qn') and the next quarter. A deal open at as_of can only close after as_of, so
a period counts its closes in [max(start, as_of), end).

Derivation. For a deal open at as_of with win probability q = P(won within H days of as_of)
(the deal-win event, H = `deals.label_horizon_days`; model, young-deal prior or base rate) and
the time-to-close curve of its group, W(d) = P(won within d days | group)
(`time_to_close`, learned from deals open at past snapshots, known at as_of):

    P(won within d days) = G(d) = q * W(d) / W(H)                                for d <= H
                          G(d) = min(q * W(d) / W(H), q + (1 - q) * C(d))           for d > H
    C(d) = (W(d) - W(H)) / (1 - W(H))   (the group's chance to win in (H, d] when not won by H)
    P(won inside [a, b)) = G(b - as_of) - G(a - as_of)

i.e. the model sets the deal's level at the horizon it was trained for (G(H) = q exactly), and
the group's curve (stage, where the expected close lies, slips) says how the wins spread over
time before and after H; the assumption is that, within a group, timing does not depend on the
deal's level. Beyond H the propensity-scaled curve is capped by the group's own conditional
rate, so a small W(H) cannot inflate a deal's later chances. When W(H) = 0 (such deals never
won within H days at the past snapshots), q is placed at H and G(d > H) = q + (1 - q) * C(d).
G is non-decreasing and at most 1,
so the periods of one deal never sum to more than its chance of winning.

Quarter phase: neither q nor the curves see the calendar, and wins bunch at quarter ends, so
G(d) is multiplied by the curves' `calendar` ratio (`time_to_close.calendar_ratio`: the chance
to be won within d days for deals open at this point of the quarter in past quarters, over
that of deals open at any week of those quarters), then made non-decreasing again (a running
maximum over the period edges) and capped at 1.

Quantiles: each deal is an independent draw of "won in which time segment" (segments are cut
at every period edge, so a month and its quarter use the same draw); revenue of a member sums
the amounts of its deals whose draw falls inside the period. Fixed seed, deals sorted by
deal_id, chunks of bounded size: same inputs, same numbers. Every dimension (all, region,
owner, team when the deals have a `team` column) sums the same draws, so 'all' of a draw is
exactly the sum of its regions (its quantiles are not the sum of theirs). Independent deals
understate how much a month can miss (slow months, quarter-end pushes move many deals at
once), so every simulated outcome is multiplied by one shared log-normal factor of mean 1
whose spread is what the latest months known at as_of showed (`shock_sigma`). The expected revenue
is exact (sum of probability * amount). A null region is 'unknown'; a null amount is 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from salesml import quality
from salesml.deals.snapshots import deals_known_at
from salesml.deals.time_to_close import MAX_DAYS, TimeToClose, fit_time_to_close, won_by_days
from salesml.timeutil import DATETIME

ALL = "all"
UNKNOWN = "unknown"
CHUNK_CELLS = 2_000_000
"""Deals x simulations drawn at once (bounded memory)."""
SCHEMA: dict[str, pl.DataType] = {
    "period": pl.String(),
    "dimension": pl.String(),
    "member": pl.String(),
    "expected_revenue": pl.Float64(),
    "p10": pl.Float64(),
    "p50": pl.Float64(),
    "p90": pl.Float64(),
    "n_deals": pl.Int64(),
}


@dataclass(frozen=True)
class Period:
    """A calendar period [start, end) in UTC with its label."""

    label: str
    start: datetime
    end: datetime


def forecast_periods(as_of: datetime, timezone: str = "UTC") -> list[Period]:
    """The current and next month and quarter (calendar, in `timezone`) around `as_of`."""
    zone = ZoneInfo(timezone)
    local = as_of.astimezone(zone)

    def start(year: int, month: int) -> datetime:
        year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
        return datetime(year, month, 1, tzinfo=zone)

    month0, quarter0 = local.month, 3 * ((local.month - 1) // 3) + 1
    periods = []
    for first, months in ((month0, 1), (month0 + 1, 1), (quarter0, 3), (quarter0 + 3, 3)):
        begin, end = start(local.year, first), start(local.year, first + months)
        label = f"{begin:%Y-%m}" if months == 1 else f"{begin.year}-Q{(begin.month + 2) // 3}"
        periods.append(Period(label, _utc(begin), _utc(end)))
    return periods


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(ZoneInfo("UTC"))


def open_deal_frame(
    probabilities: pl.DataFrame, tables: dict[str, pl.DataFrame], as_of: datetime
) -> pl.DataFrame:
    """Deals open at as_of with a win probability: deal_id, win_probability, amount and the
    dimension columns (region, owner, team), sorted by deal_id.
    """
    deals = deals_known_at(tables["deals"], as_of).filter(pl.col("closed_at").is_null())
    members = [
        pl.col(column).cast(pl.String).fill_null(UNKNOWN).alias(dimension)
        for dimension, column in (("region", "region"), ("owner", "owner_id"), ("team", "team"))
        if column in deals.columns
    ]
    return (
        deals.select(
            "deal_id",
            pl.col("amount").fill_null(0.0).cast(pl.Float64)
            if "amount" in deals.columns
            else pl.lit(0.0).alias("amount"),
            *members,
        )
        .join(
            probabilities.select("deal_id", pl.col("win_probability").cast(pl.Float64)),
            on="deal_id",
            how="inner",
        )
        .filter(pl.col("win_probability").is_not_null())
        .sort("deal_id")
    )


def cumulative_at_edges(
    deals: pl.DataFrame,
    tables: dict[str, pl.DataFrame],
    as_of: datetime,
    model: TimeToClose,
    edges_days: np.ndarray,
    horizon_days: int,
) -> np.ndarray:
    """(deals, edges) G(d), P(won within d days of as_of), at each edge (module docstring)."""
    at = deals.select("deal_id", pl.lit(as_of, DATETIME).alias("at"))
    curve = won_by_days(model, tables, at, np.append(edges_days, float(horizon_days)))
    w, w_h = curve[:, :-1], curve[:, -1:]
    q = deals["win_probability"].to_numpy()[:, None]
    reached = (edges_days >= horizon_days)[None, :]
    scaled = np.where(w_h > 0, q * w / np.maximum(w_h, 1e-300), np.where(reached, q, 0.0))
    later = np.clip((w - w_h) / np.maximum(1.0 - w_h, 1e-12), 0.0, 1.0)
    after = q + (1.0 - q) * later
    beyond = np.where(w_h > 0, np.minimum(scaled, after), after)
    cumulative = np.where(reached, beyond, scaled)
    if model.calendar is not None:  # edges ascend: keep G non-decreasing after the ratio
        ratio = model.calendar[np.clip(np.floor(edges_days).astype(np.int64), 0, MAX_DAYS)]
        cumulative = np.maximum.accumulate(cumulative * ratio[None, :], axis=1)
    return np.clip(cumulative, 0.0, 1.0)


def pipeline_forecast(
    probabilities: pl.DataFrame,
    tables: dict[str, pl.DataFrame],
    as_of: datetime,
    *,
    horizon_days: int = 60,
    n_simulations: int = 1000,
    seed: int = 42,
    timezone: str = "UTC",
    time_to_close: TimeToClose | None = None,
    shared_shocks: bool = True,
) -> pl.DataFrame:
    """(period, dimension, member, expected_revenue, p10, p50, p90, n_deals) of revenue won
    inside each period by deals open at `as_of` (module docstring).

    `probabilities`: deal_id, win_probability (the deal-win event within `horizon_days`; null:
    left out). `tables`: deals and the optional stage / close-date histories (rows after as_of
    are ignored). `time_to_close`: fitted curves (default: fitted here at as_of).
    `shared_shocks`: widen the ranges by the month-to-month dispersion seen at as_of
    (`shock_sigma`); False: independent deals only.
    `n_deals`: deals with a positive chance to be won inside the period.
    """
    deals = open_deal_frame(probabilities, tables, as_of)
    if deals.height == 0:
        return pl.DataFrame(schema=SCHEMA)
    model = time_to_close or fit_time_to_close(tables, as_of)
    periods = forecast_periods(as_of, timezone)
    edges = sorted({max(as_of, p.start) for p in periods} | {p.end for p in periods})
    days = np.array([(e - as_of) / timedelta(days=1) for e in edges])
    cum = cumulative_at_edges(deals, tables, as_of, model, days, horizon_days)
    position = {edge: i for i, edge in enumerate(edges)}
    spans = [(position[max(as_of, p.start)], position[p.end]) for p in periods]
    chance = np.stack([cum[:, b] - cum[:, a] for a, b in spans], axis=1)  # (deals, periods)
    dimensions = _dimensions(deals)
    draws = simulate_periods(
        cum,
        deals["amount"].to_numpy(),
        spans,
        [idx for _, _, idx in dimensions],
        n_simulations,
        seed,
    )
    if shared_shocks:
        sigma = shock_sigma(tables, as_of, model, timezone)
        factor = np.random.default_rng(seed + 1).lognormal(-(sigma**2) / 2, sigma, n_simulations)
        draws = [d * factor for d in draws]
    frames = [
        _summary(members, idx, draws_d, chance, deals["amount"].to_numpy(), periods, name)
        for (name, members, idx), draws_d in zip(dimensions, draws, strict=True)
    ]
    return pl.concat(frames).select(list(SCHEMA)).sort("period", "dimension", "member")


SHOCK_MONTHS = 6
"""Latest months ended by as_of whose realised in-month revenue sets `shock_sigma`."""
MIN_SHOCK_MONTHS = 3


def shock_sigma(
    tables: dict[str, pl.DataFrame], as_of: datetime, model: TimeToClose, timezone: str = "UTC"
) -> float:
    """Sigma of a shared log-normal factor (mean 1) on every simulated outcome: the spread of
    log(realised / expected) revenue won inside each of the SHOCK_MONTHS latest months that
    ended by as_of by the deals open at its start (expected from the curves alone, q = W(H)),
    less the part independent deals explain. Real pipelines share shocks (a slow month, a
    quarter-end push) that independent draws miss. Known at as_of; 0 with too few months.
    """
    checks = [
        _month_check(tables, as_of, model, back, timezone) for back in range(1, SHOCK_MONTHS + 1)
    ]
    found = [check for check in checks if check is not None]
    if len(found) < MIN_SHOCK_MONTHS:
        return 0.0
    logs, noise = zip(*found, strict=True)
    return float(np.sqrt(max(0.0, np.var(logs, ddof=1) - np.mean(noise))))


def _month_check(
    tables: dict[str, pl.DataFrame],
    as_of: datetime,
    model: TimeToClose,
    back: int,
    timezone: str,
) -> tuple[float, float] | None:
    """(log(realised / expected), relative variance independent deals explain) of the month
    `back` months before as_of's; None when nothing was expected.
    """
    deals = tables["deals"]
    start, end = _month_start(as_of, -back, timezone), _month_start(as_of, 1 - back, timezone)
    open_then = deals_known_at(deals, start).filter(pl.col("closed_at").is_null())
    if open_then.height == 0:
        return None
    at = open_then.select("deal_id", pl.lit(start, DATETIME).alias("at"))
    p = won_by_days(model, tables, at, np.array([(end - start) / timedelta(days=1)]))[:, 0]
    amount = (
        open_then["amount"].fill_null(0.0).to_numpy()
        if "amount" in open_then.columns
        else np.zeros(at.height)
    )
    expected = float(p @ amount)
    won = won_inside(deals, start, start, end, as_of).filter(pl.col("dimension") == ALL)
    if expected <= 0:
        return None
    realised = float(won["realised"].sum())
    noise = float((amount**2 * p * (1 - p)).sum()) / expected**2
    return math.log(max(realised, 0.05 * expected) / expected), noise


def _dimensions(deals: pl.DataFrame) -> list[tuple[str, list[str], np.ndarray]]:
    """(dimension, member names, member index per deal) for all and each dimension column."""
    out = [(ALL, [ALL], np.zeros(deals.height, dtype=np.int64))]
    for name in ("region", "owner", "team"):
        if name in deals.columns:
            codes = deals[name].to_numpy()
            members, index = np.unique(codes, return_inverse=True)
            out.append((name, [str(m) for m in members], index.astype(np.int64)))
    return out


def _summary(
    members: list[str],
    index: np.ndarray,
    draws: np.ndarray,
    chance: np.ndarray,
    amount: np.ndarray,
    periods: list[Period],
    dimension: str,
) -> pl.DataFrame:
    """Rows of one dimension: exact expectation, quantiles of `draws` (members, periods, sims)."""
    n_members = len(members)
    expected = np.zeros((n_members, len(periods)))
    positive = np.zeros((n_members, len(periods)))
    np.add.at(expected, index, chance * amount[:, None])
    np.add.at(positive, index, (chance > 0).astype(np.float64))
    q = np.quantile(draws, [0.1, 0.5, 0.9], axis=2)
    return pl.DataFrame(
        {
            "period": [p.label for _ in members for p in periods],
            "dimension": dimension,
            "member": [m for m in members for _ in periods],
            "expected_revenue": expected.ravel(),
            "p10": q[0].ravel(),
            "p50": q[1].ravel(),
            "p90": q[2].ravel(),
            "n_deals": positive.ravel().astype(np.int64),
        }
    )


def simulate_periods(
    cumulative: np.ndarray,
    amount: np.ndarray,
    spans: list[tuple[int, int]],
    member_index: list[np.ndarray],
    n_simulations: int,
    seed: int,
) -> list[np.ndarray]:
    """Per dimension, (members, periods, simulations) simulated won revenue.

    `cumulative[i, e]`: deal i won by edge e (non-decreasing in e; edge 0 is as_of, so 0).
    One uniform per deal and simulation says in which segment the deal is won (or not at
    all); a period [edge a, edge b) takes the deals whose segment lies between. Chunks of
    deals in deal order keep memory bounded and the draws deterministic for a seed.
    """
    rng = np.random.default_rng(seed)
    outs = [
        np.zeros((int(idx.max(initial=0)) + 1, len(spans), n_simulations)) for idx in member_index
    ]
    step = max(1, CHUNK_CELLS // n_simulations)
    for start in range(0, cumulative.shape[0], step):
        rows = slice(start, start + step)
        u = rng.random((cumulative[rows].shape[0], n_simulations), dtype=np.float32)
        edge = np.zeros(u.shape, dtype=np.int8)  # won before edge `edge` (or not at all)
        for e in range(cumulative.shape[1]):
            edge += (u >= cumulative[rows, e : e + 1].astype(np.float32)).astype(np.int8)
        for p, (a, b) in enumerate(spans):
            revenue = ((edge > a) & (edge <= b)) * amount[rows, None]
            for out, idx in zip(outs, member_index, strict=True):
                _add_by_member(out[:, p], idx[rows], revenue)
    return outs


def _add_by_member(target: np.ndarray, index: np.ndarray, values: np.ndarray) -> None:
    """target[m] += sum of `values` rows whose index is m (sorted segments, no row loop)."""
    order = np.argsort(index, kind="stable")
    sorted_index = index[order]
    starts = np.flatnonzero(np.r_[True, sorted_index[1:] != sorted_index[:-1]])
    target[sorted_index[starts]] += np.add.reduceat(values[order], starts, axis=0)


# ---------------------------------------------------------------------------------------------
# Backtest
# ---------------------------------------------------------------------------------------------
PIPELINE = "pipeline"
BACKTEST_MONTHS = 2
"""Months after each origin that the backtest scores (this month and the next)."""
TRAILING_MONTHS = 3
BASELINE = "trailing_3m"
LEVELS = {"month_all": ALL, "month_region": "region"}


@dataclass
class PipelineBacktest:
    """`cells`: one row per origin x month x member (all and regions) with the forecast, the
    realised won revenue of deals open at the origin, and the trailing baseline; `quality`:
    model_quality rows; `summary`: pooled metrics per level for the model and the baseline.
    """

    cells: pl.DataFrame
    quality: pl.DataFrame
    summary: dict[str, dict[str, float]]


def won_inside(
    deals: pl.DataFrame, open_at: datetime, start: datetime, end: datetime, known_at: datetime
) -> pl.DataFrame:
    """(dimension, member, realised): amount of deals open at `open_at` and won with closed_at
    in [max(start, open_at), end), from closes known at `known_at`; for all and by region.
    """
    known = deals_known_at(deals, known_at).filter(
        (pl.col("created_at") <= pl.lit(open_at, DATETIME))
        & (pl.col("closed_at") > pl.lit(open_at, DATETIME))
        & (pl.col("closed_at") >= pl.lit(max(start, open_at), DATETIME))
        & (pl.col("closed_at") < pl.lit(end, DATETIME))
        & (pl.col("outcome") == "won")
    )
    region = (
        pl.col("region").cast(pl.String).fill_null(UNKNOWN)
        if "region" in known.columns
        else pl.lit(UNKNOWN)
    )
    won = known.select(region.alias("member"), pl.col("amount").fill_null(0.0).cast(pl.Float64))
    by_region = won.group_by("member").agg(pl.col("amount").sum().alias("realised"))
    total = pl.DataFrame({"member": [ALL], "realised": [float(won["amount"].sum())]})
    return pl.concat(
        [
            total.with_columns(pl.lit(ALL).alias("dimension")),
            by_region.with_columns(pl.lit("region").alias("dimension")),
        ],
        how="diagonal_relaxed",
    ).select("dimension", "member", "realised")


def _month_start(moment: datetime, shift: int, timezone: str) -> datetime:
    local = moment.astimezone(ZoneInfo(timezone))
    index = local.year * 12 + local.month - 1 + shift
    return _utc(datetime(index // 12, index % 12 + 1, 1, tzinfo=ZoneInfo(timezone)))


def _trailing(deals: pl.DataFrame, origin: datetime, lag: int, timezone: str) -> pl.DataFrame:
    """Baseline for month `lag` after the origin's: the mean, over the TRAILING_MONTHS latest
    months m whose month m + lag ended by the origin, of revenue won in month m + lag by deals
    open at the start of m (the same target, known at the origin).
    """
    parts = []
    for back in range(lag + 1, lag + 1 + TRAILING_MONTHS):
        open_at = _month_start(origin, -back, timezone)
        start = _month_start(origin, lag - back, timezone)
        end = _month_start(origin, lag - back + 1, timezone)
        parts.append(won_inside(deals, open_at, start, end, origin))
    return (
        pl.concat(parts)
        .group_by("dimension", "member")
        .agg((pl.col("realised").sum() / TRAILING_MONTHS).alias("baseline"))
    )


def backtest_cells(
    tables: dict[str, pl.DataFrame],
    origin: datetime,
    forecast: pl.DataFrame,
    timezone: str = "UTC",
) -> pl.DataFrame:
    """Forecast (dimensions all and region, the months) next to realised and baseline."""
    periods = forecast_periods(origin, timezone)[:BACKTEST_MONTHS]
    deals = tables["deals"]
    last = max(p.end for p in periods)
    parts = []
    for lag, period in enumerate(periods):
        realised = won_inside(deals, origin, period.start, period.end, last)
        keyed = realised.join(
            _trailing(deals, origin, lag, timezone),
            on=["dimension", "member"],
            how="full",
            coalesce=True,
        )
        parts.append(keyed.with_columns(pl.lit(period.label).alias("period")))
    actual = pl.concat(parts)
    predicted = (
        forecast.filter(pl.col("dimension").is_in([ALL, "region"]))
        .select("period", "dimension", "member", "expected_revenue", "p10", "p50", "p90")
        .filter(pl.col("period").is_in([p.label for p in periods]))
    )
    return (
        predicted.join(actual, on=["period", "dimension", "member"], how="full", coalesce=True)
        .with_columns(
            pl.col(c).fill_null(0.0)
            for c in ("expected_revenue", "p10", "p50", "p90", "realised", "baseline")
        )
        .with_columns(pl.lit(origin, DATETIME).alias("origin"))
        .sort("period", "dimension", "member")
    )


def cell_metrics(cells: pl.DataFrame) -> dict[str, float]:
    """coverage_p10_p90, bias (sum expected / sum realised - 1), wape; baseline_bias/wape."""
    realised = float(cells["realised"].sum())
    inside = (cells["p10"] <= cells["realised"]) & (cells["realised"] <= cells["p90"])
    coverage = float(inside.cast(pl.Float64).mean() or 0.0)  # type: ignore[arg-type]
    if realised <= 0:
        nan = float("nan")
        return {
            "coverage_p10_p90": coverage,
            "bias": nan,
            "wape": nan,
            "baseline_bias": nan,
            "baseline_wape": nan,
            "rows": float(cells.height),
        }
    return {
        "coverage_p10_p90": coverage,
        "bias": float(cells["expected_revenue"].sum()) / realised - 1.0,
        "wape": float((cells["expected_revenue"] - cells["realised"]).abs().sum()) / realised,
        "baseline_bias": float(cells["baseline"].sum()) / realised - 1.0,
        "baseline_wape": float((cells["baseline"] - cells["realised"]).abs().sum()) / realised,
        "rows": float(cells.height),
    }


def pipeline_backtest(
    tables: dict[str, pl.DataFrame],
    probabilities: Mapping[datetime, pl.DataFrame],
    *,
    horizon_days: int = 60,
    n_simulations: int = 1000,
    seed: int = 42,
    timezone: str = "UTC",
    run_id: str = "",
    groups: tuple[str, ...] | None = None,
    shared_shocks: bool = True,
    calendar: bool = True,
) -> PipelineBacktest:
    """Rolling-origin backtest of the in-period forecast. `probabilities[origin]`: the win
    probabilities the deal model gave at that origin (deal_id, win_probability); the
    time-to-close curves are fitted at each origin on data known there; outcomes are the
    deals' closes (`tables`, apply `deals.lost_after_days` first). Needs outcomes up to the
    end of the month after the last origin.
    """
    from salesml.deals.time_to_close import GROUPS

    cells = []
    for origin in sorted(probabilities):
        model = fit_time_to_close(
            tables, origin, groups=GROUPS if groups is None else groups, calendar=calendar
        )
        forecast = pipeline_forecast(
            probabilities[origin],
            tables,
            origin,
            horizon_days=horizon_days,
            n_simulations=n_simulations,
            seed=seed,
            timezone=timezone,
            time_to_close=model,
            shared_shocks=shared_shocks,
        )
        cells.append(backtest_cells(tables, origin, forecast, timezone))
    frame = pl.concat(cells)
    return PipelineBacktest(frame, quality_rows(frame, run_id), _pooled(frame))


def _pooled(cells: pl.DataFrame) -> dict[str, dict[str, float]]:
    return {
        level: cell_metrics(cells.filter(pl.col("dimension") == dimension))
        for level, dimension in LEVELS.items()
    }


def quality_rows(cells: pl.DataFrame, run_id: str) -> pl.DataFrame:
    """model_quality rows (model 'pipeline', kind 'backtest') per origin and level."""
    records = []
    for (origin,), group in cells.group_by(["origin"], maintain_order=True):
        for level, dimension in LEVELS.items():
            m = cell_metrics(group.filter(pl.col("dimension") == dimension))
            for metric, baseline, reference in (
                ("coverage_p10_p90", "nominal", quality.NOMINAL_COVERAGE),
                ("bias", BASELINE, m["baseline_bias"]),
                ("wape", BASELINE, m["baseline_wape"]),
            ):
                records.append(
                    {
                        "run_id": run_id,
                        "model": PIPELINE,
                        "kind": quality.BACKTEST,
                        "origin": origin,
                        "level": level,
                        "metric": metric,
                        "value": m[metric],
                        "baseline": baseline,
                        "baseline_value": reference,
                        "rows": int(m["rows"]),
                    }
                )
    if not records:
        return quality.empty()
    frame = pl.DataFrame(records, schema=quality.SCHEMA, orient="row")
    return frame.with_columns(pl.col("value", "baseline_value").fill_nan(None))
