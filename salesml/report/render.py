"""`render(data) -> str`: the analyst report as ONE self-contained HTML page (pure, no IO).

Python builds a view of each section here (plain values, rows as dicts, charts as SVG) and
the Jinja2 templates in `salesml/report/templates` lay it out (`html.environment`: autoescape,
StrictUndefined). Everything is inline: CSS in a <style> element, charts as SVG written by
matplotlib, the holdout calibration (if used) as a base64 PNG. No script, no font, no image is
fetched, so the file opens offline. A section whose table is missing shows a note naming the
command that writes it.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any

import polars as pl
from markupsafe import Markup

from salesml.report import charts, prepare
from salesml.report.data import PRODUCING_COMMAND, ReportData
from salesml.report.html import pct, render_page, trusted, when
from salesml.report.output import MARKER
from salesml.timeutil import DATETIME

View = dict[str, Any]
"""What one template part reads: names to plain values, rows (dicts), Markup charts."""

SECTIONS = (
    ("deals", "Deals at risk"),
    ("behaviour", "Behaviour value"),
    ("calibration", "Calibration"),
    ("pipeline", "Pipeline forecast"),
    ("demand", "Demand"),
    ("quality", "Data quality"),
)
MODEL_QUALITY = ("model_quality", "Model quality over time")
"""Shown only when `model_quality` has rows, between Demand and Data quality."""
DECISION_SECTIONS = (
    ("actions", "Next-best actions"),
    ("changes", "What changed"),
    ("views", "Rep and region views"),
    ("alerts", "Alerts"),
)
"""Next-best actions, what changed, rep and region views, alerts: shown (after Deals at risk)
only when their tables exist in the warehouse; a note stands for a table without rows."""
PAGE_SECTIONS = (SECTIONS[0], *DECISION_SECTIONS, *SECTIONS[1:5], MODEL_QUALITY, SECTIONS[5])

NOT_CAUSAL = (
    "Uplift is what the model associates with such actions, not a measured causal effect: "
    "deals that got such activities in the past may have differed in other ways."
)

GUIDES = {
    "drivers": (
        "Bars pointing left pulled this deal's win probability down; bars pointing right pushed "
        "it up (SHAP, log-odds of the model score; the top drivers only)."
    ),
    "deal_chart": "← pulled the win probability down · pushed it up → (log-odds)",
    "behaviour": (
        "Each cell is what one fresh activity of that type with that contact role is worth to a "
        "deal's win probability, in percentage points (green adds, red takes away); n = activities "
        "seen; grey = too few to value. Associations learned by the model, not proven causes."
    ),
    "histogram": (
        "How today's open deals spread over win probability, coloured by health; a red deal can "
        "have a middling probability when health rules (stalled stage, no activity, slips) fire."
    ),
    "reliability": (
        "Dots on the dashed diagonal mean the probabilities can be taken at face value; dots "
        "below it mean the model was too optimistic, above it too pessimistic; bigger dot = "
        "more predictions."
    ),
    "pipeline": (
        "Bars are the expected revenue won with a close inside each month and quarter by deals "
        "open at as_of (all regions); the line spans the P10–P90 range of simulated outcomes "
        "and the tick marks the P50."
    ),
    "demand": (
        "Dark line: actual units per bucket before as_of; blue line and band: forecast P50 and "
        "its P10–P90 range after as_of (dashed vertical line); grey dashes: what actually sold, "
        "shown for display only."
    ),
    "model_quality": (
        "Solid line: the model at each origin (backtest: the origin it was fitted at; realised: "
        "the as_of whose scores or forecasts are checked against what happened); dashed: the "
        "strongest trivial baseline on the same rows. Lower is better except AUC and coverage "
        "(coverage should sit at the nominal 0.8)."
    ),
    "actions": (
        "Each action adds one activity of that type with that contact role now and re-scores "
        "the deal through the same features and model; uplift is the change in its win "
        "probability in percentage points (and over one activity of any kind). " + NOT_CAUSAL
    ),
    "movers": (
        "Change in win probability since the previous run, with the drivers whose SHAP "
        "contribution (log-odds) moved most: before → now."
    ),
    "waterfall": (
        "Grey: expected revenue (amount × win probability) of the deals expected to close in "
        "the period, at the previous run and now; green steps added to it, red steps took "
        "away: new deals, deals won or lost, expected closes slipped out of or pulled into "
        "the period, and probability changes."
    ),
    "overview": (
        "Open deals by health colour; expected revenue = amount × win probability; at risk = "
        "the value at risk of the deals below (probability lost since the last run × amount, "
        "or amount × (1 − probability) without a previous run)."
    ),
    "rep_health": (
        "Health index 0–100 from the drivers: win rate against peers, pipeline coverage of "
        "the won run-rate, days since the last activity, share of stalled deals. Weakest first."
    ),
    "at_risk": "Ordered by value at risk, the money the deal stands to lose.",
    "alerts": (
        "Raised by the alert rules in the config; an alert opens once, stays open while its "
        "condition holds and resolves when it stops. Message and severity as last seen."
    ),
    "drivers_global": (
        "Longer bars moved the demand forecasts more on average (mean |SHAP| over the explained "
        "forecasts, in the model's raw units); in brackets, how often the feature was among a "
        "forecast's top drivers."
    ),
}

SECTION_TABLES: dict[str, tuple[str, ...]] = {
    "deals": ("deal_scores",),
    "behaviour": ("behavior_value",),
    "calibration": ("deal_scores",),
    "pipeline": ("pipeline_forecast",),
    "demand": ("demand_forecast", "demand_forecast_factors", "sku_health"),
    "quality": ("quarantine", "runs"),
}
"""The tables that make a section worth showing (see `visible_sections`)."""
DECISION_TABLES: dict[str, tuple[str, ...]] = {
    "actions": ("deal_actions",),
    "changes": ("deal_score_changes", "pipeline_changes"),
    "views": ("health_overview", "rep_health", "deals_at_risk"),
    "alerts": ("alerts",),
}
"""The decision sections' tables: a section is shown when one of them exists."""


