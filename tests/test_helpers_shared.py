"""The one-per-mechanism helpers: JSON text, sigmoid, calibration bins, database URLs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from salesml import metrics, urls
from salesml.jsonutil import json_text
from salesml.numeric import sigmoid


def _encode(values: list[list[str] | None]) -> list[str | None]:
    frame = pl.DataFrame({"l": values}, schema={"l": pl.List(pl.String)})
    return frame.select(json_text(pl.col("l")).alias("l"))["l"].to_list()


def test_json_text_empty_list_is_an_empty_array_and_null_stays_null() -> None:
    assert _encode([[], None, [""]]) == ["[]", None, '[""]']


def test_json_text_round_trips_control_characters_quotes_and_unicode() -> None:
    hostile = ["tab\there", "line\nbreak", "bell\x07\x00nul", 'quote " and \\ slash', "é 🍕 漢"]
    encoded = _encode([hostile, ["a", "b"]])
    assert [json.loads(text) for text in encoded if text is not None] == [hostile, ["a", "b"]]
    assert encoded[1] == '["a","b"]'


def test_json_text_encodes_structs_and_keeps_the_caller_name() -> None:
    frame = pl.DataFrame({"s": [{"k": 1, "t": "x\ny"}, None]})
    out = frame.select(json_text(pl.col("s")).alias("s"))
    assert out.columns == ["s"]
    assert [json.loads(t) if t else t for t in out["s"].to_list()] == [{"k": 1, "t": "x\ny"}, None]


def test_no_copy_of_the_json_encoder_is_left() -> None:
    """The demand copy wrote raw control characters (invalid JSON) and `[""]` for []."""
    from salesml import warehouse
    from salesml.deals import health as deal_health
    from salesml.demand import health as demand_health

    assert not hasattr(demand_health, "json_array")
    assert not hasattr(deal_health, "json_array")
    assert not hasattr(warehouse, "_json_text")


def test_sigmoid_is_the_logistic_function_and_never_overflows() -> None:
    x = np.array([-800.0, -5.0, 0.0, 2.0, 800.0])
    with np.errstate(over="raise"):
        p = sigmoid(x)
    assert p[2] == 0.5
    assert p[0] == 0.0 and p[-1] == 1.0
    middle = x[1:4]
    np.testing.assert_allclose(p[1:4], 1.0 / (1.0 + np.exp(-middle)), rtol=0, atol=1e-15)
    np.testing.assert_allclose(sigmoid(-middle), 1.0 - p[1:4], atol=1e-15)


def test_calibration_bins_by_hand_and_ece_from_them() -> None:
    y = [0, 1, 1, 1, 0]
    p = [0.05, 0.08, 0.95, 1.0, 0.55]
    table = metrics.calibration_bins(y, p, 10)
    assert table.bin.tolist() == [0, 5, 9]  # empty bins are left out; 1.0 is in the last bin
    assert table.n.tolist() == [2, 1, 2]
    np.testing.assert_allclose(table.mean_probability, [0.065, 0.55, 0.975])
    np.testing.assert_allclose(table.observed_rate, [0.5, 0.0, 1.0])
    by_hand = (2 * abs(0.5 - 0.065) + 1 * 0.55 + 2 * abs(1.0 - 0.975)) / 5
    assert metrics.expected_calibration_error(y, p, 10) == pytest.approx(by_hand, abs=1e-12)


def test_calibration_bins_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="n_bins"):
        metrics.calibration_bins([1], [0.5], 0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.calibration_bins([1], [1.5])


def test_report_reliability_uses_the_same_bins_and_handles_no_pairs() -> None:
    from salesml.report import prepare

    pairs = pl.DataFrame({"win_probability": [0.05, 0.95], "won": [False, True]})
    curve = prepare.reliability(pairs, 4)
    table = metrics.calibration_bins([0, 1], [0.05, 0.95], 4)
    assert curve["bin"].to_list() == table.bin.tolist() == [0, 3]
    empty = prepare.reliability(pairs.clear(), 4)
    assert empty.height == 0
    assert empty.schema == curve.schema


@pytest.mark.parametrize(
    ("url", "scheme", "dialect"),
    [
        ("duckdb:///out/w.duckdb", "duckdb", "duckdb"),
        ("PostgreSQL+psycopg://u@h/db", "postgresql+psycopg", "postgresql"),
        ("no-scheme.duckdb", "", ""),
    ],
)
def test_split_url_and_dialect(url: str, scheme: str, dialect: str) -> None:
    assert urls.split_url(url)[0] == scheme
    assert urls.dialect(url) == dialect


def test_duckdb_path_and_postgres_uri() -> None:
    assert urls.duckdb_path("duckdb:///out/w.duckdb") == Path("out/w.duckdb")
    assert urls.duckdb_path("duckdb:////abs/w.duckdb") == Path("/abs/w.duckdb")
    assert urls.postgres_uri("postgres+asyncpg://u:p@h:5/db?x=1") == "postgresql://u:p@h:5/db?x=1"
    assert urls.postgres_uri("duckdb:///x.duckdb") == "duckdb:///x.duckdb"


def test_every_caller_uses_the_shared_url_parser() -> None:
    from salesml import report, sources, warehouse

    assert sources.duckdb_path is urls.duckdb_path
    assert sources.postgres_uri is urls.postgres_uri
    assert report.default_path.__globals__["duckdb_path"] is urls.duckdb_path
    with pytest.raises(warehouse.WarehouseError, match="must name a file"):
        warehouse.Warehouse("duckdb:///")


def test_quote_identifier_doubles_quotes_and_is_the_one_both_sides_use() -> None:
    from salesml import sources, warehouse
    from salesml.sqlutil import quote_identifier

    assert quote_identifier("deals") == '"deals"'
    assert quote_identifier('odd"name') == '"odd""name"'
    assert warehouse._q is quote_identifier
    assert sources.quote_identifier is quote_identifier
