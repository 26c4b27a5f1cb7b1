"""kill -9 during train / score / forecast (issue 11, item 7): the warehouse stays consistent and
the next run succeeds at once.

For each command, the real `salesml` process is killed (SIGKILL, its whole process group) at
seeded random moments spread over the command's measured runtime (launch to the end of its
job), 7 effective kills per command (21 in all). After every kill:
- every output table has one row per key (SPEC keys), and the rows of one (table, as_of) carry
  one run_id: a batch is all-or-nothing, across all the tables of the batch, with as many rows
  as a complete run writes;
- a row belongs to a `succeeded` run, or to a killed run whose batch committed in full before
  the kill (until the next run closes that chapter);
- the killed run is not `succeeded` (unless the kill landed after the job had finished);
- for training: `@champion` never points past the outputs (behaviour value) of its run.
After the 3rd and 7th kill the command is run again: it exits 0 without waiting for the dead
runs (they are `abandoned` at once, not after `compute.run_wait_seconds`), after which every
row belongs to a `succeeded` run. Training ends with a `score deals` on whatever is champion.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from salesml.contract import OUTPUT_KEYS
from salesml.warehouse import Warehouse
from tests.fast_models import FAST_MODELS
from tests.hostile.conftest import (
    AS_OF,
    BATCHES,
    FLOWS,
    RUN_WAIT_SECONDS,
    WRITE_SCOPES,
    CrashWorld,
    salesml_command,
    subprocess_env,
    write_config,
)

pytestmark = pytest.mark.slow

KILLS_PER_COMMAND = 7
RECOVER_AFTER_KILLS = (3, 7)
MAX_ATTEMPTS = 16
"""Attempts whose process finished before its kill do not count; give up after this many."""
PROMPT_START_SECONDS = RUN_WAIT_SECONDS / 2
"""A next run must open its `runs` row well before `compute.run_wait_seconds` would expire."""
DEAL_MODEL = "salesml-deal-win"
WAREHOUSE_RUN_TAG = "salesml.warehouse_run_id"


@dataclass
class Workdir:
    """One test's private copy of the crash world: config, warehouse, MLflow store."""

    root: Path
    config: Path
    warehouse: Path
    mlflow_db: Path

    @property
    def store(self) -> Warehouse:
        return Warehouse(f"duckdb:///{self.warehouse}", lock_timeout_seconds=30)


@dataclass
class Attempt:
    """One launch of a command that was meant to be killed."""

    delay: float
    killed: bool
    returncode: int
    run_id: str | None
    status: str | None
    stdout: str
    stderr: str

    @property
    def effective(self) -> bool:
        """The kill hit a job that had not finished (a run that succeeded was already done)."""
        return self.killed and self.status != "succeeded"


def _copy_with_sidecars(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    for suffix in (".wal", "-wal", "-shm", "-journal"):
        sidecar = source.with_name(source.name + suffix)
        if sidecar.is_file():
            shutil.copyfile(sidecar, target.with_name(target.name + suffix))


@pytest.fixture
def workdir(crash_world: CrashWorld, tmp_path: Path) -> Workdir:
    warehouse = tmp_path / "warehouse.duckdb"
    mlflow_db = tmp_path / "mlflow" / "mlflow.db"
    _copy_with_sidecars(crash_world.warehouse, warehouse)
    _copy_with_sidecars(crash_world.mlflow_db, mlflow_db)
    config = write_config(
        tmp_path / "salesml.yaml", crash_world.data, warehouse, mlflow_db, **FAST_MODELS
    )
    return Workdir(tmp_path, config, warehouse, mlflow_db)


# ---------------------------------------------------------------------------------------------
# Running and killing
# ---------------------------------------------------------------------------------------------
def _argv(command: str, workdir: Workdir) -> list[str]:
    return [
        *salesml_command(),
        *command.split(),
        "--config",
        str(workdir.config),
        "--as-of",
        AS_OF.isoformat(),
    ]


def _run_ids(workdir: Workdir) -> set[str]:
    store = workdir.store
    if "runs" not in store.tables():
        return set()
    return set(store.read("runs")["run_id"].to_list())


def run_and_kill(workdir: Workdir, command: str, delay: float, n: int) -> Attempt:
    """Start `command`, SIGKILL its process group after `delay` s unless it exited first."""
    before = _run_ids(workdir)
    out, err = workdir.root / f"attempt-{n}.out", workdir.root / f"attempt-{n}.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(
            _argv(command, workdir),
            cwd=workdir.root,
            env=subprocess_env(),
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=delay)
            killed = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            killed = True
    runs = _runs(workdir)
    new = runs.filter(~pl.col("run_id").is_in(list(before)) & (pl.col("flow") == FLOWS[command]))
    assert new.height <= 1, f"one launch opened {new.height} runs"
    attempt = Attempt(
        delay=delay,
        killed=killed,
        returncode=proc.returncode,
        run_id=new["run_id"][0] if new.height else None,
        status=new["status"][0] if new.height else None,
        stdout=out.read_text(),
        stderr=err.read_text(),
    )
    if not killed:  # it finished before the kill: then it must have succeeded
        assert attempt.returncode == 0, f"{command} failed on its own: {attempt.stderr[-2000:]}"
        assert attempt.status == "succeeded", attempt
    return attempt


