"""Fixtures for report tests, built once per session (the full report takes seconds to draw).

`warehouse_settings`: the synthetic world's inputs (deals, sales) as Parquet and its outputs
written into a DuckDB warehouse with `Warehouse.write_batch`; `gathered`: what `gather` reads
from it for AS_OF; `report_file`: the report `build` writes from it, as `salesml report` would.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from salesml.config import Settings
from salesml.report import build
from salesml.report.data import ReportData
from tests.report.synthetic import AS_OF, World, make_world, settings_for, write_world


@pytest.fixture(scope="session")
def world() -> World:
    return make_world()


@pytest.fixture(scope="session")
def warehouse_settings(world: World, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return write_world(world, tmp_path_factory.mktemp("report-world"))


@pytest.fixture(scope="session")
def gathered(warehouse_settings: Settings) -> ReportData:
    from salesml.report.gather import gather

    return gather(warehouse_settings, AS_OF)


@pytest.fixture(scope="session")
def report_file(warehouse_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(warehouse_settings, AS_OF, out_path=tmp_path_factory.mktemp("html") / "r.html")


@pytest.fixture
def empty_settings(tmp_path: Path) -> Settings:
    """Nothing written: no warehouse file, no source folder."""
    return settings_for(tmp_path)
