"""Synthetic report inputs that follow the contract's output schemas (no model needed).

`make_world(...)` builds the output tables of one scoring as_of (plus past scores and an earlier
behaviour map), the quarantine, and the two inputs the report reads (deals, sales);
`write_world(world, folder)` writes the inputs as Parquet and the outputs into a DuckDB
warehouse with `Warehouse.write_batch`, and returns Settings pointing at both.
`hostile=True` puts markup, `$` and `&` into ids and names, for escaping tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from salesml import contract
from salesml.config import MlflowSettings, Settings, SourcesSettings, WarehouseSettings
from salesml.timeutil import DATETIME

AS_OF = datetime(2025, 7, 1, tzinfo=UTC)
PAST_AS_OF = AS_OF - timedelta(days=30)
BEHAVIOR_AS_OF = AS_OF - timedelta(days=3)
LATER_AS_OF = AS_OF + timedelta(hours=2)
"""A later run that only touches alerts (an alert resolved after AS_OF, one first seen after)."""
MODEL_VERSION = "3"
HOSTILE = '<script>alert("x")</script> $5 & co'
TYPES = ["email", "call", "meeting", "demo", "proposal_sent", "tech_doc_shared"]
ROLES = ["cto", "ceo", "vp", "engineer", "procurement", "other", "unknown"]
STAGES = ["qualification", "discovery", "proposal", "negotiation"]
REGIONS = ["EMEA", "NA", "APAC"]
DEAL_FEATURES = [
    ("days_in_stage", "days in current stage"),
    ("meeting_cto_7d", "meetings with CTO, last 7 days"),
    ("close_date_slips", "close date slips"),
    ("account_win_rate", "account win rate"),
    ("demo_engineer_30d", "demos with engineers, last 30 days"),
    ("amount_log", "deal size (log)"),
    ("rep_win_rate", "rep win rate"),
]
DEMAND_FEATURES = [
    "lag_1w",
    "rolling_mean_42",
    "bucket_of_day",
    "weekday",
    "price_ratio",
    "promotion",
    "horizon",
    "lag_1",
    "rolling_std_42",
]


@dataclass
class World:
    """Outputs by as_of, the quarantine of the scoring run, and the inputs deals and sales."""

    outputs: dict[datetime, dict[str, pl.DataFrame]] = field(default_factory=dict)
    quarantine: pl.DataFrame = field(default_factory=pl.DataFrame)
    deals: pl.DataFrame = field(default_factory=pl.DataFrame)
    sales: pl.DataFrame = field(default_factory=pl.DataFrame)


def _json(items: list[str]) -> str:
    return json.dumps(items)


def make_world(
    n_open: int = 40,
    n_closed: int = 160,
    n_series: int = 8,
    horizon: int = 42,
    seed: int = 0,
    hostile: bool = False,
) -> World:
    rng = np.random.default_rng(seed)
    world = World()
    open_ids = [f"D{i:05d}" for i in range(n_open)]
    closed_ids = [f"C{i:05d}" for i in range(n_closed)]
    if hostile:
        open_ids[0] = HOSTILE
    scores, factors = _deal_scores(open_ids, rng, hostile)
    past, deals = _past_and_deals(open_ids, closed_ids, rng)
    series = _series(n_series, hostile)
    scales = rng.uniform(0.3, 3.0, len(series))
    forecast, demand_factors, sku_health = _demand(series, scales, horizon, rng, hostile)
    world.outputs[AS_OF] = {
        "deal_scores": scores,
        "deal_score_factors": factors,
        "pipeline_forecast": _pipeline(rng),
        "demand_forecast": forecast,
        "demand_forecast_factors": demand_factors,
        "sku_health": sku_health,
    }
    world.outputs[PAST_AS_OF] = {"deal_scores": past}
    world.outputs[BEHAVIOR_AS_OF] = {"behavior_value": _behavior(rng, hostile)}
    world.quarantine = _quarantine(hostile)
    world.deals = deals
    world.sales = _sales(series, scales, rng)
    # the decision tables draw from their own generator: the tables above stay as they were
    decisions = np.random.default_rng(seed + 1)
    world.outputs[AS_OF].update(_decisions(scores, past, deals, decisions, hostile))
    earlier, now, later = _alerts(hostile)
    world.outputs[PAST_AS_OF]["alerts"] = earlier
    world.outputs[AS_OF]["alerts"] = now
    world.outputs[LATER_AS_OF] = {"alerts": later}
    return world


def _decisions(
    scores: pl.DataFrame,
    past: pl.DataFrame,
    deals: pl.DataFrame,
    rng: np.random.Generator,
    hostile: bool,
) -> dict[str, pl.DataFrame]:
    """deal_actions, deal_score_changes, pipeline_changes, health_overview, rep_health and
    deals_at_risk for the open deals of AS_OF (contract columns, no lineage)."""
    changes = _score_changes(scores, past, deals, rng)
    return {
        "deal_actions": _actions(scores, rng, hostile),
        "deal_score_changes": changes,
        "pipeline_changes": _waterfall(rng),
        **_views(scores, changes, deals),
    }


def _actions(scores: pl.DataFrame, rng: np.random.Generator, hostile: bool) -> pl.DataFrame:
    rows: list[tuple[object, ...]] = []
    pairs = [("tech_doc_shared", "cto"), ("meeting", "vp"), ("demo", "engineer")]
    for i, (deal_id, p) in enumerate(scores.select("deal_id", "win_probability").head(12).rows()):
        uplifts = sorted(rng.uniform(0.005, 0.09, 2), reverse=True)
        for rank, (uplift, (kind, role)) in enumerate(zip(uplifts, pairs, strict=False), 1):
            text = f"{kind} with the {role} within 48 h: {100 * uplift:+.1f} pts"
            if hostile and i == 0 and rank == 1:
                text = HOSTILE
            after = min(p + uplift, 0.99)
            rows.append(
                (deal_id, rank, "action", text, kind, role, 48, p, uplift, uplift / 2, after)
            )
        if i % 3 == 0:
            warning = "single-threaded (one contact in the last 30 days)"
            rows.append((deal_id, 3, "warning", warning, None, None, None, p, None, None, None))
    return pl.DataFrame(rows, schema=contract.row_dtypes("deal_actions"), orient="row")


def _score_changes(
    scores: pl.DataFrame, past: pl.DataFrame, deals: pl.DataFrame, rng: np.random.Generator
) -> pl.DataFrame:
    """Open deals against PAST_AS_OF (up / down / unchanged), and the past deals closed since."""
    before = past.select("deal_id", pl.col("win_probability").alias("previous_probability"))
    features = [f for f, _ in DEAL_FEATURES]
    drivers = [
        json.dumps(
            [
                {"feature": f, "before": float(b), "after": float(a)}
                for f, b, a in zip(
                    rng.choice(features, 2, replace=False),
                    rng.normal(0, 0.4, 2),
                    rng.normal(0, 0.4, 2),
                    strict=True,
                )
            ]
        )
        for _ in range(scores.height)
    ]
    delta = pl.col("win_probability") - pl.col("previous_probability")
    open_now = (
        scores.select("deal_id", "win_probability")
        .join(before, on="deal_id", how="left")
        .with_columns(
            delta.alias("delta"),
            pl.when(delta.abs() < 0.005)
            .then(pl.lit("unchanged"))
            .when(delta > 0)
            .then(pl.lit("up"))
            .otherwise(pl.lit("down"))
            .alias("change_kind"),
            pl.Series("moved_drivers", drivers),
        )
    )
    closed = (
        deals.filter(pl.col("outcome").is_not_null())
        .head(6)
        .join(before, on="deal_id")
        .select(
            "deal_id",
            "previous_probability",
            pl.lit(None, pl.Float64).alias("win_probability"),
            pl.lit(None, pl.Float64).alias("delta"),
            pl.concat_str(pl.lit("closed_"), "outcome").alias("change_kind"),
            pl.lit("[]").alias("moved_drivers"),
        )
    )
    columns = contract.row_dtypes("deal_score_changes")
    return (
        pl.concat([open_now, closed], how="diagonal")
        .select(
            pl.lit(PAST_AS_OF, DATETIME).alias("previous_as_of"),
            *(pl.col(c).cast(t) for c, t in columns.items() if c != "previous_as_of"),
        )
        .select(list(columns))
    )


def _waterfall(rng: np.random.Generator) -> pl.DataFrame:
    """Month and quarter of AS_OF: start + the six steps == end."""
    steps = ["start", "new", "won", "lost", "slipped_out", "pulled_in", "score_change", "end"]
    rows = []
    for kind, period, scale in (("month", "2025-07", 1.0), ("quarter", "2025-Q3", 2.6)):
        start = scale * 1.2e6
        flows = scale * np.array([2.1e5, -1.6e5, -9e4, -1.2e5, 6e4, rng.uniform(-5e4, 5e4)])
        values = [start, *flows.tolist(), start + float(flows.sum())]
        counts = [30, 5, 4, 3, 3, 2, 25, 31]
        for order, (step, value, n) in enumerate(zip(steps, values, counts, strict=True)):
            rows.append((period, kind, step, order, PAST_AS_OF, value, n))
    return pl.DataFrame(rows, schema=contract.row_dtypes("pipeline_changes"), orient="row")


def _views(
    scores: pl.DataFrame, changes: pl.DataFrame, deals: pl.DataFrame
) -> dict[str, pl.DataFrame]:
    """health_overview, deals_at_risk and rep_health computed from the synthetic scores."""
    open_deals = scores.select("deal_id", "win_probability", "health").join(
        deals.select("deal_id", "owner_id", "region", "amount"), on="deal_id", how="left"
    )
    previous = changes.select("deal_id", "previous_probability")
    at_risk = (
        open_deals.join(previous, on="deal_id", how="left")
        .with_columns(
            (pl.col("amount") * (1 - pl.col("win_probability"))).alias("value_at_risk"),
            pl.lit("unlikely_to_win").alias("risk_basis"),
        )
        .sort("value_at_risk", "deal_id", descending=[True, False])
        .with_row_index("rank", offset=1)
        .with_columns(pl.col("rank").cast(pl.Int64))
    )
    columns = contract.row_dtypes("deals_at_risk")
    at_risk = at_risk.select([pl.col(c).cast(t) for c, t in columns.items()])
    return {
        "health_overview": _overview(at_risk),
        "deals_at_risk": at_risk,
        "rep_health": _reps(at_risk),
    }


def _overview(at_risk: pl.DataFrame) -> pl.DataFrame:
    def rollup(frame: pl.DataFrame, dimension: str, member: pl.Expr) -> pl.DataFrame:
        return frame.group_by(member.alias("member")).agg(
            pl.lit(dimension).alias("dimension"),
            pl.len().cast(pl.Int64).alias("open_deals"),
            *(
                (pl.col("health") == c).sum().cast(pl.Int64).alias(f"n_{c}")
                for c in ("red", "yellow", "green")
            ),
            pl.col("amount").sum().alias("open_amount"),
            (pl.col("amount") * pl.col("win_probability")).sum().alias("expected_revenue"),
            pl.col("value_at_risk").sum().alias("at_risk_value"),
        )

    parts = [
        rollup(at_risk, "all", pl.lit("all")),
        rollup(at_risk, "region", pl.col("region")),
        rollup(at_risk, "owner", pl.col("owner_id")),
    ]
    columns = contract.row_dtypes("health_overview")
    return pl.concat(parts, how="diagonal").select(list(columns)).sort("dimension", "member")


def _reps(at_risk: pl.DataFrame) -> pl.DataFrame:
    reps = at_risk.group_by("owner_id").agg(
        pl.len().cast(pl.Int64).alias("open_deals"),
        (pl.col("amount") * pl.col("win_probability")).sum().alias("open_expected_revenue"),
        (pl.col("health") == "red").mean().alias("stalled_share"),
        pl.col("win_probability").mean().alias("win_rate"),
    )
    drivers = pl.concat_str(
        pl.lit('["win rate '),
        (pl.col("win_rate") * 100).round(0).cast(pl.Int64).cast(pl.String),
        pl.lit('% vs 40% for peers", "pipeline coverage 1.2x the won run-rate"]'),
    )
    columns = contract.row_dtypes("rep_health")
    return (
        reps.with_columns(
            (100 * pl.col("win_rate")).alias("health_index"),
            pl.lit(0.4).alias("peer_win_rate"),
            pl.lit(12, pl.Int64).alias("closed_deals"),
            (pl.col("open_expected_revenue") / 1.2).alias("won_run_rate"),
            pl.lit(1.2).alias("pipeline_coverage"),
            pl.lit(3.0).alias("days_since_activity"),
            drivers.alias("drivers"),
        )
        .select([pl.col(c).cast(t) for c, t in columns.items()])
        .sort("owner_id")
    )


def _alert(key: str, **values: object) -> dict[str, object]:
    row: dict[str, object] = dict.fromkeys(contract.row_dtypes("alerts"))
    row.update(
        alert_key=key,
        rule_id="rule-" + key,
        occurrence=1,
        severity="medium",
        status="open",
        attempts=0,
        first_seen_as_of=PAST_AS_OF,
        last_seen_as_of=AS_OF,
    )
    row.update(values)
    return row


def _alerts(hostile: bool) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Alerts written at PAST_AS_OF, AS_OF and LATER_AS_OF (the table is upserted by key).

    At AS_OF: `open-red` (resolved only at LATER_AS_OF, so still open at AS_OF), `open-dwell`,
    `open-stock` open, `resolved-now` resolved at AS_OF. `resolved-past` (resolved at
    PAST_AS_OF) and `later-new` (first seen at LATER_AS_OF) are not shown at AS_OF."""
    red = {"kind": "health_red", "subject_type": "deal", "subject_id": "D00001"}
    now = [
        _alert("open-red", **red, severity="high", message="deal D00001 turned red"),
        _alert(
            "open-dwell",
            kind="stage_dwell",
            subject_type="deal",
            subject_id="D00002",
            message=HOSTILE if hostile else "waiting for feedback for 8 days (limit 5)",
            delivered_at=AS_OF + timedelta(minutes=7),
        ),
        _alert(
            "open-stock",
            kind="stock_below_safety",
            subject_type="sku",
            subject_id="S001/A",
            severity="low",
            first_seen_as_of=AS_OF,
            message="stock below safety while 7-day sales rose 45%: start a promotion",
        ),
        _alert(
            "resolved-now",
            kind="no_activity",
            subject_type="deal",
            subject_id="D00003",
            message="no activity for 16 days",
            status="resolved",
            last_seen_as_of=PAST_AS_OF,
            resolved_at=AS_OF,
        ),
    ]
    earlier = [
        _alert(
            "resolved-past",
            kind="probability_drop",
            subject_type="deal",
            subject_id="D00004",
            message="resolved long ago",
            first_seen_as_of=PAST_AS_OF - timedelta(days=5),
            last_seen_as_of=PAST_AS_OF - timedelta(days=1),
            status="resolved",
            resolved_at=PAST_AS_OF,
        )
    ]
    later = [
        {**now[0], "status": "resolved", "resolved_at": LATER_AS_OF},
        _alert(
            "later-new",
            kind="health_red",
            subject_type="deal",
            subject_id="D00005",
            message="first seen after as_of",
            first_seen_as_of=LATER_AS_OF,
            last_seen_as_of=LATER_AS_OF,
        ),
    ]
    schema = contract.row_dtypes("alerts")
    return tuple(pl.DataFrame(rows, schema=schema) for rows in (earlier, now, later))  # type: ignore[return-value]


