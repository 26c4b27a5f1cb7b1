"""The "Model quality over time" section: shown only when model_quality has rows, with a trend
chart and a plain sentence per model, kind and metric."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import polars as pl

from salesml import quality
from salesml.report import prepare
from salesml.report.data import ReportData
from salesml.report.render import render, visible_sections
from salesml.timeutil import DATETIME

AS_OF = datetime(2025, 7, 1, tzinfo=UTC)


def _history() -> pl.DataFrame:
    """Realised Brier checks of four weekly runs, one re-measured later (the later row wins),
    a demand backtest, and a metric the section does not chart."""
    origins = [AS_OF - timedelta(days=7 * k) for k in (5, 4, 3, 2)]
    rows = [
        ("r1", "deal_win", "realised", at, "deals", "brier", v, "base_rate", b)
        for at, v, b in zip(
            origins, (0.12, 0.11, 0.13, 0.116), (0.14, 0.135, 0.14, 0.133), strict=True
        )
    ]
    rows.append(("r0", "deal_win", "realised", origins[0], "deals", "brier", 0.5, "base_rate", 0.1))
    rows += [
        ("r2", "demand", "backtest", origins[1], "bottom", "wape", 0.9, "zero", 1.0),
        ("r2", "demand", "backtest", origins[2], "bottom", "wape", 0.95, "median_8w", 0.97),
        ("r2", "demand", "backtest", origins[2], "bottom", "coverage_sale", 0.6, "nominal", 0.8),
    ]
    frame = pl.DataFrame(
        rows,
        schema=[
            "run_id",
            "model",
            "kind",
            "origin",
            "level",
            "metric",
            "value",
            "baseline",
            "baseline_value",
        ],
        orient="row",
    ).with_columns(pl.col("origin").cast(DATETIME))
    as_of = pl.when(pl.col("run_id") == "r0").then(pl.lit(AS_OF - timedelta(days=20)))
    return frame.with_columns(as_of.otherwise(pl.lit(AS_OF)).cast(DATETIME).alias("as_of"))


def _data(history: pl.DataFrame | None) -> ReportData:
    return ReportData(as_of=AS_OF, generated_at=AS_OF, model_quality=history)


def test_section_only_with_rows() -> None:
    assert "model_quality" not in visible_sections(_data(None))
    empty = pl.DataFrame(schema={**quality.SCHEMA, "as_of": DATETIME})
    assert "model_quality" not in visible_sections(_data(empty))
    assert 'id="model_quality"' not in render(_data(None))
    page = render(_data(_history()))
    assert 'id="model_quality"' in page and 'href="#model_quality"' in page
    assert "Model quality over time" in page


def test_sentence_uses_the_latest_measurement_per_origin() -> None:
    points = prepare.quality_points(_history())
    assert set(points["metric"]) == {"brier", "wape"}  # coverage_sale is not charted
    brier = points.filter(pl.col("metric") == "brier")
    assert brier.height == 4 and 0.5 not in brier["value"].to_list()
    sentence = prepare.quality_sentence(brier, last=4)
    assert sentence == "realised Brier 0.119 vs base rate 0.137 over the last 4 checks"
    page = render(_data(_history()))
    assert sentence in page
    assert "backtest WAPE of P50 0.925 vs zero / 8-week median 0.985" in page
    assert page.count('data-chart="mq-') >= 2


def test_report_section_coexists_with_the_other_sections(gathered: ReportData) -> None:
    with_history = replace(gathered, model_quality=_history())
    shown = visible_sections(with_history)
    assert shown.index("model_quality") == shown.index("quality") - 1
    assert visible_sections(gathered) == [k for k in shown if k != "model_quality"]


def test_the_demand_gate_is_shown_with_its_numbers(gathered: ReportData) -> None:
    gate = {
        "model version": "v2",
        "decision": "candidate at least as good; beats median_8w: pinball_scaled 0.38 vs 0.48",
        "holdout_median_8w_pinball_scaled": "0.4793",
    }
    page = render(replace(gathered, demand_gate=gate))
    demand = page[page.index('<section id="demand">') : page.index('<section id="quality">')]
    assert "<h3>Promotion gate</h3>" in demand and "holdout_median_8w_pinball_scaled" in demand
    assert "<h3>Promotion gate</h3>" not in render(gathered)
