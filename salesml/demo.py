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


class WorkdirError(ValueError):
    """The demo would overwrite or mix with files it did not write; one-line message."""


@dataclass
class DemoResult:
    workdir: Path
    config_path: Path
    data_dir: Path
    warehouse_url: str
    mlflow_uri: str
    as_of: str
    steps: dict[str, Any] = field(default_factory=dict)
    report_path: Path | None = None

    def summary_lines(self) -> list[str]:
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
        return lines


def demo_settings(workdir: Path) -> dict[str, Any]:
    """The config the demo writes into its workdir (absolute paths, so it works from anywhere).

    The sample world's holiday calendar goes into `demand.holidays`, as a user's would.
    """
    from salesml.sample import HOLIDAYS

    root = workdir.resolve()
    return {
        "sources": {"path": str(root / "data")},
        "warehouse": {"url": f"duckdb:///{root / 'warehouse.duckdb'}"},
        "mlflow": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}"},
        "timezone": "UTC",
        "demand": {"holidays": [day.isoformat() for day in sorted(HOLIDAYS)]},
    }


def run_demo(workdir: Path, progress: Progress | None = None) -> DemoResult:
    """Generate a sample world in `workdir`, then validate, train, score and forecast it.

    Raises WorkdirError, before writing anything, when `workdir` holds files the demo did not
    write (see `check_workdir`).
    """
    from salesml.jobs import validate_inputs
    from salesml.sample import WORLD_END, write_sample

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
    before the marker, exactly the settings the demo writes for this workdir)."""
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


def _model_steps(settings: Settings, as_of: Any, progress: Progress | None) -> dict[str, Any]:
    """Train, score and forecast both models; progress runs from 15% to 95% of the demo."""
    from salesml.deals import jobs as deal_jobs
    from salesml.demand import jobs as demand_jobs

    steps: dict[str, Any] = {}
    plan: list[tuple[Callable[..., Any], str, float, float]] = [
        (deal_jobs.train, "train deal-win", 0.15, 0.4),
        (deal_jobs.score, "score deals", 0.4, 0.55),
        (demand_jobs.train, "train demand", 0.55, 0.8),
        (demand_jobs.forecast, "forecast demand", 0.8, 0.95),
    ]
    for job, label, start, end in plan:
        report(progress, label, start)
        outcome = job(settings, as_of, progress=scaled(progress, start, end))
        steps[label] = _describe(outcome)
    return steps


def _describe(outcome: Any) -> str:
    describe = getattr(outcome, "describe", None)
    if callable(describe):
        return str(describe())
    return str(outcome)
