"""Shared fixtures: small, generic, and cheap unless a test asks for MLflow.

- `settings(tmp_path)`: a Settings with the DuckDB warehouse and MLflow store in tmp_path and the
  bundled sample (data/sample) as sources. Creates nothing; MLflow would migrate a fresh DB
  (~5-7 s) on first use, so tests that touch MLflow use `mlflow_settings` instead.
- `mlflow_settings(tmp_path)`: like `settings`, but the MLflow SQLite store is a copy of one
  store migrated once per test session, and `tracking.configure` has been called on it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from salesml.config import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DATA = REPO_ROOT / "data" / "sample"
MLFLOW_DB_NAME = "mlflow.db"


def _make_settings(tmp_path: Path) -> Settings:
    from salesml.config import MlflowSettings, Settings, SourcesSettings, WarehouseSettings

    return Settings(
        sources=SourcesSettings(path=SAMPLE_DATA),
        warehouse=WarehouseSettings(url=f"duckdb:///{tmp_path / 'warehouse.duckdb'}"),
        mlflow=MlflowSettings(
            tracking_uri=f"sqlite:///{tmp_path / 'mlflow' / MLFLOW_DB_NAME}",
            experiment="salesml-test",
        ),
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings isolated in tmp_path (warehouse, MLflow), sources = bundled sample."""
    return _make_settings(tmp_path)


@pytest.fixture(scope="session")
def migrated_mlflow_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """One SQLite MLflow store with all alembic migrations applied (~5-7 s, paid once).

    Kept in pytest's cache folder per MLflow version, so later sessions skip the migration; it
    is built under a temporary name and renamed into place, so concurrent pytest runs in the
    same tree never copy a half-migrated file. Without the cache plugin: once per session.
    """
    from importlib import metadata

    cache = getattr(request.config, "cache", None)
    if cache is not None:
        folder = Path(cache.mkdir(f"mlflow-template-{metadata.version('mlflow')}"))
    else:
        folder = tmp_path_factory.mktemp("mlflow-template")
    db = folder / MLFLOW_DB_NAME
    if not db.is_file():
        building = Path(tempfile.mkdtemp(prefix="building-", dir=folder)) / MLFLOW_DB_NAME
        _migrate(building)
        os.replace(building, db)
        shutil.rmtree(building.parent, ignore_errors=True)
    return db


def _migrate(db: Path) -> None:
    from salesml import tracking

    tracking.import_mlflow()  # telemetry off before the first mlflow import
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(f"sqlite:///{db}", (db.parent / "mlartifacts").as_uri())
    store.engine.dispose()


@pytest.fixture
def mlflow_settings(tmp_path: Path, migrated_mlflow_db: Path) -> Iterator[Settings]:
    """Settings whose MLflow store is a private copy of the migrated DB, already configured.

    Artifacts go to tmp_path/mlflow/mlartifacts (beside the DB). MLflow's global tracking URI
    is restored afterwards so no test leaks its store into the next one.
    """
    from salesml import tracking

    mlflow = tracking.import_mlflow()
    result = _make_settings(tmp_path)
    db = tracking.sqlite_path(result.mlflow.tracking_uri)
    assert db is not None
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(migrated_mlflow_db, db)
    previous_uris = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    tracking.configure(result)
    yield result
    while mlflow.active_run() is not None:
        mlflow.end_run(status="FAILED")
    mlflow.set_tracking_uri(previous_uris[0])
    mlflow.set_registry_uri(previous_uris[1])