def visible_sections(data: ReportData) -> list[str]:
    """The sections shown: those whose tables exist in the warehouse (a demand-only user sees
    no empty deal sections, a CRM-only user no empty demand section). A table that exists
    but has no rows for this as_of keeps its section, with the note naming the command to
    run. When no model section has a table yet, all are shown, each naming its command
    (the optional sections, model quality and the decision sections, only with their tables).
    """
    has = {key: any(name in data.tables for name in names) for key, names in SECTION_TABLES.items()}
    if data.calibration is not None and data.calibration.height:
        has["calibration"] = True
    if not any(v for k, v in has.items() if k != "quality"):
        has = dict.fromkeys(has, True)
    has["model_quality"] = data.model_quality is not None and data.model_quality.height > 0
    for key, names in DECISION_TABLES.items():
        has[key] = any(name in data.tables for name in names)
    return [key for key, _ in PAGE_SECTIONS if has[key] or key == "quality"]


def render(data: ReportData) -> str:
    """The report page for `data` as a complete HTML document (UTF-8 text)."""
    shown = visible_sections(data)
    titles = dict(PAGE_SECTIONS)
    views: dict[str, Callable[[ReportData], View]] = {
        "deals": _deals_view,
        "behaviour": _behaviour_view,
        "calibration": _calibration_view,
        "pipeline": _pipeline_view,
        "demand": _demand_view,
        "model_quality": _model_quality_view,
        "quality": _quality_view,
        **_decision_views(),
    }
    context: View = {
        "title": f"salesml report · as of {when(data.as_of, data.timezone)}",
        "marker": Markup(MARKER),
        "meta": _meta(data),
        "nav": [(key, title) for key, title in PAGE_SECTIONS if key in shown],
        "cards": _cards(data),
        "sections": [{"key": key, "title": titles[key], **views[key](data)} for key in shown],
        "tz": data.timezone,
        "guides": GUIDES,
    }
    return render_page(context)


