"""Report charts: matplotlib figures written as small, self-contained inline SVG.

Each function takes prepared polars frames and returns SVG markup (no file, no network):
text stays text (`svg.fonttype: none`, much smaller than glyph outlines), ids are prefixed per
chart so several SVGs can live in one HTML document, and the XML prolog, DOCTYPE, metadata and
namespace declarations are dropped. Figures are `matplotlib.figure.Figure` objects (no pyplot state, no GUI backend).
Labels from user data are escaped for mathtext (`$`), and matplotlib escapes them for XML.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from salesml.timeutil import DATETIME

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import LinearSegmentedColormap
    from matplotlib.figure import Figure
    from matplotlib.typing import RcKeyType

HEALTH_COLOURS = {"red": "#c0392b", "yellow": "#e0a800", "green": "#2e8b57"}
UP = "#2e8b57"
DOWN = "#c0392b"
FORECAST = "#1f5fbf"
HISTORY = "#243b53"
ACTUAL_AFTER = "#9aa5b1"
NEUTRAL = "#7b8794"
LABEL_CHARS = 50

RC: dict[RcKeyType, Any] = {
    "svg.fonttype": "none",
    "svg.hashsalt": "salesml-report",
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica", "sans-serif"],
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#9aa5b1",
    "axes.labelcolor": "#334e68",
    "xtick.color": "#52606d",
    "ytick.color": "#52606d",
    "legend.frameon": False,
    "legend.fontsize": 8.5,
    "path.simplify": True,
}


def plain(text: object, limit: int = LABEL_CHARS) -> str:
    """User text safe for a matplotlib label: `$` escaped (no mathtext), long text shortened."""
    value = "" if text is None else str(text)
    if len(value) > limit:
        value = value[: limit - 1] + "…"
    return value.replace("$", r"\$")


def _figure(
    width: float, height: float, margins: tuple[float, float, float, float] | None = None
) -> Figure:
    """A figure in inches. margins=(left, right, top, bottom) in inches fixes the axes area;
    None uses constrained layout (about twice the drawing time, so the charts drawn many times
    per report use fixed margins).
    """
    from matplotlib.figure import Figure

    if margins is None:
        return Figure(figsize=(width, height), layout="constrained")
    fig = Figure(figsize=(width, height))
    left, right, top, bottom = margins
    fig.subplots_adjust(
        left=left / width, right=1 - right / width, top=1 - top / height, bottom=bottom / height
    )
    return fig


_PROLOG = re.compile(r"^.*?(?=<svg)", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_SIZE = re.compile(r'<svg([^>]*?) width="([\d.]+)pt" height="([\d.]+)pt"')
_NAMESPACES = re.compile(r'\s+xmlns(?::xlink)?="[^"]*"')


def to_svg(fig: Figure, chart_id: str) -> str:
    """The figure as inline SVG markup with ids prefixed by `chart_id` (unique per page)."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context(RC):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    svg = _METADATA.sub("", _PROLOG.sub("", buffer.getvalue(), count=1), count=1)
    # inline SVG in HTML gets its namespaces from the HTML parser (xlink:href included), so the
    # declarations go too: the page then holds no http:// string a reviewer must check
    svg = _NAMESPACES.sub("", svg[: svg.index(">") + 1], count=2) + svg[svg.index(">") + 1 :]
    svg = (
        svg.replace(' id="', f' id="{chart_id}-')
        .replace('href="#', f'href="#{chart_id}-')
        .replace("url(#", f"url(#{chart_id}-")
    )

    def size(match: re.Match[str]) -> str:
        width_px = float(match.group(2)) * 4 / 3
        return (
            f'<svg{match.group(1)} width="100%" data-chart="{chart_id}" '
            f'style="max-width:{width_px:.0f}px"'
        )

    return _SIZE.sub(size, svg, count=1).strip()


def _render(build: Callable[[], Figure], chart_id: str) -> str:
    """Build a figure inside the report's rc context and return its SVG."""
    import matplotlib

    with matplotlib.rc_context(RC):
        fig = build()
        return to_svg(fig, chart_id)


# --- deals -----------------------------------------------------------------------------------


