"""The analyst report: one self-contained HTML file per as_of (`salesml report`).

    from salesml.report import build
    path = build(settings, as_of)                 # gather (IO) + render (pure) + write

`gather.gather(settings, as_of) -> ReportData` reads the warehouse and sources,
`render.render(data) -> str` turns it into HTML. Importing this package is cheap: matplotlib,
mlflow and the warehouse are imported only when a report is built.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from salesml.urls import duckdb_path, split_url

if TYPE_CHECKING:
    from salesml.config import Settings
    from salesml.report.data import ReportData, ReportOptions

DEFAULT_FOLDER = Path("out")


def build(
    settings: Settings,
    as_of: datetime,
    out_path: str | Path | None = None,
    options: ReportOptions | None = None,
    *,
    force: bool = False,
    config_path: str | Path | None = None,
) -> Path:
    """Write the report for `as_of` and return its path.

    out_path: the HTML file to write (folders are created); default `default_path`. The path
    is checked before anything is read (`output.check_out_path`: never an input, the warehouse,
    the MLflow store or `config_path`; an existing file only if it is a salesml report or
    `force`), then the page is written to a temporary file and renamed, so a reader never
    sees half a report.
    """
    from salesml.report.gather import gather
    from salesml.report.output import check_out_path, write_atomic
    from salesml.report.render import render

    path = Path(out_path) if out_path is not None else default_path(settings, as_of)
    config = Path(config_path) if config_path is not None else None
    check_out_path(path, settings, config_path=config, force=force)
    page = render(gather(settings, as_of, options))
    return write_atomic(path, page)


def default_path(settings: Settings, as_of: datetime) -> Path:
    """`report-<as_of UTC>.html` beside a DuckDB warehouse file, else in ./out."""
    url = settings.warehouse.url
    folder = DEFAULT_FOLDER
    scheme, rest = split_url(url)
    if scheme == "duckdb" and rest.startswith("/") and len(rest) > 1:
        folder = duckdb_path(url).parent
    stamp = as_of.astimezone(UTC).strftime("%Y-%m-%dT%H%MZ")
    return folder / f"report-{stamp}.html"


def __getattr__(name: str) -> Any:
    """ReportData and ReportOptions on first use (they import polars; the CLI starts without)."""
    if name in ("ReportData", "ReportOptions"):
        from salesml.report import data

        return getattr(data, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ReportData", "ReportOptions", "build", "default_path"]