def _deal_scores(
    ids: list[str], rng: np.random.Generator, hostile: bool
) -> tuple[pl.DataFrame, pl.DataFrame]:
    n = len(ids)
    prob = np.clip(rng.beta(2, 3, n), 0.01, 0.99)
    health = np.where(prob < 0.2, "red", np.where(prob < 0.45, "yellow", "green"))
    stalled = rng.random(n) < 0.15
    health = np.where(stalled, "red", health)
    reasons = [
        _json(
            (["win probability below 20%"] if p < 0.2 else [])
            + (["21 days in proposal (limit 21)", "no activity for 16 days"] if s else [])
        )
        for p, s in zip(prob, stalled, strict=True)
    ]
    stage = rng.choice(STAGES, n)
    rows = []
    texts: dict[str, list[str]] = {}
    for deal_id, p in zip(ids, prob, strict=True):
        chosen = rng.choice(len(DEAL_FEATURES), 5, replace=False)
        contrib = rng.normal(0, 0.5, 5) + (np.log(p / (1 - p)) + 0.4) / 5
        order = np.argsort(-np.abs(contrib))
        for rank, idx in enumerate(order, start=1):
            feature, label = DEAL_FEATURES[chosen[idx]]
            if hostile and rank == 1:
                feature, label = "weird_$feature", HOSTILE
            value = f"{rng.integers(0, 40)}"
            text = f"{label} = {value}: {contrib[idx]:+.2f}"
            texts.setdefault(deal_id, []).append(text)
            rows.append((deal_id, rank, feature, value, float(contrib[idx]), text))
    factors = pl.DataFrame(
        rows,
        schema={
            "deal_id": pl.String,
            "rank": pl.Int64,
            "feature": pl.String,
            "feature_value": pl.String,
            "contribution": pl.Float64,
            "text": pl.String,
        },
        orient="row",
    )
    scores = pl.DataFrame(
        {
            "deal_id": ids,
            "win_probability": prob,
            "health": health,
            "health_reasons": reasons,
            "top_factors": [_json(texts[d]) for d in ids],
            "raw_score": np.log(prob / (1 - prob)),
            "stage": stage,
            "days_in_stage": rng.integers(1, 40, n).astype(np.float64),
        }
    )
    return scores, factors