def driver_bars(factors: pl.DataFrame, chart_id: str, span: float | None = None) -> str:
    """One deal's SHAP drivers as signed horizontal bars, largest |contribution| on top.

    `factors`: label, feature_value, contribution (log-odds of the raw score). `span`: the
    largest |contribution| on the axis (give the same to every deal so bars compare).
    """
    rows = factors.sort(pl.col("contribution").abs(), descending=True)
    labels = [
        plain(f"{label} = {value}")
        for label, value in zip(rows["label"], rows["feature_value"], strict=True)
    ]
    values = rows["contribution"].to_numpy()

    def build() -> Figure:
        from matplotlib.ticker import MaxNLocator

        height = 0.36 * max(len(values), 2) + 0.6
        fig = _figure(6.6, height, margins=(3.0, 0.15, 0.1, 0.45))
        ax = fig.add_subplot()
        y = np.arange(len(values))[::-1]
        colours = [UP if v >= 0 else DOWN for v in values]
        ax.barh(y, values, color=colours, height=0.62)
        ax.set_yticks(y, labels)
        ax.axvline(0, color="#52606d", linewidth=0.8)
        limit = span or (float(np.max(np.abs(values))) if len(values) else 0.0)
        limit = limit if limit > 0 else 1.0  # all zero: any symmetric axis will do
        ax.set_xlim(-1.3 * limit, 1.3 * limit)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, symmetric=True))
        for yi, v in zip(y, values, strict=True):
            ax.annotate(
                f"{v:+.2f}" if abs(v) >= 0.005 else f"{v:+.3f}",
                (v, yi),
                xytext=(4 if v >= 0 else -4, 0),
                textcoords="offset points",
                ha="left" if v >= 0 else "right",
                va="center",
                fontsize=8.5,
                color="#243b53",
            )
        ax.set_xlabel("contribution to the win score (log-odds)")
        ax.spines["left"].set_visible(False)
        ax.tick_params(axis="y", length=0)
        return fig

    return _render(build, chart_id)


def score_histogram(scores: pl.DataFrame, chart_id: str) -> str:
    """Stacked histogram of win_probability, one colour per health rating."""
    bins = np.linspace(0.0, 1.0, 21)
    present = [c for c in HEALTH_COLOURS if scores.filter(pl.col("health") == c).height]
    data = [scores.filter(pl.col("health") == c)["win_probability"].to_numpy() for c in present]

    def build() -> Figure:
        fig = _figure(5.6, 3.4)
        ax = fig.add_subplot()
        counts = [len(d) for d in data]
        ax.hist(
            data,
            bins=bins.tolist(),
            stacked=True,
            color=[HEALTH_COLOURS[c] for c in present],
            label=[f"{c} ({n})" for c, n in zip(present, counts, strict=True)],
            edgecolor="white",
            linewidth=0.6,
        )
        ax.set_xlim(0, 1)
        ax.set_xlabel("win probability")
        ax.set_ylabel("open deals")
        ax.legend(title="health", loc="upper right")
        return fig

    return _render(build, chart_id)


def reliability_curve(table: pl.DataFrame, chart_id: str) -> str:
    """Observed win rate against mean predicted probability per bin; dot area ~ predictions."""

    def build() -> Figure:
        fig = _figure(5.0, 3.8)
        ax = fig.add_subplot()
        ax.plot([0, 1], [0, 1], linestyle="--", color=NEUTRAL, linewidth=1, label="perfect")
        n = table["n"].to_numpy().astype(float)
        sizes = 20 + 180 * n / max(float(n.max()), 1.0)
        ax.plot(
            table["mean_probability"].to_numpy(),
            table["win_rate"].to_numpy(),
            color=FORECAST,
            linewidth=1.5,
            label="model",
        )
        ax.scatter(
            table["mean_probability"].to_numpy(),
            table["win_rate"].to_numpy(),
            s=sizes,
            color=FORECAST,
            alpha=0.75,
            zorder=3,
            clip_on=False,
        )
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.04)
        ax.set_xlabel("predicted win probability (bin mean)")
        ax.set_ylabel("observed win rate")
        ax.legend(loc="upper left")
        return fig

    return _render(build, chart_id)


def behavior_heatmap(frame: pl.DataFrame, chart_id: str) -> str:
    """activity_type x contact_role grid of mean_contribution (probability points per activity).

    Cell text: the value in percentage points and the number of activities; grey = no value.
    """
    from matplotlib.colors import CenteredNorm

    types, roles, grid, occurrences = _behavior_grid(frame)

    def build() -> Figure:
        fig = _figure(1.1 * len(roles) + 2.6, 0.55 * len(types) + 1.3)
        ax = fig.add_subplot()
        masked = np.ma.masked_invalid(grid)
        cmap = _diverging_cmap()
        mesh = ax.pcolormesh(masked, cmap=cmap, norm=CenteredNorm(0.0), edgecolors="white")
        ax.set_facecolor("#e4e7eb")
        ax.set_xticks(np.arange(len(roles)) + 0.5, [plain(r, 18) for r in roles])
        ax.set_yticks(np.arange(len(types)) + 0.5, [plain(t, 24) for t in types])
        ax.invert_yaxis()
        ax.xaxis.tick_top()
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        _label_cells(ax, grid, occurrences)
        bar = fig.colorbar(mesh, ax=ax, shrink=0.8, pad=0.02)
        bar.set_label("win probability change per activity (points)")
        bar.outline.set_visible(False)
        return fig

    return _render(build, chart_id)