# --- shared pieces ---------------------------------------------------------------------------


def missing(data: ReportData, name: str) -> str:
    """The note for a table without rows: gather's sentence, else the command that writes it."""
    command = PRODUCING_COMMAND.get(name, "salesml")
    return data.notes.get(name, f"no data: run `{command}`")


def chart(title: str, guide: str, svg: str, name: str, facts: str | None = None) -> View:
    """A chart for the `chart` macro: title, one-line reading guide, our SVG, optional facts."""
    return {"title": title, "guide": guide, "svg": trusted(svg), "name": name, "facts": facts}


def ensure_columns(frame: pl.DataFrame, dtypes: Mapping[str, pl.DataType]) -> pl.DataFrame:
    """`frame` with every column of `dtypes` (null where it lacks one): rows for a template."""
    absent = [pl.lit(None, dtype).alias(c) for c, dtype in dtypes.items() if c not in frame.columns]
    return frame.with_columns(absent) if absent else frame


def _gate(gate: Mapping[str, str] | None) -> list[list[str]] | None:
    return [[k, v] for k, v in gate.items()] if gate else None


# --- page parts ------------------------------------------------------------------------------


def _meta(data: ReportData) -> str:
    versions = []
    for name, label in (("deal_scores", "deal-win model"), ("demand_forecast", "demand model")):
        frame = data.table(name)
        if frame is not None and "model_version" in frame.columns:
            found = sorted({str(v) for v in frame["model_version"].drop_nulls().to_list()})
            if found:
                versions.append(f"{label} v{', '.join(found)}")
    meta = [
        f"as of {when(data.as_of, data.timezone)}",
        f"generated {when(data.generated_at, data.timezone)}",
        *versions,
    ]
    if data.warehouse:
        meta.append(f"warehouse {data.warehouse}")
    return " · ".join(meta)


def _cards(data: ReportData) -> list[tuple[str, str]]:
    """The summary cards (value, label); none: the page says the warehouse has no output."""
    cards: list[tuple[str, str]] = []
    scores = data.table("deal_scores")
    if scores is not None:
        counts = prepare.health_counts(scores)
        cards.append((f"{scores.height:,}", "open deals scored"))
        cards.append(
            (
                f"{counts['red']:,} / {counts['yellow']:,} / {counts['green']:,}",
                "red / yellow / green deals",
            )
        )
    pipeline = data.table("pipeline_forecast")
    if pipeline is not None:
        pipeline = prepare.pipeline_regions(pipeline)
        months = pipeline.filter(~pl.col("period").str.contains("Q"))
        first = months.filter(pl.col("period") == months["period"].min())
        total = first.filter(pl.col("region") == "all")["expected_revenue"].sum()
        cards.append((charts.compact(float(total)), "expected revenue won inside this month"))
    health = data.table("sku_health")
    if health is not None:
        counts = prepare.health_counts(health)
        cards.append((f"{counts['red']:,}", f"SKU series red (of {health.height:,})"))
    quarantine = data.tables.get("quarantine")
    if quarantine is not None:
        cards.append((f"{quarantine.height:,}", "rows quarantined"))
    runs = data.table("runs")
    if runs is not None:
        status = runs.get_column("status")
        succeeded = int((status == "succeeded").sum())
        failed = int(status.is_in(["failed", "abandoned"]).sum())
        cards.append((f"{succeeded} / {failed}", "runs succeeded / failed or abandoned"))
    return cards


# --- deals -----------------------------------------------------------------------------------

NO_SIGNAL = "No reliable signal in these inputs: probabilities are the base rate"
DEAL_ROW = {"stage": pl.String(), "health": pl.String(), "health_reasons": pl.String()}