def _past_and_deals(
    open_ids: list[str], closed_ids: list[str], rng: np.random.Generator
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Scores at PAST_AS_OF for deals that closed since (plus open ones), and the deals table."""
    n_closed = len(closed_ids)
    p_closed = np.clip(rng.beta(2, 3, n_closed), 0.01, 0.99)
    won = rng.random(n_closed) < p_closed
    closed_at = [AS_OF - timedelta(days=float(d)) for d in rng.uniform(0.5, 29, n_closed)]
    past_ids = closed_ids + open_ids
    past_prob = np.concatenate([p_closed, rng.beta(2, 3, len(open_ids))])
    past = pl.DataFrame(
        {
            "deal_id": past_ids,
            "win_probability": past_prob,
            "health": np.where(past_prob < 0.2, "red", "green"),
            "health_reasons": ["[]"] * len(past_ids),
            "top_factors": ["[]"] * len(past_ids),
        }
    )
    all_ids = closed_ids + open_ids
    n = len(all_ids)
    created = [AS_OF - timedelta(days=float(d)) for d in rng.uniform(35, 120, n)]
    deals = pl.DataFrame(
        {
            "deal_id": all_ids,
            "account_id": [f"A{i % 37:04d}" for i in range(n)],
            "owner_id": [f"R{i % 9:02d}" for i in range(n)],
            "region": [REGIONS[i % 3] for i in range(n)],
            "product": ["core" if i % 2 else "analytics" for i in range(n)],
            "amount": rng.lognormal(10.2, 0.8, n).round(0),
            "created_at": created,
            "expected_close_at": [c + timedelta(days=55) for c in created],
            "closed_at": closed_at + [None] * len(open_ids),
            "outcome": [("won" if w else "lost") for w in won] + [None] * len(open_ids),
        },
        schema_overrides={
            "created_at": DATETIME,
            "expected_close_at": DATETIME,
            "closed_at": DATETIME,
        },
    )
    return past, deals


def _pipeline(rng: np.random.Generator) -> pl.DataFrame:
    rows = []
    for period in ("2025-07", "2025-08", "2025-09"):
        total = 0.0
        for region in REGIONS:
            expected = float(rng.uniform(2e5, 9e5))
            total += expected
            rows.append((period, region, expected, 0.55 * expected, expected, 1.5 * expected, 12))
        rows.append((period, "all", total, 0.75 * total, total, 1.25 * total, 36))
    return pl.DataFrame(
        rows,
        schema={
            "period": pl.String,
            "region": pl.String,
            "expected_revenue": pl.Float64,
            "p10": pl.Float64,
            "p50": pl.Float64,
            "p90": pl.Float64,
            "n_deals": pl.Int64,
        },
        orient="row",
    ).select(  # the pipeline_forecast key: (period, dimension, member)
        "period",
        pl.when(pl.col("region") == "all")
        .then(pl.lit("all"))
        .otherwise(pl.lit("region"))
        .alias("dimension"),
        pl.col("region").alias("member"),
        pl.exclude("period", "region"),
    )


def _behavior(rng: np.random.Generator, hostile: bool) -> pl.DataFrame:
    rows = []
    for activity in TYPES:
        for role in ROLES:
            n = int(rng.integers(0, 400))
            value = None if n < 20 else float(rng.normal(0.01, 0.02))
            rows.append((activity, role, n, value))
    if hostile:
        rows.append((HOSTILE, "cto", 50, 0.02))
    return pl.DataFrame(
        rows,
        schema={
            "activity_type": pl.String,
            "contact_role": pl.String,
            "occurrences": pl.Int64,
            "mean_contribution": pl.Float64,
        },
        orient="row",
    )


def _series(n: int, hostile: bool) -> list[tuple[str, str]]:
    keys = [(f"STORE{1 + i % 3:05d}", f"SKU{i:06d}") for i in range(n)]
    if hostile:
        keys[0] = (keys[0][0], HOSTILE)
    return keys


UNITS_PER_SALE = 2.0  # mean of integers 1..3


def _hourly_rate(hours: np.ndarray) -> np.ndarray:
    """Sales per hour by hour of day (x series scale): closed at night, busy at noon."""
    table = np.zeros(24)
    table[8:12], table[12:16], table[16:20], table[20:22] = 0.5, 0.9, 0.7, 0.15
    return table[hours % 24]


def _profile(starts: list[datetime]) -> np.ndarray:
    """Expected units per 4-hour bucket starting at `starts` (scale 1)."""
    hours = np.array([s.hour for s in starts])
    return np.asarray(sum(_hourly_rate(hours + k) for k in range(4))) * UNITS_PER_SALE


def _demand(
    series: list[tuple[str, str]],
    scales: np.ndarray,
    horizon: int,
    rng: np.random.Generator,
    hostile: bool,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    starts = [AS_OF + timedelta(hours=4 * h) for h in range(horizon)]
    base = _profile(starts)
    forecast_rows, factor_rows, health_rows = [], [], []
    for s, (customer, sku) in enumerate(series):
        p50 = base * float(scales[s])
        p10 = np.floor(0.45 * p50)
        p90 = np.where(p50 > 0, np.ceil(p50 + 2.2 * np.sqrt(p50) + 0.5), 0.0)
        for h, start in enumerate(starts, start=1):
            forecast_rows.append((customer, sku, start, h, p10[h - 1], p50[h - 1], p90[h - 1]))
            if s % 2 == 0:
                picked = rng.choice(len(DEMAND_FEATURES), 5, replace=False)
                for rank, idx in enumerate(picked, start=1):
                    name = DEMAND_FEATURES[idx]
                    if hostile and rank == 1:
                        name = HOSTILE
                    factor_rows.append(
                        (
                            customer,
                            sku,
                            start,
                            rank,
                            name,
                            f"{rng.random():.2f}",
                            float(rng.normal(0, 0.4) / rank),
                        )
                    )
        on_hand = float(rng.integers(0, 60))
        red = on_hand < 15
        health_rows.append(
            (
                customer,
                sku,
                "red" if red else ("yellow" if on_hand < 30 else "green"),
                _json(["projected stock-out within 24 h", "sales up 45% in 7 days"] if red else []),
                on_hand,
                AS_OF + timedelta(hours=float(on_hand)) if on_hand < 40 else None,
            )
        )
    forecast = pl.DataFrame(
        forecast_rows,
        schema={
            "customer_id": pl.String,
            "sku": pl.String,
            "bucket_start": DATETIME,
            "horizon": pl.Int64,
            "p10": pl.Float64,
            "p50": pl.Float64,
            "p90": pl.Float64,
        },
        orient="row",
    ).with_columns(scenario=pl.lit("baseline"))  # demand_forecast's key: the normal run
    factors = pl.DataFrame(
        factor_rows,
        schema={
            "customer_id": pl.String,
            "sku": pl.String,
            "bucket_start": DATETIME,
            "rank": pl.Int64,
            "feature": pl.String,
            "feature_value": pl.String,
            "contribution": pl.Float64,
        },
        orient="row",
    )
    health = pl.DataFrame(
        health_rows,
        schema={
            "customer_id": pl.String,
            "sku": pl.String,
            "health": pl.String,
            "reasons": pl.String,
            "on_hand": pl.Float64,
            "projected_stockout_at": DATETIME,
        },
        orient="row",
    )
    return forecast, factors, health


def _sales(
    series: list[tuple[str, str]], scales: np.ndarray, rng: np.random.Generator
) -> pl.DataFrame:
    """Transactions from 14 days before AS_OF to 7 days after (the source holds the future)."""
    frames = []
    start = AS_OF - timedelta(days=14)
    hours = np.arange(0, 21 * 24)
    for (customer, sku), scale in zip(series, scales, strict=True):
        count = rng.poisson(_hourly_rate(hours) * scale)
        at = np.repeat(hours, count)
        if at.size == 0:
            continue
        minutes = rng.uniform(0, 60, at.size)
        frames.append(
            pl.DataFrame(
                {
                    "ts": [
                        start + timedelta(hours=float(h), minutes=float(m))
                        for h, m in zip(at, minutes, strict=True)
                    ],
                    "customer_id": customer,
                    "sku": sku,
                    "quantity": rng.integers(1, 4, at.size).astype(np.float64),
                    "unit_price": 9.99,
                    "region": "EMEA",
                },
                schema_overrides={"ts": DATETIME},
            )
        )
    return pl.concat(frames).with_columns(pl.col("ts").dt.truncate("1s")).sort("ts")


def _quarantine(hostile: bool) -> pl.DataFrame:
    rows = [
        (
            "deals",
            json.dumps({"deal_id": "D9", "amount": -5}),
            "non_negative",
            "amount must be >= 0",
        ),
        (
            "deals",
            json.dumps({"deal_id": "D8", "amount": -1}),
            "non_negative",
            "amount must be >= 0",
        ),
        ("activities", json.dumps({"activity_id": "X"}), "references", "deal_id not in deals"),
        ("sales", json.dumps({"sku": None}), "not_nullable", "sku must not be null"),
    ]
    if hostile:
        rows.append(("sales", "{}", "custom", HOSTILE))
    return pl.DataFrame(
        rows,
        schema={"table_name": pl.String, "row": pl.String, "check": pl.String, "reason": pl.String},
        orient="row",
    )


def settings_for(folder: Path) -> Settings:
    """Settings with sources, warehouse and MLflow store inside `folder` (nothing created)."""
    return Settings(
        sources=SourcesSettings(path=folder / "data"),
        warehouse=WarehouseSettings(url=f"duckdb:///{folder / 'warehouse.duckdb'}"),
        mlflow=MlflowSettings(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}"),
    )


def write_world(world: World, folder: Path) -> Settings:
    """Write inputs as Parquet and outputs into a DuckDB warehouse in `folder`."""
    from salesml.warehouse import Warehouse

    settings = settings_for(folder)
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    world.deals.write_parquet(data / "deals.parquet")
    world.sales.write_parquet(data / "sales.parquet")
    wh = Warehouse.from_settings(settings)
    for as_of, frames in sorted(world.outputs.items()):
        run_id = wh.start_run(flow="score_deals", as_of=as_of)
        scored = {name: frame for name, frame in frames.items() if name != "alerts"}
        counts = wh.write_batch(scored, as_of=as_of, run_id=run_id, model_version=MODEL_VERSION)
        if "alerts" in frames:  # keyed by alert_key and without model_version: upserted
            counts |= wh.write_batch({"alerts": frames["alerts"]}, as_of=as_of, run_id=run_id)
        if as_of == AS_OF:
            wh.write_quarantine(run_id, world.quarantine)
        wh.finish_run(run_id, "succeeded", model_version=MODEL_VERSION, row_counts=counts)
    failed = wh.start_run(flow="forecast_demand", as_of=AS_OF)
    wh.finish_run(failed, "failed", message="sales: 12% of rows failed checks (limit 5%)")
    return settings


def report_data(world: World, **overrides: object) -> object:
    """ReportData straight from a world (no warehouse), as gather would build it."""
    from salesml.config import DemandSettings
    from salesml.report.data import ReportData
    from salesml.report.prepare import alerts_at, bucket_actuals, calibration_pairs, top_series

    outputs = world.outputs[AS_OF]
    tables = dict(outputs)
    tables["alerts"] = alerts_at(outputs["alerts"], AS_OF)
    tables["behavior_value"] = world.outputs[BEHAVIOR_AS_OF]["behavior_value"]
    tables["quarantine"] = world.quarantine
    tables["runs"] = pl.DataFrame(
        {
            "run_id": ["r1", "r2"],
            "flow": ["score_deals", "forecast_demand"],
            "as_of": [AS_OF, AS_OF],
            "started_at": [AS_OF + timedelta(minutes=5), AS_OF + timedelta(minutes=9)],
            "finished_at": [AS_OF + timedelta(minutes=6), AS_OF + timedelta(minutes=9, seconds=4)],
            "status": ["succeeded", "failed"],
            "model_version": [MODEL_VERSION, None],
            "row_counts": ['{"deal_scores": 40}', None],
            "message": [None, "sales: 12% of rows failed checks (limit 5%)"],
        },
        schema_overrides={"as_of": DATETIME, "started_at": DATETIME, "finished_at": DATETIME},
    )
    past = world.outputs[PAST_AS_OF]["deal_scores"].with_columns(
        pl.lit(PAST_AS_OF, DATETIME).alias("as_of")
    )
    forecast = outputs["demand_forecast"]
    last = forecast["bucket_start"].max()
    assert isinstance(last, datetime)
    actuals = bucket_actuals(
        world.sales,
        top_series(forecast, 6),
        as_of=AS_OF,
        first=AS_OF - timedelta(days=7),
        last=last + timedelta(hours=4),
        demand=DemandSettings(),
        timezone="UTC",
    )
    fields: dict[str, object] = {
        "as_of": AS_OF,
        "generated_at": AS_OF + timedelta(hours=1),
        "warehouse": "synthetic",
        "tables": tables,
        "deal_info": world.deals,
        "calibration": calibration_pairs(past, world.deals, AS_OF),
        "actuals": actuals,
    }
    fields.update(overrides)
    return ReportData(**fields)  # type: ignore[arg-type]
