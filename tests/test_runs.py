"""Runs that die are seen to die: a killed run is marked `abandoned` by the next run (same
host: at once; another host: after the heartbeat timeout), and `salesml runs list|abandon`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from salesml import warehouse as warehouse_module
from salesml.cli import app
from salesml.config import Settings, from_dict
from salesml.job_lifecycle import job_run
from salesml.warehouse import (
    RunConflictError,
    RunOwner,
    Warehouse,
    current_owner,
    process_is_gone,
    why_dead,
)

AS_OF = datetime(2025, 6, 1, tzinfo=UTC)
NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[1]


def _settings(tmp_path: Path, **compute: float) -> Settings:
    return from_dict(
        {
            "warehouse": {"url": f"duckdb:///{tmp_path / 'wh.duckdb'}", "lock_timeout_seconds": 10},
            "compute": {"run_wait_seconds": 0, **compute},
        }
    )


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _start_as(
    monkeypatch: pytest.MonkeyPatch, wh: Warehouse, owner: RunOwner, flow: str = "score_deals"
) -> str:
    """A 'running' row owned by `owner` (another process, maybe on another host)."""
    with monkeypatch.context() as patch:
        patch.setattr(warehouse_module, "current_owner", lambda: owner)
        return wh.start_run(flow, AS_OF)


# --- who is dead (pure rules) -----------------------------------------------------------------


def test_why_dead_same_host_other_host_and_old_rows() -> None:
    me = current_owner()
    mine = {"host": me.host, "pid": me.pid, "process_start": me.process_start}
    policy = {"heartbeat_timeout_seconds": 300.0, "stale_after_seconds": 3600.0}
    assert why_dead(mine, me, NOW, **policy) is None
    gone = {**mine, "pid": _dead_pid(), "process_start": "1"}
    assert "is gone" in (why_dead(gone, me, NOW, **policy) or "")

    recent = NOW - timedelta(seconds=200)
    elsewhere = {"host": "other-host", "pid": me.pid, "heartbeat_at": recent}
    assert why_dead(elsewhere, me, NOW, **policy) is None  # the pid means nothing there
    silent = {**elsewhere, "heartbeat_at": NOW - timedelta(seconds=301)}
    assert "no heartbeat from pid" in (why_dead(silent, me, NOW, **policy) or "")

    legacy = {"host": None, "pid": None, "started_at": NOW - timedelta(hours=2)}
    assert "without a heartbeat" in (why_dead(legacy, me, NOW, **policy) or "")
    assert why_dead({**legacy, "started_at": NOW - timedelta(minutes=5)}, me, NOW, **policy) is None


def test_a_reused_pid_is_not_the_process_that_started_the_run() -> None:
    me = current_owner()
    if me.process_start is None:
        pytest.skip("no /proc: process start times are unknown here")
    assert not process_is_gone(me.pid, me.process_start)
    assert process_is_gone(me.pid, str(int(me.process_start) - 1))  # same pid, older process
    assert process_is_gone(_dead_pid(), None)


# --- the next run marks dead runs abandoned ---------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import sys, time
    from datetime import datetime
    from salesml.config import from_dict
    from salesml.job_lifecycle import job_run

    settings = from_dict({"warehouse": {"url": sys.argv[1]}})
    with job_run(settings, "score_deals", datetime.fromisoformat(sys.argv[2])):
        print("ready", flush=True)
        time.sleep(120)
    """
)


def test_a_killed_run_is_abandoned_at_once_by_the_next_run(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, settings.warehouse.url, AS_OF.isoformat()],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    finally:
        child.kill()  # SIGKILL: no finally, no atexit, the row stays 'running'
        child.wait()
    wh = Warehouse.from_settings(settings)
    (dead,) = wh.list_runs().rows(named=True)
    assert (dead["status"], dead["pid"]) == ("running", child.pid)

    with job_run(settings, "score_deals", AS_OF) as run:  # run_wait_seconds = 0: no waiting
        pass
    dead_row, new_row = wh.get_run(dead["run_id"]), wh.get_run(run.run_id)
    assert dead_row is not None and new_row is not None
    assert dead_row["status"] == "abandoned" and dead_row["finished_at"] is not None
    assert f"its process {child.pid} on {dead['host']} is gone" in dead_row["message"]
    assert f"marked abandoned: run {dead['run_id']} (score_deals" in new_row["message"]
    assert new_row["status"] == "succeeded"