def _deals_view(data: ReportData) -> View:
    view: View = {
        "missing": None,
        "base_rate": None,
        "gate": _gate(data.deal_gate),
        "rest": [],
        "lead": "",
        "guide": GUIDES["drivers"],
        "factors_missing": None,
        "cards": [],
    }
    scores = data.table("deal_scores")
    if scores is None:
        return {**view, "missing": missing(data, "deal_scores")}
    ranked = prepare.deals_at_risk(scores)
    n_cards = data.options.at_risk_cards
    if prepare.is_base_rate(scores):
        shown = ranked.head(n_cards + data.options.at_risk_table)
        return {**view, "base_rate": _base_rate(scores), "rest": _deal_rows(data, shown)}
    factors = data.table("deal_score_factors")
    if factors is not None:
        factors = prepare.factor_labels(factors)
    shown = ranked.head(n_cards)
    span = None
    if factors is not None:
        mine = factors.join(shown.select("deal_id"), on="deal_id", how="semi")
        span = mine["contribution"].abs().max() if mine.height else None
    info = _deal_info(data, shown)
    cards = [
        _deal_card(row, factors, info.get(str(row["deal_id"])), i, span)  # type: ignore[arg-type]
        for i, row in enumerate(shown.iter_rows(named=True))
    ]
    lead = (
        f"The {min(n_cards, ranked.height)} open deals most at risk: red first, then the "
        "lowest win probability. Each chart shows the SHAP drivers behind the score."
    )
    return {
        **view,
        "lead": lead,
        "factors_missing": None if factors is not None else missing(data, "deal_score_factors"),
        "cards": cards,
        "rest": _deal_rows(data, ranked.slice(n_cards, data.options.at_risk_table)),
    }


def _base_rate(scores: pl.DataFrame) -> View:
    """The deals section's lead when no model had skill: the base rate and the score bases."""
    rate = float(scores["win_probability"].mean())  # type: ignore[arg-type]
    counts = prepare.score_basis_counts(scores)
    basis = ", ".join(f"{name} {n:,}" for name, n in sorted(counts.items()))
    lead = (
        f"{NO_SIGNAL} ({pct(rate)} for every open deal, the share of deals won as known "
        "at as_of). No candidate model beat that constant on the honest holdout, so no "
        "drivers are shown: health below comes from the rules only."
    )
    return {"lead": lead, "basis": f"Deals by score basis: {basis}."}


def _deal_info(data: ReportData, deals: pl.DataFrame) -> dict[str, dict[str, object]]:
    """deal_id -> the deal's row in `deal_info`, for the deals shown (the last row wins)."""
    if data.deal_info is None:
        return {}
    mine = data.deal_info.join(deals.select("deal_id"), on="deal_id", how="semi")
    return {str(row["deal_id"]): row for row in mine.iter_rows(named=True)}


def _deal_rows(data: ReportData, rows: pl.DataFrame) -> list[View]:
    """Rows of a deals table: deal_id, win_probability, health, stage, amount, reasons."""
    amount = pl.lit(None, pl.Float64)
    info = data.deal_info
    if info is not None and "amount" in info.columns:
        known = info.filter(pl.col("amount").is_not_null())
        amounts = dict(zip(known["deal_id"].cast(pl.String), known["amount"], strict=True))
        amount = (
            pl.col("deal_id")
            .cast(pl.String)
            .replace_strict(amounts, default=None, return_dtype=pl.Float64)
        )
    frame = ensure_columns(rows, DEAL_ROW).select(
        "deal_id", "win_probability", "health", "stage", amount.alias("amount"), "health_reasons"
    )
    return frame.to_dicts()


def _deal_facts(row: dict[str, object], info: dict[str, object] | None) -> list[str]:
    facts = []
    if row.get("stage") is not None:
        days = row.get("days_in_stage")
        stage = f"stage {row['stage']}"
        if isinstance(days, int | float):
            stage += f" for {days:.0f} days"
        facts.append(stage)
    if info:
        if info.get("amount") is not None:
            facts.append(f"amount {charts.compact(float(info['amount']))}")  # type: ignore[arg-type]
        for field in ("account_id", "owner_id", "region", "product"):
            if info.get(field) is not None:
                facts.append(f"{field.removesuffix('_id')} {info[field]}")
    return facts


