"""`salesml demo`: the whole product on a synthetic world, from nothing, in one call.

A notebook can call `run_demo(workdir)` and get the same result as the command line.

The demo rewrites its own files on every run (config, sample data, report) and adds to its own
warehouse and MLflow store, so it refuses a workdir holding files it did not write: a config
without its marker line, input tables that are not an earlier demo's sample, or a warehouse,
MLflow store or report without a demo config beside them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from salesml.config import Settings, from_dict
from salesml.progress import Progress, report, scaled

# The demo world: big enough for a real deal-win model (hundreds of won and lost deals)
# and a demand model, small enough to run in a couple of minutes on 2 cores.
DEMO_DEALS = 3000
DEMO_SERIES = 60
DEMO_DAYS = 120
CONFIG_NAME = "salesml.yaml"
CONFIG_MARKER = "# Written by `salesml demo`; rewritten by every demo run in this folder."
# What a demo workdir holds besides its config and data; any of them without a demo config
# beside it belongs to someone else.
DEMO_OUTPUTS = ("warehouse.duckdb", "mlflow.db", "mlartifacts", "report.html")
DEMO_BACKTEST_ORIGINS = 2
"""Origins of the demo's deal-win backtest, which backtests the in-period pipeline forecast at as
many monthly origins: model_quality rows for the report in ~15 s."""
EARLIER_SCORE = timedelta(days=7)
"""The demo scores deals twice, this long before as_of and at as_of (the deal-win model is
trained at the earlier one and serves both), so what changed between two runs, the pipeline
waterfall and the alerts have something to show."""


class WorkdirError(ValueError):
    """The demo would overwrite or mix with files it did not write; one-line message."""


@dataclass
class DemoResult:
    """Where the demo wrote everything and what each step did (`summary_lines`)."""

    workdir: Path
    config_path: Path
    data_dir: Path
    warehouse_url: str
    mlflow_uri: str
    as_of: str
    steps: dict[str, Any] = field(default_factory=dict)
    report_path: Path | None = None
    tables: dict[str, str] = field(default_factory=dict)
    """Warehouse table -> its rows at as_of, e.g. '326 rows' (`table_rows`)."""

    def summary_lines(self) -> list[str]:
        """The lines `salesml demo` prints: paths, each step's outcome, each table's rows."""
        lines = [
            f"as_of:      {self.as_of}",
            f"sample data: {self.data_dir}",
            f"config:      {self.config_path}",
            f"warehouse:   {self.warehouse_url}",
            f"mlflow:      {self.mlflow_uri}  (mlflow ui --backend-store-uri {self.mlflow_uri})",
        ]
        if self.report_path is not None:
            lines.append(f"report:      {self.report_path}")
        for step, outcome in self.steps.items():
            lines.append(f"{step}: {outcome}")
        if self.tables:
            lines.append(f"tables in the warehouse ({self.warehouse_url}), rows at as_of:")
            lines.extend(f"  {name}: {rows}" for name, rows in self.tables.items())
        return lines


def demo_settings(workdir: Path) -> dict[str, Any]:
    """The config the demo writes into its workdir (absolute paths, so it works from anywhere).

    The sample world's holiday calendar goes into `demand.features.holidays`, as a user's would.
    """
    from salesml.sample import HOLIDAYS

    root = workdir.resolve()
    return {
        "sources": {"path": str(root / "data")},
        "warehouse": {"url": f"duckdb:///{root / 'warehouse.duckdb'}"},
        "mlflow": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}"},
        "timezone": "UTC",
        "demand": {"features": {"holidays": [day.isoformat() for day in sorted(HOLIDAYS)]}},
    }


def run_demo(workdir: Path, progress: Progress | None = None) -> DemoResult:
    """Generate a sample world in `workdir`, then validate, train, score and forecast it.

    Raises WorkdirError, before writing anything, when `workdir` holds files the demo did not
    write (see `check_workdir`).
    """
    from salesml.sample import WORLD_END, write_sample
    from salesml.validate_job import validate_inputs

    raw = demo_settings(workdir)
    check_workdir(workdir, raw)
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / CONFIG_NAME
    config_path.write_text(config_text(raw))
    settings: Settings = from_dict(raw)
    data_dir = Path(raw["sources"]["path"])

    report(progress, "sample data", 0.0)
    write_sample(
        data_dir,
        deals=DEMO_DEALS,
        series=DEMO_SERIES,
        days=DEMO_DAYS,
        seed=0,
        progress=scaled(progress, 0.0, 0.1),
    )
    as_of = WORLD_END
    result = DemoResult(
        workdir=workdir.resolve(),
        config_path=config_path.resolve(),
        data_dir=data_dir,
        warehouse_url=settings.warehouse.url,
        mlflow_uri=settings.mlflow.tracking_uri,
        as_of=as_of.isoformat(),
    )

    report(progress, "validate", 0.1)
    summary = validate_inputs(settings, as_of)
    result.steps["validate"] = (
        f"{sum(summary['rows'].values())} rows kept, {summary['quarantined_rows']} quarantined"
    )
    for step, outcome in _model_steps(settings, as_of, progress).items():
        result.steps[step] = outcome
    result.tables = table_rows(settings, as_of)

    from salesml.report import build

    report(progress, "report", 0.95)
    result.report_path = build(
        settings, as_of, workdir.resolve() / "report.html", config_path=config_path
    )
    report(progress, "done", 1.0)
    return result


def config_text(raw: dict[str, Any]) -> str:
    """The demo's config file: the marker line, then the settings as YAML."""
    return f"{CONFIG_MARKER}\n{yaml.safe_dump(raw, sort_keys=False)}"


