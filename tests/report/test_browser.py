"""The report in a real browser: headless Chromium, offline, every chart drawn.

Uses Debian's /usr/bin/chromium through playwright (never `playwright install`): every request
that is not the report file itself is aborted and recorded, so a CDN font, script or image
would fail the test. Set SALESML_SCREENSHOT_DIR to keep the full-page screenshot.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from salesml.report import ReportOptions
from salesml.report.render import DECISION_SECTIONS, render
from tests.report.synthetic import make_world, report_data

CHROMIUM = Path("/usr/bin/chromium")
DECISION_KEYS = tuple(key for key, _ in DECISION_SECTIONS)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


class OpenedPage:
    """A page opened offline, with what it logged and what it tried to fetch."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.errors: list[str] = []
        self.blocked: list[str] = []
        self.failed: list[str] = []
        self.dialogs: list[str] = []
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        page = self.page
        page.on(
            "console",
            lambda m: self.errors.append(f"{m.type}: {m.text}") if m.type == "error" else None,
        )
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("requestfailed", lambda r: self.failed.append(r.url))
        page.on("dialog", self._dialog)
        page.route("**/*", self._route)
        self.url = path.resolve().as_uri()
        page.goto(self.url, wait_until="load")

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def _route(self, route: Any) -> None:
        if route.request.url == self.url:
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()


def test_report_loads_offline_and_draws_every_chart(
    browser: Any, report_file: Path, tmp_path: Path
) -> None:
    opened = OpenedPage(browser, report_file)
    page = opened.page
    assert opened.errors == []
    assert opened.blocked == []  # nothing but the file itself was requested
    assert opened.failed == []
    assert page.title().startswith("salesml report")

    charts = page.locator("figure.chart")
    names = [charts.nth(i).get_attribute("data-chart") for i in range(charts.count())]
    assert {"behaviour", "histogram", "reliability", "pipeline", "demand", "drivers"} <= set(names)
    assert "deal0" in names
    for i, name in enumerate(names):
        figure = charts.nth(i)
        figure.scroll_into_view_if_needed()
        svg = figure.locator("svg")
        assert svg.count() == 1, name
        box = svg.bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 100, name
        drawn = svg.evaluate(
            "s => Array.from(s.querySelectorAll('path')).filter(p => {"
            " const b = p.getBBox(); return b.width > 0 || b.height > 0; }).length"
        )
        assert drawn > 3, name
        assert figure.locator("p.guide").count() == 1, name

    # markers and ticks are <use> references inside each SVG: every one must resolve and draw
    unresolved = page.evaluate(
        "() => Array.from(document.querySelectorAll('svg use')).filter(u => {"
        " const b = u.getBoundingClientRect(); return b.width === 0 && b.height === 0; }).length"
    )
    assert page.locator("svg use").count() > 0 and unresolved == 0

    keys = ("deals", *DECISION_KEYS, "behaviour", "calibration", "pipeline", "demand", "quality")
    for key in keys:
        assert page.locator(f"section#{key}").is_visible()
    assert {"waterfall-month", "waterfall-quarter"} <= set(names)
    _nav_links_lead_to_their_sections(page, keys)
    assert opened.errors == []

    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000
    keep = os.environ.get("SALESML_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(keep) / "salesml-report.png")
    page.close()


def _nav_links_lead_to_their_sections(page: Any, keys: tuple[str, ...]) -> None:
    """One link per section, in page order; after a click its section is on screen."""
    links = page.locator("nav a")
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    assert hrefs == [f"#{key}" for key in keys]
    for key in keys:
        page.evaluate("() => window.scrollTo(0, 0)")
        page.locator(f'nav a[href="#{key}"]').click()
        top, bottom, height = page.evaluate(
            f"() => {{ const r = document.getElementById('{key}').getBoundingClientRect();"
            " return [r.top, r.bottom, window.innerHeight]; }"
        )
        assert top < height and bottom > 0, key
        assert page.evaluate("() => location.hash") == f"#{key}"


def test_hostile_values_stay_text_in_the_browser(browser: Any, tmp_path: Path) -> None:
    world = make_world(n_open=6, n_closed=20, n_series=2, horizon=12, hostile=True)
    data = report_data(world, options=ReportOptions(at_risk_cards=2, demand_series=1))
    path = tmp_path / "hostile.html"
    path.write_text(render(data), encoding="utf-8")  # type: ignore[arg-type]
    opened = OpenedPage(browser, path)
    assert opened.dialogs == []
    assert opened.errors == []
    assert opened.page.locator("script").count() == 0
    assert '<script>alert("x")</script>' in opened.page.locator("body").inner_text()
    opened.page.close()


def test_model_quality_charts_draw_in_the_browser(browser: Any, tmp_path: Path) -> None:
    from tests.report.test_model_quality import _history

    world = make_world(n_open=6, n_closed=20, n_series=2, horizon=12)
    data = report_data(world, model_quality=_history())
    path = tmp_path / "quality.html"
    path.write_text(render(data), encoding="utf-8")  # type: ignore[arg-type]
    opened = OpenedPage(browser, path)
    assert opened.errors == [] and opened.blocked == []
    section = opened.page.locator("section#model_quality")
    section.scroll_into_view_if_needed()
    assert section.is_visible()
    figures = section.locator("figure.chart")
    assert figures.count() == 2  # realised Brier, backtest WAPE
    for i in range(figures.count()):
        box = figures.nth(i).locator("svg").bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 100
        assert "over the last" in figures.nth(i).locator("p.small").inner_text()
    opened.page.close()