def _deal_card(
    row: dict[str, object],
    factors: pl.DataFrame | None,
    info: dict[str, object] | None,
    index: int,
    span: float | None,
) -> View:
    mine = None if factors is None else factors.filter(pl.col("deal_id") == row["deal_id"])
    drivers = "absent" if mine is None else "empty" if mine.height == 0 else "chart"
    figure = None
    if mine is not None and mine.height:
        title = f"Why {row['deal_id']} scores {pct(row['win_probability'])}"  # type: ignore[arg-type]
        svg = charts.driver_bars(mine, f"deal{index}", span)
        figure = chart(title, GUIDES["deal_chart"], svg, f"deal{index}")
    return {
        "deal_id": row["deal_id"],
        "health": row.get("health"),
        "win_probability": row["win_probability"],
        "facts": " · ".join(_deal_facts(row, info)),
        "reasons": prepare.json_list(row.get("health_reasons")),  # type: ignore[arg-type]
        "drivers": drivers,
        "chart": figure,
    }


def _behaviour_view(data: ReportData) -> View:
    frame = data.table("behavior_value")
    if frame is None:
        return {"missing": missing(data, "behavior_value"), "lead": None, "chart": None}
    svg = charts.behavior_heatmap(frame, "behaviour")
    return {
        "missing": None,
        "lead": data.notes.get("behavior_value"),
        "chart": chart("Behaviour value map", GUIDES["behaviour"], svg, "behaviour"),
    }


def _calibration_view(data: ReportData) -> View:
    view: View = {
        "missing": None,
        "histogram": None,
        "reliability": None,
        "holdout": None,
        "calibration_note": data.notes.get(
            "calibration",
            "no calibration yet: no deal scored at an earlier as_of has closed since, and no "
            "champion calibration artifact was found",
        ),
    }
    scores = data.table("deal_scores")
    if scores is None:
        view["missing"] = missing(data, "deal_scores")
    else:
        svg = charts.score_histogram(scores, "histogram")
        view["histogram"] = chart(
            "Score distribution by health", GUIDES["histogram"], svg, "histogram"
        )
    pairs = data.calibration
    if pairs is not None and pairs.height:
        view["reliability"] = _reliability(data, pairs)
    elif data.holdout_calibration_png:
        view["holdout"] = {
            "label": data.holdout_calibration_label or "the champion model",
            "guide": GUIDES["reliability"],
            "png": base64.b64encode(data.holdout_calibration_png).decode("ascii"),
        }
    return view


def _reliability(data: ReportData, pairs: pl.DataFrame) -> View:
    """Past scores against what happened: the reliability chart with Brier and ECE."""
    from salesml import metrics

    bins = data.options.calibration_bins
    curve = prepare.reliability(pairs, bins)
    y = pairs["won"].cast(pl.Float64).to_numpy()
    p = pairs["win_probability"].to_numpy()
    first, last = pairs["scored_as_of"].min(), pairs["scored_as_of"].max()
    zone = data.timezone
    facts = (
        f"{pairs.height:,} predictions made {when(first, zone)}"  # type: ignore[arg-type]
        + (f" to {when(last, zone)}" if last != first else "")  # type: ignore[arg-type]
        + f" on {pairs['deal_id'].n_unique():,} deals that have closed since; "
        f"Brier score {metrics.brier(y, p):.3f}, expected calibration error "
        f"{metrics.expected_calibration_error(y, p, bins):.3f}."
    )
    svg = charts.reliability_curve(curve, "reliability")
    title = "Calibration: past scores against what happened"
    return chart(title, GUIDES["reliability"], svg, "reliability", facts)