def is_demo_config(path: Path, raw: dict[str, Any]) -> bool:
    """Whether the config at `path` was written by the demo (marker line, or, from demos
    before the marker, exactly the settings the demo writes for this workdir).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if text.startswith(CONFIG_MARKER):
        return True
    from salesml.config import ConfigError, parse_yaml

    try:
        return parse_yaml(text, str(path)) == raw
    except ConfigError:
        return False


def check_workdir(workdir: Path, raw: dict[str, Any]) -> None:
    """Refuse a workdir whose files the demo would overwrite or mix with (WorkdirError)."""
    from salesml.sample.deals import DEAL_TABLES
    from salesml.sample.demand import DEMAND_TABLES
    from salesml.sample.write import SampleFolderError, check_out_folder

    if workdir.exists() and not workdir.is_dir():
        raise WorkdirError(f"demo --workdir {workdir} is a file; choose a folder")
    config = workdir / CONFIG_NAME
    if config.exists():
        if not is_demo_config(config, raw):
            raise WorkdirError(
                f"demo --workdir {workdir}: {config} was not written by salesml demo and would "
                "be overwritten; use another --workdir"
            )
    else:
        found = [name for name in DEMO_OUTPUTS if (workdir / name).exists()]
        if found:
            raise WorkdirError(
                f"demo --workdir {workdir} already holds {', '.join(found)} but no demo "
                f"{CONFIG_NAME}; use an empty or new --workdir"
            )
    try:
        check_out_folder(Path(raw["sources"]["path"]), DEAL_TABLES + DEMAND_TABLES)
    except SampleFolderError as exc:
        raise WorkdirError(
            f"demo --workdir {workdir}: {str(exc).split(';')[0]}; use another --workdir"
        ) from None


def _model_steps(settings: Settings, as_of: datetime, progress: Progress | None) -> dict[str, Any]:
    """Train, score and forecast both models; progress runs from 15% to 95% of the demo.

    Deals are scored twice (`EARLIER_SCORE` before as_of, then at as_of) with the model trained
    at the earlier as_of, so the second run has a previous run to compare with.
    """
    from salesml.deals import deal_win_jobs as deal_jobs
    from salesml.demand import demand_jobs

    earlier = as_of - EARLIER_SCORE
    steps: dict[str, Any] = {}
    plan: list[tuple[Callable[..., Any], str, datetime, float, float]] = [
        (deal_jobs.train, "train deal-win", earlier, 0.15, 0.35),
        (deal_jobs.score, f"score deals ({earlier:%Y-%m-%d})", earlier, 0.35, 0.45),
        (deal_jobs.score, "score deals", as_of, 0.45, 0.55),
        (_deal_backtest, "backtest deal-win and pipeline", as_of, 0.55, 0.65),
        (demand_jobs.train, "train demand", as_of, 0.65, 0.85),
        (demand_jobs.forecast, "forecast demand", as_of, 0.85, 0.95),
    ]
    for job, label, when, start, end in plan:
        report(progress, label, start)
        outcome = job(settings, when, progress=scaled(progress, start, end))
        steps[label] = _describe(outcome)
    return steps


def _deal_backtest(settings: Settings, as_of: datetime, progress: Progress | None = None) -> str:
    """The deal-win backtest, with the in-period pipeline backtest, at `DEMO_BACKTEST_ORIGINS`
    origins (rows in model_quality), in one line. A world too small to fit a model at the
    origins says so instead of failing the demo (the runs table keeps the failed run).
    """
    from salesml.backtest import BacktestError
    from salesml.deals import deal_win_jobs as deal_jobs
    from salesml.deals.model import InsufficientDataError
    from salesml.errors import first_line

    try:
        summary = deal_jobs.backtest(settings, as_of, DEMO_BACKTEST_ORIGINS, progress=progress)
    except (InsufficientDataError, BacktestError) as exc:
        cause = exc if isinstance(exc, InsufficientDataError) else exc.__cause__
        if not isinstance(cause, InsufficientDataError):
            raise
        return f"skipped: {first_line(exc)}"
    return describe_backtest(summary)


def describe_backtest(summary: dict[str, Any]) -> str:
    """One line: the deal-win model's mean Brier next to the base rate's, and the pipeline
    forecast's coverage and bias per month x region next to the trailing baseline's bias.
    """
    mean = summary.get("mean", {})
    parts = [
        f"deal-win Brier {mean.get('model_brier', float('nan')):.3f} vs base rate "
        f"{mean.get('base_rate_brier', float('nan')):.3f} over {summary.get('n_origins')} origins"
    ]
    region = summary.get("pipeline", {}).get("month_region")
    if region:
        bias, baseline = region.get("bias"), region.get("baseline_bias")
        parts.append(
            f"pipeline month x region: [P10, P90] covered {region['coverage_p10_p90']:.0%} of "
            f"{int(region['rows'])} cells, bias "
            + ("n/a" if bias is None else f"{bias:+.0%}")
            + " (trailing 3 months "
            + ("n/a" if baseline is None else f"{baseline:+.0%}")
            + ")"
        )
    return "; ".join(parts) + " (model_quality)"


def table_rows(settings: Settings, as_of: datetime) -> dict[str, str]:
    """Each warehouse table the demo wrote -> where its rows are: 'N rows' at as_of, else at
    the latest earlier as_of that has some (training outputs: the model is trained at the
    earlier as_of), or every row of the tables keyed without as_of (alerts, runs).
    """
    from salesml.contract import OUTPUT_KEYS
    from salesml.warehouse import Warehouse

    warehouse = Warehouse.from_settings(settings)
    found: dict[str, str] = {}
    for name in warehouse.tables():
        if "as_of" not in OUTPUT_KEYS.get(name, []):
            found[name] = f"{warehouse.read(name).height} rows"
            continue
        rows, at = warehouse.count_rows(name, as_of), as_of
        latest = warehouse.latest_as_of(name)
        if rows == 0 and latest is not None and latest < as_of:
            rows, at = warehouse.count_rows(name, latest), latest
        found[name] = f"{rows} rows" + ("" if at == as_of else f" at {at.isoformat()}")
    return found


def _describe(outcome: Any) -> str:
    describe = getattr(outcome, "describe", None)
    if callable(describe):
        return str(describe())
    return str(outcome)
