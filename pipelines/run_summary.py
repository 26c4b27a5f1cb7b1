"""What a flow run reports: a JSON-able summary of a job's outcome, and the same as markdown.

`summarize` turns any job result (a report dataclass or a backtest dict) plus its `runs` row
into one flat summary: key metrics, row counts, model version, status. `publish` shows it in
the Prefect UI as a markdown artifact whose key is stable per flow, so the UI keeps a history.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from salesml.config import Settings

_METRIC_FIELDS = ("metrics", "mean")  # report fields holding the model's metrics
_COUNT_FIELDS = ("scored", "not_scored", "series", "rows_explained", "snapshots", "behavior_pairs")


def as_json(value: Any) -> Any:
    """A JSON-able copy: dataclasses to dicts, NaN/inf to None, datetimes and paths to text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return as_json(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): as_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_json(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def run_record(settings: Settings, run_id: str, as_of: Any) -> dict[str, Any]:
    """The `runs` row of `run_id` (status, model_version, row_counts, message); {} if absent."""
    import polars as pl

    from salesml.warehouse import Warehouse, WarehouseError

    try:
        runs = Warehouse.from_settings(settings).read("runs", as_of=as_of)
    except WarehouseError:
        return {}
    rows = runs.filter(pl.col("run_id") == run_id).to_dicts()
    if not rows:
        return {}
    row = rows[0]
    row["row_counts"] = json.loads(row["row_counts"]) if row["row_counts"] else {}
    return row


def summarize(flow: str, outcome: Any, settings: Settings) -> dict[str, Any]:
    """One flow run's summary: flow, as_of, run_id, status, model_version, description,
    metrics (the report's metrics / backtest means and counts), row_counts, and the full
    report.
    """
    report = as_json(outcome)
    describe = getattr(outcome, "describe", None)
    run_id = str(report.get("run_id", ""))
    as_of = report.get("as_of")
    record = run_record(settings, run_id, _parse(as_of)) if run_id and as_of else {}
    metrics: dict[str, Any] = {}
    for name in _METRIC_FIELDS:
        if isinstance(report.get(name), dict):
            metrics.update({k: v for k, v in report[name].items() if _is_number(v)})
    metrics.update({k: report[k] for k in _COUNT_FIELDS if _is_number(report.get(k))})
    return {
        "flow": flow,
        "as_of": as_of,
        "run_id": run_id or None,
        "status": record.get("status"),
        "model_version": report.get("model_version") or record.get("model_version"),
        "description": str(describe()) if callable(describe) else None,
        "message": record.get("message"),
        "metrics": metrics,
        "row_counts": record.get("row_counts", {}),
        "report": report,
    }


def to_markdown(summary: dict[str, Any]) -> str:
    """The summary as a short markdown page: headline, run facts, metrics, rows."""
    lines = [f"# {summary['flow']} as of {summary['as_of']}", ""]
    if summary.get("description"):
        lines += [str(summary["description"]), ""]
    facts = {k: summary.get(k) for k in ("run_id", "status", "model_version", "message")}
    lines += _table(("run", "value"), [(k, v) for k, v in facts.items() if v is not None])
    if summary["metrics"]:
        lines += ["", "## Metrics", ""]
        lines += _table(("metric", "value"), [(k, _fmt(v)) for k, v in summary["metrics"].items()])
    if summary["row_counts"]:
        lines += ["", "## Rows", ""]
        lines += _table(("table", "rows"), sorted(summary["row_counts"].items()))
    return "\n".join(lines) + "\n"


def publish(summary: dict[str, Any]) -> None:
    """Show the summary as a markdown artifact keyed by flow (history kept by the UI)."""
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(
        markdown=to_markdown(summary),
        key=str(summary["flow"]).replace("_", "-").lower(),
        description=summary.get("description") or f"{summary['flow']} summary",
    )


def _table(header: tuple[str, str], rows: list[tuple[Any, Any]]) -> list[str]:
    out = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in rows]
    return out


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parse(as_of: Any) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(as_of) if isinstance(as_of, str) else as_of
