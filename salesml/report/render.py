"""`render(data) -> str`: the analyst report as ONE self-contained HTML page (pure, no IO).

Everything is inline: CSS in a <style> element, charts as SVG written by matplotlib, the
holdout calibration (if used) as a base64 PNG. No script, no font, no image is fetched, so the
file opens offline. Every value from the data goes through `salesml.report.html` (escaped).
A section whose table is missing shows a note naming the command that writes it.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from zoneinfo import ZoneInfo

import polars as pl

from salesml.report import charts, prepare
from salesml.report.data import PRODUCING_COMMAND, ReportData
from salesml.report.html import STYLE, Html, join, table, tag, trusted
from salesml.report.output import MARKER

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
PAGE_SECTIONS = (*SECTIONS[:5], MODEL_QUALITY, SECTIONS[5])

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
        "Bars are the expected won revenue per month of expected close (all regions); the line "
        "spans the P10–P90 range of simulated outcomes and the tick marks the P50."
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


def visible_sections(data: ReportData) -> list[str]:
    """The sections shown: those whose tables exist in the warehouse (a demand-only user sees
    no empty deal sections, a CRM-only user no empty demand section). A table that exists
    but has no rows for this as_of keeps its section, with the note naming the command to
    run. When no model section has a table yet, all are shown, each naming its command."""
    has = {key: any(name in data.tables for name in names) for key, names in SECTION_TABLES.items()}
    if data.calibration is not None and data.calibration.height:
        has["calibration"] = True
    if not any(v for k, v in has.items() if k != "quality"):
        has = dict.fromkeys(has, True)
    has["model_quality"] = data.model_quality is not None and data.model_quality.height > 0
    return [key for key, _ in PAGE_SECTIONS if has[key] or key == "quality"]


def render(data: ReportData) -> str:
    """The report page for `data` as a complete HTML document (UTF-8 text)."""
    fmt = _Formats(data.timezone)
    shown = visible_sections(data)
    parts = {
        "deals": lambda: _deals_section(data, fmt),
        "behaviour": lambda: _behaviour_section(data, fmt),
        "calibration": lambda: _calibration_section(data, fmt),
        "pipeline": lambda: _pipeline_section(data),
        "demand": lambda: _demand_section(data, fmt),
        "model_quality": lambda: _model_quality_section(data),
        "quality": lambda: _quality_section(data, fmt),
    }
    body = join(
        [
            _header(data, fmt),
            _nav(shown),
            tag("main", _summary(data), *(parts[key]() for key in shown)),
            tag(
                "footer",
                "Generated by salesml · self-contained file: no network access is needed to view it.",
            ),
        ]
    )
    title = f"salesml report · as of {fmt.when(data.as_of)}"
    head = join(
        [
            Html('<meta charset="utf-8">'),
            Html(MARKER),
            Html('<meta name="viewport" content="width=device-width, initial-scale=1">'),
            tag("title", title),
            tag("style", trusted(STYLE)),
        ]
    )
    return f'<!DOCTYPE html>\n<html lang="en">\n<head>{head}</head>\n<body>{body}</body>\n</html>\n'


# --- formatting ------------------------------------------------------------------------------


class _Formats:
    def __init__(self, timezone: str) -> None:
        self.zone = ZoneInfo(timezone)

    def when(self, value: datetime | None) -> str:
        if value is None:
            return ""
        local = value.astimezone(self.zone)
        return local.strftime("%Y-%m-%d %H:%M ") + (local.tzname() or "")


def _pct(value: float | None) -> str:
    """A probability as a percentage; below 1% with one decimal, so 0.4% does not read 0%."""
    if value is None:
        return ""
    if value >= 0.01:
        return f"{100 * value:.0f}%"
    return f"{100 * value:.1f}%" if value >= 0.001 else "<0.1%"


def _money(value: float | None) -> str:
    return "" if value is None else charts.compact(float(value))


def _number(value: float | None, decimals: int = 1) -> str:
    return "" if value is None else f"{value:,.{decimals}f}"


def _badge(health: str | None) -> Html:
    colour = health if health in charts.HEALTH_COLOURS else "other"
    return tag("span", health or "n/a", class_=f"badge {colour}")


def _note(text: str) -> Html:
    """A note; text in `backticks` is shown as code."""
    parts = text.split("`")
    return tag("p", *(tag("code", p) if i % 2 else p for i, p in enumerate(parts)), class_="note")


def _missing(data: ReportData, name: str) -> Html:
    command = PRODUCING_COMMAND.get(name, "salesml")
    return _note(data.notes.get(name, f"no data: run `{command}`"))


def _chart(title: str, guide: str, svg: str, name: str, facts: str | None = None) -> Html:
    """A chart: its title, the one-line reading guide, the SVG, then optional facts."""
    return tag(
        "figure",
        tag("h3", title),
        tag("p", guide, class_="guide"),
        trusted(svg),
        tag("p", facts, class_="small") if facts else None,
        class_="chart",
        data_chart=name,
    )


def _section(key: str, title: str, *content: object) -> Html:
    return tag("section", tag("h2", title), *content, id=key)


# --- page parts ------------------------------------------------------------------------------


def _header(data: ReportData, fmt: _Formats) -> Html:
    versions = []
    for name, label in (("deal_scores", "deal-win model"), ("demand_forecast", "demand model")):
        frame = data.table(name)
        if frame is not None and "model_version" in frame.columns:
            found = sorted({str(v) for v in frame["model_version"].drop_nulls().to_list()})
            if found:
                versions.append(f"{label} v{', '.join(found)}")
    meta = [
        f"as of {fmt.when(data.as_of)}",
        f"generated {fmt.when(data.generated_at)}",
        *versions,
    ]
    if data.warehouse:
        meta.append(f"warehouse {data.warehouse}")
    return tag(
        "header",
        tag("h1", "salesml · deals and demand report"),
        tag("div", " · ".join(meta), class_="meta"),
    )


def _nav(shown: list[str]) -> Html:
    return tag(
        "nav", *(tag("a", title, href=f"#{key}") for key, title in PAGE_SECTIONS if key in shown)
    )


def _summary(data: ReportData) -> Html:
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
        total = pipeline.filter(pl.col("region") == "all")["expected_revenue"].sum()
        cards.append((_money(float(total)), "expected won revenue, all periods"))
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
    if not cards:
        return _note(
            "The warehouse has no output for this as_of yet: run `salesml demo` or the jobs."
        )
    return tag(
        "div",
        *(
            tag("div", tag("div", v, class_="v"), tag("div", k, class_="k"), class_="kpi")
            for v, k in cards
        ),
        class_="kpis",
    )


# --- deals -----------------------------------------------------------------------------------


def _deals_section(data: ReportData, fmt: _Formats) -> Html:
    key, title = SECTIONS[0]
    scores = data.table("deal_scores")
    if scores is None:
        return _section(key, title, _missing(data, "deal_scores"))
    ranked = prepare.deals_at_risk(scores)
    if prepare.is_base_rate(scores):
        return _section(key, title, *_base_rate_content(data, scores, ranked))
    factors = data.table("deal_score_factors")
    if factors is not None:
        factors = prepare.factor_labels(factors)
    info = _deal_info(data)
    n_cards = data.options.at_risk_cards
    shown = ranked.head(n_cards)
    span = None
    if factors is not None:
        mine = factors.join(shown.select("deal_id"), on="deal_id", how="semi")
        span = mine["contribution"].abs().max() if mine.height else None
    cards = [
        _deal_card(row, factors, info.get(str(row["deal_id"])), i, span)  # type: ignore[arg-type]
        for i, row in enumerate(shown.iter_rows(named=True))
    ]
    content: list[object] = [
        tag(
            "p",
            f"The {min(n_cards, ranked.height)} open deals most at risk: red first, then the "
            "lowest win probability. Each chart shows the SHAP drivers behind the score.",
            class_="lead",
        ),
        tag("p", GUIDES["drivers"], class_="guide"),
    ]
    if factors is None:
        content.append(_missing(data, "deal_score_factors"))
    content.extend(cards)
    rest = ranked.slice(n_cards, data.options.at_risk_table)
    if rest.height:
        content.append(tag("h3", "More deals at risk"))
        content.append(_deals_table(rest, info))
    if data.deal_gate:
        content.append(tag("h3", "Skill gate"))
        content.append(table(["", "value"], [[k, v] for k, v in data.deal_gate.items()]))
    return _section(key, title, *content)


NO_SIGNAL = "No reliable signal in these inputs: probabilities are the base rate"


def _base_rate_content(
    data: ReportData, scores: pl.DataFrame, ranked: pl.DataFrame
) -> list[object]:
    """The deals section when no model had skill: the base rate, the gate's numbers, and the
    deals by health rules, without driver charts (there are no drivers to show)."""
    rate = float(scores["win_probability"].mean())  # type: ignore[arg-type]
    counts = prepare.score_basis_counts(scores)
    basis = ", ".join(f"{name} {n:,}" for name, n in sorted(counts.items()))
    content: list[object] = [
        tag(
            "p",
            f"{NO_SIGNAL} ({_pct(rate)} for every open deal, the share of deals won as known "
            "at as_of). No candidate model beat that constant on the honest holdout, so no "
            "drivers are shown: health below comes from the rules only.",
            class_="lead no-signal",
        ),
        tag("p", f"Deals by score basis: {basis}.", class_="small"),
    ]
    if data.deal_gate:
        content.append(tag("h3", "Skill gate"))
        content.append(table(["", "value"], [[k, v] for k, v in data.deal_gate.items()]))
    info = _deal_info(data)
    shown = ranked.head(data.options.at_risk_cards + data.options.at_risk_table)
    if shown.height:
        content.append(tag("h3", "Deals at risk by health rules"))
        content.append(_deals_table(shown, info))
    return content


def _deal_info(data: ReportData) -> dict[str, dict[str, object]]:
    if data.deal_info is None:
        return {}
    return {str(row["deal_id"]): row for row in data.deal_info.iter_rows(named=True)}


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
            facts.append(f"amount {_money(float(info['amount']))}")  # type: ignore[arg-type]
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
) -> Html:
    reasons = prepare.json_list(row.get("health_reasons"))  # type: ignore[arg-type]
    left = tag(
        "div",
        tag("div", str(row["deal_id"]), " ", _badge(row.get("health")), class_="id"),  # type: ignore[arg-type]
        tag("div", _pct(row["win_probability"]), class_="prob"),  # type: ignore[arg-type]
        tag("div", "win probability", class_="small"),
        tag("div", " · ".join(_deal_facts(row, info)), class_="facts"),
        tag("ul", *(tag("li", r) for r in reasons)) if reasons else None,
    )
    mine = None if factors is None else factors.filter(pl.col("deal_id") == row["deal_id"])
    if mine is None:
        right = tag("div")
    elif mine.height == 0:
        right = tag("p", "No drivers stored for this deal.", class_="small")
    else:
        svg = charts.driver_bars(mine, f"deal{index}", span)
        right = tag(
            "figure",
            tag("h3", f"Why {row['deal_id']} scores {_pct(row['win_probability'])}"),  # type: ignore[arg-type]
            tag("p", GUIDES["deal_chart"], class_="guide"),
            trusted(svg),
            class_="chart",
            data_chart=f"deal{index}",
        )
    return tag("div", left, right, class_="deal")


def _deals_table(rows: pl.DataFrame, info: dict[str, dict[str, object]]) -> Html:
    body = []
    for row in rows.iter_rows(named=True):
        amount = (info.get(str(row["deal_id"])) or {}).get("amount")
        body.append(
            [
                row["deal_id"],
                _pct(row["win_probability"]),
                _badge(row["health"]),
                row.get("stage") or "",
                _money(amount) if isinstance(amount, int | float) else "",
                "; ".join(prepare.json_list(row.get("health_reasons"))),
            ]
        )
    return table(
        ["deal", "win probability", "health", "stage", "amount", "health reasons"],
        body,
        numeric=(1, 4),
        nowrap=(0,),
    )


def _behaviour_section(data: ReportData, fmt: _Formats) -> Html:
    key, title = SECTIONS[1]
    frame = data.table("behavior_value")
    if frame is None:
        return _section(key, title, _missing(data, "behavior_value"))
    content: list[object] = []
    if "behavior_value" in data.notes:
        content.append(tag("p", data.notes["behavior_value"], class_="lead"))
    svg = charts.behavior_heatmap(frame, "behaviour")
    content.append(_chart("Behaviour value map", GUIDES["behaviour"], svg, "behaviour"))
    return _section(key, title, *content)


def _calibration_section(data: ReportData, fmt: _Formats) -> Html:
    key, title = SECTIONS[2]
    content: list[object] = []
    scores = data.table("deal_scores")
    if scores is None:
        content.append(_missing(data, "deal_scores"))
    else:
        svg = charts.score_histogram(scores, "histogram")
        content.append(
            _chart("Score distribution by health", GUIDES["histogram"], svg, "histogram")
        )
    content.append(_calibration_part(data, fmt))
    return _section(key, title, tag("div", *content, class_="grid2"))


def _calibration_part(data: ReportData, fmt: _Formats) -> Html:
    from salesml import metrics

    pairs = data.calibration
    if pairs is not None and pairs.height:
        curve = prepare.reliability(pairs, data.options.calibration_bins)
        y = pairs["won"].cast(pl.Float64).to_numpy()
        p = pairs["win_probability"].to_numpy()
        first, last = pairs["scored_as_of"].min(), pairs["scored_as_of"].max()
        facts = (
            f"{pairs.height:,} predictions made {fmt.when(first)}"  # type: ignore[arg-type]
            + (f" to {fmt.when(last)}" if last != first else "")  # type: ignore[arg-type]
            + f" on {pairs['deal_id'].n_unique():,} deals that have closed since; "
            f"Brier score {metrics.brier(y, p):.3f}, expected calibration error "
            f"{metrics.expected_calibration_error(y, p, data.options.calibration_bins):.3f}."
        )
        svg = charts.reliability_curve(curve, "reliability")
        return _chart(
            "Calibration: past scores against what happened",
            GUIDES["reliability"],
            svg,
            "reliability",
            facts,
        )
    if data.holdout_calibration_png:
        encoded = base64.b64encode(data.holdout_calibration_png).decode("ascii")
        label = data.holdout_calibration_label or "the champion model"
        return tag(
            "figure",
            tag("h3", "Calibration on the training holdout"),
            tag(
                "p",
                f"No past score has a closed deal yet, so this is {label}'s calibration on its "
                "holdout (latest-closing deals). " + GUIDES["reliability"],
                class_="guide",
            ),
            tag("img", src=f"data:image/png;base64,{encoded}", alt="holdout calibration"),
            class_="chart",
            data_chart="reliability",
        )
    return tag(
        "div",
        tag("h3", "Calibration"),
        _note(
            data.notes.get(
                "calibration",
                "no calibration yet: no deal scored at an earlier as_of has closed since, and no "
                "champion calibration artifact was found",
            )
        ),
    )


def _pipeline_section(data: ReportData) -> Html:
    key, title = SECTIONS[3]
    frame = data.table("pipeline_forecast")
    if frame is None:
        return _section(key, title, _missing(data, "pipeline_forecast"))
    frame = frame.sort("period", pl.col("region") != "all", "region")
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
    rows = [
        [
            r["period"],
            tag("b", r["region"]) if r["region"] == "all" else r["region"],
            _money(r["expected_revenue"]),
            _money(r["p10"]),
            _money(r["p50"]),
            _money(r["p90"]),
            *([f"{r['n_deals']:,}" if r["n_deals"] is not None else ""] if has_deals else []),
        ]
        for r in frame.iter_rows(named=True)
    ]
    headers = ["period", "region", "expected", "P10", "P50", "P90"]
    if has_deals:
        headers.append("deals")
    by_region = tag(
        "div",
        tag("h3", "By period and region"),
        tag(
            "p",
            "Regions are simulated together, so a period's 'all' range is not the sum of the "
            "regional ranges.",
            class_="guide",
        ),
        table(headers, rows, numeric=range(2, len(headers))),
    )
    chart = _chart("Pipeline revenue forecast", GUIDES["pipeline"], svg, "pipeline")
    return _section(key, title, tag("div", chart, by_region, class_="grid2"))


# --- demand ----------------------------------------------------------------------------------


def _demand_section(data: ReportData, fmt: _Formats) -> Html:
    key, title = SECTIONS[4]
    content: list[object] = []
    forecast = data.table("demand_forecast")
    if forecast is None:
        content.append(_missing(data, "demand_forecast"))
    else:
        series = prepare.top_series(forecast, data.options.demand_series)
        svg = charts.demand_panels(
            forecast, data.actuals, series, data.as_of, data.timezone, "demand"
        )
        guide = GUIDES["demand"]
        content.append(
            _chart(
                f"Forecast vs actuals: the {series.height} largest customer × SKU series",
                guide,
                svg,
                "demand",
            )
        )
        if data.actuals is not None and data.actuals["after_as_of"].any():
            content.append(
                _note(
                    "Actual sales after as_of were read from the source for display only: this "
                    "as_of is in the past. The forecast did not see them."
                )
            )
        if "actuals" in data.notes:
            content.append(_note(data.notes["actuals"]))
    factors = data.table("demand_forecast_factors")
    if factors is None:
        content.append(tag("h3", "Global demand drivers"))
        content.append(_missing(data, "demand_forecast_factors"))
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
        content.append(_chart("Global demand drivers", GUIDES["drivers_global"], svg, "drivers"))
    content.append(_sku_health(data, fmt))
    if data.demand_gate:
        content.append(tag("h3", "Promotion gate"))
        content.append(table(["", "value"], [[k, v] for k, v in data.demand_gate.items()]))
    return _section(key, title, *content)


def _sku_health(data: ReportData, fmt: _Formats) -> Html:
    frame = data.table("sku_health")
    heading = tag("h3", "SKU health")
    if frame is None:
        return join([heading, _missing(data, "sku_health")])
    counts = prepare.health_counts(frame)
    shown = prepare.sku_health_order(frame).head(data.options.sku_health_rows)
    rows = [
        [
            r["customer_id"],
            r["sku"],
            _badge(r["health"]),
            _number(r["on_hand"], 0),
            fmt.when(r["projected_stockout_at"]),
            "; ".join(prepare.json_list(r["reasons"])),
        ]
        for r in shown.iter_rows(named=True)
    ]
    lead = (
        f"{counts['red']:,} red, {counts['yellow']:,} yellow, {counts['green']:,} green series. "
        f"Showing {shown.height:,} of {frame.height:,}: red first, then the soonest projected "
        "stock-out."
    )
    return join(
        [
            heading,
            tag("p", lead, class_="guide"),
            table(
                ["customer", "SKU", "health", "on hand", "projected stock-out", "reasons"],
                rows,
                numeric=(3,),
                nowrap=(0, 1, 4),
            ),
        ]
    )


# --- model quality ---------------------------------------------------------------------------

MODEL_LABELS = {"deal_win": "Deal-win", "demand": "Demand"}


def _model_quality_section(data: ReportData) -> Html:
    """Per model, kind and metric: the trend over origins (value vs baseline) and a sentence."""
    key, title = MODEL_QUALITY
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
        figures.append(_chart(heading, GUIDES["model_quality"], svg, chart_id, sentence))
    if not figures:
        return _section(key, title, _note("No charted metric in `model_quality` yet."))
    return _section(key, title, tag("div", *figures, class_="grid2"))


# --- data quality ----------------------------------------------------------------------------


def _quality_section(data: ReportData, fmt: _Formats) -> Html:
    key, title = SECTIONS[5]
    content: list[object] = [tag("h3", "Quarantined rows")]
    quarantine = data.tables.get("quarantine")
    if quarantine is None:
        content.append(_missing(data, "quarantine"))
    elif quarantine.height == 0:
        content.append(tag("p", "No row was quarantined for this as_of.", class_="lead"))
    else:
        summary = prepare.quarantine_summary(quarantine, data.options.quarantine_examples)
        content.append(
            tag(
                "p",
                f"{quarantine.height:,} input rows failed validation and were set aside "
                "(the runs went on with the rest).",
                class_="guide",
            )
        )
        content.append(
            table(
                ["table", "check", "rows", "example reason"],
                [
                    [r["table_name"], r["check"], f"{r['rows']:,}", r["example"]]
                    for r in summary.iter_rows(named=True)
                ],
                numeric=(2,),
            )
        )
    content.append(tag("h3", "Runs for this as_of"))
    runs = data.table("runs")
    if runs is None:
        content.append(_missing(data, "runs"))
    else:
        content.append(_runs_table(runs.sort("started_at"), fmt))
    return _section(key, title, *content)


def _runs_table(runs: pl.DataFrame, fmt: _Formats) -> Html:
    rows = []
    for r in runs.iter_rows(named=True):
        started, finished = r.get("started_at"), r.get("finished_at")
        duration = (
            f"{(finished - started).total_seconds():,.0f} s"
            if isinstance(started, datetime) and isinstance(finished, datetime)
            else ""
        )
        status = r.get("status")
        colour = {
            "succeeded": "green",
            "failed": "red",
            "abandoned": "red",
            "running": "yellow",
        }.get(str(status))
        rows.append(
            [
                r.get("flow"),
                tag("span", status, class_=f"badge {colour or 'other'}"),
                fmt.when(started),
                duration,
                r.get("model_version") or "",
                _row_counts(r.get("row_counts")),
                r.get("message") or "",
            ]
        )
    return table(
        ["flow", "status", "started", "took", "model", "rows written", "message"],
        rows,
        numeric=(3,),
        nowrap=(0, 2),
    )


def _row_counts(text: object) -> str:
    if not isinstance(text, str) or not text:
        return ""
    try:
        counts = json.loads(text)
    except ValueError:
        return text
    if not isinstance(counts, dict):
        return text
    return ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in counts.items())