def test_a_silent_run_on_another_host_blocks_until_its_heartbeat_times_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wh = Warehouse.from_settings(_settings(tmp_path))
    other = _start_as(monkeypatch, wh, RunOwner("another-host", os.getpid(), None))
    waiting = _settings(tmp_path, heartbeat_timeout_seconds=300)
    with (
        pytest.raises(RunConflictError, match=r"pid \d+ on another-host.*heartbeat_timeout"),
        job_run(waiting, "score_deals", AS_OF),
    ):
        pass
    assert wh.get_run(other)["status"] == "running"  # type: ignore[index]
    with job_run(_settings(tmp_path, heartbeat_timeout_seconds=0.001), "score_deals", AS_OF):
        pass
    row = wh.get_run(other)
    assert row is not None and row["status"] == "abandoned"
    assert "no heartbeat from pid" in row["message"]


def test_a_run_marked_abandoned_while_alive_still_records_how_it_ended(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    wh = Warehouse.from_settings(settings)
    with job_run(settings, "score_deals", AS_OF) as run:
        wh.abandon_run(run.run_id, "abandoned by hand")
        assert wh.heartbeat(run.run_id) == "abandoned"
    row = wh.get_run(run.run_id)
    assert row is not None and row["status"] == "succeeded"
    assert "had been marked abandoned: abandoned by hand" in row["message"]


# --- salesml runs list | abandon --------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "salesml.yaml"
    path.write_text(f'warehouse: {{url: "duckdb:///{tmp_path / "wh.duckdb"}"}}\n')
    return path


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_runs_list_and_abandon(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out = _cli("runs", "list", "--config", str(config))
    assert (code, out.strip()) == (0, "no runs")

    wh = Warehouse.from_settings(_settings(tmp_path))
    me = current_owner()
    alive = _start_as(monkeypatch, wh, me)
    dead = _start_as(monkeypatch, wh, RunOwner(me.host, _dead_pid(), None), "train_deal_win")
    code, out = _cli("runs", "list", "--config", str(config))
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 2
    assert f"{dead}  train_deal_win" in lines[0] and "running (process gone)" in lines[0]
    assert lines[1].startswith(alive) and "score_deals  as_of 2025-06-01" in lines[1]
    assert re.search(
        r"  running  started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC  pid \d+ on ", lines[1]
    )

    code, out = _cli("runs", "abandon", dead, "--config", str(config))
    assert code == 0, out
    assert out.strip() == (
        f"run {dead} (train_deal_win, as_of 2025-06-01T00:00:00+00:00) abandoned; "
        "the next training run reconciles the model registry"
    )
    code, out = _cli("runs", "list", "--status", "abandoned", "--config", str(config))
    assert out.strip().splitlines()[0].startswith(dead) and "abandoned by hand" in out

    code, out = _cli("runs", "abandon", dead, "--config", str(config))
    assert (
        code == 1
        and out.strip() == f"error: run {dead} is abandoned, not running: nothing to abandon"
    )
    code, out = _cli("runs", "abandon", alive, "--config", str(config))
    assert code == 1 and "is still running as pid" in out and "--force" in out
    code, out = _cli("runs", "abandon", "nope", "--config", str(config))
    assert code == 1 and len(out.strip().splitlines()) == 1 and "unknown run_id 'nope'" in out
    code, out = _cli("runs", "list", "--status", "dead", "--config", str(config))
    assert code == 2 and "--status must be one of" in out
