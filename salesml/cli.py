"""The `salesml` command line: parse arguments, call the library, print.

Heavy libraries (mlflow, shap, lightgbm, prefect) are imported inside commands so that
`salesml --help` answers at once.

One line, always: every failure exits non-zero with exactly one line on stderr, `error: ...`,
passwords masked by `salesml.secrets.redact`. The top-level group (`_OneLineGroup`) catches
whatever a command raises, so no command needs its own handler. An error salesml raises on
purpose (bad config, data, path) prints its message; anything else (a library's exception, a
polars panic) prints its type and message and points at `--debug` (or SALESML_DEBUG=1), which
also prints the traceback.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer._click import exceptions as click_errors
from typer._click.core import Context
from typer.core import TyperGroup

from salesml.config import ConfigError, Settings, load
from salesml.errors import first_line
from salesml.progress import Progress
from salesml.runs_cli import runs_app

_PACKAGE = Path(__file__).resolve().parent
DEBUG_ENV = "SALESML_DEBUG"
DEBUG_HINT = "(run with --debug for the traceback)"
# Not failures of a command: exits, Ctrl-C, help pages, a closed pipe (typer handles these).
# typer 0.29 carries its own copy of click (`typer._click`): its exceptions are the ones raised.
_PASS_THROUGH: tuple[type[BaseException], ...] = (
    typer.Exit,
    typer.Abort,
    click_errors.NoArgsIsHelpError,
    KeyboardInterrupt,
    SystemExit,
    GeneratorExit,
    BrokenPipeError,
)


class _OneLineGroup(TyperGroup):
    """The `salesml` group: a usage error or a failure of any sub-command becomes one line."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: Context | None = None,
        **extra: Any,
    ) -> Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except _PASS_THROUGH:
            raise
        except click_errors.ClickException as exc:
            _exit_usage(exc)

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except _PASS_THROUGH:
            raise
        except click_errors.ClickException as exc:
            _exit_usage(exc)
        except BaseException as exc:  # polars' PanicException is not an Exception
            _exit_failure(exc, debug=_debug_requested(ctx))


app = typer.Typer(
    name="salesml",
    help="Deal-win and 4-hour demand models with SHAP reasons and health ratings.",
    cls=_OneLineGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(runs_app, name="runs")


@app.callback()
def _global_options(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            envvar=DEBUG_ENV,
            help="On a failure, print the full traceback as well as the one-line error.",
        ),
    ] = False,
) -> None:
    """Deal-win and 4-hour demand models with SHAP reasons and health ratings."""


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
    """Model names the CLI accepts (`--model`)."""

    deal_win = "deal-win"
    demand = "demand"


# --- failures: one line -----------------------------------------------------------------------


def failure_message(exc: BaseException, debug: bool = False) -> tuple[str, int]:
    """The one stderr line for a command that raised `exc`, and the exit code.

    A config error exits 2, anything else 1. An error salesml raised on purpose is its message;
    any other exception is named by type, with a pointer to --debug unless it is on.
    """
    from salesml.secrets import redact

    text = first_line(exc, name_if_empty=False)
    if _expected(exc):
        message = text or type(exc).__name__
    else:
        message = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        if not debug:
            message = f"{message} {DEBUG_HINT}"
    return "error: " + redact(message), 2 if isinstance(exc, ConfigError) else 1


def _expected(exc: BaseException) -> bool:
    """Whether `exc` is an error with a message meant for the user.

    Yes for salesml's own error classes and for OS errors (they name the file); for a plain
    ValueError / RuntimeError only when salesml raised it (numpy's "'list' argument must have
    no negative elements" is a bug to report, not a message).
    """
    if type(exc).__module__.split(".")[0] == "salesml" or isinstance(exc, OSError):
        return True
    return isinstance(exc, (ValueError, RuntimeError)) and _raised_in_salesml(exc)


def _raised_in_salesml(exc: BaseException) -> bool:
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(_PACKAGE)


