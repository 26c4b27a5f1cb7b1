"""Issue 11, items 2 and 3: hostile input never gives a traceback or a silent number.

Each test is one case of the issue: non-finite and absurd numbers go to quarantine (inputs) or
stop the write naming the row (outputs); broken files give one line naming the file, or a
quarantined row; names are normalised, made safe, and refused on collision.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from salesml import contract, sources
from salesml.config import ConfigError, DealsSettings, Settings, from_dict
from salesml.deals.features import (
    FeatureNameError,
    build_features,
    custom_feature_name,
    feature_labels,
    learn_spec,
)
from salesml.deals.health import rule_reasons
from salesml.inputs import load_tables, read_tables
from salesml.timeutil import DATETIME
from salesml.validation import DataValidationError, validate, wall_time_to_utc_series

AS_OF = datetime(2024, 6, 1, tzinfo=UTC)
NAN, INF = float("nan"), float("inf")
DEALS_HEADER = "deal_id,account_id,owner_id,amount,created_at,closed_at,outcome\n"


def deals_csv_rows(n: int = 9) -> str:
    return "".join(f"D{i},A1,R1,{i}0.5,2024-01-0{i % 9 + 1},,\n" for i in range(n))


def settings_for(folder: Path, **extra: Any) -> Settings:
    return from_dict({"sources": {"path": str(folder)}, **extra})


def loose(folder: Path, **extra: Any) -> Settings:
    """Settings that let a run go on with bad rows, to look at the quarantine."""
    return settings_for(folder, validation={"max_bad_share": 0.9}, **extra)


def deals_frame(amounts: list[float | None]) -> pl.DataFrame:
    n = len(amounts)
    return pl.DataFrame(
        {
            "deal_id": [f"D{i}" for i in range(n)],
            "account_id": ["A1"] * n,
            "owner_id": ["R1"] * n,
            "amount": amounts,
            "created_at": [datetime(2024, 1, 1, tzinfo=UTC)] * n,
            "closed_at": [None] * n,
            "outcome": [None] * n,
        },
        schema_overrides={"created_at": DATETIME, "closed_at": DATETIME, "amount": pl.Float64},
    )


def clean_deals(amounts: list[float | None]) -> pl.DataFrame:
    """Validated deals (every contract column present), as features expect them."""
    return validate(deals_frame(amounts), "deals").valid


def sales_frame(quantities: list[float]) -> pl.DataFrame:
    n = len(quantities)
    return pl.DataFrame(
        {
            "ts": [datetime(2024, 5, 1, tzinfo=UTC) + timedelta(hours=i) for i in range(n)],
            "customer_id": ["C1"] * n,
            "sku": ["S1"] * n,
            "quantity": quantities,
        },
        schema_overrides={"ts": DATETIME},
    )


def checks(quarantine: pl.DataFrame) -> list[tuple[str, str | None]]:
    return quarantine.select("check", "column_name").rows()


# ---------------------------------------------------------------------------------------------
# Numbers are finite and sane
# ---------------------------------------------------------------------------------------------
def test_nan_and_infinite_amounts_are_quarantined_as_not_finite() -> None:
    result = validate(deals_frame([1.0, NAN, INF, -INF, None]), "deals")
    assert result.valid["deal_id"].to_list() == ["D0", "D4"]  # null amount = unknown, fine
    assert checks(result.quarantine) == [("finite", "amount")] * 3  # -inf: not non_negative too
    reasons = result.quarantine["reason"].to_list()
    assert reasons[0].startswith("amount is NaN, not a finite number")
    assert "amount is -inf" in reasons[2]


def test_nan_in_a_required_number_is_not_finite_rather_than_empty() -> None:
    result = validate(sales_frame([1.0, NAN, INF]), "sales")
    assert result.valid.height == 1
    assert checks(result.quarantine) == [("finite", "quantity"), ("finite", "quantity")]


def test_absurd_numbers_go_to_quarantine_with_the_bound_named(tmp_path: Path) -> None:
    settings = Settings()
    bounds = settings.validation.max_abs
    assert bounds["deals"]["amount"] == bounds["sales"]["quantity"] == 1e12
    result = validate(deals_frame([1e308, 5e11]), "deals", max_abs=bounds["deals"])
    assert result.valid["deal_id"].to_list() == ["D1"]
    assert checks(result.quarantine) == [("max_abs", "amount")]
    assert "validation.max_abs.deals.amount" in result.quarantine["reason"][0]
    sales = validate(sales_frame([1e308, -2e12, 3.0]), "sales", max_abs={"quantity": 1e12})
    assert sales.valid["quantity"].to_list() == [3.0]


def test_a_bound_on_no_number_column_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"validation.max_abs.deals.amout: deals has no column"):
        validate(deals_frame([1.0]), "deals", max_abs={"amout": 10.0})
    with pytest.raises(ConfigError, match="not a number column"):
        validate(deals_frame([1.0]), "deals", max_abs={"owner_id": 10.0})
    settings = from_dict({"validation": {"max_abs": {"dealz": {"amount": 1.0}}}})
    with pytest.raises(ConfigError, match="'dealz' is not an input table"):
        load_tables(settings, AS_OF, ["deals"])


def test_non_finite_in_an_extra_float_column_is_quarantined() -> None:
    frame = deals_frame([1.0, 2.0]).with_columns(pl.Series("lead_score", [NAN, 0.5]))
    result = validate(frame, "deals")
    assert result.valid["deal_id"].to_list() == ["D1"]
    assert checks(result.quarantine) == [("finite", "lead_score")]


def test_multi_chunk_frames_do_not_panic_polars() -> None:
    """polars 2.1 panics (Rust assertion) formatting a reason over a filtered multi-chunk
    column, which a CSV read in parallel gives; validation rechunks first."""
    one = deals_frame([1.0, 2.0]).with_columns(pl.Series("lead_score", [1.0, NAN]))
    two = deals_frame([3.0]).with_columns(
        pl.lit("D9").alias("deal_id"), pl.lit(INF).alias("lead_score")
    )
    frame = pl.concat([one, two], rechunk=False)
    assert frame["lead_score"].n_chunks() == 2
    assert checks(validate(frame, "deals").quarantine) == [("finite", "lead_score")] * 2


def test_non_finite_output_names_table_column_and_key(tmp_path: Path) -> None:
    from salesml.warehouse import Warehouse, WarehouseError

    frame = pl.DataFrame(
        {
            "period": ["2025-07", "2025-08"],
            "dimension": ["all", "all"],
            "member": ["all", "all"],
            "expected_revenue": [10.0, 20.0],
            "p10": [1.0, 2.0],
            "p50": [5.0, 6.0],
            "p90": [9.0, 1e308 * 10],
        }
    )
    message = contract.non_finite("pipeline_forecast", frame)
    assert message is not None
    assert "column 'p90' is inf in the row period=2025-08, dimension=all, member=all" in message
    assert contract.non_finite("pipeline_forecast", frame.head(1)) is None
    warehouse = Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}")
    with pytest.raises(WarehouseError, match=r"pipeline_forecast .*'p90' is inf .*period=2025-08"):
        warehouse.write_batch({"pipeline_forecast": frame}, as_of=AS_OF, run_id="r1")


# ---------------------------------------------------------------------------------------------
# Broken files: one line naming the file, or a quarantined row
# ---------------------------------------------------------------------------------------------
def test_empty_csv_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "deals.csv").write_bytes(b"")
    with pytest.raises(DataValidationError, match=r"deals: .*deals\.csv is empty") as err:
        sources.read("deals", settings_for(tmp_path), AS_OF)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("last", "fields"),
    [("D9,A1,R1,3", 4), ("D9,A1,R1,3,2024-01-01,,,extra", 8), ("D9", 1)],
)
def test_truncated_or_ragged_line_is_quarantined(tmp_path: Path, last: str, fields: int) -> None:
    (tmp_path / "deals.csv").write_text(DEALS_HEADER + deals_csv_rows() + last)
    tables, quarantine = load_tables(loose(tmp_path), AS_OF, ["deals"])
    assert tables["deals"].height == 9
    assert checks(quarantine) == [("well_formed", None)]  # only the cause, not its effects
    assert quarantine["reason"][0] == (
        f"line 11 has {fields} fields where the header has 7 (a truncated or ragged line)"
    )
    assert '"deal_id":"D9"' in quarantine["row"][0]


def test_truncated_quoted_line_is_quarantined(tmp_path: Path) -> None:
    text = DEALS_HEADER + deals_csv_rows() + '"D,10",A1,R1,1,2024-01-02,,\nD11,"A1'
    (tmp_path / "deals.csv").write_text(text)
    tables, quarantine = load_tables(loose(tmp_path), AS_OF, ["deals"])
    assert tables["deals"]["deal_id"].to_list()[-1] == "D,10"  # quoted comma kept
    assert checks(quarantine) == [("well_formed", None)]
    assert "line 12 is not valid CSV (unexpected end of data)" in quarantine["reason"][0]


def test_quote_left_open_mid_file_is_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / "deals.csv").write_text(DEALS_HEADER + 'D0,"A1,R1\n' + deals_csv_rows())
    with pytest.raises(DataValidationError, match=r"deals\.csv line 2: .*never closed") as err:
        sources.read("deals", settings_for(tmp_path), AS_OF)
    assert "\n" not in str(err.value)


def test_latin1_csv_needs_its_encoding(tmp_path: Path) -> None:
    text = DEALS_HEADER + "D1,Zürich AG,R1,10,2024-01-02,,\n"
    (tmp_path / "deals.csv").write_bytes(text.encode("latin-1"))
    with pytest.raises(DataValidationError) as err:
        sources.read("deals", settings_for(tmp_path), AS_OF)
    message = str(err.value)
    for part in ("deals.csv", "not utf-8", "line 2", "sources.encoding: {deals: latin-1}"):
        assert part in message
    for encoding in ("latin-1", {"deals": "latin-1"}):
        frame = sources.read(
            "deals",
            settings_for(tmp_path, sources={"path": str(tmp_path), "encoding": encoding}),
            AS_OF,
        )
        assert frame is not None and frame.collect()["account_id"].to_list() == ["Zürich AG"]
    bad = settings_for(tmp_path, sources={"path": str(tmp_path), "encoding": "klingon"})
    with pytest.raises(DataValidationError, match="'klingon' for deals is not a known"):
        sources.read("deals", bad, AS_OF)


def test_utf8_byte_order_mark_and_crlf_are_read(tmp_path: Path) -> None:
    text = "\ufeff" + (DEALS_HEADER + deals_csv_rows(3)).replace("\n", "\r\n")
    (tmp_path / "deals.csv").write_bytes(text.encode("utf-8"))
    tables, quarantine = load_tables(settings_for(tmp_path), AS_OF, ["deals"])
    assert tables["deals"]["deal_id"].to_list() == ["D0", "D1", "D2"]
    assert tables["deals"]["amount"].to_list() == [0.5, 10.5, 20.5]
    assert quarantine.height == 0


def test_duplicate_csv_header_names_the_column(tmp_path: Path) -> None:
    (tmp_path / "deals.csv").write_text("deal_id,amount,amount\nD1,1,2\n")
    with pytest.raises(DataValidationError, match="column 'amount' twice in its header"):
        sources.read("deals", settings_for(tmp_path), AS_OF)


def test_parquet_that_is_not_parquet_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "deals.parquet").write_text(DEALS_HEADER)
    with pytest.raises(DataValidationError, match=r"deals\.parquet is not a readable Parquet"):
        sources.read("deals", settings_for(tmp_path), AS_OF)


def test_parquet_with_corrupt_pages_names_the_table_when_collected(tmp_path: Path) -> None:
    frame = deals_frame([1.0] * 2000)
    path = tmp_path / "deals.parquet"
    frame.write_parquet(path, compression="uncompressed", statistics=False)
    data = bytearray(path.read_bytes())
    data[100:150] = b"\xff" * 50  # inside the first data page; the footer is intact
    path.write_bytes(bytes(data))
    with pytest.raises(DataValidationError, match=r"deals: cannot read it from .*deals\.parquet"):
        read_tables(settings_for(tmp_path), AS_OF, ["deals"])


def test_two_columns_mapped_onto_one_is_refused(tmp_path: Path) -> None:
    (tmp_path / "deals.csv").write_text(DEALS_HEADER.replace("amount", "net,gross"))
    settings = settings_for(tmp_path, column_map={"deals": {"net": "amount", "gross": "amount"}})
    with pytest.raises(DataValidationError, match="maps both 'net' and 'gross' to 'amount'"):
        sources.read("deals", settings, AS_OF)


def test_number_text_in_a_csv_is_finite_checked(tmp_path: Path) -> None:
    rows = "D18,A1,R1,inf,2024-01-02,,\nD19,A1,R1,1e308,2024-01-02,,\n"
    (tmp_path / "deals.csv").write_text(DEALS_HEADER + deals_csv_rows() + rows)
    tables, quarantine = load_tables(loose(tmp_path), AS_OF, ["deals"])
    assert "D18" not in tables["deals"]["deal_id"].to_list()
    assert checks(quarantine) == [("finite", "amount"), ("max_abs", "amount")]


# ---------------------------------------------------------------------------------------------
# Names: normalised, safe, never colliding
# ---------------------------------------------------------------------------------------------
def activities(types: list[str], roles: list[str | None]) -> pl.DataFrame:
    n = len(types)
    return pl.DataFrame(
        {
            "activity_id": [f"X{i}" for i in range(n)],
            "deal_id": ["D0"] * n,
            "account_id": ["A1"] * n,
            "occurred_at": [datetime(2024, 2, 1, tzinfo=UTC)] * n,
            "activity_type": types,
            "contact_role": roles,
        },
        schema_overrides={"contact_role": pl.String},
    )


def test_activity_types_differing_in_case_are_one_type() -> None:
    raw = activities(["Demo", "demo", " DEMO ", "Tech-Doc shared"], ["CTO", "cto", None, "V.P."])
    clean = validate(raw, "activities").valid
    assert clean["activity_type"].to_list() == ["demo", "demo", "demo", "tech_doc_shared"]
    assert clean["contact_role"].to_list() == ["cto", "cto", None, "v_p"]
    tables = {"deals": clean_deals([1.0]), "activities": clean}
    spec = learn_spec(tables, AS_OF, DealsSettings(features={"min_pair_occurrences": 1}))
    assert spec.activity_types == ["demo", "tech_doc_shared"]
    at = datetime(2024, 2, 10, tzinfo=UTC)
    snapshots = pl.DataFrame({"deal_id": ["D0"], "snapshot_at": [at]})
    features = build_features(snapshots, tables, spec)  # was DuplicateError: 'n_demo_7d'
    assert features["n_demo_30d"].to_list() == [3.0]


def test_config_names_are_read_like_the_data() -> None:
    settings = DealsSettings(
        stage_order=["Qualification", "Proposal Sent"],
        features={"role_weights": {"CTO": 3.0, "other": 0.5}},
    )
    spec = learn_spec({"deals": deals_frame([1.0])}, AS_OF, settings)
    assert spec.stage_order == ["qualification", "proposal_sent"]
    assert spec.role_weights == {"cto": 3.0, "other": 0.5}
    with pytest.raises(ConfigError, match=r"deals\.stage_order: 'proposal' is listed twice"):
        learn_spec(
            {"deals": deals_frame([1.0])},
            AS_OF,
            DealsSettings(stage_order=["Proposal", "proposal"]),
        )
    rules = DealsSettings().health.rules.model_copy(update={"stage_limit_days": {"Proposal": 1}})
    frame = pl.DataFrame(
        {
            "stage": ["proposal"],
            "days_in_stage": [5.0],
            "days_since_last_activity": [0.0],
            "age_days": [9.0],
            "days_to_expected_close": [3.0],
            "close_date_slips": [0.0],
        }
    )
    fired = frame.select(r.alias(f"rule_{i}") for i, r in enumerate(rule_reasons(rules))).row(0)
    assert any(reason and reason.startswith("in proposal") for reason in fired)


@pytest.mark.parametrize("column", ["amount", "closed_at", "outcome", "stage", "_deal"])
def test_custom_feature_colliding_with_a_built_in_is_refused(column: str) -> None:
    deals = deals_frame([1.0]).with_columns(pl.lit("x").alias("stage"), pl.lit(1.0).alias("_deal"))
    with pytest.raises(
        ConfigError, match=f"deals.features.custom_features: '{column}' is the name of"
    ):
        learn_spec({"deals": deals}, AS_OF, DealsSettings(features={"custom_features": [column]}))


def test_custom_feature_names_are_made_safe_for_lightgbm() -> None:
    import lightgbm as lgb
    import numpy as np

    deals = clean_deals([1.0, 2.0]).with_columns(pl.Series("lead:source{x}", ["web", "fair"]))
    spec = learn_spec(
        {"deals": deals}, AS_OF, DealsSettings(features={"custom_features": ["lead:source{x}"]})
    )
    safe = custom_feature_name("lead:source{x}")
    assert safe == "lead_source_x_" and custom_feature_name("segment") == "segment"
    assert safe in spec.feature_names() and safe in spec.categorical
    snapshots = pl.DataFrame({"deal_id": ["D0", "D1"], "snapshot_at": [AS_OF, AS_OF]})
    features = build_features(snapshots, {"deals": deals}, spec)
    assert features[safe].to_list() == ["web", "fair"]
    assert feature_labels(spec)[safe] == "lead:source{x}"  # the user's name, for display
    names = spec.feature_names()
    lgb.Dataset(np.zeros((2, len(names))), np.array([0.0, 1.0]), feature_name=names).construct()
    clash = deals.with_columns(pl.col("lead:source{x}").alias("lead_source_x_"))
    with pytest.raises(ConfigError, match="both become the feature 'lead_source_x_'"):
        learn_spec(
            {"deals": clash},
            AS_OF,
            DealsSettings(features={"custom_features": ["lead:source{x}", "lead_source_x_"]}),
        )


def test_labels_that_still_clash_as_feature_names_are_one_line() -> None:
    tables = {"deals": clean_deals([1.0]), "activities": activities(["with_cto"], ["cto"])}
    with pytest.raises(FeatureNameError, match="feature name 'n_with_cto_7d'"):
        learn_spec(tables, AS_OF, DealsSettings())


# ---------------------------------------------------------------------------------------------
# True reasons: deals after as_of, DST gaps
# ---------------------------------------------------------------------------------------------
def test_activity_of_a_deal_created_after_as_of_says_so(tmp_path: Path) -> None:
    deals = deals_frame([1.0, 2.0]).with_columns(
        pl.Series(
            "created_at", [datetime(2024, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)]
        )
    )
    deals.write_parquet(tmp_path / "deals.parquet")
    acts = activities(["call", "call", "call"], [None, None, None])
    acts.with_columns(pl.Series("deal_id", ["D0", "D1", "D7"])).write_parquet(
        tmp_path / "activities.parquet"
    )
    tables, quarantine = load_tables(loose(tmp_path), AS_OF, ["deals", "activities"])
    assert tables["activities"]["deal_id"].to_list() == ["D0"]
    assert "later:deals" not in tables
    assert quarantine["reason"].to_list() == [
        "deal_id 'D1' is a deal with created_at 2200-01-01T00:00:00+00:00, after as_of: not "
        "known yet",
        "deal_id 'D7' is not a known valid deal",
    ]


def test_wall_time_in_a_dst_gap_is_shifted_forward(tmp_path: Path) -> None:
    naive = pl.Series(["2024-03-31 02:30", "2024-03-31 01:59", "2024-10-27 02:30"])
    utc = wall_time_to_utc_series(naive.str.to_datetime(), "Europe/Berlin")
    assert utc.to_list() == [
        datetime(2024, 3, 31, 1, 0, tzinfo=UTC),  # 03:00 CEST, the first minute after the gap
        datetime(2024, 3, 31, 0, 59, tzinfo=UTC),
        datetime(2024, 10, 27, 0, 30, tzinfo=UTC),  # ambiguous: the first (summer) 02:30
    ]
    (tmp_path / "sales.csv").write_text(
        "ts,customer_id,sku,quantity\n2024-03-31 02:30:00,C1,S1,1\n2024-03-31 01:00:00,C1,S1,2\n"
    )
    settings = settings_for(tmp_path, timezone="Europe/Berlin")
    tables, quarantine = load_tables(settings, AS_OF, ["sales"])
    assert quarantine.height == 0
    assert tables["sales"]["ts"].to_list()[0] == datetime(2024, 3, 31, 1, 0, tzinfo=UTC)
    naive_parquet = pl.DataFrame(
        {"ts": naive.str.to_datetime(), "customer_id": "C1", "sku": "S1", "quantity": 1.0}
    )
    naive_parquet.write_parquet(tmp_path / "sales.parquet")
    (tmp_path / "sales.csv").unlink()
    tables, quarantine = load_tables(settings, AS_OF, ["sales"])
    assert quarantine.height == 0 and tables["sales"]["ts"].null_count() == 0
