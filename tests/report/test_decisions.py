"""The decision sections (issue 13 item 6) and the Jinja2 page they live in (issue 12 item 3):
next-best actions, what changed (movers, pipeline waterfalls), rep and region views, alerts."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from jinja2 import UndefinedError

from salesml.config import Settings
from salesml.report import ReportOptions
from salesml.report.data import ReportData
from salesml.report.gather import gather
from salesml.report.render import DECISION_SECTIONS, PAGE_SECTIONS, render, visible_sections
from tests.report.synthetic import AS_OF, HOSTILE, LATER_AS_OF, make_world, report_data

NO_CHARTS = ReportOptions(at_risk_cards=0, demand_series=1)
DECISION_KEYS = [key for key, _ in DECISION_SECTIONS]


@pytest.fixture(scope="module")
def page(report_file: Path) -> str:
    return report_file.read_text(encoding="utf-8")


def _section(page: str, key: str) -> str:
    return page.split(f'<section id="{key}">', 1)[1].split("</section>", 1)[0]


def _cells(row: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]


def _rows(html: str) -> list[list[str]]:
    return [_cells(r) for r in re.findall(r"<tbody>.*?</tbody>", html, re.S)[0].split("</tr>")[:-1]]


def test_decision_sections_follow_the_deals_with_nav_links(page: str) -> None:
    sections = re.findall(r'<section id="([^"]+)"', page)
    assert sections[:5] == ["deals", *DECISION_KEYS]
    assert sections == [key for key, _ in PAGE_SECTIONS if key != "model_quality"]
    nav = re.findall(r"<nav>(.*?)</nav>", page)[0]
    assert re.findall(r'href="#([^"]+)"', nav) == sections


def test_actions_say_uplift_is_an_association_and_rank_deals_by_uplift(
    page: str, gathered: ReportData
) -> None:
    html = _section(page, "actions")
    assert "not a measured causal effect" in html
    actions = gathered.tables["deal_actions"]
    best = (
        actions.filter(pl.col("kind") == "action")
        .group_by("deal_id")
        .agg(pl.col("uplift").max())
        .sort("uplift", "deal_id", descending=[True, False])
    )
    rows = _rows(html)
    assert [r[0] for r in rows[:3]] == best["deal_id"].head(3).to_list()
    # the rule warnings sit with their deal, in the last column
    warned = set(actions.filter(pl.col("kind") == "warning")["deal_id"])
    assert {r[0] for r in rows if "single-threaded" in r[4]} == warned


def test_movers_are_the_largest_moves_with_their_drivers(page: str, gathered: ReportData) -> None:
    html = _section(page, "changes")
    changes = gathered.tables["deal_score_changes"]
    moved = changes.filter(pl.col("change_kind").is_in(["up", "down"]))
    expected = moved.sort(pl.col("delta").abs(), descending=True)["deal_id"].head(3).to_list()
    rows = _rows(html)
    assert [r[0] for r in rows[:3]] == expected
    top = moved.filter(pl.col("deal_id") == expected[0]).row(0, named=True)
    assert rows[0][3] == f"{100 * top['delta']:+.1f} pts"
    assert "→" in rows[0][4]
    kinds = changes["change_kind"].value_counts()
    up = int(kinds.filter(pl.col("change_kind") == "up")["count"][0])
    assert f"{up:,} up" in html and "closed won" in html


def test_pipeline_waterfall_per_month_and_quarter_adds_up(page: str, gathered: ReportData) -> None:
    html = _section(page, "changes")
    for kind, period in (("month", "2025-07"), ("quarter", "2025-Q3")):
        assert f'data-chart="waterfall-{kind}"' in html
        assert f"Expected revenue closing in {period}" in html
    steps = gathered.tables["pipeline_changes"].filter(pl.col("period_kind") == "month")
    ordered = steps.sort("step_order")["value"].to_numpy()
    # start + the six changes == end, and every middle bar floats on the running total
    assert ordered[0] + ordered[1:-1].sum() == pytest.approx(ordered[-1])
    from salesml.report.charts import waterfall_bottoms

    bottoms, running = waterfall_bottoms(ordered)
    assert bottoms[0] == bottoms[-1] == 0
    for i in range(1, len(ordered) - 1):
        assert bottoms[i] == pytest.approx(ordered[0] + ordered[1:i].sum())
    assert running[-1] == pytest.approx(ordered[-1])


def test_rep_and_region_views_order_by_what_needs_attention(
    page: str, gathered: ReportData
) -> None:
    html = _section(page, "views")
    tables = re.findall(r"<table>.*?</table>", html, re.S)
    regions, owners, reps, at_risk = (_rows(t) for t in tables)
    assert regions[0][0] == "all"
    overview = gathered.tables["health_overview"]
    total = overview.filter(pl.col("dimension") == "all").row(0, named=True)
    assert regions[0][1] == f"{total['open_deals']:,}"
    risk = overview.filter(pl.col("dimension") == "owner").sort("at_risk_value", descending=True)
    assert [r[0] for r in owners] == risk["member"].to_list()
    weakest = gathered.tables["rep_health"].sort("health_index")["owner_id"][0]
    assert reps[0][0] == weakest and "vs 40% for peers" in reps[0][7]
    ranked = gathered.tables["deals_at_risk"].sort("rank")["deal_id"].head(5).to_list()
    assert [r[1] for r in at_risk[:5]] == ranked


def test_alerts_are_those_open_or_resolved_at_as_of(
    gathered: ReportData, warehouse_settings: Settings, page: str
) -> None:
    alerts = gathered.tables["alerts"]
    # open-red was resolved only at LATER_AS_OF: at AS_OF it was open; later-new and
    # resolved-past are not of this as_of
    assert alerts["alert_key"].to_list() == ["open-red", "open-dwell", "open-stock", "resolved-now"]
    assert alerts["status_at"].to_list() == ["open", "open", "open", "resolved"]
    later = gather(warehouse_settings, LATER_AS_OF, NO_CHARTS).tables["alerts"]
    status = dict(zip(later["alert_key"], later["status_at"], strict=True))
    assert status == {
        "open-dwell": "open",
        "open-stock": "open",
        "later-new": "open",
        "open-red": "resolved",
    }
    rows = _rows(_section(page, "alerts"))
    assert [r[0] for r in rows] == ["open", "open", "open", "resolved"]
    assert [r[1] for r in rows] == ["high", "medium", "low", "medium"]
    assert rows[1][7] == "2025-07-01 00:07 UTC" and rows[0][7] == "—"


def test_decision_tables_without_rows_give_notes(gathered: ReportData) -> None:
    tables = dict(gathered.tables)
    for name in ("deal_actions", "deal_score_changes", "pipeline_changes", "rep_health"):
        tables[name] = tables[name].clear()
    tables["alerts"] = tables["alerts"].clear()
    notes = {"alerts": "No alert was open or resolved at as_of X."}
    data = ReportData(
        as_of=AS_OF, generated_at=AS_OF, tables=tables, notes=notes, options=NO_CHARTS
    )
    assert visible_sections(data)[:5] == ["deals", *DECISION_KEYS]
    page = render(data)
    assert "no data: run <code>salesml score deals</code>" in _section(page, "actions")
    changes = _section(page, "changes")
    assert changes.count("no data: run <code>salesml score deals</code>") == 2
    assert "waterfall" not in changes
    views = _section(page, "views")
    assert "By owner" in views and views.count('class="note"') == 1  # rep health only
    assert "No alert was open or resolved at as_of X." in _section(page, "alerts")


def test_hostile_text_in_actions_and_alerts_stays_text() -> None:
    world = make_world(n_open=6, n_closed=20, n_series=2, horizon=12, hostile=True)
    page = render(report_data(world, options=NO_CHARTS))  # type: ignore[arg-type]
    assert HOSTILE not in page
    for key in ("actions", "alerts"):
        assert "&lt;script&gt;alert(" in _section(page, key), key


def test_the_template_refuses_a_name_the_view_lacks() -> None:
    from salesml.report.html import environment

    env = environment()
    assert env.autoescape is True
    template = env.from_string("{{ s.missing }}")
    with pytest.raises(UndefinedError):
        template.render(s={})
    assert env.from_string("{{ x }}{{ y }}").render(x="<b>", y=None) == "&lt;b&gt;"


def test_waterfall_bottoms_with_one_or_two_values() -> None:
    from salesml.report.charts import waterfall_bottoms

    bottoms, running = waterfall_bottoms(np.array([5.0]))
    assert bottoms.tolist() == [0.0] and running.size == 0
    bottoms, running = waterfall_bottoms(np.array([5.0, 7.0]))
    assert bottoms.tolist() == [0.0, 0.0] and running.tolist() == [5.0]
