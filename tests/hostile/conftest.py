"""Worlds for the hostile-input and crash suites, each made once per session.

- `fuzz_world`: a tiny sample world (300 deals, 10 series x 30 days) as Parquet, its frames, and
  a template warehouse that already holds output rows (so a test can see that nothing touched
  them). Each fuzz example copies the folder, mutates one table and validates it.
- `crash_world`: a small world (1200 deals, 20 series x 60 days) with both models trained and
  one score and one forecast written, all through the real `salesml` command in subprocesses;
  the wall time of each command is measured there, so the crash suite can spread its kills
  over each command's actual runtime. Each crash test copies the warehouse and MLflow store.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from salesml.sample import WORLD_END
from salesml.timeutil import DATETIME
from tests.fast_models import FAST_MODELS

AS_OF = WORLD_END
"""Every hostile test works at the end of the sample world: no sample row is after it."""

RUN_WAIT_SECONDS = 30.0
"""`compute.run_wait_seconds` in every hostile config: a run blocked by a dead one fails after
this long instead of 300 s, and a wait this long is easy to tell from no wait at all."""

BATCHES: dict[str, tuple[str, ...]] = {
    "train deal-win": ("behavior_value",),
    "score deals": ("deal_scores", "deal_score_factors", "pipeline_forecast"),
    "forecast demand": (
        "demand_forecast",
        "demand_forecast_factors",
        "sku_health",
        "demand_forecast_agg",
    ),
}
"""The output tables each command writes in one batch (one transaction)."""

WRITE_SCOPES: dict[str, tuple[str, ...]] = {
    "demand_forecast": ("scenario",),
    "model_quality": ("model", "kind"),
}
"""Columns that narrow a write beyond as_of (`Warehouse.write_batch` scopes): rows of one as_of
in different scopes come from different runs by design."""

FLOWS: dict[str, str] = {
    "train deal-win": "train_deal_win",
    "train demand": "train_demand",
    "score deals": "score_deals",
    "forecast demand": "forecast_demand",
}
"""The `runs.flow` value of each command."""


def write_config(path: Path, data: Path, warehouse: Path, mlflow_db: Path, **sections: Any) -> Path:
    """A salesml YAML at `path` on `data`, with the warehouse and MLflow store given."""
    raw: dict[str, Any] = {
        "sources": {"path": str(data)},
        "warehouse": {"url": f"duckdb:///{warehouse}", "lock_timeout_seconds": 30},
        "mlflow": {"tracking_uri": f"sqlite:///{mlflow_db}", "experiment": "salesml-hostile"},
        "timezone": "UTC",
        "compute": {"io_retry_backoff_seconds": 0.01, "run_wait_seconds": RUN_WAIT_SECONDS},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# ---------------------------------------------------------------------------------------------
# Fuzz world
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FuzzWorld:
    data: Path
    frames: Mapping[str, pl.DataFrame]
    warehouse: Path
    """A warehouse holding seeded output rows at AS_OF; copy it, never write to it."""
    seeded: Mapping[str, pl.DataFrame]
    """The output tables as read back from `warehouse` (what every fuzz run must leave)."""

    def __repr__(self) -> str:  # hypothesis prints it with every failing example
        return f"FuzzWorld({self.data})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


def _seed_outputs() -> dict[str, pl.DataFrame]:
    """A few output rows per table kind a validate run must never touch."""
    when = pl.lit(AS_OF, DATETIME)
    behavior = pl.DataFrame(
        {
            "activity_type": ["demo", "call"],
            "contact_role": ["cto", "unknown"],
            "occurrences": [3, 5],
            "mean_contribution": [0.1, -0.02],
        }
    )
    health = pl.DataFrame(
        {
            "customer_id": ["c1", "c2"],
            "sku": ["s1", "s2"],
            "health": ["green", "red"],
            "reasons": ["[]", '["stock-out within 8 hours"]'],
            "on_hand": [10.0, 0.0],
        }
    ).with_columns(projected_stockout_at=when.dt.offset_by("8h"))
    return {"behavior_value": behavior, "sku_health": health}


@pytest.fixture(scope="session")
def fuzz_world(tmp_path_factory: pytest.TempPathFactory) -> FuzzWorld:
    from salesml.sample import write_sample
    from salesml.warehouse import Warehouse

    root = tmp_path_factory.mktemp("fuzz-world")
    written = write_sample(root / "sample", deals=300, series=10, days=30, seed=1)
    data = root / "data"
    data.mkdir()
    frames: dict[str, pl.DataFrame] = {}
    for name, path in written.items():
        if "/" in name:  # truth/..., not an input table
            continue
        shutil.copyfile(path, data / path.name)
        frames[name] = pl.read_parquet(path)
    warehouse = root / "warehouse.duckdb"
    store = Warehouse(f"duckdb:///{warehouse}")
    store.write_batch(_seed_outputs(), as_of=AS_OF, run_id="seeded", model_version="0")
    seeded = {table: store.read(table) for table in store.tables() if table in _seed_outputs()}
    return FuzzWorld(data=data, frames=frames, warehouse=warehouse, seeded=seeded)


# ---------------------------------------------------------------------------------------------
# Crash world
# ---------------------------------------------------------------------------------------------
def salesml_command() -> list[str]:
    """The installed `salesml` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("salesml")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from salesml.cli import main; main()"]