def _pipeline_view(data: ReportData) -> View:
    frame = data.table("pipeline_forecast")
    if frame is None:
        return {"missing": missing(data, "pipeline_forecast")}
    frame = prepare.pipeline_regions(frame).sort("period", pl.col("region") != "all", "region")
    total = frame.filter(pl.col("region") == "all")
    if total.height == 0:
        total = (
            frame.group_by("period")
            .agg(
                pl.col("expected_revenue").sum(),
                pl.lit(None, pl.Float64).alias("p10"),
                pl.lit(None, pl.Float64).alias("p50"),
                pl.lit(None, pl.Float64).alias("p90"),
            )
            .sort("period")
        )
    svg = charts.pipeline_chart(total, "pipeline")
    has_deals = "n_deals" in frame.columns
    headers = ["period", "region", "expected", "P10", "P50", "P90"]
    if has_deals:
        headers.append("deals")
    return {
        "missing": None,
        "chart": chart("Pipeline revenue forecast", GUIDES["pipeline"], svg, "pipeline"),
        "headers": headers,
        "has_deals": has_deals,
        "rows": frame.to_dicts(),
    }


# --- demand ----------------------------------------------------------------------------------


def _demand_view(data: ReportData) -> View:
    view: View = {
        "missing": None,
        "chart": None,
        "notes": [],
        "drivers_missing": None,
        "drivers": None,
        "gate": _gate(data.demand_gate),
        **_sku_health(data),
    }
    forecast = data.table("demand_forecast")
    if forecast is None:
        view["missing"] = missing(data, "demand_forecast")
    else:
        series = prepare.top_series(forecast, data.options.demand_series)
        svg = charts.demand_panels(
            forecast, data.actuals, series, data.as_of, data.timezone, "demand"
        )
        title = f"Forecast vs actuals: the {series.height} largest customer × SKU series"
        view["chart"] = chart(title, GUIDES["demand"], svg, "demand")
        if data.actuals is not None and data.actuals["after_as_of"].any():
            view["notes"].append(
                "Actual sales after as_of were read from the source for display only: this "
                "as_of is in the past. The forecast did not see them."
            )
        if "actuals" in data.notes:
            view["notes"].append(data.notes["actuals"])
    factors = data.table("demand_forecast_factors")
    if factors is None:
        view["drivers_missing"] = missing(data, "demand_forecast_factors")
    else:
        drivers = prepare.global_drivers(factors, data.options.global_drivers)
        svg = charts.importance_bars(
            drivers["feature"].str.replace_all("_", " ").to_list(),
            drivers["mean_abs"].to_list(),
            drivers["share"].to_list(),
            "drivers",
            "mean |SHAP contribution| (model units)",
            top_k=int(factors["rank"].max() or 5),  # type: ignore[arg-type]
        )
        view["drivers"] = chart("Global demand drivers", GUIDES["drivers_global"], svg, "drivers")
    return view


def _sku_health(data: ReportData) -> View:
    frame = data.table("sku_health")
    if frame is None:
        return {"health_missing": missing(data, "sku_health"), "health_lead": "", "health_rows": []}
    counts = prepare.health_counts(frame)
    shown = prepare.sku_health_order(frame).head(data.options.sku_health_rows)
    lead = (
        f"{counts['red']:,} red, {counts['yellow']:,} yellow, {counts['green']:,} green series. "
        f"Showing {shown.height:,} of {frame.height:,}: red first, then the soonest projected "
        "stock-out."
    )
    return {"health_missing": None, "health_lead": lead, "health_rows": shown.to_dicts()}


# --- model quality ---------------------------------------------------------------------------

MODEL_LABELS = {"deal_win": "Deal-win", "demand": "Demand"}