def _debug_requested(ctx: Context | None = None) -> bool:
    if ctx is not None and ctx.find_root().params.get("debug"):
        return True
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _exit_failure(exc: BaseException, debug: bool) -> NoReturn:
    from salesml.secrets import redact

    if debug:
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        typer.echo(redact(trace), err=True, nl=False)
    line, code = failure_message(exc, debug)
    typer.echo(line, err=True)
    raise typer.Exit(code)


def _exit_usage(exc: click_errors.ClickException) -> NoReturn:
    """A usage error (unknown option, bad value) as one line naming the command's help."""
    from salesml.secrets import redact

    text = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if isinstance(ctx, Context) else ""
    typer.echo(f"error: {redact(text)}{hint}", err=True)
    raise typer.Exit(exc.exit_code)


def _fail(message: str, code: int = 1) -> NoReturn:
    from salesml.secrets import redact

    typer.echo(f"error: {redact(message)}", err=True)
    raise typer.Exit(code)


def _settings(config: Path | None) -> Settings:
    """The config at `config`; any failure to load it is a ConfigError naming the file."""
    try:
        return load(config)
    except ConfigError:
        raise
    except _PASS_THROUGH:
        raise
    except BaseException as exc:  # e.g. a binary file, a polars panic
        if config is None:
            raise
        detail = first_line(exc, name_if_empty=False) or type(exc).__name__
        raise ConfigError(
            f"config file {config} could not be loaded ({type(exc).__name__}: {detail})"
        ) from exc


def _as_of(text: str | None, settings: Settings) -> datetime:
    from salesml.timeutil import parse_as_of

    try:
        return parse_as_of(text, settings.timezone)
    except (ValueError, OverflowError) as exc:
        _fail(first_line(exc, name_if_empty=False) or f"--as-of {text!r} cannot be used", code=2)


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
def config_show(
    config: ConfigOpt = None,
    describe: Annotated[
        bool, typer.Option("--describe", help="Precede each key with a comment describing it.")
    ] = False,
) -> None:
    """Print the full effective config (defaults filled in) as YAML."""
    typer.echo(_settings(config).to_yaml(describe=describe), nl=False)


@app.command()
def sample(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the canonical tables to.")],
    deals: Annotated[int, typer.Option(help="Number of deals.")] = 5000,
    series: Annotated[int, typer.Option(help="Number of customer x SKU demand series.")] = 200,
    days: Annotated[int, typer.Option(help="Days of demand history.")] = 120,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data).")] = 0,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Write even where the folder already holds other input tables."
        ),
    ] = False,
) -> None:
    """Generate a synthetic world (deals and demand) with planted, documented effects."""
    from salesml.sample import write_sample

    with _progress_bar("sample") as progress:
        paths = write_sample(
            out,
            deals=deals,
            series=series,
            days=days,
            seed=seed,
            progress=progress,
            force=force,
        )
    for name, path in paths.items():
        typer.echo(f"{name}: {path}")


@app.command()
def validate(
    job: Annotated[
        ModelName | None,
        typer.Argument(
            help="Also require what this job needs (deal-win: deals; demand: sales). "
            "Without it: the tables present, and at least one job's."
        ),
    ] = None,
    config: ConfigOpt = None,
    as_of: AsOfOpt = None,
) -> None:
    """Read and validate the input tables present; record quarantined rows and the run.

    Deal jobs need deals (accounts, activities, deal_stage_history and
    deal_close_date_history are optional: absent or empty); demand jobs need sales
    (signals, inventory optional).
    """
    from salesml.validate_job import validate_inputs

    settings = _settings(config)
    when = _as_of(as_of, settings)
    summary = validate_inputs(settings, when, job=job.value if job is not None else None)
    _emit(summary, as_json=False)


