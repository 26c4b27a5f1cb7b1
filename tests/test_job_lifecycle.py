"""job_run and JobRun: steps through an executor, and one run per flow and as_of at a time
(DuckDB and, when SALESML_TEST_PG_URL is set, PostgreSQL; threads racing for real)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from salesml.config import Settings, from_dict
from salesml.job_lifecycle import Executor, JobRun, job_run, use_executor
from salesml.migrations import create_table_sql
from salesml.warehouse import RunConflictError, Warehouse, _runs_schema
from tests.pipelines.conftest import fresh_pg_schema

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
AS_OF = datetime(2025, 6, 1, tzinfo=UTC)
LATER = datetime(2025, 6, 2, tzinfo=UTC)
NEW_RUNS_COLUMNS = ("host", "pid", "process_start", "heartbeat_at", "reconciled_at")


class Recorder(Executor):
    """Runs steps in place and records (name, io) of each."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, bool]] = []

    def run(
        self,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        io: bool,
    ) -> Any:
        self.steps.append((name, io))
        return fn(*args, **kwargs)


def _settings(url: str, wait: float = 30.0, stale_minutes: float = 360.0) -> Settings:
    return from_dict(
        {
            "sources": {"path": str(SAMPLE)},
            "warehouse": {"url": url, "lock_timeout_seconds": 10},
            "compute": {"run_wait_seconds": wait, "stale_run_minutes": stale_minutes},
        }
    )


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "duckdb":
        return f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_pg_schema() as url:
        yield url


def test_a_step_calls_its_function_in_place_by_default() -> None:
    run = JobRun(settings=Settings(), warehouse=None, run_id="r", flow="f", as_of=AS_OF)
    assert run.step("add", lambda a, b=0: a + b, 2, b=3) == 5
    assert run.map("double", lambda x, k: x * k, [1, 2, 3], k=2) == [2, 4, 6]
    assert run.partitions == 1


