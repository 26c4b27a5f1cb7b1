"""Every validation rule lands the bad row in quarantine with its check; the threshold policy
stops or continues as configured; unusable tables raise one-line errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pytest

from salesml.config import Settings, from_dict
from salesml.timeutil import DATETIME
from salesml.validation import (
    DataValidationError,
    enforce_threshold,
    validate,
    validate_tables,
)

AS_OF = datetime(2024, 6, 1, tzinfo=UTC)


def deals_rows(n: int = 10) -> list[dict[str, Any]]:
    """n good deals: even ones won/lost, odd ones open; text datetimes as a CSV would give."""
    rows = []
    for i in range(n):
        closed = i % 2 == 0
        rows.append(
            {
                "deal_id": f"D{i:03d}",
                "account_id": f"A{i % 3}",
                "owner_id": f"R{i % 2}",
                "amount": 1000.0 + i,
                "created_at": f"2024-01-{i + 1:02d}T09:00:00",
                "closed_at": f"2024-03-{i + 1:02d}T09:00:00" if closed else None,
                "outcome": ("won" if i % 4 == 0 else "lost") if closed else None,
                "stage_note": f"extra {i}",
            }
        )
    return rows


def deals_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, infer_schema_length=None)


def activities_frame(deal_ids: list[str | None]) -> pl.DataFrame:
    n = len(deal_ids)
    return pl.DataFrame(
        {
            "activity_id": [f"X{i}" for i in range(n)],
            "deal_id": deal_ids,
            "account_id": ["A0"] * n,
            "occurred_at": [datetime(2024, 2, 1, tzinfo=UTC)] * n,
            "activity_type": ["meeting"] * n,
            "contact_role": ["cto"] * n,
        },
        schema_overrides={"deal_id": pl.String},
    )


def _set(i: int, **values: Any) -> Callable[[list[dict[str, Any]]], None]:
    def change(rows: list[dict[str, Any]]) -> None:
        rows[i].update(values)

    return change


RULES = [
    ("duplicate id", _set(3, deal_id="D002"), "unique", "deal_id", {2, 3}),
    ("null required", _set(1, owner_id=None), "not_null", "owner_id", {1}),
    ("won but open", _set(1, outcome="won"), "outcome_matches_closed_at", "closed_at", {1}),
    ("closed no outcome", _set(0, outcome=None), "outcome_matches_closed_at", "outcome", {0}),
    (
        "closed before created",
        _set(2, closed_at="2023-12-01T00:00:00"),
        "closed_after_created",
        "closed_at",
        {2},
    ),
    ("negative amount", _set(4, amount=-5.0), "non_negative", "amount", {4}),
    ("unknown outcome", _set(6, outcome="maybe"), "allowed_values", "outcome", {6}),
    ("future", _set(5, created_at="2062-01-01T00:00:00"), "not_after_as_of", "created_at", {5}),
    ("future close", _set(4, closed_at="2062-01-01"), "not_after_as_of", "closed_at", {4}),
    ("bad date", _set(7, created_at="31/02/2024"), "parse_datetime", "created_at", {7}),
]


@pytest.mark.parametrize(
    ("change", "check", "column", "bad"), [r[1:] for r in RULES], ids=[r[0] for r in RULES]
)
def test_each_rule_quarantines_the_bad_row(
    change: Callable[[list[dict[str, Any]]], None], check: str, column: str, bad: set[int]
) -> None:
    rows = deals_rows()
    change(rows)
    result = validate(deals_frame(rows), "deals", as_of=AS_OF)
    q = result.quarantine
    hit = q.filter(pl.col("check") == check)
    assert hit.height == len(bad), q
    assert set(hit["column_name"]) == {column}
    assert {json.loads(r)["stage_note"] for r in hit["row"]} == {f"extra {i}" for i in bad}
    assert result.n_bad_rows == len(bad)
    assert result.valid.height == 10 - len(bad)
    assert all(reason for reason in q["reason"])


def test_good_rows_come_out_canonical_with_extras() -> None:
    result = validate(deals_frame(deals_rows()), "deals", as_of=AS_OF, timezone="Europe/Berlin")
    assert result.quarantine.height == 0
    valid = result.valid
    assert valid.schema["created_at"] == DATETIME
    assert valid.schema["amount"] == pl.Float64
    assert valid.columns[:10] == [
        "deal_id",
        "account_id",
        "owner_id",
        "region",
        "product",
        "amount",
        "created_at",
        "expected_close_at",
        "closed_at",
        "outcome",
    ]
    assert valid.columns[-1] == "stage_note"  # extra kept
    assert valid["region"].null_count() == valid.height  # optional column added as nulls
    # naive text is wall time in the configured timezone (CET in January = UTC+1)
    assert valid["created_at"][0] == datetime(2024, 1, 1, 8, 0, tzinfo=UTC)


def test_bad_date_reports_parse_only_and_keeps_the_original_text() -> None:
    rows = deals_rows()
    rows[7]["created_at"] = "not a date"
    q = validate(deals_frame(rows), "deals").quarantine
    assert q["check"].to_list() == ["parse_datetime"]  # not also not_null
    assert json.loads(q["row"][0])["created_at"] == "not a date"
    assert q["reason"][0].startswith("created_at 'not a date' is not a datetime")


def test_mixed_iso_forms_parse_to_utc() -> None:
    rows = deals_rows(4)
    rows[0]["created_at"] = "2024-01-05T10:00:00+02:00"
    rows[1]["created_at"] = "2024-01-05 10:00"
    rows[2]["created_at"] = "2024-01-05Z"  # not ISO enough: quarantined, not guessed
    rows[3]["created_at"] = "2024-01-05"
    result = validate(deals_frame(rows), "deals")
    assert result.valid["created_at"].to_list() == [
        datetime(2024, 1, 5, 8, tzinfo=UTC),
        datetime(2024, 1, 5, 10, tzinfo=UTC),
        datetime(2024, 1, 5, tzinfo=UTC),
    ]
    assert result.quarantine["check"].to_list() == ["parse_datetime"]


def test_bad_number_is_quarantined() -> None:
    rows = deals_rows()
    for row in rows:
        row["amount"] = str(row["amount"])
    rows[2]["amount"] = "12k"
    rows[3]["amount"] = " "  # blank = missing, fine for a nullable column
    result = validate(deals_frame(rows), "deals")
    assert result.quarantine["check"].to_list() == ["parse_number"]
    assert result.valid.schema["amount"] == pl.Float64


def test_outcome_text_is_normalised() -> None:
    rows = deals_rows()
    rows[0]["outcome"] = " Won "
    result = validate(deals_frame(rows), "deals")
    assert result.quarantine.height == 0
    assert result.valid["outcome"][0] == "won"


def test_activity_pointing_at_unknown_deal() -> None:
    deals = validate(deals_frame(deals_rows()), "deals").valid
    acts = activities_frame(["D001", "NOPE", None])
    result = validate(acts, "activities", reference={"deals": deals})
    assert result.quarantine["check"].to_list() == ["known_deal"]
    assert json.loads(result.quarantine["row"][0])["activity_id"] == "X1"
    assert result.valid["activity_id"].to_list() == ["X0", "X2"]  # account-level activity is fine
    # without a reference the check is skipped
    assert validate(acts, "activities").quarantine.height == 0


def test_future_signals_allowed_only_when_known_in_advance() -> None:
    signals = pl.DataFrame(
        {
            "ts": [datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 7, 1, tzinfo=UTC)] * 2,
            "name": ["price", "price", "weather", "weather"],
            "value": [1.0, 2.0, 3.0, 4.0],
        }
    )
    result = validate(signals, "signals", as_of=AS_OF, known_signals=["price"])
    assert result.quarantine["check"].to_list() == ["not_after_as_of"]
    assert json.loads(result.quarantine["row"][0])["name"] == "weather"
    assert result.valid.height == 3
    assert result.valid["sku"].null_count() == 3  # scope columns default to "applies to all"


def test_missing_required_column_raises_one_line() -> None:
    frame = deals_frame(deals_rows()).drop("owner_id")
    with pytest.raises(DataValidationError) as err:
        validate(frame, "deals")
    message = str(err.value)
    assert "\n" not in message
    assert "deals" in message and "owner_id" in message and "column_present" in message


def test_empty_required_table_raises_but_optional_does_not() -> None:
    empty = deals_frame(deals_rows()).head(0)
    with pytest.raises(DataValidationError, match=r"deals: table has no rows \(check: non_empty\)"):
        validate(empty, "deals")
    history = pl.DataFrame(
        schema={"deal_id": pl.String, "stage": pl.String, "entered_at": DATETIME}
    )
    assert validate(history, "deal_stage_history").valid.height == 0


def test_wrong_dtype_that_cannot_be_cast_raises() -> None:
    frame = deals_frame(deals_rows()).with_columns(pl.lit(True).alias("created_at"))
    with pytest.raises(DataValidationError, match=r"deals: column 'created_at' has dtype Boolean"):
        validate(frame, "deals")


def test_integer_ids_are_accepted_as_text() -> None:
    frame = deals_frame(deals_rows()).with_columns(pl.int_range(10).alias("deal_id"))
    assert validate(frame, "deals").valid.schema["deal_id"] == pl.String


# ---------------------------------------------------------------------------------------------
# Threshold policy
# ---------------------------------------------------------------------------------------------
def _bad_deals(n_bad: int, n: int = 10) -> pl.DataFrame:
    rows = deals_rows(n)
    for i in range(n_bad):
        rows[i]["amount"] = -1.0
    return deals_frame(rows)


def test_threshold_stops_with_table_column_check_and_examples() -> None:
    result = validate(_bad_deals(3), "deals")
    with pytest.raises(DataValidationError) as err:
        enforce_threshold("deals", result.n_rows, result.quarantine, 0.2, 2)
    message = str(err.value)
    assert "\n" not in message
    for part in ("deals", "3 of 10", "amount", "non_negative", "D000", "D001", "max_bad_share"):
        assert part in message, message
    assert "D002" not in message  # only example_rows=2 examples


def test_threshold_continues_below_share_and_zero_means_any_bad_row() -> None:
    result = validate(_bad_deals(1), "deals")
    enforce_threshold("deals", result.n_rows, result.quarantine, 0.2, 3)  # 10% < 20%
    with pytest.raises(DataValidationError):
        enforce_threshold("deals", result.n_rows, result.quarantine, 0.1, 3)  # 10% >= 10%
    with pytest.raises(DataValidationError):
        enforce_threshold("deals", 1000, result.quarantine, 0.0, 3)
    clean = validate(_bad_deals(0), "deals")
    enforce_threshold("deals", clean.n_rows, clean.quarantine, 0.0, 3)  # nothing bad: goes on


def test_threshold_counts_identical_duplicates_as_two_rows() -> None:
    rows = deals_rows()
    rows[1] = dict(rows[0])
    result = validate(deals_frame(rows), "deals")
    assert result.n_bad_rows == 2
    with pytest.raises(DataValidationError, match="2 of 10"):
        enforce_threshold("deals", 10, result.quarantine, 0.2, 3, bad_rows=result.n_bad_rows)


def _settings(max_bad_share: float) -> Settings:
    return from_dict({"validation": {"max_bad_share": max_bad_share, "example_rows": 2}})


def test_validate_tables_checks_activities_against_valid_deals() -> None:
    rows = deals_rows()
    rows[1]["owner_id"] = None  # D001 goes to quarantine, so its activity points at nothing
    tables = {"activities": activities_frame(["D001", "D002"]), "deals": deals_frame(rows)}
    clean, quarantine = validate_tables(tables, _settings(0.6), AS_OF)
    assert clean["deals"].height == 9
    assert clean["activities"]["deal_id"].to_list() == ["D002"]
    assert quarantine.select("table_name", "check").rows() == [
        ("deals", "not_null"),
        ("activities", "known_deal"),
    ]
    with pytest.raises(DataValidationError, match="deals: 1 of 10 rows") as err:
        validate_tables(tables, _settings(0.01), AS_OF)
    assert err.value.quarantine is not None  # a job can still record what was quarantined
    assert err.value.quarantine["check"].to_list() == ["not_null"]


def test_validate_tables_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown input table"):
        validate_tables({"dealz": pl.DataFrame()}, _settings(0.01), AS_OF)


# --- the input schema in the README (issue 9) ----------------------------------------------------


def test_readme_input_schema_is_the_contract() -> None:
    """Every contract column (and its rules) is in README's table: regenerate it with
    `python -m salesml.validation` when the contract changes."""
    from pathlib import Path

    from salesml import contract
    from salesml.validation import input_schema_markdown

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- input-schema:start -->\n", 1)[1].split("<!-- input-schema:end -->")[
        0
    ]
    assert block == input_schema_markdown(), "README schema is stale: python -m salesml.validation"
    for table in contract.INPUT_ORDER:
        for column in contract.input_columns(table):
            rows = [line for line in block.splitlines() if f"| `{column}` |" in line]
            assert rows, f"{table}.{column} is not in the README schema"
    assert "`deals` (needed by deal-win jobs)" in block
    assert "`sales` (needed by demand jobs)" in block
    assert "`activities` (optional)" in block