def _behavior_grid(
    frame: pl.DataFrame,
) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """(activity types, contact roles, points grid, occurrences grid) for the heatmap.

    Types by their best mean_contribution, roles by occurrences with "unknown" last; a cell
    without a value is NaN (percentage points: 100 x the probability change).
    """
    by_type = (
        frame.group_by("activity_type")
        .agg(pl.col("mean_contribution").max())
        .sort("mean_contribution", "activity_type", descending=[True, False], nulls_last=True)
    )
    types = by_type["activity_type"].to_list()
    by_role = frame.group_by("contact_role").agg(pl.col("occurrences").sum())
    by_role = by_role.sort(
        pl.col("contact_role") == "unknown", "occurrences", descending=[False, True]
    )
    roles = by_role["contact_role"].to_list()
    grid = np.full((len(types), len(roles)), np.nan)
    occurrences = np.zeros((len(types), len(roles)), dtype=np.int64)
    t_index = {t: i for i, t in enumerate(types)}
    r_index = {r: j for j, r in enumerate(roles)}
    for activity, role, n, value in frame.select(
        "activity_type", "contact_role", "occurrences", "mean_contribution"
    ).iter_rows():
        i, j = t_index[activity], r_index[role]
        occurrences[i, j] = int(n or 0)
        if value is not None:
            grid[i, j] = 100.0 * float(value)
    return types, roles, grid, occurrences


def _label_cells(ax: Axes, grid: np.ndarray, occurrences: np.ndarray) -> None:
    """Each cell's value (points, "n/a" if none) and its count; white text on strong colours."""
    limit = float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            value = grid[i, j]
            strong = np.isfinite(value) and abs(value) > 0.6 * limit
            text = "n/a" if not np.isfinite(value) else f"{value:+.1f}"
            ax.text(
                j + 0.5,
                i + 0.42,
                text,
                ha="center",
                va="center",
                fontsize=8.5,
                fontweight="bold",
                color="white" if strong else "#1f2933",
            )
            ax.text(
                j + 0.5,
                i + 0.75,
                f"n={occurrences[i, j]:,}",
                ha="center",
                va="center",
                fontsize=6.5,
                color="white" if strong else "#52606d",
            )


def _diverging_cmap() -> LinearSegmentedColormap:
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list("salesml_diverging", [DOWN, "#f7f7f7", UP], N=256)


def pipeline_chart(frame: pl.DataFrame, chart_id: str) -> str:
    """Expected revenue per period (region 'all') with the P10-P90 range and the P50 mark."""
    periods = frame["period"].to_list()
    expected = frame["expected_revenue"].to_numpy()
    p10 = frame["p10"].fill_null(strategy="zero").to_numpy()
    p50 = frame["p50"].to_numpy()
    p90 = frame["p90"].fill_null(strategy="zero").to_numpy()
    has_range = frame["p10"].null_count() == 0 and frame["p90"].null_count() == 0

    def build() -> Figure:
        from matplotlib.ticker import FuncFormatter

        fig = _figure(max(4.8, 0.9 * len(periods) + 2.2), 3.4)
        ax = fig.add_subplot()
        x = np.arange(len(periods))
        ax.bar(x, expected, color="#9fb3c8", width=0.6, label="expected revenue")
        if has_range:
            ax.vlines(x, p10, p90, color=HISTORY, linewidth=2, label="P10–P90 range")
            ax.scatter(
                x, p50, marker="_", s=260, color=HISTORY, linewidths=2, label="P50", zorder=3
            )
        ax.set_xticks(x, [plain(p, 12) for p in periods])
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: compact(v)))
        ax.set_ylabel("won revenue")
        top = float(max(np.max(p90, initial=0.0), np.max(expected, initial=0.0)))
        ax.set_ylim(0, 1.3 * top if top > 0 else 1.0)
        ax.legend(loc="upper left", ncols=3)
        return fig

    return _render(build, chart_id)


