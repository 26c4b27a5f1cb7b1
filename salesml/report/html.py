"""The report's Jinja2 environment: templates in `salesml/report/templates`, escaping, filters.

Every value reaches the page through a template with autoescape on, so a deal id like
`<script>` is shown as text, never run. Only `trusted` marks markup as safe, and only for SVG
that our own chart code wrote (matplotlib escapes its text). `StrictUndefined` makes a name
the template uses but the view does not provide an error, not an empty string.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import cache
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from salesml.report import charts
from salesml.report.prepare import json_list

PAGE_TEMPLATE = "report.html.j2"


def trusted(markup: str) -> Markup:
    """Mark markup our own code produced (the SVG from `salesml.report.charts`) as safe."""
    return Markup(markup)


def pct(value: float | None) -> str:
    """A probability as a percentage; below 1% with one decimal, so 0.4% does not read 0%."""
    if value is None:
        return ""
    if value >= 0.01:
        return f"{100 * value:.0f}%"
    return f"{100 * value:.1f}%" if value >= 0.001 else "<0.1%"


def money(value: float | None) -> str:
    """An amount in the deals' unit, compact ('45.6k'); '' for None."""
    return "" if value is None else charts.compact(float(value))


def share(value: float | None) -> str:
    """A share of a whole as a whole percentage ('0%', '40%'); '' for None."""
    return "" if value is None else f"{100 * value:.0f}%"


def signed_money(value: float | None) -> str:
    """A change of an amount with its sign ('+45.6k', '-1.2M'); '' for None."""
    if value is None:
        return ""
    return ("+" if value >= 0 else "-") + charts.compact(abs(float(value)))


def number(value: float | None, decimals: int = 1) -> str:
    """A number with thousands separators; '' for None."""
    return "" if value is None else f"{value:,.{decimals}f}"


def points(value: float | None) -> str:
    """A probability difference in signed percentage points ('+6.0 pts'); '' for None."""
    return "" if value is None else f"{100 * value:+.1f} pts"


def when(value: datetime | None, timezone: str = "UTC") -> str:
    """An instant in the report's time zone ('2025-07-01 02:00 CEST'); '' for None."""
    if value is None:
        return ""
    local = value.astimezone(ZoneInfo(timezone))
    return local.strftime("%Y-%m-%d %H:%M ") + (local.tzname() or "")


def row_counts(text: str | None) -> str:
    """`runs.row_counts` (JSON {table: rows}) as 'deal_scores 40, ...'; other text as it is."""
    if not isinstance(text, str) or not text:
        return ""
    try:
        counts = json.loads(text)
    except ValueError:
        return text
    if not isinstance(counts, dict):
        return text
    return ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in counts.items())


def badge_colour(value: str | None) -> str:
    """The badge class of a health colour (anything else: 'other')."""
    return value if value in charts.HEALTH_COLOURS else "other"


def _blank_none(value: object) -> object:
    """None prints as nothing (Jinja would print 'None')."""
    return "" if value is None else value


@cache
def environment() -> Environment:
    """The Jinja2 environment (built once): package templates, autoescape, strict names."""
    env = Environment(
        loader=PackageLoader("salesml.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=_blank_none,
    )
    env.filters.update(
        pct=pct,
        money=money,
        signed_money=signed_money,
        share=share,
        number=number,
        points=points,
        when=when,
        json_list=json_list,
        row_counts=row_counts,
        badge_colour=badge_colour,
    )
    return env


def render_page(context: dict[str, object]) -> str:
    """The page template rendered with `context` (see `salesml.report.render`)."""
    return environment().get_template(PAGE_TEMPLATE).render(context)