def _model_quality_view(data: ReportData) -> View:
    """Per model, kind and metric: the trend over origins (value vs baseline) and a sentence."""
    history = data.model_quality
    assert history is not None  # the section is shown only with rows
    points = prepare.quality_points(history)
    figures = []
    for (model, kind, metric), series in points.group_by(
        "model", "kind", "metric", maintain_order=True
    ):
        label = prepare.METRIC_LABELS.get(str(metric), str(metric))
        names = series["baseline"].drop_nulls().unique(maintain_order=True).to_list()
        baseline = " / ".join(prepare.BASELINE_LABELS.get(n, n) for n in names) or "baseline"
        chart_id = f"mq-{model}-{kind}-{metric}".replace("_", "-")
        svg = charts.quality_trend(series, chart_id, label, baseline)
        sentence = prepare.quality_sentence(series, data.options.quality_points)
        heading = f"{MODEL_LABELS.get(str(model), str(model))}: {kind} {label}"
        figures.append(chart(heading, GUIDES["model_quality"], svg, chart_id, sentence))
    return {"figures": figures}


# --- data quality ----------------------------------------------------------------------------

RUN_COLOURS = {"succeeded": "green", "failed": "red", "abandoned": "red", "running": "yellow"}
RUN_ROW = {
    "flow": pl.String(),
    "status": pl.String(),
    "started_at": DATETIME,
    "finished_at": DATETIME,
    "model_version": pl.String(),
    "row_counts": pl.String(),
    "message": pl.String(),
}


def _quality_view(data: ReportData) -> View:
    view: View = {"quarantine_missing": None, "quarantine": [], "quarantined": 0}
    quarantine = data.tables.get("quarantine")
    if quarantine is None:
        view["quarantine_missing"] = missing(data, "quarantine")
    elif quarantine.height:
        summary = prepare.quarantine_summary(quarantine, data.options.quarantine_examples)
        view["quarantined"] = quarantine.height
        view["quarantine"] = [
            [r["table_name"], r["check"], f"{r['rows']:,}", r["example"]]
            for r in summary.iter_rows(named=True)
        ]
    runs = data.table("runs")
    if runs is None:
        return {**view, "runs_missing": missing(data, "runs"), "runs": []}
    rows = ensure_columns(runs, RUN_ROW).sort("started_at")
    seconds = (pl.col("finished_at") - pl.col("started_at")).dt.total_microseconds() / 1e6
    rows = rows.with_columns(
        pl.col("status")
        .replace_strict(RUN_COLOURS, default="other", return_dtype=pl.String)
        .fill_null("other")
        .alias("colour"),
        seconds.alias("took"),
    )
    return {**view, "runs_missing": None, "runs": rows.to_dicts()}


# --- decisions: actions, changes, rep and region views, alerts -------------------------------


def _decision_views() -> dict[str, Callable[[ReportData], View]]:
    return {
        "actions": _actions_view,
        "changes": _changes_view,
        "views": _rep_region_view,
        "alerts": _alerts_view,
    }


def _actions_view(data: ReportData) -> View:
    """Per deal, the actions with the largest expected uplift and the rule warnings."""
    actions = data.table("deal_actions")
    if actions is None:
        return {"missing": missing(data, "deal_actions")}
    rows = prepare.actions_by_deal(actions, data.table("deal_scores"), data.options.action_deals)
    kind = actions["kind"] if "kind" in actions.columns else pl.Series(["action"] * actions.height)
    with_action = actions.filter(kind == "action")["deal_id"].n_unique()
    warned = actions.filter(kind == "warning")["deal_id"].n_unique()
    lead = (
        f"{with_action:,} open deals have an action with a positive expected uplift, "
        f"{warned:,} carry a warning. Showing {rows.height:,} of "
        f"{actions['deal_id'].n_unique():,} deals, the largest uplift first."
    )
    return {"missing": None, "lead": lead, "guide": GUIDES["actions"], "rows": rows.to_dicts()}