def waterfall_bottoms(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bottoms, running) of a waterfall whose first and last values are totals: the totals
    stand on 0, step i floats on start + the steps before it; `running` is the level after
    each bar but the last (where the connector lines are drawn).
    """
    n = len(values)
    running = np.cumsum(values[:-1]) if n > 1 else np.zeros(0)
    bottoms = np.zeros(n)
    bottoms[1:-1] = running[:-1]
    return bottoms, running


def waterfall_chart(steps: pl.DataFrame, chart_id: str) -> str:
    """Expected revenue from the previous run to this one: the first and last bars are the
    totals (from 0), each middle bar floats from the running total (green adds, red takes
    away). `steps`: label, value in display order (start, the changes, end).
    """
    labels = [plain(label, 16) for label in steps["label"].to_list()]
    values = steps["value"].cast(pl.Float64).fill_null(0.0).to_numpy()
    n = len(values)
    bottoms, running = waterfall_bottoms(values)
    colours = [
        "#9fb3c8" if i in (0, n - 1) else UP if v >= 0 else DOWN for i, v in enumerate(values)
    ]

    def build() -> Figure:
        from matplotlib.ticker import FuncFormatter

        fig = _figure(6.4, 3.4)
        ax = fig.add_subplot()
        x = np.arange(n)
        ax.bar(x, values, bottom=bottoms, color=colours, width=0.62)
        ax.hlines(running, x[:-1] + 0.31, x[:-1] + 0.69, color=NEUTRAL, linewidth=0.8)
        for xi, v, b in zip(x, values, bottoms, strict=True):
            middle = 0 < xi < n - 1
            text = ("+" if v >= 0 else "-") + compact(abs(v)) if middle else compact(v)
            ax.annotate(
                text,
                (xi, b + max(v, 0.0)),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                fontsize=8,
                color="#243b53",
            )
        ax.set_xticks(x, labels, rotation=20, ha="right")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: compact(v)))
        ax.set_ylabel("expected revenue")
        ax.axhline(0, color="#52606d", linewidth=0.8)
        top = float(np.max(np.concatenate([bottoms + np.maximum(values, 0), [0.0]])))
        low = float(np.min(np.concatenate([bottoms + np.minimum(values, 0), [0.0]])))
        ax.set_ylim(low * 1.15, top * 1.18 if top > 0 else 1.0)
        return fig

    return _render(build, chart_id)


# --- demand ----------------------------------------------------------------------------------


def demand_panels(
    forecast: pl.DataFrame,
    actuals: pl.DataFrame | None,
    series: pl.DataFrame,
    as_of: datetime,
    timezone: str,
    chart_id: str,
) -> str:
    """Small multiples, one per series: history, forecast P50 with its P10-P90 band, actuals.

    Steps are drawn 'post' (a bucket's value holds until the next bucket starts).
    """
    keys = list(series.select("customer_id", "sku").iter_rows())
    cols = 2 if len(keys) > 1 else 1
    rows = (len(keys) + cols - 1) // cols

    def build() -> Figure:
        width = 11.0 if cols == 2 else 6.4
        fig = _figure(width, 2.3 * rows + 0.6, margins=(0.6, 0.15, 0.3, 0.75))
        fig.subplots_adjust(hspace=0.45, wspace=0.18)
        axes = fig.subplots(rows, cols, squeeze=False, sharex=True)
        for n, (customer, sku) in enumerate(keys):
            ax: Axes = axes[n // cols][n % cols]
            same = (pl.col("customer_id") == customer) & (pl.col("sku") == sku)
            fc = forecast.filter(same).sort("bucket_start")
            ac = actuals.filter(same) if actuals is not None else None
            _series_panel(ax, fc, ac, as_of, timezone)
            ax.set_title(f"{plain(customer, 24)} · {plain(sku, 24)}", loc="left")
        for n in range(len(keys), rows * cols):
            axes[n // cols][n % cols].set_visible(False)
        _shared_legend(fig, axes.flat)
        return fig

    return _render(build, chart_id)


def _local_date_numbers(column: pl.Series, timezone: str) -> np.ndarray:
    """UTC datetimes -> matplotlib date numbers of the local wall time."""
    import matplotlib.dates as mdates

    local = column.dt.convert_time_zone(timezone).dt.replace_time_zone(None)
    return np.asarray(mdates.date2num(local.to_numpy()))


def _series_panel(
    ax: Axes, fc: pl.DataFrame, ac: pl.DataFrame | None, as_of: datetime, timezone: str
) -> None:
    """One series: actuals before / after as_of, the forecast band and P50, the as_of line."""
    import matplotlib.dates as mdates

    start = _local_date_numbers(fc["bucket_start"], timezone)
    if ac is not None:
        before = ac.filter(~pl.col("after_as_of"))
        after = ac.filter(pl.col("after_as_of"))
        ax.step(
            _local_date_numbers(before["bucket_start"], timezone),
            before["quantity"].to_numpy(),
            where="post",
            color=HISTORY,
            linewidth=1.1,
            label="actual before as_of",
        )
        if after.height:
            ax.step(
                _local_date_numbers(after["bucket_start"], timezone),
                after["quantity"].to_numpy(),
                where="post",
                color=ACTUAL_AFTER,
                linewidth=1.1,
                linestyle=(0, (2, 1.5)),
                label="actual after as_of (display only)",
            )
    ax.fill_between(
        start,
        fc["p10"].to_numpy(),
        fc["p90"].to_numpy(),
        step="post",
        color=FORECAST,
        alpha=0.18,
        linewidth=0,
        label="forecast P10–P90",
    )
    ax.step(
        start,
        fc["p50"].to_numpy(),
        where="post",
        color=FORECAST,
        linewidth=1.4,
        label="forecast P50",
    )
    origin = _local_date_numbers(pl.Series([as_of], dtype=DATETIME), timezone)[0]
    ax.axvline(float(origin), color="#52606d", linewidth=0.9, linestyle="--")
    ax.set_ylim(bottom=0)
    locator = mdates.AutoDateLocator(minticks=4, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_ylabel("units / bucket")


def _shared_legend(fig: Figure, axes: Iterable[Axes]) -> None:
    """One legend under the panels: each label once, from the first panel that draws it."""
    legend: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncols=len(legend))


def importance_bars(
    labels: Sequence[str],
    values: Sequence[float],
    shares: Sequence[float],
    chart_id: str,
    xlabel: str,
    top_k: int = 5,
) -> str:
    """Horizontal bars of a non-negative importance, largest on top, share annotated."""

    def build() -> Figure:
        fig = _figure(6.6, 0.3 * max(len(labels), 3) + 0.8)
        ax = fig.add_subplot()
        y = np.arange(len(labels))[::-1]
        ax.barh(y, values, color=FORECAST, height=0.65)
        ax.set_yticks(y, [plain(label, 40) for label in labels])
        for yi, v, share in zip(y, values, shares, strict=True):
            ax.annotate(
                f"{v:.3f}  (in top {top_k} for {share:.0%})",
                (v, yi),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=8,
                color="#243b53",
            )
        largest = max(values, default=0.0)
        ax.set_xlim(0, 1.45 * largest if largest > 0 else 1.0)
        ax.set_xlabel(xlabel)
        ax.spines["left"].set_visible(False)
        ax.tick_params(axis="y", length=0)
        return fig

    return _render(build, chart_id)


# --- model quality ---------------------------------------------------------------------------


def quality_trend(points: pl.DataFrame, chart_id: str, label: str, baseline: str) -> str:
    """One model_quality series over its origins: the model's value (solid, dots) and the
    baseline's on the same rows (dashed). `points`: origin, value, baseline_value.
    """
    ordered = points.sort("origin")
    when = np.array([_naive(v) for v in ordered["origin"].to_list()], dtype="datetime64[us]")
    value = ordered["value"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    reference = ordered["baseline_value"].cast(pl.Float64).fill_null(np.nan).to_numpy()

    def build() -> Figure:
        from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

        fig = _figure(4.6, 2.6, margins=(0.7, 0.2, 0.25, 0.5))
        ax = fig.add_subplot()
        if not np.all(np.isnan(reference)):
            ax.plot(
                when,
                reference,
                linestyle="--",
                color=NEUTRAL,
                linewidth=1.2,
                marker="o",
                markersize=3,
                label=plain(baseline, 30),
            )
        ax.plot(when, value, color=FORECAST, linewidth=1.6, marker="o", markersize=4, label="model")
        if len(set(when.tolist())) <= QUALITY_TICKS:  # few origins: one tick each
            ax.set_xticks(when, [_tick(v) for v in when.tolist()])
        else:
            locator = AutoDateLocator(maxticks=QUALITY_TICKS)
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        ax.set_ylabel(plain(label, 30))
        ax.legend(loc="best")
        return fig

    return _render(build, chart_id)


QUALITY_TICKS = 6


def _tick(value: datetime) -> str:
    """An origin as a short label: the date, with the time when it is not midnight UTC."""
    return value.strftime("%m-%d %H:%M" if (value.hour, value.minute) != (0, 0) else "%b %d")


def _naive(value: datetime) -> datetime:
    """A UTC instant as a naive UTC datetime (matplotlib's date axis)."""
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def compact(value: float) -> str:
    """1234567 -> '1.23M', 45600 -> '45.6k' (no currency: amounts are in the deals' unit)."""
    magnitude = abs(value)
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if magnitude >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}" if magnitude < 100 else f"{value:.0f}"