def subprocess_env() -> dict[str, str]:
    """The environment of a `salesml` subprocess: unbuffered, so what it printed before a
    kill is in its output file."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("SALESML_PROGRESS", None)
    return env


@dataclass(frozen=True)
class CrashWorld:
    root: Path
    data: Path
    warehouse: Path
    mlflow_db: Path
    runtimes: Mapping[str, float]
    """Measured seconds from each command's launch to the end of its job (`finished_at`)."""
    heights: Mapping[str, int]
    """Rows each batch table holds at AS_OF after the session's first runs."""


def _run_timed(command: str, config: Path, cwd: Path, warehouse: Path) -> float:
    """Run `salesml COMMAND`; seconds from its launch to the end of its job (its run's
    `finished_at`), i.e. the span in which a kill interrupts the job rather than the exit of
    an interpreter that has already done its work."""
    from salesml.warehouse import Warehouse

    launched = datetime.now(UTC)
    done = subprocess.run(
        [
            *salesml_command(),
            *command.split(),
            "--config",
            str(config),
            "--as-of",
            AS_OF.isoformat(),
        ],
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"salesml {command}: {done.stderr[-3000:]}"
    runs = Warehouse(f"duckdb:///{warehouse}").read("runs")
    finished = runs.filter(pl.col("flow") == FLOWS[command])["finished_at"].max()
    assert isinstance(finished, datetime)
    return (finished - launched).total_seconds()


@pytest.fixture(scope="session")
def crash_world(tmp_path_factory: pytest.TempPathFactory, migrated_mlflow_db: Path) -> CrashWorld:
    """Both champions trained, one score and one forecast written, each command timed."""
    from salesml.sample import write_sample
    from salesml.warehouse import Warehouse

    root = tmp_path_factory.mktemp("crash-world")
    data = root / "data"
    write_sample(data, deals=1200, series=20, days=60, seed=3)
    mlflow_db = root / "mlflow" / "mlflow.db"
    mlflow_db.parent.mkdir()
    shutil.copyfile(migrated_mlflow_db, mlflow_db)
    warehouse = root / "warehouse.duckdb"
    config = write_config(root / "salesml.yaml", data, warehouse, mlflow_db, **FAST_MODELS)
    runtimes = {
        command: _run_timed(command, config, root, warehouse)
        for command in ("train deal-win", "train demand", "score deals", "forecast demand")
    }
    store = Warehouse(f"duckdb:///{warehouse}")
    heights = {
        table: store.read(table, as_of=AS_OF).height
        for tables in BATCHES.values()
        for table in tables
    }
    return CrashWorld(
        root=root,
        data=data,
        warehouse=warehouse,
        mlflow_db=mlflow_db,
        runtimes=runtimes,
        heights=heights,
    )