def test_load_and_write_are_steps_with_io_marked(tmp_path: Path) -> None:
    settings = _settings(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    recorder = Recorder()
    with job_run(settings, "unit", AS_OF, executor=recorder) as run:
        tables = run.load(["accounts"])
        run.write({"unit_output": pl.DataFrame({"n": [tables["accounts"].height]})})
    assert recorder.steps == [("pull", True), ("validate", False), ("write", True)]
    runs = Warehouse.from_settings(settings).read("runs")
    assert runs["status"].to_list() == ["succeeded"]


def test_job_run_takes_the_executor_set_by_use_executor(tmp_path: Path) -> None:
    settings = _settings(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    context, explicit = Recorder(), Recorder()
    with use_executor(context):
        with job_run(settings, "unit", AS_OF) as run:
            run.step("compute", lambda: 1)
        with job_run(settings, "unit", datetime(2025, 6, 2, tzinfo=UTC), executor=explicit) as run:
            run.step("other", lambda: 1)
    with job_run(settings, "unit", datetime(2025, 6, 3, tzinfo=UTC)) as run:
        run.step("outside", lambda: 1)  # back to the in-place default
    assert context.steps == [("compute", False)]
    assert explicit.steps == [("other", False)]


def test_a_running_run_blocks_the_same_flow_and_as_of_only(url: str) -> None:
    wh = Warehouse(url, lock_timeout_seconds=10)
    first = wh.start_run("score_deals", AS_OF, exclusive=True)
    with pytest.raises(RunConflictError, match=f"already running \\(run_id {first}.*pid"):
        wh.start_run("score_deals", AS_OF, exclusive=True, heartbeat_timeout_seconds=0.0)
    wh.start_run("score_deals", datetime(2025, 6, 2, tzinfo=UTC), exclusive=True)
    wh.start_run("forecast_demand", AS_OF, exclusive=True)
    wh.start_run("score_deals", AS_OF)  # no guard asked for: allowed, as before
    wh.finish_run(first, status="failed")
    runs = wh.read("runs")
    assert runs.height == 4
    assert set(runs["status"]) == {"running", "failed"}  # a live process is never abandoned


def _race(settings: Settings, hold: float) -> list[tuple[str, float, float] | BaseException]:
    """Two threads start job_run for the same flow and as_of at once; each holds its run for
    `hold` seconds and writes; returns (run_id, entered, left) or the exception, per thread."""
    barrier = threading.Barrier(2)
    out: list[tuple[str, float, float] | BaseException] = []

    def worker(value: int) -> None:
        barrier.wait()
        try:
            with job_run(settings, "score_deals", AS_OF) as run:
                entered = time.monotonic()
                time.sleep(hold)
                run.write({"race_output": pl.DataFrame({"id": [1, 2], "value": [value] * 2})})
                out.append((run.run_id, entered, time.monotonic()))
        except BaseException as exc:
            out.append(exc)

    threads = [threading.Thread(target=worker, args=(v,)) for v in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return out


def test_a_second_run_waits_for_the_first_then_runs(url: str) -> None:
    settings = _settings(url, wait=30)
    results = _race(settings, hold=0.6)
    spans = [r for r in results if isinstance(r, tuple)]
    assert len(spans) == 2, results
    (_, _, out1), (_, in2, _) = sorted(spans, key=lambda r: r[1])
    assert in2 >= out1  # never inside the job at the same time
    wh = Warehouse.from_settings(settings)
    assert wh.read("runs")["status"].to_list() == ["succeeded", "succeeded"]
    assert wh.read("race_output").height == 2  # one write replaced the other


def test_a_second_run_that_cannot_wait_fails_with_a_clear_message(url: str) -> None:
    settings = _settings(url, wait=0.3)
    results = _race(settings, hold=1.5)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], RunConflictError)
    message = str(errors[0])
    assert "score_deals for as_of 2025-06-01T00:00:00+00:00 is already running" in message
    assert "compute.run_wait_seconds" in message and "\n" not in message
    runs = Warehouse.from_settings(settings).read("runs")
    assert runs["status"].to_list() == ["succeeded"]  # the refused run left no record


def test_a_run_of_an_older_salesml_stops_blocking_once_stale(tmp_path: Path) -> None:
    """A warehouse from before heartbeats: its `runs` table lacks host/pid/heartbeat columns.
    The table gains them on the next start; its old 'running' row blocks until stale, then is
    marked abandoned."""
    import duckdb

    path = tmp_path / "wh.duckdb"
    settings = _settings(f"duckdb:///{path}", wait=0, stale_minutes=0.001)
    wh = Warehouse.from_settings(settings)
    runs_schema = _runs_schema()
    first_release = [c for c in runs_schema if c not in NEW_RUNS_COLUMNS]
    with duckdb.connect(str(path)) as con:  # the runs table as the first release made it
        columns = {c: runs_schema[c] for c in first_release}
        con.execute(create_table_sql("runs", columns, ["run_id"]))
        assert [r[1] for r in con.sql("PRAGMA table_info('runs')").fetchall()] == first_release
        con.execute(
            "INSERT INTO runs VALUES ('old', 'score_deals', ?, now() - INTERVAL 1 HOUR, NULL, "
            "'running', NULL, NULL, '{}', NULL)",
            [AS_OF],
        )
    with job_run(settings, "score_deals", AS_OF) as run:
        run.write({"unit_output": pl.DataFrame({"n": [2]})})
    runs = wh.read("runs").sort("started_at")
    assert runs["status"].to_list() == ["abandoned", "succeeded"]
    assert "without a heartbeat" in runs["message"][0]
    assert "marked abandoned: run old (score_deals" in runs["message"][1]
    assert runs["pid"][1] is not None and runs["heartbeat_at"][1] is not None


def test_an_empty_main_output_keeps_the_rows_an_earlier_run_wrote(tmp_path: Path) -> None:
    settings = _settings(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    wh = Warehouse.from_settings(settings)
    first = pl.DataFrame({"id": [1, 2, 3]})
    with job_run(settings, "score_deals", AS_OF) as run:
        run.write({"unit_scores": first, "unit_factors": first}, main="unit_scores")
    empty = first.clear()
    with job_run(settings, "score_deals", AS_OF) as run:
        run.write({"unit_scores": empty, "unit_factors": first.head(1)}, main="unit_scores")
        kept_run = run.run_id
    assert wh.read("unit_scores", as_of=AS_OF)["id"].to_list() == [1, 2, 3]
    assert wh.read("unit_factors", as_of=AS_OF).height == 3  # the batch is kept whole
    row = wh.get_run(kept_run)
    assert row is not None and row["status"] == "succeeded"
    assert "unit_scores: this run produced no rows; kept the 3 rows" in row["message"]
    assert row["row_counts"] == '{"unit_factors": 0, "unit_scores": 0}'
    # an empty result where nothing was written before is written (an empty table)
    with job_run(settings, "score_deals", LATER) as run:
        run.write({"unit_scores": empty}, main="unit_scores")
    assert wh.count_rows("unit_scores", LATER) == 0


def test_heartbeats_while_a_job_runs_and_stops_after(tmp_path: Path) -> None:
    settings = _settings(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    settings = settings.model_copy(
        update={"compute": settings.compute.model_copy(update={"heartbeat_seconds": 0.05})}
    )
    wh = Warehouse.from_settings(settings)
    with job_run(settings, "unit", AS_OF) as run:
        started = wh.get_run(run.run_id)
        time.sleep(0.4)
        beating = wh.get_run(run.run_id)
    assert started is not None and beating is not None
    assert beating["heartbeat_at"] > started["heartbeat_at"]
    assert (beating["host"], beating["pid"]) == (socket.gethostname(), os.getpid())
    assert not [t for t in threading.enumerate() if t.name.startswith("salesml-heartbeat")]


def test_messages_and_params_in_runs_are_redacted(tmp_path: Path) -> None:
    settings = _settings(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    url = "postgresql://app:hunter2@db/sales"
    with pytest.raises(RuntimeError), job_run(settings, "unit", AS_OF, params={"source": url}):
        raise RuntimeError(f"cannot connect to {url}\nsecond line")
    row = Warehouse.from_settings(settings).read("runs").row(0, named=True)
    assert "hunter2" not in row["params"] and "hunter2" not in row["message"]
    assert row["message"] == "RuntimeError: cannot connect to postgresql://app:***@db/sales"
