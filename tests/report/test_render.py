"""render(ReportData) -> one self-contained HTML page: sections, charts, escaping, notes."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from salesml.report.data import ReportData, ReportOptions
from salesml.report.render import SECTIONS, render
from tests.report.synthetic import AS_OF, HOSTILE, make_world, report_data

EXPECTED_CHARTS = {
    "behaviour",
    "histogram",
    "reliability",
    "pipeline",
    "demand",
    "drivers",
    "waterfall-month",
    "waterfall-quarter",
}
NETWORK_REFERENCE = re.compile(
    r"""(?:\b(?:src|href|action|poster|srcset|xlink:href)\s*=\s*["']?\s*(?:https?:)?//)"""
    r"""|url\(\s*["']?\s*(?:https?:)?//|@import""",
    re.IGNORECASE,
)


@pytest.fixture(scope="module")
def data(gathered: ReportData) -> ReportData:
    """What gather read from the synthetic warehouse (see conftest)."""
    return gathered


@pytest.fixture(scope="module")
def page(report_file: Path) -> str:
    """The page `build` wrote from the same warehouse."""
    return report_file.read_text(encoding="utf-8")


def _figures(page: str) -> dict[str, str]:
    """data-chart name -> the figure's markup."""
    found = re.findall(r'<figure class="chart" data-chart="([^"]+)">(.*?)</figure>', page, re.S)
    return dict(found)


def test_every_section_and_chart_is_present(page: str, data: ReportData) -> None:
    assert page.startswith("<!DOCTYPE html>")
    for key, title in SECTIONS:
        assert f'<section id="{key}"><h2>{title}</h2>' in page
        assert f'href="#{key}"' in page
    figures = _figures(page)
    deals = {f"deal{i}" for i in range(data.options.at_risk_cards)}
    assert set(figures) == EXPECTED_CHARTS | deals
    for name, markup in figures.items():
        # a title, then a one-line reading guide, then the drawing
        assert re.match(r'\s*<h3>[^<]+</h3><p class="guide">[^<]+</p>', markup), name
        assert "<svg" in markup and "<path" in markup, name
    assert "no data: run" not in page


def test_the_most_at_risk_deals_get_cards_in_order(page: str, data: ReportData) -> None:
    scores = data.tables["deal_scores"]
    worst = scores.sort("win_probability").filter(pl.col("health") == "red")["deal_id"][0]
    first_card = re.search(r'<div class="deal"><div><div class="id">([^ <]+)', page)
    assert first_card is not None and first_card.group(1) == worst


def test_no_resource_is_loaded_from_the_network(page: str) -> None:
    assert NETWORK_REFERENCE.search(page) is None
    # not even an SVG namespace URL is left (inline SVG takes its namespace from the parser)
    assert "http:" not in page and "https:" not in page
    assert "<script" not in page and "<link" not in page and "<iframe" not in page
    # the only images are inline SVG (and a data: PNG when the holdout plot is used)
    assert re.search(r"<img(?![^>]*src=\"data:)", page) is None


def test_network_reference_pattern_catches_what_it_must() -> None:
    for bad in (
        '<img src="https://cdn.example.com/x.png">',
        "<link href='//fonts.example.com/css'>",
        "<div style=\"background:url('http://x/y.png')\">",
        "<style>@import 'x.css';</style>",
        '<use xlink:href="http://x/sprite.svg#a"/>',
    ):
        assert NETWORK_REFERENCE.search(bad), bad
    assert NETWORK_REFERENCE.search('<a href="#deals">see https://example.com</a>') is None


def test_ids_are_unique_across_inline_svgs(page: str) -> None:
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    for ref in set(re.findall(r'href="#([^"]+)"', page)) | set(
        re.findall(r"url\(#([^)]+)\)", page)
    ):
        assert f'id="{ref}"' in page, ref


def test_report_stays_small(page: str) -> None:
    assert len(page.encode()) < 1_000_000


def test_user_data_is_escaped() -> None:
    hostile = report_data(
        make_world(n_open=6, n_closed=20, n_series=2, horizon=12, hostile=True),
        options=ReportOptions(at_risk_cards=2, demand_series=1),
    )
    page = render(hostile)  # type: ignore[arg-type]
    assert "<script" not in page
    assert "alert(&quot;x&quot;)" in page or "alert(&#34;x&#34;)" in page
    # inside SVG text as well as in HTML: the raw markup never appears
    assert HOSTILE not in page
    assert "&lt;script&gt;" in page


def test_missing_tables_give_notes_not_errors() -> None:
    empty = ReportData(as_of=AS_OF, generated_at=AS_OF)
    page = render(empty)
    assert "no data: run <code>salesml score deals</code>" in page
    assert "no data: run <code>salesml forecast demand</code>" in page
    assert "no data: run <code>salesml train deal-win</code>" in page
    assert "no data: run <code>salesml validate</code>" in page
    assert "<svg" not in page


def test_notes_from_gather_are_shown(data: ReportData) -> None:
    tables = {k: v for k, v in data.tables.items() if k != "demand_forecast_factors"}
    partial = ReportData(
        as_of=AS_OF,
        generated_at=AS_OF,
        tables=tables,
        notes={
            "demand_forecast_factors": "no data for as_of X: run `salesml forecast demand`",
            "actuals": "actual sales not shown: sales could not be read: boom",
        },
        actuals=None,
        calibration=None,
        options=ReportOptions(at_risk_cards=1, demand_series=2),
    )
    page = render(partial)
    assert "no data for as_of X: run <code>salesml forecast demand</code>" in page
    assert "actual sales not shown: sales could not be read: boom" in page
    assert "no calibration yet" in page
    figures = _figures(page)
    assert "drivers" not in figures and "reliability" not in figures
    assert {"demand", "histogram", "behaviour"} <= set(figures)


def test_holdout_plot_is_used_when_no_past_score_has_closed(data: ReportData) -> None:
    png = b"\x89PNG\r\n\x1a\nfake"
    fallback = ReportData(
        as_of=AS_OF,
        generated_at=AS_OF,
        tables={"deal_scores": data.tables["deal_scores"]},
        calibration=data.calibration.clear() if data.calibration is not None else None,  # type: ignore[union-attr]
        holdout_calibration_png=png,
        holdout_calibration_label="salesml-deal-win v3",
        options=ReportOptions(at_risk_cards=0),
    )
    page = render(fallback)
    assert 'src="data:image/png;base64,iVBORw0KGgpmYWtl"' in page
    assert "salesml-deal-win v3" in page


def test_empty_table_for_this_as_of_reads_as_missing(data: ReportData) -> None:
    tables = dict(data.tables)
    tables["deal_scores"] = data.tables["deal_scores"].clear()
    page = render(
        ReportData(
            as_of=AS_OF + timedelta(days=1),
            generated_at=AS_OF,
            tables=tables,
            notes={"deal_scores": "no data for as_of 2025-07-02: run `salesml score deals`"},
            options=ReportOptions(demand_series=1),
        )
    )
    assert "no data for as_of 2025-07-02: run <code>salesml score deals</code>" in page
    assert 'data-chart="deal0"' not in page


@pytest.mark.parametrize(
    ("probability", "shown"), [(0.42, "42%"), (0.004, "0.4%"), (0.0002, "<0.1%"), (None, "")]
)
def test_small_probabilities_do_not_read_zero(probability: float | None, shown: str) -> None:
    from salesml.report.html import pct

    assert pct(probability) == shown


def test_degenerate_inputs_render_without_warnings() -> None:
    """One deal with zero contributions, an all-null behaviour map, one forecast bucket."""
    import warnings

    from salesml.timeutil import DATETIME

    one = {"customer_id": ["S1"], "sku": ["A"], "bucket_start": [AS_OF]}
    tables = {
        "deal_scores": pl.DataFrame(
            {"deal_id": ["d1"], "win_probability": [0.5], "health": ["yellow"]}
        ),
        "deal_score_factors": pl.DataFrame(
            {"deal_id": ["d1"], "rank": [1], "feature": ["x"], "feature_value": ["1"]}
        ).with_columns(contribution=pl.lit(0.0)),
        "behavior_value": pl.DataFrame(
            {"activity_type": ["call"], "contact_role": ["cto"], "occurrences": [3]}
        ).with_columns(mean_contribution=pl.lit(None, pl.Float64)),
        "pipeline_forecast": pl.DataFrame(
            {
                "period": ["2025-07"],
                "dimension": ["all"],
                "member": ["all"],
                "expected_revenue": [0.0],
            }
        ).with_columns(
            p10=pl.lit(None, pl.Float64), p50=pl.lit(None, pl.Float64), p90=pl.lit(None, pl.Float64)
        ),
        "demand_forecast": pl.DataFrame(
            {**one, "horizon": [1], "p10": [0.0], "p50": [0.0], "p90": [0.0]},
            schema_overrides={"bucket_start": DATETIME},
        ),
        "demand_forecast_factors": pl.DataFrame(
            {**one, "rank": [1], "feature": ["lag"], "contribution": [0.0]},
            schema_overrides={"bucket_start": DATETIME},
        ),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        page = render(ReportData(as_of=AS_OF, generated_at=AS_OF, tables=tables))
    assert {"deal0", "behaviour", "pipeline", "demand", "drivers"} <= set(_figures(page))


# --- only sections with data; the base rate instead of drivers (issue 9) -----------------------


def _only(data: ReportData, keep: set[str]) -> ReportData:
    """`data` as a warehouse holding only the tables `keep` (plus quarantine and runs)."""
    tables = {k: v for k, v in data.tables.items() if k in keep | {"quarantine", "runs"}}
    return ReportData(
        as_of=data.as_of, generated_at=data.generated_at, tables=tables, options=data.options
    )


def _section_ids(page: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)"', page)


def test_demand_only_report_has_no_deal_sections(data: ReportData) -> None:
    page = render(_only(data, {"demand_forecast", "demand_forecast_factors", "sku_health"}))
    assert _section_ids(page) == ["demand", "quality"]
    assert 'href="#deals"' not in page and "salesml score deals" not in page
    assert "open deals scored" not in page


def test_crm_only_report_has_no_demand_section(data: ReportData) -> None:
    page = render(_only(data, {"deal_scores", "deal_score_factors", "pipeline_forecast"}))
    assert _section_ids(page) == ["deals", "calibration", "pipeline", "quality"]
    assert 'href="#demand"' not in page and "salesml forecast demand" not in page


def test_a_fresh_warehouse_shows_every_section_with_its_command(data: ReportData) -> None:
    page = render(_only(data, set()))
    assert _section_ids(page) == [key for key, _ in SECTIONS]
    assert "salesml score deals" in page and "salesml forecast demand" in page


def test_base_rate_scores_say_no_signal_instead_of_drivers(data: ReportData) -> None:
    scores = data.tables["deal_scores"]
    rate = 0.37
    tables = dict(data.tables)
    tables["deal_scores"] = scores.with_columns(
        pl.lit(rate).alias("win_probability"), pl.lit("base_rate").alias("score_basis")
    )
    gate = {"promoted": "false", "brier_skill": "-0.0040", "brier_skill_low": "-0.0110"}
    page = render(
        ReportData(
            as_of=data.as_of,
            generated_at=data.generated_at,
            tables=tables,
            deal_gate=gate,
            options=data.options,
        )
    )
    deals = page.split('<section id="deals">', 1)[1].split("</section>", 1)[0]
    assert "No reliable signal in these inputs: probabilities are the base rate" in deals
    assert "(37% for every open deal" in deals
    assert "-0.0110" in deals and "brier_skill_low" in deals
    assert 'data-chart="deal0"' not in deals  # no SHAP bars
    assert f"base_rate {scores.height:,}" in deals


def test_model_scores_keep_their_drivers_when_score_basis_is_there(data: ReportData) -> None:
    tables = dict(data.tables)
    tables["deal_scores"] = data.tables["deal_scores"].with_columns(
        pl.lit("model").alias("score_basis")
    )
    page = render(
        ReportData(
            as_of=data.as_of, generated_at=data.generated_at, tables=tables, options=data.options
        )
    )
    assert "No reliable signal" not in page
    assert 'data-chart="deal0"' in page
