"""Serve every salesml deployment from one process: `python -m pipelines.serve --config FILE`.

The process registers the deployments (schedules in the config's timezone) with the Prefect
server at PREFECT_API_URL and runs their flow runs itself, so no work pool or worker is needed.
It needs a real server (`prefect server start`): an ephemeral one cannot hold schedules.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipelines.deployments import deployment_specs, load_flow
from salesml.config import load


def runner_deployments(config: str | None = None) -> list[Any]:
    """One `RunnerDeployment` per deployment spec, schedules in the config's timezone."""
    from prefect.schedules import Cron

    settings = load(config)
    return [
        load_flow(spec).to_deployment(
            name=spec.name,
            schedules=[Cron(spec.cron, timezone=spec.timezone)],
            parameters=spec.parameters,
            description=spec.description,
            tags=["salesml"],
            concurrency_limit=1,
        )
        for spec in deployment_specs(settings, config)
    ]


def serve(config: str | None = None) -> None:
    """Register and serve all deployments for `config` until interrupted."""
    from prefect import serve as prefect_serve

    prefect_serve(*runner_deployments(config))


def main(argv: list[str] | None = None) -> None:
    """Console entry: serve the scheduled flows of the given config until interrupted."""
    parser = argparse.ArgumentParser(description="Serve the scheduled salesml flows.")
    parser.add_argument("--config", help="salesml YAML file")
    args = parser.parse_args(argv)
    serve(str(Path(args.config).resolve()) if args.config else None)


if __name__ == "__main__":
    main()
