"""Warehouse: idempotent batch writes, all-or-nothing failures, the contract's layout, locks.

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
from datetime import UTC, datetime, timedelta
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
    """Reads return the contract's dtypes; instants survive any input time zone; an Enum in
    the any-dtype `stage` column reads back as its text."""
    berlin = ZoneInfo("Europe/Berlin")
    frame = pl.DataFrame(
        {
            "customer_id": ["c1", "c2"],
            "sku": ["a", "a"],
            "health": ["red", "green"],
            "reasons": ['["stock out in 2 days"]', None],
            "on_hand": [3.0, None],
            "projected_stockout_at": [
                datetime(2024, 6, 1, 9, 30, 0, 123456, tzinfo=berlin),
                None,
            ],
        }
    )
    wh.write_batch({"sku_health": frame}, as_of=AS_OF.astimezone(berlin), run_id="r1")

    out = wh.read("sku_health", as_of=AS_OF)
    expected = frame.with_columns(
        pl.col("projected_stockout_at").dt.convert_time_zone("UTC"),
        as_of=pl.lit(AS_OF, DATETIME),
        run_id=pl.lit("r1"),
    )
    assert_frame_equal(out.select(expected.columns), expected)
    assert out["projected_stockout_at"][0] == datetime(2024, 6, 1, 7, 30, 0, 123456, tzinfo=UTC)
    # columns the contract declares but the frame lacked exist (as nulls)
    assert out["model_version"].null_count() == 2
    from salesml import contract

    assert dict(out.schema) == contract.output_dtypes("sku_health")

    stage = pl.Enum(["proposal", "negotiation"])
    staged = scores(["d1"], 0.5).with_columns(
        stage=pl.lit("proposal", stage), raw_score=pl.lit(-1.0)
    )
    wh.write_batch({"deal_scores": staged}, as_of=AS_OF, run_id="r2")
    row = wh.read("deal_scores").row(0, named=True)
    assert (row["stage"], row["raw_score"]) == ("proposal", -1.0)


def test_naive_datetime_is_refused(wh: Warehouse) -> None:
    frame = scores(["d1"], 0.5).with_columns(as_of=pl.lit(datetime(2024, 6, 1)))
    with pytest.raises(WarehouseError, match=r"deal_scores\.as_of is a naive datetime"):
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
    with_note = scores(["d1", "d2"], 0.5).with_columns(basis_reason=pl.lit("checked"))
    wh.write_batch({"deal_scores": with_note}, as_of=AS_OF, run_id="r1")
    wh.write_batch({"deal_scores": scores(["d1"], 0.7)}, as_of=AS_OF, run_id="r2")
    out = wh.read("deal_scores")
    assert out.select("deal_id", "win_probability", "basis_reason", "run_id").rows() == [
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


# --- the contract's layout ---------------------------------------------------------------


def test_an_undeclared_column_is_refused_in_one_line(wh: Warehouse) -> None:
    """Output schemas are strict: a column the contract does not declare is never stored
    (no schema-on-write); the message names the table and the column."""
    write_v1(wh)
    newer = scores(["d5"], 0.8).with_columns(feature_set=pl.lit("v2"))
    with pytest.raises(WarehouseError, match=r"^deal_scores: column 'feature_set' is not declared"):
        wh.write_batch({"deal_scores": newer}, as_of=AS_OF, run_id="r2")
    assert wh.read("deal_scores")["deal_id"].to_list() == ["d1", "d2", "d3"]
    assert "feature_set" not in wh.read("deal_scores").columns


def test_a_declared_column_of_another_dtype_is_refused(wh: Warehouse) -> None:
    wh.write_batch({"deal_scores": scores(["d1"], 0.5)}, as_of=AS_OF, run_id="r")
    wrong = scores(["d1"], 0.6).with_columns(raw_score=pl.lit("x"))
    with pytest.raises(WarehouseError, match=r"deal_scores does not match.*raw_score"):
        wh.write_batch({"deal_scores": wrong}, as_of=AS_OF, run_id="r")
    assert wh.read("deal_scores")["win_probability"].to_list() == [0.5]


def test_tables_are_created_with_exactly_the_contract_columns_and_key(wh: Warehouse) -> None:
    from salesml import contract

    write_v1(wh)
    for table in ("deal_scores", "deal_score_factors", "runs"):
        assert wh.read(table).columns == list(contract.output_dtypes(table))
    # the primary key is the contract's key
    duplicate = "INSERT INTO deal_scores (as_of, deal_id) SELECT as_of, deal_id FROM deal_scores"
    refused = pytest.raises(Exception, match=r"(?i)duplicate|constraint|unique")
    with refused, wh._transaction() as session:
        session.execute(duplicate)
    assert wh.read("deal_scores").height == 3


def test_a_table_the_contract_does_not_declare_keeps_its_first_columns(wh: Warehouse) -> None:
    first = pl.DataFrame({"n": [1, 2], "label": ["a", "b"]})
    wh.write_batch({"notebook_table": first}, as_of=AS_OF, run_id="r1")
    wh.write_batch({"notebook_table": first.head(1).drop("label")}, as_of=LATER, run_id="r2")
    out = wh.read("notebook_table").sort("as_of", "n")
    assert out.select("n", "label", "run_id").rows() == [
        (1, "a", "r1"),
        (2, "b", "r1"),
        (1, None, "r2"),
    ]
    with pytest.raises(WarehouseError, match="notebook_table has no column 'extra'"):
        wh.write_batch(
            {"notebook_table": first.with_columns(extra=pl.lit(1))}, as_of=AS_OF, run_id="r3"
        )


# --- upsert by key: tables whose key lacks as_of ---------------------------------------------


@pytest.fixture
def alerts_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    """An `alerts` table as slice I declares it in essence (keyed by alert_key, with the
    as_of / run_id of the run that last wrote a row), independent of its other columns."""
    from salesml import contract
    from salesml.contract import ColumnSpec

    string = pl.String()
    columns = {
        "as_of": ColumnSpec(DATETIME, nullable=False, required=False),
        "run_id": ColumnSpec(string, nullable=False, required=False),
        "alert_key": ColumnSpec(string, nullable=False),
        "status": ColumnSpec(string, nullable=False),
        "first_seen_as_of": ColumnSpec(DATETIME, nullable=False),
    }
    monkeypatch.setitem(contract._OUTPUTS, "alerts", columns)
    monkeypatch.setitem(contract.OUTPUT_KEYS, "alerts", ["alert_key"])
    schema = contract._schema("alerts", columns, strict=True)
    monkeypatch.setitem(contract.OUTPUT_SCHEMAS, "alerts", schema)


@pytest.mark.usefixtures("alerts_contract")
def test_a_table_keyed_without_as_of_is_upserted_by_key(
    wh: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """alerts (keyed by alert_key): a write replaces the rows with its keys and keeps every
    other row, whatever their as_of; a failing batch leaves them all."""

    def alerts(keys: list[str], status: str) -> pl.DataFrame:
        return pl.DataFrame({"alert_key": keys, "status": [status] * len(keys)}).with_columns(
            first_seen_as_of=pl.lit(AS_OF, DATETIME)
        )

    wh.write_batch({"alerts": alerts(["a", "b"], "open")}, as_of=AS_OF, run_id="r1")
    wh.write_batch({"alerts": alerts(["b", "c"], "resolved")}, as_of=LATER, run_id="r2")
    out = wh.read("alerts").sort("alert_key")
    assert out.select("alert_key", "status", "as_of", "run_id").rows() == [
        ("a", "open", AS_OF, "r1"),
        ("b", "resolved", LATER, "r2"),
        ("c", "resolved", LATER, "r2"),
    ]
    original = Warehouse._replace

    def fail_after_alerts(
        self: Warehouse, session: Any, table: str, frame: pl.DataFrame, **kw: Any
    ) -> None:
        original(self, session, table, frame, **kw)
        if table == "alerts":
            raise RuntimeError("injected failure")

    with monkeypatch.context() as patch:
        patch.setattr(Warehouse, "_replace", fail_after_alerts)
        with pytest.raises(RuntimeError, match="injected"):
            wh.write_batch({"alerts": alerts(["a"], "resolved")}, as_of=LATER, run_id="r3")
    assert_frame_equal(wh.read("alerts").sort("alert_key"), out)
    wh.write_batch({"alerts": alerts(["a"], "resolved")}, as_of=LATER, run_id="r3")
    assert wh.read("alerts").sort("alert_key")["status"].to_list() == ["resolved"] * 3


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
    assert wh.tables() == ["deal_score_factors", "deal_scores", "runs"]  # no bookkeeping
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
