"""prefect.yaml: every deployment loads, its entrypoint imports, its schedule parses; it matches
what `python -m pipelines.deployments` generates; bucket schedules hit bucket boundaries."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.deployments import bucket_cron, deployment_specs, render
from salesml.config import Settings

REPO = Path(__file__).resolve().parents[2]
PREFECT_YAML = REPO / "prefect.yaml"


def _document() -> dict[str, Any]:
    document = yaml.safe_load(PREFECT_YAML.read_text())
    assert isinstance(document, dict)
    return document


def test_every_deployment_loads_imports_and_has_a_valid_schedule() -> None:
    from prefect.cli.deploy._models import PrefectYamlModel, RawScheduleConfig
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.flows import Flow, load_flow_from_entrypoint

    model = PrefectYamlModel.model_validate(_document())
    assert len(model.deployments) == 5
    flow_names = set()
    for deployment in model.deployments:
        assert deployment.entrypoint is not None
        path, _, name = deployment.entrypoint.partition(":")
        assert (REPO / path).is_file()
        flow: Flow[..., Any] = load_flow_from_entrypoint(str(REPO / path) + ":" + name)
        assert isinstance(flow, Flow)
        flow_names.add(flow.name)
        assert set(deployment.parameters) <= set(flow.parameters.properties)
        assert deployment.schedules
        for schedule in deployment.schedules:
            assert isinstance(schedule, RawScheduleConfig)
            assert schedule.cron is not None and schedule.timezone is not None
            cron = CronSchedule(cron=schedule.cron, timezone=schedule.timezone)
            assert cron.cron == schedule.cron
    assert flow_names == {
        "train-deal-win",
        "score-deals",
        "train-demand",
        "forecast-demand",
        "backtest",
    }


def test_prefect_yaml_is_the_generated_one_for_the_default_config() -> None:
    assert PREFECT_YAML.read_text() == render(Settings()), (
        "prefect.yaml is stale: python -m pipelines.deployments > prefect.yaml"
    )


def test_schedules_follow_the_config_timezone() -> None:
    specs = deployment_specs(Settings(timezone="Europe/Berlin"), "/etc/salesml.yaml")
    assert {spec.timezone for spec in specs} == {"Europe/Berlin"}
    assert all(spec.parameters["config"] == "/etc/salesml.yaml" for spec in specs)


def _fires(cron: str, zone: str, start: datetime, n: int) -> list[datetime]:
    import asyncio

    from prefect.server.schemas.schedules import CronSchedule

    dates = asyncio.run(CronSchedule(cron=cron, timezone=zone).get_dates(n=n, start=start))
    return [datetime.fromisoformat(d.isoformat()).astimezone(UTC) for d in dates]


@pytest.mark.parametrize("hours", [1, 2, 3, 4, 6, 8, 12, 24])
def test_forecast_schedule_fires_at_bucket_boundaries(hours: int) -> None:
    """On an ordinary day every fire of the forecast cron (local time) is a bucket boundary;
    across a DST change the as_of a run resolves is still a boundary at or before its fire."""
    from salesml.demand.buckets import origin_end

    zone = "Europe/Berlin"
    n = 24 // hours + 2
    ordinary = _fires(bucket_cron(hours), zone, datetime(2025, 4, 12, 12, tzinfo=UTC), n)
    assert all(origin_end(fire, zone, hours) == fire for fire in ordinary)
    for start in (datetime(2025, 3, 29, 12, tzinfo=UTC), datetime(2025, 10, 25, 12, tzinfo=UTC)):
        for fire in _fires(bucket_cron(hours), zone, start, n):
            as_of = origin_end(fire, zone, hours)
            assert as_of <= fire and origin_end(as_of, zone, hours) == as_of
            assert (fire - as_of).total_seconds() <= 3600  # at most the DST hour off


def test_serve_builds_one_runner_deployment_per_flow() -> None:
    from pipelines.serve import runner_deployments

    deployments = runner_deployments(None)
    assert [d.name for d in deployments] == ["nightly", "hourly", "nightly", "every-4h", "weekly"]
    for deployment in deployments:
        (schedule,) = deployment.schedules
        assert schedule.schedule.timezone == "UTC"


def _sqlalchemy_2_1() -> bool:
    from importlib.metadata import version

    major, minor = (int(part) for part in version("sqlalchemy").split(".")[:2])
    return (major, minor) >= (2, 1)


@pytest.mark.xfail(
    _sqlalchemy_2_1(),
    reason="prefect 3.8.8's scheduler cannot insert runs with SQLAlchemy 2.1 ('Can't evaluate "
    "bulk DML statement'): pin SQLAlchemy==2.0.58 (README 'Scheduling')",
    strict=True,
)
def test_the_server_turns_a_schedule_into_scheduled_runs(prefect_harness: None) -> None:
    """What the server's scheduler service does every minute, asked for once: the hourly
    score-deals schedule becomes flow runs on the hour."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.settings import PREFECT_API_URL

    from pipelines.serve import runner_deployments

    hourly = next(d for d in runner_deployments(None) if d.name == "hourly")
    deployment_id = hourly.apply()
    api = PREFECT_API_URL.value()
    response = httpx.post(  # no client retries: a failure here is not transient
        f"{api}/deployments/{deployment_id}/schedule", json={"max_runs": 3, "min_runs": 3}
    )
    assert response.status_code < 300, response.text[:300]
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )
    starts = sorted(run.expected_start_time for run in runs if run.expected_start_time)
    assert len(starts) == 3
    assert all((start.minute, start.second) == (0, 0) for start in starts)
