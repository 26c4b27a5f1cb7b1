"""Warehouse: idempotent batch writes, all-or-nothing failures, schema evolution, locks.

Every behaviour test runs on DuckDB (tmp_path) and, when SALESML_TEST_PG_URL is set, on
PostgreSQL (a fresh schema per test); the postgres variants are marked `postgres`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from salesml.config import Settings, WarehouseSettings
from salesml.timeutil import DATETIME
from salesml.warehouse import Warehouse, WarehouseError, WarehouseLockedError

PG_URL_ENV = "SALESML_TEST_PG_URL"
AS_OF = datetime(2024, 6, 1, tzinfo=UTC)
LATER = AS_OF + timedelta(days=1)
SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
SCORE_COLUMNS = ["as_of", "deal_id", "win_probability", "health", "health_reasons"]


def _with_schema(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


def _pg_execute(url: str, sql: str) -> None:
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(url, autocommit=True) as con, con.cursor() as cur:
        cur.execute(sql)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh schema in the PostgreSQL database of SALESML_TEST_PG_URL, dropped afterwards."""
    base = os.environ.get(PG_URL_ENV)
    if not base:
        pytest.skip(f"set {PG_URL_ENV}=postgresql://user@host:port/db to run PostgreSQL tests")
    schema = f"salesml_test_{uuid.uuid4().hex[:12]}"
    _pg_execute(base, f'CREATE SCHEMA "{schema}"')
    try:
        yield _with_schema(base, schema)
    finally:
        _pg_execute(base, f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty warehouse: a new DuckDB file, or a new PostgreSQL schema."""
    if request.param == "duckdb":
        return f"duckdb:///{tmp_path / 'wh' / 'warehouse.duckdb'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def wh(url: str) -> Warehouse:
    return Warehouse(url, lock_timeout_seconds=5)


def scores(deal_ids: list[str], prob: float, as_of: datetime = AS_OF) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "as_of": [as_of] * len(deal_ids),
            "deal_id": deal_ids,
            "win_probability": [prob] * len(deal_ids),
            "health": ["green" if prob >= 0.5 else "red"] * len(deal_ids),
            "health_reasons": ['["no activity for 14 days"]'] * len(deal_ids),
            "top_factors": ['["+0.12 CTO meeting 2 days ago"]'] * len(deal_ids),
        },
        schema_overrides={"as_of": DATETIME},
    )


def factors(deal_ids: list[str], contribution: float) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "deal_id": [d for d in deal_ids for _ in (1, 2)],
            "rank": [1, 2] * len(deal_ids),
            "feature": ["cto_meetings_30d", "days_in_stage"] * len(deal_ids),
            "feature_value": ["2", "21"] * len(deal_ids),
            "contribution": [contribution, -contribution] * len(deal_ids),
        }
    )


def read_scores(wh: Warehouse, as_of: datetime | None = AS_OF) -> pl.DataFrame:
    return wh.read("deal_scores", as_of=as_of).select(SCORE_COLUMNS)


def write_v1(wh: Warehouse) -> str:
    run_id = wh.start_run("score_deals", AS_OF)
    wh.write_batch(
        {
            "deal_scores": scores(["d1", "d2", "d3"], 0.2),
            "deal_score_factors": factors(["d1"], 0.1),
        },
        as_of=AS_OF,
        run_id=run_id,
    )
    return run_id


# --- round trip ------------------------------------------------------------------------------


def test_round_trip_keeps_dtypes_and_instants(wh: Warehouse) -> None:
    berlin = ZoneInfo("Europe/Berlin")
    frame = pl.DataFrame(
        {
            "deal_id": ["d1", "d2"],
            "win_probability": [0.25, 0.75],
            "health": ["red", "green"],
            "health_reasons": ['["slipped twice"]', None],
            "top_factors": [None, "[]"],
            "scored_at": [datetime(2024, 6, 1, 9, 30, 0, 123456, tzinfo=berlin), None],
            "period_start": [date(2024, 6, 1), date(2024, 7, 1)],
            "open_days": pl.Series([3, 40], dtype=pl.Int32),
            "flagged": [True, None],
            "tags": [["cto", "demo"], []],
            "drivers": [[{"feature": "cto", "contribution": 0.12}], None],
            "stage": pl.Series(
                ["proposal", "negotiation"], dtype=pl.Enum(["proposal", "negotiation"])
            ),
        }
    )
    wh.write_batch({"deal_scores": frame}, as_of=AS_OF.astimezone(berlin), run_id="r1")

    out = wh.read("deal_scores", as_of=AS_OF)
    expected = frame.with_columns(
        pl.col("scored_at").dt.convert_time_zone("UTC"),
        as_of=pl.lit(AS_OF, DATETIME),
        run_id=pl.lit("r1"),
    )
    assert_frame_equal(out.select(expected.columns), expected)
    assert out.schema["scored_at"] == DATETIME
    assert out["scored_at"][0] == datetime(2024, 6, 1, 7, 30, 0, 123456, tzinfo=UTC)
    # columns the contract declares but the frame lacked exist (as nulls)
    assert out["model_version"].null_count() == 2


def test_naive_datetime_is_refused(wh: Warehouse) -> None:
    frame = scores(["d1"], 0.5).with_columns(scored_at=pl.lit(datetime(2024, 6, 1)))
    with pytest.raises(WarehouseError, match="naive datetime"):
        wh.write_batch({"deal_scores": frame}, as_of=AS_OF, run_id="r1")
    with pytest.raises(WarehouseError, match="tz-aware"):
        wh.write_batch({"deal_scores": scores(["d1"], 0.5)}, as_of=datetime(2024, 6, 1), run_id="r")


# --- idempotence -----------------------------------------------------------------------------


def test_rewrite_same_as_of_leaves_one_row_per_key(wh: Warehouse) -> None:
    write_v1(wh)
    written = wh.write_batch(
        {"deal_scores": scores(["d1", "d2", "d3"], 0.9)}, as_of=AS_OF, run_id="r2"
    )
    assert written == {"deal_scores": 3}
    out = wh.read("deal_scores")
    assert out.height == 3
    assert out["win_probability"].to_list() == [0.9, 0.9, 0.9]
    assert set(out["run_id"]) == {"r2"}


def test_other_as_of_rows_are_kept_and_stale_rows_removed(wh: Warehouse) -> None:
    write_v1(wh)
    wh.write_batch({"deal_scores": scores(["d1", "d4"], 0.6, LATER)}, as_of=LATER, run_id="r2")
    wh.write_batch({"deal_scores": scores(["d2"], 0.7)}, as_of=AS_OF, run_id="r3")

    assert read_scores(wh, AS_OF)["deal_id"].to_list() == ["d2"]  # d1, d3 were stale
    assert read_scores(wh, LATER)["deal_id"].to_list() == ["d1", "d4"]
    assert wh.read("deal_scores").height == 3
    assert wh.latest_as_of("deal_scores") == LATER
    # factors were not in the later batches: untouched
    assert wh.read("deal_score_factors").height == 2
    # an empty frame empties its as_of
    wh.write_batch({"deal_scores": scores([], 0.5, LATER)}, as_of=LATER, run_id="r4")
    assert read_scores(wh, LATER).height == 0
    assert read_scores(wh, AS_OF).height == 1


def test_rewrite_replaces_whole_rows(wh: Warehouse) -> None:
    with_note = scores(["d1", "d2"], 0.5).with_columns(note=pl.lit("checked"))
    wh.write_batch({"deal_scores": with_note}, as_of=AS_OF, run_id="r1")
    wh.write_batch({"deal_scores": scores(["d1"], 0.7)}, as_of=AS_OF, run_id="r2")
    out = wh.read("deal_scores")
    assert out.select("deal_id", "win_probability", "note", "run_id").rows() == [
        ("d1", 0.7, None, "r2")
    ]


def test_frame_as_of_must_match_the_batch(wh: Warehouse) -> None:
    with pytest.raises(WarehouseError, match="as_of other than"):
        wh.write_batch({"deal_scores": scores(["d1"], 0.5, LATER)}, as_of=AS_OF, run_id="r1")


# --- all or nothing --------------------------------------------------------------------------


def test_failure_after_first_table_leaves_previous_rows(
    wh: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_v1(wh)
    before = {t: wh.read(t) for t in ("deal_scores", "deal_score_factors")}
    original = Warehouse._replace

    def fail_on_second_table(
        self: Warehouse, session: Any, table: str, frame: pl.DataFrame, **kw: Any
    ) -> None:
        if table == "deal_score_factors":
            raise RuntimeError("injected failure")
        original(self, session, table, frame, **kw)

    monkeypatch.setattr(Warehouse, "_replace", fail_on_second_table)
    batch = {"deal_scores": scores(["d1", "d9"], 0.9), "deal_score_factors": factors(["d9"], 0.5)}
    with pytest.raises(RuntimeError, match="injected"):
        wh.write_batch(batch, as_of=AS_OF, run_id="r2")
    monkeypatch.undo()

    for table, frame in before.items():
        assert_frame_equal(wh.read(table), frame)


def test_failure_half_way_through_rows_leaves_previous_rows(
    wh: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_v1(wh)
    before = wh.read("deal_scores")
    original = Warehouse._replace

    def write_half_then_fail(
        self: Warehouse, session: Any, table: str, frame: pl.DataFrame, **kw: Any
    ) -> None:
        original(self, session, table, frame.head(frame.height // 2), **kw)
        raise RuntimeError("injected failure")

    monkeypatch.setattr(Warehouse, "_replace", write_half_then_fail)
    new = scores(["d1", "d2", "n1", "n2", "n3", "n4"], 0.9)  # d1, d2 updated; d3 dropped
    with pytest.raises(RuntimeError, match="injected"):
        wh.write_batch({"deal_scores": new}, as_of=AS_OF, run_id="r2")
    with pytest.raises(RuntimeError, match="injected"):
        wh.write_batch({"deal_scores": scores(["n1", "n2"], 0.9, LATER)}, as_of=LATER, run_id="r3")
    monkeypatch.undo()

    assert_frame_equal(wh.read("deal_scores"), before)


def test_failed_first_write_creates_no_table(
    wh: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(self: Warehouse, session: Any, table: str, frame: pl.DataFrame, **kw: Any) -> None:
        raise RuntimeError("injected failure")

    monkeypatch.setattr(Warehouse, "_replace", fail)
    with pytest.raises(RuntimeError):
        wh.write_batch({"deal_scores": scores(["d1"], 0.5)}, as_of=AS_OF, run_id="r1")
    monkeypatch.undo()
    assert "deal_scores" not in wh.tables()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (scores(["d1", "d1"], 0.5), r"duplicated keys \(as_of, deal_id\)"),
        (
            scores(["d1", "d2"], 0.5).with_columns(win_probability=pl.Series([0.5, 1.5])),
            "between 0 and 1",
        ),
        (scores(["d1"], 0.5).drop("deal_id"), "deal_id"),
    ],
    ids=["duplicate-key", "contract-check", "missing-key"],
)
def test_invalid_frame_is_refused_before_anything_changes(
    wh: Warehouse, bad: pl.DataFrame, message: str
) -> None:
    write_v1(wh)
    before = wh.read("deal_scores")
    batch = {"deal_score_factors": factors(["d7"], 0.3), "deal_scores": bad}
    with pytest.raises(WarehouseError, match=message):
        wh.write_batch(batch, as_of=AS_OF, run_id="r2")
    assert_frame_equal(wh.read("deal_scores"), before)
    assert wh.read("deal_score_factors")["deal_id"].to_list() == ["d1", "d1"]


# --- schema evolution ------------------------------------------------------------------------


def test_new_column_is_added_to_an_existing_table(wh: Warehouse) -> None:
    write_v1(wh)
    newer = scores(["d5"], 0.8, LATER).with_columns(
        feature_set=pl.lit("v2"), reasons_list=pl.lit(["a", "b"], pl.List(pl.String))
    )
    wh.write_batch({"deal_scores": newer}, as_of=LATER, run_id="r2")

    out = wh.read("deal_scores")
    assert out.height == 4
    assert out.schema["reasons_list"] == pl.List(pl.String)
    assert out.filter(pl.col("as_of") == AS_OF)["feature_set"].null_count() == 3
    assert out.filter(pl.col("as_of") == LATER).row(0, named=True)["reasons_list"] == ["a", "b"]


def test_column_of_an_incompatible_dtype_is_refused(wh: Warehouse) -> None:
    wh.write_batch(
        {"deal_scores": scores(["d1"], 0.5).with_columns(note=pl.lit(1))}, as_of=AS_OF, run_id="r"
    )
    with pytest.raises(WarehouseError, match=r"deal_scores\.note is .* holds Int32"):
        wh.write_batch(
            {"deal_scores": scores(["d1"], 0.6).with_columns(note=pl.lit("x"))},
            as_of=AS_OF,
            run_id="r",
        )
    assert wh.read("deal_scores")["win_probability"].to_list() == [0.5]


# --- runs and quarantine ---------------------------------------------------------------------


def test_run_lifecycle(wh: Warehouse) -> None:
    run_id = wh.start_run("score_deals", AS_OF, params={"top_k": 5})
    assert len(run_id) == 32
    row = wh.read("runs").row(0, named=True)
    assert (row["status"], row["flow"], row["as_of"]) == ("running", "score_deals", AS_OF)
    assert row["finished_at"] is None and row["params"] == '{"top_k": 5}'

    wh.finish_run(run_id, "succeeded", model_version="3", row_counts={"deal_scores": 120})
    row = wh.read("runs").row(0, named=True)
    assert (row["status"], row["model_version"], row["row_counts"]) == (
        "succeeded",
        "3",
        '{"deal_scores": 120}',
    )
    assert row["started_at"] <= row["finished_at"] <= datetime.now(UTC)

    with pytest.raises(WarehouseError, match="unknown run_id"):
        wh.finish_run("nope", "failed")
    with pytest.raises(ValueError, match="status"):
        wh.finish_run(run_id, "done")


def test_quarantine_is_replaced_per_run(wh: Warehouse) -> None:
    run_a = wh.start_run("score_deals", AS_OF)
    run_b = wh.start_run("score_deals", LATER)

    def bad_rows(n: int) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "table_name": ["deals"] * n,
                "row": [f'{{"deal_id": "x{i}"}}' for i in range(n)],
                "check": ["not_nullable"] * n,
                "reason": ["deal_id is null"] * n,
            }
        )

    wh.write_quarantine(run_a, bad_rows(3))
    wh.write_quarantine(run_b, bad_rows(1))
    wh.write_quarantine(run_a, bad_rows(2))

    out = wh.read("quarantine")
    assert out.group_by("run_id").len().sort("run_id").rows() == sorted([(run_a, 2), (run_b, 1)])
    assert set(out.filter(pl.col("run_id") == run_b)["as_of"]) == {LATER}
    with pytest.raises(WarehouseError, match="lacks columns"):
        wh.write_quarantine(run_a, bad_rows(1).drop("check"))


def test_tables_and_reading_an_absent_table(wh: Warehouse) -> None:
    assert wh.tables() == []
    assert wh.latest_as_of("deal_scores") is None
    write_v1(wh)
    assert wh.tables() == ["deal_score_factors", "deal_scores", "runs"]
    with pytest.raises(WarehouseError, match="no table 'sku_health'"):
        wh.read("sku_health")
    with pytest.raises(WarehouseError, match="written by start_run"):
        wh.write_batch({"runs": pl.DataFrame({"run_id": ["x"]})}, as_of=AS_OF, run_id="r")


# --- URLs and settings -----------------------------------------------------------------------


def test_relative_duckdb_url_creates_parent_dirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings(warehouse=WarehouseSettings(url="duckdb:///out/nested/wh.duckdb"))
    wh = Warehouse.from_settings(settings)
    wh.write_batch({"deal_scores": scores(["d1"], 0.5)}, as_of=AS_OF, run_id="r")
    assert (tmp_path / "out" / "nested" / "wh.duckdb").is_file()
    assert wh.lock_timeout_seconds == 60


@pytest.mark.parametrize("bad", ["sqlite:///x.db", "duckdb:///:memory:", "duckdb://", "x"])
def test_unsupported_url_is_refused(bad: str) -> None:
    with pytest.raises(WarehouseError, match="url"):
        Warehouse(bad)


def test_password_is_not_shown() -> None:
    wh = Warehouse("postgresql://u:s3cret@127.0.0.1:1/db")
    assert "s3cret" not in repr(wh)


# --- files that cannot be used: one line naming the file, never a DuckDB traceback -----------


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text and exc.value.__cause__ is None and exc.value.__suppress_context__
    return text


def test_a_warehouse_folder_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a folder")
    wh = Warehouse(f"duckdb:///{tmp_path / 'afile' / 'wh.duckdb'}")
    with pytest.raises(WarehouseError) as err:
        wh.write_batch({"deal_scores": scores(["d1"], 0.5)}, as_of=AS_OF, run_id="r")
    assert _one_line(err).startswith(f"cannot create the warehouse folder {tmp_path / 'afile'}: ")
    assert "warehouse.url" in str(err.value)


def test_a_file_that_is_not_duckdb_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "wh.duckdb"
    path.write_text("<html>a report written over the warehouse</html>" * 50)
    wh = Warehouse(f"duckdb:///{path}")
    for attempt in (lambda: wh.read("deal_scores"), lambda: wh.start_run("validate", AS_OF)):
        with pytest.raises(WarehouseError) as err:
            attempt()
        assert _one_line(err) == (
            f'cannot open warehouse {path}: The file "{path}" exists, but it is not a valid '
            "DuckDB database file!; warehouse.url must name a DuckDB file in a writable folder"
        )


def test_an_unwritable_warehouse_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import duckdb

    path = tmp_path / "wh.duckdb"

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise duckdb.IOException(f'IO Error: Cannot open file "{path}": Permission denied')

    monkeypatch.setattr(duckdb, "connect", refuse)
    with pytest.raises(WarehouseError) as err:
        Warehouse(f"duckdb:///{path}").start_run("validate", AS_OF)
    assert _one_line(err).startswith(
        f'cannot open warehouse {path}: Cannot open file "{path}": Permission denied;'
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(WarehouseError) as err:
            Warehouse(f"duckdb:///{folder / 'wh.duckdb'}").start_run("validate", AS_OF)
    finally:
        folder.chmod(0o700)
    assert _one_line(err).startswith(f"cannot open warehouse {folder / 'wh.duckdb'}: ")


def test_a_duckdb_error_mid_transaction_is_one_line_and_rolls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import duckdb

    wh_duckdb = Warehouse(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    wh_duckdb.write_batch({"deal_scores": scores(["d1"], 0.5)}, as_of=AS_OF, run_id="r")

    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise duckdb.IOException("IO Error: Could not write file: No space left on device")

    monkeypatch.setattr(Warehouse, "_replace", disk_full)
    with pytest.raises(WarehouseError) as err:
        wh_duckdb.write_batch({"deal_scores": scores(["d1"], 0.9)}, as_of=AS_OF, run_id="r")
    assert _one_line(err).endswith("Could not write file: No space left on device")
    monkeypatch.undo()
    assert wh_duckdb.read("deal_scores")["win_probability"].to_list() == [0.5]


def test_cli_prints_one_line_for_an_unusable_warehouse(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from salesml.cli import app

    (tmp_path / "afile").write_text("x")
    config = tmp_path / "salesml.yaml"
    config.write_text(
        f'sources: {{path: "{SAMPLE}"}}\n'
        f'warehouse: {{url: "duckdb:///{tmp_path / "afile" / "wh.duckdb"}"}}\n'
    )
    result = CliRunner().invoke(app, ["validate", "--config", str(config)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: cannot create the warehouse folder {tmp_path / 'afile'}: File exists; "
        "point warehouse.url at a writable folder"
    ]


# --- locks -----------------------------------------------------------------------------------

_HOLD_DUCKDB = (
    "import duckdb, sys, time\n"
    "con = duckdb.connect(sys.argv[1])\n"
    "print('ready', flush=True)\n"
    "time.sleep(float(sys.argv[2]))\n"
    "con.close()\n"
)


def _hold_duckdb(path: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process that opens the warehouse file and keeps it for `seconds`."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_DUCKDB, str(path), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_duckdb_lock_held_by_another_process_times_out(tmp_path: Path) -> None:
    path = tmp_path / "wh.duckdb"
    wh = Warehouse(f"duckdb:///{path}", lock_timeout_seconds=0.3)
    wh.write_batch({"deal_scores": scores(["d1"], 0.5)}, as_of=AS_OF, run_id="r")
    holder = _hold_duckdb(path, 60)
    try:
        started = time.monotonic()
        expected = f"warehouse {path} is locked by another salesml run; waited 0.3 s"
        with pytest.raises(WarehouseLockedError) as err:
            wh.write_batch({"deal_scores": scores(["d1"], 0.9)}, as_of=AS_OF, run_id="r")
        assert str(err.value) == expected
        with pytest.raises(WarehouseLockedError):
            wh.read("deal_scores")
        assert time.monotonic() - started < 5
    finally:
        holder.kill()
        holder.wait()
    assert wh.read("deal_scores")["win_probability"].to_list() == [0.5]


def test_duckdb_writer_waits_for_the_lock_to_be_released(tmp_path: Path) -> None:
    path = tmp_path / "wh.duckdb"
    wh = Warehouse(f"duckdb:///{path}", lock_timeout_seconds=30)
    wh.write_batch({"deal_scores": scores(["d1"], 0.5)}, as_of=AS_OF, run_id="r")
    holder = _hold_duckdb(path, 1.0)
    try:
        started = time.monotonic()
        wh.write_batch({"deal_scores": scores(["d1"], 0.9)}, as_of=AS_OF, run_id="r")
        waited = time.monotonic() - started
    finally:
        holder.wait()
    assert waited > 0.3
    assert wh.read("deal_scores")["win_probability"].to_list() == [0.9]


@pytest.mark.postgres
def test_postgres_writer_lock_times_out(pg_url: str) -> None:
    import adbc_driver_postgresql.dbapi as pg

    wh = Warehouse(pg_url, lock_timeout_seconds=0.3)
    wh.write_batch({"deal_scores": scores(["d1"], 0.5)}, as_of=AS_OF, run_id="r")
    with pg.connect(pg_url) as con, con.cursor() as cur:  # another writer, mid-transaction
        cur.execute(
            "SELECT CAST(pg_advisory_xact_lock(hashtextextended("
            "'salesml warehouse ' || current_schema(), 0)) AS TEXT)"
        )
        cur.fetchall()
        with pytest.raises(
            WarehouseLockedError, match=r"locked by another salesml run; waited 0.3 s"
        ):
            wh.write_batch({"deal_scores": scores(["d1"], 0.9)}, as_of=AS_OF, run_id="r")
        assert wh.read("deal_scores")["win_probability"].to_list() == [0.5]  # readers never wait
        con.rollback()
    wh.write_batch({"deal_scores": scores(["d1"], 0.9)}, as_of=AS_OF, run_id="r")
    assert wh.read("deal_scores")["win_probability"].to_list() == [0.9]


def test_a_scoped_write_replaces_only_its_scope(wh: Warehouse) -> None:
    """Two writers sharing a table and an as_of (e.g. two models' quality rows) never delete
    each other's rows; a frame with rows outside its scope is refused."""

    def rows(model: str, metrics: list[str]) -> pl.DataFrame:
        return pl.DataFrame({"deal_id": [f"{model}-{m}" for m in metrics]}).with_columns(
            win_probability=pl.lit(0.5),
            health=pl.lit("green"),
            health_reasons=pl.lit("[]"),
            top_factors=pl.lit("[]"),
        )

    wh.write_batch(
        {"deal_scores": rows("a", ["x", "y"])},
        as_of=AS_OF,
        run_id="r1",
        scopes={"deal_scores": {"score_basis": "model"}},
    )
    wh.write_batch(
        {"deal_scores": rows("b", ["x"])},
        as_of=AS_OF,
        run_id="r2",
        scopes={"deal_scores": {"score_basis": "prior"}},
    )
    wh.write_batch(
        {"deal_scores": rows("a", ["z"])},
        as_of=AS_OF,
        run_id="r3",
        scopes={"deal_scores": {"score_basis": "model"}},
    )
    got = wh.read("deal_scores").sort("deal_id")
    assert got["deal_id"].to_list() == ["a-z", "b-x"]
    assert got["score_basis"].to_list() == ["model", "prior"]
    mixed = rows("c", ["x"]).with_columns(score_basis=pl.lit("base_rate"))
    with pytest.raises(WarehouseError, match="score_basis other than 'model'"):
        wh.write_batch(
            {"deal_scores": mixed},
            as_of=AS_OF,
            run_id="r4",
            scopes={"deal_scores": {"score_basis": "model"}},
        )
    assert wh.read("deal_scores").height == 2


def test_a_table_written_before_a_key_column_existed_is_rekeyed(
    wh: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """demand_forecast gained `scenario` in its key: a warehouse written before keeps its rows
    (backfilled 'baseline'), and scenario rows then sit next to them without overwriting."""
    from salesml import contract

    def forecast(p50: float, as_of: datetime) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "customer_id": ["c1", "c2"],
                "sku": ["a", "a"],
                "bucket_start": [as_of, as_of],
                "horizon": [1, 1],
                "p10": [0.0, 0.0],
                "p50": [p50, p50],
                "p90": [9.0, 9.0],
            },
            schema_overrides={"bucket_start": pl.Datetime("us", "UTC")},
        )

    old_columns = {k: v for k, v in contract._OUTPUTS["demand_forecast"].items() if k != "scenario"}
    monkeypatch.setitem(contract._OUTPUTS, "demand_forecast", old_columns)
    monkeypatch.setitem(
        contract.OUTPUT_KEYS, "demand_forecast", ["as_of", "customer_id", "sku", "bucket_start"]
    )
    wh.write_batch({"demand_forecast": forecast(1.0, AS_OF)}, as_of=AS_OF, run_id="old")
    wh.write_batch({"demand_forecast": forecast(2.0, LATER)}, as_of=LATER, run_id="old2")
    monkeypatch.undo()

    scope = {"demand_forecast": {"scenario": "push"}}
    wh.write_batch({"demand_forecast": forecast(5.0, AS_OF)}, as_of=AS_OF, run_id="s", scopes=scope)
    rows = wh.read("demand_forecast")
    by = (
        rows.group_by("as_of", "scenario")
        .agg(pl.col("p50").max(), pl.len())
        .sort("as_of", "scenario")
    )
    assert by.select("scenario", "p50", "len").rows() == [
        ("baseline", 1.0, 2),
        ("push", 5.0, 2),
        ("baseline", 2.0, 2),
    ]
    base = {"demand_forecast": {"scenario": "baseline"}}
    wh.write_batch({"demand_forecast": forecast(3.0, AS_OF)}, as_of=AS_OF, run_id="b", scopes=base)
    now = wh.read("demand_forecast", as_of=AS_OF).sort("scenario")
    pairs = now.select("scenario", "p50").unique().sort("scenario")
    assert pairs.rows() == [("baseline", 3.0), ("push", 5.0)]
