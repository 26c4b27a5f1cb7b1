"""`salesml demo`: the whole product on a synthetic world, from nothing, in one call.

A notebook can call `run_demo(workdir)` and get the same result as the command line.
"""

from __future__ import annotations

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
    """Generate a sample world in `workdir`, then validate, train, score and forecast it."""
    from salesml.jobs import validate_inputs
    from salesml.sample import WORLD_END, write_sample

    workdir.mkdir(parents=True, exist_ok=True)
    raw = demo_settings(workdir)
    config_path = workdir / "salesml.yaml"
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
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
    result.report_path = build(settings, as_of, workdir.resolve() / "report.html")
    report(progress, "done", 1.0)
    return result


def _model_steps(settings: Settings, as_of: Any, progress: Progress | None) -> dict[str, Any]:
    """Train, score and forecast, for each model whose jobs exist in this build."""
    import importlib

    steps: dict[str, Any] = {}
    plan = [
        ("salesml.deals.jobs", "train", "train deal-win", 0.15, 0.4),
        ("salesml.deals.jobs", "score", "score deals", 0.4, 0.55),
        ("salesml.demand.jobs", "train", "train demand", 0.55, 0.8),
        ("salesml.demand.jobs", "forecast", "forecast demand", 0.8, 0.95),
    ]
    for module_name, func_name, label, start, end in plan:
        module = importlib.import_module(module_name)
        report(progress, label, start)
        outcome = getattr(module, func_name)(settings, as_of, progress=scaled(progress, start, end))
        steps[label] = _describe(outcome)
    return steps


def _describe(outcome: Any) -> str:
    describe = getattr(outcome, "describe", None)
    if callable(describe):
        return str(describe())
    return str(outcome)
