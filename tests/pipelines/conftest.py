"""Fixtures for the flow tests: ONE Prefect test harness per session, one tiny world, and both
models trained once (by their flows) into an MLflow store that each test copies.

- `prefect_harness`: `prefect_test_harness` for the whole session (~15-30 s once; never nest).
- `world`: `write_sample(deals=1200, series=20, days=60)`, written once.
- `champions`: the train-deal-win and train-demand flows run once; their MLflow store holds
  both champions (v1).
- `make_config(...)`: a YAML config in tmp_path on the world, with a private copy of the
  champions' MLflow store and a DuckDB (default) or PostgreSQL warehouse; returns its path.
- `pg_url`: a fresh PostgreSQL schema in SALESML_TEST_PG_URL (skips when unset).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from salesml.sample import WORLD_END
from tests.fast_models import FAST_MODELS

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

PG_URL_ENV = "SALESML_TEST_PG_URL"
WHEN = WORLD_END
AS_OF = WHEN.isoformat()  # as flows take it

FAST = FAST_MODELS
"""Small, fast models for a tiny world (the sufficiency minimums lowered to match)."""


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def write_config(
    folder: Path, data: Path, warehouse_url: str, mlflow_db: Path, **extra: Any
) -> str:
    """Write a salesml YAML config into `folder`; returns its path (what flows take)."""
    raw = _merge(
        {
            "sources": {"path": str(data)},
            "warehouse": {"url": warehouse_url, "lock_timeout_seconds": 30},
            "mlflow": {"tracking_uri": f"sqlite:///{mlflow_db}", "experiment": "salesml-flows"},
            **FAST,
        },
        extra,
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"salesml-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from salesml.sample import write_sample

    data = tmp_path_factory.mktemp("world") / "data"
    write_sample(data, deals=1200, series=20, days=60, seed=3)
    return data


@dataclass(frozen=True)
class Champions:
    mlflow_db: Path
    deal_win: dict[str, Any]
    demand: dict[str, Any]


@pytest.fixture(scope="session")
def champions(
    prefect_harness: None,
    world: Path,
    migrated_mlflow_db: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Champions:
    """Both models trained once by their flows; v1 of each is champion."""
    from pipelines import flows

    folder = tmp_path_factory.mktemp("champions")
    db = folder / "mlflow" / "mlflow.db"
    db.parent.mkdir()
    shutil.copyfile(migrated_mlflow_db, db)
    config = write_config(folder, world, f"duckdb:///{folder / 'warehouse.duckdb'}", db)
    deal_win = flows.train_deal_win(config=config, as_of=AS_OF)
    demand = flows.train_demand(config=config, as_of=AS_OF)
    return Champions(db, deal_win, demand)


MakeConfig = Callable[..., str]


@pytest.fixture
def make_config(tmp_path: Path, world: Path, champions: Champions) -> MakeConfig:
    """make_config(warehouse_url=None, data=None, **extra) -> config path; each call gets its
    own copy of the champions' MLflow store (alias changes stay private)."""

    def make(warehouse_url: str | None = None, data: Path | None = None, **extra: Any) -> str:
        folder = tmp_path / uuid.uuid4().hex[:8]
        db = folder / "mlflow" / "mlflow.db"
        db.parent.mkdir(parents=True)
        shutil.copyfile(champions.mlflow_db, db)
        url = warehouse_url or f"duckdb:///{folder / 'warehouse.duckdb'}"
        return write_config(folder, data or world, url, db, **extra)

    return make


def with_schema(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


def pg_execute(url: str, sql: str) -> None:
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(url, autocommit=True) as con, con.cursor() as cur:
        cur.execute(sql)


@contextmanager
def fresh_pg_schema() -> Iterator[str]:
    """A new schema in the PostgreSQL database of SALESML_TEST_PG_URL (as a URL whose
    search_path is that schema), dropped afterwards; skips the test when the variable is unset."""
    base = os.environ.get(PG_URL_ENV)
    if not base:
        pytest.skip(f"set {PG_URL_ENV}=postgresql://user@host:port/db to run PostgreSQL tests")
    schema = f"salesml_flows_{uuid.uuid4().hex[:12]}"
    pg_execute(base, f'CREATE SCHEMA "{schema}"')
    try:
        yield with_schema(base, schema)
    finally:
        pg_execute(base, f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_pg_schema() as url:
        yield url


def task_runs(flow_run_id: str) -> list[Any]:
    """The task runs of one flow run (name, state, run_count), oldest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    with get_client(sync_client=True) as client:
        return list(
            client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(flow_run_id)])),
                sort=TaskRunSort.EXPECTED_START_TIME_ASC,
            )
        )
