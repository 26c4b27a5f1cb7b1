"""Versioned migrations: a warehouse written by an older salesml is upgraded in one
transaction when first opened, on DuckDB and PostgreSQL, and its rows survive.

The fixture `tests/fixtures/warehouse_43db3ae/` was written by salesml at commit 43db3ae (its
`make_fixture.py` says how): the `_salesml_columns` catalog, an undeclared column added by
schema-on-write (deal_scores.legacy_note), pipeline_forecast keyed by region.
"""

from __future__ import annotations

import gzip
import logging
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from salesml import contract, migrations
from salesml.contract import ColumnSpec
from salesml.timeutil import DATETIME
from salesml.warehouse import Warehouse, WarehouseError
from tests import test_warehouse
from tests.test_warehouse import scores

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "warehouse_43db3ae"
AS_OF = datetime(2024, 6, 1, tzinfo=UTC)
LATER = AS_OF + timedelta(days=1)
pg_url = test_warehouse.pg_url  # the fixture: a fresh PostgreSQL schema per test


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty warehouse: a new DuckDB file, or a new PostgreSQL schema."""
    if request.param == "duckdb":
        return f"duckdb:///{tmp_path / 'wh' / 'warehouse.duckdb'}"
    return str(request.getfixturevalue("pg_url"))


def _execute_script(wh: Warehouse, script: str) -> None:
    """Run SQL statements (one per line) on the raw warehouse, bypassing the migrations."""
    with wh._backend.session(write=True, timeout=5) as session:
        for statement in script.strip().splitlines():
            session.execute(statement.rstrip(";"))


def _old_warehouse(url: str) -> Warehouse:
    """The fixture warehouse of salesml 43db3ae at `url`: the DuckDB file it wrote, or (on
    PostgreSQL) the same tables and rows from its portable SQL."""
    wh = Warehouse(url, lock_timeout_seconds=5)
    if url.startswith("duckdb"):
        path = Path(url.removeprefix("duckdb:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(FIXTURE / "warehouse.duckdb.gz", "rb") as src, path.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    else:
        _execute_script(wh, (FIXTURE / "warehouse.sql").read_text())
    return wh


def _stored_tables(wh: Warehouse) -> set[str]:
    with wh._backend.session(write=False, timeout=5) as session:
        return {t for t in (*contract.OUTPUT_KEYS, "_salesml_columns") if session.has_table(t)}


@pytest.fixture
def dimension_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    """pipeline_forecast as slice H declares it: (as_of, period, dimension, member)."""
    columns = dict(contract._OUTPUTS["pipeline_forecast"])
    columns.pop("region", None)
    columns["dimension"] = ColumnSpec(pl.String(), nullable=False)
    columns["member"] = ColumnSpec(pl.String(), nullable=False)
    monkeypatch.setitem(contract._OUTPUTS, "pipeline_forecast", columns)
    key = ["as_of", "period", "dimension", "member"]
    monkeypatch.setitem(contract.OUTPUT_KEYS, "pipeline_forecast", key)
    schema = contract._schema("pipeline_forecast", columns, strict=True)
    monkeypatch.setitem(contract.OUTPUT_SCHEMAS, "pipeline_forecast", schema)


def test_a_warehouse_of_43db3ae_is_upgraded_read_and_written_again(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    wh = _old_warehouse(db_url)
    assert "_salesml_columns" in _stored_tables(wh)
    with caplog.at_level(logging.INFO, logger="salesml.migrations"):
        scores_before = wh.read("deal_scores")  # the first read upgrades
    assert "_salesml_columns" not in _stored_tables(wh)
    assert "schema version 1" in caplog.text and "legacy_note" in caplog.text
    # rows survive, in the contract's layout (the undeclared column is gone)
    assert scores_before.columns == list(contract.output_dtypes("deal_scores"))
    assert scores_before.select("deal_id", "stage", "win_probability").rows() == [
        ("d1", "proposal", 0.25),
        ("d2", "negotiation", 0.75),
    ]
    assert wh.read("demand_forecast")["scenario"].to_list() == ["baseline", "baseline"]
    assert wh.read("pipeline_forecast")["expected_revenue"].sum() == 600.0
    assert wh.read("deal_score_factors").height == 2
    assert wh.read("quarantine")["reason"].to_list() == ["owner_id is missing"]
    old_run = wh.read("runs").row(0, named=True)
    assert (old_run["status"], old_run["flow"]) == ("succeeded", "score_deals")
    # written again: a new as_of next to the old rows, and a rewrite of the old one
    run_id = wh.start_run("score_deals", LATER)
    wh.write_batch({"deal_scores": scores(["d1"], 0.5, LATER)}, as_of=LATER, run_id=run_id)
    wh.write_batch({"deal_scores": scores(["d2"], 0.6)}, as_of=AS_OF, run_id=run_id)
    wh.finish_run(run_id, "succeeded")
    after = wh.read("deal_scores").select("as_of", "deal_id", "win_probability").rows()
    assert after == [(AS_OF, "d2", 0.6), (LATER, "d1", 0.5)]
    assert wh.read("runs").height == 2
    upgraded = ["deal_score_factors", "deal_scores", "demand_forecast", "pipeline_forecast"]
    assert wh.tables() == [*upgraded, "quarantine", "runs"]


@pytest.mark.usefixtures("dimension_contract")
def test_pipeline_forecast_regions_become_dimension_and_member(db_url: str) -> None:
    """Step 2: region 'all' -> ('all', 'all'); any other region -> ('region', region)."""
    wh = _old_warehouse(db_url)
    got = wh.read("pipeline_forecast").sort("dimension", "member")
    assert "region" not in got.columns
    assert got.select("dimension", "member", "expected_revenue", "n_deals").rows() == [
        ("all", "all", 300.0, 3),
        ("region", "EMEA", 100.0, 1),
        ("region", "NA", 200.0, 2),
    ]
    with wh._backend.session(write=False, timeout=5) as session:
        versions = session.fetch("SELECT version, notes FROM _salesml_schema ORDER BY version")
    assert versions["version"].to_list() == [1, 2]
    assert "pipeline_forecast lacks ['dimension', 'member']" in versions["notes"][1]
    frame = pl.DataFrame(
        {
            "period": ["2024-07"],
            "dimension": ["owner"],
            "member": ["u1"],
            "expected_revenue": [5.0],
            "p10": [1.0],
            "p50": [5.0],
            "p90": [9.0],
        }
    )
    wh.write_batch({"pipeline_forecast": frame}, as_of=LATER, run_id="r")
    assert wh.read("pipeline_forecast").height == 4


def test_upgrading_is_idempotent_and_happens_once(db_url: str) -> None:
    wh = _old_warehouse(db_url)
    wh.read("runs")
    again = Warehouse(db_url, lock_timeout_seconds=5)  # a later process: nothing left to do
    with again._transaction() as session:
        assert migrations.schema_version(session) == migrations.LATEST
        assert migrations.upgrade(session, "again") == []
        count = session.fetch("SELECT count(*) AS n FROM _salesml_schema")["n"][0]
    assert count == len(migrations.MIGRATIONS)
    assert again.read("deal_scores").height == 2


def test_a_new_warehouse_starts_at_the_latest_version(db_url: str) -> None:
    wh = Warehouse(db_url, lock_timeout_seconds=5)
    wh.start_run("score_deals", AS_OF)
    with wh._backend.session(write=False, timeout=5) as session:
        assert migrations.schema_version(session) == migrations.LATEST
    assert wh.tables() == ["runs"]


def test_a_failed_upgrade_leaves_the_warehouse_as_it_was(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(session: migrations.SqlSession) -> list[str]:
        session.execute("DROP TABLE deal_scores")
        raise migrations.MigrationError("step 3 cannot run")

    steps = (*migrations.MIGRATIONS, migrations.Migration(3, "broken", broken))
    monkeypatch.setattr(migrations, "MIGRATIONS", steps)
    monkeypatch.setattr(migrations, "LATEST", 3)
    wh = _old_warehouse(db_url)
    with pytest.raises(WarehouseError, match=r"^warehouse .*: step 3 cannot run$"):
        wh.read("deal_scores")
    assert _stored_tables(wh) >= {"_salesml_columns", "deal_scores"}
    monkeypatch.undo()
    assert wh.read("deal_scores").height == 2  # the real steps still apply


def test_a_key_column_added_later_is_backfilled(db_url: str) -> None:
    """demand_forecast gained `scenario` in its key: a table written before keeps its rows
    (backfilled 'baseline'), and scenario rows then sit next to them without overwriting."""
    wh = Warehouse(db_url, lock_timeout_seconds=5)
    _execute_script(
        wh,
        """
        CREATE TABLE demand_forecast (customer_id TEXT, sku TEXT, bucket_start TIMESTAMPTZ, horizon BIGINT, p10 DOUBLE PRECISION, p50 DOUBLE PRECISION, p90 DOUBLE PRECISION, as_of TIMESTAMPTZ, run_id TEXT, PRIMARY KEY (as_of, customer_id, sku, bucket_start))
        INSERT INTO demand_forecast VALUES ('c1', 'a', TIMESTAMPTZ '2024-06-01T00:00:00+00:00', 1, 0.0, 1.0, 9.0, TIMESTAMPTZ '2024-06-01T00:00:00+00:00', 'old')
        """,
    )
    forecast = pl.DataFrame(
        {"customer_id": ["c1"], "sku": ["a"], "bucket_start": [AS_OF], "horizon": [1]},
        schema_overrides={"bucket_start": DATETIME},
    ).with_columns(p10=pl.lit(0.0), p50=pl.lit(5.0), p90=pl.lit(9.0))
    push = {"demand_forecast": {"scenario": "push"}}
    wh.write_batch({"demand_forecast": forecast}, as_of=AS_OF, run_id="s", scopes=push)
    rows = wh.read("demand_forecast").sort("scenario")
    assert rows.select("scenario", "p50", "run_id").rows() == [
        ("baseline", 1.0, "old"),
        ("push", 5.0, "s"),
    ]


def test_a_table_that_differs_from_the_contract_at_the_latest_version_is_refused(
    db_url: str,
) -> None:
    """A stored table that no step upgraded (a contract change without its migration step)
    is refused in one line naming the table and what differs, before anything is written."""
    wh = Warehouse(db_url, lock_timeout_seconds=5)
    wh.start_run("score_deals", AS_OF)
    _execute_script(wh, "CREATE TABLE deal_scores (as_of TIMESTAMPTZ, deal_id TEXT, extra TEXT)")
    with pytest.raises(
        WarehouseError, match=r"^warehouse table deal_scores lacks \[.*undeclared \['extra'\]"
    ):
        wh.write_batch({"deal_scores": scores(["d1"], 0.5)}, as_of=AS_OF, run_id="r")
    assert wh.read("deal_scores").height == 0
