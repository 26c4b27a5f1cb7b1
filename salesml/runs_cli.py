"""`salesml runs list|abandon`: see the `runs` table and close a run whose process died.

Thin like `salesml.cli`: parse arguments, call the warehouse, print one line per run. A run
marked `running` whose process is gone on this host is shown as `running (process gone)`; the
next run of any job marks it `abandoned`, or `salesml runs abandon RUN_ID` does it now.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from salesml.warehouse import Warehouse

runs_app = typer.Typer(
    help="List runs; mark a run whose process died as abandoned.", no_args_is_help=True
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="YAML config file (default: built-in defaults on data/sample)."
    ),
]


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _warehouse(config: Path | None) -> Warehouse:
    """The configured warehouse; bad config exits 2 with one line, like every command."""
    from salesml.config import ConfigError, load
    from salesml.warehouse import Warehouse, WarehouseError

    try:
        return Warehouse.from_settings(load(config))
    except ConfigError as exc:
        _fail(str(exc), code=2)
    except WarehouseError as exc:
        _fail(str(exc))


def describe_run(row: dict[str, Any], gone: bool = False) -> str:
    """One line for a `runs` row: id, flow, as_of, status, start, owner, version, message."""
    status = str(row.get("status"))
    if gone and status == "running":
        status = "running (process gone)"
    started = row.get("started_at")
    owner = f"pid {row['pid']} on {row['host']}" if row.get("host") else "owner unknown"
    as_of = row.get("as_of")
    parts = [
        str(row.get("run_id")),
        str(row.get("flow")),
        f"as_of {as_of.isoformat() if as_of is not None else '?'}",
        status,
        f"started {started:%Y-%m-%d %H:%M:%S} UTC" if started is not None else "",
        owner,
        f"model v{row['model_version']}" if row.get("model_version") else "",
        str(row.get("message") or ""),
    ]
    return "  ".join(p for p in parts if p).replace("\n", " ")


@runs_app.command("list")
def list_runs(
    config: ConfigOpt = None,
    flow: Annotated[str | None, typer.Option(help="Only runs of this flow.")] = None,
    status: Annotated[
        str | None,
        typer.Option(help="Only runs with this status: running, succeeded, failed, abandoned."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many (newest first).")] = 20,
) -> None:
    """The latest runs, newest first, one line each."""
    from salesml.contract import RUN_STATUSES
    from salesml.warehouse import WarehouseError, current_owner, process_is_gone

    if status is not None and status not in RUN_STATUSES:
        _fail(f"--status must be one of {', '.join(RUN_STATUSES)}, not {status!r}", code=2)
    warehouse = _warehouse(config)
    try:
        runs = warehouse.list_runs(flow=flow, status=status, limit=limit)
    except WarehouseError as exc:
        _fail(str(exc))
    if runs.height == 0:
        typer.echo("no runs")
        return
    host = current_owner().host
    for row in runs.iter_rows(named=True):
        gone = (
            row.get("status") == "running"
            and row.get("host") == host
            and row.get("pid") is not None
            and process_is_gone(int(row["pid"]), row.get("process_start"))
        )
        typer.echo(describe_run(row, gone))


@runs_app.command("abandon")
def abandon(
    run_id: Annotated[str, typer.Argument(help="The run_id of a run marked running.")],
    config: ConfigOpt = None,
    force: Annotated[
        bool, typer.Option(help="Also when its process still runs on this host.")
    ] = False,
) -> None:
    """Mark a running run abandoned (its process died), so it stops blocking its flow."""
    from salesml.warehouse import WarehouseError, current_owner, process_is_gone

    warehouse = _warehouse(config)
    try:
        row = warehouse.get_run(run_id)
        me = current_owner()
        alive_here = (
            row is not None
            and row.get("host") == me.host
            and row.get("pid") is not None
            and not process_is_gone(int(row["pid"]), row.get("process_start"))
        )
        if alive_here and not force and row is not None:
            _fail(
                f"run {run_id} is still running as pid {row['pid']} on {me.host}; "
                "stop that process first, or pass --force"
            )
        marked = warehouse.abandon_run(
            run_id, f"abandoned by hand (salesml runs abandon, pid {me.pid} on {me.host})"
        )
    except WarehouseError as exc:
        _fail(str(exc))
    follow = (
        "; the next training run reconciles the model registry"
        if marked.flow.startswith("train_")
        else ""
    )
    typer.echo(f"run {run_id} ({marked.flow}, as_of {marked.as_of.isoformat()}) abandoned{follow}")