def _changes_view(data: ReportData) -> View:
    """Deals that moved most since the previous run, and the pipeline waterfalls."""
    view: View = {"deals_missing": None, "counts": "", "since": "", "movers": []}
    changes = data.table("deal_score_changes")
    if changes is None:
        view["deals_missing"] = missing(data, "deal_score_changes")
    else:
        previous = changes["previous_as_of"].drop_nulls()
        view["since"] = (
            f"since the run of {when(previous.max(), data.timezone)}"  # type: ignore[arg-type]
            if previous.len()
            else "(no previous run with scores)"
        )
        view["counts"] = ", ".join(f"{n:,} {label}" for label, n in prepare.change_counts(changes))
        view["movers"] = prepare.biggest_movers(changes, data.options.movers).to_dicts()
    view["labels"] = _feature_labels(data)
    return {**view, **_waterfalls(data)}


def _feature_labels(data: ReportData) -> dict[str, str]:
    """Feature -> its label in the factor texts ('days in current stage'), else the name with
    spaces: how moved drivers are named.
    """
    factors = data.table("deal_score_factors")
    if factors is None:
        return {}
    labels = prepare.factor_labels(factors).unique("feature", keep="first", maintain_order=True)
    return dict(zip(labels["feature"].to_list(), labels["label"].to_list(), strict=True))


def _waterfalls(data: ReportData) -> View:
    changes = data.table("pipeline_changes")
    if changes is None:
        return {"waterfall_missing": missing(data, "pipeline_changes"), "waterfalls": []}
    waterfalls = []
    for kind in ("month", "quarter"):
        steps = prepare.waterfall_steps(changes, kind)
        if steps.height == 0:
            continue
        period = str(steps["period"][0])
        previous = steps["previous_as_of"].drop_nulls()
        since = when(previous.max(), data.timezone) if previous.len() else "the previous run"  # type: ignore[arg-type]
        svg = charts.waterfall_chart(steps, f"waterfall-{kind}")
        title = f"Expected revenue closing in {period}: from {since} to this run"
        figure = chart(title, GUIDES["waterfall"], svg, f"waterfall-{kind}")
        waterfalls.append({"chart": figure, "rows": steps.to_dicts()})
    return {"waterfall_missing": None, "waterfalls": waterfalls}


def _rep_region_view(data: ReportData) -> View:
    """Health overview by region and owner, the rep health index, deals by value at risk."""
    overview = data.table("health_overview")
    reps = data.table("rep_health")
    at_risk = data.table("deals_at_risk")
    view: View = {
        "overview_missing": None if overview is not None else missing(data, "health_overview"),
        "regions": [],
        "owners": [],
        "reps_missing": None if reps is not None else missing(data, "rep_health"),
        "reps": [],
        "at_risk_missing": None if at_risk is not None else missing(data, "deals_at_risk"),
        "at_risk": [],
    }
    if overview is not None:
        view["regions"] = prepare.overview_rows(overview, "region").to_dicts()
        view["owners"] = prepare.overview_rows(overview, "owner").to_dicts()
    if reps is not None:
        order = reps.sort("health_index", "owner_id")
        view["reps"] = order.head(data.options.rep_rows).to_dicts()
    if at_risk is not None:
        view["at_risk"] = at_risk.sort("rank").head(data.options.at_risk_table).to_dicts()
    return view


SEVERITY_COLOURS = {"high": "red", "medium": "yellow", "low": "other"}


def _alerts_view(data: ReportData) -> View:
    """The alerts at as_of: open first (by severity, then first seen), then those resolved."""
    alerts = data.table("alerts")
    if alerts is None:
        return {"missing": missing(data, "alerts")}
    open_now = int((alerts["status_at"] == "open").sum())
    shown = alerts.head(data.options.alert_rows).with_columns(
        pl.col("severity")
        .replace_strict(SEVERITY_COLOURS, default="other", return_dtype=pl.String)
        .alias("colour")
    )
    lead = (
        f"{open_now:,} open at as_of, {alerts.height - open_now:,} resolved at as_of. "
        f"Showing {shown.height:,}: open first, the most severe first."
    )
    return {"missing": None, "lead": lead, "guide": GUIDES["alerts"], "rows": shown.to_dicts()}