@app.command()
def train(
    model: Annotated[ModelName, typer.Argument(help="Which model to train.")],
    config: ConfigOpt = None,
    as_of: AsOfOpt = None,
) -> None:
    """Train on data known at --as-of (deal-win: P(won within deals.label_horizon_days days); promoted only with skill on the honest holdout)."""
    settings = _settings(config)
    when = _as_of(as_of, settings)
    job = _job(model, "train")
    with _progress_bar(f"train {model.value}") as progress:
        report = job(settings, when, progress=progress)
    _emit(_as_dict(report), as_json=False)


score_app = typer.Typer(help="Score open deals.", no_args_is_help=True)
forecast_app = typer.Typer(help="Forecast demand.", no_args_is_help=True)
app.add_typer(score_app, name="score")
app.add_typer(forecast_app, name="forecast")


@score_app.command("deals")
def score_deals(config: ConfigOpt = None, as_of: AsOfOpt = None) -> None:
    """Give every deal open at --as-of P(won within deals.label_horizon_days days) (score_basis: model, prior or base_rate)."""
    from salesml.deals import deal_win_jobs

    settings = _settings(config)
    when = _as_of(as_of, settings)
    with _progress_bar("score deals") as progress:
        report = deal_win_jobs.score(settings, when, progress=progress)
    _emit(_as_dict(report), as_json=False)


@forecast_app.command("demand")
def forecast_demand(
    config: ConfigOpt = None,
    as_of: AsOfOpt = None,
    scenario: Annotated[
        str | None,
        typer.Option(
            help="What-if name: its rows go to demand_forecast next to the baseline "
            "(scenario column), never over it; needs --set."
        ),
    ] = None,
    set_weight: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="SIGNAL=W|SIGNAL@REGION=W",
            help="A what-if weight (repeatable), e.g. promotion=1.5 or price@north=0.9: "
            "multiplies expected units where the signal is active.",
        ),
    ] = None,
) -> None:
    """Forecast every series' 4-hour buckets ahead with P10/P50/P90, drivers and SKU health."""
    from salesml.demand import adjust, demand_jobs

    settings = _settings(config)
    try:
        what_if = adjust.from_options(scenario, set_weight, settings.demand)
    except adjust.ScenarioError as exc:
        _fail(str(exc), 2)
    when = _as_of(as_of, settings)
    with _progress_bar("forecast demand") as progress:
        report = demand_jobs.forecast(settings, when, progress=progress, scenario=what_if)
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
    with _progress_bar(f"backtest {model.value}") as progress:
        result = job(settings, when, n_origins=origins, progress=progress)
    _emit(result, as_json=as_json)


@app.command()
def report(
    config: ConfigOpt = None,
    as_of: AsOfOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="HTML file to write (default: beside the warehouse). Never an input, the "
            "warehouse, the MLflow store or the config.",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Replace an existing --out file that is not a salesml report."
        ),
    ] = False,
) -> None:
    """Write one self-contained HTML report (opens offline) for the outputs at --as-of."""
    from salesml.report import build

    settings = _settings(config)
    when = _as_of(as_of, settings)
    with _progress_bar("report") as progress:
        progress("gather and render", 0.1)
        path = build(settings, when, out, force=force, config_path=config)
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

    with _progress_bar("demo") as progress:
        result = run_demo(workdir, progress=progress)
    for line in result.summary_lines():
        typer.echo(line)


def _job(model: ModelName, action: str) -> Callable[..., Any]:
    if model is ModelName.deal_win:
        from salesml.deals import deal_win_jobs as deal_jobs

        return getattr(deal_jobs, action)  # type: ignore[no-any-return]
    from salesml.demand import demand_jobs

    return getattr(demand_jobs, action)  # type: ignore[no-any-return]


def _as_dict(report: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(report) and not isinstance(report, type):
        return dataclasses.asdict(report)
    return report


def main() -> None:  # pragma: no cover - console entry
    """Console entry point of `salesml`."""
    app(prog_name="salesml")
    sys.exit(0)
