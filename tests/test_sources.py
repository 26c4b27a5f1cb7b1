"""Reading sources: folders (Parquet, CSV) and databases (DuckDB; PostgreSQL when available),
column_map, time travel at the source, and the errors a user sees."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from salesml import sources
from salesml.config import Settings, from_dict
from salesml.inputs import load_tables
from salesml.timeutil import DATETIME
from salesml.validation import DataValidationError

AS_OF = datetime(2024, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def _dt(day: int, hour: int = 0) -> datetime:
    """Day offsets from AS_OF (negative = past)."""
    return AS_OF + day * DAY + timedelta(hours=hour)


def make_tables() -> dict[str, pl.DataFrame]:
    """A tiny consistent world around AS_OF: past, open, closed-later and future deals."""
    deals = pl.DataFrame(
        {
            "deal_id": ["D1", "D2", "D3", "D4"],
            "account_id": ["A1", "A1", "A2", "A2"],
            "owner_id": ["R1", "R2", "R1", "R2"],
            "amount": [100.0, 200.0, 300.0, 400.0],
            "created_at": [_dt(-30), _dt(-20), _dt(-10), _dt(5)],
            "closed_at": [_dt(-5), None, _dt(3), None],
            "outcome": ["won", None, "lost", None],
        },
        schema_overrides={"created_at": DATETIME, "closed_at": DATETIME},
    )
    activities = pl.DataFrame(
        {
            "activity_id": ["X1", "X2", "X3"],
            "deal_id": ["D1", "D3", "D3"],
            "account_id": ["A1", "A2", "A2"],
            "occurred_at": [_dt(-25), _dt(-1), _dt(1)],
            "activity_type": ["meeting", "call", "demo"],
        },
        schema_overrides={"occurred_at": DATETIME},
    )
    accounts = pl.DataFrame({"account_id": ["A1", "A2"], "industry": ["retail", "energy"]})
    sales = pl.DataFrame(
        {
            "ts": [_dt(-2), _dt(2)],
            "customer_id": ["C1", "C1"],
            "sku": ["S1", "S1"],
            "quantity": [3.0, 4.0],
        },
        schema_overrides={"ts": DATETIME},
    )
    signals = pl.DataFrame(
        {
            "ts": [_dt(-1), _dt(2), _dt(-1), _dt(2)],
            "name": ["price", "price", "weather", "weather"],
            "value": [1.0, 2.0, 3.0, 4.0],
        },
        schema_overrides={"ts": DATETIME},
    )
    return {
        "deals": deals,
        "activities": activities,
        "accounts": accounts,
        "sales": sales,
        "signals": signals,
    }


def write_parquet(folder: Path, tables: dict[str, pl.DataFrame]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.write_parquet(folder / f"{name}.parquet")


def folder_settings(folder: Path, **extra: Any) -> Settings:
    return from_dict({"sources": {"path": str(folder)}, **extra})


@pytest.fixture
def world(tmp_path: Path) -> Path:
    write_parquet(tmp_path, make_tables())
    return tmp_path


def collect(table: str, settings: Settings, as_of: datetime | None = AS_OF) -> pl.DataFrame:
    frame = sources.read(table, settings, as_of)
    assert frame is not None
    return frame.collect()


# ---------------------------------------------------------------------------------------------
# Time travel at the source
# ---------------------------------------------------------------------------------------------
def test_rows_after_as_of_are_not_read(world: Path) -> None:
    settings = folder_settings(world)
    assert collect("deals", settings)["deal_id"].to_list() == ["D1", "D2", "D3"]
    assert collect("activities", settings)["activity_id"].to_list() == ["X1", "X2"]
    assert collect("sales", settings)["quantity"].to_list() == [3.0]
    assert collect("deals", settings, None).height == 4  # no as_of: everything


def test_deal_closed_after_as_of_is_open(world: Path) -> None:
    deals = collect("deals", folder_settings(world))
    d3 = deals.filter(pl.col("deal_id") == "D3").row(0, named=True)
    assert d3["outcome"] is None and d3["closed_at"] is None
    d1 = deals.filter(pl.col("deal_id") == "D1").row(0, named=True)
    assert d1["outcome"] == "won" and d1["closed_at"] == _dt(-5)


def test_future_signals_only_when_known_in_advance(world: Path) -> None:
    settings = folder_settings(world, demand={"known_signals": ["price"]})
    signals = collect("signals", settings)
    assert signals.select("name", "value").rows() == [
        ("price", 1.0),
        ("price", 2.0),
        ("weather", 3.0),
    ]


def test_accounts_are_static_and_missing_optional_is_none(world: Path) -> None:
    settings = folder_settings(world)
    assert collect("accounts", settings).height == 2
    assert sources.read("inventory", settings, AS_OF) is None


def test_as_of_cut_is_exact_for_naive_times_in_the_configured_timezone(tmp_path: Path) -> None:
    tables = make_tables()
    # Wall times in New York (UTC-5 in winter): 19:30 local = 00:30 UTC next day.
    local = datetime(2024, 2, 29, 19, 30)
    tables["sales"] = pl.DataFrame(
        {
            "ts": [local - timedelta(hours=1), local],
            "customer_id": ["C1", "C1"],
            "sku": ["S1", "S1"],
            "quantity": [1.0, 2.0],
        }
    )
    write_parquet(tmp_path, tables)
    settings = folder_settings(tmp_path, timezone="America/New_York")
    sales = collect("sales", settings, datetime(2024, 3, 1, 0, 0, tzinfo=UTC))
    assert sales["ts"].to_list() == [datetime(2024, 2, 29, 23, 30, tzinfo=UTC)]
    sales = collect("sales", settings, datetime(2024, 3, 1, 0, 30, tzinfo=UTC))
    assert sales.height == 2


def mutate_after(
    tables: dict[str, pl.DataFrame], as_of: datetime, seed: int
) -> dict[str, pl.DataFrame]:
    """Change, add and delete what happens after `as_of` (not known-in-advance signals)."""
    later = pl.col("closed_at") > as_of
    deals = tables["deals"].with_columns(
        pl.when(later)
        .then(pl.lit(["won", "lost"][seed % 2]))
        .otherwise("outcome")
        .alias("outcome"),
        pl.when(later)
        .then(pl.col("closed_at") + seed * DAY)
        .otherwise("closed_at")
        .alias("closed_at"),
        pl.when(pl.col("created_at") > as_of)
        .then(pl.col("amount") * seed)
        .otherwise("amount")
        .alias("amount"),
    )
    new_deal = deals.head(1).with_columns(
        pl.lit(f"F{seed}").alias("deal_id"),
        pl.lit(as_of + seed * timedelta(minutes=7)).cast(DATETIME).alias("created_at"),
    )
    activities = tables["activities"].filter(pl.col("occurred_at") <= as_of)  # delete the future
    sales = tables["sales"].with_columns(
        pl.when(pl.col("ts") > as_of).then(pl.col("quantity") + seed).otherwise("quantity")
    )
    observed_later = (pl.col("ts") > as_of) & (pl.col("name") == "weather")
    signals = tables["signals"].with_columns(
        pl.when(observed_later).then(pl.col("value") - seed).otherwise("value")
    )
    return {
        **tables,
        "deals": pl.concat([deals, new_deal]),
        "activities": activities,
        "sales": sales,
        "signals": signals,
    }


@given(
    seed=st.integers(min_value=1, max_value=50),
    shift_hours=st.integers(min_value=-24 * 40, max_value=24 * 10),
)
@hyp_settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_changing_the_future_does_not_change_what_is_read(seed: int, shift_hours: int) -> None:
    as_of = AS_OF + timedelta(hours=shift_hours)
    base = make_tables()
    changed = mutate_after(base, as_of, seed)
    with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as two:
        write_parquet(Path(one), base)
        write_parquet(Path(two), changed)
        unfiltered = [collect("deals", folder_settings(Path(d)), None) for d in (one, two)]
        assert not unfiltered[0].equals(unfiltered[1])  # the future did change
        for table in ("deals", "activities", "sales", "signals"):
            left = collect(table, folder_settings(Path(one)), as_of)
            right = collect(table, folder_settings(Path(two)), as_of)
            assert left.equals(right), table


# ---------------------------------------------------------------------------------------------
# Column map, CSV, errors
# ---------------------------------------------------------------------------------------------
def test_column_map_renames_user_columns(tmp_path: Path) -> None:
    tables = make_tables()
    tables["deals"] = tables["deals"].rename({"deal_id": "Opportunity ID", "owner_id": "rep"})
    write_parquet(tmp_path, tables)
    settings = folder_settings(
        tmp_path, column_map={"deals": {"Opportunity ID": "deal_id", "rep": "owner_id"}}
    )
    deals = collect("deals", settings)
    assert deals["deal_id"].to_list() == ["D1", "D2", "D3"]
    assert "rep" not in deals.columns
    with pytest.raises(DataValidationError, match="deals: required column 'deal_id' is missing"):
        sources.read("deals", folder_settings(tmp_path), AS_OF)


def test_column_map_clash_is_an_error(tmp_path: Path) -> None:
    tables = make_tables()
    tables["deals"] = tables["deals"].with_columns(pl.col("deal_id").alias("id"))
    write_parquet(tmp_path, tables)
    settings = folder_settings(tmp_path, column_map={"deals": {"id": "deal_id"}})
    with pytest.raises(DataValidationError, match="already has a column 'deal_id'"):
        sources.read("deals", settings, AS_OF)


def write_csv_world(folder: Path) -> None:
    tables = make_tables()
    write_parquet(folder, {k: v for k, v in tables.items() if k != "deals"})
    (folder / "deals.csv").write_text(
        "deal_id,account_id,owner_id,amount,created_at,closed_at,outcome,segment\n"
        "007,A1,R1,100,2024-01-05 10:00:00,2024-02-01,won,smb\n"
        "008,A1,R2,200,someday,,,smb\n"
        "009,A2,R1,300,2024-02-10T08:00:00Z,,,ent\n"
        "010,A2,R2,400,2024-05-01,,,ent\n"
    )


def test_csv_unparseable_date_quarantines_only_that_row(tmp_path: Path) -> None:
    write_csv_world(tmp_path)
    settings = folder_settings(tmp_path, validation={"max_bad_share": 0.5})
    tables, quarantine = load_tables(settings, AS_OF, names=["deals"])
    deals = tables["deals"]
    assert deals["deal_id"].to_list() == ["007", "009"]  # leading zeros kept; 010 is the future
    assert deals["created_at"][0] == datetime(2024, 1, 5, 10, tzinfo=UTC)
    assert deals["segment"].to_list() == ["smb", "ent"]
    assert quarantine.select("table_name", "check", "column_name").rows() == [
        ("deals", "parse_datetime", "created_at")
    ]
    assert '"created_at":"someday"' in quarantine["row"][0]


def test_csv_bad_share_stops_the_run(tmp_path: Path) -> None:
    write_csv_world(tmp_path)
    with pytest.raises(DataValidationError) as err:
        load_tables(folder_settings(tmp_path), AS_OF, names=["deals"])
    message = str(err.value)
    for part in ("deals", "created_at", "parse_datetime", "deal_id=008"):
        assert part in message


def test_missing_required_table_names_it(tmp_path: Path) -> None:
    write_parquet(tmp_path, {k: v for k, v in make_tables().items() if k != "sales"})
    with pytest.raises(DataValidationError, match=r"sales: required table not found .*sales\.csv"):
        sources.read("sales", folder_settings(tmp_path), AS_OF)
    with pytest.raises(DataValidationError, match="is not a folder"):
        sources.read("deals", folder_settings(tmp_path / "nowhere"), AS_OF)


def test_parquet_and_csv_for_one_table_is_ambiguous(world: Path) -> None:
    (world / "sales.csv").write_text("ts,customer_id,sku,quantity\n")
    with pytest.raises(DataValidationError, match="keep one"):
        sources.read("sales", folder_settings(world), AS_OF)


def test_folder_of_parquet_parts(tmp_path: Path) -> None:
    tables = make_tables()
    write_parquet(tmp_path, {k: v for k, v in tables.items() if k != "sales"})
    (tmp_path / "sales").mkdir()
    for i, part in enumerate(tables["sales"].iter_slices(1)):
        part.write_parquet(tmp_path / "sales" / f"part-{i}.parquet")
    assert collect("sales", folder_settings(tmp_path)).height == 1


def test_load_tables_returns_clean_frames_and_skips_absent_optional(world: Path) -> None:
    tables, quarantine = load_tables(folder_settings(world), AS_OF, names=None)
    assert set(tables) == {"deals", "activities", "accounts", "sales", "signals"}
    assert quarantine.height == 0
    assert not any(c.startswith("__") for frame in tables.values() for c in frame.columns)


# ---------------------------------------------------------------------------------------------
# Databases
# ---------------------------------------------------------------------------------------------
def write_duckdb(path: Path, tables: dict[str, pl.DataFrame]) -> None:
    con = duckdb.connect(str(path))
    try:
        for name, frame in tables.items():
            con.register("frame", frame.to_arrow())
            con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM frame')
            con.unregister("frame")
        # a naive TIMESTAMP column, in the configured timezone
        con.execute("ALTER TABLE sales ALTER ts TYPE TIMESTAMP USING timezone('Europe/Berlin', ts)")
    finally:
        con.close()


def test_duckdb_file_source(tmp_path: Path) -> None:
    db = tmp_path / "crm.duckdb"
    tables = make_tables()
    tables["deals"] = tables["deals"].rename({"owner_id": "rep"})
    write_duckdb(db, tables)
    settings = from_dict(
        {
            "sources": {"url": f"duckdb:///{db}"},
            "timezone": "Europe/Berlin",
            "column_map": {"deals": {"rep": "owner_id"}},
        }
    )
    deals = collect("deals", settings)
    assert deals["deal_id"].to_list() == ["D1", "D2", "D3"]
    assert deals.schema["created_at"] == DATETIME
    assert deals.filter(pl.col("deal_id") == "D3")["outcome"].to_list() == [None]
    sales = collect("sales", settings)
    assert sales["ts"].to_list() == [_dt(-2)]  # naive Berlin wall time back to the same instant
    assert sources.read("inventory", settings, AS_OF) is None
    loaded, quarantine = load_tables(settings, AS_OF, names=["deals", "activities"])
    assert loaded["activities"]["activity_id"].to_list() == ["X1", "X2"]
    assert quarantine.height == 0


def test_duckdb_sql_pushes_the_as_of_predicate() -> None:
    settings = from_dict({"sources": {"url": "duckdb:///x.duckdb"}})
    sql, params = sources._select_sql(
        "signals", {"ts": "TIMESTAMP WITH TIME ZONE", "name": "VARCHAR"}, {}, AS_OF, settings
    )
    assert sql == (
        'SELECT * FROM "signals" WHERE "ts" <= CAST($1 AS TIMESTAMP WITH TIME ZONE) '
        'OR "ts" IS NULL OR "name" IN ($2, $3)'
    )
    assert params == [(AS_OF + timedelta(days=1)).isoformat(), "price", "promotion"]
    sql, params = sources._select_sql("deals", {"created_at": "VARCHAR"}, {}, AS_OF, settings)
    assert "WHERE" not in sql and params == []  # text times are parsed and cut after reading


def test_duckdb_source_binds_values_with_quotes(tmp_path: Path) -> None:
    """Table and signal names reach the database as bound parameters, not spliced literals."""
    db = tmp_path / "crm.duckdb"
    tables = make_tables()
    quoted = "o'brien's index'); DROP TABLE deals; --"
    tables["signals"] = tables["signals"].with_columns(pl.col("name").replace("weather", quoted))
    write_duckdb(db, tables)
    settings = from_dict(
        {"sources": {"url": f"duckdb:///{db}"}, "demand": {"known_signals": [quoted]}}
    )
    signals = collect("signals", settings)
    assert signals.select("name", "value").rows() == [
        ("price", 1.0),
        (quoted, 3.0),
        (quoted, 4.0),  # after as_of, kept: known in advance
    ]
    assert collect("deals", settings).height == 3


def test_missing_duckdb_file_and_unknown_scheme(tmp_path: Path) -> None:
    settings = from_dict({"sources": {"url": f"duckdb:///{tmp_path / 'none.duckdb'}"}})
    with pytest.raises(DataValidationError, match="does not exist"):
        sources.read("deals", settings, AS_OF)
    settings = from_dict({"sources": {"url": "mysql://host/db"}})
    with pytest.raises(DataValidationError, match="not supported"):
        sources.read("deals", settings, AS_OF)
    settings = from_dict({"sources": {"url": "postgresql://nobody@127.0.0.1:1/none"}})
    with pytest.raises(DataValidationError, match="cannot connect to PostgreSQL") as err:
        sources.read("deals", settings, AS_OF)
    assert "\n" not in str(err.value)


def test_url_helpers() -> None:
    assert sources.duckdb_path("duckdb:///out/w.duckdb") == Path("out/w.duckdb")
    assert sources.duckdb_path("duckdb:////abs/w.duckdb") == Path("/abs/w.duckdb")
    assert sources.postgres_uri("postgresql+psycopg://u@h/db") == "postgresql://u@h/db"
    assert sources.postgres_uri("postgres://u@h/db") == "postgresql://u@h/db"


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, str]]:
    """A fresh schema in the SALESML_TEST_PG_URL database, dropped afterwards."""
    url = os.environ.get("SALESML_TEST_PG_URL")
    if not url:
        pytest.skip("PostgreSQL source test needs SALESML_TEST_PG_URL (a reachable server)")
    import psycopg

    schema = f"salesml_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as con:
        con.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield url, schema
    finally:
        with psycopg.connect(url, autocommit=True) as con:
            con.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.mark.postgres
def test_postgres_source(pg_schema: tuple[str, str]) -> None:
    import psycopg

    url, schema = pg_schema
    tables = make_tables()
    with psycopg.connect(url, autocommit=True) as con:
        con.execute(f'SET search_path TO "{schema}"')
        con.execute(
            "CREATE TABLE deals (deal_id text, account_id text, owner_id text, amount double "
            "precision, created_at timestamptz, closed_at timestamptz, outcome text)"
        )
        con.execute(
            "CREATE TABLE sales (ts timestamp, customer_id text, sku text, quantity double precision)"
        )
        con.execute("CREATE TABLE signals (ts timestamptz, name text, value double precision)")
        with con.cursor() as cur:
            cur.executemany(
                "INSERT INTO deals VALUES (%s, %s, %s, %s, %s, %s, %s)",
                tables["deals"].rows(),
            )
            cur.executemany(
                "INSERT INTO sales VALUES (%s, %s, %s, %s)",
                [(ts.replace(tzinfo=None), c, s, q) for ts, c, s, q in tables["sales"].rows()],
            )
            cur.executemany(
                "INSERT INTO signals VALUES (%s, %s, %s)",
                [(ts, n.replace("price", "o'brien"), v) for ts, n, v in tables["signals"].rows()],
            )
    sep = "&" if "?" in url else "?"
    search_path = f"{url}{sep}options=-csearch_path%3D{schema}"
    settings = Settings.model_validate(  # password from env
        {"sources": {"url": search_path}, "demand": {"known_signals": ["o'brien"]}}
    )
    deals = collect("deals", settings)
    assert deals["deal_id"].to_list() == ["D1", "D2", "D3"]
    assert deals.schema["created_at"] == DATETIME
    assert deals.filter(pl.col("deal_id") == "D3")["closed_at"].to_list() == [None]
    assert collect("sales", settings)["ts"].to_list() == [_dt(-2)]
    signals = collect("signals", settings).sort("value")
    assert signals["value"].to_list() == [1.0, 2.0, 3.0]  # 2.0: after as_of, known in advance
    assert sources.read("inventory", settings, AS_OF) is None


def test_csv_extra_columns_get_types_and_canonical_ones_stay_text(tmp_path: Path) -> None:
    """CSV is read as text and typed here (not by polars' inference), so a ragged line can be
    quarantined: extras become integer, float or boolean where every value fits."""
    (tmp_path / "deals.csv").write_text(
        "deal_id,account_id,owner_id,amount,created_at,closed_at,outcome,seats,score,flag,code,"
        "blank\n"
        "007,A1,R1,100,2024-01-05,,,3,0.5,true,x1,\n"
        "008,A1,R2, 2e3 ,2024-01-06,,,4,,FALSE,07,\n"
    )
    deals = collect("deals", folder_settings(tmp_path))
    assert deals["deal_id"].to_list() == ["007", "008"]
    assert deals["amount"].to_list() == [100.0, 2000.0]
    assert deals.select("seats", "score", "flag", "code", "blank").schema == pl.Schema(
        {
            "seats": pl.Int64,
            "score": pl.Float64,
            "flag": pl.Boolean,
            "code": pl.String,
            "blank": pl.String,
        }
    )
    assert deals["flag"].to_list() == [True, False]


def test_read_later_gives_keys_and_times_of_rows_after_as_of(world: Path) -> None:
    later = sources.read_later("deals", folder_settings(world), AS_OF)
    assert later is not None
    assert later.collect().rows() == [("D4", _dt(5))]
    assert sources.read_later("accounts", folder_settings(world), AS_OF) is None
    assert sources.read_later("inventory", folder_settings(world), AS_OF) is None


# ---------------------------------------------------------------------------------------------
# Issue 9: one column onto several, non-ISO date formats, what each job needs
# ---------------------------------------------------------------------------------------------
def test_column_map_one_source_column_onto_several(tmp_path: Path) -> None:
    tables = make_tables()
    tables["deals"] = (
        tables["deals"].drop("account_id").rename({"deal_id": "Lead ID", "owner_id": "rep"})
    )
    write_parquet(tmp_path, tables)
    settings = folder_settings(
        tmp_path, column_map={"deals": {"Lead ID": ["deal_id", "account_id"], "rep": "owner_id"}}
    )
    deals = collect("deals", settings)
    assert deals["deal_id"].to_list() == ["D1", "D2", "D3"]
    assert deals["account_id"].to_list() == deals["deal_id"].to_list()
    assert "Lead ID" not in deals.columns
    clean, _ = load_tables(settings, AS_OF, names=["deals"])
    assert clean["deals"]["account_id"].to_list() == ["D1", "D2", "D3"]


def test_column_map_keeps_a_column_also_mapped_to_itself(tmp_path: Path) -> None:
    tables = make_tables()
    tables["deals"] = tables["deals"].drop("account_id")
    write_parquet(tmp_path, tables)
    settings = folder_settings(
        tmp_path, column_map={"deals": {"deal_id": ["deal_id", "account_id"]}}
    )
    deals = collect("deals", settings)
    assert deals["deal_id"].to_list() == deals["account_id"].to_list() == ["D1", "D2", "D3"]


def test_column_map_two_source_columns_onto_one_stay_refused(tmp_path: Path) -> None:
    write_parquet(tmp_path, make_tables())
    settings = folder_settings(
        tmp_path, column_map={"deals": {"deal_id": ["deal_id"], "owner_id": ["deal_id"]}}
    )
    with pytest.raises(
        DataValidationError, match="maps both 'deal_id' and 'owner_id' to 'deal_id'"
    ):
        sources.read("deals", settings, AS_OF)


def test_datetime_format_per_table_reads_day_first_dates(tmp_path: Path) -> None:
    write_parquet(tmp_path, {k: v for k, v in make_tables().items() if k != "deals"})
    (tmp_path / "deals.csv").write_text(
        "deal_id,account_id,owner_id,created_at,closed_at,outcome\n"
        "1,A1,R1,02-01-2024,05-02-2024,won\n"  # 2 January, closed 5 February
        "2,A1,R1,2024-01-03,,\n"  # ISO still reads
        "3,A1,R1,31-31-2024,,\n"  # neither: quarantined with its text
        "4,A1,R1,01-04-2024,,\n"  # 1 April: after as_of, not read
    )
    settings = folder_settings(
        tmp_path,
        sources={"path": str(tmp_path), "datetime_format": {"deals": "%d-%m-%Y"}},
        validation={"max_bad_share": 0.5},
    )
    tables, quarantine = load_tables(settings, AS_OF, names=["deals"])
    deals = tables["deals"]
    assert deals["deal_id"].to_list() == ["1", "2"]
    assert deals["created_at"].to_list() == [_dt(-59), _dt(-58)]
    assert deals["closed_at"][0] == datetime(2024, 2, 5, tzinfo=UTC)
    assert quarantine.select("check", "column_name").rows() == [("parse_datetime", "created_at")]
    assert "31-31-2024" in quarantine["row"][0]
    # without the format, the day-first dates are not guessed: they are quarantined
    with pytest.raises(DataValidationError, match="parse_datetime"):
        load_tables(folder_settings(tmp_path), AS_OF, names=["deals"])


def test_deal_tables_need_only_deals(tmp_path: Path) -> None:
    """CRM-only: deals and accounts, no activities file, no sales; an empty optional table."""
    tables = make_tables()
    write_parquet(tmp_path, {"deals": tables["deals"], "accounts": tables["accounts"]})
    (tmp_path / "deal_stage_history.csv").write_text("deal_id,stage,entered_at\n")
    names = ["deals", "deal_stage_history", "deal_close_date_history", "activities", "accounts"]
    clean, quarantine = load_tables(folder_settings(tmp_path), AS_OF, names=names)
    assert set(clean) == {"deals", "deal_stage_history", "accounts"}
    assert clean["deal_stage_history"].height == 0
    assert quarantine.height == 0
    with pytest.raises(DataValidationError, match="sales: required table not found"):
        load_tables(folder_settings(tmp_path), AS_OF, names=["sales", "signals"])


def test_an_empty_required_table_is_refused_an_empty_optional_one_is_not(tmp_path: Path) -> None:
    tables = make_tables()
    write_parquet(tmp_path, {"deals": tables["deals"].clear(), "sales": tables["sales"]})
    (tmp_path / "activities.csv").write_text(
        "activity_id,deal_id,account_id,occurred_at,activity_type\n"
    )
    settings = folder_settings(tmp_path)
    with pytest.raises(DataValidationError, match=r"deals: table has no rows .*non_empty"):
        load_tables(settings, AS_OF, names=["deals", "activities"])
    clean, _ = load_tables(settings, AS_OF, names=["deals", "activities"], required=[])
    assert clean["activities"].height == 0
