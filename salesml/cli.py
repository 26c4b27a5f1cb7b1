"""The `salesml` command line: parse arguments, call the library, print.

Heavy libraries (mlflow, shap, lightgbm, prefect) are imported inside commands so that
`salesml --help` answers at once. Every failure a user can fix exits non-zero with one line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from salesml.config import ConfigError, Settings, load
from salesml.progress import Progress

app = typer.Typer(
    name="salesml",
    help="Deal-win and 4-hour demand models with SHAP reasons and health ratings.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="YAML config file (default: built-in defaults on data/sample)."
    ),
]
AsOfOpt = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="See the world as of this ISO date/datetime (naive = config timezone). Default: now.",
    ),
]


class ModelName(StrEnum):
    deal_win = "deal-win"
    demand = "demand"


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn errors a user can fix into one line on stderr and a non-zero exit."""
    from salesml.validation import DataValidationError

    try:
        yield
    except ConfigError as exc:
        _fail(str(exc), code=2)
    except DataValidationError as exc:
        _fail(str(exc).splitlines()[0], code=1)
    except (ValueError, FileNotFoundError, PermissionError, RuntimeError) as exc:
        text = str(exc).strip().splitlines()
        _fail(text[0] if text else type(exc).__name__, code=1)


def _settings(config: Path | None) -> Settings:
    try:
        return load(config)
    except ConfigError as exc:
        _fail(str(exc), code=2)
        raise  # unreachable; keeps mypy happy


def _as_of(text: str | None, settings: Settings) -> datetime:
    from salesml.timeutil import parse_as_of

    try:
        return parse_as_of(text, settings.timezone)
    except ValueError as exc:
        _fail(str(exc), code=2)
        raise


@contextmanager
def _progress_bar(title: str) -> Iterator[Progress]:
    """A rich progress bar on stderr, driven by the library's (step, fraction) callback."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal and not _force_progress(),
    ) as bar:
        task = bar.add_task(title, total=1.0)

        def update(step: str, fraction: float) -> None:
            bar.update(task, completed=fraction, description=f"{title}: {step}")

        yield update
        bar.update(task, completed=1.0, description=f"{title}: done")


def _force_progress() -> bool:
    import os

    return os.environ.get("SALESML_PROGRESS", "") == "1"


def _emit(result: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result, default=str, sort_keys=True))
    elif isinstance(result, dict):
        for key, value in result.items():
            typer.echo(f"{key}: {value}")
    else:
        typer.echo(str(result))


@config_app.command("show")
def config_show(config: ConfigOpt = None) -> None:
    """Print the full effective config (defaults filled in) as YAML."""
    typer.echo(_settings(config).to_yaml(), nl=False)


@app.command()
def sample(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the canonical tables to.")],
    deals: Annotated[int, typer.Option(help="Number of deals.")] = 5000,
    series: Annotated[int, typer.Option(help="Number of customer x SKU demand series.")] = 200,
    days: Annotated[int, typer.Option(help="Days of demand history.")] = 120,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data).")] = 0,
) -> None:
    """Generate a synthetic world (deals and demand) with planted, documented effects."""
    from salesml.sample import write_sample

    with _user_errors(), _progress_bar("sample") as progress:
        paths = write_sample(
            out, deals=deals, series=series, days=days, seed=seed, progress=progress
        )
    for name, path in paths.items():
        typer.echo(f"{name}: {path}")


@app.command()
def validate(config: ConfigOpt = None, as_of: AsOfOpt = None) -> None:
    """Read and validate every input table; record quarantined rows and the run."""
    from salesml.jobs import validate_inputs

    settings = _settings(config)
    when = _as_of(as_of, settings)
    with _user_errors():
        summary = validate_inputs(settings, when)
    _emit(summary, as_json=False)


@app.command()
def train(
    model: Annotated[ModelName, typer.Argument(help="Which model to train.")],
    config: ConfigOpt = None,
    as_of: AsOfOpt = None,
) -> None:
    """Train a model on data known at --as-of, log it to MLflow, promote it if no worse."""
    settings = _settings(config)
    when = _as_of(as_of, settings)
    job = _job(model, "train")
    with _user_errors(), _progress_bar(f"train {model.value}") as progress:
        report = job(settings, when, progress=progress)
    _emit(_as_dict(report), as_json=False)


score_app = typer.Typer(help="Score open deals.", no_args_is_help=True)
forecast_app = typer.Typer(help="Forecast demand.", no_args_is_help=True)
app.add_typer(score_app, name="score")
app.add_typer(forecast_app, name="forecast")


@score_app.command("deals")
def score_deals(config: ConfigOpt = None, as_of: AsOfOpt = None) -> None:
    """Score every deal open at --as-of with the champion model; write scores and reasons."""
    from salesml.deals import jobs

    settings = _settings(config)
    when = _as_of(as_of, settings)
    with _user_errors(), _progress_bar("score deals") as progress:
        report = jobs.score(settings, when, progress=progress)
    _emit(_as_dict(report), as_json=False)


@forecast_app.command("demand")
def forecast_demand(config: ConfigOpt = None, as_of: AsOfOpt = None) -> None:
    """Forecast every series' 4-hour buckets ahead with P10/P50/P90, drivers and SKU health."""
    from salesml.demand import jobs

    settings = _settings(config)
    when = _as_of(as_of, settings)
    with _user_errors(), _progress_bar("forecast demand") as progress:
        report = jobs.forecast(settings, when, progress=progress)
    _emit(_as_dict(report), as_json=False)


