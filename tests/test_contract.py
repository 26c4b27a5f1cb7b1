"""The contract covers every SPEC table, and its declarations agree with each other."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandera.polars as pa
import polars as pl
import pytest
from pandera.errors import SchemaErrors

from salesml import contract
from salesml.timeutil import DATETIME

SPEC_INPUTS = {
    "deals",
    "deal_stage_history",
    "deal_close_date_history",
    "activities",
    "accounts",
    "sales",
    "signals",
    "inventory",
}
SPEC_OUTPUTS = {
    "deal_scores",
    "deal_score_factors",
    "pipeline_forecast",
    "demand_forecast",
    "demand_forecast_agg",
    "demand_forecast_factors",
    "sku_health",
    "behavior_value",
    "quarantine",
    "runs",
    "model_quality",
    "deal_actions",
    "deal_score_changes",
    "alerts",
}
"""The output tables SPEC names (first and second round); slices may add more."""
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def test_every_spec_table_has_a_schema() -> None:
    assert set(contract.INPUT_SCHEMAS) == SPEC_INPUTS
    assert set(contract.OUTPUT_SCHEMAS) >= SPEC_OUTPUTS
    assert set(contract.OUTPUT_KEYS) == set(contract.OUTPUT_SCHEMAS)
    assert {"deals", "sales"} == contract.REQUIRED_INPUTS  # what some job cannot run without
    assert contract.OPTIONAL_INPUTS == SPEC_INPUTS - contract.REQUIRED_INPUTS
    assert set(contract.INPUT_ORDER) == SPEC_INPUTS
    assert contract.INPUT_ORDER[0] == "deals"
    assert all(isinstance(s, pa.DataFrameSchema) for s in contract.OUTPUT_SCHEMAS.values())


@pytest.mark.parametrize("table", sorted(SPEC_OUTPUTS))
def test_output_keys_are_declared_not_null_columns(table: str) -> None:
    dtypes = contract.output_dtypes(table)
    columns = contract.output_columns(table)
    for key in contract.OUTPUT_KEYS[table]:
        assert key in dtypes
        assert not columns[key].nullable
    assert "run_id" in dtypes


@pytest.mark.parametrize("table", sorted(SPEC_INPUTS | SPEC_OUTPUTS))
def test_all_datetimes_are_utc_microseconds(table: str) -> None:
    dtypes = (
        contract.output_dtypes(table) if table in SPEC_OUTPUTS else contract.input_dtypes(table)
    )
    for dtype in dtypes.values():
        if isinstance(dtype, pl.Datetime):
            assert dtype == DATETIME


def test_event_time_columns_exist_and_accounts_are_static() -> None:
    assert "accounts" not in contract.EVENT_TIME
    for table, column in contract.EVENT_TIME.items():
        assert contract.input_dtypes(table)[column] == DATETIME
    for table, (column, ref_table, ref_column) in contract.REFERENCES.items():
        assert column in contract.input_dtypes(table)
        assert ref_column in contract.input_dtypes(ref_table)


def test_spec_rules_are_in_the_deals_schema() -> None:
    deals = contract.INPUT_SCHEMAS["deals"]
    assert deals.columns["deal_id"].unique and not deals.columns["deal_id"].nullable
    assert deals.columns["outcome"].nullable
    assert contract.input_columns("deals")["region"].required is False


def _scores(**overrides: object) -> pl.DataFrame:
    base: dict[str, object] = {
        "as_of": [T0],
        "run_id": ["r1"],
        "model_version": ["3"],
        "deal_id": ["d1"],
        "win_probability": [0.4],
        "health": ["yellow"],
        "health_reasons": ['["21 days in proposal"]'],
        "top_factors": ["[]"],
    }
    base.update({k: [v] for k, v in overrides.items()})
    return pl.DataFrame(base, schema_overrides={"as_of": DATETIME})


def test_output_schema_is_strict_and_rejects_bad_values() -> None:
    """Output schemas refuse an undeclared column (the warehouse stores only declared ones);
    input schemas keep extra columns (SPEC: they may be named as features)."""
    schema = contract.OUTPUT_SCHEMAS["deal_scores"]
    schema.validate(_scores())
    schema.validate(_scores().drop("as_of", "run_id", "model_version"))  # stamped on write
    with pytest.raises(SchemaErrors) as extra:
        schema.validate(_scores(lineage_extra=1), lazy=True)
    assert extra.value.failure_cases["failure_case"].to_list() == ["lineage_extra"]
    assert all(s.strict is True for s in contract.OUTPUT_SCHEMAS.values())
    assert all(s.strict is False for s in contract.INPUT_SCHEMAS.values())
    with pytest.raises(SchemaErrors) as err:
        schema.validate(_scores(health="purple", win_probability=1.5), lazy=True)
    assert set(err.value.failure_cases["column"].to_list()) == {"health", "win_probability"}


def test_quantiles_must_be_ordered() -> None:
    frame = pl.DataFrame(
        {
            "customer_id": ["c", "c"],
            "sku": ["s", "s"],
            "bucket_start": [T0, T0],
            "horizon": [1, 2],
            "p10": [1.0, 3.0],
            "p50": [2.0, 2.0],
            "p90": [3.0, 4.0],
        },
        schema_overrides={"bucket_start": DATETIME},
    )
    with pytest.raises(SchemaErrors) as err:
        contract.OUTPUT_SCHEMAS["demand_forecast"].validate(frame, lazy=True)
    cases = err.value.failure_cases
    assert cases["index"].to_list() == [1]


def test_empty_frame_and_unknown_table() -> None:
    frame = contract.empty_frame("quarantine")
    assert frame.columns[:6] == ["run_id", "as_of", "table_name", "row", "check", "reason"]
    assert contract.empty_frame("deals").schema["created_at"] == DATETIME
    with pytest.raises(KeyError, match="known"):
        contract.output_dtypes("nope")


def test_every_float_column_must_be_finite() -> None:
    for schemas in (contract.INPUT_SCHEMAS, contract.OUTPUT_SCHEMAS):
        for schema in schemas.values():
            for column in schema.columns.values():
                names = [check.name for check in column.checks]
                is_float = column.dtype is not None and column.dtype.type == pl.Float64
                assert ("finite" in names) == is_float, column.name
    with pytest.raises(SchemaErrors) as err:
        contract.OUTPUT_SCHEMAS["deal_scores"].validate(
            _scores(win_probability=float("nan")), lazy=True
        )
    cases = err.value.failure_cases
    assert set(cases["column"].to_list()) == {"win_probability"}
    assert "must be a finite number (not NaN or infinite)" in cases["check"].to_list()


def test_non_finite_names_the_key_of_the_first_bad_row() -> None:
    frame = _scores().vstack(_scores(deal_id="d2", win_probability=float("-inf")))
    frame = frame.vstack(_scores(deal_id="d3", win_probability=float("nan")))
    message = contract.non_finite("deal_scores", frame)
    assert message is not None
    assert message.startswith(
        "column 'win_probability' is -inf in the row as_of=2024-01-01T00:00:00+00:00, "
        "deal_id=d2 (and 1 more rows)"
    )
    assert contract.non_finite("deal_scores", _scores()) is None


def test_labels_have_one_spelling() -> None:
    assert contract.normalise_label(" Tech-Doc  Shared ") == "tech_doc_shared"
    assert contract.normalise_label("Réunion") == "réunion"
    assert contract.normalise_label("tech_doc_shared") == "tech_doc_shared"  # idempotent
    values = pl.Series(["Demo", " demo", "DEMO call", "--", None])
    normalised = values.to_frame("v").select(contract.label_expr(pl.col("v"))).to_series()
    assert normalised.to_list() == ["demo", "demo", "demo_call", None, None]
    labelled = {
        t: [c for c, s in contract.input_columns(t).items() if s.label]
        for t in ("activities", "deal_stage_history")
    }
    assert labelled == {
        "activities": ["activity_type", "contact_role"],
        "deal_stage_history": ["stage"],
    }


def test_shapes_elsewhere_are_the_contracts() -> None:
    """The warehouse, validation and the producers take their table shapes from the contract."""
    from salesml import warehouse
    from salesml.deals.behavior import BEHAVIOR_SCHEMA
    from salesml.deals.scoring import SCORE_COLUMNS
    from salesml.demand.health import HEALTH_SCHEMA
    from salesml.validation import QUARANTINE_SCHEMA

    assert dict(warehouse._runs_schema()) == contract.output_dtypes("runs")
    assert {"params", "host", "pid", "heartbeat_at", "reconciled_at"} <= set(
        warehouse._runs_schema()
    )
    assert warehouse._quarantine_columns() == ("table_name", "row", "check", "reason")
    assert list(QUARANTINE_SCHEMA) == [*warehouse._quarantine_columns(), "column_name"]
    assert contract.row_dtypes("sku_health") == HEALTH_SCHEMA
    assert "as_of" not in HEALTH_SCHEMA and "run_id" not in BEHAVIOR_SCHEMA
    assert "mean_contribution_log_odds" in BEHAVIOR_SCHEMA
    assert SCORE_COLUMNS[:2] == ["deal_id", "win_probability"]
    assert {"raw_score", "contribution_unit", "stage", "days_in_stage"} <= set(SCORE_COLUMNS)
    assert "not_scored_reason" not in SCORE_COLUMNS  # legacy, never written by scoring
    with pytest.raises(AttributeError):
        _ = warehouse.NO_SUCH_NAME  # type: ignore[attr-defined]


def test_every_column_a_demo_run_stores_is_declared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small demo (both models trained, deals scored, demand forecast, ~15 s) writes only
    columns the contract declares, with the declared dtype (`any_dtype` columns excepted)."""
    from salesml import demo
    from salesml.warehouse import Warehouse

    monkeypatch.setattr(demo, "DEMO_DEALS", 1200)  # the fewest that train a deal-win model
    monkeypatch.setattr(demo, "DEMO_SERIES", 5)
    monkeypatch.setattr(demo, "DEMO_DAYS", 60)
    result = demo.run_demo(tmp_path)
    store = Warehouse(result.warehouse_url)
    written = set(store.tables())
    assert {"deal_scores", "deal_score_factors", "demand_forecast", "sku_health", "runs"} <= (
        written
    )
    undeclared, wrong = [], []
    for table in sorted(written):
        declared = contract.output_columns(table)  # KeyError: a table the contract lacks
        for column, dtype in store.read(table).schema.items():
            spec = declared.get(column)
            if spec is None:
                undeclared.append(f"{table}.{column}")
            elif not spec.any_dtype and dtype != spec.dtype:
                wrong.append(f"{table}.{column}: {dtype} != {spec.dtype}")
    assert undeclared == []
    assert wrong == []