def run_to_the_end(workdir: Workdir, command: str) -> tuple[str, float]:
    """Run `command` to completion; its run_id and how long it took to open its `runs` row."""
    before = _run_ids(workdir)
    launched = datetime.now(UTC)
    done = subprocess.run(
        _argv(command, workdir),
        cwd=workdir.root,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"the run after the kills failed: {done.stderr[-3000:]}"
    runs = _runs(workdir)
    new = runs.filter(~pl.col("run_id").is_in(list(before)) & (pl.col("flow") == FLOWS[command]))
    assert new.height == 1 and new["status"][0] == "succeeded", new
    waited = (new["started_at"][0] - launched).total_seconds()
    return str(new["run_id"][0]), waited


# ---------------------------------------------------------------------------------------------
# Invariants
# ---------------------------------------------------------------------------------------------
def _runs(workdir: Workdir) -> pl.DataFrame:
    store = workdir.store
    return store.read("runs") if "runs" in store.tables() else pl.DataFrame()


def check_warehouse(
    workdir: Workdir, crash_world: CrashWorld, killed: set[str], *, settled: bool
) -> None:
    """The warehouse invariants. `killed`: run_ids of killed runs. `settled`: a run of the
    command has succeeded since the last kill, so every row must belong to a succeeded run."""
    store = workdir.store
    runs = _runs(workdir)
    status = dict(zip(runs["run_id"].to_list(), runs["status"].to_list(), strict=True))
    versions = dict(zip(runs["run_id"].to_list(), runs["model_version"].to_list(), strict=True))
    for run_id in killed:
        assert status.get(run_id) != "succeeded", f"killed run {run_id} is 'succeeded'"
    present = set(store.tables())
    outputs = {
        table: store.read(table)
        for table, key in OUTPUT_KEYS.items()
        if key and table != "runs" and table in present
    }
    for table, frame in outputs.items():
        assert not frame.select(OUTPUT_KEYS[table]).is_duplicated().any(), f"{table}: key twice"
        scope = ["as_of", *WRITE_SCOPES.get(table, ())]
        per_as_of = frame.group_by(scope).agg(pl.col("run_id").n_unique().alias("runs"))
        assert (per_as_of["runs"] == 1).all(), f"{table}: rows of one as_of from several runs"
        for run_id in frame["run_id"].unique().to_list():
            state = status.get(run_id)
            if state == "succeeded":
                mine = frame.filter(pl.col("run_id") == run_id)
                if "model_version" not in mine.columns:  # alerts: a state table, no model's output
                    continue
                assert mine["model_version"].unique().to_list() == [versions[run_id]], (
                    f"{table}: rows of run {run_id} carry another model version than its run"
                )
                continue
            assert not settled, f"{table}: rows of run {run_id}, which is {state!r}"
            assert run_id in killed, f"{table}: rows of run {run_id} ({state!r}), never killed"
    for tables in BATCHES.values():
        check_batch(outputs, crash_world, tables)


def check_batch(
    outputs: dict[str, pl.DataFrame], crash_world: CrashWorld, tables: tuple[str, ...]
) -> None:
    """All tables of one batch at AS_OF come from one run, each with a complete run's rows."""
    writers: set[str] = set()
    for table in tables:
        if table not in outputs:
            continue
        frame = outputs[table].filter(pl.col("as_of") == AS_OF)
        assert frame.height == crash_world.heights[table], (
            f"{table}: {frame.height} rows at as_of, a complete run writes "
            f"{crash_world.heights[table]}"
        )
        writers.update(frame["run_id"].unique().to_list())
    assert len(writers) <= 1, f"one batch {tables} written by several runs: {sorted(writers)}"


def _mlflow(workdir: Workdir) -> sqlite3.Connection:
    """MLflow's SQLite store, read-only (tables of MLflow 3.17's SQLAlchemy store)."""
    return sqlite3.connect(f"file:{workdir.mlflow_db}?mode=ro", uri=True)


def champion_run(workdir: Workdir) -> tuple[int, str]:
    """The deal-win champion's version and the warehouse run that trained it."""
    with _mlflow(workdir) as db:
        row = db.execute(
            "SELECT v.version, t.value FROM registered_model_aliases a "
            "JOIN model_versions v ON v.name = a.name AND v.version = a.version "
            "JOIN tags t ON t.run_uuid = v.run_id AND t.key = ? "
            "WHERE a.name = ? AND a.alias = 'champion'",
            (WAREHOUSE_RUN_TAG, DEAL_MODEL),
        ).fetchone()
    assert row is not None, "no deal-win champion (or its run lost the warehouse run tag)"
    return int(row[0]), str(row[1])


def still_running_in_mlflow(workdir: Workdir, run_ids: set[str]) -> list[str]:
    """Warehouse runs among `run_ids` whose MLflow run is still RUNNING."""
    with _mlflow(workdir) as db:
        rows = db.execute(
            "SELECT t.value FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = ? "
            "WHERE r.status = 'RUNNING'",
            (WAREHOUSE_RUN_TAG,),
        ).fetchall()
    return sorted({value for (value,) in rows} & run_ids)


def check_champion(workdir: Workdir, *, settled: bool) -> None:
    """`@champion` never points past the behaviour value written for its as_of: training
    writes its outputs before it promotes, so the rows are from the champion's run or a later
    one; once settled, the champion's run is closed (succeeded, or abandoned and reconciled)."""
    version, champion_run_id = champion_run(workdir)
    runs = _runs(workdir)
    started = dict(zip(runs["run_id"].to_list(), runs["started_at"].to_list(), strict=True))
    status = dict(zip(runs["run_id"].to_list(), runs["status"].to_list(), strict=True))
    writers = workdir.store.read("behavior_value", as_of=AS_OF)["run_id"].unique().to_list()
    assert len(writers) == 1
    if champion_run_id in started:
        assert started[writers[0]] >= started[champion_run_id], (
            f"@champion is v{version} of run {champion_run_id}, but behavior_value at as_of "
            f"is from the older run {writers[0]}"
        )
    if settled:
        assert status.get(champion_run_id) in {"succeeded", "abandoned"}, (
            f"@champion v{version} comes from run {champion_run_id}, "
            f"which is {status.get(champion_run_id)!r}"
        )


# ---------------------------------------------------------------------------------------------
# The crash test
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["train deal-win", "score deals", "forecast demand"])
def test_kill_minus_nine_leaves_a_consistent_warehouse_and_the_next_run_succeeds(
    command: str, crash_world: CrashWorld, workdir: Workdir
) -> None:
    rng = random.Random(f"salesml-crash-{command}")
    runtime = crash_world.runtimes[command]
    training = command.startswith("train")
    attempts: list[Attempt] = []
    killed: set[str] = set()
    kills = 0
    while kills < KILLS_PER_COMMAND:
        assert len(attempts) < MAX_ATTEMPTS, (
            f"only {kills} of {len(attempts)} launches were still running at their kill"
        )
        delay = rng.uniform(0.05, 1.0) * runtime
        attempt = run_and_kill(workdir, command, delay, len(attempts))
        attempts.append(attempt)
        if not attempt.effective:
            # the job was done within `delay`: runs after the session's first one are faster
            # (warm caches, an existing registered model), so aim the next kills earlier
            runtime = min(runtime, 0.8 * delay)
            check_warehouse(workdir, crash_world, killed, settled=True)
            continue
        kills += 1
        if attempt.run_id is not None:
            killed.add(attempt.run_id)
        check_warehouse(workdir, crash_world, killed, settled=False)
        if training:
            check_champion(workdir, settled=False)
        if kills in RECOVER_AFTER_KILLS:
            _, waited = run_to_the_end(workdir, command)
            assert waited < PROMPT_START_SECONDS, (
                f"the run after a kill waited {waited:.1f} s before it started "
                f"(compute.run_wait_seconds = {RUN_WAIT_SECONDS:g})"
            )
            status = dict(_runs(workdir).select("run_id", "status").iter_rows())
            dead = {run_id: status[run_id] for run_id in killed}
            assert set(dead.values()) <= {"abandoned"}, f"killed runs after the next run: {dead}"
            check_warehouse(workdir, crash_world, killed, settled=True)
            if training:
                check_champion(workdir, settled=True)
                assert still_running_in_mlflow(workdir, killed) == [], (
                    "MLflow runs of killed training runs are still RUNNING"
                )
    assert kills == KILLS_PER_COMMAND
    summary = [(round(a.delay, 2), a.killed, a.status) for a in attempts]
    print(f"{command}: runtime {runtime:.1f} s; attempts (delay, killed, status): {summary}")
    if training:  # whatever is champion now can be loaded and used
        run_to_the_end(workdir, "score deals")


def test_the_crash_world_is_complete(crash_world: CrashWorld) -> None:
    """The starting point of the crash test: every batch table has rows, every run succeeded."""
    store = Warehouse(f"duckdb:///{crash_world.warehouse}")
    assert all(height > 0 for height in crash_world.heights.values()), crash_world.heights
    runs = store.read("runs")
    assert set(runs["status"]) == {"succeeded"}
    counts = [json.loads(text or "{}") for text in runs["row_counts"].to_list()]
    assert any(c.get("deal_scores") == crash_world.heights["deal_scores"] for c in counts)
    assert all(seconds < 120 for seconds in crash_world.runtimes.values()), crash_world.runtimes