@app.command()
def backtest(
    model: Annotated[ModelName, typer.Argument(help="Which model to backtest.")],
    config: ConfigOpt = None,
    as_of: AsOfOpt = None,
    origins: Annotated[int, typer.Option(help="Number of rolling origins.")] = 4,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print metrics as one JSON object.")
    ] = False,
) -> None:
    """Rolling-origin backtest of a model next to its baselines."""
    settings = _settings(config)
    when = _as_of(as_of, settings)
    job = _job(model, "backtest")
    with _user_errors(), _progress_bar(f"backtest {model.value}") as progress:
        result = job(settings, when, n_origins=origins, progress=progress)
    _emit(result, as_json=as_json)


@app.command()
def report(
    config: ConfigOpt = None,
    as_of: AsOfOpt = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="HTML file to write (default: beside the warehouse)."),
    ] = None,
) -> None:
    """Write one self-contained HTML report (opens offline) for the outputs at --as-of."""
    from salesml.report import build

    settings = _settings(config)
    when = _as_of(as_of, settings)
    with _user_errors(), _progress_bar("report") as progress:
        progress("gather and render", 0.1)
        path = build(settings, when, out)
    typer.echo(f"report: {path}")


@app.command()
def demo(
    workdir: Annotated[
        Path,
        typer.Option("--workdir", help="Folder for sample data, warehouse, MLflow and report."),
    ] = Path("out/demo"),
) -> None:
    """From nothing: sample data, validate, train, score, forecast, rate health, report."""
    from salesml.demo import run_demo

    with _user_errors(), _progress_bar("demo") as progress:
        result = run_demo(workdir, progress=progress)
    for line in result.summary_lines():
        typer.echo(line)


def _job(model: ModelName, action: str) -> Callable[..., Any]:
    if model is ModelName.deal_win:
        from salesml.deals import jobs as deal_jobs

        return getattr(deal_jobs, action)  # type: ignore[no-any-return]
    from salesml.demand import jobs as demand_jobs

    return getattr(demand_jobs, action)  # type: ignore[no-any-return]


def _as_dict(report: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(report) and not isinstance(report, type):
        return dataclasses.asdict(report)
    return report


def main() -> None:  # pragma: no cover - console entry
    app(prog_name="salesml")
    sys.exit(0)
